//! Agent.RenewAgent: renews the calling agent's X509-SVID.
//!
//! STUB owned by the agent-facing work: replace this function (keep its signature). The caller
//! is already authorized as an agent (`Policy::Agent`).

use tonic::{Request, Response, Status};

use crate::api::Ctx;
use crate::pb::agent as pb;

/// RenewAgent.
pub(crate) async fn renew_agent(
    _ctx: &Ctx,
    _request: Request<pb::RenewAgentRequest>,
) -> Result<Response<pb::RenewAgentResponse>, Status> {
    Err(Status::unimplemented("RenewAgent is not implemented yet"))
}
