//! The authorized-entry index of the server: which registration entries each agent may get
//! SVIDs for, kept in memory and followed incrementally from the datastore's change log.
//!
//! Cold start loads every entry and every agent in one pass (after noting the change-log
//! position); afterwards [`AuthorizedEntries::run`] follows the change log — woken by the
//! datastore's change notifications (PostgreSQL LISTEN/NOTIFY, so a write through another
//! server of the trust domain arrives at once) and polling as a fallback — re-reads only the
//! objects named by new rows, and publishes a [`Notification`] naming the agents whose view
//! changed (for the push stream, [`crate::api::watch`]). A full reload happens only when the
//! follower gives up on a gap in the log.
//!
//! The same follower keeps the agent records and the local bundle, so the per-call agent check
//! ([`crate::authz::check_agent`]) and `GetBundle` need no database read in steady state. They
//! use them only while no node (or bundle) write made by this process is newer than what the
//! index has applied ([`AuthorizedEntries::fresh_agent`], [`AuthorizedEntries::fresh_bundle`];
//! the datastore's local write marks), so a ban, eviction or renewal through this server is
//! seen by the next call. Writes by other servers of the trust domain arrive with the change
//! log (at once with PostgreSQL notifications, else within [`POLL_INTERVAL`]).
//!
//! Mirrors `pkg/server/authorizedentries` (design-notes §3).

mod index;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use spire_datastore::{
    AttestedNode, BULK_PAGE, Bundle, ChangeFollower, ChangeKind, DataStore, Entry,
};
use spire_spiffe::{Clock, SpiffeId, TrustDomain};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use index::Index;

/// How often the change log is polled when the datastore has no change notifications.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How often the change log is polled anyway when change notifications wake the follower
/// (a safety net for a lost notification; gaps are re-read on every wake-up too).
pub const NOTIFIED_POLL_INTERVAL: Duration = Duration::from_millis(3000);

/// How often the follower checks for writes of this process it has not applied yet (then it
/// polls at once, so the agent check and `GetBundle` are back on the index within this time
/// even where notifications are slow or absent, e.g. after a write that rolled back).
pub const LOCAL_WRITE_CHECK: Duration = Duration::from_millis(50);

/// How long a gap in the change log is waited for before it is given up (then: full reload).
pub const GAP_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Most change-log rows read per poll.
const POLL_LIMIT: u32 = 5000;

/// Bits of [`Notification`] masks (they mirror `spire_rs.agent.v1.Change`).
pub mod change {
    /// Authorized entries changed.
    pub const ENTRIES: u32 = 1 << 2;
    /// The local bundle changed.
    pub const BUNDLE: u32 = 1 << 3;
    /// A federated bundle changed.
    pub const FEDERATED_BUNDLE: u32 = 1 << 4;
    /// The agent's own record changed.
    pub const AGENT: u32 = 1 << 5;
    /// Everything must be re-synced.
    pub const RESYNC: u32 = 1 << 6;
}

/// One batch of applied changes.
#[derive(Debug, Default)]
pub struct Notification {
    /// The change-log position after the batch.
    pub revision: i64,
    /// What changed for every agent.
    pub all: u32,
    /// What changed, per agent SPIFFE ID.
    pub agents: HashMap<String, u32>,
}

impl Notification {
    /// The change mask for `agent_id` (0 = nothing it can see changed).
    pub fn mask_for(&self, agent_id: &str) -> u32 {
        self.all | self.agents.get(agent_id).copied().unwrap_or(0)
    }
}

/// Why the index could not be loaded or followed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A datastore read failed.
    #[error("cannot read the datastore for the authorized-entry index")]
    Datastore(#[from] spire_datastore::Error),
    /// A task of the cold start was cancelled (the runtime is shutting down).
    #[error("the authorized-entry index load was cancelled before it finished")]
    Cancelled,
}

/// Entries handed from the reading task to the indexing one at a time.
const LOAD_BATCH: usize = 1000;

/// Aborts a spawned task when dropped (a failed or abandoned load stops its readers).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> AbortOnDrop<T> {
    /// The task's result; a panic in it is propagated.
    async fn join(mut self) -> Result<T, IndexError> {
        match (&mut self.0).await {
            Ok(v) => Ok(v),
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Err(IndexError::Cancelled),
            },
        }
    }
}

/// The shared index handle.
#[derive(Debug)]
pub struct AuthorizedEntries {
    trust_domain: TrustDomain,
    index: RwLock<Index>,
    revision: AtomicI64,
    notify: broadcast::Sender<Arc<Notification>>,
    /// The datastore's local write sequence position the index has fully applied.
    local_seq: AtomicU64,
    /// The local trust domain's bundle, as of the index.
    bundle: RwLock<Option<Arc<Bundle>>>,
}

impl AuthorizedEntries {
    /// An empty index for `trust_domain` (call [`AuthorizedEntries::load`] before use).
    pub fn new(trust_domain: TrustDomain) -> Self {
        let server_id = server_id(&trust_domain);
        let (notify, _) = broadcast::channel(1024);
        AuthorizedEntries {
            trust_domain,
            index: RwLock::new(Index::new(&server_id)),
            revision: AtomicI64::new(0),
            notify,
            local_seq: AtomicU64::new(0),
            bundle: RwLock::new(None),
        }
    }

    /// Reads the index.
    pub fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The change-log position the index reflects.
    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Subscribes to notifications.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Notification>> {
        self.notify.subscribe()
    }

    /// The record of agent `id` from the index, when the index holds every node write made
    /// through `ds` (else `None`: read the database).
    pub fn fresh_agent(&self, ds: &DataStore, id: &str) -> Option<Arc<AttestedNode>> {
        if ds.last_local_write(ChangeKind::Node) > self.local_seq.load(Ordering::SeqCst) {
            return None;
        }
        self.read().agent(id).cloned()
    }

    /// Waits (at most `max`) until the index holds every node write made through `ds`, so an
    /// agent that has just attested here sees its node selectors, and with them its node-alias
    /// entries, in its first sync. The follower applies a local write within
    /// [`LOCAL_WRITE_CHECK`]; past `max` the caller goes on with what the index holds (the
    /// push stream brings the rest).
    pub async fn wait_for_local_node_writes(&self, ds: &DataStore, max: Duration) {
        let deadline = tokio::time::Instant::now() + max;
        while ds.last_local_write(ChangeKind::Node) > self.local_seq.load(Ordering::SeqCst)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The local bundle, when the index holds every bundle write made through `ds` (else
    /// `None`: read the database).
    pub fn fresh_bundle(&self, ds: &DataStore) -> Option<Arc<Bundle>> {
        if ds.last_local_write(ChangeKind::Bundle) > self.local_seq.load(Ordering::SeqCst) {
            return None;
        }
        self.bundle
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_bundle(&self, bundle: Option<Bundle>) {
        *self
            .bundle
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = bundle.map(Arc::new);
    }

    /// Every entry `agent` is authorized for, sorted by ID.
    pub fn authorized_entries(&self, agent: &SpiffeId) -> Vec<Arc<Entry>> {
        self.read().authorized_entries(agent.as_str())
    }

    /// Loads everything from the datastore (cold start or recovery); returns the follower
    /// positioned at the log position read before the load.
    pub async fn load(&self, ds: &DataStore) -> Result<ChangeFollower, IndexError> {
        let seq = ds.local_write_seq();
        let start = ds.latest_change_id().await?;
        let server = server_id(&self.trust_domain);
        // Cold start: three tasks at once, so the database reads, the row decoding and the
        // index inserts overlap (and use both cores): one reads the agents into an index of
        // their own, one reads the entries and hands them over in batches, and this one
        // inserts them as they arrive. The hand-over channel is unbounded (the read callback
        // cannot wait): batches queue only while reading outpaces inserting.
        let agents = AbortOnDrop(tokio::spawn({
            let ds = ds.clone();
            let server = server.clone();
            async move {
                let mut agents = Index::new(&server);
                ds.for_each_node(BULK_PAGE, |n| {
                    agents.upsert_agent(n);
                })
                .await
                .map(|_| agents)
            }
        }));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Entry>>();
        let reader = AbortOnDrop(tokio::spawn({
            let ds = ds.clone();
            async move {
                let mut batch = Vec::with_capacity(LOAD_BATCH);
                let read = ds
                    .for_each_entry(BULK_PAGE, |e| {
                        batch.push(e);
                        if batch.len() == LOAD_BATCH {
                            // The receiver only goes away when the load is abandoned.
                            let _ = tx.send(std::mem::replace(
                                &mut batch,
                                Vec::with_capacity(LOAD_BATCH),
                            ));
                        }
                    })
                    .await;
                if !batch.is_empty() {
                    let _ = tx.send(batch);
                }
                read
            }
        }));
        let mut fresh = Index::new(&server);
        while let Some(batch) = rx.recv().await {
            for e in batch {
                fresh.upsert_entry(e);
            }
        }
        reader.join().await??;
        fresh.absorb_agents(agents.join().await??);
        let bundle = ds.get_bundle(&self.trust_domain).await?;
        tracing::info!(
            entries = fresh.entry_count(),
            agents = fresh.agent_count(),
            revision = start,
            "Authorized-entry index loaded"
        );
        spire_telemetry::metrics::entry_index_size(fresh.entry_count(), fresh.agent_count());
        *self
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        self.revision.store(start, Ordering::Release);
        self.set_bundle(bundle);
        self.local_seq.fetch_max(seq, Ordering::SeqCst);
        Ok(ChangeFollower::new(start, GAP_TIMEOUT))
    }

    /// Follows the change log until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        ds: DataStore,
        clock: Arc<dyn Clock>,
        mut follower: ChangeFollower,
        shutdown: CancellationToken,
    ) {
        let mut wake = ds.change_notifications();
        let every = if wake.is_live() {
            NOTIFIED_POLL_INTERVAL
        } else {
            POLL_INTERVAL
        };
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut local = tokio::time::interval(LOCAL_WRITE_CHECK);
        local.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
                _ = wake.changed() => {}
                _ = local.tick() => {
                    if ds.local_write_seq() <= self.local_seq.load(Ordering::SeqCst) {
                        continue;
                    }
                }
            }
            match self.poll_once(&ds, clock.as_ref(), &mut follower).await {
                Ok(()) => {
                    let ix = self.read();
                    spire_telemetry::metrics::entry_index_size(ix.entry_count(), ix.agent_count());
                }
                Err(e) => tracing::warn!(error = %e, "Failed to follow the change log"),
            }
        }
    }

    /// Reads and applies one batch of change-log rows.
    pub async fn poll_once(
        &self,
        ds: &DataStore,
        clock: &dyn Clock,
        follower: &mut ChangeFollower,
    ) -> Result<(), IndexError> {
        // Local writes marked up to here are committed, so this poll reads them (when it
        // reaches the end of the log).
        let seq = ds.local_write_seq();
        let changes = follower.poll(ds, clock.now(), POLL_LIMIT).await?;
        if !follower.take_expired().is_empty() {
            tracing::warn!("Change-log gaps timed out; reloading the authorized-entry index");
            *follower = self.load(ds).await?;
            self.publish(Notification {
                revision: self.revision(),
                all: change::RESYNC,
                agents: HashMap::new(),
            });
            return Ok(());
        }
        let caught_up = changes.len() < POLL_LIMIT as usize;
        if changes.is_empty() {
            self.local_seq.fetch_max(seq, Ordering::SeqCst);
            return Ok(());
        }
        let mut n = Notification::default();
        for c in &changes {
            match c.kind {
                ChangeKind::Entry => {
                    let fresh = ds.get_entry(&c.object_id).await?;
                    let mut ix = self
                        .index
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let old = ix.remove_entry(&c.object_id);
                    let mut affected = old
                        .as_ref()
                        .map(|e| ix.agents_seeing(e))
                        .unwrap_or_default();
                    if let Some(e) = fresh {
                        affected.extend(ix.agents_seeing(&e));
                        ix.upsert_entry(e);
                    }
                    for a in affected {
                        *n.agents.entry(a).or_default() |= change::ENTRIES;
                    }
                }
                ChangeKind::Node => {
                    let Ok(id) = c.object_id.parse::<SpiffeId>() else {
                        continue;
                    };
                    let fresh = ds.get_attested_node(&id).await?;
                    let mut ix = self
                        .index
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    // Only what the agent acts on is announced: its selectors (they decide
                    // alias matches), being banned, created or removed. Serial rotations and
                    // version reports are not.
                    let mask = match fresh {
                        Some(node) => {
                            let mask = match ix.agent(id.as_str()) {
                                None => change::AGENT | change::ENTRIES,
                                Some(o) if o.selectors != node.selectors => {
                                    change::AGENT | change::ENTRIES
                                }
                                Some(o) if o.is_banned() != node.is_banned() => change::AGENT,
                                Some(_) => 0,
                            };
                            ix.upsert_agent(node);
                            mask
                        }
                        None => {
                            ix.remove_agent(id.as_str());
                            change::AGENT
                        }
                    };
                    if mask != 0 {
                        *n.agents.entry(c.object_id.clone()).or_default() |= mask;
                    }
                }
                ChangeKind::Bundle => {
                    if c.object_id == self.trust_domain.as_str() {
                        self.set_bundle(ds.get_bundle(&self.trust_domain).await?);
                        n.all |= change::BUNDLE;
                    } else {
                        n.all |= change::FEDERATED_BUNDLE;
                    }
                }
                ChangeKind::Federation => n.all |= change::FEDERATED_BUNDLE,
            }
        }
        let rev = follower.cursor().max(self.revision());
        self.revision.store(rev, Ordering::Release);
        n.revision = rev;
        if caught_up {
            self.local_seq.fetch_max(seq, Ordering::SeqCst);
        }
        if n.all != 0 || !n.agents.is_empty() {
            self.publish(n);
        }
        Ok(())
    }

    fn publish(&self, n: Notification) {
        // No receivers is fine: nobody is watching.
        let _ = self.notify.send(Arc::new(n));
    }
}

/// `spiffe://<td>/spire/server`.
pub fn server_id(td: &TrustDomain) -> String {
    format!("spiffe://{}/spire/server", td.as_str())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use spire_datastore::{AttestedNode, DataStore, Entry};
    use spire_spiffe::{Selector, Selectors, SpiffeId, SystemClock};

    use super::*;

    fn id(s: &str) -> SpiffeId {
        s.parse().unwrap()
    }

    fn sels(list: &[&str]) -> Selectors {
        list.iter()
            .map(|s| s.parse::<Selector>().unwrap())
            .collect()
    }

    fn node(agent: &str, s: &[&str]) -> AttestedNode {
        AttestedNode {
            spiffe_id: id(agent),
            attestation_type: "x509pop".into(),
            cert_serial_number: "1".into(),
            cert_not_after: 0,
            new_cert_serial_number: String::new(),
            new_cert_not_after: 0,
            can_reattest: true,
            agent_version: String::new(),
            selectors: sels(s),
        }
    }

    #[tokio::test]
    async fn follows_the_change_log_and_names_the_agents_affected() {
        let clock: Arc<dyn spire_spiffe::Clock> = Arc::new(SystemClock);
        let ds = DataStore::open_in_memory(Arc::clone(&clock)).await.unwrap();
        let a = "spiffe://td/spire/agent/a";
        let b = "spiffe://td/spire/agent/b";
        ds.create_attested_node(&node(a, &["x:1"])).await.unwrap();
        let ix = AuthorizedEntries::new("td".parse().unwrap());
        let mut follower = ix.load(&ds).await.unwrap();
        assert_eq!(ix.read().agent_count(), 1);
        let mut rx = ix.subscribe();

        // A new agent, an alias matching only it, an entry below the alias.
        ds.create_attested_node(&node(b, &["x:2"])).await.unwrap();
        ds.create_entry(&Entry::new(
            id("spiffe://td/alias"),
            id("spiffe://td/spire/server"),
            sels(&["x:2"]),
        ))
        .await
        .unwrap();
        let w = ds
            .create_entry(&Entry::new(
                id("spiffe://td/w"),
                id("spiffe://td/alias"),
                sels(&["u:1"]),
            ))
            .await
            .unwrap();
        ix.poll_once(&ds, clock.as_ref(), &mut follower)
            .await
            .unwrap();
        let n = rx.try_recv().unwrap();
        assert_eq!(n.mask_for(b) & change::ENTRIES, change::ENTRIES);
        assert_eq!(n.mask_for(a), 0);
        assert_eq!(n.revision, ds.latest_change_id().await.unwrap());
        assert_eq!(ix.revision(), n.revision);
        let got: Vec<String> = ix
            .authorized_entries(&id(b))
            .iter()
            .map(|e| e.id.clone())
            .collect();
        assert_eq!(got, vec![w.id.clone()]);

        // Agent a gains the selector: it now sees the entry too.
        ds.set_node_selectors(&id(a), &sels(&["x:1", "x:2"]))
            .await
            .unwrap();
        ix.poll_once(&ds, clock.as_ref(), &mut follower)
            .await
            .unwrap();
        let n = rx.try_recv().unwrap();
        assert_eq!(n.mask_for(a), change::AGENT | change::ENTRIES);
        assert_eq!(ix.authorized_entries(&id(a)).len(), 1);

        // A version report is not announced; a ban is.
        let upd = spire_datastore::NodeUpdate {
            agent_version: Some("1".into()),
            ..Default::default()
        };
        ds.update_attested_node(&id(a), &upd).await.unwrap();
        ix.poll_once(&ds, clock.as_ref(), &mut follower)
            .await
            .unwrap();
        assert!(rx.try_recv().is_err());
        ds.ban_attested_node(&id(a)).await.unwrap();
        ix.poll_once(&ds, clock.as_ref(), &mut follower)
            .await
            .unwrap();
        assert_eq!(rx.try_recv().unwrap().mask_for(a), change::AGENT);

        // Deleting the entry is announced to both agents that saw it.
        ds.delete_entry(&w.id).await.unwrap();
        ix.poll_once(&ds, clock.as_ref(), &mut follower)
            .await
            .unwrap();
        let n = rx.try_recv().unwrap();
        assert_eq!(n.mask_for(a) & change::ENTRIES, change::ENTRIES);
        assert_eq!(n.mask_for(b) & change::ENTRIES, change::ENTRIES);
        assert!(ix.authorized_entries(&id(b)).is_empty());
    }

    #[tokio::test]
    async fn agent_records_and_bundle_are_fresh_only_after_local_writes_are_applied() {
        let clock: Arc<dyn spire_spiffe::Clock> = Arc::new(SystemClock);
        let ds = DataStore::open_in_memory(Arc::clone(&clock)).await.unwrap();
        let a = "spiffe://td/spire/agent/a";
        ds.create_attested_node(&node(a, &["x:1"])).await.unwrap();
        let ix = AuthorizedEntries::new("td".parse().unwrap());
        // Not loaded yet: never fresh.
        assert!(ix.fresh_agent(&ds, a).is_none());
        let mut follower = ix.load(&ds).await.unwrap();
        assert_eq!(ix.fresh_agent(&ds, a).unwrap().cert_serial_number, "1");
        assert!(ix.fresh_bundle(&ds).is_none());

        // A ban through this store: the index is stale until it has applied the change.
        ds.ban_attested_node(&id(a)).await.unwrap();
        assert!(ix.fresh_agent(&ds, a).is_none());
        ix.poll_once(&ds, clock.as_ref(), &mut follower)
            .await
            .unwrap();
        let n = ix.fresh_agent(&ds, a).unwrap();
        assert!(n.is_banned());

        // A bundle write: stale until applied, then the new bundle is served.
        let mut b = spire_datastore::Bundle::new("td".parse().unwrap());
        b.refresh_hint = 7;
        ds.set_bundle(&b).await.unwrap();
        assert!(ix.fresh_bundle(&ds).is_none());
        assert!(ix.fresh_agent(&ds, a).is_some());
        ix.poll_once(&ds, clock.as_ref(), &mut follower)
            .await
            .unwrap();
        assert_eq!(ix.fresh_bundle(&ds).unwrap().refresh_hint, 7);
    }
}
