//! The CA manager: X.509 CA and JWT key in A/B slots, rotation, bundle publication, the server's
//! own SVID, and every signing operation of the server.
//!
//! Mirrors `pkg/server/ca/manager/manager.go` and `pkg/server/svid/rotator.go`:
//! - each kind has a *current* slot and a *next* slot; the next slot holds a PREPARED authority
//!   or the OLD one that was active before;
//! - a new authority is prepared when the current one has less than `min(L/2, 30d)` left and
//!   activated when it has less than `min(L/6, 7d)` left (L = its lifetime);
//! - a prepared authority is appended to the local bundle when it is prepared, i.e. before it
//!   signs anything;
//! - bundle authorities are pruned 24 h after they expire;
//! - the journal (slots and states) is written to the datastore after every change.
//!
//! Decisions use the injected [`Clock`]; the loop in [`CaManager::run`] ticks with
//! `tokio::time`, so tests drive it with paused time and a `FakeClock`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use spire_crypto::x509::{CaSubject, CaTemplate, SvidTemplate, X509Authority};
use spire_crypto::{KeyManager, KeyType, PrivateKey, PublicKey, Signer};
use spire_datastore as ds;
use spire_spiffe::{Clock, SpiffeId, TrustDomain, from_unix_secs, to_unix_secs};
use tokio::sync::{Mutex, watch};

use super::journal::{self, Journal, JwtRecord, X509Record};
use crate::plugin::upstreamauthority::UpstreamAuthority;

/// How often the rotation loop looks at the authorities (SPIRE: 10 s).
pub const ROTATION_INTERVAL: Duration = Duration::from_secs(10);
/// How often the upstream bundle is polled (SPIRE's `spire` upstream: 5 s).
pub const UPSTREAM_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Bundle authorities are removed this long after they expire.
pub const BUNDLE_PRUNE_AFTER: Duration = Duration::from_secs(24 * 3600);
const THIRTY_DAYS: Duration = Duration::from_secs(30 * 24 * 3600);
const SEVEN_DAYS: Duration = Duration::from_secs(7 * 24 * 3600);
/// The journal key of a manager started with [`CaManager::start`] (a single server), and the
/// legacy key a per-server journal falls back to when it has none of its own yet.
const JOURNAL_ID: &str = "server";

/// Settings of the CA manager (from the `server {}` block).
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// `ca_key_type`.
    pub ca_key_type: KeyType,
    /// `jwt_key_type` (defaults to `ca_key_type`).
    pub jwt_key_type: KeyType,
    /// `ca_ttl`: lifetime of the X.509 CA and of the JWT keys.
    pub ca_ttl: Duration,
    /// `ca_subject`.
    pub ca_subject: CaSubject,
    /// `jwt_issuer`.
    pub jwt_issuer: Option<String>,
    /// `default_x509_svid_ttl`.
    pub default_x509_svid_ttl: Duration,
    /// `default_jwt_svid_ttl`.
    pub default_jwt_svid_ttl: Duration,
    /// `agent_ttl` (defaults to `default_x509_svid_ttl`).
    pub agent_ttl: Duration,
    /// `disable_jwt_svids`.
    pub disable_jwt_svids: bool,
}

/// Errors of the CA manager.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// No X.509 CA is active yet.
    #[error("no active X.509 authority")]
    NoX509Authority,
    /// No JWT key is active yet.
    #[error("no active JWT authority")]
    NoJwtAuthority,
    /// JWT-SVIDs are disabled by `disable_jwt_svids`.
    #[error("JWT-SVIDs are disabled on this server (disable_jwt_svids)")]
    JwtDisabled,
    /// The KeyManager failed.
    #[error("key manager")]
    KeyManager(#[from] spire_crypto::KeyManagerError),
    /// Signing a certificate failed.
    #[error("x509 signing")]
    X509(#[from] spire_crypto::x509::X509Error),
    /// A key operation failed.
    #[error("key operation")]
    Key(#[from] spire_crypto::KeyError),
    /// Signing a JWT failed.
    #[error("jwt signing")]
    Jwt(#[from] spire_crypto::jwt::JwtError),
    /// The datastore failed.
    #[error("datastore")]
    DataStore(#[from] ds::Error),
    /// The upstream authority failed.
    #[error("upstream authority: {0}")]
    Upstream(String),
    /// A LocalAuthority request names the wrong authority or comes in the wrong state.
    #[error("{0}")]
    InvalidRequest(String),
    /// The authority named by a LocalAuthority request does not exist.
    #[error("{0}")]
    NotFound(String),
}

/// State of a slot's authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotStatus {
    /// Published in the bundle, not yet signing.
    Prepared,
    /// Signing.
    Active,
    /// Was active; still in the bundle until it expires or is revoked.
    Old,
}

impl SlotStatus {
    fn as_str(self) -> &'static str {
        match self {
            SlotStatus::Prepared => "prepared",
            SlotStatus::Active => "active",
            SlotStatus::Old => "old",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "prepared" => SlotStatus::Prepared,
            "active" => SlotStatus::Active,
            "old" => SlotStatus::Old,
            _ => return None,
        })
    }
}

/// An authority as the LocalAuthority API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityState {
    /// X.509: hex subject key ID; JWT: the `kid`.
    pub authority_id: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// X.509 with an upstream authority: the upstream signer's subject key ID (hex).
    pub upstream_authority_subject_key_id: String,
}

/// A signed X509-SVID: leaf first, then the intermediates up to (not including) the root.
pub type X509SvidChain = Vec<Vec<u8>>;

/// A minted JWT-SVID.
#[derive(Clone)]
pub struct JwtSvid {
    /// The compact JWS.
    pub token: String,
    /// `iat`.
    pub issued_at: i64,
    /// `exp`.
    pub expires_at: i64,
}

impl fmt::Debug for JwtSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSvid")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The server's own X509-SVID (`spiffe://<td>/spire/server`) and its key, for the TLS listener.
pub struct ServerSvid {
    /// Leaf first, then intermediates.
    pub chain: Vec<Vec<u8>>,
    /// The private key.
    pub key: Arc<PrivateKey>,
    /// NotBefore (Unix seconds).
    pub not_before: i64,
    /// NotAfter (Unix seconds).
    pub not_after: i64,
}

impl fmt::Debug for ServerSvid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSvid")
            .field("chain_len", &self.chain.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    A,
    B,
}

impl Slot {
    fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    fn x509_key_id(self) -> &'static str {
        match self {
            Slot::A => "x509-CA-A",
            Slot::B => "x509-CA-B",
        }
    }

    fn jwt_key_id(self) -> &'static str {
        match self {
            Slot::A => "JWT-Signer-A",
            Slot::B => "JWT-Signer-B",
        }
    }

    fn parse(s: &str) -> Option<Slot> {
        match s {
            "A" => Some(Slot::A),
            "B" => Some(Slot::B),
            _ => None,
        }
    }
}

/// An X.509 CA in a slot.
#[derive(Debug, Clone)]
struct X509Slot {
    slot: Slot,
    status: SlotStatus,
    authority: Arc<X509Authority>,
    /// Certificates after the CA certificate up to (excluding) the upstream root.
    upstream_chain: Vec<Vec<u8>>,
    upstream_authority_id: String,
}

impl X509Slot {
    fn id(&self) -> String {
        hex::encode(self.authority.subject_key_id())
    }

    fn not_before(&self) -> SystemTime {
        SystemTime::from(self.authority.not_before())
    }

    fn not_after(&self) -> SystemTime {
        SystemTime::from(self.authority.not_after())
    }

    /// The chain an SVID signed by this CA carries after its leaf.
    fn intermediates(&self) -> Vec<Vec<u8>> {
        if self.upstream_chain.is_empty() && self.upstream_authority_id.is_empty() {
            Vec::new()
        } else {
            let mut v = vec![self.authority.cert_der().to_vec()];
            v.extend(self.upstream_chain.iter().cloned());
            v
        }
    }
}

/// A JWT key in a slot.
#[derive(Debug, Clone)]
struct JwtSlot {
    slot: Slot,
    status: SlotStatus,
    kid: String,
    signer: Arc<dyn Signer>,
    issued_at: i64,
    not_after: i64,
}

/// An X.509 CA or a JWT key in a slot: what the slot logic shared by both kinds needs.
trait SlotAuthority: Clone + Send + Sync {
    /// This kind's entry in the bundle.
    type Published;
    /// Messages of taint and revoke.
    const TEXT: KindText;
    /// This kind's slots.
    fn pair(slots: &Slots) -> &Pair<Self>;
    /// This kind's slots, to change.
    fn pair_mut(slots: &mut Slots) -> &mut Pair<Self>;
    /// This kind's entries in `bundle`.
    fn published(bundle: &mut ds::Bundle) -> &mut Vec<Self::Published>;
    /// Whether `entry` is this authority's entry in the bundle.
    fn publishes(&self, entry: &Self::Published) -> bool;
    /// The tainted flag of a bundle entry.
    fn tainted(entry: &mut Self::Published) -> &mut bool;
    fn slot(&self) -> Slot;
    fn status(&self) -> SlotStatus;
    fn set_status(&mut self, status: SlotStatus);
    /// X.509: hex subject key ID; JWT: the `kid`.
    fn authority_id(&self) -> String;
    fn state(&self) -> AuthorityState;
    /// Whether the authority is still valid at `now`.
    fn valid_at(&self, now: SystemTime) -> bool;
    /// When to prepare and when to activate this authority's successor.
    fn thresholds(&self) -> (SystemTime, SystemTime);
    /// Logs that this authority was activated.
    fn log_activated(&self);
}

/// The messages of taint and revoke that name the kind of authority.
struct KindText {
    not_found: &'static str,
    already_tainted: &'static str,
    revoke_untainted: &'static str,
}

impl SlotAuthority for X509Slot {
    type Published = ds::X509Authority;
    const TEXT: KindText = KindText {
        not_found: "no ca found with provided authority ID",
        already_tainted: "root CA is already tainted",
        revoke_untainted: "it is not possible to revoke an untainted root CA",
    };
    fn pair(slots: &Slots) -> &Pair<Self> {
        &slots.x509
    }
    fn pair_mut(slots: &mut Slots) -> &mut Pair<Self> {
        &mut slots.x509
    }
    fn published(bundle: &mut ds::Bundle) -> &mut Vec<ds::X509Authority> {
        &mut bundle.x509_authorities
    }
    fn publishes(&self, entry: &ds::X509Authority) -> bool {
        entry.der == self.authority.cert_der()
    }
    fn tainted(entry: &mut ds::X509Authority) -> &mut bool {
        &mut entry.tainted
    }
    fn slot(&self) -> Slot {
        self.slot
    }
    fn status(&self) -> SlotStatus {
        self.status
    }
    fn set_status(&mut self, status: SlotStatus) {
        self.status = status;
    }
    fn authority_id(&self) -> String {
        self.id()
    }
    fn state(&self) -> AuthorityState {
        AuthorityState {
            authority_id: self.id(),
            expires_at: self.authority.not_after().unix_timestamp(),
            upstream_authority_subject_key_id: self.upstream_authority_id.clone(),
        }
    }
    fn valid_at(&self, now: SystemTime) -> bool {
        self.not_after() > now
    }
    fn thresholds(&self) -> (SystemTime, SystemTime) {
        thresholds(self.not_before(), self.not_after())
    }
    fn log_activated(&self) {
        tracing::info!(slot = self.slot.name(), authority_id = %self.id(), "X509 CA activated");
    }
}

impl SlotAuthority for JwtSlot {
    type Published = ds::JwtAuthority;
    const TEXT: KindText = KindText {
        not_found: "no JWT authority found with provided authority ID",
        already_tainted: "JWT authority is already tainted",
        revoke_untainted: "it is not possible to revoke an untainted JWT authority",
    };
    fn pair(slots: &Slots) -> &Pair<Self> {
        &slots.jwt
    }
    fn pair_mut(slots: &mut Slots) -> &mut Pair<Self> {
        &mut slots.jwt
    }
    fn published(bundle: &mut ds::Bundle) -> &mut Vec<ds::JwtAuthority> {
        &mut bundle.jwt_authorities
    }
    fn publishes(&self, entry: &ds::JwtAuthority) -> bool {
        entry.key_id == self.kid
    }
    fn tainted(entry: &mut ds::JwtAuthority) -> &mut bool {
        &mut entry.tainted
    }
    fn slot(&self) -> Slot {
        self.slot
    }
    fn status(&self) -> SlotStatus {
        self.status
    }
    fn set_status(&mut self, status: SlotStatus) {
        self.status = status;
    }
    fn authority_id(&self) -> String {
        self.kid.clone()
    }
    fn state(&self) -> AuthorityState {
        AuthorityState {
            authority_id: self.kid.clone(),
            expires_at: self.not_after,
            upstream_authority_subject_key_id: String::new(),
        }
    }
    fn valid_at(&self, now: SystemTime) -> bool {
        self.not_after > to_unix_secs(now)
    }
    fn thresholds(&self) -> (SystemTime, SystemTime) {
        thresholds(
            from_unix_secs(self.issued_at),
            from_unix_secs(self.not_after),
        )
    }
    fn log_activated(&self) {
        tracing::info!(slot = self.slot.name(), authority_id = %self.kid, "JWT key activated");
    }
}

/// The two slots of one kind of authority: the current (active) one and the next one, which
/// holds a PREPARED authority or the OLD one that was active before.
#[derive(Debug)]
struct Pair<A> {
    current: Option<A>,
    next: Option<A>,
}

impl<A> Default for Pair<A> {
    fn default() -> Self {
        Pair {
            current: None,
            next: None,
        }
    }
}

impl<A: SlotAuthority> Pair<A> {
    /// Both slots, current first.
    fn iter(&self) -> impl Iterator<Item = &A> {
        [&self.current, &self.next].into_iter().flatten()
    }

    /// The next slot's authority when it is prepared.
    fn prepared(&self) -> Option<&A> {
        self.next
            .as_ref()
            .filter(|n| n.status() == SlotStatus::Prepared)
    }

    /// The slot a new authority is prepared in.
    fn next_slot(&self) -> Slot {
        self.current.as_ref().map_or(Slot::A, |c| c.slot().other())
    }

    /// Active, prepared and old authorities.
    fn states(
        &self,
    ) -> (
        Option<AuthorityState>,
        Option<AuthorityState>,
        Option<AuthorityState>,
    ) {
        let active = self.current.as_ref().map(A::state);
        let old = self
            .next
            .as_ref()
            .filter(|n| n.status() == SlotStatus::Old)
            .map(A::state);
        (active, self.prepared().map(A::state), old)
    }

    /// Makes the next slot's authority current and the current one old.
    fn activate(&mut self) {
        if let Some(mut next) = self.next.take() {
            next.set_status(SlotStatus::Active);
            next.log_activated();
            if let Some(mut old) = self.current.take() {
                old.set_status(SlotStatus::Old);
                self.next = Some(old);
            }
            self.current = Some(next);
        }
    }

    /// Activates the prepared authority, which must be `authority_id`; returns the new
    /// current authority.
    fn activate_prepared(&mut self, authority_id: &str) -> Result<Option<AuthorityState>, CaError> {
        match self.prepared() {
            None => {
                return Err(CaError::InvalidRequest(
                    "no prepared authority found".into(),
                ));
            }
            Some(n) if n.authority_id() != authority_id => {
                return Err(CaError::InvalidRequest(format!(
                    "unexpected authority ID {authority_id:?}: the prepared authority is {:?}",
                    n.authority_id()
                )));
            }
            Some(_) => {}
        }
        self.activate();
        Ok(self.current.as_ref().map(A::state))
    }

    /// The old authority `authority_id`, the only one that may be tainted or revoked.
    fn old(&self, authority_id: &str) -> Result<&A, CaError> {
        if authority_id.is_empty() {
            return Err(CaError::InvalidRequest("no authority ID provided".into()));
        }
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.authority_id() == authority_id)
        {
            return Err(CaError::InvalidRequest(
                "unable to use current authority: only the old authority can be tainted or revoked"
                    .into(),
            ));
        }
        match self.next.as_ref() {
            Some(n) if n.status() == SlotStatus::Old && n.authority_id() == authority_id => Ok(n),
            Some(n) if n.authority_id() == authority_id => Err(CaError::InvalidRequest(
                "only the old authority can be tainted or revoked".into(),
            )),
            _ => Err(CaError::NotFound(format!(
                "no old authority with ID {authority_id:?}"
            ))),
        }
    }

    /// One rotation check at `now`: replaces an expired current authority (with the prepared
    /// one when it is still valid, else with a new one from `prepare`), otherwise prepares and
    /// activates the successor at the thresholds. Returns whether anything changed.
    async fn rotate<F, Fut>(&mut self, now: SystemTime, prepare: F) -> Result<bool, CaError>
    where
        F: FnOnce(Slot) -> Fut,
        Fut: Future<Output = Result<A, CaError>>,
    {
        let Some(cur) = self.current.clone().filter(|c| c.valid_at(now)) else {
            if !self.prepared().is_some_and(|n| n.valid_at(now)) {
                self.next = Some(prepare(self.next_slot()).await?);
            }
            self.activate();
            return Ok(true);
        };
        let mut changed = false;
        let (prepare_at, activate_at) = cur.thresholds();
        if self.prepared().is_none() && now >= prepare_at {
            self.next = Some(prepare(cur.slot().other()).await?);
            changed = true;
        }
        if self.prepared().is_some() && now >= activate_at {
            self.activate();
            changed = true;
        }
        Ok(changed)
    }
}

#[derive(Debug, Default)]
struct Slots {
    x509: Pair<X509Slot>,
    jwt: Pair<JwtSlot>,
}

#[derive(Debug, Default)]
struct Active {
    x509: Option<X509Slot>,
    jwt: Option<JwtSlot>,
}

/// The CA manager. Shared as `Arc<CaManager>`.
pub struct CaManager {
    config: CaConfig,
    clock: Arc<dyn Clock>,
    key_manager: Arc<dyn KeyManager>,
    upstream: Option<Arc<dyn UpstreamAuthority>>,
    datastore: ds::DataStore,
    slots: Mutex<Slots>,
    active: ArcSwap<Active>,
    server_svid: watch::Sender<Option<Arc<ServerSvid>>>,
    bundle_seq: watch::Sender<u64>,
    ticks: std::sync::atomic::AtomicU64,
    journal_id: String,
}

impl fmt::Debug for CaManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaManager")
            .field("trust_domain", &self.config.trust_domain)
            .finish_non_exhaustive()
    }
}

impl CaManager {
    /// Creates the manager, loads the journal and makes sure an X.509 CA and a JWT key are
    /// active and the server has an SVID.
    pub async fn start(
        config: CaConfig,
        clock: Arc<dyn Clock>,
        key_manager: Arc<dyn KeyManager>,
        upstream: Option<Arc<dyn UpstreamAuthority>>,
        datastore: ds::DataStore,
    ) -> Result<Arc<CaManager>, CaError> {
        Self::start_with_journal_id(
            config,
            JOURNAL_ID.to_string(),
            clock,
            key_manager,
            upstream,
            datastore,
        )
        .await
    }

    /// [`CaManager::start`] with the journal stored under `journal_id`: every server sharing a
    /// datastore (HA) needs its own. With no journal under that ID yet, the single-server
    /// journal is tried (its slots load only if this server's key manager holds their keys).
    pub async fn start_with_journal_id(
        config: CaConfig,
        journal_id: String,
        clock: Arc<dyn Clock>,
        key_manager: Arc<dyn KeyManager>,
        upstream: Option<Arc<dyn UpstreamAuthority>>,
        datastore: ds::DataStore,
    ) -> Result<Arc<CaManager>, CaError> {
        let (server_svid, _) = watch::channel(None);
        let (bundle_seq, _) = watch::channel(0);
        let m = Arc::new(CaManager {
            config,
            clock,
            key_manager,
            upstream,
            datastore,
            slots: Mutex::new(Slots::default()),
            active: ArcSwap::from_pointee(Active::default()),
            server_svid,
            bundle_seq,
            ticks: std::sync::atomic::AtomicU64::new(0),
            journal_id,
        });
        m.load_journal().await?;
        m.rotate().await?;
        Ok(m)
    }

    /// The configuration.
    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    /// The clock decisions are made with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The rotation loop: checks the authorities every [`ROTATION_INTERVAL`] until `shutdown`
    /// resolves.
    ///
    /// With an upstream that publishes its bundle (`UpstreamAuthority "spire"`), the loop also
    /// polls it every [`UPSTREAM_POLL_INTERVAL`] and appends new upstream authorities to the
    /// local bundle.
    pub async fn run(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut ticker = tokio::time::interval(ROTATION_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let follow = self.upstream.as_ref().is_some_and(|u| u.follows_bundle());
        let mut poll = tokio::time::interval(UPSTREAM_POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = poll.tick(), if follow => {
                    if let Err(e) = self.sync_upstream_bundle().await {
                        tracing::warn!(error = %e, "Failed to follow the upstream bundle");
                    }
                }
                _ = ticker.tick() => {
                    if let Err(e) = self.rotate().await {
                        tracing::error!(error = %e, "CA rotation failed");
                    }
                    self.ticks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
    }

    /// How many rotation checks the loop of [`CaManager::run`] has completed.
    pub fn rotation_ticks(&self) -> u64 {
        self.ticks.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// One rotation step: prepare/activate as the thresholds say, prune the bundle, renew the
    /// server SVID at half-life.
    pub async fn rotate(&self) -> Result<(), CaError> {
        let now = self.clock.now();
        let mut slots = self.slots.lock().await;
        let mut changed = slots
            .x509
            .rotate(now, |slot| self.prepare_x509(slot))
            .await?;
        changed |= slots.jwt.rotate(now, |slot| self.prepare_jwt(slot)).await?;

        if changed {
            self.publish_active(&slots);
            self.save_journal(&slots).await?;
        }
        drop(slots);

        self.prune_bundle(now).await?;
        self.maybe_rotate_server_svid(now, changed)?;
        Ok(())
    }

    // === signing ===

    /// Signs a workload X509-SVID for `public_key`. `ttl` of `None` or zero means
    /// `default_x509_svid_ttl`. The lifetime never exceeds the CA's.
    pub fn sign_x509_svid(
        &self,
        public_key: &PublicKey,
        spiffe_id: &SpiffeId,
        dns_names: &[String],
        ttl: Option<Duration>,
    ) -> Result<X509SvidChain, CaError> {
        let ttl = ttl
            .filter(|t| !t.is_zero())
            .unwrap_or(self.config.default_x509_svid_ttl);
        self.sign_leaf(public_key, spiffe_id, dns_names, ttl)
    }

    /// Signs an agent X509-SVID (`agent_ttl`).
    pub fn sign_agent_svid(
        &self,
        public_key: &PublicKey,
        agent_id: &SpiffeId,
    ) -> Result<X509SvidChain, CaError> {
        self.sign_leaf(public_key, agent_id, &[], self.config.agent_ttl)
    }

    fn sign_leaf(
        &self,
        public_key: &PublicKey,
        spiffe_id: &SpiffeId,
        dns_names: &[String],
        ttl: Duration,
    ) -> Result<X509SvidChain, CaError> {
        let active = self.active.load();
        let ca = active.x509.as_ref().ok_or(CaError::NoX509Authority)?;
        let template = SvidTemplate {
            spiffe_id: spiffe_id.clone(),
            dns_names: dns_names.to_vec(),
            ttl,
        };
        let leaf = ca
            .authority
            .sign_svid(public_key, &template, self.clock.now())?;
        spire_telemetry::metrics::ca_x509_svid_signed();
        let mut chain = vec![leaf];
        chain.extend(ca.intermediates());
        Ok(chain)
    }

    /// Signs a downstream CA (NewDownstreamX509CA): returns the CA chain (the new CA first) and
    /// the X.509 roots of the local bundle.
    pub fn sign_downstream_ca(
        &self,
        public_key: &PublicKey,
        ttl: Option<Duration>,
    ) -> Result<X509SvidChain, CaError> {
        let active = self.active.load();
        let ca = active.x509.as_ref().ok_or(CaError::NoX509Authority)?;
        let template = CaTemplate {
            trust_domain: self.config.trust_domain.clone(),
            subject: self.config.ca_subject.clone(),
            ttl: ttl.filter(|t| !t.is_zero()).unwrap_or(self.config.ca_ttl),
        };
        let cert = ca
            .authority
            .sign_intermediate_ca(public_key, &template, self.clock.now())?;
        spire_telemetry::metrics::ca_x509_ca_signed();
        let mut chain = vec![cert];
        chain.extend(ca.intermediates());
        Ok(chain)
    }

    /// Mints a JWT-SVID. `ttl` of `None` or zero means `default_jwt_svid_ttl`; the token never
    /// outlives the signing key.
    pub fn sign_jwt_svid(
        &self,
        spiffe_id: &SpiffeId,
        audience: &[String],
        ttl: Option<Duration>,
        include_jti: bool,
    ) -> Result<JwtSvid, CaError> {
        if self.config.disable_jwt_svids {
            return Err(CaError::JwtDisabled);
        }
        let active = self.active.load();
        let key = active.jwt.as_ref().ok_or(CaError::NoJwtAuthority)?;
        let ttl = ttl
            .filter(|t| !t.is_zero())
            .unwrap_or(self.config.default_jwt_svid_ttl);
        let now = self.clock.now_unix();
        let expires_at =
            (now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)).min(key.not_after);
        let claims = spire_crypto::jwt::JwtSvidClaims {
            spiffe_id: spiffe_id.clone(),
            audience: audience.to_vec(),
            issued_at: from_unix_secs(now),
            expires_at: from_unix_secs(expires_at),
            issuer: self.config.jwt_issuer.clone(),
            jwt_id: include_jti.then(|| uuid::Uuid::new_v4().simple().to_string()),
        };
        let token = spire_crypto::jwt::sign_jwt_svid(key.signer.as_ref(), &key.kid, None, &claims)?;
        spire_telemetry::metrics::ca_jwt_svid_signed();
        Ok(JwtSvid {
            token,
            issued_at: now,
            expires_at,
        })
    }

    /// The server's current SVID.
    pub fn server_svid(&self) -> Option<Arc<ServerSvid>> {
        self.server_svid.borrow().clone()
    }

    /// Notified whenever the server SVID is renewed.
    pub fn subscribe_server_svid(&self) -> watch::Receiver<Option<Arc<ServerSvid>>> {
        self.server_svid.subscribe()
    }

    /// Notified (with the bundle's sequence number) whenever the manager changes the local
    /// bundle.
    pub fn subscribe_bundle(&self) -> watch::Receiver<u64> {
        self.bundle_seq.subscribe()
    }

    /// The local bundle as stored.
    pub async fn bundle(&self) -> Result<Option<ds::Bundle>, CaError> {
        Ok(self.datastore.get_bundle(&self.config.trust_domain).await?)
    }

    /// Publishes the JWT key of a downstream server (`Bundle.PublishJWTAuthority`): forwarded
    /// to this server's own upstream when it takes JWT keys (nesting deeper than one level),
    /// else appended to the local bundle. Returns the JWT authorities of the bundle the key
    /// went into.
    pub async fn publish_jwt_key(
        &self,
        key: ds::JwtAuthority,
    ) -> Result<Vec<ds::JwtAuthority>, CaError> {
        if let Some(up) = &self.upstream
            && let Some(keys) = up
                .publish_jwt_key(&key)
                .await
                .map_err(|e| CaError::Upstream(e.to_string()))?
        {
            let mut add = ds::Bundle::new(self.config.trust_domain.clone());
            add.jwt_authorities = keys.clone();
            self.datastore.append_bundle(&add).await?;
            self.notify_bundle().await;
            return Ok(keys);
        }
        let mut add = ds::Bundle::new(self.config.trust_domain.clone());
        add.jwt_authorities = vec![key];
        let bundle = self.datastore.append_bundle(&add).await?;
        self.notify_bundle().await;
        Ok(bundle.jwt_authorities)
    }

    /// One poll of the upstream bundle: authorities the local bundle lacks are appended (none
    /// are removed: expired ones are pruned as usual). Returns whether the bundle changed.
    pub async fn sync_upstream_bundle(&self) -> Result<bool, CaError> {
        let Some(up) = &self.upstream else {
            return Ok(false);
        };
        let Some(upstream) = up
            .fetch_bundle()
            .await
            .map_err(|e| CaError::Upstream(e.to_string()))?
        else {
            return Ok(false);
        };
        let local = self
            .bundle()
            .await?
            .unwrap_or_else(|| ds::Bundle::new(self.config.trust_domain.clone()));
        let mut add = ds::Bundle::new(self.config.trust_domain.clone());
        add.x509_authorities = upstream
            .x509_authorities
            .into_iter()
            .filter(|a| !local.x509_authorities.iter().any(|l| l.der == a.der))
            .collect();
        add.jwt_authorities = upstream
            .jwt_authorities
            .into_iter()
            .filter(|k| {
                !local
                    .jwt_authorities
                    .iter()
                    .any(|l| l.key_id == k.key_id && l.public_key == k.public_key)
            })
            .collect();
        if add.x509_authorities.is_empty() && add.jwt_authorities.is_empty() {
            return Ok(false);
        }
        tracing::info!(
            x509_authorities = add.x509_authorities.len(),
            jwt_authorities = add.jwt_authorities.len(),
            "New upstream authorities appended to the bundle"
        );
        self.datastore.append_bundle(&add).await?;
        self.notify_bundle().await;
        Ok(true)
    }

    // === LocalAuthority ===

    /// Active, prepared and old X.509 authorities.
    pub async fn x509_states(
        &self,
    ) -> (
        Option<AuthorityState>,
        Option<AuthorityState>,
        Option<AuthorityState>,
    ) {
        self.slots.lock().await.x509.states()
    }

    /// Active, prepared and old JWT authorities.
    pub async fn jwt_states(
        &self,
    ) -> (
        Option<AuthorityState>,
        Option<AuthorityState>,
        Option<AuthorityState>,
    ) {
        self.slots.lock().await.jwt.states()
    }

    /// Prepares a new X.509 authority in the next slot (replacing an old one).
    pub async fn prepare_x509_authority(&self) -> Result<AuthorityState, CaError> {
        let mut slots = self.slots.lock().await;
        let prepared = self.prepare_x509(slots.x509.next_slot()).await?;
        self.keep_prepared(&mut slots, prepared).await
    }

    /// Activates the prepared X.509 authority `authority_id`.
    pub async fn activate_x509_authority(
        &self,
        authority_id: &str,
    ) -> Result<AuthorityState, CaError> {
        let state = self.activate_prepared::<X509Slot>(authority_id).await?;
        self.maybe_rotate_server_svid(self.clock.now(), true)?;
        state.ok_or(CaError::NoX509Authority)
    }

    /// Taints the old X.509 authority `authority_id` in the bundle.
    pub async fn taint_x509_authority(
        &self,
        authority_id: &str,
    ) -> Result<AuthorityState, CaError> {
        if self.upstream.is_some() {
            return Err(CaError::InvalidRequest(
                "local authority can't be tainted if there is an upstream authority".into(),
            ));
        }
        self.taint_old::<X509Slot>(authority_id).await
    }

    /// Removes the tainted old X.509 authority `authority_id` from the bundle.
    pub async fn revoke_x509_authority(
        &self,
        authority_id: &str,
    ) -> Result<AuthorityState, CaError> {
        if self.upstream.is_some() {
            return Err(CaError::InvalidRequest(
                "local authority can't be revoked if there is an upstream authority".into(),
            ));
        }
        self.revoke_old::<X509Slot>(authority_id).await
    }

    /// Prepares a new JWT authority in the next slot.
    pub async fn prepare_jwt_authority(&self) -> Result<AuthorityState, CaError> {
        let mut slots = self.slots.lock().await;
        let prepared = self.prepare_jwt(slots.jwt.next_slot()).await?;
        self.keep_prepared(&mut slots, prepared).await
    }

    /// Activates the prepared JWT authority `authority_id`.
    pub async fn activate_jwt_authority(
        &self,
        authority_id: &str,
    ) -> Result<AuthorityState, CaError> {
        let state = self.activate_prepared::<JwtSlot>(authority_id).await?;
        state.ok_or(CaError::NoJwtAuthority)
    }

    /// Taints the old JWT authority `authority_id` in the bundle.
    pub async fn taint_jwt_authority(&self, authority_id: &str) -> Result<AuthorityState, CaError> {
        self.taint_old::<JwtSlot>(authority_id).await
    }

    /// Removes the tainted old JWT authority `authority_id` from the bundle.
    pub async fn revoke_jwt_authority(
        &self,
        authority_id: &str,
    ) -> Result<AuthorityState, CaError> {
        self.revoke_old::<JwtSlot>(authority_id).await
    }

    /// Puts the just prepared authority in the next slot (the lock is held since it was
    /// prepared) and saves the journal.
    async fn keep_prepared<A: SlotAuthority>(
        &self,
        slots: &mut Slots,
        prepared: A,
    ) -> Result<AuthorityState, CaError> {
        let state = prepared.state();
        A::pair_mut(slots).next = Some(prepared);
        self.save_journal(slots).await?;
        Ok(state)
    }

    /// Activates the prepared authority `authority_id`, publishes it and saves the journal;
    /// returns the new current authority.
    async fn activate_prepared<A: SlotAuthority>(
        &self,
        authority_id: &str,
    ) -> Result<Option<AuthorityState>, CaError> {
        let mut slots = self.slots.lock().await;
        let state = A::pair_mut(&mut slots).activate_prepared(authority_id)?;
        self.publish_active(&slots);
        self.save_journal(&slots).await?;
        Ok(state)
    }

    /// Marks the old authority `authority_id` tainted in the bundle.
    async fn taint_old<A: SlotAuthority>(
        &self,
        authority_id: &str,
    ) -> Result<AuthorityState, CaError> {
        let old = A::pair(&*self.slots.lock().await)
            .old(authority_id)?
            .clone();
        let mut found = false;
        let mut already = false;
        self.datastore
            .modify_bundle(&self.config.trust_domain, |b| {
                for entry in A::published(b) {
                    if old.publishes(entry) {
                        found = true;
                        let tainted = A::tainted(entry);
                        already = *tainted;
                        *tainted = true;
                    }
                }
                Ok(found && !already)
            })
            .await?;
        if !found {
            return Err(CaError::NotFound(A::TEXT.not_found.into()));
        }
        if already {
            return Err(CaError::InvalidRequest(A::TEXT.already_tainted.into()));
        }
        self.notify_bundle().await;
        Ok(old.state())
    }

    /// Removes the tainted old authority `authority_id` from the bundle.
    async fn revoke_old<A: SlotAuthority>(
        &self,
        authority_id: &str,
    ) -> Result<AuthorityState, CaError> {
        let old = A::pair(&*self.slots.lock().await)
            .old(authority_id)?
            .clone();
        let mut tainted = None;
        self.datastore
            .modify_bundle(&self.config.trust_domain, |b| {
                let entries = A::published(b);
                tainted = entries
                    .iter_mut()
                    .find(|e| old.publishes(e))
                    .map(|e| *A::tainted(e));
                if tainted == Some(true) {
                    entries.retain(|e| !old.publishes(e));
                    Ok(true)
                } else {
                    Ok(false)
                }
            })
            .await?;
        match tainted {
            None => Err(CaError::NotFound(A::TEXT.not_found.into())),
            Some(false) => Err(CaError::InvalidRequest(A::TEXT.revoke_untainted.into())),
            Some(true) => {
                self.notify_bundle().await;
                Ok(old.state())
            }
        }
    }

    // === internals ===

    async fn prepare_x509(&self, slot: Slot) -> Result<X509Slot, CaError> {
        let now = self.clock.now();
        let signer = self
            .key_manager
            .generate_key(slot.x509_key_id(), self.config.ca_key_type)?;
        let template = CaTemplate {
            trust_domain: self.config.trust_domain.clone(),
            subject: self.config.ca_subject.clone(),
            ttl: self.config.ca_ttl,
        };
        let (authority, upstream_chain, upstream_id, roots) = match &self.upstream {
            None => {
                let ca = spire_crypto::x509::self_signed_ca(signer, &template, now)?;
                let root = ca.cert_der().to_vec();
                (ca, Vec::new(), String::new(), vec![root])
            }
            Some(up) => {
                let minted = up
                    .mint_x509_ca(&signer, &template, now)
                    .await
                    .map_err(|e| CaError::Upstream(e.to_string()))?;
                let ca = X509Authority::new(minted.ca_cert, signer)?;
                (
                    ca,
                    minted.upstream_chain,
                    minted.upstream_authority_id,
                    minted.roots,
                )
            }
        };
        let prepared = X509Slot {
            slot,
            status: SlotStatus::Prepared,
            authority: Arc::new(authority),
            upstream_chain,
            upstream_authority_id: upstream_id,
        };
        // Publish before use.
        let mut add = ds::Bundle::new(self.config.trust_domain.clone());
        add.x509_authorities = roots
            .into_iter()
            .map(|der| ds::X509Authority {
                der,
                tainted: false,
            })
            .collect();
        self.datastore.append_bundle(&add).await?;
        self.notify_bundle().await;
        tracing::info!(
            slot = slot.name(),
            authority_id = %prepared.id(),
            not_after = prepared.authority.not_after().unix_timestamp(),
            "X509 CA prepared"
        );
        Ok(prepared)
    }

    async fn prepare_jwt(&self, slot: Slot) -> Result<JwtSlot, CaError> {
        let now = self.clock.now_unix();
        let signer = self
            .key_manager
            .generate_key(slot.jwt_key_id(), self.config.jwt_key_type)?;
        let kid = random_kid();
        let not_after = now + i64::try_from(self.config.ca_ttl.as_secs()).unwrap_or(i64::MAX);
        let prepared = JwtSlot {
            slot,
            status: SlotStatus::Prepared,
            kid: kid.clone(),
            signer: Arc::clone(&signer),
            issued_at: now,
            not_after,
        };
        let key = ds::JwtAuthority {
            key_id: kid.clone(),
            public_key: signer.public_key().spki_der().to_vec(),
            expires_at: not_after,
            tainted: false,
        };
        // With an upstream that takes JWT keys the key is published there first (SPIRE: a key
        // that cannot be published is not used); the upstream's keys join the local bundle.
        let upstream_keys = match &self.upstream {
            Some(up) => up
                .publish_jwt_key(&key)
                .await
                .map_err(|e| CaError::Upstream(e.to_string()))?,
            None => None,
        };
        let mut add = ds::Bundle::new(self.config.trust_domain.clone());
        add.jwt_authorities = vec![key];
        add.jwt_authorities
            .extend(upstream_keys.into_iter().flatten());
        self.datastore.append_bundle(&add).await?;
        self.notify_bundle().await;
        tracing::info!(slot = slot.name(), authority_id = %kid, not_after, "JWT key prepared");
        Ok(prepared)
    }

    fn publish_active(&self, slots: &Slots) {
        self.active.store(Arc::new(Active {
            x509: slots.x509.current.clone(),
            jwt: slots.jwt.current.clone(),
        }));
    }

    async fn notify_bundle(&self) {
        if let Ok(Some(b)) = self.datastore.get_bundle(&self.config.trust_domain).await {
            self.bundle_seq.send_replace(b.sequence_number);
        }
    }

    async fn prune_bundle(&self, now: SystemTime) -> Result<(), CaError> {
        let before = to_unix_secs(now) - BUNDLE_PRUNE_AFTER.as_secs() as i64;
        match self
            .datastore
            .prune_bundle(&self.config.trust_domain, before)
            .await
        {
            Ok(true) => {
                tracing::info!("Pruned expired authorities from the bundle");
                self.notify_bundle().await;
                Ok(())
            }
            Ok(false) | Err(ds::Error::NotFound { .. }) => Ok(()),
            Err(ds::Error::PruneWouldEmptyBundle(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn maybe_rotate_server_svid(&self, now: SystemTime, ca_changed: bool) -> Result<(), CaError> {
        let now_s = to_unix_secs(now);
        let due = match self.server_svid.borrow().as_ref() {
            None => true,
            Some(svid) => {
                let half = svid.not_before + (svid.not_after - svid.not_before) / 2;
                ca_changed || now_s >= half
            }
        };
        if !due {
            return Ok(());
        }
        let key = Arc::new(PrivateKey::generate(KeyType::EcP256)?);
        let id = self
            .config
            .trust_domain
            .spiffe_id("/spire/server")
            .map_err(|e| {
                CaError::InvalidRequest(format!("cannot build the server SPIFFE ID: {e}"))
            })?;
        let chain = self.sign_leaf(
            key.public_key(),
            &id,
            &[],
            self.config.default_x509_svid_ttl,
        )?;
        let not_after = chain
            .first()
            .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
            .map(|(_, c)| c.validity().not_after.timestamp())
            .unwrap_or(now_s);
        let svid = ServerSvid {
            chain,
            key,
            not_before: now_s,
            not_after,
        };
        tracing::info!(spiffe_id = %id, not_after, "Server SVID rotated");
        self.server_svid.send_replace(Some(Arc::new(svid)));
        Ok(())
    }

    async fn save_journal(&self, slots: &Slots) -> Result<(), CaError> {
        let mut j = Journal::default();
        for s in slots.x509.iter() {
            j.x509.push(X509Record {
                slot: s.slot.name().to_string(),
                status: s.status.as_str().to_string(),
                cert: journal::b64(s.authority.cert_der()),
                chain: s.upstream_chain.iter().map(|c| journal::b64(c)).collect(),
                upstream_authority_id: s.upstream_authority_id.clone(),
            });
        }
        for s in slots.jwt.iter() {
            j.jwt.push(JwtRecord {
                slot: s.slot.name().to_string(),
                status: s.status.as_str().to_string(),
                kid: s.kid.clone(),
                public_key: journal::b64(s.signer.public_key().spki_der()),
                not_after: s.not_after,
                issued_at: s.issued_at,
            });
        }
        self.datastore
            .set_ca_journal(&self.journal_id, &j.encode())
            .await?;
        Ok(())
    }

    async fn load_journal(&self) -> Result<(), CaError> {
        let mut data = self.datastore.ca_journal(&self.journal_id).await?;
        if data.is_none() && self.journal_id != JOURNAL_ID {
            data = self.datastore.ca_journal(JOURNAL_ID).await?;
        }
        let Some(data) = data else {
            return Ok(());
        };
        let journal = match Journal::decode(&data) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "CA journal is unreadable; starting with new authorities");
                return Ok(());
            }
        };
        let mut slots = self.slots.lock().await;
        for r in &journal.x509 {
            let (Some(slot), Some(status), Some(cert)) = (
                Slot::parse(&r.slot),
                SlotStatus::parse(&r.status),
                journal::unb64(&r.cert),
            ) else {
                continue;
            };
            let Some(signer) = self.key_manager.get_key(slot.x509_key_id())? else {
                tracing::warn!(
                    slot = slot.name(),
                    "X509 CA key missing from the key manager; discarding journal slot"
                );
                continue;
            };
            let Ok(authority) = X509Authority::new(cert, signer) else {
                tracing::warn!(
                    slot = slot.name(),
                    "X509 CA key does not match the journal; discarding journal slot"
                );
                continue;
            };
            let s = X509Slot {
                slot,
                status,
                authority: Arc::new(authority),
                upstream_chain: r.chain.iter().filter_map(|c| journal::unb64(c)).collect(),
                upstream_authority_id: r.upstream_authority_id.clone(),
            };
            if status == SlotStatus::Active {
                slots.x509.current = Some(s);
            } else {
                slots.x509.next = Some(s);
            }
        }
        for r in &journal.jwt {
            let (Some(slot), Some(status)) = (Slot::parse(&r.slot), SlotStatus::parse(&r.status))
            else {
                continue;
            };
            let Some(signer) = self.key_manager.get_key(slot.jwt_key_id())? else {
                continue;
            };
            if journal::unb64(&r.public_key).as_deref() != Some(signer.public_key().spki_der()) {
                continue;
            }
            let s = JwtSlot {
                slot,
                status,
                kid: r.kid.clone(),
                signer,
                issued_at: r.issued_at,
                not_after: r.not_after,
            };
            if status == SlotStatus::Active {
                slots.jwt.current = Some(s);
            } else {
                slots.jwt.next = Some(s);
            }
        }
        self.publish_active(&slots);
        tracing::info!(
            x509_authority_id = slots
                .x509
                .current
                .as_ref()
                .map(|s| s.id())
                .unwrap_or_default(),
            jwt_authority_id = slots
                .jwt
                .current
                .as_ref()
                .map(|s| s.kid.clone())
                .unwrap_or_default(),
            "CA journal loaded"
        );
        Ok(())
    }
}

/// When to prepare and when to activate the successor of an authority valid from
/// `not_before` to `not_after`.
fn thresholds(not_before: SystemTime, not_after: SystemTime) -> (SystemTime, SystemTime) {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    let prepare_before = (lifetime / 2).min(THIRTY_DAYS);
    let activate_before = (lifetime / 6).min(SEVEN_DAYS);
    (
        not_after.checked_sub(prepare_before).unwrap_or(not_before),
        not_after.checked_sub(activate_before).unwrap_or(not_before),
    )
}

/// A random 32-character alphanumeric key ID, as SPIRE generates.
fn random_kid() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let more = uuid::Uuid::new_v4().into_bytes();
    bytes
        .iter()
        .chain(more.iter())
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

#[cfg(test)]
#[path = "rotation_tests.rs"]
mod rotation_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_follow_spire() {
        let nb = from_unix_secs(0);
        let na = from_unix_secs(24 * 3600);
        let (p, a) = thresholds(nb, na);
        assert_eq!(to_unix_secs(p), 12 * 3600);
        assert_eq!(to_unix_secs(a), 20 * 3600);
        // Long-lived CA: caps at 30 d / 7 d.
        let na = from_unix_secs(365 * 24 * 3600);
        let (p, a) = thresholds(nb, na);
        assert_eq!(to_unix_secs(na) - to_unix_secs(p), 30 * 24 * 3600);
        assert_eq!(to_unix_secs(na) - to_unix_secs(a), 7 * 24 * 3600);
    }

    #[test]
    fn kid_shape() {
        let k = random_kid();
        assert_eq!(k.len(), 32);
        assert!(k.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
