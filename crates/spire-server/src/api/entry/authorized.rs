//! Agent-facing Entry RPCs: GetAuthorizedEntries and SyncAuthorizedEntries.
//!
//! STUB owned by the agent-facing work: replace these functions (keep their signatures) with
//! the authorized-entries index lookups. The caller is already authorized as an agent
//! (`Policy::Agent`) when they run.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::api::Ctx;
use crate::pb::entry as pb;

/// The response stream of SyncAuthorizedEntries.
pub type SyncAuthorizedEntriesStream =
    Pin<Box<dyn Stream<Item = Result<pb::SyncAuthorizedEntriesResponse, Status>> + Send>>;

/// GetAuthorizedEntries: every entry the calling agent is authorized for.
pub(crate) async fn get_authorized_entries(
    _ctx: &Ctx,
    _request: Request<pb::GetAuthorizedEntriesRequest>,
) -> Result<Response<pb::GetAuthorizedEntriesResponse>, Status> {
    Err(Status::unimplemented(
        "GetAuthorizedEntries is not implemented yet",
    ))
}

/// SyncAuthorizedEntries: incremental sync of the calling agent's entries.
pub(crate) async fn sync_authorized_entries(
    _ctx: &Ctx,
    _request: Request<tonic::Streaming<pb::SyncAuthorizedEntriesRequest>>,
) -> Result<Response<SyncAuthorizedEntriesStream>, Status> {
    Err(Status::unimplemented(
        "SyncAuthorizedEntries is not implemented yet",
    ))
}
