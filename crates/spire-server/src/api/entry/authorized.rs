//! Agent-facing Entry RPCs: GetAuthorizedEntries and SyncAuthorizedEntries, served from the
//! authorized-entry index ([`crate::authorized_entries`]). The caller is already authorized as
//! an agent (`Policy::Agent`) when they run.
//!
//! SyncAuthorizedEntries: the first request carries only an output mask (which must not mask
//! the revision number). If the agent has at most [`PAGE_SIZE`] entries, one response carries
//! them all and the stream ends. Otherwise the server sends pages of [`PAGE_SIZE`]
//! `EntryRevision`s (id, revision, created_at), `more = true` on all but the last; then it
//! answers each request carrying entry IDs with the full entries (pages of [`PAGE_SIZE`],
//! `more = true` on all but the last), until the agent closes its side.
//!
//! Mirrors `pkg/server/api/entry/v1/service.go`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use spire_datastore::Entry;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::api::{Ctx, convert};
use crate::endpoints::tcp::{TcpContext, tcp_context};
use crate::pb::entry as pb;
use crate::pb::types;

/// Entries (or revisions) per SyncAuthorizedEntries response.
pub const PAGE_SIZE: usize = 500;

/// The response stream of SyncAuthorizedEntries.
pub type SyncAuthorizedEntriesStream =
    Pin<Box<dyn Stream<Item = Result<pb::SyncAuthorizedEntriesResponse, Status>> + Send>>;

/// Longest wait for the index to apply this server's own node writes before answering.
const LOCAL_NODE_WRITE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

async fn caller_entries(
    ctx: &Ctx,
    tcp: Result<Arc<TcpContext>, Status>,
) -> Result<Vec<Arc<Entry>>, Status> {
    let tcp = tcp?;
    let id = ctx.caller_id()?;
    // An agent syncing right after it attested through this server must see its node
    // selectors (node-alias entries), not an index that has not applied the attestation yet.
    tcp.index
        .wait_for_local_node_writes(&tcp.state.datastore, LOCAL_NODE_WRITE_WAIT)
        .await;
    Ok(tcp.index.authorized_entries(id))
}

/// GetAuthorizedEntries: every entry the calling agent is authorized for.
pub(crate) async fn get_authorized_entries(
    ctx: &Ctx,
    request: Request<pb::GetAuthorizedEntriesRequest>,
) -> Result<Response<pb::GetAuthorizedEntriesResponse>, Status> {
    let result = caller_entries(ctx, tcp_context(&request))
        .await
        .map(|entries| {
            let mask = request.get_ref().output_mask.as_ref();
            pb::GetAuthorizedEntriesResponse {
                entries: entries
                    .iter()
                    .map(|e| convert::entry_to_proto(e, mask))
                    .collect(),
            }
        });
    ctx.audit.emit(&result, &[]);
    result.map(Response::new)
}

/// SyncAuthorizedEntries: incremental sync of the calling agent's entries.
pub(crate) async fn sync_authorized_entries(
    ctx: &Ctx,
    request: Request<Streaming<pb::SyncAuthorizedEntriesRequest>>,
) -> Result<Response<SyncAuthorizedEntriesStream>, Status> {
    let entries = match caller_entries(ctx, tcp_context(&request)).await {
        Ok(e) => e,
        Err(s) => {
            ctx.audit.emit_error(&s, &[]);
            return Err(s);
        }
    };
    let audit = ctx.audit.clone();
    let inbound = request.into_inner();
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let result = sync(entries, inbound, &tx).await;
        audit.emit(&result, &[]);
        if let Err(s) = result {
            let _ = tx.send(Err(s)).await;
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

type Outbound = mpsc::Sender<Result<pb::SyncAuthorizedEntriesResponse, Status>>;

async fn send(tx: &Outbound, r: pb::SyncAuthorizedEntriesResponse) -> Result<(), Status> {
    tx.send(Ok(r))
        .await
        .map_err(|_| Status::cancelled("the agent went away"))
}

async fn sync(
    entries: Vec<Arc<Entry>>,
    mut inbound: Streaming<pb::SyncAuthorizedEntriesRequest>,
    tx: &Outbound,
) -> Result<(), Status> {
    let Some(first) = inbound.message().await? else {
        return Ok(());
    };
    if !first.ids.is_empty() {
        return Err(Status::invalid_argument(
            "specifying IDs on initial request is not supported",
        ));
    }
    if first
        .output_mask
        .as_ref()
        .is_some_and(|m| !m.revision_number)
    {
        return Err(Status::invalid_argument("revision number cannot be masked"));
    }
    let mask: Option<types::EntryMask> = first.output_mask;
    if entries.len() <= PAGE_SIZE {
        let resp = pb::SyncAuthorizedEntriesResponse {
            entries: entries
                .iter()
                .map(|e| convert::entry_to_proto(e, mask.as_ref()))
                .collect(),
            ..Default::default()
        };
        return send(tx, resp).await;
    }
    let pages: Vec<&[Arc<Entry>]> = entries.chunks(PAGE_SIZE).collect();
    let last = pages.len().saturating_sub(1);
    for (i, page) in pages.into_iter().enumerate() {
        let resp = pb::SyncAuthorizedEntriesResponse {
            entry_revisions: page
                .iter()
                .map(|e| pb::EntryRevision {
                    id: e.id.clone(),
                    revision_number: e.revision_number,
                    created_at: e.created_at,
                })
                .collect(),
            entries: Vec::new(),
            more: i != last,
        };
        send(tx, resp).await?;
    }
    let by_id: HashMap<&str, &Arc<Entry>> = entries.iter().map(|e| (e.id.as_str(), e)).collect();
    while let Some(req) = inbound.message().await? {
        let mut found: Vec<&Arc<Entry>> = req
            .ids
            .iter()
            .filter_map(|id| by_id.get(id.as_str()).copied())
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found.dedup_by(|a, b| a.id == b.id);
        let chunks: Vec<&[&Arc<Entry>]> = if found.is_empty() {
            vec![&[]]
        } else {
            found.chunks(PAGE_SIZE).collect()
        };
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let resp = pb::SyncAuthorizedEntriesResponse {
                entry_revisions: Vec::new(),
                entries: chunk
                    .iter()
                    .map(|e| convert::entry_to_proto(e, mask.as_ref()))
                    .collect(),
                more: i != last,
            };
            send(tx, resp).await?;
        }
    }
    Ok(())
}
