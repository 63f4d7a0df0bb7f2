//! `spire.api.server.localauthority.v1.LocalAuthority`: manual rotation of the X.509 and JWT
//! authorities (prepare, activate, taint, revoke).
//!
//! Mirrors `pkg/server/api/localauthority/v1/service.go`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Ctx, Policy};
use crate::ca::{AuthorityState, CaError, CaManager};
use crate::pb::localauthority as pb;
use crate::server::ServerState;

/// The LocalAuthority service.
#[derive(Debug, Clone)]
pub struct LocalAuthorityService {
    state: Arc<ServerState>,
}

impl LocalAuthorityService {
    /// A service over `state`.
    pub fn new(state: Arc<ServerState>) -> Self {
        LocalAuthorityService { state }
    }
}

/// CA manager errors as gRPC statuses (the one mapping of this module).
fn status(what: &str, e: CaError) -> Status {
    match e {
        CaError::InvalidRequest(m) => Status::invalid_argument(format!("{what}: {m}")),
        CaError::NotFound(m) => Status::not_found(format!("{what}: {m}")),
        other => {
            tracing::error!(error = %other, "{what}");
            Status::internal(format!("{what}: {other}"))
        }
    }
}

fn wire(s: AuthorityState) -> pb::AuthorityState {
    pb::AuthorityState {
        authority_id: s.authority_id,
        expires_at: s.expires_at,
        upstream_authority_subject_key_id: s.upstream_authority_subject_key_id,
    }
}

fn finish<T>(ctx: &Ctx, id: &str, result: Result<T, Status>) -> Result<Response<T>, Status> {
    ctx.audit.emit(&result, &[("authority_id", id.to_string())]);
    result.map(Response::new)
}

/// Active, prepared and old authorities on the wire.
type WireStates = (
    Option<pb::AuthorityState>,
    Option<pb::AuthorityState>,
    Option<pb::AuthorityState>,
);

impl LocalAuthorityService {
    /// A `Get*AuthorityState` RPC: authorizes the caller as `method`, reads the active, prepared
    /// and old authorities with `read` and answers with them in `response`.
    async fn get_states<Req, Resp>(
        &self,
        request: Request<Req>,
        method: &'static str,
        read: impl AsyncFnOnce(
            &CaManager,
        ) -> (
            Option<AuthorityState>,
            Option<AuthorityState>,
            Option<AuthorityState>,
        ),
        response: impl FnOnce(WireStates) -> Resp,
    ) -> Result<Response<Resp>, Status> {
        let ctx = Ctx::new(&self.state, &request, method, Policy::AdminOrLocal)?;
        let (active, prepared, old) = read(&ctx.state.ca).await;
        let states = (active.map(wire), prepared.map(wire), old.map(wire));
        finish(&ctx, "", Ok(response(states)))
    }

    /// A prepare, activate, taint or revoke RPC: authorizes the caller as `method`, runs
    /// `change` on the CA manager with the request's authority ID (`authority_id`; empty for
    /// prepare), maps a failure under the message `failed` and answers with the authority in
    /// `response`. Audited with the authority ID either way.
    async fn change<Req, Resp>(
        &self,
        request: Request<Req>,
        method: &'static str,
        failed: &str,
        authority_id: impl FnOnce(Req) -> String,
        change: impl AsyncFnOnce(&CaManager, &str) -> Result<AuthorityState, CaError>,
        response: impl FnOnce(Option<pb::AuthorityState>) -> Resp,
    ) -> Result<Response<Resp>, Status> {
        let ctx = Ctx::new(&self.state, &request, method, Policy::AdminOrLocal)?;
        let id = authority_id(request.into_inner());
        let r = change(&ctx.state.ca, &id)
            .await
            .map(|s| response(Some(wire(s))))
            .map_err(|e| status(failed, e));
        finish(&ctx, &id, r)
    }
}

/// The request of a prepare RPC names no authority.
fn no_id<Req>(_: Req) -> String {
    String::new()
}

#[tonic::async_trait]
impl pb::local_authority_server::LocalAuthority for LocalAuthorityService {
    async fn get_jwt_authority_state(
        &self,
        request: Request<pb::GetJwtAuthorityStateRequest>,
    ) -> Result<Response<pb::GetJwtAuthorityStateResponse>, Status> {
        self.get_states(
            request,
            "GetJWTAuthorityState",
            CaManager::jwt_states,
            |(active, prepared, old)| pb::GetJwtAuthorityStateResponse {
                active,
                prepared,
                old,
            },
        )
        .await
    }

    async fn prepare_jwt_authority(
        &self,
        request: Request<pb::PrepareJwtAuthorityRequest>,
    ) -> Result<Response<pb::PrepareJwtAuthorityResponse>, Status> {
        self.change(
            request,
            "PrepareJWTAuthority",
            "failed to prepare JWT authority",
            no_id,
            async |ca, _| ca.prepare_jwt_authority().await,
            |a| pb::PrepareJwtAuthorityResponse {
                prepared_authority: a,
            },
        )
        .await
    }

    async fn activate_jwt_authority(
        &self,
        request: Request<pb::ActivateJwtAuthorityRequest>,
    ) -> Result<Response<pb::ActivateJwtAuthorityResponse>, Status> {
        self.change(
            request,
            "ActivateJWTAuthority",
            "failed to activate JWT authority",
            |r| r.authority_id,
            CaManager::activate_jwt_authority,
            |a| pb::ActivateJwtAuthorityResponse {
                activated_authority: a,
            },
        )
        .await
    }

    async fn taint_jwt_authority(
        &self,
        request: Request<pb::TaintJwtAuthorityRequest>,
    ) -> Result<Response<pb::TaintJwtAuthorityResponse>, Status> {
        self.change(
            request,
            "TaintJWTAuthority",
            "failed to taint JWT authority",
            |r| r.authority_id,
            CaManager::taint_jwt_authority,
            |a| pb::TaintJwtAuthorityResponse {
                tainted_authority: a,
            },
        )
        .await
    }

    async fn revoke_jwt_authority(
        &self,
        request: Request<pb::RevokeJwtAuthorityRequest>,
    ) -> Result<Response<pb::RevokeJwtAuthorityResponse>, Status> {
        self.change(
            request,
            "RevokeJWTAuthority",
            "failed to revoke JWT authority",
            |r| r.authority_id,
            CaManager::revoke_jwt_authority,
            |a| pb::RevokeJwtAuthorityResponse {
                revoked_authority: a,
            },
        )
        .await
    }

    async fn get_x509_authority_state(
        &self,
        request: Request<pb::GetX509AuthorityStateRequest>,
    ) -> Result<Response<pb::GetX509AuthorityStateResponse>, Status> {
        self.get_states(
            request,
            "GetX509AuthorityState",
            CaManager::x509_states,
            |(active, prepared, old)| pb::GetX509AuthorityStateResponse {
                active,
                prepared,
                old,
            },
        )
        .await
    }

    async fn prepare_x509_authority(
        &self,
        request: Request<pb::PrepareX509AuthorityRequest>,
    ) -> Result<Response<pb::PrepareX509AuthorityResponse>, Status> {
        self.change(
            request,
            "PrepareX509Authority",
            "failed to prepare X.509 authority",
            no_id,
            async |ca, _| ca.prepare_x509_authority().await,
            |a| pb::PrepareX509AuthorityResponse {
                prepared_authority: a,
            },
        )
        .await
    }

    async fn activate_x509_authority(
        &self,
        request: Request<pb::ActivateX509AuthorityRequest>,
    ) -> Result<Response<pb::ActivateX509AuthorityResponse>, Status> {
        self.change(
            request,
            "ActivateX509Authority",
            "failed to activate X.509 authority",
            |r| r.authority_id,
            CaManager::activate_x509_authority,
            |a| pb::ActivateX509AuthorityResponse {
                activated_authority: a,
            },
        )
        .await
    }

    async fn taint_x509_authority(
        &self,
        request: Request<pb::TaintX509AuthorityRequest>,
    ) -> Result<Response<pb::TaintX509AuthorityResponse>, Status> {
        self.change(
            request,
            "TaintX509Authority",
            "failed to taint X.509 authority",
            |r| r.authority_id,
            CaManager::taint_x509_authority,
            |a| pb::TaintX509AuthorityResponse {
                tainted_authority: a,
            },
        )
        .await
    }

    async fn taint_x509_upstream_authority(
        &self,
        _request: Request<pb::TaintX509UpstreamAuthorityRequest>,
    ) -> Result<Response<pb::TaintX509UpstreamAuthorityResponse>, Status> {
        Err(Status::unimplemented(
            "tainting upstream authorities is not supported yet",
        ))
    }

    async fn revoke_x509_authority(
        &self,
        request: Request<pb::RevokeX509AuthorityRequest>,
    ) -> Result<Response<pb::RevokeX509AuthorityResponse>, Status> {
        self.change(
            request,
            "RevokeX509Authority",
            "failed to revoke X.509 authority",
            |r| r.authority_id,
            CaManager::revoke_x509_authority,
            |a| pb::RevokeX509AuthorityResponse {
                revoked_authority: a,
            },
        )
        .await
    }

    async fn revoke_x509_upstream_authority(
        &self,
        _request: Request<pb::RevokeX509UpstreamAuthorityRequest>,
    ) -> Result<Response<pb::RevokeX509UpstreamAuthorityResponse>, Status> {
        Err(Status::unimplemented(
            "revoking upstream authorities is not supported yet",
        ))
    }

    async fn get_wit_authority_state(
        &self,
        _request: Request<pb::GetWitAuthorityStateRequest>,
    ) -> Result<Response<pb::GetWitAuthorityStateResponse>, Status> {
        Err(Status::unimplemented("WIT authorities are not supported"))
    }

    async fn prepare_wit_authority(
        &self,
        _request: Request<pb::PrepareWitAuthorityRequest>,
    ) -> Result<Response<pb::PrepareWitAuthorityResponse>, Status> {
        Err(Status::unimplemented("WIT authorities are not supported"))
    }

    async fn activate_wit_authority(
        &self,
        _request: Request<pb::ActivateWitAuthorityRequest>,
    ) -> Result<Response<pb::ActivateWitAuthorityResponse>, Status> {
        Err(Status::unimplemented("WIT authorities are not supported"))
    }

    async fn taint_wit_authority(
        &self,
        _request: Request<pb::TaintWitAuthorityRequest>,
    ) -> Result<Response<pb::TaintWitAuthorityResponse>, Status> {
        Err(Status::unimplemented("WIT authorities are not supported"))
    }

    async fn revoke_wit_authority(
        &self,
        _request: Request<pb::RevokeWitAuthorityRequest>,
    ) -> Result<Response<pb::RevokeWitAuthorityResponse>, Status> {
        Err(Status::unimplemented("WIT authorities are not supported"))
    }
}
