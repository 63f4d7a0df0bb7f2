//! The Workload API served in-process over a real Unix socket, fed hand-built snapshots, and
//! called with the independent Rust `spiffe` crate (and a raw tonic client where the crate
//! hides the wire).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use futures::future::BoxFuture;
use spire_crypto::jwt::{JwtSvidClaims, sign_jwt_svid};
use spire_crypto::{KeyType, PrivateKey};
use spire_proto::workload as pb;
use spire_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use spire_spiffe::{Bundle, JwtAuthority, TrustDomain};
use spire_testkit::{LeafSpec, TestCa};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::explain::tests::entry;
use super::*;
use crate::identity::{
    BundleView, EntryView, Identity, JwtSvid, JwtSvidError, JwtSvidSource, WorkloadX509Svid,
};

fn pem_to_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn td(s: &str) -> TrustDomain {
    s.parse().unwrap()
}

fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Signs JWT-SVIDs with a fixed key, kid `k1`.
struct FakeJwt {
    key: Arc<PrivateKey>,
    fail: bool,
}

impl JwtSvidSource for FakeJwt {
    fn fetch_jwt_svid(
        &self,
        entry: Arc<EntryView>,
        audiences: Vec<String>,
    ) -> BoxFuture<'static, Result<JwtSvid, JwtSvidError>> {
        let now = SystemTime::now();
        let exp = now + Duration::from_secs(300);
        let res = if self.fail {
            Err(JwtSvidError::Unavailable("server down".into()))
        } else {
            let claims = JwtSvidClaims {
                spiffe_id: (*entry.spiffe_id).clone(),
                audience: audiences,
                issued_at: now,
                expires_at: exp,
                issuer: None,
                jwt_id: None,
            };
            Ok(JwtSvid {
                spiffe_id: (*entry.spiffe_id).clone(),
                token: sign_jwt_svid(self.key.as_ref(), "k1", None, &claims).unwrap(),
                expires_at: exp,
                hint: entry.hint.clone(),
            })
        };
        Box::pin(async move { res })
    }
}

struct Fixture {
    ca: TestCa,
    fed_ca: TestCa,
    jwt_key: Arc<PrivateKey>,
    fed_jwt_key: Arc<PrivateKey>,
}

impl Fixture {
    fn new() -> Self {
        Self {
            ca: TestCa::new("example.org root"),
            fed_ca: TestCa::new("other.org root"),
            jwt_key: Arc::new(PrivateKey::generate(KeyType::EcP256).unwrap()),
            fed_jwt_key: Arc::new(PrivateKey::generate(KeyType::EcP256).unwrap()),
        }
    }

    fn svid(&self, e: &EntryView) -> Arc<WorkloadX509Svid> {
        let issued = self
            .ca
            .issue(&LeafSpec::new("svid").uri(e.spiffe_id.as_str()));
        Arc::new(WorkloadX509Svid {
            entry_id: e.entry_id.clone(),
            spiffe_id: e.spiffe_id.clone(),
            cert_chain: vec![issued.cert_der],
            private_key_pkcs8: Arc::new(zeroize::Zeroizing::new(pem_to_der(&issued.key_pem))),
            not_before: SystemTime::now(),
            expires_at: SystemTime::now() + Duration::from_secs(3600),
        })
    }

    fn local_bundle(&self) -> Arc<BundleView> {
        let mut b = Bundle::new(td("example.org"));
        b.x509_authorities = vec![self.ca.cert_der().to_vec()];
        b.jwt_authorities = vec![JwtAuthority {
            key_id: "k1".into(),
            public_key: self.jwt_key.public_key().spki_der().to_vec(),
            expires_at: None,
        }];
        Arc::new(BundleView {
            trust_domain: td("example.org"),
            x509_authorities: b.x509_authorities.clone(),
            bundle: b,
        })
    }

    fn fed_bundle(&self) -> Arc<BundleView> {
        let mut b = Bundle::new(td("other.org"));
        b.x509_authorities = vec![self.fed_ca.cert_der().to_vec()];
        b.jwt_authorities = vec![JwtAuthority {
            key_id: "fed-1".into(),
            public_key: self.fed_jwt_key.public_key().spki_der().to_vec(),
            expires_at: None,
        }];
        Arc::new(BundleView {
            trust_domain: td("other.org"),
            x509_authorities: b.x509_authorities.clone(),
            bundle: b,
        })
    }

    /// A snapshot with `entries`, each signed when `signed`.
    fn snapshot(&self, revision: u64, entries: &[(EntryView, bool)]) -> Arc<IdentitySnapshot> {
        let mut identities = BTreeMap::new();
        for (e, signed) in entries {
            identities.insert(
                e.entry_id.clone(),
                Identity {
                    entry: Arc::new(e.clone()),
                    svid: signed.then(|| self.svid(e)),
                },
            );
        }
        let mut federated_bundles = BTreeMap::new();
        federated_bundles.insert(td("other.org"), self.fed_bundle());
        Arc::new(IdentitySnapshot {
            revision,
            trust_domain: td("example.org"),
            bundle: Some(self.local_bundle()),
            federated_bundles,
            identities,
        })
    }
}

/// The caller's two entries and one for somebody else.
fn standard_entries() -> Vec<(EntryView, bool)> {
    let uid = my_uid();
    let mut first = entry(
        "b-entry",
        "spiffe://example.org/workload",
        &[&format!("unix:uid:{uid}")],
    );
    first.hint = "main".into();
    let mut second = entry(
        "a-entry",
        "spiffe://example.org/second",
        &[&format!("unix:uid:{uid}")],
    );
    second.federates_with = vec![td("other.org")];
    let other = entry(
        "c-entry",
        "spiffe://example.org/not-me",
        &[&format!("unix:uid:{}", uid.wrapping_add(1))],
    );
    vec![(first, true), (second, true), (other, true)]
}

struct Harness {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    admin: PathBuf,
    tx: watch::Sender<Arc<IdentitySnapshot>>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), EndpointsError>>,
}

impl Harness {
    async fn start(first: Arc<IdentitySnapshot>, jwt: FakeJwt, allow_unauth: bool) -> Self {
        Self::start_with(first, jwt, allow_unauth, |c| c).await
    }

    async fn start_with(
        first: Arc<IdentitySnapshot>,
        jwt: FakeJwt,
        allow_unauth: bool,
        tweak: impl FnOnce(EndpointsConfig) -> EndpointsConfig,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("public").join("api.sock");
        let admin = dir.path().join("private").join("admin.sock");
        let (tx, rx) = watch::channel(first);
        let shutdown = CancellationToken::new();
        let cfg = EndpointsConfig {
            socket_path: socket.clone(),
            admin_socket_path: Some(admin.clone()),
            allow_unauthenticated_verifiers: allow_unauth,
            allowed_foreign_jwt_claims: vec![],
            workload_attestors: WorkloadAttestorsConfig {
                unix: Some(UnixAttestorConfig::default()),
                k8s: None,
            },
            trust_domain: td("example.org"),
            sds: Some(Default::default()),
            disable_workload_api: false,
        };
        let cfg = tweak(cfg);
        let task = tokio::spawn(serve(cfg, rx, Arc::new(jwt), shutdown.clone()));
        for _ in 0..200 {
            if admin.exists() && socket.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Self {
            _dir: dir,
            socket,
            admin,
            tx,
            shutdown,
            task,
        }
    }

    fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    async fn client(&self) -> spiffe::WorkloadApiClient {
        spiffe::WorkloadApiClient::connect_to(self.endpoint())
            .await
            .unwrap()
    }

    async fn raw(&self) -> SpiffeWorkloadApiClient<tonic::transport::Channel> {
        SpiffeWorkloadApiClient::new(crate::cli::uds_channel(&self.socket).await.unwrap())
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
        assert!(!self.socket.exists(), "socket removed on shutdown");
    }
}

fn with_header<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert(workload::SECURITY_HEADER, "true".parse().unwrap());
    r
}

fn bundle_source(f: &Fixture) -> Vec<Bundle> {
    vec![
        f.local_bundle().bundle.clone(),
        f.fed_bundle().bundle.clone(),
    ]
}

#[tokio::test]
async fn x509_context_through_the_spiffe_crate() {
    let f = Fixture::new();
    let h = Harness::start(
        f.snapshot(1, &standard_entries()),
        FakeJwt {
            key: f.jwt_key.clone(),
            fail: false,
        },
        false,
    )
    .await;
    let mode = std::fs::metadata(&h.socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o777
    );

    let c = h.client().await;
    let ctx = c.fetch_x509_context().await.unwrap();
    let ids: Vec<String> = ctx
        .svids()
        .iter()
        .map(|s| s.spiffe_id().to_string())
        .collect();
    // Ordered by entry ID: a-entry first, so it is the default; not-me is not given.
    assert_eq!(
        ids,
        [
            "spiffe://example.org/second",
            "spiffe://example.org/workload"
        ]
    );
    assert_eq!(
        ctx.default_svid().unwrap().spiffe_id().to_string(),
        "spiffe://example.org/second"
    );
    assert_eq!(ctx.svids()[1].hint(), Some("main"));
    let tds: Vec<String> = {
        let mut v: Vec<String> = ctx
            .bundle_set()
            .iter()
            .map(|(td, _)| td.to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(tds, ["example.org", "other.org"]);
    // Every delivered SVID passes our own validator against the bundle.
    for s in ctx.svids() {
        let chain: Vec<Vec<u8>> = s.cert_chain().iter().map(|c| c.as_ref().to_vec()).collect();
        let id = spire_crypto::validate_x509_svid(&chain, &bundle_source(&f), SystemTime::now())
            .unwrap();
        assert_eq!(id.to_string(), s.spiffe_id().to_string());
    }

    let bundles = c.fetch_x509_bundles().await.unwrap();
    assert_eq!(bundles.iter().count(), 2);
    h.stop().await;
}

#[tokio::test]
async fn jwt_fetch_and_validate() {
    let f = Fixture::new();
    let h = Harness::start(
        f.snapshot(1, &standard_entries()),
        FakeJwt {
            key: f.jwt_key.clone(),
            fail: false,
        },
        false,
    )
    .await;
    let c = h.client().await;
    let token = c.fetch_jwt_token(["aud1"], None).await.unwrap();
    let validated = c.validate_jwt_token("aud1", &token).await.unwrap();
    assert_eq!(
        validated.spiffe_id().to_string(),
        "spiffe://example.org/second"
    );
    assert!(c.validate_jwt_token("other-aud", &token).await.is_err());

    // A chosen SPIFFE ID; one the caller does not own is refused.
    let want: spiffe::SpiffeId = "spiffe://example.org/workload".parse().unwrap();
    let svid = c.fetch_jwt_svid(["aud1"], Some(&want)).await.unwrap();
    assert_eq!(svid.spiffe_id(), &want);
    let not_mine: spiffe::SpiffeId = "spiffe://example.org/not-me".parse().unwrap();
    assert!(c.fetch_jwt_svid(["aud1"], Some(&not_mine)).await.is_err());

    // Local validation with the JWT bundles the agent serves (a standard JWKS, as SPIRE's).
    let mut raw_bundles = h
        .raw()
        .await
        .fetch_jwt_bundles(with_header(pb::JwtBundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = raw_bundles.message().await.unwrap().unwrap();
    let jwks: serde_json::Value =
        serde_json::from_slice(&first.bundles["spiffe://example.org"]).unwrap();
    assert_eq!(jwks.as_object().unwrap().len(), 1, "only keys: {jwks}");
    assert_eq!(jwks["keys"][0]["kid"], "k1");
    assert!(jwks["keys"][0].get("use").is_none(), "{jwks}");
    drop(raw_bundles);
    let jwt_bundles = c.fetch_jwt_bundles().await.unwrap();
    spiffe::JwtSvid::parse_and_validate(&token, &jwt_bundles, &["aud1"]).unwrap();

    // Raw: claims come back with aud as an array, and missing fields are InvalidArgument.
    let mut raw = h.raw().await;
    let resp = raw
        .validate_jwtsvid(with_header(pb::ValidateJwtsvidRequest {
            audience: "aud1".into(),
            svid: token.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let claims = resp.claims.unwrap();
    assert!(matches!(
        claims.fields["aud"].kind,
        Some(prost_types::value::Kind::ListValue(_))
    ));
    let err = raw
        .fetch_jwtsvid(with_header(pb::JwtsvidRequest {
            audience: vec![],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = raw
        .validate_jwtsvid(with_header(pb::ValidateJwtsvidRequest {
            audience: "aud1".into(),
            svid: "not-a-token".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    h.stop().await;
}

#[tokio::test]
async fn jwt_signing_failure_is_unavailable() {
    let f = Fixture::new();
    let h = Harness::start(
        f.snapshot(1, &standard_entries()),
        FakeJwt {
            key: f.jwt_key.clone(),
            fail: true,
        },
        false,
    )
    .await;
    let mut raw = h.raw().await;
    let err = raw
        .fetch_jwtsvid(with_header(pb::JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    h.stop().await;
}

#[tokio::test]
async fn missing_header_is_invalid_argument_and_wit_is_unimplemented() {
    let f = Fixture::new();
    let h = Harness::start(
        f.snapshot(1, &standard_entries()),
        FakeJwt {
            key: f.jwt_key.clone(),
            fail: false,
        },
        false,
    )
    .await;
    let mut raw = h.raw().await;
    let err = raw
        .fetch_x509svid(tonic::Request::new(pb::X509svidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "security header missing from request");
    let mut wrong = tonic::Request::new(pb::JwtsvidRequest {
        audience: vec!["a".into()],
        spiffe_id: String::new(),
    });
    wrong
        .metadata_mut()
        .insert(workload::SECURITY_HEADER, "yes".parse().unwrap());
    assert_eq!(
        raw.fetch_jwtsvid(wrong).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let err = raw
        .fetch_witsvid(with_header(pb::WitsvidRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);

    // The health service answers on the same socket.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        crate::cli::uds_channel(&h.socket).await.unwrap(),
    );
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    h.stop().await;
}

#[tokio::test]
async fn no_identity_is_permission_denied_and_explain_names_the_gap() {
    let f = Fixture::new();
    let other = entry(
        "c-entry",
        "spiffe://example.org/not-me",
        &[&format!("unix:uid:{}", my_uid().wrapping_add(1))],
    );
    let h = Harness::start(
        f.snapshot(1, &[(other, true)]),
        FakeJwt {
            key: f.jwt_key.clone(),
            fail: false,
        },
        false,
    )
    .await;
    let mut raw = h.raw().await;
    let mut stream = raw
        .fetch_x509svid(with_header(pb::X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), "no identity issued");
    let err = raw
        .fetch_jwtsvid(with_header(pb::JwtsvidRequest {
            audience: vec!["a".into()],
            spiffe_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // Bundles need an identity unless allow_unauthenticated_verifiers.
    let mut bundles = raw
        .fetch_x509_bundles(with_header(pb::X509BundlesRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        bundles.message().await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // The admin socket explains it for this process.
    let mut admin = spire_proto::spire_rs::agent::explain_client::ExplainClient::new(
        crate::cli::uds_channel(&h.admin).await.unwrap(),
    );
    let pid = i32::try_from(std::process::id()).unwrap();
    let ex = admin
        .explain(spire_proto::spire_rs::agent::ExplainRequest {
            pid,
            max_nearest: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ex.pid, pid);
    assert!(ex.selectors.contains(&format!("unix:uid:{}", my_uid())));
    assert!(ex.matched.is_empty());
    assert_eq!(ex.nearest.len(), 1);
    assert_eq!(
        ex.nearest[0].missing_selectors,
        [format!("unix:uid:{}", my_uid().wrapping_add(1))]
    );
    h.stop().await;
}

#[tokio::test]
async fn unauthenticated_verifiers_get_bundles() {
    let f = Fixture::new();
    let h = Harness::start(
        f.snapshot(1, &[]),
        FakeJwt {
            key: f.jwt_key.clone(),
            fail: false,
        },
        true,
    )
    .await;
    let c = h.client().await;
    let x = c.fetch_x509_bundles().await.unwrap();
    // Only the local bundle: no entry federates with anything.
    assert_eq!(x.iter().count(), 1);
    let j = c.fetch_jwt_bundles().await.unwrap();
    assert_eq!(j.iter().count(), 1);
    h.stop().await;
}

#[tokio::test]
async fn streams_follow_snapshots_and_suppress_repeats() {
    let f = Fixture::new();
    let entries = standard_entries();
    let h = Harness::start(
        f.snapshot(1, &entries),
        FakeJwt {
            key: f.jwt_key.clone(),
            fail: false,
        },
        false,
    )
    .await;
    let mut raw = h.raw().await;
    let mut stream = raw
        .fetch_x509svid(with_header(pb::X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.svids.len(), 2);
    assert_eq!(
        first.federated_bundles.keys().collect::<Vec<_>>(),
        ["spiffe://other.org"]
    );

    // Same content under a new revision: nothing is sent. Then a real change is the next
    // message.
    let mut same = (*h.tx.borrow().clone()).clone();
    same.revision = 2;
    h.tx.send(Arc::new(same)).unwrap();
    let mut fewer = entries.clone();
    fewer.retain(|(e, _)| e.entry_id != "a-entry");
    let mut changed = (*f.snapshot(3, &fewer)).clone();
    // Keep the b-entry SVID from the first snapshot so only the set of SVIDs changes.
    let b = h.tx.borrow().identities["b-entry"].clone();
    changed.identities.insert("b-entry".into(), b);
    h.tx.send(Arc::new(changed)).unwrap();
    let second = stream.message().await.unwrap().unwrap();
    assert_eq!(second.svids.len(), 1);
    assert_eq!(second.svids[0].spiffe_id, "spiffe://example.org/workload");
    assert!(second.federated_bundles.is_empty());

    // Losing every identity ends the stream with PermissionDenied.
    h.tx.send(f.snapshot(4, &[])).unwrap();
    assert_eq!(
        stream.message().await.unwrap_err().code(),
        Code::PermissionDenied
    );
    h.stop().await;
}

#[tokio::test]
async fn a_caller_waits_for_svids_not_yet_signed() {
    let f = Fixture::new();
    let unsigned: Vec<(EntryView, bool)> = standard_entries()
        .into_iter()
        .map(|(e, _)| (e, false))
        .collect();
    let h = Harness::start(
        f.snapshot(1, &unsigned),
        FakeJwt {
            key: f.jwt_key.clone(),
            fail: false,
        },
        false,
    )
    .await;
    let c = h.client().await;
    let fetch = tokio::spawn(async move { c.fetch_x509_svid().await });
    // Wait until the stream task holds its own receiver (it is parked on the unsigned
    // entries), then publish the signed ones, which answer it.
    while h.tx.receiver_count() < 2 && !fetch.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.tx.send(f.snapshot(2, &standard_entries())).unwrap();
    let svid = fetch.await.unwrap().unwrap();
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/second");
    h.stop().await;
}

#[tokio::test]
async fn x509_source_observes_rotation() {
    let f = Fixture::new();
    let entries = standard_entries();
    let h = Harness::start(
        f.snapshot(1, &entries),
        FakeJwt {
            key: f.jwt_key.clone(),
            fail: false,
        },
        false,
    )
    .await;
    let source = spiffe::X509Source::builder()
        .endpoint(h.endpoint())
        .build()
        .await
        .unwrap();
    let before = source.svid().unwrap();
    let mut updates = source.updated();
    // Re-signed SVIDs (new keys and certificates) for the same entries.
    h.tx.send(f.snapshot(2, &entries)).unwrap();
    updates.changed().await.unwrap();
    let after = source.svid().unwrap();
    assert_eq!(before.spiffe_id(), after.spiffe_id());
    assert_ne!(
        before.leaf().as_ref(),
        after.leaf().as_ref(),
        "the source holds the rotated SVID"
    );
    source.shutdown().await;
    h.stop().await;
}

#[tokio::test]
async fn jwt_source_validates_locally() {
    let f = Fixture::new();
    let h = Harness::start(
        f.snapshot(1, &standard_entries()),
        FakeJwt {
            key: f.jwt_key.clone(),
            fail: false,
        },
        false,
    )
    .await;
    let source = spiffe::JwtSource::builder()
        .endpoint(h.endpoint())
        .build()
        .await
        .unwrap();
    let c = h.client().await;
    let token = c.fetch_jwt_token(["svc"], None).await.unwrap();
    let svid = spiffe::JwtSvid::parse_and_validate(&token, &source, &["svc"]).unwrap();
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/second");
    source.shutdown().await;
    h.stop().await;
}

#[test]
fn bind_socket_replaces_stale_sockets_but_not_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let l = bind_socket(&path, 0o777).unwrap();
        drop(l);
        // Stale socket file left behind: replaced.
        bind_socket(&path, 0o777).unwrap();
    });
    let file: &Path = &dir.path().join("plain");
    std::fs::write(file, b"x").unwrap();
    rt.block_on(async {
        assert!(bind_socket(file, 0o777).is_err());
    });
    assert_eq!(std::fs::read(file).unwrap(), b"x");
}

#[tokio::test]
async fn reflection_lists_the_workload_api() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let f = Fixture::new();
    let h = Harness::start(
        f.snapshot(1, &standard_entries()),
        FakeJwt {
            key: f.jwt_key.clone(),
            fail: false,
        },
        false,
    )
    .await;
    let mut c = ServerReflectionClient::new(crate::cli::uds_channel(&h.socket).await.unwrap());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = c
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer {msg:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(names, ["SpiffeWorkloadAPI", "grpc.health.v1.Health"]);
    // The symbol resolves to its file (the workload.proto descriptor).
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "SpiffeWorkloadAPI".into(),
        )),
    };
    let mut resp = c
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    assert!(
        matches!(
            msg.message_response,
            Some(MessageResponse::FileDescriptorResponse(ref r)) if !r.file_descriptor_proto.is_empty()
        ),
        "{msg:?}"
    );
    h.stop().await;
}

#[tokio::test]
async fn disable_workload_api_leaves_health_only() {
    let f = Fixture::new();
    let h = Harness::start_with(
        f.snapshot(1, &standard_entries()),
        FakeJwt {
            key: f.jwt_key.clone(),
            fail: false,
        },
        false,
        |c| EndpointsConfig {
            disable_workload_api: true,
            ..c
        },
    )
    .await;
    let mut raw = h.raw().await;
    let err = raw
        .fetch_x509svid(with_header(pb::X509svidRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        crate::cli::uds_channel(&h.socket).await.unwrap(),
    );
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    h.stop().await;
}

#[tokio::test]
async fn the_first_answer_waits_until_every_svid_is_signed() {
    let f = Fixture::new();
    // b-entry signed, a-entry (the lowest entry ID, so the default SVID) not yet.
    let partial: Vec<(EntryView, bool)> = standard_entries()
        .into_iter()
        .map(|(e, signed)| {
            let s = signed && e.entry_id != "a-entry";
            (e, s)
        })
        .collect();
    let h = Harness::start(
        f.snapshot(1, &partial),
        FakeJwt {
            key: f.jwt_key.clone(),
            fail: false,
        },
        false,
    )
    .await;
    let mut raw = h.raw().await;
    let fetch = tokio::spawn(async move {
        let mut stream = raw
            .fetch_x509svid(with_header(pb::X509svidRequest {}))
            .await
            .unwrap()
            .into_inner();
        stream.message().await.unwrap().unwrap()
    });
    // Until the stream task holds its receiver (or, were it not waiting, already answered).
    while h.tx.receiver_count() < 2 && !fetch.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.tx.send(f.snapshot(2, &standard_entries())).unwrap();
    let first = fetch.await.unwrap();
    let ids: Vec<&str> = first.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "spiffe://example.org/second",
            "spiffe://example.org/workload"
        ]
    );
    h.stop().await;
}

/// A JWT-SVID of `other.org` with an extra claim, signed with the federated key.
fn foreign_token(f: &Fixture, aud: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let exp = spire_spiffe::to_unix_secs(SystemTime::now()) + 300;
    let header = serde_json::json!({"alg": "ES256", "kid": "fed-1", "typ": "JWT"});
    let claims = serde_json::json!({
        "sub": "spiffe://other.org/svc", "aud": aud, "exp": exp, "iat": exp - 300,
        "department": "billing",
    });
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = f
        .fed_jwt_key
        .sign_jws(spire_crypto::JwsAlgorithm::ES256, signed.as_bytes())
        .unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[tokio::test]
async fn foreign_jwt_svids_validate_with_only_allowed_claims() {
    let f = Fixture::new();
    for (allowed, expect_department) in [(vec![], false), (vec!["department".to_owned()], true)] {
        let h = Harness::start_with(
            f.snapshot(1, &standard_entries()),
            FakeJwt {
                key: f.jwt_key.clone(),
                fail: false,
            },
            false,
            |c| EndpointsConfig {
                allowed_foreign_jwt_claims: allowed,
                ..c
            },
        )
        .await;
        let mut raw = h.raw().await;
        let resp = raw
            .validate_jwtsvid(with_header(pb::ValidateJwtsvidRequest {
                audience: "billing-api".into(),
                svid: foreign_token(&f, "billing-api"),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.spiffe_id, "spiffe://other.org/svc");
        let claims = resp.claims.unwrap().fields;
        assert!(claims.contains_key("sub") && claims.contains_key("exp"));
        // `aud` was a string in the token and comes back as a list.
        assert!(matches!(
            claims["aud"].kind,
            Some(prost_types::value::Kind::ListValue(_))
        ));
        assert_eq!(claims.contains_key("department"), expect_department);
        h.stop().await;
    }
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_open_streams() {
    let f = Fixture::new();
    let h = Harness::start(
        f.snapshot(1, &standard_entries()),
        FakeJwt {
            key: f.jwt_key.clone(),
            fail: false,
        },
        false,
    )
    .await;
    let mut raw = h.raw().await;
    let mut stream = raw
        .fetch_x509svid(with_header(pb::X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    // The stream stays open; stop() must still return (after the grace period) and the
    // client sees its stream end.
    h.stop().await;
    assert!(!matches!(stream.message().await, Ok(Some(_))));
}
