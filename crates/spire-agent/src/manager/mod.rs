//! The agent's manager: keeps the agent's own SVID fresh (RenewAgent, or re-attestation for
//! re-attestable agents), syncs authorized entries and bundles from the server (on a timer and
//! at once when the spire-rs `Watch` stream says something changed), gets X509-SVIDs signed for
//! the entries with keys generated here, rotates them at half-life, and publishes the result as
//! an immutable [`IdentitySnapshot`] through a `tokio::sync::watch` channel.
//!
//! All expiry and rotation decisions use the injected [`Clock`]; sleeping uses `tokio::time`.
//! The loop state is owned by one task, so no lock is held across an await.

pub mod jwt;
pub mod keys;
pub mod rotation;

#[cfg(test)]
mod loop_tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use spire_crypto::PrivateKey;
use spire_spiffe::{Bundle, Clock, Selectors, TrustDomain};
use spire_tls::{BundleSet, SharedIdentity};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::attestor::node::NodeAttestor;
use crate::client::{self, ClientError, IssuedSvid, ServerApi};
use crate::identity::{
    BundleView, EntryId, EntryView, Identity, IdentitySnapshot, SharedSpiffeId, SubscriberRegistry,
    WorkloadX509Svid,
};
use crate::storage::{self, AgentData};
use keys::AgentKeyStore;

/// Sync scope bit: authorized entries.
const SCOPE_ENTRIES: u8 = 1;
/// Sync scope bit: the local and federated bundles.
const SCOPE_BUNDLES: u8 = 2;
/// Everything.
const SCOPE_ALL: u8 = SCOPE_ENTRIES | SCOPE_BUNDLES;

/// The longest the sync loop backs off after errors (SPIRE: 8 minutes).
pub const MAX_SYNC_BACKOFF: Duration = Duration::from_secs(480);

/// Why the manager stopped or could not do something.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// A call to the server failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server refused the agent (banned, evicted) and it cannot re-attest.
    #[error("the server rejected this agent (banned or evicted) and it cannot re-attest: {0}")]
    Rejected(String),
    /// The agent key could not be generated or stored.
    #[error(transparent)]
    Keys(#[from] keys::KeyStoreError),
    /// The agent state could not be stored.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// A key, CSR or certificate could not be made or used.
    #[error("{0}")]
    Crypto(String),
    /// Some X509-SVIDs could not be minted (per-entry failures).
    #[error("{0}")]
    Mint(String),
    /// No node attestor is configured (needed to attest).
    #[error("cannot attest: {0}")]
    NoAttestor(String),
}

/// Settings of the manager.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// The agent's trust domain.
    pub trust_domain: TrustDomain,
    /// `server_address:server_port`.
    pub server_address: String,
    /// Where `agent-data.json` lives.
    pub data_dir: PathBuf,
    /// `experimental.sync_interval` (default 5 s).
    pub sync_interval: Duration,
    /// `x509_svid_cache_max_size` (0 = no limit).
    pub x509_svid_cache_max_size: usize,
    /// `workload_x509_svid_key_type`.
    pub workload_key_type: spire_crypto::KeyType,
    /// `availability_target`.
    pub availability_target: Option<Duration>,
}

/// The agent's own SVID and key.
#[derive(Clone)]
pub struct AgentSvid {
    /// The SVID.
    pub svid: IssuedSvid,
    /// Its private key.
    pub key: Arc<PrivateKey>,
    /// Whether rotation re-attests.
    pub reattestable: bool,
    /// When to rotate.
    pub deadline: SystemTime,
}

impl std::fmt::Debug for AgentSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSvid")
            .field("svid", &self.svid)
            .field("reattestable", &self.reattestable)
            .finish_non_exhaustive()
    }
}

impl AgentSvid {
    /// Wraps a fresh SVID, choosing its rotation time.
    pub fn new(
        svid: IssuedSvid,
        key: Arc<PrivateKey>,
        reattestable: bool,
        availability_target: Option<Duration>,
    ) -> Self {
        let deadline = rotation::rotation_deadline(
            svid.not_before,
            svid.not_after,
            rotation::random_jitter(),
            availability_target,
        );
        AgentSvid {
            svid,
            key,
            reattestable,
            deadline,
        }
    }

    /// The TLS identity for this SVID.
    pub fn tls_identity(&self) -> Result<spire_tls::Identity, ManagerError> {
        let pkcs8 = self
            .key
            .to_pkcs8_der()
            .map_err(|e| ManagerError::Crypto(e.to_string()))?;
        spire_tls::Identity::from_der(self.svid.cert_chain.iter().cloned(), pkcs8.to_vec())
            .map_err(|e| ManagerError::Crypto(format!("agent SVID unusable for TLS: {e}")))
    }
}

/// Attests the agent with a fresh key over a new connection that presents no client
/// certificate. `bundles` = `None` means insecure bootstrap. Returns the SVID and its (not yet
/// committed) key.
pub async fn attest_agent(
    cfg: &ManagerConfig,
    bundles: Option<&BundleSet>,
    attestor: &dyn NodeAttestor,
    keys: &AgentKeyStore,
    clock: Arc<dyn Clock>,
) -> Result<
    (
        client::Attestation,
        Arc<PrivateKey>,
        tonic::transport::Channel,
    ),
    ManagerError,
> {
    let key = keys.generate()?;
    let csr = spire_crypto::create_csr(key.as_ref(), None)
        .map_err(|e| ManagerError::Crypto(format!("agent CSR: {e}")))?;
    let tls = client::tls_config(&cfg.trust_domain, bundles, SharedIdentity::empty(), clock)?;
    let channel = client::connect_lazy(&cfg.server_address, tls)?;
    tracing::info!(
        attestor = attestor.attestation_type(),
        "Attesting the node to the server"
    );
    let attestation = client::attest(channel.clone(), attestor, csr).await?;
    if attestation.svid.public_key_spki() != Some(key.public_key().spki_der()) {
        return Err(ManagerError::Crypto(
            "server returned an agent SVID for another key".into(),
        ));
    }
    tracing::info!(
        spiffe_id = %attestation.svid.spiffe_id,
        reattestable = attestation.reattestable,
        expires_at = spire_spiffe::to_unix_secs(attestation.svid.not_after),
        "Node attestation was successful"
    );
    Ok((attestation, key, channel))
}

/// The jitter of an SVID's rotation point, in `[-1, 1]`: taken from the last bytes of its leaf
/// certificate (the signature, random for every certificate), so it is random per SVID yet
/// need not be stored.
fn svid_jitter(svid: &WorkloadX509Svid) -> f64 {
    let tail = svid
        .cert_chain
        .first()
        .and_then(|leaf| leaf.len().checked_sub(4).map(|at| &leaf[at..]))
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .unwrap_or_default();
    let v = f64::from(u32::from_le_bytes(tail)) / f64::from(u32::MAX);
    v * 2.0 - 1.0
}

/// Makes the newly fetched entries (those not shared with anyone yet) that have the same
/// parent ID as another entry hold that entry's parent ID allocation: most entries of an agent
/// are parented to the agent itself or to a few node aliases.
fn share_parent_ids<'a>(
    fetched: &mut BTreeMap<EntryId, Arc<EntryView>>,
    known: impl Iterator<Item = &'a Arc<EntryView>>,
) {
    let mut parents: BTreeSet<SharedSpiffeId> = BTreeSet::new();
    for e in known {
        if !parents.contains(&e.parent_id) {
            parents.insert(e.parent_id.clone());
        }
    }
    for e in fetched.values_mut() {
        let Some(e) = Arc::get_mut(e) else {
            continue;
        };
        match parents.get(&e.parent_id) {
            Some(p) => e.parent_id = p.clone(),
            None => {
                parents.insert(e.parent_id.clone());
            }
        }
    }
}

/// Most X509-SVIDs whose keys and CSRs are made and sent to the server at once (a fifth of the
/// server's BatchNewX509SVID page size): the keys, CSRs, request and answer of one batch are
/// the transient memory of a signing round, and what the allocator keeps of them afterwards
/// shows in the agent's resident memory (BENCHMARKS.md P5).
const SIGN_BATCH: usize = 100;

/// Whether two bundles carry the same authorities (JWT key expiry is ignored: the stored
/// SPIFFE JSON form does not carry it).
fn same_bundle(a: &Bundle, b: &Bundle) -> bool {
    a.trust_domain == b.trust_domain
        && a.x509_authorities == b.x509_authorities
        && a.sequence_number == b.sequence_number
        && a.jwt_authorities.len() == b.jwt_authorities.len()
        && a.jwt_authorities
            .iter()
            .zip(&b.jwt_authorities)
            .all(|(x, y)| x.key_id == y.key_id && x.public_key == y.public_key)
}

/// Picks the entries that get an X509-SVID ahead of any request: all of them, oldest first,
/// up to `max` (0 = no limit), except entries marked `disable_x509_svid_prefetch`. Entries
/// beyond the limit, and entries with prefetch disabled, are signed only while a workload
/// subscribes to them (see [`signing_set`]).
pub fn prefetch_set<'a>(
    entries: impl IntoIterator<Item = &'a EntryView>,
    max: usize,
) -> BTreeSet<EntryId> {
    let mut v: Vec<&EntryView> = entries
        .into_iter()
        .filter(|e| !e.disable_x509_svid_prefetch)
        .collect();
    v.sort_by(|a, b| (a.created_at, &a.entry_id).cmp(&(b.created_at, &b.entry_id)));
    let limit = if max == 0 { usize::MAX } else { max };
    v.into_iter()
        .take(limit)
        .map(|e| e.entry_id.clone())
        .collect()
}

/// The entries the manager holds X509-SVIDs for: the [`prefetch_set`], plus every entry whose
/// selectors are a subset of an active subscriber's selectors (`subscribers`), as SPIRE's LRU
/// cache keeps SVIDs of subscribed entries beyond `x509_svid_cache_max_size`. Returns the set
/// and how many of its entries are beyond the limit.
pub fn signing_set<'a, I>(
    entries: I,
    max: usize,
    subscribers: &BTreeSet<Selectors>,
) -> (BTreeSet<EntryId>, usize)
where
    I: IntoIterator<Item = &'a EntryView>,
    I::IntoIter: Clone,
{
    let entries = entries.into_iter();
    let mut selected = prefetch_set(entries.clone(), max);
    if subscribers.is_empty() || selected.len() == entries.clone().count() {
        return (selected, 0);
    }
    let mut beyond = 0;
    for e in entries {
        if selected.contains(&e.entry_id) {
            continue;
        }
        if subscribers.iter().any(|s| e.selectors.is_subset_of(s)) {
            selected.insert(e.entry_id.clone());
            beyond += 1;
        }
    }
    (selected, beyond)
}

/// The manager. Build with [`Manager::new`], then [`Manager::run`] it.
pub struct Manager {
    cfg: ManagerConfig,
    clock: Arc<dyn Clock>,
    client: Arc<dyn ServerApi>,
    identity: SharedIdentity,
    tls_bundles: BundleSet,
    keys: Arc<AgentKeyStore>,
    attestor: Option<Arc<dyn NodeAttestor>>,
    tx: watch::Sender<Arc<IdentitySnapshot>>,
    subscribers: Arc<SubscriberRegistry>,
    wake: Arc<Notify>,
    watch_generation: watch::Sender<u64>,
    synced_revision: Arc<AtomicU64>,
    latest_seen: Arc<AtomicU64>,
    pending: Arc<AtomicU8>,
    agent: AgentSvid,
    bundle: Bundle,
    federated: BTreeMap<TrustDomain, Bundle>,
    /// The last snapshot built, shared with the watch channel: its map of the authorized
    /// entries, each with its SVID once signed, is the manager's own state (one map, no second
    /// record per SVID; changed copy-on-write). The SVID goes when its entry goes.
    current: Arc<IdentitySnapshot>,
    /// Entries changed at the server since their SVID was signed (re-signed next).
    stale: BTreeSet<EntryId>,
    revision: u64,
    dirty: bool,
    sign_failures: u32,
    sign_retry_at: Option<tokio::time::Instant>,
    /// Start time and last successful sync, for the admin socket's Debug.GetInfo.
    status: Arc<crate::identity::AgentStatus>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("agent", &self.agent)
            .field("entries", &self.current.identities.len())
            .finish_non_exhaustive()
    }
}

/// What the manager needs to start.
pub struct ManagerParts {
    /// Settings.
    pub cfg: ManagerConfig,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// The mTLS client (presenting `identity`, trusting `tls_bundles`).
    pub client: Arc<dyn ServerApi>,
    /// The slot holding the agent's TLS identity.
    pub identity: SharedIdentity,
    /// The roots the TLS client trusts.
    pub tls_bundles: BundleSet,
    /// The agent key store.
    pub keys: Arc<AgentKeyStore>,
    /// The node attestor, if one is configured (needed to re-attest).
    pub attestor: Option<Arc<dyn NodeAttestor>>,
    /// The agent's current SVID.
    pub agent: AgentSvid,
    /// The current trust bundle.
    pub bundle: Bundle,
    /// The workloads currently subscribed (Workload API, SDS, delegated identity): entries
    /// they match get SVIDs even beyond `x509_svid_cache_max_size`; a new subscriber wakes the
    /// manager.
    pub subscribers: Arc<SubscriberRegistry>,
}

impl Manager {
    /// A manager and the receiver of its snapshots.
    pub fn new(parts: ManagerParts) -> (Self, watch::Receiver<Arc<IdentitySnapshot>>) {
        let current = Arc::new(IdentitySnapshot::empty(parts.cfg.trust_domain.clone()));
        let (tx, rx) = watch::channel(current.clone());
        let (watch_generation, _) = watch::channel(0u64);
        let status = crate::identity::AgentStatus::new(parts.clock.now());
        let m = Manager {
            cfg: parts.cfg,
            clock: parts.clock,
            client: parts.client,
            identity: parts.identity,
            tls_bundles: parts.tls_bundles,
            keys: parts.keys,
            attestor: parts.attestor,
            tx,
            subscribers: parts.subscribers,
            wake: Arc::new(Notify::new()),
            watch_generation,
            synced_revision: Arc::new(AtomicU64::new(0)),
            latest_seen: Arc::new(AtomicU64::new(0)),
            pending: Arc::new(AtomicU8::new(0)),
            agent: parts.agent,
            bundle: parts.bundle,
            federated: BTreeMap::new(),
            current,
            stale: BTreeSet::new(),
            revision: 0,
            dirty: true,
            sign_failures: 0,
            sign_retry_at: None,
            status,
        };
        (m, rx)
    }

    /// The agent's status (start time, last successful sync), updated by [`Manager::run`].
    pub fn status(&self) -> Arc<crate::identity::AgentStatus> {
        self.status.clone()
    }

    /// The JWT-SVID source backed by this manager's server client.
    pub fn jwt_source(&self, max_size: usize) -> jwt::JwtCache {
        jwt::JwtCache::new(Arc::new(self.client.clone()), self.clock.clone(), max_size)
    }

    /// Runs until `shutdown` is cancelled (→ `Ok`) or the server rejects the agent for good.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ManagerError> {
        let watch_task = tokio::spawn(watch_loop(
            self.client.clone(),
            self.wake.clone(),
            self.synced_revision.clone(),
            self.latest_seen.clone(),
            self.pending.clone(),
            self.watch_generation.subscribe(),
            shutdown.child_token(),
        ));
        let result = self.run_loop(&shutdown).await;
        watch_task.abort();
        result
    }

    async fn run_loop(&mut self, shutdown: &CancellationToken) -> Result<(), ManagerError> {
        let mut next_sync = tokio::time::Instant::now();
        let mut sync_failures: u32 = 0;
        let mut woke = false;
        let mut agent_failures: u32 = 0;
        let mut agent_retry_at: Option<tokio::time::Instant> = None;
        loop {
            // 1. The agent's own SVID.
            let now = self.clock.now();
            if rotation::should_rotate(now, self.agent.deadline, self.agent.svid.not_after)
                && agent_retry_at.is_none_or(|t| tokio::time::Instant::now() >= t)
            {
                match self.rotate_agent().await {
                    Ok(()) => {
                        spire_telemetry::metrics::svid_rotation("agent");
                        agent_failures = 0;
                        agent_retry_at = None;
                    }
                    Err(e) => {
                        agent_failures = agent_failures.saturating_add(1);
                        agent_retry_at = Some(
                            tokio::time::Instant::now()
                                + rotation::backoff(
                                    Duration::from_secs(1),
                                    agent_failures - 1,
                                    Duration::from_secs(60),
                                ),
                        );
                        self.on_error(e).await?;
                    }
                }
            }

            // 2. Entries and bundles.
            // A timer-driven sync covers everything; a push covers what the server said changed.
            let timer_due = tokio::time::Instant::now() >= next_sync;
            let pushed = if woke || timer_due {
                self.pending.swap(0, Ordering::SeqCst)
            } else {
                0
            };
            let scope = if timer_due { SCOPE_ALL } else { pushed };
            if scope != 0 {
                let revision_before = self.synced_revision_hint();
                match self.sync(scope).await {
                    Ok(()) => {
                        spire_telemetry::metrics::agent_sync(true);
                        self.status.record_sync_success(self.clock.now());
                        sync_failures = 0;
                        self.synced_revision
                            .store(revision_before, Ordering::SeqCst);
                        next_sync = tokio::time::Instant::now() + self.cfg.sync_interval;
                    }
                    Err(e) => {
                        spire_telemetry::metrics::agent_sync(false);
                        self.pending.fetch_or(scope, Ordering::SeqCst);
                        sync_failures = sync_failures.saturating_add(1);
                        let delay = rotation::backoff(
                            self.cfg.sync_interval,
                            sync_failures - 1,
                            MAX_SYNC_BACKOFF,
                        );
                        next_sync = tokio::time::Instant::now() + delay;
                        self.on_error(e).await?;
                    }
                }
            }

            // 3. Workload SVIDs.
            if self
                .sign_retry_at
                .is_none_or(|t| tokio::time::Instant::now() >= t)
            {
                match self.sign_svids().await {
                    Ok(()) => {
                        self.sign_failures = 0;
                        self.sign_retry_at = None;
                    }
                    Err(e) => {
                        self.sign_failures = self.sign_failures.saturating_add(1);
                        self.sign_retry_at = Some(
                            tokio::time::Instant::now()
                                + rotation::backoff(
                                    Duration::from_millis(500),
                                    self.sign_failures - 1,
                                    Duration::from_secs(240),
                                ),
                        );
                        self.on_error(e).await?;
                    }
                }
            }

            // 4. Publish.
            self.publish();

            // 5. Sleep until something is due.
            let now = self.clock.now();
            let mut wait = next_sync.saturating_duration_since(tokio::time::Instant::now());
            // After a failure, the retry time replaces the (already passed) deadline.
            wait = wait.min(match agent_retry_at {
                Some(t) => t.saturating_duration_since(tokio::time::Instant::now()),
                None => rotation::until(now, self.agent.deadline),
            });
            match self.sign_retry_at {
                Some(t) => {
                    wait = wait.min(t.saturating_duration_since(tokio::time::Instant::now()));
                }
                None => {
                    if let Some(t) = self
                        .current
                        .identities
                        .values()
                        .filter_map(|i| i.svid.as_deref().map(|v| self.svid_deadline(v)))
                        .min()
                    {
                        wait = wait.min(rotation::until(now, t));
                    }
                }
            }
            // Re-check at least every 5 s (the agent SVID check interval of SPIRE).
            wait = wait.clamp(Duration::from_millis(50), Duration::from_secs(5));
            woke = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(wait) => false,
                () = self.wake.notified() => true,
                // A new workload subscribed: sign what it matches beyond the cache limit now.
                () = self.subscribers.changed() => true,
            };
        }
    }

    fn synced_revision_hint(&self) -> u64 {
        self.latest_seen.load(Ordering::SeqCst)
    }

    /// Reacts to an error of a server call: logs it, and when the server refused the agent,
    /// re-attests (re-attestable agents) or stops (others).
    async fn on_error(&mut self, e: ManagerError) -> Result<(), ManagerError> {
        let denied = matches!(&e, ManagerError::Client(c) if c.is_permission_denied());
        if !denied {
            tracing::warn!(error = %e, "Server call failed; will retry");
            return Ok(());
        }
        if self.agent.reattestable && self.attestor.is_some() {
            tracing::warn!(error = %e, "Server rejected the agent; re-attesting");
            match self.reattest().await {
                Ok(()) => return Ok(()),
                Err(re) => {
                    tracing::error!(error = %re, "Re-attestation failed; stopping");
                    let _ = storage::remove(&self.cfg.data_dir);
                    return Err(ManagerError::Rejected(re.to_string()));
                }
            }
        }
        tracing::error!(
            error = %e,
            spiffe_id = %self.agent.svid.spiffe_id,
            "Agent is banned or evicted and cannot re-attest; stopping"
        );
        let _ = storage::remove(&self.cfg.data_dir);
        Err(ManagerError::Rejected(e.to_string()))
    }

    async fn rotate_agent(&mut self) -> Result<(), ManagerError> {
        if self.agent.reattestable {
            return self.reattest().await;
        }
        let key = self.keys.generate()?;
        let csr = spire_crypto::create_csr(key.as_ref(), None)
            .map_err(|e| ManagerError::Crypto(format!("agent CSR: {e}")))?;
        let svid = self.client.renew_agent(csr).await?;
        if svid.public_key_spki() != Some(key.public_key().spki_der()) {
            return Err(ManagerError::Crypto(
                "server returned an agent SVID for another key".into(),
            ));
        }
        self.install_agent(AgentSvid::new(
            svid,
            key,
            false,
            self.cfg.availability_target,
        ))?;
        tracing::info!(
            spiffe_id = %self.agent.svid.spiffe_id,
            expires_at = spire_spiffe::to_unix_secs(self.agent.svid.not_after),
            "Renewed agent SVID"
        );
        Ok(())
    }

    async fn reattest(&mut self) -> Result<(), ManagerError> {
        let attestor = self
            .attestor
            .clone()
            .ok_or_else(|| ManagerError::NoAttestor("no node attestor configured".into()))?;
        let (att, key, _) = attest_agent(
            &self.cfg,
            Some(&self.tls_bundles),
            attestor.as_ref(),
            &self.keys,
            self.clock.clone(),
        )
        .await?;
        self.install_agent(AgentSvid::new(
            att.svid,
            key,
            att.reattestable,
            self.cfg.availability_target,
        ))?;
        tracing::info!(
            spiffe_id = %self.agent.svid.spiffe_id,
            expires_at = spire_spiffe::to_unix_secs(self.agent.svid.not_after),
            "Re-attested; agent SVID replaced"
        );
        Ok(())
    }

    /// Commits a new agent SVID: key store, agent data, TLS identity, fresh connection.
    fn install_agent(&mut self, agent: AgentSvid) -> Result<(), ManagerError> {
        let identity = agent.tls_identity()?;
        self.keys.commit(agent.key.clone())?;
        storage::save(
            &self.cfg.data_dir,
            &AgentData {
                svid_chain: agent.svid.cert_chain.clone(),
                bundle: self.bundle.clone(),
                reattestable: agent.reattestable,
            },
        )?;
        self.identity.store(identity);
        self.client.reconnect();
        self.watch_generation.send_modify(|g| *g += 1);
        self.agent = agent;
        Ok(())
    }

    async fn sync(&mut self, scope: u8) -> Result<(), ManagerError> {
        if scope & SCOPE_ENTRIES != 0 {
            self.sync_entries().await?;
        }
        if scope & SCOPE_BUNDLES != 0 {
            self.sync_bundle().await?;
        }
        self.sync_federated(scope & SCOPE_BUNDLES != 0).await
    }

    async fn sync_entries(&mut self) -> Result<(), ManagerError> {
        let known = &self.current.identities;
        let cached = |id: &str| known.get(id).map(|i| i.entry.clone());
        let synced = self.client.sync_entries(&cached).await?;
        let mut now_entries = synced.entries;
        tracing::debug!(
            total = now_entries.len(),
            fetched = synced.fetched,
            "Entries synced"
        );
        for (id, e) in &now_entries {
            match self.current.identities.get(id.as_str()).map(|i| &i.entry) {
                None => {
                    tracing::debug!(entry_id = %id, spiffe_id = %e.spiffe_id, revision = e.revision_number, "Entry created")
                }
                Some(old) if !Arc::ptr_eq(old, e) && **old != **e => {
                    tracing::debug!(entry_id = %id, spiffe_id = %e.spiffe_id, revision = e.revision_number, "Entry updated");
                }
                _ => {}
            }
        }
        let old = &self.current.identities;
        for (id, i) in old {
            if !now_entries.contains_key(id) {
                tracing::debug!(entry_id = %id, spiffe_id = %i.entry.spiffe_id, "Entry deleted");
            }
        }
        let changed = now_entries.len() != old.len()
            || now_entries.iter().any(|(id, e)| {
                old.get(id.as_str())
                    .is_none_or(|o| !Arc::ptr_eq(&o.entry, e) && *o.entry != **e)
            });
        if changed {
            share_parent_ids(&mut now_entries, old.values().map(|i| &i.entry));
            // Built in one go (a B-tree collected from sorted keys has full nodes) into a new
            // snapshot, not a copy of the old one: an entry keeps its SVID (marked for
            // re-signing if the entry changed since), and the SVID of a deleted entry goes with
            // it.
            let stale = &mut self.stale;
            let identities: BTreeMap<EntryId, Identity> = now_entries
                .into_iter()
                .map(|(id, entry)| {
                    let svid = old.get(id.as_str()).and_then(|o| {
                        if o.entry.revision_number != entry.revision_number {
                            stale.insert(id.clone());
                        }
                        o.svid.clone()
                    });
                    (id, Identity { entry, svid })
                })
                .collect();
            stale.retain(|id| identities.contains_key(id));
            let cur = &self.current;
            self.current = Arc::new(IdentitySnapshot {
                revision: cur.revision,
                trust_domain: cur.trust_domain.clone(),
                bundle: cur.bundle.clone(),
                federated_bundles: cur.federated_bundles.clone(),
                identities,
            });
            self.dirty = true;
        }

        Ok(())
    }

    async fn sync_bundle(&mut self) -> Result<(), ManagerError> {
        let bundle = self.client.get_bundle().await?;
        if bundle.trust_domain != self.cfg.trust_domain {
            return Err(ManagerError::Client(ClientError::Protocol {
                op: "GetBundle",
                reason: format!(
                    "bundle of {} instead of {}",
                    bundle.trust_domain, self.cfg.trust_domain
                ),
            }));
        }
        if !same_bundle(&bundle, &self.bundle) {
            if let Err(e) = self.tls_bundles.set_bundle(&bundle) {
                tracing::warn!(error = %e, "Received bundle unusable for TLS; keeping the previous roots");
            } else {
                tracing::info!(
                    trust_domain = %bundle.trust_domain,
                    x509_authorities = bundle.x509_authorities.len(),
                    jwt_authorities = bundle.jwt_authorities.len(),
                    sequence_number = bundle.sequence_number,
                    "Bundle updated"
                );
                self.bundle = bundle;
                storage::save(
                    &self.cfg.data_dir,
                    &AgentData {
                        svid_chain: self.agent.svid.cert_chain.clone(),
                        bundle: self.bundle.clone(),
                        reattestable: self.agent.reattestable,
                    },
                )?;
                self.dirty = true;
            }
        }

        Ok(())
    }

    /// Federated bundles for every trust domain the entries federate with: all of them when
    /// `refresh`, otherwise only those not fetched yet.
    async fn sync_federated(&mut self, refresh: bool) -> Result<(), ManagerError> {
        let wanted: BTreeSet<TrustDomain> = self
            .current
            .identities
            .values()
            .flat_map(|i| i.entry.federates_with.iter().cloned())
            .filter(|td| *td != self.cfg.trust_domain)
            .collect();
        let mut federated = BTreeMap::new();
        for td in &wanted {
            if !refresh && let Some(known) = self.federated.get(td) {
                federated.insert(td.clone(), known.clone());
                continue;
            }
            match self.client.get_federated_bundle(td).await? {
                Some(b) => {
                    federated.insert(td.clone(), b);
                }
                None => tracing::warn!(trust_domain = %td, "Federated bundle not found"),
            }
        }
        if federated != self.federated {
            self.federated = federated;
            self.dirty = true;
        }
        Ok(())
    }

    async fn sign_svids(&mut self) -> Result<(), ManagerError> {
        let max = self.cfg.x509_svid_cache_max_size;
        // Subscribers matter when the prefetch set leaves entries out: entries beyond the
        // limit, or entries with prefetch disabled (signed only for a subscriber, whatever
        // the limit).
        let wanted = (max != 0 && self.current.identities.len() > max)
            || self
                .current
                .identities
                .values()
                .any(|i| i.entry.disable_x509_svid_prefetch);
        self.subscribers.set_wanted(wanted);
        let subscribers: BTreeSet<Selectors> = if wanted {
            self.subscribers.selector_sets().into_iter().collect()
        } else {
            BTreeSet::new()
        };
        let (selected, beyond) = signing_set(
            self.current.identities.values().map(|i| &*i.entry),
            max,
            &subscribers,
        );
        // Entries beyond the limit that no workload subscribes to any more (SPIRE evicts those
        // from its LRU cache). Deleted entries took their SVIDs with them at sync.
        let evict: Vec<EntryId> = self
            .current
            .identities
            .iter()
            .filter(|(id, i)| i.svid.is_some() && !selected.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        let evicted = evict.len();
        if evicted > 0 {
            let snap = Arc::make_mut(&mut self.current);
            for id in &evict {
                if let Some(i) = snap.identities.get_mut(id.as_str()) {
                    i.svid = None;
                }
            }
            tracing::debug!(
                evicted,
                cached = self.cached_svids(),
                max_size = max,
                "Dropped X509-SVIDs of unsubscribed entries"
            );
            self.dirty = true;
        }
        if beyond > 0 {
            let unsigned = selected
                .iter()
                .filter(|id| {
                    self.current
                        .identities
                        .get(id.as_str())
                        .is_none_or(|i| i.svid.is_none())
                })
                .count();
            if unsigned > 0 {
                tracing::debug!(
                    beyond_limit = beyond,
                    subscribers = subscribers.len(),
                    max_size = max,
                    "Signing X509-SVIDs beyond the cache limit for active subscribers"
                );
            }
        }
        let now = self.clock.now();
        let mut todo: Vec<Arc<EntryView>> = Vec::new();
        for id in &selected {
            let Some(Identity { entry, svid }) = self.current.identities.get(id.as_str()) else {
                continue;
            };
            let due = match svid {
                None => true,
                Some(svid) => {
                    self.stale.contains(id)
                        || svid.spiffe_id != entry.spiffe_id
                        || rotation::should_rotate(now, self.svid_deadline(svid), svid.expires_at)
                }
            };
            if due {
                todo.push(entry.clone());
            }
        }
        if todo.is_empty() {
            return Ok(());
        }
        let key_type = self.cfg.workload_key_type;
        let mut failed = 0usize;
        // In batches: keys, CSRs and the server's answers of one batch only are alive at once,
        // so signing 10,000 SVIDs does not leave a 10,000-SVID transient high-water mark in
        // the allocator (BENCHMARKS.md P5), and SVIDs are published as each batch lands.
        for batch in todo.chunks(SIGN_BATCH) {
            let ids: Vec<(EntryId, SharedSpiffeId)> = batch
                .iter()
                .map(|e| (e.entry_id.clone(), e.spiffe_id.clone()))
                .collect();
            let made = tokio::task::spawn_blocking(move || {
                ids.into_iter()
                    .map(|(id, sid)| {
                        let key = PrivateKey::generate(key_type).map_err(|e| e.to_string())?;
                        let csr = spire_crypto::create_csr(&key, Some(&*sid))
                            .map_err(|e| e.to_string())?;
                        Ok::<_, String>((id, key, csr))
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .await
            .map_err(|e| ManagerError::Crypto(format!("key generation task: {e}")))?
            .map_err(|e| ManagerError::Crypto(format!("workload key or CSR: {e}")))?;
            let params: Vec<(String, Vec<u8>)> = made
                .iter()
                .map(|(id, _, csr)| (id.to_string(), csr.clone()))
                .collect();
            let results = self.client.batch_new_x509_svid(params).await?;
            for ((id, key, _), result) in made.into_iter().zip(results) {
                let Some(entry) = self
                    .current
                    .identities
                    .get(id.as_str())
                    .map(|i| i.entry.clone())
                else {
                    continue;
                };
                let issued = match result {
                    Ok(s) => s,
                    Err(reason) => {
                        failed += 1;
                        tracing::warn!(entry_id = %id, spiffe_id = %entry.spiffe_id, reason = %reason, "Failed to mint X509-SVID");
                        continue;
                    }
                };
                if issued.spiffe_id != entry.spiffe_id {
                    failed += 1;
                    tracing::warn!(entry_id = %id, expected = %entry.spiffe_id, got = %issued.spiffe_id, "Server signed an X509-SVID for another SPIFFE ID");
                    continue;
                }
                let pkcs8 = key
                    .to_pkcs8_der()
                    .map_err(|e| ManagerError::Crypto(e.to_string()))?;
                // Copy-on-write: the first SVID of a batch copies the published map (which
                // the watch channel still holds), the others change the copy.
                let snap = Arc::make_mut(&mut self.current);
                let Some(slot) = snap.identities.get_mut(id.as_str()) else {
                    continue;
                };
                let renewed = slot.svid.is_some();
                tracing::info!(
                    entry_id = %id,
                    spiffe_id = %issued.spiffe_id,
                    expires_at = spire_spiffe::to_unix_secs(issued.not_after),
                    renewed,
                    "Issued X509-SVID"
                );
                slot.svid = Some(Arc::new(WorkloadX509Svid {
                    entry_id: entry.entry_id.clone(),
                    // The entry's own (shared) ID: equal, checked above.
                    spiffe_id: entry.spiffe_id.clone(),
                    cert_chain: {
                        let mut chain = issued.cert_chain;
                        chain.shrink_to_fit();
                        chain
                    },
                    private_key_pkcs8: Arc::new(pkcs8),
                    not_before: issued.not_before,
                    expires_at: issued.not_after,
                }));
                self.stale.remove(id.as_str());
                self.dirty = true;
            }
            self.publish();
        }
        if failed > 0 {
            return Err(ManagerError::Mint(format!(
                "{failed} X509-SVID(s) could not be minted"
            )));
        }
        Ok(())
    }

    /// How many entries have an X509-SVID.
    fn cached_svids(&self) -> usize {
        self.current
            .identities
            .values()
            .filter(|i| i.svid.is_some())
            .count()
    }

    /// When an SVID is due for rotation (half-life with its own jitter, or the availability
    /// target).
    fn svid_deadline(&self, svid: &WorkloadX509Svid) -> SystemTime {
        rotation::rotation_deadline(
            svid.not_before,
            svid.expires_at,
            svid_jitter(svid),
            self.cfg.availability_target,
        )
    }

    fn publish(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.revision += 1;
        let cached = self.cached_svids();
        spire_telemetry::metrics::cached_x509_svids(cached);
        let view = |b: &Bundle| {
            Arc::new(BundleView {
                trust_domain: b.trust_domain.clone(),
                x509_authorities: b.x509_authorities.clone(),
                bundle: b.clone(),
            })
        };
        // The identities were changed in place (a copy of the published map at most once
        // since the last publication); a bundle-only change copies the map here.
        let bundle = Some(view(&self.bundle));
        let federated_bundles = self
            .federated
            .iter()
            .map(|(td, b)| (td.clone(), view(b)))
            .collect();
        let snapshot = Arc::make_mut(&mut self.current);
        snapshot.revision = self.revision;
        snapshot.bundle = bundle;
        snapshot.federated_bundles = federated_bundles;
        tracing::debug!(
            revision = snapshot.revision,
            entries = snapshot.identities.len(),
            svids = cached,
            "Identity snapshot published"
        );
        self.tx.send_replace(self.current.clone());
    }
}

/// What a `Watch` response asks to re-fetch, as scope bits (0 = nothing).
fn change_scope(changes: &[i32]) -> u8 {
    use spire_proto::spire_rs::agent::Change;
    if changes.is_empty() {
        return SCOPE_ALL;
    }
    let mut scope = 0;
    for c in changes {
        scope |= match Change::try_from(*c) {
            Ok(Change::None) => 0,
            Ok(Change::Entries | Change::Agent) => SCOPE_ENTRIES,
            Ok(Change::Bundle | Change::FederatedBundle) => SCOPE_BUNDLES,
            Ok(Change::Unspecified | Change::Resync) | Err(_) => SCOPE_ALL,
        };
    }
    scope
}

/// Keeps the spire-rs `Watch` stream open and wakes the sync loop when the server reports a
/// change. A server without it (Unimplemented) leaves the agent polling.
async fn watch_loop(
    client: Arc<dyn ServerApi>,
    wake: Arc<Notify>,
    synced_revision: Arc<AtomicU64>,
    latest_seen: Arc<AtomicU64>,
    pending: Arc<AtomicU8>,
    mut generation: watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    loop {
        generation.borrow_and_update();
        let known = synced_revision.load(Ordering::SeqCst);
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            r = client.watch(known) => r,
        };
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) if e.code() == Some(tonic::Code::Unimplemented) => {
                tracing::info!("Server has no Watch stream; polling only");
                return;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = rotation::backoff(
                    Duration::from_secs(1),
                    failures - 1,
                    Duration::from_secs(30),
                );
                tracing::debug!(error = %e, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "Watch stream unavailable");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {},
                    _ = generation.changed() => {},
                }
                continue;
            }
        };
        tracing::debug!("Watch stream open");
        loop {
            let msg = tokio::select! {
                () = shutdown.cancelled() => return,
                _ = generation.changed() => break,
                m = futures::StreamExt::next(&mut stream) => m,
            };
            match msg.transpose() {
                Ok(Some(resp)) => {
                    failures = 0;
                    latest_seen.fetch_max(resp.revision, Ordering::SeqCst);
                    let mut scope = change_scope(&resp.changes);
                    if scope == 0 && resp.revision > synced_revision.load(Ordering::SeqCst) {
                        scope = SCOPE_ALL;
                    }
                    if scope != 0 {
                        tracing::debug!(
                            revision = resp.revision,
                            scope,
                            "Server reported a change; syncing"
                        );
                        pending.fetch_or(scope, Ordering::SeqCst);
                        wake.notify_one();
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    if status.code() == tonic::Code::PermissionDenied {
                        // Let the sync loop find out and act on it.
                        pending.fetch_or(SCOPE_ALL, Ordering::SeqCst);
                        wake.notify_one();
                    }
                    tracing::debug!(code = ?status.code(), message = status.message(), "Watch stream ended");
                    failures = failures.saturating_add(1);
                    let delay = rotation::backoff(
                        Duration::from_secs(1),
                        failures - 1,
                        Duration::from_secs(30),
                    );
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(delay) => {},
                    }
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, created_at: i64) -> Arc<EntryView> {
        Arc::new(EntryView {
            entry_id: id.into(),
            spiffe_id: format!("spiffe://td/{id}").parse().unwrap(),
            parent_id: "spiffe://td/p".parse().unwrap(),
            selectors: Default::default(),
            federates_with: vec![],
            hint: String::new(),
            created_at,
            revision_number: 0,
            x509_svid_ttl: 0,
            jwt_svid_ttl: 0,
            jwt_svid_include_jti: false,
            disable_x509_svid_prefetch: false,
            admin: false,
            downstream: false,
        })
    }

    #[test]
    fn svid_jitter_comes_from_the_leaf_signature_bytes() {
        let svid = |leaf: Vec<u8>| WorkloadX509Svid {
            entry_id: "e".into(),
            spiffe_id: "spiffe://td/e".parse().unwrap(),
            cert_chain: vec![leaf],
            private_key_pkcs8: Arc::new(zeroize::Zeroizing::new(vec![])),
            not_before: SystemTime::UNIX_EPOCH,
            expires_at: SystemTime::UNIX_EPOCH,
        };
        assert_eq!(svid_jitter(&svid(vec![9, 0, 0, 0, 0])), -1.0);
        assert_eq!(svid_jitter(&svid(vec![9, 255, 255, 255, 255])), 1.0);
        let mid = svid_jitter(&svid(vec![0, 0, 0, 128]));
        assert!(mid.abs() < 0.01, "{mid}");
        assert_eq!(
            svid_jitter(&svid(vec![1])),
            -1.0,
            "too short: earliest point"
        );
    }

    #[test]
    fn fetched_entries_share_parent_ids() {
        let known = entry("k", 1);
        let mut fetched: BTreeMap<EntryId, Arc<EntryView>> = BTreeMap::new();
        for id in ["a", "b"] {
            fetched.insert(id.into(), entry(id, 2));
        }
        let mut other = (*entry("c", 3)).clone();
        other.parent_id = "spiffe://td/other".parse().unwrap();
        fetched.insert("c".into(), Arc::new(other));
        // An entry shared with the cache keeps its own allocation.
        let cached = entry("d", 4);
        fetched.insert("d".into(), cached.clone());
        share_parent_ids(&mut fetched, [&known].into_iter());
        let p = |id: &str| fetched[id].parent_id.clone();
        assert!(SharedSpiffeId::ptr_eq(&p("a"), &known.parent_id));
        assert!(SharedSpiffeId::ptr_eq(&p("b"), &known.parent_id));
        assert_eq!(p("c").as_str(), "spiffe://td/other");
        assert!(!SharedSpiffeId::ptr_eq(&p("d"), &known.parent_id));
        assert_eq!(p("d"), known.parent_id);
    }

    #[test]
    fn watch_changes_map_to_sync_scopes() {
        use spire_proto::spire_rs::agent::Change;
        assert_eq!(change_scope(&[]), SCOPE_ALL);
        assert_eq!(change_scope(&[Change::None as i32]), 0);
        assert_eq!(change_scope(&[Change::Entries as i32]), SCOPE_ENTRIES);
        assert_eq!(change_scope(&[Change::Agent as i32]), SCOPE_ENTRIES);
        assert_eq!(change_scope(&[Change::Bundle as i32]), SCOPE_BUNDLES);
        assert_eq!(
            change_scope(&[Change::Entries as i32, Change::FederatedBundle as i32]),
            SCOPE_ALL
        );
        assert_eq!(change_scope(&[Change::Resync as i32]), SCOPE_ALL);
        assert_eq!(change_scope(&[99]), SCOPE_ALL);
    }

    #[test]
    fn prefetch_takes_oldest_entries_up_to_the_limit() {
        let mut m = BTreeMap::new();
        for (id, t) in [("c", 1), ("a", 3), ("b", 2), ("d", 3)] {
            m.insert(id.to_owned(), entry(id, t));
        }
        let all = prefetch_set(m.values().map(|e| &**e), 0);
        assert_eq!(all.len(), 4);
        let two: Vec<EntryId> = prefetch_set(m.values().map(|e| &**e), 2)
            .into_iter()
            .collect();
        assert_eq!(two, vec!["b".to_owned(), "c".to_owned()]);
        let three: Vec<EntryId> = prefetch_set(m.values().map(|e| &**e), 3)
            .into_iter()
            .collect();
        assert_eq!(three, vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]);
    }

    #[test]
    fn entries_with_prefetch_disabled_are_signed_only_for_subscribers() {
        let mut m = BTreeMap::new();
        m.insert("a".to_owned(), entry("a", 1));
        let mut lazy = (*entry("b", 2)).clone();
        lazy.disable_x509_svid_prefetch = true;
        lazy.selectors = ["unix:uid:7".parse::<spire_spiffe::Selector>().unwrap()]
            .into_iter()
            .collect();
        m.insert("b".to_owned(), Arc::new(lazy));
        let none: Vec<EntryId> = prefetch_set(m.values().map(|e| &**e), 0)
            .into_iter()
            .collect();
        assert_eq!(none, vec!["a".to_owned()]);
        let subscribed: BTreeSet<Selectors> =
            [["unix:uid:7".parse::<spire_spiffe::Selector>().unwrap()]
                .into_iter()
                .collect()]
            .into();
        let (both, beyond) = signing_set(m.values().map(|e| &**e), 0, &subscribed);
        assert_eq!(both.into_iter().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(beyond, 1);
    }
}
