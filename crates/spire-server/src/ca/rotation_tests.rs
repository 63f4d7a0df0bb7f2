//! CA manager tests: rotation thresholds driven by a `FakeClock` (and paused tokio time for the
//! loop), publication before use, journal reload, taint/revoke, upstream-signed CAs.

use std::sync::Arc;
use std::time::Duration;

use spire_crypto::{KeyManager, MemoryKeyManager, PrivateKey};
use spire_datastore::DataStore;
use spire_spiffe::{Clock, FakeClock, SpiffeId, TrustDomain};
use x509_parser::prelude::*;

use super::*;

const CA_TTL: u64 = 600;

fn td() -> TrustDomain {
    "example.org".parse().unwrap()
}

fn config() -> CaConfig {
    CaConfig {
        trust_domain: td(),
        ca_key_type: KeyType::EcP256,
        jwt_key_type: KeyType::EcP256,
        ca_ttl: Duration::from_secs(CA_TTL),
        ca_subject: CaSubject::default(),
        jwt_issuer: None,
        default_x509_svid_ttl: Duration::from_secs(60),
        default_jwt_svid_ttl: Duration::from_secs(60),
        agent_ttl: Duration::from_secs(60),
        disable_jwt_svids: false,
    }
}

struct Fixture {
    clock: FakeClock,
    km: Arc<dyn KeyManager>,
    ds: DataStore,
}

async fn fixture() -> Fixture {
    let clock = FakeClock::default();
    let dyn_clock: Arc<dyn Clock> = Arc::new(clock.clone());
    let ds = DataStore::open_in_memory(dyn_clock).await.unwrap();
    Fixture {
        clock,
        km: Arc::new(MemoryKeyManager::new()),
        ds,
    }
}

async fn start(f: &Fixture, upstream: Option<Arc<dyn UpstreamAuthority>>) -> Arc<CaManager> {
    CaManager::start(
        config(),
        Arc::new(f.clock.clone()),
        Arc::clone(&f.km),
        upstream,
        f.ds.clone(),
    )
    .await
    .unwrap()
}

fn workload() -> SpiffeId {
    "spiffe://example.org/workload".parse().unwrap()
}

/// The subject key ID (hex) of the certificate that issued `leaf`.
fn issuer_key_id(leaf: &[u8]) -> String {
    let (_, cert) = X509Certificate::from_der(leaf).unwrap();
    cert.iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| hex::encode(k.0))
            }
            _ => None,
        })
        .unwrap()
}

async fn bundle_certs(f: &Fixture) -> Vec<Vec<u8>> {
    f.ds.get_bundle(&td())
        .await
        .unwrap()
        .unwrap()
        .x509_authorities
        .into_iter()
        .map(|a| a.der)
        .collect()
}

fn skid(der: &[u8]) -> String {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    cert.iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(hex::encode(k.0)),
            _ => None,
        })
        .unwrap()
}

#[tokio::test]
async fn prepares_at_half_life_publishes_before_use_and_activates_at_one_sixth() {
    let f = fixture().await;
    let ca = start(&f, None).await;
    let (active, prepared, old) = ca.x509_states().await;
    let a = active.unwrap().authority_id;
    assert!(prepared.is_none() && old.is_none());
    assert_eq!(bundle_certs(&f).await.len(), 1);
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();

    // Before L/2: nothing to do.
    f.clock.advance(Duration::from_secs(CA_TTL / 2 - 20));
    ca.rotate().await.unwrap();
    assert!(ca.x509_states().await.1.is_none());

    // Past L/2 remaining: B is prepared and already in the bundle, but A still signs.
    f.clock.advance(Duration::from_secs(40));
    ca.rotate().await.unwrap();
    let (active, prepared, _) = ca.x509_states().await;
    assert_eq!(active.unwrap().authority_id, a);
    let b = prepared.unwrap().authority_id;
    assert_ne!(a, b);
    let published: Vec<String> = bundle_certs(&f).await.iter().map(|d| skid(d)).collect();
    assert!(
        published.contains(&b),
        "prepared authority must be in the bundle before use"
    );
    let chain = ca
        .sign_x509_svid(key.public_key(), &workload(), &[], None)
        .unwrap();
    assert_eq!(issuer_key_id(&chain[0]), a);

    // Past L/6 remaining: B becomes active, A old; new SVIDs chain to B.
    f.clock.advance(Duration::from_secs(CA_TTL / 3));
    ca.rotate().await.unwrap();
    let (active, prepared, old) = ca.x509_states().await;
    assert_eq!(active.unwrap().authority_id, b);
    assert!(prepared.is_none());
    assert_eq!(old.unwrap().authority_id, a);
    let chain = ca
        .sign_x509_svid(key.public_key(), &workload(), &[], None)
        .unwrap();
    assert_eq!(issuer_key_id(&chain[0]), b);
    // The JWT key rotated on the same schedule.
    let (jwt_active, _, jwt_old) = ca.jwt_states().await;
    assert!(jwt_active.is_some() && jwt_old.is_some());
}

/// Yields until the rotation loop has completed `n` checks, without ever parking the runtime
/// (so paused time does not auto-advance under the datastore's own timeouts). Bounded by an
/// iteration count far above what a check needs, so a stuck loop fails instead of hanging.
async fn wait_ticks(ca: &CaManager, n: u64) {
    for i in 0..5_000_000u64 {
        if ca.rotation_ticks() >= n {
            return;
        }
        // Timers fire on whole milliseconds: nudge paused time now and then so a due tick fires.
        if i % 1000 == 999 {
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        tokio::task::yield_now().await;
    }
    panic!("the rotation loop did not complete {n} checks");
}

#[tokio::test]
async fn rotation_loop_driven_by_paused_time() {
    let f = fixture().await;
    let ca = start(&f, None).await;
    let first = ca.x509_states().await.0.unwrap().authority_id;
    // Pause tokio time only now (the datastore pool was opened with real time). A task that
    // always yields keeps the runtime from parking, so paused time never auto-advances: only
    // `advance` moves it, and only while the loop waits for its next tick.
    let spinner = tokio::spawn(async {
        loop {
            tokio::task::yield_now().await;
        }
    });
    tokio::time::pause();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(Arc::clone(&ca).run(shutdown.clone()));
    wait_ticks(&ca, 1).await; // the immediate first check: nothing to do yet
    assert!(ca.x509_states().await.1.is_none());

    // Past the preparation threshold: the next tick prepares.
    f.clock.advance(Duration::from_secs(CA_TTL / 2 + 10));
    tokio::time::advance(ROTATION_INTERVAL).await;
    wait_ticks(&ca, 2).await;
    let (active, prepared, _) = ca.x509_states().await;
    assert_eq!(active.unwrap().authority_id, first);
    assert!(
        prepared.is_some(),
        "the loop did not prepare the next authority"
    );

    // Past the activation threshold: the next tick activates.
    f.clock.advance(Duration::from_secs(CA_TTL / 3));
    tokio::time::advance(ROTATION_INTERVAL).await;
    wait_ticks(&ca, 3).await;
    assert_ne!(ca.x509_states().await.0.unwrap().authority_id, first);
    shutdown.cancel();
    task.await.unwrap();
    spinner.abort();
}

#[tokio::test]
async fn journal_restores_the_same_authorities() {
    let f = fixture().await;
    let ca = start(&f, None).await;
    let x = ca.x509_states().await.0.unwrap();
    let j = ca.jwt_states().await.0.unwrap();
    drop(ca);
    let again = start(&f, None).await;
    assert_eq!(again.x509_states().await.0.unwrap(), x);
    assert_eq!(again.jwt_states().await.0.unwrap(), j);
    // A fresh key manager (memory KeyManager after restart) cannot use the journal: new CA.
    let f2 = Fixture {
        clock: f.clock.clone(),
        km: Arc::new(MemoryKeyManager::new()),
        ds: f.ds.clone(),
    };
    let fresh = start(&f2, None).await;
    assert_ne!(fresh.x509_states().await.0.unwrap(), x);
}

#[tokio::test]
async fn manual_prepare_activate_taint_revoke() {
    let f = fixture().await;
    let ca = start(&f, None).await;
    let a = ca.x509_states().await.0.unwrap().authority_id;
    // Cannot taint the active authority.
    assert!(matches!(
        ca.taint_x509_authority(&a).await,
        Err(CaError::InvalidRequest(_))
    ));
    let b = ca.prepare_x509_authority().await.unwrap().authority_id;
    assert!(matches!(
        ca.activate_x509_authority("nope").await,
        Err(CaError::InvalidRequest(_))
    ));
    assert_eq!(
        ca.activate_x509_authority(&b).await.unwrap().authority_id,
        b
    );
    // Revoking before tainting is refused.
    assert!(matches!(
        ca.revoke_x509_authority(&a).await,
        Err(CaError::InvalidRequest(_))
    ));
    ca.taint_x509_authority(&a).await.unwrap();
    let bundle = f.ds.get_bundle(&td()).await.unwrap().unwrap();
    assert!(
        bundle
            .x509_authorities
            .iter()
            .any(|x| x.tainted && skid(&x.der) == a)
    );
    ca.revoke_x509_authority(&a).await.unwrap();
    let remaining: Vec<String> = bundle_certs(&f).await.iter().map(|d| skid(d)).collect();
    assert_eq!(remaining, vec![b]);

    // JWT: same flow by kid.
    let ja = ca.jwt_states().await.0.unwrap().authority_id;
    let jb = ca.prepare_jwt_authority().await.unwrap().authority_id;
    ca.activate_jwt_authority(&jb).await.unwrap();
    ca.taint_jwt_authority(&ja).await.unwrap();
    ca.revoke_jwt_authority(&ja).await.unwrap();
    let kids: Vec<String> =
        f.ds.get_bundle(&td())
            .await
            .unwrap()
            .unwrap()
            .jwt_authorities
            .into_iter()
            .map(|k| k.key_id)
            .collect();
    assert_eq!(kids, vec![jb]);
}

#[tokio::test]
async fn svid_lifetimes_are_capped_by_the_ca_and_jwt_key() {
    let f = fixture().await;
    let ca = start(&f, None).await;
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let chain = ca
        .sign_x509_svid(
            key.public_key(),
            &workload(),
            &[],
            Some(Duration::from_secs(100_000)),
        )
        .unwrap();
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    assert!(leaf.validity().not_after.timestamp() <= f.clock.now_unix() + CA_TTL as i64);
    let jwt = ca
        .sign_jwt_svid(
            &workload(),
            &["aud".to_string()],
            Some(Duration::from_secs(100_000)),
            true,
        )
        .unwrap();
    assert!(jwt.expires_at <= f.clock.now_unix() + CA_TTL as i64);
    assert_eq!(jwt.token.split('.').count(), 3);
}

#[tokio::test]
async fn server_svid_rotates_at_half_life() {
    let f = fixture().await;
    let ca = start(&f, None).await;
    let first = ca.server_svid().unwrap();
    let id = spire_crypto::x509svid::spiffe_id_from_cert(&first.chain[0]).unwrap();
    assert_eq!(id.to_string(), "spiffe://example.org/spire/server");
    f.clock.advance(Duration::from_secs(20));
    ca.rotate().await.unwrap();
    assert_eq!(ca.server_svid().unwrap().not_after, first.not_after);
    f.clock.advance(Duration::from_secs(20));
    ca.rotate().await.unwrap();
    assert_ne!(ca.server_svid().unwrap().not_after, first.not_after);
}

#[tokio::test]
async fn upstream_disk_makes_the_ca_an_intermediate() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let root = spire_testkit::TestCa::new("upstream root");
    let (cert_path, key_path) = root.write(dir.path(), "upstream").unwrap();
    let data = serde_json::json!({
        "cert_file_path": cert_path.display().to_string(),
        "key_file_path": key_path.display().to_string(),
    });
    let up =
        crate::plugin::upstreamauthority::DiskUpstreamAuthority::from_plugin_data(&data).unwrap();
    let ca = start(&f, Some(Arc::new(up))).await;
    // The bundle holds the upstream root, not the server CA.
    assert_eq!(bundle_certs(&f).await, vec![root.cert_der().to_vec()]);
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let chain = ca
        .sign_x509_svid(key.public_key(), &workload(), &[], None)
        .unwrap();
    assert_eq!(chain.len(), 2, "leaf + server CA");
    let (_, server_ca) = X509Certificate::from_der(&chain[1]).unwrap();
    let (_, root_cert) = X509Certificate::from_der(root.cert_der()).unwrap();
    server_ca
        .verify_signature(Some(root_cert.public_key()))
        .unwrap();
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    leaf.verify_signature(Some(server_ca.public_key())).unwrap();
    let state = ca.x509_states().await.0.unwrap();
    assert_eq!(
        state.upstream_authority_subject_key_id,
        skid(root.cert_der())
    );
    // Local authorities cannot be tainted under an upstream authority.
    assert!(matches!(
        ca.taint_x509_authority(&state.authority_id).await,
        Err(CaError::InvalidRequest(_))
    ));
}

/// An upstream that signs like `disk` and records JWT publications; its bundle is set by the
/// test.
#[derive(Debug)]
struct RecordingUpstream {
    disk: crate::plugin::upstreamauthority::DiskUpstreamAuthority,
    own_key: ds::JwtAuthority,
    published: std::sync::Mutex<Vec<ds::JwtAuthority>>,
    bundle: std::sync::Mutex<Option<ds::Bundle>>,
}

#[tonic::async_trait]
impl UpstreamAuthority for RecordingUpstream {
    async fn mint_x509_ca(
        &self,
        signer: &Arc<dyn Signer>,
        template: &CaTemplate,
        now: SystemTime,
    ) -> Result<
        crate::plugin::upstreamauthority::MintedCa,
        crate::plugin::upstreamauthority::UpstreamError,
    > {
        self.disk.mint_x509_ca(signer, template, now).await
    }

    async fn publish_jwt_key(
        &self,
        key: &ds::JwtAuthority,
    ) -> Result<Option<Vec<ds::JwtAuthority>>, crate::plugin::upstreamauthority::UpstreamError>
    {
        let mut published = self.published.lock().unwrap();
        published.push(key.clone());
        let mut all = vec![self.own_key.clone()];
        all.extend(published.iter().cloned());
        Ok(Some(all))
    }

    fn follows_bundle(&self) -> bool {
        true
    }

    async fn fetch_bundle(
        &self,
    ) -> Result<Option<ds::Bundle>, crate::plugin::upstreamauthority::UpstreamError> {
        Ok(self.bundle.lock().unwrap().clone())
    }
}

fn jwt_key(kid: &str) -> ds::JwtAuthority {
    ds::JwtAuthority {
        key_id: kid.into(),
        public_key: PrivateKey::generate(KeyType::EcP256)
            .unwrap()
            .public_key()
            .spki_der()
            .to_vec(),
        expires_at: 4_000_000_000,
        tainted: false,
    }
}

#[tokio::test]
async fn jwt_keys_are_published_upstream_and_the_upstream_bundle_is_followed() {
    let f = fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let root = spire_testkit::TestCa::new("upstream root");
    let (cert_path, key_path) = root.write(dir.path(), "upstream").unwrap();
    let data = serde_json::json!({
        "cert_file_path": cert_path.display().to_string(),
        "key_file_path": key_path.display().to_string(),
    });
    let up = Arc::new(RecordingUpstream {
        disk: crate::plugin::upstreamauthority::DiskUpstreamAuthority::from_plugin_data(&data)
            .unwrap(),
        own_key: jwt_key("upstream-kid"),
        published: std::sync::Mutex::new(Vec::new()),
        bundle: std::sync::Mutex::new(None),
    });
    let ca = start(&f, Some(up.clone() as Arc<dyn UpstreamAuthority>)).await;

    // The active JWT key went upstream before use; the upstream's keys joined the bundle.
    let active = ca.jwt_states().await.0.unwrap().authority_id;
    let published: Vec<String> = up
        .published
        .lock()
        .unwrap()
        .iter()
        .map(|k| k.key_id.clone())
        .collect();
    assert_eq!(published, vec![active.clone()]);
    let kids = |b: &ds::Bundle| -> Vec<String> {
        let mut v: Vec<String> = b.jwt_authorities.iter().map(|k| k.key_id.clone()).collect();
        v.sort();
        v
    };
    let mut want = vec![active.clone(), "upstream-kid".to_string()];
    want.sort();
    assert_eq!(kids(&ca.bundle().await.unwrap().unwrap()), want);

    // A downstream's key (PublishJWTAuthority) is forwarded upstream, then kept locally.
    let returned = ca.publish_jwt_key(jwt_key("downstream-kid")).await.unwrap();
    assert!(returned.iter().any(|k| k.key_id == "downstream-kid"));
    assert_eq!(up.published.lock().unwrap().len(), 2);
    assert!(kids(&ca.bundle().await.unwrap().unwrap()).contains(&"downstream-kid".to_string()));

    // Nothing new upstream: no change. New upstream authorities: appended once.
    assert!(!ca.sync_upstream_bundle().await.unwrap());
    let mut b = ds::Bundle::new(td());
    let next_root = spire_testkit::TestCa::new("next upstream root");
    b.x509_authorities = vec![
        ds::X509Authority {
            der: root.cert_der().to_vec(),
            tainted: false,
        },
        ds::X509Authority {
            der: next_root.cert_der().to_vec(),
            tainted: false,
        },
    ];
    b.jwt_authorities = vec![jwt_key("rotated-upstream-kid")];
    *up.bundle.lock().unwrap() = Some(b);
    let mut seq = ca.subscribe_bundle();
    seq.borrow_and_update();
    assert!(ca.sync_upstream_bundle().await.unwrap());
    assert!(seq.has_changed().unwrap(), "bundle watchers are notified");
    let stored = ca.bundle().await.unwrap().unwrap();
    assert_eq!(
        bundle_certs(&f).await,
        vec![root.cert_der().to_vec(), next_root.cert_der().to_vec()]
    );
    assert!(kids(&stored).contains(&"rotated-upstream-kid".to_string()));
    assert!(!ca.sync_upstream_bundle().await.unwrap());
}

/// Validity of a DER certificate, in Unix seconds.
fn validity_secs(der: &[u8]) -> (i64, i64) {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    )
}

#[tokio::test]
async fn clock_jump_forward_past_ca_expiry_rotates_at_the_next_check() {
    let f = fixture().await;
    let ca = start(&f, None).await;
    let old = ca.x509_states().await.0.unwrap().authority_id;
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();

    // The wall clock jumps past the CA's expiry with no successor prepared.
    f.clock.advance(Duration::from_secs(CA_TTL + 3600));
    let now = f.clock.now_unix();
    // Until the next check nothing is signed with the expired CA (no certificate that is
    // already expired or outlives its issuer).
    assert!(
        ca.sign_x509_svid(key.public_key(), &workload(), &[], None)
            .is_err()
    );
    // The next check (the loop ticks on tokio's monotonic clock) replaces it at once.
    ca.rotate().await.unwrap();
    let new = ca.x509_states().await.0.unwrap().authority_id;
    assert_ne!(new, old);
    let chain = ca
        .sign_x509_svid(key.public_key(), &workload(), &[], None)
        .unwrap();
    assert_eq!(issuer_key_id(&chain[0]), new);
    let (nb, na) = validity_secs(&chain[0]);
    assert!(nb <= now && now < na, "SVID {nb}..{na} at {now}");
    let svid = ca.server_svid().unwrap();
    assert!(svid.not_before <= now && now < svid.not_after);
    let jwt = ca
        .sign_jwt_svid(&workload(), &["aud".into()], None, false)
        .unwrap();
    assert!(jwt.issued_at <= now && now < jwt.expires_at);
}

#[tokio::test]
async fn clock_jump_backward_keeps_the_ca_and_issues_consistent_times() {
    let f = fixture().await;
    let ca = start(&f, None).await;
    let (active, _, _) = ca.x509_states().await;
    let active = active.unwrap();
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();

    // The wall clock jumps back a day, before the CA's notBefore.
    f.clock.rewind(Duration::from_secs(86_400));
    let now = f.clock.now_unix();
    ca.rotate().await.unwrap();
    let (after, prepared, _) = ca.x509_states().await;
    assert_eq!(after.unwrap().authority_id, active.authority_id);
    assert!(
        prepared.is_none(),
        "a backward jump must not start a rotation"
    );
    // SVIDs follow the server's clock, never outlive the CA, and are never inverted.
    let chain = ca
        .sign_x509_svid(key.public_key(), &workload(), &[], None)
        .unwrap();
    let (nb, na) = validity_secs(&chain[0]);
    assert!(nb <= now && now < na, "SVID {nb}..{na} at {now}");
    assert!(na <= active.expires_at);
    assert!(na - nb <= 60 + 10, "lifetime {} s", na - nb);

    // Back to the right time: the same CA keeps signing, rotation resumes on schedule.
    f.clock
        .advance(Duration::from_secs(86_400 + CA_TTL / 2 + 10));
    ca.rotate().await.unwrap();
    let (cur, prepared, _) = ca.x509_states().await;
    assert_eq!(cur.unwrap().authority_id, active.authority_id);
    assert!(prepared.is_some());
}

/// The refusals of the LocalAuthority operations, word for word, for both kinds of authority.
#[tokio::test]
async fn manual_operations_refuse_with_spire_messages() {
    fn msg<T: std::fmt::Debug>(r: Result<T, CaError>) -> (bool, String) {
        match r.unwrap_err() {
            CaError::InvalidRequest(m) => (true, m),
            CaError::NotFound(m) => (false, m),
            other => panic!("unexpected error {other:?}"),
        }
    }
    let f = fixture().await;
    let ca = start(&f, None).await;
    let a = ca.x509_states().await.0.unwrap().authority_id;
    let ja = ca.jwt_states().await.0.unwrap().authority_id;

    // Nothing prepared yet.
    let none = (true, "no prepared authority found".to_string());
    assert_eq!(msg(ca.activate_x509_authority(&a).await), none);
    assert_eq!(msg(ca.activate_jwt_authority(&ja).await), none);
    assert_eq!(ca.x509_states().await.1, None);
    assert_eq!(ca.jwt_states().await.1, None);

    // A prepared authority activates only by its own ID.
    let b = ca.prepare_x509_authority().await.unwrap().authority_id;
    let jb = ca.prepare_jwt_authority().await.unwrap().authority_id;
    assert_eq!(ca.x509_states().await.1.unwrap().authority_id, b);
    assert_eq!(ca.jwt_states().await.1.unwrap().authority_id, jb);
    assert_eq!(
        msg(ca.activate_x509_authority("x").await),
        (
            true,
            format!("unexpected authority ID \"x\": the prepared authority is {b:?}")
        )
    );
    assert_eq!(
        msg(ca.activate_jwt_authority("x").await),
        (
            true,
            format!("unexpected authority ID \"x\": the prepared authority is {jb:?}")
        )
    );
    // Only the old authority can be tainted or revoked.
    let prepared_only = (
        true,
        "only the old authority can be tainted or revoked".to_string(),
    );
    assert_eq!(msg(ca.taint_x509_authority(&b).await), prepared_only);
    assert_eq!(msg(ca.revoke_jwt_authority(&jb).await), prepared_only);
    let current = (
        true,
        "unable to use current authority: only the old authority can be tainted or revoked"
            .to_string(),
    );
    assert_eq!(msg(ca.taint_x509_authority(&a).await), current);
    assert_eq!(msg(ca.revoke_jwt_authority(&ja).await), current);
    let empty = (true, "no authority ID provided".to_string());
    assert_eq!(msg(ca.revoke_x509_authority("").await), empty);
    assert_eq!(msg(ca.taint_jwt_authority("").await), empty);
    assert_eq!(
        msg(ca.taint_jwt_authority("x").await),
        (false, "no old authority with ID \"x\"".to_string())
    );

    ca.activate_x509_authority(&b).await.unwrap();
    ca.activate_jwt_authority(&jb).await.unwrap();
    let (active, prepared, old) = ca.x509_states().await;
    assert_eq!(
        (
            active.unwrap().authority_id,
            prepared,
            old.unwrap().authority_id
        ),
        (b.clone(), None, a.clone())
    );
    let (active, prepared, old) = ca.jwt_states().await;
    assert_eq!(
        (
            active.unwrap().authority_id,
            prepared,
            old.unwrap().authority_id
        ),
        (jb.clone(), None, ja.clone())
    );
    assert_eq!(
        msg(ca.revoke_x509_authority(&a).await),
        (
            true,
            "it is not possible to revoke an untainted root CA".to_string()
        )
    );
    assert_eq!(
        msg(ca.revoke_jwt_authority(&ja).await),
        (
            true,
            "it is not possible to revoke an untainted JWT authority".to_string()
        )
    );
    assert_eq!(ca.taint_x509_authority(&a).await.unwrap().authority_id, a);
    assert_eq!(ca.taint_jwt_authority(&ja).await.unwrap().authority_id, ja);
    assert_eq!(
        msg(ca.taint_x509_authority(&a).await),
        (true, "root CA is already tainted".to_string())
    );
    assert_eq!(
        msg(ca.taint_jwt_authority(&ja).await),
        (true, "JWT authority is already tainted".to_string())
    );
    assert_eq!(ca.revoke_x509_authority(&a).await.unwrap().authority_id, a);
    assert_eq!(ca.revoke_jwt_authority(&ja).await.unwrap().authority_id, ja);
    // Gone from the bundle while the old slot still holds them.
    assert_eq!(
        msg(ca.taint_x509_authority(&a).await),
        (false, "no ca found with provided authority ID".to_string())
    );
    assert_eq!(
        msg(ca.revoke_jwt_authority(&ja).await),
        (
            false,
            "no JWT authority found with provided authority ID".to_string()
        )
    );
}
