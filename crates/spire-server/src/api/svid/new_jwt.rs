//! SVID.NewJWTSVID: a JWT-SVID for an entry the calling agent is authorized for.
//!
//! STUB owned by the agent-facing work: replace this function (keep its signature). The caller
//! is already authorized as an agent (`Policy::Agent`). Sign with
//! `ctx.state.ca.sign_jwt_svid(..)`.

use tonic::{Request, Response, Status};

use crate::api::Ctx;
use crate::pb::svid as pb;

/// NewJWTSVID.
pub(crate) async fn new_jwt_svid(
    _ctx: &Ctx,
    _request: Request<pb::NewJwtsvidRequest>,
) -> Result<Response<pb::NewJwtsvidResponse>, Status> {
    Err(Status::unimplemented("NewJWTSVID is not implemented yet"))
}
