//! `spire_rs.agent.v1.Watch`: the push stream that tells a connected spire-rs agent to sync
//! now (design-notes §4). Not part of SPIRE.
//!
//! Semantics: the caller must be an active agent (`Policy::Agent`). The first response is
//! sent at once with the index's current revision (the change-log position) and
//! `CHANGE_NONE` when it equals the request's `known_revision`, `CHANGE_UNSPECIFIED`
//! otherwise. After that, one response per batch of change-log rows that touches something
//! the agent can see: `CHANGE_ENTRIES` (its authorized entries, including alias matches after
//! its selectors changed), `CHANGE_BUNDLE`, `CHANGE_FEDERATED_BUNDLE` (sent to every agent),
//! `CHANGE_AGENT` (its own record), or `CHANGE_RESYNC` when the server lost track (the
//! subscriber fell behind, or the index was reloaded). When the agent is banned or evicted
//! the stream ends with PermissionDenied (`AGENT_BANNED` / `AGENT_NOT_ATTESTED`).
//! The responses carry no data: the agent runs its normal sync.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use spire_proto::spire_rs::agent as wpb;
use spire_proto::types::permission_denied_details::Reason;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::api::{Ctx, Policy};
use crate::authorized_entries::{AuthorizedEntries, change};
use crate::authz::permission_denied;
use crate::endpoints::tcp::tcp_context;
use crate::server::ServerState;

/// The Watch service.
#[derive(Debug, Clone)]
pub struct WatchService {
    state: Arc<ServerState>,
}

impl WatchService {
    /// A service over `state`.
    pub fn new(state: Arc<ServerState>) -> Self {
        WatchService { state }
    }
}

/// The response stream of Watch.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<wpb::WatchResponse, Status>> + Send>>;

fn changes(mask: u32) -> Vec<i32> {
    let mut out = Vec::new();
    if mask & change::RESYNC != 0 {
        return vec![wpb::Change::Resync as i32];
    }
    for (bit, c) in [
        (change::ENTRIES, wpb::Change::Entries),
        (change::BUNDLE, wpb::Change::Bundle),
        (change::FEDERATED_BUNDLE, wpb::Change::FederatedBundle),
        (change::AGENT, wpb::Change::Agent),
    ] {
        if mask & bit != 0 {
            out.push(c as i32);
        }
    }
    out
}

fn response(state: &ServerState, revision: i64, changes: Vec<i32>) -> wpb::WatchResponse {
    wpb::WatchResponse {
        revision: u64::try_from(revision).unwrap_or(0),
        changes,
        sent_at: state.clock.now_unix(),
    }
}

/// Whether the agent may keep watching: it exists and is not banned.
fn agent_gone(index: &AuthorizedEntries, agent: &str) -> Option<Status> {
    match index.read().agent(agent) {
        None => Some(permission_denied(
            Reason::AgentNotAttested,
            format!("agent {agent:?} is not attested"),
        )),
        Some(n) if n.is_banned() => Some(permission_denied(
            Reason::AgentBanned,
            format!("agent {agent:?} is banned"),
        )),
        Some(_) => None,
    }
}

#[tonic::async_trait]
impl wpb::watch_server::Watch for WatchService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<wpb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let ctx = Ctx::new(&self.state, &request, "Watch", Policy::Agent)?;
        let tcp = tcp_context(&request)?;
        let agent = ctx
            .caller
            .spiffe_id()
            .map(|i| i.as_str().to_string())
            .ok_or_else(|| Status::internal("caller ID missing from request context"))?;
        let req = request.into_inner();
        // Subscribe before reading the revision so that nothing falls in between.
        let mut notes = tcp.index.subscribe();
        let revision = tcp.index.revision();
        let first = if u64::try_from(revision).ok() == Some(req.known_revision) {
            vec![wpb::Change::None as i32]
        } else {
            vec![wpb::Change::Unspecified as i32]
        };
        tracing::debug!(agent_id = %agent, agent_version = %req.agent_version, revision, "Agent watching for changes");
        ctx.audit.emit_ok(&[]);
        let (tx, rx) = mpsc::channel(16);
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            if tx
                .send(Ok(response(&state, revision, first)))
                .await
                .is_err()
            {
                return;
            }
            loop {
                let n = tokio::select! {
                    _ = tx.closed() => return,
                    _ = state.shutdown.cancelled() => return,
                    n = notes.recv() => n,
                };
                let (rev, mask) = match n {
                    Ok(n) => (n.revision, n.mask_for(&agent)),
                    Err(RecvError::Lagged(_)) => (tcp.index.revision(), change::RESYNC),
                    Err(RecvError::Closed) => return,
                };
                if mask == 0 {
                    continue;
                }
                if mask & (change::AGENT | change::RESYNC) != 0
                    && let Some(status) = agent_gone(&tcp.index, &agent)
                {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                if tx
                    .send(Ok(response(&state, rev, changes(mask))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
