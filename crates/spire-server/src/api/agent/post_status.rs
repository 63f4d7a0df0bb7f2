//! Agent.PostStatus: the agent reports its version and bundle serial.
//!
//! STUB owned by the agent-facing work: replace this function (keep its signature). The caller
//! is already authorized as an agent (`Policy::Agent`).

use tonic::{Request, Response, Status};

use crate::api::Ctx;
use crate::pb::agent as pb;

/// PostStatus.
pub(crate) async fn post_status(
    _ctx: &Ctx,
    _request: Request<pb::PostStatusRequest>,
) -> Result<Response<pb::PostStatusResponse>, Status> {
    Err(Status::unimplemented("PostStatus is not implemented yet"))
}
