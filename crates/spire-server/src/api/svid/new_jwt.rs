//! SVID.NewJWTSVID: a JWT-SVID for an entry the calling agent is authorized for.
//!
//! The caller is already authorized as an agent (`Policy::Agent`). An entry that does not
//! exist or is not authorized for the caller is PermissionDenied ("entry not found or not
//! authorized"). The token carries the entry's SPIFFE ID and JWT-SVID TTL, and a `jti` when
//! the entry asks for one. Rate-limited per IP (`ratelimit.signing`).
//!
//! Mirrors `pkg/server/api/svid/v1/service.go` (`NewJWTSVID`).

use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::api::{Ctx, convert, rate_limit};
use crate::endpoints::tcp::tcp_context;
use crate::pb::svid as pb;
use crate::pb::types;

/// NewJWTSVID.
pub(crate) async fn new_jwt_svid(
    ctx: &Ctx,
    request: Request<pb::NewJwtsvidRequest>,
) -> Result<Response<pb::NewJwtsvidResponse>, Status> {
    let tcp = tcp_context(&request)?;
    let req = request.into_inner();
    let result = async {
        rate_limit(&tcp.limits.sign, &ctx.caller, 1, "JWT signing request").await?;
        if ctx.state.config.disable_jwt_svids {
            return Err(Status::unimplemented("JWT functionality is disabled"));
        }
        let agent = ctx.caller_id()?;
        if req.entry_id.is_empty() {
            return Err(Status::invalid_argument("missing entry ID"));
        }
        let entry = tcp
            .index
            .authorized_entries(agent)
            .into_iter()
            .find(|e| e.id == req.entry_id)
            .ok_or_else(|| Status::permission_denied("entry not found or not authorized"))?;
        if req.audience.is_empty() || req.audience.iter().any(String::is_empty) {
            return Err(Status::invalid_argument(
                "at least one audience is required",
            ));
        }
        let ttl = (entry.jwt_svid_ttl > 0).then(|| Duration::from_secs(entry.jwt_svid_ttl as u64));
        let svid = ctx
            .state
            .ca
            .sign_jwt_svid(
                &entry.spiffe_id,
                &req.audience,
                ttl,
                entry.jwt_svid_include_jti,
            )
            .map_err(|e| Status::internal(format!("failed to sign JWT-SVID: {e}")))?;
        Ok(pb::NewJwtsvidResponse {
            svid: Some(types::Jwtsvid {
                token: svid.token,
                id: Some(convert::id_to_proto(&entry.spiffe_id)),
                expires_at: svid.expires_at,
                issued_at: svid.issued_at,
                hint: entry.hint.clone(),
            }),
        })
    }
    .await;
    ctx.audit.emit(
        &result,
        &[
            ("entry_id", req.entry_id.clone()),
            ("audience", req.audience.join(",")),
        ],
    );
    result.map(Response::new)
}
