//! `spire.api.server.bundle.v1.Bundle`: the local bundle (GetBundle for anyone, AppendBundle
//! for admins) and federated bundles.
//!
//! Mirrors `pkg/server/api/bundle/v1/service.go`.

use std::sync::Arc;

use spire_datastore as ds;
use spire_spiffe::TrustDomain;
use tonic::{Request, Response, Status};

use super::convert::{self, InvalidArgument};
use super::{Ctx, Policy, pagination, rate_limit};
use crate::pb::bundle as pb;
use crate::pb::types;
use crate::server::ServerState;

/// The Bundle service.
#[derive(Debug, Clone)]
pub struct BundleService {
    state: Arc<ServerState>,
}

impl BundleService {
    /// A service over `state`.
    pub fn new(state: Arc<ServerState>) -> Self {
        BundleService { state }
    }
}

/// Errors of this module, mapped to gRPC statuses in one place.
#[derive(Debug, thiserror::Error)]
enum BundleError {
    #[error("{0}")]
    Invalid(String),
    #[error("bundle not found")]
    NotFound,
    #[error("bundle already exists")]
    AlreadyExists,
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{what}")]
    DataStore {
        what: &'static str,
        #[source]
        source: ds::Error,
    },
}

impl BundleError {
    fn ds(what: &'static str) -> impl FnOnce(ds::Error) -> BundleError {
        move |source| match source {
            ds::Error::NotFound { .. } => BundleError::NotFound,
            ds::Error::AlreadyExists { .. } => BundleError::AlreadyExists,
            ds::Error::BundleInUse { .. } => BundleError::FailedPrecondition(source.to_string()),
            ds::Error::InvalidArgument(m) => BundleError::Invalid(m),
            source => BundleError::DataStore { what, source },
        }
    }
}

impl From<InvalidArgument> for BundleError {
    fn from(e: InvalidArgument) -> Self {
        BundleError::Invalid(e.0)
    }
}

impl From<BundleError> for Status {
    fn from(e: BundleError) -> Status {
        match &e {
            BundleError::Invalid(m) => Status::invalid_argument(m.clone()),
            BundleError::NotFound => Status::not_found("bundle not found"),
            BundleError::AlreadyExists => Status::already_exists("bundle already exists"),
            BundleError::FailedPrecondition(m) => Status::failed_precondition(m.clone()),
            BundleError::DataStore { what, source } => crate::api::datastore_status(what, source),
        }
    }
}

impl BundleService {
    fn federated_td(&self, name: &str, verb: &str) -> Result<TrustDomain, BundleError> {
        let raw = name.strip_prefix("spiffe://").unwrap_or(name);
        let td: TrustDomain = raw
            .parse()
            .map_err(|e| BundleError::Invalid(format!("malformed trust domain {name:?}: {e}")))?;
        if td == self.state.trust_domain {
            return Err(BundleError::Invalid(format!(
                "{verb} a federated bundle for the server's own trust domain ({td}) is not allowed"
            )));
        }
        Ok(td)
    }

    fn federated_bundle(&self, b: &types::Bundle, verb: &str) -> Result<ds::Bundle, BundleError> {
        self.federated_td(&b.trust_domain, verb)?;
        let parsed = convert::bundle_from_proto(b)?;
        if parsed.x509_authorities.is_empty() {
            return Err(BundleError::Invalid(
                "failed to convert bundle: bundle must contain at least one X.509 authority".into(),
            ));
        }
        Ok(parsed)
    }

    /// The per-item part of a batch create, update or set of federated bundles: runs `save`
    /// on each bundle in order and answers each with `result` (its status and, when saved, the
    /// bundle as the output `mask` shows it), audited under its trust domain.
    async fn save_each<'b, R, Saved>(
        &self,
        ctx: &Ctx,
        bundles: &'b [types::Bundle],
        mask: Option<&types::BundleMask>,
        mut save: impl FnMut(&'b types::Bundle) -> Saved,
        result: impl Fn(types::Status, Option<types::Bundle>) -> R,
    ) -> Vec<R>
    where
        Saved: Future<Output = Result<ds::Bundle, BundleError>>,
    {
        let mut results = Vec::with_capacity(bundles.len());
        for b in bundles {
            let outcome = save(b)
                .await
                .map(|saved| convert::bundle_to_proto(&saved, mask));
            let (status, bundle) =
                ctx.item(outcome, &[("trust_domain_id", b.trust_domain.clone())]);
            results.push(result(status, bundle));
        }
        results
    }
}

#[tonic::async_trait]
impl pb::bundle_server::Bundle for BundleService {
    async fn count_bundles(
        &self,
        request: Request<pb::CountBundlesRequest>,
    ) -> Result<Response<pb::CountBundlesResponse>, Status> {
        let ctx = Ctx::new(&self.state, &request, "CountBundles", Policy::AdminOrLocal)?;
        let result = ctx
            .state
            .datastore
            .count_bundles()
            .await
            .map_err(BundleError::ds("failed to count bundles"))
            .map(|n| pb::CountBundlesResponse {
                count: i32::try_from(n).unwrap_or(i32::MAX),
            });
        ctx.respond(result, &[])
    }

    async fn get_bundle(
        &self,
        request: Request<pb::GetBundleRequest>,
    ) -> Result<Response<types::Bundle>, Status> {
        let ctx = Ctx::new(&self.state, &request, "GetBundle", Policy::Any)?;
        // Agents (TCP) get the bundle the authorized-entry index follows, when it is fresh.
        let cached = crate::endpoints::tcp::tcp_context(&request)
            .ok()
            .and_then(|tcp| tcp.index.fresh_bundle(&self.state.datastore));
        let req = request.into_inner();
        let result = async {
            let b = match cached {
                Some(b) => b,
                None => std::sync::Arc::new(
                    ctx.state
                        .datastore
                        .get_bundle(&ctx.state.trust_domain)
                        .await
                        .map_err(BundleError::ds("failed to fetch bundle"))?
                        .ok_or(BundleError::NotFound)?,
                ),
            };
            Ok::<_, BundleError>(convert::bundle_to_proto(&b, req.output_mask.as_ref()))
        }
        .await;
        ctx.respond(result, &[])
    }

    async fn append_bundle(
        &self,
        request: Request<pb::AppendBundleRequest>,
    ) -> Result<Response<types::Bundle>, Status> {
        let ctx = Ctx::new(&self.state, &request, "AppendBundle", Policy::AdminOrLocal)?;
        let req = request.into_inner();
        let result = async {
            if req.x509_authorities.is_empty() && req.jwt_authorities.is_empty() {
                return Err(BundleError::Invalid("no authorities to append".into()));
            }
            let mut add = ds::Bundle::new(ctx.state.trust_domain.clone());
            add.x509_authorities = convert::x509_authorities_from_proto(&req.x509_authorities)
                .map_err(|e| {
                    BundleError::Invalid(format!("failed to convert X.509 authority: {}", e.0))
                })?;
            add.jwt_authorities = convert::jwt_authorities_from_proto(&req.jwt_authorities)
                .map_err(|e| {
                    BundleError::Invalid(format!("failed to convert JWT authority: {}", e.0))
                })?;
            let b = ctx
                .state
                .datastore
                .append_bundle(&add)
                .await
                .map_err(BundleError::ds("failed to append bundle"))?;
            Ok::<_, BundleError>(convert::bundle_to_proto(&b, req.output_mask.as_ref()))
        }
        .await;
        ctx.respond(result, &[])
    }

    async fn publish_jwt_authority(
        &self,
        request: Request<pb::PublishJwtAuthorityRequest>,
    ) -> Result<Response<pb::PublishJwtAuthorityResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "PublishJWTAuthority",
            Policy::Downstream,
        )?;
        // Downstream callers come over TCP only, where the per-IP limits live.
        let tcp = crate::endpoints::tcp::tcp_context(&request)?;
        let req = request.into_inner();
        let result = async {
            rate_limit(&tcp.limits.sign, &ctx.caller, 1, "key publishing").await?;
            let key = req
                .jwt_authority
                .ok_or_else(|| BundleError::Invalid("missing JWT authority".into()))?;
            let mut keys = convert::jwt_authorities_from_proto(&[key])
                .map_err(|e| BundleError::Invalid(format!("invalid JWT authority: {}", e.0)))?;
            let key = keys
                .pop()
                .ok_or_else(|| BundleError::Invalid("missing JWT authority".into()))?;
            // Through the CA manager: a server that is itself nested forwards the key upstream.
            let published = ctx.state.ca.publish_jwt_key(key).await.map_err(|e| {
                tracing::error!(error = %e, "Failed to publish JWT key");
                Status::internal(format!("failed to publish JWT key: {e}"))
            })?;
            let mut b = ds::Bundle::new(ctx.state.trust_domain.clone());
            b.jwt_authorities = published;
            Ok::<_, Status>(pb::PublishJwtAuthorityResponse {
                jwt_authorities: convert::bundle_to_proto(&b, None).jwt_authorities,
            })
        }
        .await;
        ctx.respond(result, &[])
    }

    async fn publish_wit_authority(
        &self,
        _request: Request<pb::PublishWitAuthorityRequest>,
    ) -> Result<Response<pb::PublishWitAuthorityResponse>, Status> {
        Err(Status::unimplemented("WIT authorities are not supported"))
    }

    async fn list_federated_bundles(
        &self,
        request: Request<pb::ListFederatedBundlesRequest>,
    ) -> Result<Response<pb::ListFederatedBundlesResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "ListFederatedBundles",
            Policy::AdminOrLocal,
        )?;
        let req = request.into_inner();
        let result = async {
            let page = pagination(req.page_size, &req.page_token).map_err(BundleError::Invalid)?;
            let page = ctx
                .state
                .datastore
                .list_bundles(&page)
                .await
                .map_err(BundleError::ds("failed to list bundles"))?;
            Ok::<_, BundleError>(pb::ListFederatedBundlesResponse {
                bundles: page
                    .items
                    .iter()
                    .filter(|b| b.trust_domain != ctx.state.trust_domain)
                    .map(|b| convert::bundle_to_proto(b, req.output_mask.as_ref()))
                    .collect(),
                next_page_token: page.next_page_token,
            })
        }
        .await;
        ctx.respond(result, &[])
    }

    async fn get_federated_bundle(
        &self,
        request: Request<pb::GetFederatedBundleRequest>,
    ) -> Result<Response<types::Bundle>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "GetFederatedBundle",
            Policy::AdminLocalOrAgent,
        )?;
        let req = request.into_inner();
        let result = async {
            let td = self.federated_td(&req.trust_domain, "getting")?;
            let b = ctx
                .state
                .datastore
                .get_bundle(&td)
                .await
                .map_err(BundleError::ds("failed to fetch bundle"))?
                .ok_or(BundleError::NotFound)?;
            Ok::<_, BundleError>(convert::bundle_to_proto(&b, req.output_mask.as_ref()))
        }
        .await;
        ctx.respond(result, &[("trust_domain_id", req.trust_domain.clone())])
    }

    async fn batch_create_federated_bundle(
        &self,
        request: Request<pb::BatchCreateFederatedBundleRequest>,
    ) -> Result<Response<pb::BatchCreateFederatedBundleResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "BatchCreateFederatedBundle",
            Policy::AdminOrLocal,
        )?;
        let req = request.into_inner();
        let results = self
            .save_each(
                &ctx,
                &req.bundle,
                req.output_mask.as_ref(),
                |b| async move {
                    let parsed = self.federated_bundle(b, "creating")?;
                    self.state
                        .datastore
                        .create_bundle(&parsed)
                        .await
                        .map_err(BundleError::ds("failed to create bundle"))
                },
                |status, bundle| pb::batch_create_federated_bundle_response::Result {
                    status: Some(status),
                    bundle,
                },
            )
            .await;
        Ok(Response::new(pb::BatchCreateFederatedBundleResponse {
            results,
        }))
    }

    async fn batch_update_federated_bundle(
        &self,
        request: Request<pb::BatchUpdateFederatedBundleRequest>,
    ) -> Result<Response<pb::BatchUpdateFederatedBundleResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "BatchUpdateFederatedBundle",
            Policy::AdminOrLocal,
        )?;
        let req = request.into_inner();
        let input_mask = req.input_mask.as_ref();
        let results = self
            .save_each(
                &ctx,
                &req.bundle,
                req.output_mask.as_ref(),
                |b| async move {
                    let td = self.federated_td(&b.trust_domain, "updating")?;
                    let parsed = convert::bundle_from_proto(b)?;
                    let existing = self
                        .state
                        .datastore
                        .get_bundle(&td)
                        .await
                        .map_err(BundleError::ds("failed to fetch bundle"))?
                        .ok_or(BundleError::NotFound)?;
                    let mut merged = existing;
                    let m = input_mask;
                    if m.is_none_or(|m| m.x509_authorities) {
                        merged.x509_authorities = parsed.x509_authorities;
                    }
                    if m.is_none_or(|m| m.jwt_authorities) {
                        merged.jwt_authorities = parsed.jwt_authorities;
                    }
                    if m.is_none_or(|m| m.refresh_hint) {
                        merged.refresh_hint = parsed.refresh_hint;
                    }
                    if m.is_none_or(|m| m.sequence_number) {
                        merged.sequence_number = parsed.sequence_number;
                    }
                    self.state
                        .datastore
                        .update_bundle(&merged)
                        .await
                        .map_err(BundleError::ds("failed to update bundle"))
                },
                |status, bundle| pb::batch_update_federated_bundle_response::Result {
                    status: Some(status),
                    bundle,
                },
            )
            .await;
        Ok(Response::new(pb::BatchUpdateFederatedBundleResponse {
            results,
        }))
    }

    async fn batch_set_federated_bundle(
        &self,
        request: Request<pb::BatchSetFederatedBundleRequest>,
    ) -> Result<Response<pb::BatchSetFederatedBundleResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "BatchSetFederatedBundle",
            Policy::AdminOrLocal,
        )?;
        let req = request.into_inner();
        let results = self
            .save_each(
                &ctx,
                &req.bundle,
                req.output_mask.as_ref(),
                |b| async move {
                    let parsed = self.federated_bundle(b, "setting")?;
                    self.state
                        .datastore
                        .set_bundle(&parsed)
                        .await
                        .map_err(BundleError::ds("failed to set bundle"))
                },
                |status, bundle| pb::batch_set_federated_bundle_response::Result {
                    status: Some(status),
                    bundle,
                },
            )
            .await;
        Ok(Response::new(pb::BatchSetFederatedBundleResponse {
            results,
        }))
    }

    async fn batch_delete_federated_bundle(
        &self,
        request: Request<pb::BatchDeleteFederatedBundleRequest>,
    ) -> Result<Response<pb::BatchDeleteFederatedBundleResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "BatchDeleteFederatedBundle",
            Policy::AdminOrLocal,
        )?;
        let req = request.into_inner();
        use pb::batch_delete_federated_bundle_request::Mode;
        let mode = match Mode::try_from(req.mode) {
            Ok(Mode::Restrict) => ds::BundleDeleteMode::Restrict,
            Ok(Mode::Delete) => ds::BundleDeleteMode::Delete,
            Ok(Mode::Dissociate) => ds::BundleDeleteMode::Dissociate,
            Err(_) => {
                let s = Status::invalid_argument(format!("unknown delete mode {}", req.mode));
                ctx.audit.emit_error(&s, &[]);
                return Err(s);
            }
        };
        let mut results = Vec::new();
        for name in &req.trust_domains {
            let outcome = async {
                let td = self.federated_td(name, "removing")?;
                ctx.state
                    .datastore
                    .delete_bundle(&td, mode)
                    .await
                    .map_err(BundleError::ds("failed to delete federated bundle"))
            }
            .await;
            let (status, _) = ctx.item(outcome, &[("trust_domain_id", name.clone())]);
            results.push(pb::batch_delete_federated_bundle_response::Result {
                status: Some(status),
                trust_domain: name.clone(),
            });
        }
        Ok(Response::new(pb::BatchDeleteFederatedBundleResponse {
            results,
        }))
    }
}
