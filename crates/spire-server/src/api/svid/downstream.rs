//! SVID.NewDownstreamX509CA: an intermediate CA for a downstream SPIRE server.
//!
//! STUB owned by the agent-facing work: replace this function (keep its signature). The caller
//! is already authorized as downstream (`Policy::Downstream`). Sign with
//! `ctx.state.ca.sign_downstream_ca(..)`.

use tonic::{Request, Response, Status};

use crate::api::Ctx;
use crate::pb::svid as pb;

/// NewDownstreamX509CA.
pub(crate) async fn new_downstream_x509_ca(
    _ctx: &Ctx,
    _request: Request<pb::NewDownstreamX509caRequest>,
) -> Result<Response<pb::NewDownstreamX509caResponse>, Status> {
    Err(Status::unimplemented(
        "NewDownstreamX509CA is not implemented yet",
    ))
}
