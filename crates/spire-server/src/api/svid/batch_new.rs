//! SVID.BatchNewX509SVID: workload X509-SVIDs for entries the calling agent is authorized for.
//!
//! STUB owned by the agent-facing work: replace this function (keep its signature). The caller
//! is already authorized as an agent (`Policy::Agent`). Sign with
//! `ctx.state.ca.sign_x509_svid(..)`.

use tonic::{Request, Response, Status};

use crate::api::Ctx;
use crate::pb::svid as pb;

/// BatchNewX509SVID.
pub(crate) async fn batch_new_x509_svid(
    _ctx: &Ctx,
    _request: Request<pb::BatchNewX509svidRequest>,
) -> Result<Response<pb::BatchNewX509svidResponse>, Status> {
    Err(Status::unimplemented(
        "BatchNewX509SVID is not implemented yet",
    ))
}
