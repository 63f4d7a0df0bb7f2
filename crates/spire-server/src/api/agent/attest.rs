//! Agent.AttestAgent: node attestation (bidirectional stream).
//!
//! STUB owned by the agent-facing work: replace this function (keep its signature). Any caller
//! may call it (`Policy::Any`).

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::api::Ctx;
use crate::pb::agent as pb;

/// The response stream of AttestAgent.
pub type AttestAgentStream =
    Pin<Box<dyn Stream<Item = Result<pb::AttestAgentResponse, Status>> + Send>>;

/// AttestAgent.
pub(crate) async fn attest_agent(
    _ctx: &Ctx,
    _request: Request<tonic::Streaming<pb::AttestAgentRequest>>,
) -> Result<Response<AttestAgentStream>, Status> {
    Err(Status::unimplemented("AttestAgent is not implemented yet"))
}
