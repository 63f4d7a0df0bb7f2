//! Agent.PostStatus: the agent reports its version (and bundle serial, which is not stored).
//!
//! The caller is already authorized as an agent (`Policy::Agent`).
//!
//! Mirrors `pkg/server/api/agent/v1/service.go` (`PostStatus`).

use spire_datastore::NodeUpdate;
use tonic::{Request, Response, Status};

use crate::api::{Ctx, rate_limit};
use crate::endpoints::tcp::tcp_context;
use crate::pb::agent as pb;

/// Longest agent version accepted.
const MAX_VERSION_LEN: usize = 255;

/// PostStatus.
pub(crate) async fn post_status(
    ctx: &Ctx,
    request: Request<pb::PostStatusRequest>,
) -> Result<Response<pb::PostStatusResponse>, Status> {
    let tcp = tcp_context(&request)?;
    let req = request.into_inner();
    let result = async {
        rate_limit(&tcp.limits.post_status, &ctx.caller, 1, "post status").await?;
        let id = ctx.caller_id()?.clone();
        if !req.agent_version.is_empty() {
            if req.agent_version.len() > MAX_VERSION_LEN {
                return Err(Status::invalid_argument(
                    "agent version is too long (max 255 characters)",
                ));
            }
            let update = NodeUpdate {
                agent_version: Some(req.agent_version.clone()),
                ..NodeUpdate::default()
            };
            ctx.state
                .datastore
                .update_attested_node(&id, &update)
                .await
                .map_err(|e| Status::internal(format!("failed to update agent version: {e}")))?;
        }
        Ok(pb::PostStatusResponse {})
    }
    .await;
    ctx.audit
        .emit(&result, &[("agent_version", req.agent_version.clone())]);
    result.map(Response::new)
}
