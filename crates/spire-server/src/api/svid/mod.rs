//! `spire.api.server.svid.v1.SVID`: MintX509SVID and MintJWTSVID (admin/local), plus the
//! agent- and downstream-facing RPCs ([`batch_new`], [`new_jwt`], [`downstream`]).
//!
//! Mirrors `pkg/server/api/svid/v1/service.go`.

pub mod batch_new;
pub mod downstream;
pub mod new_jwt;

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::convert;
use super::{Ctx, Policy};
use crate::ca::CaError;
use crate::pb::svid as pb;
use crate::pb::types;
use crate::server::ServerState;

/// The SVID service.
#[derive(Debug, Clone)]
pub struct SvidService {
    state: Arc<ServerState>,
}

impl SvidService {
    /// A service over `state`.
    pub fn new(state: Arc<ServerState>) -> Self {
        SvidService { state }
    }
}

/// Errors of this module, mapped to gRPC statuses in one place.
#[derive(Debug, thiserror::Error)]
enum SvidError {
    #[error("{0}")]
    Invalid(String),
    #[error("failed to sign SVID")]
    Sign(#[source] CaError),
}

impl From<SvidError> for Status {
    fn from(e: SvidError) -> Status {
        match &e {
            SvidError::Invalid(m) => Status::invalid_argument(m.clone()),
            SvidError::Sign(CaError::JwtDisabled) => {
                Status::failed_precondition(CaError::JwtDisabled.to_string())
            }
            SvidError::Sign(source) => {
                tracing::error!(error = %source, "Failed to sign SVID");
                Status::internal(format!("failed to sign SVID: {source}"))
            }
        }
    }
}

/// DNS SANs requested in a CSR.
fn csr_dns_names(der: &[u8]) -> Vec<String> {
    let Ok((_, csr)) = x509_parser::certification_request::X509CertificationRequest::from_der(der)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    if let GeneralName::DNSName(d) = name {
                        out.push((*d).to_string());
                    }
                }
            }
        }
    }
    out
}

fn ttl(secs: i32) -> Result<Option<Duration>, SvidError> {
    if secs < 0 {
        return Err(SvidError::Invalid(format!(
            "invalid TTL {secs}: must not be negative"
        )));
    }
    Ok((secs > 0).then(|| Duration::from_secs(secs as u64)))
}

/// NotAfter of a DER certificate (Unix seconds).
pub(crate) fn not_after(der: &[u8]) -> i64 {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.validity().not_after.timestamp())
        .unwrap_or(0)
}

#[tonic::async_trait]
impl pb::svid_server::Svid for SvidService {
    async fn mint_x509svid(
        &self,
        request: Request<pb::MintX509svidRequest>,
    ) -> Result<Response<pb::MintX509svidResponse>, Status> {
        let ctx = Ctx::new(&self.state, &request, "MintX509SVID", Policy::AdminOrLocal)?;
        let req = request.into_inner();
        let mut audit_id = String::new();
        let result = async {
            if req.csr.is_empty() {
                return Err(SvidError::Invalid("missing CSR".into()));
            }
            let csr = spire_crypto::csr::parse_and_verify_csr(&req.csr)
                .map_err(|e| SvidError::Invalid(format!("malformed CSR: {e}")))?;
            let uri = match csr.requested_uris.as_slice() {
                [] => return Err(SvidError::Invalid("CSR URI SAN is required".into())),
                [one] => one.clone(),
                _ => return Err(SvidError::Invalid("only one URI SAN is expected".into())),
            };
            let id: spire_spiffe::SpiffeId = uri
                .parse()
                .map_err(|e| SvidError::Invalid(format!("CSR URI SAN is invalid: {e}")))?;
            if !id.is_member_of(&ctx.state.trust_domain) {
                return Err(SvidError::Invalid(format!(
                    "CSR URI SAN is invalid: \"{id}\" is not a member of trust domain \"{}\"",
                    ctx.state.trust_domain
                )));
            }
            audit_id = id.to_string();
            let dns = csr_dns_names(&req.csr);
            for d in &dns {
                convert::validate_dns_name(d).map_err(|m| {
                    SvidError::Invalid(format!("CSR DNS name {d:?} is invalid: {m}"))
                })?;
            }
            let chain = ctx
                .state
                .ca
                .sign_x509_svid(&csr.public_key, &id, &dns, ttl(req.ttl)?)
                .map_err(SvidError::Sign)?;
            let expires_at = chain.first().map(|c| not_after(c)).unwrap_or(0);
            Ok(pb::MintX509svidResponse {
                svid: Some(types::X509svid {
                    cert_chain: chain,
                    id: Some(convert::id_to_proto(&id)),
                    expires_at,
                    hint: String::new(),
                }),
            })
        }
        .await
        .map_err(Status::from);
        ctx.audit.emit(
            &result,
            &[("spiffe_id", audit_id), ("ttl", req.ttl.to_string())],
        );
        result.map(Response::new)
    }

    async fn mint_jwtsvid(
        &self,
        request: Request<pb::MintJwtsvidRequest>,
    ) -> Result<Response<pb::MintJwtsvidResponse>, Status> {
        let ctx = Ctx::new(&self.state, &request, "MintJWTSVID", Policy::AdminOrLocal)?;
        let req = request.into_inner();
        let result = async {
            let id = convert::member_id_from_proto(req.id.as_ref(), &ctx.state.trust_domain)
                .map_err(|m| SvidError::Invalid(format!("invalid SPIFFE ID: {m}")))?;
            if req.audience.is_empty() || req.audience.iter().any(String::is_empty) {
                return Err(SvidError::Invalid(
                    "at least one audience is required".into(),
                ));
            }
            let svid = ctx
                .state
                .ca
                .sign_jwt_svid(&id, &req.audience, ttl(req.ttl)?, false)
                .map_err(SvidError::Sign)?;
            Ok(pb::MintJwtsvidResponse {
                svid: Some(types::Jwtsvid {
                    token: svid.token,
                    id: Some(convert::id_to_proto(&id)),
                    expires_at: svid.expires_at,
                    issued_at: svid.issued_at,
                    hint: String::new(),
                }),
            })
        }
        .await
        .map_err(Status::from);
        let id = req
            .id
            .as_ref()
            .map(|i| format!("spiffe://{}{}", i.trust_domain, i.path));
        ctx.audit.emit(
            &result,
            &[
                ("spiffe_id", id.unwrap_or_default()),
                ("audience", req.audience.join(",")),
            ],
        );
        result.map(Response::new)
    }

    async fn mint_witsvid(
        &self,
        _request: Request<pb::MintWitsvidRequest>,
    ) -> Result<Response<pb::MintWitsvidResponse>, Status> {
        Err(Status::unimplemented("WIT-SVIDs are not supported"))
    }

    async fn batch_new_x509svid(
        &self,
        request: Request<pb::BatchNewX509svidRequest>,
    ) -> Result<Response<pb::BatchNewX509svidResponse>, Status> {
        let ctx = Ctx::new(&self.state, &request, "BatchNewX509SVID", Policy::Agent)?;
        batch_new::batch_new_x509_svid(&ctx, request).await
    }

    async fn new_jwtsvid(
        &self,
        request: Request<pb::NewJwtsvidRequest>,
    ) -> Result<Response<pb::NewJwtsvidResponse>, Status> {
        let ctx = Ctx::new(&self.state, &request, "NewJWTSVID", Policy::Agent)?;
        new_jwt::new_jwt_svid(&ctx, request).await
    }

    async fn batch_new_witsvid(
        &self,
        _request: Request<pb::BatchNewWitsvidRequest>,
    ) -> Result<Response<pb::BatchNewWitsvidResponse>, Status> {
        Err(Status::unimplemented("WIT-SVIDs are not supported"))
    }

    async fn new_downstream_x509ca(
        &self,
        request: Request<pb::NewDownstreamX509caRequest>,
    ) -> Result<Response<pb::NewDownstreamX509caResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "NewDownstreamX509CA",
            Policy::Downstream,
        )?;
        downstream::new_downstream_x509_ca(&ctx, request).await
    }
}
