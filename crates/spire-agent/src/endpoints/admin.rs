//! The admin socket (`admin_socket_path`, mode 0770, never the public socket): SPIRE's Delegated
//! Identity API ([`super::delegated`]), Debug API ([`super::agent_debug`]) and Logger API
//! ([`super::agent_logger`]), plus the spire-rs `spire_rs.agent.v1.Explain` service
//! (`spire-agent debug explain`), which reveals selectors and entries.

use std::sync::Arc;

use spire_spiffe::SpiffeId;
use spire_tls::SharedIdentity;

use crate::identity::AgentStatus;

use spire_proto::spire_rs::agent as pb;
use spire_proto::spire_rs::agent::explain_server::{Explain, ExplainServer};
use tonic::{Request, Response, Status};

use super::explain::{DEFAULT_NEAREST, ExplainedEntry, explain};
use super::workload::WorkloadState;

/// Largest number of near misses one request may ask for.
const MAX_NEAREST: usize = 100;

/// What the admin socket's SPIRE services need from the rest of the agent.
#[derive(Debug, Clone)]
pub struct AdminParts {
    /// `authorized_delegates`: SPIFFE IDs allowed to call the Delegated Identity API.
    pub authorized_delegates: Vec<SpiffeId>,
    /// The agent's own SVID (Debug.GetInfo's chain); `None` reports an empty chain.
    pub agent_identity: Option<SharedIdentity>,
    /// Start time and last successful sync (Debug.GetInfo).
    pub status: Arc<AgentStatus>,
}

impl AdminParts {
    /// Parts with no delegates, no agent identity and a status that starts now.
    pub fn new(now: std::time::SystemTime) -> Self {
        Self {
            authorized_delegates: Vec::new(),
            agent_identity: None,
            status: AgentStatus::new(now),
        }
    }
}

/// The admin service.
#[derive(Clone)]
pub struct AdminService {
    state: Arc<WorkloadState>,
}

impl AdminService {
    /// A service over the Workload API's state.
    pub fn new(state: Arc<WorkloadState>) -> Self {
        Self { state }
    }

    /// Wraps it for tonic.
    pub fn into_server(self) -> ExplainServer<Self> {
        ExplainServer::new(self)
    }
}

fn to_pb(e: ExplainedEntry) -> pb::ExplainedEntry {
    pb::ExplainedEntry {
        entry_id: e.entry_id,
        spiffe_id: e.spiffe_id,
        missing_selectors: e.missing.iter().map(ToString::to_string).collect(),
        svid_signed: e.svid_signed,
    }
}

#[tonic::async_trait]
impl Explain for AdminService {
    async fn explain(
        &self,
        request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let req = request.into_inner();
        if req.pid <= 0 {
            return Err(Status::invalid_argument(format!(
                "pid {} is not a process id: expected a positive number",
                req.pid
            )));
        }
        let max = match usize::try_from(req.max_nearest) {
            Ok(0) | Err(_) => DEFAULT_NEAREST,
            Ok(n) => n.min(MAX_NEAREST),
        };
        let selectors =
            self.state.attestors.attest(req.pid).await.map_err(|e| {
                Status::unavailable(format!("cannot attest process {}: {e}", req.pid))
            })?;
        let snap = self.state.snapshots.borrow().clone();
        let ex = explain(&snap, req.pid, &selectors, max);
        Ok(Response::new(pb::ExplainResponse {
            pid: ex.pid,
            selectors: ex.selectors.iter().map(ToString::to_string).collect(),
            matched: ex.matched.into_iter().map(to_pb).collect(),
            nearest: ex.nearest.into_iter().map(to_pb).collect(),
            snapshot_revision: ex.revision,
        }))
    }
}
