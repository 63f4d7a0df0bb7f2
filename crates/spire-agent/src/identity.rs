//! The contract between the side of the agent that talks to the server (attestation, entry
//! sync, SVID signing, rotation: `manager`) and the side that serves workloads (Workload API,
//! SDS, delegated identity: `endpoints`).
//!
//! The manager publishes an immutable [`IdentitySnapshot`] through a `tokio::sync::watch`
//! channel each time anything a workload can see changes (entries, SVIDs, bundles). Endpoints
//! hold a receiver, filter the snapshot by the caller's selectors with
//! [`IdentitySnapshot::identities_for`], and send only when their view changed. JWT-SVIDs are
//! minted on demand through [`JwtSvidSource`].

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;
use spire_spiffe::{Selectors, SpiffeId, SpiffeIdError, TrustDomain};

/// A registration entry ID, shared: the entry, the manager's map, the snapshot's map and the
/// entry's SVID all hold the same allocation (cloning is a reference-count increment), so an
/// agent holding many SVIDs does not keep several copies of every ID (BENCHMARKS.md P5).
/// Ordered, compared and hashed as the string; a map keyed by `EntryId` is looked up by `&str`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId(Arc<str>);

impl EntryId {
    /// The ID as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for EntryId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for EntryId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for EntryId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for EntryId {
    fn from(s: &str) -> Self {
        EntryId(Arc::from(s))
    }
}

impl From<String> for EntryId {
    fn from(s: String) -> Self {
        EntryId(Arc::from(s))
    }
}

impl From<&String> for EntryId {
    fn from(s: &String) -> Self {
        EntryId(Arc::from(s.as_str()))
    }
}

impl From<EntryId> for String {
    fn from(id: EntryId) -> Self {
        id.0.as_ref().to_owned()
    }
}

impl PartialEq<str> for EntryId {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for EntryId {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for EntryId {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<EntryId> for str {
    fn eq(&self, other: &EntryId) -> bool {
        *self == *other.0
    }
}

impl PartialEq<EntryId> for &str {
    fn eq(&self, other: &EntryId) -> bool {
        **self == *other.0
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl serde::Serialize for EntryId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A SPIFFE ID shared by reference count: an entry's SPIFFE ID is held once for the entry and
/// its SVID, and entries with the same parent share one parent ID (BENCHMARKS.md P5).
/// Dereferences to [`SpiffeId`]; compared, ordered and hashed as the ID.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SharedSpiffeId(Arc<SpiffeId>);

impl SharedSpiffeId {
    /// Whether both hold the same allocation.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl Deref for SharedSpiffeId {
    type Target = SpiffeId;
    fn deref(&self) -> &SpiffeId {
        &self.0
    }
}

impl AsRef<SpiffeId> for SharedSpiffeId {
    fn as_ref(&self) -> &SpiffeId {
        &self.0
    }
}

impl From<SpiffeId> for SharedSpiffeId {
    fn from(id: SpiffeId) -> Self {
        SharedSpiffeId(Arc::new(id))
    }
}

impl std::str::FromStr for SharedSpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, SpiffeIdError> {
        s.parse::<SpiffeId>().map(Self::from)
    }
}

impl PartialEq<SpiffeId> for SharedSpiffeId {
    fn eq(&self, other: &SpiffeId) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<SharedSpiffeId> for SpiffeId {
    fn eq(&self, other: &SharedSpiffeId) -> bool {
        *self == *other.0
    }
}

impl fmt::Display for SharedSpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl fmt::Debug for SharedSpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// An authorized registration entry as the agent knows it (after sync).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryView {
    /// The entry ID assigned by the server.
    pub entry_id: EntryId,
    /// The SPIFFE ID a workload matching this entry receives.
    pub spiffe_id: SharedSpiffeId,
    /// The parent ID (agent or node alias).
    pub parent_id: SharedSpiffeId,
    /// The entry's selectors: a workload matches when these are a subset of its own.
    pub selectors: Selectors,
    /// Foreign trust domains whose bundles a matching workload receives.
    pub federates_with: Vec<TrustDomain>,
    /// The hint (empty if none); duplicates are de-duplicated, oldest entry wins.
    pub hint: String,
    /// Creation time (seconds since epoch), used to pick the oldest entry on duplicate hints.
    pub created_at: i64,
    /// The entry revision seen at the server.
    pub revision_number: i64,
    /// Entry-level X.509-SVID TTL in seconds (0 = server default).
    pub x509_svid_ttl: i32,
    /// Entry-level JWT-SVID TTL in seconds (0 = server default).
    pub jwt_svid_ttl: i32,
    /// Whether JWT-SVIDs for this entry carry a jti (and must not be cached).
    pub jwt_svid_include_jti: bool,
    /// Whether the agent skips pre-fetching an X.509-SVID for this entry.
    pub disable_x509_svid_prefetch: bool,
    /// Admin entry.
    pub admin: bool,
    /// Downstream entry.
    pub downstream: bool,
}

/// An X.509-SVID held by the agent for one entry, with its private key.
#[derive(Clone)]
pub struct WorkloadX509Svid {
    /// The entry this SVID was issued for.
    pub entry_id: EntryId,
    /// The SPIFFE ID in the certificate's URI SAN (the entry's, shared with it).
    pub spiffe_id: SharedSpiffeId,
    /// DER certificates, leaf first (intermediates follow).
    pub cert_chain: Vec<Vec<u8>>,
    /// PKCS#8 DER private key. Never logged.
    pub private_key_pkcs8: Arc<zeroize::Zeroizing<Vec<u8>>>,
    /// The leaf's NotBefore.
    pub not_before: SystemTime,
    /// The leaf's NotAfter.
    pub expires_at: SystemTime,
}

impl fmt::Debug for WorkloadX509Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadX509Svid")
            .field("entry_id", &self.entry_id)
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A trust bundle as the endpoints need it: X.509 authorities (DER) and the JWKS JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleView {
    /// The bundle's trust domain.
    pub trust_domain: TrustDomain,
    /// X.509 authorities, DER.
    pub x509_authorities: Vec<Vec<u8>>,
    /// The full bundle, which carries the JWT authorities.
    pub bundle: spire_spiffe::Bundle,
}

/// One identity a workload is entitled to: its entry and (once signed) its SVID.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The entry.
    pub entry: Arc<EntryView>,
    /// The SVID, `None` until the manager got it signed.
    pub svid: Option<Arc<WorkloadX509Svid>>,
}

/// Everything a workload can be given, at one instant. Immutable once published.
#[derive(Debug, Clone)]
pub struct IdentitySnapshot {
    /// Increases by one with every publication.
    pub revision: u64,
    /// The agent's trust domain.
    pub trust_domain: TrustDomain,
    /// The local trust bundle (`None` only before the first sync).
    pub bundle: Option<Arc<BundleView>>,
    /// Federated bundles by trust domain.
    pub federated_bundles: BTreeMap<TrustDomain, Arc<BundleView>>,
    /// All authorized entries with their SVIDs, keyed by entry ID (look up with `&str`).
    pub identities: BTreeMap<EntryId, Identity>,
}

impl IdentitySnapshot {
    /// An empty snapshot (before the first sync).
    pub fn empty(trust_domain: TrustDomain) -> Self {
        Self {
            revision: 0,
            trust_domain,
            bundle: None,
            federated_bundles: BTreeMap::new(),
            identities: BTreeMap::new(),
        }
    }

    /// The entries whose selectors are a subset of `selectors`, ordered by entry ID, with
    /// duplicate non-empty hints de-duplicated (the oldest entry keeps its place).
    pub fn entries_for(&self, selectors: &Selectors) -> Vec<&Identity> {
        let matching: Vec<&Identity> = self
            .identities
            .values()
            .filter(|id| id.entry.selectors.is_subset_of(selectors))
            .collect();
        let mut oldest_by_hint: BTreeMap<&str, (&i64, &str)> = BTreeMap::new();
        for id in &matching {
            if id.entry.hint.is_empty() {
                continue;
            }
            let key = (&id.entry.created_at, id.entry.entry_id.as_str());
            oldest_by_hint
                .entry(id.entry.hint.as_str())
                .and_modify(|cur| {
                    if key < *cur {
                        *cur = key;
                    }
                })
                .or_insert(key);
        }
        matching
            .into_iter()
            .filter(|id| {
                id.entry.hint.is_empty()
                    || oldest_by_hint
                        .get(id.entry.hint.as_str())
                        .is_some_and(|(_, eid)| *eid == id.entry.entry_id.as_str())
            })
            .collect()
    }

    /// The signed X.509-SVIDs for a caller with `selectors`, in the order of
    /// [`Self::entries_for`]. Entries whose SVID is not signed yet are left out.
    pub fn x509_svids_for(&self, selectors: &Selectors) -> Vec<Arc<WorkloadX509Svid>> {
        self.entries_for(selectors)
            .into_iter()
            .filter_map(|id| id.svid.clone())
            .collect()
    }

    /// The federated bundles a caller with `selectors` receives: those named in the
    /// `federates_with` of its matching entries and known to the agent.
    pub fn federated_bundles_for(&self, selectors: &Selectors) -> Vec<Arc<BundleView>> {
        let mut tds: Vec<&TrustDomain> = self
            .entries_for(selectors)
            .into_iter()
            .flat_map(|id| id.entry.federates_with.iter())
            .collect();
        tds.sort();
        tds.dedup();
        tds.into_iter()
            .filter_map(|td| self.federated_bundles.get(td).cloned())
            .collect()
    }
}

/// A JWT-SVID minted for a workload.
#[derive(Clone)]
pub struct JwtSvid {
    /// The subject.
    pub spiffe_id: SpiffeId,
    /// The compact JWS. Never logged.
    pub token: String,
    /// The token's exp.
    pub expires_at: SystemTime,
    /// The hint of the entry it was minted for.
    pub hint: String,
}

impl fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Why a JWT-SVID could not be minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtSvidError {
    /// The server could not be reached or refused; the Workload API answers Unavailable.
    #[error("could not mint JWT-SVID: {0}")]
    Unavailable(String),
}

/// Mints (or returns a cached) JWT-SVID for an authorized entry.
pub trait JwtSvidSource: Send + Sync + 'static {
    /// A JWT-SVID for `entry` with the given audiences (non-empty). Implementations cache per
    /// (SPIFFE ID, sorted audiences) until half-life, unless the entry asks for a jti.
    fn fetch_jwt_svid(
        &self,
        entry: Arc<EntryView>,
        audiences: Vec<String>,
    ) -> BoxFuture<'static, Result<JwtSvid, JwtSvidError>>;

    /// How many JWT-SVIDs the source holds cached (`Debug.GetInfo`); 0 for sources without a
    /// cache.
    fn cached_count(&self) -> usize {
        0
    }
}

/// The selector sets of the workloads currently subscribed to the agent (Workload API streams,
/// SDS streams, delegated-identity subscriptions).
///
/// The manager signs X.509-SVIDs for at most `x509_svid_cache_max_size` entries ahead of time;
/// beyond that limit it also signs for every entry that matches an active subscriber, so a
/// workload that is connected always gets its SVIDs (SPIRE's LRU cache does the same with its
/// subscriber-driven "SVID update" path). Endpoints call [`SubscriberRegistry::register`] per
/// stream and keep the guard alive for the stream's lifetime; the manager reads
/// [`SubscriberRegistry::selector_sets`] and waits on [`SubscriberRegistry::changed`].
///
/// A registration wakes the manager only while it has said, with
/// [`SubscriberRegistry::set_wanted`], that subscribers change what it signs (some entries are
/// beyond the limit or have prefetch disabled); otherwise every Workload API call would cost a
/// pass of the manager over all cached entries.
#[derive(Debug, Default)]
pub struct SubscriberRegistry {
    inner: std::sync::Mutex<SubscriberSets>,
    notify: tokio::sync::Notify,
    wanted: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct SubscriberSets {
    next_id: u64,
    sets: BTreeMap<u64, Selectors>,
}

impl SubscriberRegistry {
    /// A registry with no subscribers.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Records a subscriber with the given selectors until the returned guard is dropped, and
    /// wakes the manager if it wants to hear of subscribers.
    pub fn register(self: &Arc<Self>, selectors: Selectors) -> SubscriptionGuard {
        let id = {
            let mut g = self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            g.next_id += 1;
            let id = g.next_id;
            g.sets.insert(id, selectors);
            id
        };
        // Read after the insert: a manager that turns `wanted` on reads the sets after
        // that, so a subscriber is either in its read or sees the flag and wakes it.
        if self.wanted.load(std::sync::atomic::Ordering::SeqCst) {
            self.notify.notify_waiters();
            self.notify.notify_one();
        }
        SubscriptionGuard {
            registry: Arc::clone(self),
            id,
        }
    }

    /// Whether new subscribers should wake the manager. Set before reading
    /// [`SubscriberRegistry::selector_sets`], so no registration is missed.
    pub fn set_wanted(&self, wanted: bool) {
        self.wanted
            .store(wanted, std::sync::atomic::Ordering::SeqCst);
    }

    /// The selector sets of all current subscribers (one per subscription; duplicates kept).
    pub fn selector_sets(&self) -> Vec<Selectors> {
        let g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.sets.values().cloned().collect()
    }

    /// Number of current subscriptions.
    pub fn len(&self) -> usize {
        let g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.sets.len()
    }

    /// True when nobody is subscribed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Completes when a subscriber was added since the last completed call (one stored permit).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }

    fn remove(&self, id: u64) {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.sets.remove(&id);
    }
}

/// Keeps a subscription registered; dropping it removes the subscription.
#[derive(Debug)]
pub struct SubscriptionGuard {
    registry: Arc<SubscriberRegistry>,
    id: u64,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

/// The agent's own state as `Debug.GetInfo` reports it: when it started and when the manager
/// last synced with the server successfully. Shared by the manager (writer) and the admin
/// endpoints (reader).
#[derive(Debug)]
pub struct AgentStatus {
    started_at: SystemTime,
    /// Seconds since the Unix epoch; 0 until the first successful sync.
    last_sync_success: std::sync::atomic::AtomicI64,
}

impl AgentStatus {
    /// A status for an agent that started at `started_at` and has not synced yet.
    pub fn new(started_at: SystemTime) -> Arc<Self> {
        Arc::new(Self {
            started_at,
            last_sync_success: std::sync::atomic::AtomicI64::new(0),
        })
    }

    /// When the agent started.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// Records a successful sync (entries and bundles) at `at`.
    pub fn record_sync_success(&self, at: SystemTime) {
        self.last_sync_success.store(
            spire_spiffe::to_unix_secs(at),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The last successful sync, `None` before the first.
    pub fn last_sync_success(&self) -> Option<SystemTime> {
        match self
            .last_sync_success
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            0 => None,
            secs => Some(spire_spiffe::from_unix_secs(secs)),
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    fn sel(s: &str) -> Selectors {
        let mut set = Selectors::new();
        set.insert(s.parse().unwrap());
        set
    }

    #[test]
    fn registrations_wake_the_manager_only_while_it_wants_them() {
        let reg = SubscriberRegistry::new();
        let quiet = reg.register(sel("unix:uid:1"));
        assert!(
            reg.changed().now_or_never().is_none(),
            "not wanted: no wake"
        );
        assert_eq!(reg.selector_sets(), [sel("unix:uid:1")], "still recorded");

        reg.set_wanted(true);
        let loud = reg.register(sel("unix:uid:2"));
        assert!(reg.changed().now_or_never().is_some(), "wanted: woken");
        assert_eq!(reg.len(), 2);

        reg.set_wanted(false);
        drop(reg.register(sel("unix:uid:3")));
        assert!(reg.changed().now_or_never().is_none());
        drop((quiet, loud));
        assert!(reg.is_empty());
    }
}
