//! `spire.api.server.localauthority.v1.LocalAuthority`: manual rotation of the X.509 and JWT
//! authorities (prepare, activate, taint, revoke).
//!
//! Mirrors `pkg/server/api/localauthority/v1/service.go`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Ctx, Policy};
use crate::ca::{AuthorityState, CaError};
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

#[tonic::async_trait]
impl pb::local_authority_server::LocalAuthority for LocalAuthorityService {
    async fn get_jwt_authority_state(
        &self,
        request: Request<pb::GetJwtAuthorityStateRequest>,
    ) -> Result<Response<pb::GetJwtAuthorityStateResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "GetJWTAuthorityState",
            Policy::AdminOrLocal,
        )?;
        let (active, prepared, old) = ctx.state.ca.jwt_states().await;
        finish(
            &ctx,
            "",
            Ok(pb::GetJwtAuthorityStateResponse {
                active: active.map(wire),
                prepared: prepared.map(wire),
                old: old.map(wire),
            }),
        )
    }

    async fn prepare_jwt_authority(
        &self,
        request: Request<pb::PrepareJwtAuthorityRequest>,
    ) -> Result<Response<pb::PrepareJwtAuthorityResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "PrepareJWTAuthority",
            Policy::AdminOrLocal,
        )?;
        let r = ctx
            .state
            .ca
            .prepare_jwt_authority()
            .await
            .map(|s| pb::PrepareJwtAuthorityResponse {
                prepared_authority: Some(wire(s)),
            })
            .map_err(|e| status("failed to prepare JWT authority", e));
        finish(&ctx, "", r)
    }

    async fn activate_jwt_authority(
        &self,
        request: Request<pb::ActivateJwtAuthorityRequest>,
    ) -> Result<Response<pb::ActivateJwtAuthorityResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "ActivateJWTAuthority",
            Policy::AdminOrLocal,
        )?;
        let id = request.into_inner().authority_id;
        let r = ctx
            .state
            .ca
            .activate_jwt_authority(&id)
            .await
            .map(|s| pb::ActivateJwtAuthorityResponse {
                activated_authority: Some(wire(s)),
            })
            .map_err(|e| status("failed to activate JWT authority", e));
        finish(&ctx, &id, r)
    }

    async fn taint_jwt_authority(
        &self,
        request: Request<pb::TaintJwtAuthorityRequest>,
    ) -> Result<Response<pb::TaintJwtAuthorityResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "TaintJWTAuthority",
            Policy::AdminOrLocal,
        )?;
        let id = request.into_inner().authority_id;
        let r = ctx
            .state
            .ca
            .taint_jwt_authority(&id)
            .await
            .map(|s| pb::TaintJwtAuthorityResponse {
                tainted_authority: Some(wire(s)),
            })
            .map_err(|e| status("failed to taint JWT authority", e));
        finish(&ctx, &id, r)
    }

    async fn revoke_jwt_authority(
        &self,
        request: Request<pb::RevokeJwtAuthorityRequest>,
    ) -> Result<Response<pb::RevokeJwtAuthorityResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "RevokeJWTAuthority",
            Policy::AdminOrLocal,
        )?;
        let id = request.into_inner().authority_id;
        let r = ctx
            .state
            .ca
            .revoke_jwt_authority(&id)
            .await
            .map(|s| pb::RevokeJwtAuthorityResponse {
                revoked_authority: Some(wire(s)),
            })
            .map_err(|e| status("failed to revoke JWT authority", e));
        finish(&ctx, &id, r)
    }

    async fn get_x509_authority_state(
        &self,
        request: Request<pb::GetX509AuthorityStateRequest>,
    ) -> Result<Response<pb::GetX509AuthorityStateResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "GetX509AuthorityState",
            Policy::AdminOrLocal,
        )?;
        let (active, prepared, old) = ctx.state.ca.x509_states().await;
        finish(
            &ctx,
            "",
            Ok(pb::GetX509AuthorityStateResponse {
                active: active.map(wire),
                prepared: prepared.map(wire),
                old: old.map(wire),
            }),
        )
    }

    async fn prepare_x509_authority(
        &self,
        request: Request<pb::PrepareX509AuthorityRequest>,
    ) -> Result<Response<pb::PrepareX509AuthorityResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "PrepareX509Authority",
            Policy::AdminOrLocal,
        )?;
        let r = ctx
            .state
            .ca
            .prepare_x509_authority()
            .await
            .map(|s| pb::PrepareX509AuthorityResponse {
                prepared_authority: Some(wire(s)),
            })
            .map_err(|e| status("failed to prepare X.509 authority", e));
        finish(&ctx, "", r)
    }

    async fn activate_x509_authority(
        &self,
        request: Request<pb::ActivateX509AuthorityRequest>,
    ) -> Result<Response<pb::ActivateX509AuthorityResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "ActivateX509Authority",
            Policy::AdminOrLocal,
        )?;
        let id = request.into_inner().authority_id;
        let r = ctx
            .state
            .ca
            .activate_x509_authority(&id)
            .await
            .map(|s| pb::ActivateX509AuthorityResponse {
                activated_authority: Some(wire(s)),
            })
            .map_err(|e| status("failed to activate X.509 authority", e));
        finish(&ctx, &id, r)
    }

    async fn taint_x509_authority(
        &self,
        request: Request<pb::TaintX509AuthorityRequest>,
    ) -> Result<Response<pb::TaintX509AuthorityResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "TaintX509Authority",
            Policy::AdminOrLocal,
        )?;
        let id = request.into_inner().authority_id;
        let r = ctx
            .state
            .ca
            .taint_x509_authority(&id)
            .await
            .map(|s| pb::TaintX509AuthorityResponse {
                tainted_authority: Some(wire(s)),
            })
            .map_err(|e| status("failed to taint X.509 authority", e));
        finish(&ctx, &id, r)
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
        let ctx = Ctx::new(
            &self.state,
            &request,
            "RevokeX509Authority",
            Policy::AdminOrLocal,
        )?;
        let id = request.into_inner().authority_id;
        let r = ctx
            .state
            .ca
            .revoke_x509_authority(&id)
            .await
            .map(|s| pb::RevokeX509AuthorityResponse {
                revoked_authority: Some(wire(s)),
            })
            .map_err(|e| status("failed to revoke X.509 authority", e));
        finish(&ctx, &id, r)
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
