//! One simulated agent speaking the agent↔server protocol the way spire-agent does: join-token
//! attestation, `SyncAuthorizedEntries` with SPIRE's revision diff, `GetBundle`,
//! `BatchNewX509SVID` for every authorized workload entry, `NewJWTSVID`, and the spire-rs `Watch`
//! push stream, with a timer-driven sync as fallback.
//!
//! The simulation keeps only what the measurements need: per entry its revision, SPIFFE ID and
//! the CSR last sent (workload keys are generated and dropped; the certificates are counted,
//! not kept).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prost::Message as _;
use spire_crypto::{KeyType, PrivateKey};
use spire_proto::server::{agent as agentpb, bundle as bundlepb, entry as entrypb, svid as svidpb};
use spire_proto::spire_rs::agent as watchpb;
use spire_proto::types;
use spire_spiffe::{SpiffeId, SystemClock, TrustDomain};
use spire_tls::{BundleSet, ClientOptions, Identity, PeerMatcher, ServerAuth, SharedIdentity};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::Error;
use crate::admin::spiffe_id_string;
use crate::stats::Metrics;

/// Longest time one call may take.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Recent Watch notification times kept per agent (to match churn entries with the push that
/// announced them).
const NOTIFY_RING: usize = 32;

/// Where the run is; agents move with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Agents attest, sync and get their first SVIDs.
    Ramp,
    /// Agents re-request SVIDs for all their entries (`-issueRounds`).
    Issue,
    /// Agents idle on Watch and timer syncs while churn runs.
    Steady,
}

/// What an agent tells the driver.
#[derive(Debug)]
pub enum Event {
    /// Attested, synced and signed its first SVIDs.
    Ready,
    /// Could not attest (the agent is gone).
    Failed(String),
    /// Finished its re-issuance rounds.
    IssueDone,
}

/// Settings and state shared by all simulated agents.
#[derive(Debug)]
pub struct Shared {
    /// Server address (host:port).
    pub address: String,
    /// The server's trust domain.
    pub trust_domain: TrustDomain,
    /// The server's X.509 authorities.
    pub bundles: BundleSet,
    /// Timer-driven sync interval.
    pub sync_interval: Duration,
    /// Whether to hold a Watch stream.
    pub watch: bool,
    /// NewJWTSVID calls after the first sync.
    pub jwt_per_agent: usize,
    /// CSRs per BatchNewX509SVID.
    pub batch_size: usize,
    /// Re-issuance rounds in the Issue phase.
    pub issue_rounds: usize,
    /// SPIFFE ID prefix of churn entries.
    pub churn_prefix: String,
    /// Churn entries waiting for their SVID: SPIFFE ID → when their creation was requested.
    pub pending: Mutex<HashMap<String, Instant>>,
    /// What everyone counts.
    pub metrics: Arc<Metrics>,
    /// Limits concurrent attestations.
    pub attest_slots: tokio::sync::Semaphore,
    /// Ends the run.
    pub shutdown: CancellationToken,
}

/// The join token and agent ID of one simulated agent.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// The join token.
    pub token: String,
    /// The agent ID the token attests to.
    pub agent_id: SpiffeId,
}

#[derive(Debug)]
struct Known {
    revision: i64,
    created_at: i64,
    spiffe_id: String,
    alias: bool,
    signed_revision: Option<i64>,
    csr: Option<Vec<u8>>,
}

async fn timed<T>(
    op: &'static str,
    fut: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(RPC_TIMEOUT, fut)
        .await
        .map_err(|_| Error::Timeout(op))?
}

fn rpc(op: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    move |status| Error::Rpc { op, status }
}

fn protocol(op: &'static str, reason: impl Into<String>) -> Error {
    Error::Protocol {
        op,
        reason: reason.into(),
    }
}

fn tls_config(
    shared: &Shared,
    identity: SharedIdentity,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    Ok(spire_tls::client_config(
        ServerAuth::Verify {
            bundles: shared.bundles.clone(),
            expected: PeerMatcher::SpireServer(shared.trust_domain.clone()),
        },
        ClientOptions {
            identity,
            clock: Arc::new(SystemClock),
        },
    )?)
}

/// Runs one simulated agent until `shared.shutdown`: attest, first sync and signing, then
/// re-issuance rounds when the Issue phase starts, and Watch/timer syncs until the end.
pub async fn run(
    shared: Arc<Shared>,
    spec: AgentSpec,
    index: usize,
    mut phase: watch::Receiver<Phase>,
    events: mpsc::UnboundedSender<(usize, Event)>,
) {
    let mut agent = match Agent::attest(&shared, &spec).await {
        Ok(a) => a,
        Err(e) => {
            shared.metrics.attest_failed.inc();
            let _ = events.send((index, Event::Failed(e.to_string())));
            return;
        }
    };
    agent.open_watch();
    if let Err(e) = agent.sync_and_sign(true).await {
        tracing::debug!(agent = %spec.agent_id, error = %e, "First sync failed");
    }
    let mut jwts_due = true;
    if agent.has_workloads() {
        agent.mint_jwts().await;
        jwts_due = false;
    } else {
        // The server answered the sync right after attestation without this agent's entries.
        shared.metrics.first_sync_empty.inc();
    }
    shared.metrics.agents_ready.inc();
    let _ = events.send((index, Event::Ready));

    let mut issued_rounds = false;
    let mut next_sync = Instant::now() + shared.sync_interval;
    loop {
        if jwts_due && agent.has_workloads() {
            agent.mint_jwts().await;
            jwts_due = false;
        }
        if !issued_rounds && *phase.borrow() >= Phase::Issue {
            issued_rounds = true;
            for _ in 0..shared.issue_rounds {
                agent.reissue_all().await;
            }
            let _ = events.send((index, Event::IssueDone));
        }
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            () = agent.notify.notified() => {
                if let Err(e) = agent.sync_and_sign(false).await {
                    tracing::debug!(agent = %spec.agent_id, error = %e, "Pushed sync failed");
                }
            }
            () = tokio::time::sleep_until(next_sync) => {
                if let Err(e) = agent.sync_and_sign(true).await {
                    tracing::debug!(agent = %spec.agent_id, error = %e, "Timer sync failed");
                }
                next_sync = Instant::now() + shared.sync_interval;
            }
            r = phase.changed(), if !issued_rounds => {
                if r.is_err() {
                    // The driver is gone; nothing more will happen.
                    issued_rounds = true;
                }
            }
        }
    }
    if let Some(w) = agent.watch_task.take() {
        w.abort();
    }
}

struct Agent {
    shared: Arc<Shared>,
    agent_id: SpiffeId,
    channel: Channel,
    known: HashMap<String, Known>,
    notify: Arc<Notify>,
    notifications: Arc<Mutex<VecDeque<Instant>>>,
    watch_task: Option<tokio::task::JoinHandle<()>>,
}

impl Agent {
    /// Attests with the join token (on a connection without a client certificate), then opens
    /// the authenticated connection.
    async fn attest(shared: &Arc<Shared>, spec: &AgentSpec) -> Result<Self, Error> {
        const OP: &str = "AttestAgent";
        let _slot = shared
            .attest_slots
            .acquire()
            .await
            .map_err(|_| protocol(OP, "shutting down"))?;
        let started = Instant::now();
        let key =
            PrivateKey::generate(KeyType::EcP256).map_err(|e| Error::Crypto(e.to_string()))?;
        let csr = spire_crypto::create_csr(&key, None).map_err(|e| Error::Crypto(e.to_string()))?;
        let bootstrap = tls_config(shared, SharedIdentity::empty())?;
        let channel = timed(OP, async {
            Ok(spire_tls::connect(&shared.address, bootstrap).await?)
        })
        .await?;
        let (tx, rx) = mpsc::channel::<agentpb::AttestAgentRequest>(2);
        tx.send(agentpb::AttestAgentRequest {
            step: Some(agentpb::attest_agent_request::Step::Params(
                agentpb::attest_agent_request::Params {
                    data: Some(types::AttestationData {
                        r#type: "join_token".to_owned(),
                        payload: spec.token.as_bytes().to_vec(),
                    }),
                    params: Some(agentpb::AgentX509svidParams { csr }),
                },
            )),
        })
        .await
        .map_err(|_| protocol(OP, "request stream closed"))?;
        let mut client = agentpb::agent_client::AgentClient::new(channel);
        let chain = timed(OP, async {
            let mut stream = client
                .attest_agent(ReceiverStream::new(rx))
                .await
                .map_err(rpc(OP))?
                .into_inner();
            let msg = stream
                .message()
                .await
                .map_err(rpc(OP))?
                .ok_or_else(|| protocol(OP, "stream ended without a result"))?;
            match msg.step {
                Some(agentpb::attest_agent_response::Step::Result(r)) => r
                    .svid
                    .map(|s| s.cert_chain)
                    .ok_or_else(|| protocol(OP, "result without svid")),
                _ => Err(protocol(OP, "join_token attestation sent a challenge")),
            }
        })
        .await?;
        drop(tx);
        let issued_id = spire_crypto::spiffe_id_from_cert(chain.first().map_or(&[][..], |c| c))
            .map_err(|e| protocol(OP, format!("agent SVID: {e}")))?;
        if issued_id != spec.agent_id {
            return Err(protocol(
                OP,
                format!("agent SVID names {issued_id}, expected {}", spec.agent_id),
            ));
        }
        let pkcs8 = key
            .to_pkcs8_der()
            .map_err(|e| Error::Crypto(e.to_string()))?;
        let identity = Identity::from_der(chain, pkcs8.to_vec())?;
        let cfg = tls_config(shared, SharedIdentity::new(identity))?;
        let channel = timed(OP, async {
            Ok(spire_tls::connect(&shared.address, cfg).await?)
        })
        .await?;
        shared.metrics.attest_latency.record(started.elapsed());
        shared.metrics.attested.inc();
        Ok(Agent {
            shared: Arc::clone(shared),
            agent_id: spec.agent_id.clone(),
            channel,
            known: HashMap::new(),
            notify: Arc::new(Notify::new()),
            notifications: Arc::new(Mutex::new(VecDeque::with_capacity(NOTIFY_RING))),
            watch_task: None,
        })
    }

    fn has_workloads(&self) -> bool {
        self.known.values().any(|k| !k.alias)
    }

    /// Opens the Watch stream in a background task that records each push and wakes the agent.
    fn open_watch(&mut self) {
        if !self.shared.watch {
            return;
        }
        let channel = self.channel.clone();
        let notify = Arc::clone(&self.notify);
        let ring = Arc::clone(&self.notifications);
        let metrics = Arc::clone(&self.shared.metrics);
        let shutdown = self.shared.shutdown.clone();
        self.watch_task = Some(tokio::spawn(async move {
            let mut c = watchpb::watch_client::WatchClient::new(channel);
            let stream = c
                .watch(watchpb::WatchRequest {
                    known_revision: 0,
                    agent_version: concat!("spire-loadgen/", env!("CARGO_PKG_VERSION")).to_owned(),
                })
                .await;
            let mut stream = match stream {
                Ok(s) => s.into_inner(),
                Err(_) => {
                    metrics.watch_errors.inc();
                    return;
                }
            };
            metrics.watch_opened.inc();
            let mut first = true;
            loop {
                let msg = tokio::select! {
                    () = shutdown.cancelled() => return,
                    m = stream.message() => m,
                };
                match msg {
                    Ok(Some(_)) => {
                        // The first response only states the current revision; the agent's
                        // first sync covers it.
                        if first {
                            first = false;
                            continue;
                        }
                        metrics.watch_notifications.inc();
                        {
                            let mut r = ring.lock().unwrap_or_else(PoisonError::into_inner);
                            if r.len() == NOTIFY_RING {
                                r.pop_front();
                            }
                            r.push_back(Instant::now());
                        }
                        notify.notify_one();
                    }
                    Ok(None) | Err(_) => {
                        if !shutdown.is_cancelled() {
                            metrics.watch_errors.inc();
                        }
                        return;
                    }
                }
            }
        }));
    }

    /// One sync (plus GetBundle when `full`), then SVIDs for new or changed entries.
    async fn sync_and_sign(&mut self, full: bool) -> Result<(), Error> {
        let started = Instant::now();
        let r = timed("SyncAuthorizedEntries", self.sync_entries()).await;
        match r {
            Ok(()) => {
                self.shared.metrics.syncs.inc();
                self.shared.metrics.sync_latency.record(started.elapsed());
            }
            Err(e) => {
                self.shared.metrics.sync_failed.inc();
                return Err(e);
            }
        }
        if full {
            self.get_bundle().await?;
        }
        self.sign_new().await
    }

    async fn get_bundle(&self) -> Result<(), Error> {
        const OP: &str = "GetBundle";
        let mut c = bundlepb::bundle_client::BundleClient::new(self.channel.clone());
        let b = timed(OP, async {
            c.get_bundle(bundlepb::GetBundleRequest::default())
                .await
                .map_err(rpc(OP))
        })
        .await?
        .into_inner();
        self.shared.metrics.bundle_calls.inc();
        self.shared.metrics.bundle_bytes.add(b.encoded_len() as u64);
        Ok(())
    }

    /// `SyncAuthorizedEntries` with SPIRE's diff: the full list when it fits a page, otherwise
    /// revisions first and then only the entries that are new or changed.
    async fn sync_entries(&mut self) -> Result<(), Error> {
        const OP: &str = "SyncAuthorizedEntries";
        let metrics = Arc::clone(&self.shared.metrics);
        let (tx, rx) = mpsc::channel::<entrypb::SyncAuthorizedEntriesRequest>(2);
        tx.send(entrypb::SyncAuthorizedEntriesRequest::default())
            .await
            .map_err(|_| protocol(OP, "request stream closed"))?;
        let mut c = entrypb::entry_client::EntryClient::new(self.channel.clone());
        let mut stream = c
            .sync_authorized_entries(ReceiverStream::new(rx))
            .await
            .map_err(rpc(OP))?
            .into_inner();
        let mut next = async || -> Result<entrypb::SyncAuthorizedEntriesResponse, Error> {
            let page = stream
                .message()
                .await
                .map_err(rpc(OP))?
                .ok_or_else(|| protocol(OP, "stream ended early"))?;
            metrics.sync_bytes.add(page.encoded_len() as u64);
            Ok(page)
        };
        let first = next().await?;
        let mut seen: HashSet<String> = HashSet::new();
        if first.entry_revisions.is_empty() {
            for e in &first.entries {
                seen.insert(e.id.clone());
                self.learn(e);
            }
            metrics.sync_entries_fetched.add(first.entries.len() as u64);
        } else {
            let page_size = first.entry_revisions.len().max(1);
            let mut need: Vec<String> = Vec::new();
            let mut more = first.more;
            let mut revs = first.entry_revisions;
            loop {
                for r in &revs {
                    seen.insert(r.id.clone());
                    let stale = self.known.get(&r.id).is_none_or(|k| {
                        k.revision != r.revision_number
                            || (r.created_at != 0 && k.created_at != r.created_at)
                    });
                    if stale {
                        need.push(r.id.clone());
                    }
                }
                if !more {
                    break;
                }
                let page = next().await?;
                more = page.more;
                revs = page.entry_revisions;
            }
            for chunk in need.chunks(page_size) {
                tx.send(entrypb::SyncAuthorizedEntriesRequest {
                    output_mask: None,
                    ids: chunk.to_vec(),
                })
                .await
                .map_err(|_| protocol(OP, "request stream closed"))?;
                loop {
                    let page = next().await?;
                    metrics.sync_entries_fetched.add(page.entries.len() as u64);
                    for e in &page.entries {
                        self.learn(e);
                    }
                    if !page.more {
                        break;
                    }
                }
            }
        }
        drop(tx);
        self.known.retain(|id, _| seen.contains(id));
        Ok(())
    }

    fn learn(&mut self, e: &types::Entry) {
        let parent = spiffe_id_string(e.parent_id.as_ref());
        // The alias entry a join token with -spiffeID creates: parented to this agent, only a
        // `spiffe_id` selector. It names the node; no workload gets its SVID.
        let alias = parent == self.agent_id.as_str()
            && !e.selectors.is_empty()
            && e.selectors.iter().all(|s| s.r#type == "spiffe_id");
        let spiffe_id = spiffe_id_string(e.spiffe_id.as_ref());
        match self.known.get_mut(&e.id) {
            Some(k) => {
                k.revision = e.revision_number;
                k.created_at = e.created_at;
                k.spiffe_id = spiffe_id;
                k.alias = alias;
            }
            None => {
                self.known.insert(
                    e.id.clone(),
                    Known {
                        revision: e.revision_number,
                        created_at: e.created_at,
                        spiffe_id,
                        alias,
                        signed_revision: None,
                        csr: None,
                    },
                );
            }
        }
    }

    /// Fresh keys and CSRs for every workload entry without an SVID for its current revision,
    /// sent in batches; churn entries resolve their propagation samples here.
    async fn sign_new(&mut self) -> Result<(), Error> {
        let mut todo: Vec<(String, Vec<u8>)> = Vec::new();
        for (id, k) in &mut self.known {
            if k.alias || k.signed_revision == Some(k.revision) {
                continue;
            }
            let key =
                PrivateKey::generate(KeyType::EcP256).map_err(|e| Error::Crypto(e.to_string()))?;
            let csr =
                spire_crypto::create_csr(&key, None).map_err(|e| Error::Crypto(e.to_string()))?;
            k.csr = Some(csr.clone());
            todo.push((id.clone(), csr));
        }
        if todo.is_empty() {
            return Ok(());
        }
        let results = self.batch_sign(todo).await?;
        let now = Instant::now();
        let m = &self.shared.metrics;
        for (id, ok) in results {
            let Some(k) = self.known.get_mut(&id) else {
                continue;
            };
            if !ok {
                continue;
            }
            k.signed_revision = Some(k.revision);
            if k.spiffe_id.starts_with(&self.shared.churn_prefix) {
                m.x509_churn.inc();
                let t0 = self
                    .shared
                    .pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&k.spiffe_id);
                if let Some(t0) = t0 {
                    m.prop_svid.record(now.saturating_duration_since(t0));
                    match notification_after(&self.notifications, t0) {
                        Some(t) => m.prop_watch.record(t.saturating_duration_since(t0)),
                        None => m.prop_by_poll.inc(),
                    }
                }
            } else {
                m.x509_initial.inc();
            }
        }
        Ok(())
    }

    /// BatchNewX509SVID in chunks; per entry whether an SVID came back.
    async fn batch_sign(
        &self,
        params: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<(String, bool)>, Error> {
        const OP: &str = "BatchNewX509SVID";
        let m = &self.shared.metrics;
        let mut out = Vec::with_capacity(params.len());
        for chunk in params.chunks(self.shared.batch_size.max(1)) {
            let mut c = svidpb::svid_client::SvidClient::new(self.channel.clone());
            let req = svidpb::BatchNewX509svidRequest {
                params: chunk
                    .iter()
                    .map(|(id, csr)| svidpb::NewX509svidParams {
                        entry_id: id.clone(),
                        csr: csr.clone(),
                    })
                    .collect(),
            };
            m.x509_requested.add(chunk.len() as u64);
            m.x509_batches.inc();
            let started = Instant::now();
            let r = timed(OP, async {
                c.batch_new_x509svid(req).await.map_err(rpc(OP))
            })
            .await;
            let r = match r {
                Ok(r) => r.into_inner(),
                Err(e) => {
                    m.x509_failed.add(chunk.len() as u64);
                    return Err(e);
                }
            };
            m.x509_batch_latency.record(started.elapsed());
            if r.results.len() != chunk.len() {
                m.x509_failed.add(chunk.len() as u64);
                return Err(protocol(
                    OP,
                    format!("{} results for {} requests", r.results.len(), chunk.len()),
                ));
            }
            for ((id, _), res) in chunk.iter().zip(r.results) {
                let ok = res.status.as_ref().is_none_or(|s| s.code == 0)
                    && res.svid.is_some_and(|s| !s.cert_chain.is_empty());
                if ok {
                    m.x509_issued.inc();
                } else {
                    m.x509_failed.inc();
                    tracing::debug!(entry_id = %id, "X509-SVID refused");
                }
                out.push((id.clone(), ok));
            }
        }
        Ok(out)
    }

    /// Re-requests SVIDs for every signed entry with the CSR sent last time.
    async fn reissue_all(&mut self) {
        let params: Vec<(String, Vec<u8>)> = self
            .known
            .iter()
            .filter(|(_, k)| !k.alias)
            .filter_map(|(id, k)| k.csr.clone().map(|c| (id.clone(), c)))
            .collect();
        match self.batch_sign(params).await {
            Ok(results) => {
                let n = results.iter().filter(|(_, ok)| *ok).count();
                self.shared.metrics.x509_reissued.add(n as u64);
            }
            Err(e) => tracing::debug!(agent = %self.agent_id, error = %e, "Re-issuance failed"),
        }
    }

    /// `NewJWTSVID` for the first `jwt_per_agent` workload entries (cycling).
    async fn mint_jwts(&self) {
        const OP: &str = "NewJWTSVID";
        let mut ids: Vec<&String> = self
            .known
            .iter()
            .filter(|(_, k)| !k.alias)
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        if ids.is_empty() {
            return;
        }
        let m = &self.shared.metrics;
        for i in 0..self.shared.jwt_per_agent {
            let id = ids[i % ids.len()];
            let mut c = svidpb::svid_client::SvidClient::new(self.channel.clone());
            m.jwt_requested.inc();
            let started = Instant::now();
            let r = timed(OP, async {
                c.new_jwtsvid(svidpb::NewJwtsvidRequest {
                    entry_id: id.clone(),
                    audience: vec!["spire-loadgen".to_owned()],
                })
                .await
                .map_err(rpc(OP))
            })
            .await;
            match r {
                Ok(r)
                    if r.get_ref()
                        .svid
                        .as_ref()
                        .is_some_and(|s| !s.token.is_empty()) =>
                {
                    m.jwt_issued.inc();
                    m.jwt_latency.record(started.elapsed());
                }
                Ok(_) => m.jwt_failed.inc(),
                Err(e) => {
                    m.jwt_failed.inc();
                    tracing::debug!(entry_id = %id, error = %e, "JWT-SVID refused");
                }
            }
        }
    }
}

/// The first push received at or after `t0`.
fn notification_after(ring: &Mutex<VecDeque<Instant>>, t0: Instant) -> Option<Instant> {
    ring.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|&&t| t >= t0)
        .copied()
}
