//! The manager loop against an in-process fake server, with paused tokio time and a
//! [`FakeClock`]: SVID rotation at half-life, agent SVID renewal, re-signing on an entry
//! revision change, and stopping when the server bans the agent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use spire_crypto::{CaTemplate, PrivateKey, SvidTemplate, X509Authority};
use spire_proto::types;
use spire_spiffe::{Bundle, Clock, FakeClock, Selectors, SpiffeId, TrustDomain};
use spire_tls::{BundleSet, SharedIdentity};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::client::{CachedEntries, ServerApi, SvidResult, SyncedEntries, WatchStream};

const SVID_TTL: Duration = Duration::from_secs(60);
const AGENT_TTL: Duration = Duration::from_secs(200);

struct Fake {
    clock: FakeClock,
    ca: X509Authority,
    td: TrustDomain,
    agent_id: SpiffeId,
    entries: Mutex<BTreeMap<String, EntryView>>,
    renewals: AtomicUsize,
    signed: Mutex<Vec<String>>,
    /// The size of every BatchNewX509SVID call.
    batches: Mutex<Vec<usize>>,
    deny: AtomicBool,
}

impl Fake {
    fn sign(&self, id: &SpiffeId, csr: &[u8], ttl: Duration) -> Result<IssuedSvid, ClientError> {
        let der = self
            .ca
            .sign_svid_from_csr(
                csr,
                &SvidTemplate {
                    spiffe_id: id.clone(),
                    dns_names: vec![],
                    ttl,
                },
                self.clock.now(),
            )
            .map_err(|e| ClientError::Protocol {
                op: "fake",
                reason: e.to_string(),
            })?;
        IssuedSvid::from_chain(vec![der])
            .map_err(|reason| ClientError::Protocol { op: "fake", reason })
    }

    fn check(&self) -> Result<(), ClientError> {
        if self.deny.load(Ordering::SeqCst) {
            return Err(ClientError::Rpc {
                op: "fake",
                status: tonic::Status::permission_denied("agent is banned"),
            });
        }
        Ok(())
    }
}

impl ServerApi for Fake {
    fn renew_agent(&self, csr: Vec<u8>) -> BoxFuture<'_, Result<IssuedSvid, ClientError>> {
        Box::pin(async move {
            self.check()?;
            self.renewals.fetch_add(1, Ordering::SeqCst);
            self.sign(&self.agent_id, &csr, AGENT_TTL)
        })
    }

    fn sync_entries<'a>(
        &'a self,
        cached: CachedEntries<'a>,
    ) -> BoxFuture<'a, Result<SyncedEntries, ClientError>> {
        Box::pin(async move {
            self.check()?;
            let mut out = SyncedEntries::default();
            for (id, e) in self.entries.lock().unwrap().iter() {
                let arc = match cached(id) {
                    Some(c) if *c == *e => c,
                    _ => {
                        out.fetched += 1;
                        Arc::new(e.clone())
                    }
                };
                out.entries.insert(arc.entry_id.clone(), arc);
            }
            Ok(out)
        })
    }

    fn get_bundle(&self) -> BoxFuture<'_, Result<Bundle, ClientError>> {
        Box::pin(async move {
            self.check()?;
            let mut b = Bundle::new(self.td.clone());
            b.x509_authorities.push(self.ca.cert_der().to_vec());
            Ok(b)
        })
    }

    fn get_federated_bundle<'a>(
        &'a self,
        _td: &'a TrustDomain,
    ) -> BoxFuture<'a, Result<Option<Bundle>, ClientError>> {
        Box::pin(async { Ok(None) })
    }

    fn batch_new_x509_svid(
        &self,
        params: Vec<(String, Vec<u8>)>,
    ) -> BoxFuture<'_, Result<Vec<SvidResult>, ClientError>> {
        Box::pin(async move {
            self.check()?;
            self.batches.lock().unwrap().push(params.len());
            let entries = self.entries.lock().unwrap().clone();
            Ok(params
                .into_iter()
                .map(|(id, csr)| {
                    let e = entries.get(&id).ok_or("unknown entry")?;
                    self.signed.lock().unwrap().push(id.clone());
                    self.sign(&e.spiffe_id, &csr, SVID_TTL)
                        .map_err(|e| e.to_string())
                })
                .collect())
        })
    }

    fn new_jwt_svid(
        &self,
        _entry_id: String,
        _audience: Vec<String>,
    ) -> BoxFuture<'_, Result<types::Jwtsvid, ClientError>> {
        Box::pin(async {
            Err(ClientError::Rpc {
                op: "fake",
                status: tonic::Status::unimplemented("no JWT"),
            })
        })
    }

    fn watch(&self, _known: u64) -> BoxFuture<'_, Result<WatchStream, ClientError>> {
        Box::pin(async {
            Err(ClientError::Rpc {
                op: "Watch",
                status: tonic::Status::unimplemented("no watch"),
            })
        })
    }

    fn reconnect(&self) {}
}

fn entry(fake: &Fake, id: &str, revision: i64) -> EntryView {
    EntryView {
        entry_id: id.into(),
        spiffe_id: SpiffeId::new(&fake.td, &format!("/{id}")).unwrap().into(),
        parent_id: fake.agent_id.clone().into(),
        selectors: Default::default(),
        federates_with: vec![],
        hint: String::new(),
        created_at: 1,
        revision_number: revision,
        x509_svid_ttl: 0,
        jwt_svid_ttl: 0,
        jwt_svid_include_jti: false,
        disable_x509_svid_prefetch: false,
        admin: false,
        downstream: false,
    }
}

async fn wait_for(
    rx: &mut watch::Receiver<Arc<IdentitySnapshot>>,
    what: &str,
    f: impl Fn(&IdentitySnapshot) -> bool,
) {
    let r = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if f(&rx.borrow_and_update()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(r.is_ok(), "timed out waiting for {what}");
    assert!(f(&rx.borrow()), "{what}");
}

fn svid_of(s: &IdentitySnapshot, id: &str) -> Option<Vec<u8>> {
    s.identities
        .get(id)
        .and_then(|i| i.svid.as_ref())
        .map(|s| s.cert_chain[0].clone())
}

#[tokio::test(start_paused = true)]
async fn manager_rotates_renews_resigns_and_stops_when_banned() {
    let clock = FakeClock::at_unix(1_800_000_000);
    let fake = fake_server(&clock);
    fake.entries
        .lock()
        .unwrap()
        .insert("e1".into(), entry(&fake, "e1", 1));

    let Running {
        mut rx,
        shutdown,
        task,
        identity,
        data,
    } = start_manager(
        &fake,
        &clock,
        0,
        Duration::from_secs(5),
        &SubscriberRegistry::new(),
    )
    .await;

    // First sync: the entry gets an SVID; the snapshot carries it with the bundle.
    wait_for(&mut rx, "first SVID", |s| svid_of(s, "e1").is_some()).await;
    let first = svid_of(&rx.borrow(), "e1").unwrap();
    assert!(rx.borrow().bundle.is_some());
    assert_eq!(fake.signed.lock().unwrap().len(), 1);

    // 20 s in (NotBefore is backdated 10 s, lifetime 70 s): before the earliest rotation
    // point (half-life 35 s − 10 % jitter = 31.5 s after NotBefore).
    clock.advance(Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(fake.signed.lock().unwrap().len(), 1, "not rotated early");

    // 30 s in: past the latest rotation point (38.5 s after NotBefore).
    clock.advance(Duration::from_secs(10));
    tokio::time::sleep(Duration::from_secs(6)).await;
    wait_for(&mut rx, "rotated SVID", |s| {
        svid_of(s, "e1").is_some_and(|c| c != first)
    })
    .await;
    assert_eq!(fake.signed.lock().unwrap().len(), 2);
    assert_eq!(
        fake.renewals.load(Ordering::SeqCst),
        0,
        "agent SVID not due yet"
    );

    // 120 s in: the agent SVID (lifetime 210 s) is past its half-life: RenewAgent, and the new
    // SVID is presented on the next TLS handshake.
    clock.advance(Duration::from_secs(90));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(fake.renewals.load(Ordering::SeqCst), 1);
    let presented = identity.load().expect("identity installed");
    assert_eq!(presented.spiffe_id(), &fake.agent_id);
    let stored = storage::load(data.path()).unwrap().unwrap();
    assert_eq!(stored.svid_chain[0], presented.leaf().to_vec(), "persisted");

    // An entry revision change re-signs that entry once, without any time passing.
    let before = fake.signed.lock().unwrap().len();
    let current = svid_of(&rx.borrow(), "e1").unwrap();
    fake.entries
        .lock()
        .unwrap()
        .insert("e1".into(), entry(&fake, "e1", 2));
    wait_for(&mut rx, "re-signed after revision change", |s| {
        s.identities
            .get("e1")
            .is_some_and(|i| i.entry.revision_number == 2)
            && svid_of(s, "e1").is_some_and(|c| c != current)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(fake.signed.lock().unwrap().len(), before + 1);

    // One allocation per entry ID: the snapshot's key, the entry and its SVID share it.
    {
        let s = rx.borrow();
        let (key, id) = s.identities.get_key_value("e1").unwrap();
        let svid = id.svid.as_ref().unwrap();
        assert_eq!(key.as_ptr(), id.entry.entry_id.as_ptr());
        assert_eq!(key.as_ptr(), svid.entry_id.as_ptr());
        assert_eq!(svid.entry_id, "e1");
    }

    // A new entry gets its SVID; when the entry is deleted, its SVID goes with it and the
    // other entry keeps its SVID (not re-signed).
    let current = svid_of(&rx.borrow(), "e1").unwrap();
    let before = fake.signed.lock().unwrap().len();
    fake.entries
        .lock()
        .unwrap()
        .insert("e2".into(), entry(&fake, "e2", 1));
    wait_for(&mut rx, "SVID of a new entry", |s| {
        svid_of(s, "e2").is_some()
    })
    .await;
    fake.entries.lock().unwrap().remove("e2");
    wait_for(&mut rx, "deleted entry gone with its SVID", |s| {
        !s.identities.contains_key("e2")
    })
    .await;
    let s = rx.borrow().clone();
    assert_eq!(s.identities.len(), 1);
    assert_eq!(svid_of(&s, "e1"), Some(current));
    assert!(
        s.x509_svids_for(&Selectors::default())
            .iter()
            .all(|v| v.entry_id == "e1")
    );
    assert_eq!(fake.signed.lock().unwrap().len(), before + 1);

    // Banned: the next sync is refused; a non-reattestable agent stops and forgets its SVID.
    fake.deny.store(true, Ordering::SeqCst);
    let result = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("manager stops")
        .unwrap();
    assert!(
        matches!(result, Err(ManagerError::Rejected(_))),
        "{result:?}"
    );
    assert!(storage::load(data.path()).unwrap().is_none());
    drop(shutdown);
}

fn selectors(list: &[&str]) -> Selectors {
    list.iter()
        .map(|s| spire_spiffe::Selector::try_from(*s).unwrap())
        .collect()
}

/// A fake server with a fresh CA and no entries.
fn fake_server(clock: &FakeClock) -> Arc<Fake> {
    let td: TrustDomain = "example.org".parse().unwrap();
    let ca_key: Arc<dyn spire_crypto::Signer> =
        Arc::new(PrivateKey::generate(spire_crypto::KeyType::EcP256).unwrap());
    let ca = spire_crypto::self_signed_ca(
        ca_key,
        &CaTemplate {
            trust_domain: td.clone(),
            subject: Default::default(),
            ttl: Duration::from_secs(86400),
        },
        clock.now(),
    )
    .unwrap();
    Arc::new(Fake {
        clock: clock.clone(),
        ca,
        td: td.clone(),
        agent_id: SpiffeId::new(&td, "/spire/agent/test/1").unwrap(),
        entries: Mutex::new(BTreeMap::new()),
        renewals: AtomicUsize::new(0),
        signed: Mutex::new(Vec::new()),
        batches: Mutex::new(Vec::new()),
        deny: AtomicBool::new(false),
    })
}

/// A manager running against a fake server (see [`start_manager`]).
struct Running {
    rx: watch::Receiver<Arc<IdentitySnapshot>>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ManagerError>>,
    /// The agent identity the manager installs for its TLS client.
    identity: SharedIdentity,
    /// The agent's data directory (its stored SVID and bundle); kept alive with the manager.
    data: tempfile::TempDir,
}

/// Runs a manager against `fake` with an X.509-SVID cache of `max` entries (0: no limit) and
/// the given sync interval, as an agent that attested and stored its SVID and bundle.
async fn start_manager(
    fake: &Arc<Fake>,
    clock: &FakeClock,
    max: usize,
    sync_interval: Duration,
    subscribers: &Arc<SubscriberRegistry>,
) -> Running {
    let data = tempfile::tempdir().unwrap();
    let key = Arc::new(PrivateKey::generate(spire_crypto::KeyType::EcP256).unwrap());
    let csr = spire_crypto::create_csr(key.as_ref(), None).unwrap();
    let svid = fake.sign(&fake.agent_id, &csr, AGENT_TTL).unwrap();
    let agent = AgentSvid::new(svid, key, false, None);
    let bundle = fake.get_bundle().await.unwrap();
    storage::save(
        data.path(),
        &AgentData {
            svid_chain: agent.svid.cert_chain.clone(),
            bundle: bundle.clone(),
            reattestable: false,
        },
    )
    .unwrap();
    let identity = SharedIdentity::empty();
    let (manager, rx) = Manager::new(ManagerParts {
        cfg: ManagerConfig {
            trust_domain: fake.td.clone(),
            server_address: "127.0.0.1:1".into(),
            data_dir: data.path().to_owned(),
            sync_interval,
            x509_svid_cache_max_size: max,
            workload_key_type: spire_crypto::KeyType::EcP256,
            availability_target: None,
        },
        clock: Arc::new(clock.clone()),
        client: fake.clone() as Arc<dyn ServerApi>,
        identity: identity.clone(),
        tls_bundles: BundleSet::new(),
        keys: Arc::new(AgentKeyStore::memory()),
        attestor: None,
        agent,
        bundle,
        subscribers: subscribers.clone(),
    });
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(manager.run(shutdown.clone()));
    Running {
        rx,
        shutdown,
        task,
        identity,
        data,
    }
}

/// A sync interval no test reaches: what the manager does then comes from pushes, new
/// subscribers or rotation, not from a timer-driven sync.
const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn prefetch_disabled_entries_are_signed_for_subscribers_without_a_cache_limit() {
    let clock = FakeClock::at_unix(1_800_000_000);
    let fake = fake_server(&clock);
    let mut eager = entry(&fake, "eager", 1);
    eager.selectors = selectors(&["unix:uid:1001"]);
    let mut lazy = entry(&fake, "lazy", 1);
    lazy.selectors = selectors(&["unix:uid:1002"]);
    lazy.disable_x509_svid_prefetch = true;
    for e in [eager, lazy] {
        fake.entries
            .lock()
            .unwrap()
            .insert(e.entry_id.to_string(), e);
    }
    let subscribers = SubscriberRegistry::new();
    // No cache limit (0): only prefetch being disabled keeps "lazy" unsigned.
    let Running {
        mut rx,
        shutdown,
        task,
        ..
    } = start_manager(&fake, &clock, 0, HOUR, &subscribers).await;

    wait_for(&mut rx, "eager prefetched", |s| {
        svid_of(s, "eager").is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        svid_of(&rx.borrow(), "lazy").is_none(),
        "lazy is not prefetched"
    );
    assert_eq!(*fake.signed.lock().unwrap(), ["eager"]);

    // Its workload subscribes: the registration wakes the manager, which signs it.
    let sub = subscribers.register(selectors(&["unix:uid:1002"]));
    wait_for(&mut rx, "lazy signed for its subscriber", |s| {
        svid_of(s, "lazy").is_some()
    })
    .await;
    assert_eq!(*fake.signed.lock().unwrap(), ["eager", "lazy"]);

    drop(sub);
    wait_for(&mut rx, "lazy dropped", |s| svid_of(s, "lazy").is_none()).await;
    assert!(svid_of(&rx.borrow(), "eager").is_some(), "eager kept");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn subscribers_get_svids_beyond_the_cache_limit_and_lose_them_when_gone() {
    let clock = FakeClock::at_unix(1_800_000_000);
    let fake = fake_server(&clock);
    // Two entries for two workloads; with a cache of one, only the oldest (e1) is prefetched.
    for (id, created, sel) in [("e1", 1, "unix:uid:1001"), ("e2", 2, "unix:uid:1002")] {
        let mut e = entry(&fake, id, 1);
        e.created_at = created;
        e.selectors = selectors(&[sel]);
        fake.entries.lock().unwrap().insert(id.into(), e);
    }
    let subscribers = SubscriberRegistry::new();
    let Running {
        mut rx,
        shutdown,
        task,
        ..
    } = start_manager(&fake, &clock, 1, HOUR, &subscribers).await;

    wait_for(&mut rx, "e1 prefetched", |s| svid_of(s, "e1").is_some()).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        svid_of(&rx.borrow(), "e2").is_none(),
        "e2 is beyond the limit"
    );
    assert_eq!(*fake.signed.lock().unwrap(), ["e1"]);

    // A subscriber whose selectors do not cover any entry beyond the limit changes nothing.
    let other = subscribers.register(selectors(&["unix:uid:1001", "unix:gid:7"]));
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(*fake.signed.lock().unwrap(), ["e1"]);

    // The workload of e2 subscribes (with more selectors than the entry has): e2 is signed.
    // The manager is woken by the registration, not by its next periodic check (5 s of
    // paused, deterministic time).
    let registered = tokio::time::Instant::now();
    let sub = subscribers.register(selectors(&["unix:uid:1002", "unix:gid:7"]));
    wait_for(&mut rx, "e2 signed for its subscriber", |s| {
        svid_of(s, "e2").is_some()
    })
    .await;
    assert!(
        registered.elapsed() < Duration::from_secs(1),
        "signed {:?} after the subscription",
        registered.elapsed()
    );
    assert_eq!(*fake.signed.lock().unwrap(), ["e1", "e2"]);
    assert!(svid_of(&rx.borrow(), "e1").is_some(), "e1 kept");

    // While subscribed, e2 is rotated like a prefetched entry (past its latest rotation point).
    let first = svid_of(&rx.borrow(), "e2").unwrap();
    clock.advance(Duration::from_secs(40));
    wait_for(&mut rx, "e2 rotated", |s| {
        svid_of(s, "e2").is_some_and(|c| c != first)
    })
    .await;

    // The subscriber leaves: e2's SVID is dropped, e1's stays.
    drop(sub);
    drop(other);
    wait_for(&mut rx, "e2 evicted", |s| svid_of(s, "e2").is_none()).await;
    assert!(svid_of(&rx.borrow(), "e1").is_some(), "e1 kept");

    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn many_svids_are_signed_in_bounded_batches() {
    let clock = FakeClock::at_unix(1_800_000_000);
    let fake = fake_server(&clock);
    const N: usize = 1_100;
    for i in 0..N {
        let id = format!("e{i}");
        let e = entry(&fake, &id, 1);
        fake.entries.lock().unwrap().insert(id, e);
    }
    let Running {
        mut rx,
        shutdown,
        task,
        ..
    } = start_manager(&fake, &clock, 0, HOUR, &SubscriberRegistry::new()).await;
    wait_for(&mut rx, "every entry signed", |s| {
        s.identities.values().filter(|i| i.svid.is_some()).count() == N
    })
    .await;
    // Keys, CSRs and answers of at most one batch (100) are alive at once.
    assert_eq!(*fake.batches.lock().unwrap(), [SIGN_BATCH; 11]);
    assert_eq!(fake.signed.lock().unwrap().len(), N);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[test]
fn signing_set_adds_subscribed_entries_beyond_the_limit() {
    let fake_entry = |id: &str, created: i64, sel: &[&str]| {
        Arc::new(EntryView {
            entry_id: id.into(),
            spiffe_id: format!("spiffe://td/{id}").parse().unwrap(),
            parent_id: "spiffe://td/p".parse().unwrap(),
            selectors: selectors(sel),
            federates_with: vec![],
            hint: String::new(),
            created_at: created,
            revision_number: 0,
            x509_svid_ttl: 0,
            jwt_svid_ttl: 0,
            jwt_svid_include_jti: false,
            disable_x509_svid_prefetch: false,
            admin: false,
            downstream: false,
        })
    };
    let mut m = BTreeMap::new();
    m.insert("a".to_owned(), fake_entry("a", 1, &["k:1"]));
    m.insert("b".to_owned(), fake_entry("b", 2, &["k:2"]));
    m.insert("c".to_owned(), fake_entry("c", 3, &["k:2", "k:3"]));
    let subs: BTreeSet<Selectors> = [selectors(&["k:2", "k:9"])].into();
    let (set, beyond) = signing_set(m.values().map(|e| &**e), 1, &subs);
    assert_eq!(set.into_iter().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(beyond, 1);
    let subs: BTreeSet<Selectors> = [selectors(&["k:2", "k:3"])].into();
    let (set, beyond) = signing_set(m.values().map(|e| &**e), 1, &subs);
    assert_eq!(set.len(), 3);
    assert_eq!(beyond, 2);
    let (set, beyond) = signing_set(m.values().map(|e| &**e), 0, &subs);
    assert_eq!((set.len(), beyond), (3, 0));
    let (set, beyond) = signing_set(m.values().map(|e| &**e), 1, &BTreeSet::new());
    assert_eq!((set.len(), beyond), (1, 0));
}

/// Validity of a DER leaf as (NotBefore, NotAfter).
fn validity(der: &[u8]) -> (std::time::SystemTime, std::time::SystemTime) {
    let s = IssuedSvid::from_chain(vec![der.to_vec()]).unwrap();
    (s.not_before, s.not_after)
}

#[tokio::test(start_paused = true)]
async fn clock_jump_forward_rotates_at_once_backward_issues_nothing() {
    let clock = FakeClock::at_unix(1_800_000_000);
    let fake = fake_server(&clock);
    fake.entries
        .lock()
        .unwrap()
        .insert("e1".into(), entry(&fake, "e1", 1));
    let Running {
        mut rx,
        shutdown,
        task,
        identity,
        ..
    } = start_manager(
        &fake,
        &clock,
        0,
        Duration::from_secs(5),
        &SubscriberRegistry::new(),
    )
    .await;
    wait_for(&mut rx, "first SVID", |s| svid_of(s, "e1").is_some()).await;
    let first = svid_of(&rx.borrow(), "e1").unwrap();

    // Forward, past the expiry of both the workload SVID (70 s) and the agent SVID (210 s):
    // within one check (the loop re-checks the wall clock at least every 5 s of monotonic
    // time), each is replaced exactly once, valid at the new time.
    clock.advance(AGENT_TTL + Duration::from_secs(100));
    tokio::time::sleep(Duration::from_secs(6)).await;
    let now = clock.now();
    assert_eq!(fake.renewals.load(Ordering::SeqCst), 1);
    let presented = identity.load().expect("identity installed");
    let (nb, na) = validity(presented.leaf());
    assert!(nb <= now && now < na, "agent SVID not valid after the jump");
    wait_for(&mut rx, "SVID replaced after the jump", |s| {
        svid_of(s, "e1").is_some_and(|c| c != first)
    })
    .await;
    let second = svid_of(&rx.borrow(), "e1").unwrap();
    let (nb, na) = validity(&second);
    assert!(
        nb <= now && now < na,
        "workload SVID not valid after the jump"
    );
    assert_eq!(fake.signed.lock().unwrap().len(), 2);

    // Backward by an hour (before the SVIDs' NotBefore): nothing is re-issued, the current
    // SVIDs stay published.
    clock.rewind(Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        fake.signed.lock().unwrap().len(),
        2,
        "re-signed on a backward jump"
    );
    assert_eq!(fake.renewals.load(Ordering::SeqCst), 1);
    assert_eq!(svid_of(&rx.borrow(), "e1"), Some(second.clone()));

    // The clock is right again and passes the half-life: rotation resumes.
    clock.advance(Duration::from_secs(3600 + 45));
    tokio::time::sleep(Duration::from_secs(6)).await;
    wait_for(&mut rx, "rotation resumes", |s| {
        svid_of(s, "e1").is_some_and(|c| c != second)
    })
    .await;
    assert_eq!(fake.signed.lock().unwrap().len(), 3);
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
}
