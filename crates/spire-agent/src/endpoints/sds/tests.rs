//! SDS served in-process over a real Unix socket, fed hand-built snapshots, and called with the
//! envoy-types tonic client.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::{Node, data_source, node};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, SpiffeCertValidatorConfig, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::envoy::r#type::v3::SemanticVersion;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use prost::{Message as _, Name as _};
use spire_spiffe::{Bundle, TrustDomain};
use spire_testkit::{LeafSpec, TestCa};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

use super::build::SPIFFE_VALIDATOR_NAME;
use super::*;
use crate::attestor::workload::{Attestors, UnixAttestor, UnixAttestorConfig};
use crate::endpoints::explain::tests::entry;
use crate::identity::{
    BundleView, EntryView, Identity, IdentitySnapshot, JwtSvid, JwtSvidError, JwtSvidSource,
    WorkloadX509Svid,
};
use crate::peertracker::PeerStream;

fn td(s: &str) -> TrustDomain {
    s.parse().unwrap()
}

fn pem_to_ders(pem: &[u8]) -> Vec<Vec<u8>> {
    let text = std::str::from_utf8(pem).unwrap();
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.starts_with("-----BEGIN") {
            cur.clear();
        } else if line.starts_with("-----END") {
            out.push(
                base64::engine::general_purpose::STANDARD
                    .decode(&cur)
                    .unwrap(),
            );
        } else {
            cur.push_str(line);
        }
    }
    out
}

struct NoJwt;

impl JwtSvidSource for NoJwt {
    fn fetch_jwt_svid(
        &self,
        _entry: Arc<EntryView>,
        _audiences: Vec<String>,
    ) -> BoxFuture<'static, Result<JwtSvid, JwtSvidError>> {
        Box::pin(async { Err(JwtSvidError::Unavailable("not in this test".into())) })
    }
}

struct Fixture {
    ca: TestCa,
    fed_ca: TestCa,
}

impl Fixture {
    fn new() -> Self {
        Self {
            ca: TestCa::new("example.org root"),
            fed_ca: TestCa::new("other.org root"),
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
            private_key_pkcs8: Arc::new(zeroize::Zeroizing::new(
                pem_to_ders(issued.key_pem.as_bytes()).remove(0),
            )),
            not_before: SystemTime::now(),
            expires_at: SystemTime::now() + Duration::from_secs(3600),
        })
    }

    fn bundle(ca: &TestCa, name: &str) -> Arc<BundleView> {
        let mut b = Bundle::new(td(name));
        b.x509_authorities = vec![ca.cert_der().to_vec()];
        Arc::new(BundleView {
            trust_domain: td(name),
            x509_authorities: b.x509_authorities.clone(),
            bundle: b,
        })
    }

    fn snapshot(&self, revision: u64, entries: &[EntryView]) -> IdentitySnapshot {
        let identities = entries
            .iter()
            .map(|e| {
                (
                    e.entry_id.clone(),
                    Identity {
                        entry: Arc::new(e.clone()),
                        svid: Some(self.svid(e)),
                    },
                )
            })
            .collect();
        IdentitySnapshot {
            revision,
            trust_domain: td("example.org"),
            bundle: Some(Self::bundle(&self.ca, "example.org")),
            federated_bundles: BTreeMap::from([(
                td("other.org"),
                Self::bundle(&self.fed_ca, "other.org"),
            )]),
            identities,
        }
    }
}

fn my_sel() -> String {
    format!("unix:uid:{}", nix::unistd::geteuid().as_raw())
}

/// The caller's two entries (the second federates with other.org) and one for somebody else.
fn entries() -> Vec<EntryView> {
    let uid = nix::unistd::geteuid().as_raw();
    let first = entry("a-entry", "spiffe://example.org/workload", &[&my_sel()]);
    let mut second = entry("b-entry", "spiffe://example.org/second", &[&my_sel()]);
    second.federates_with = vec![td("other.org")];
    let other = entry(
        "c-entry",
        "spiffe://example.org/not-me",
        &[&format!("unix:uid:{}", uid.wrapping_add(1))],
    );
    vec![first, second, other]
}

struct Harness {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    tx: watch::Sender<Arc<IdentitySnapshot>>,
    shutdown: CancellationToken,
}

impl Harness {
    async fn start(first: IdentitySnapshot, settings: SdsSettings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let (tx, rx) = watch::channel(Arc::new(first));
        let state = Arc::new(WorkloadState {
            snapshots: rx,
            jwt: Arc::new(NoJwt),
            attestors: Attestors::new(vec![Arc::new(UnixAttestor::new(
                UnixAttestorConfig::default(),
            ))]),
            allow_unauthenticated_verifiers: false,
            allowed_foreign_jwt_claims: vec![],
            clock: Arc::new(spire_spiffe::SystemClock),
            svid_wait: Duration::from_secs(10),
            subscribers: crate::identity::SubscriberRegistry::new(),
        });
        let listener = crate::endpoints::bind_socket(&socket, 0o777).unwrap();
        let incoming = UnixListenerStream::new(listener).map(|r| r.map(PeerStream::new));
        let shutdown = CancellationToken::new();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SdsService::new(state, settings).into_server())
                .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned()),
        );
        Self {
            _dir: dir,
            socket,
            tx,
            shutdown,
        }
    }

    async fn client(&self) -> SecretDiscoveryServiceClient<Channel> {
        SecretDiscoveryServiceClient::new(crate::cli::uds_channel(&self.socket).await.unwrap())
    }

    fn publish(&self, snap: IdentitySnapshot) {
        self.tx.send(Arc::new(snap)).unwrap();
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn envoy_node(minor: u32, disable: Option<Kind>) -> Node {
    Node {
        id: "test".into(),
        metadata: disable.map(|k| Struct {
            fields: [(
                "disable_spiffe_cert_validation".to_owned(),
                Value { kind: Some(k) },
            )]
            .into(),
        }),
        user_agent_version_type: Some(node::UserAgentVersionType::UserAgentBuildVersion(
            envoy_types::pb::envoy::config::core::v3::BuildVersion {
                version: Some(SemanticVersion {
                    major_number: 1,
                    minor_number: minor,
                    patch: 0,
                }),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn request(names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(envoy_node(40, None)),
        resource_names: names.iter().map(|s| (*s).to_owned()).collect(),
        type_url: Secret::type_url(),
        ..Default::default()
    }
}

fn secrets(resp: &DiscoveryResponse) -> Vec<Secret> {
    resp.resources
        .iter()
        .map(|a| {
            assert_eq!(a.type_url, Secret::type_url());
            Secret::decode(a.value.as_slice()).unwrap()
        })
        .collect()
}

fn names(resp: &DiscoveryResponse) -> Vec<String> {
    secrets(resp).into_iter().map(|s| s.name).collect()
}

fn tls(s: &Secret) -> &TlsCertificate {
    match &s.r#type {
        Some(secret::Type::TlsCertificate(t)) => t,
        other => panic!("expected a TlsCertificate, got {other:?}"),
    }
}

fn vctx(s: &Secret) -> &CertificateValidationContext {
    match &s.r#type {
        Some(secret::Type::ValidationContext(v)) => v,
        other => panic!("expected a validation context, got {other:?}"),
    }
}

fn inline_bytes(d: Option<&envoy_types::pb::envoy::config::core::v3::DataSource>) -> &[u8] {
    match d.and_then(|d| d.specifier.as_ref()) {
        Some(data_source::Specifier::InlineBytes(b)) => b,
        other => panic!("expected inline bytes, got {other:?}"),
    }
}

/// The SPIFFE validator's trust domains and their CA DERs.
fn validator_tds(v: &CertificateValidationContext) -> Vec<(String, Vec<Vec<u8>>)> {
    assert!(v.trusted_ca.is_none());
    let cfg = v
        .custom_validator_config
        .as_ref()
        .expect("custom validator");
    assert_eq!(cfg.name, SPIFFE_VALIDATOR_NAME);
    let any = cfg.typed_config.as_ref().unwrap();
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig"
    );
    let cfg = SpiffeCertValidatorConfig::decode(any.value.as_slice()).unwrap();
    cfg.trust_domains
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                pem_to_ders(inline_bytes(t.trust_bundle.as_ref())),
            )
        })
        .collect()
}

fn leaf_of(t: &TlsCertificate) -> Vec<u8> {
    pem_to_ders(inline_bytes(t.certificate_chain.as_ref())).remove(0)
}

#[tokio::test]
async fn fetch_everything_when_no_names() {
    let fx = Fixture::new();
    let snap = fx.snapshot(1, &entries());
    let h = Harness::start(snap.clone(), SdsSettings::default()).await;
    let resp = h
        .client()
        .await
        .fetch_secrets(request(&[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        names(&resp),
        [
            "spiffe://example.org",
            "spiffe://other.org",
            "spiffe://example.org/workload",
            "spiffe://example.org/second",
        ]
    );
    assert_eq!(resp.version_info, "");
    assert_eq!(resp.nonce, "");
    let s = secrets(&resp);
    let first = snap.identities["a-entry"].svid.clone().unwrap();
    assert_eq!(leaf_of(tls(&s[2])), first.cert_chain[0]);
    // The private key is the SVID's PKCS#8 key, in PEM.
    let key = pem_to_ders(inline_bytes(tls(&s[2]).private_key.as_ref())).remove(0);
    assert_eq!(key.as_slice(), first.private_key_pkcs8.as_slice());
    assert_eq!(
        validator_tds(vctx(&s[0])),
        [("example.org".to_owned(), vec![fx.ca.cert_der().to_vec()])]
    );
    assert_eq!(
        validator_tds(vctx(&s[1])),
        [("other.org".to_owned(), vec![fx.fed_ca.cert_der().to_vec()])]
    );
}

#[tokio::test]
async fn default_rootca_and_all_names() {
    let fx = Fixture::new();
    let snap = fx.snapshot(1, &entries());
    let h = Harness::start(snap.clone(), SdsSettings::default()).await;
    let resp = h
        .client()
        .await
        .fetch_secrets(request(&["default", "ROOTCA", "ALL"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&resp), ["ROOTCA", "ALL", "default"]);
    let s = secrets(&resp);
    assert_eq!(
        leaf_of(tls(&s[2])),
        snap.identities["a-entry"].svid.as_ref().unwrap().cert_chain[0],
        "default is the first SVID"
    );
    assert_eq!(
        validator_tds(vctx(&s[0])),
        [("example.org".to_owned(), vec![fx.ca.cert_der().to_vec()])]
    );
    assert_eq!(
        validator_tds(vctx(&s[1])),
        [
            ("example.org".to_owned(), vec![fx.ca.cert_der().to_vec()]),
            ("other.org".to_owned(), vec![fx.fed_ca.cert_der().to_vec()]),
        ]
    );
}

#[tokio::test]
async fn configured_names_replace_the_defaults() {
    let fx = Fixture::new();
    let settings = SdsSettings {
        default_svid_name: "my-svid".into(),
        default_bundle_name: "my-ca".into(),
        default_all_bundles_name: "everything".into(),
        disable_spiffe_cert_validation: false,
    };
    let h = Harness::start(fx.snapshot(1, &entries()), settings).await;
    let mut c = h.client().await;
    let resp = c
        .fetch_secrets(request(&["my-svid", "my-ca", "everything"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&resp), ["my-ca", "everything", "my-svid"]);
    let err = c.fetch_secrets(request(&["default"])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn validator_off_gives_trusted_ca() {
    let fx = Fixture::new();
    let plain = |v: &CertificateValidationContext| {
        assert!(v.custom_validator_config.is_none());
        pem_to_ders(inline_bytes(v.trusted_ca.as_ref()))
    };
    // Globally disabled.
    let h = Harness::start(
        fx.snapshot(1, &entries()),
        SdsSettings {
            disable_spiffe_cert_validation: true,
            ..SdsSettings::default()
        },
    )
    .await;
    let mut c = h.client().await;
    let resp = c
        .fetch_secrets(request(&["spiffe://other.org"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        plain(vctx(&secrets(&resp)[0])),
        [fx.fed_ca.cert_der().to_vec()]
    );
    // ALL needs the validator.
    let err = c.fetch_secrets(request(&["ALL"])).await.unwrap_err();
    assert_eq!(err.code(), Code::Internal);
    // Node metadata re-enables it for one Envoy (string form, as Go's ParseBool reads it).
    let mut req = request(&["ROOTCA"]);
    req.node = Some(envoy_node(40, Some(Kind::StringValue("false".into()))));
    let resp = c.fetch_secrets(req).await.unwrap().into_inner();
    assert_eq!(validator_tds(vctx(&secrets(&resp)[0])).len(), 1);
    drop(h);

    // Enabled globally, disabled by node metadata.
    let h = Harness::start(fx.snapshot(1, &entries()), SdsSettings::default()).await;
    let mut c = h.client().await;
    let mut req = request(&["ROOTCA"]);
    req.node = Some(envoy_node(40, Some(Kind::BoolValue(true))));
    let resp = c.fetch_secrets(req).await.unwrap().into_inner();
    assert_eq!(plain(vctx(&secrets(&resp)[0])), [fx.ca.cert_der().to_vec()]);
    // Envoy older than 1.18 gets trusted_ca too.
    let mut req = request(&["ROOTCA"]);
    req.node = Some(envoy_node(17, None));
    let resp = c.fetch_secrets(req).await.unwrap().into_inner();
    assert_eq!(plain(vctx(&secrets(&resp)[0])), [fx.ca.cert_der().to_vec()]);
    // A malformed metadata value is ignored.
    let mut req = request(&["ROOTCA"]);
    req.node = Some(envoy_node(40, Some(Kind::StringValue("perhaps".into()))));
    let resp = c.fetch_secrets(req).await.unwrap().into_inner();
    assert_eq!(validator_tds(vctx(&secrets(&resp)[0])).len(), 1);
}

#[tokio::test]
async fn unauthorized_names_are_invalid_argument() {
    let fx = Fixture::new();
    let h = Harness::start(fx.snapshot(1, &entries()), SdsSettings::default()).await;
    let mut c = h.client().await;
    let err = c
        .fetch_secrets(request(&[
            "spiffe://example.org/workload",
            "spiffe://example.org/not-me",
            "spiffe://unknown.org",
        ]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "workload is not authorized for the requested identities \
         [\"spiffe://example.org/not-me\" \"spiffe://unknown.org\"]"
    );

    // On a stream, the error ends the stream.
    let (tx, rx) = mpsc::channel(4);
    tx.send(request(&["spiffe://example.org/not-me"]))
        .await
        .unwrap();
    let mut stream = c
        .stream_secrets(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn caller_without_entries_gets_bundles_only() {
    let fx = Fixture::new();
    let others: Vec<EntryView> = entries().into_iter().skip(2).collect();
    let h = Harness::start(fx.snapshot(1, &others), SdsSettings::default()).await;
    let mut c = h.client().await;
    let resp = c.fetch_secrets(request(&[])).await.unwrap().into_inner();
    assert_eq!(names(&resp), ["spiffe://example.org"]);
    let err = c.fetch_secrets(request(&["default"])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn delta_is_unimplemented() {
    let fx = Fixture::new();
    let h = Harness::start(fx.snapshot(1, &entries()), SdsSettings::default()).await;
    let (_tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(1);
    let err = h
        .client()
        .await
        .delta_secrets(ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
}

fn ack(resp: &DiscoveryResponse, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: resp.version_info.clone(),
        response_nonce: resp.nonce.clone(),
        ..request(names)
    }
}

#[tokio::test]
async fn stream_ack_nack_and_pushes() {
    let fx = Fixture::new();
    let mut ents = entries();
    let h = Harness::start(fx.snapshot(1, &ents), SdsSettings::default()).await;
    let mut c = h.client().await;
    let (tx, rx) = mpsc::channel(8);
    let mut stream = c
        .stream_secrets(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let workload = "spiffe://example.org/workload";

    // First request → first response.
    tx.send(request(&[workload, "ROOTCA"])).await.unwrap();
    let r1 = stream.message().await.unwrap().unwrap();
    assert_eq!(names(&r1), ["ROOTCA", workload]);
    assert_eq!(r1.version_info, "1");
    assert!(!r1.nonce.is_empty());
    assert_eq!(r1.type_url, Secret::type_url());

    // ACK: no resend. A stale nonce with other names: ignored. Then new names (a sync point):
    // the next message must answer them, so neither of the first two produced one.
    tx.send(ack(&r1, &[workload, "ROOTCA"])).await.unwrap();
    let mut stale = ack(&r1, &["default"]);
    stale.response_nonce = "not-the-last-nonce".into();
    tx.send(stale).await.unwrap();
    tx.send(ack(&r1, &[workload, "ROOTCA", "default"]))
        .await
        .unwrap();
    let r2 = stream.message().await.unwrap().unwrap();
    assert_eq!(names(&r2), ["ROOTCA", workload, "default"]);
    assert_eq!(r2.version_info, "2");
    assert_ne!(r2.nonce, r1.nonce);

    // NACK (error detail, previous version): logged, no resend loop.
    let mut nack = ack(&r2, &[workload, "ROOTCA", "default"]);
    nack.version_info = r1.version_info.clone();
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "bad secret".into(),
        details: vec![],
    });
    tx.send(nack).await.unwrap();

    // A snapshot change the caller cannot see: no push. Then a rotation of its SVID: push.
    ents[2].hint = "changed".into();
    let mut unrelated = fx.snapshot(2, &ents);
    for (id, identity) in &mut unrelated.identities {
        if id != "c-entry" {
            identity.svid = h.tx.borrow().identities[id].svid.clone();
        }
    }
    h.publish(unrelated.clone());
    let mut rotated = unrelated.clone();
    let new_svid = fx.svid(&ents[0]);
    rotated.revision = 3;
    rotated.identities.get_mut("a-entry").unwrap().svid = Some(new_svid.clone());
    h.publish(rotated.clone());
    let r3 = stream.message().await.unwrap().unwrap();
    assert_eq!(r3.version_info, "3");
    assert_eq!(names(&r3), ["ROOTCA", workload, "default"]);
    let s = secrets(&r3);
    assert_eq!(leaf_of(tls(&s[1])), new_svid.cert_chain[0]);
    assert_eq!(leaf_of(tls(&s[2])), new_svid.cert_chain[0]);
    tx.send(ack(&r3, &[workload, "ROOTCA", "default"]))
        .await
        .unwrap();

    // A bundle change: push.
    let new_ca = TestCa::new("example.org root 2");
    let mut bundle_changed = rotated.clone();
    bundle_changed.revision = 4;
    let mut b = (*Fixture::bundle(&fx.ca, "example.org")).clone();
    b.x509_authorities.push(new_ca.cert_der().to_vec());
    bundle_changed.bundle = Some(Arc::new(b));
    h.publish(bundle_changed);
    let r4 = stream.message().await.unwrap().unwrap();
    assert_eq!(r4.version_info, "4");
    assert_eq!(
        validator_tds(vctx(&secrets(&r4)[0])),
        [(
            "example.org".to_owned(),
            vec![fx.ca.cert_der().to_vec(), new_ca.cert_der().to_vec()]
        )]
    );

    // Closing the request side ends the stream.
    drop(tx);
    assert!(stream.message().await.unwrap().is_none());
}

#[tokio::test]
async fn stream_waits_for_the_bundle() {
    let fx = Fixture::new();
    let mut first = fx.snapshot(1, &entries());
    first.bundle = None;
    let h = Harness::start(first, SdsSettings::default()).await;
    let mut c = h.client().await;
    let (tx, rx) = mpsc::channel(8);
    let mut stream = c
        .stream_secrets(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(request(&["ROOTCA"])).await.unwrap();
    let mut c2 = h.client().await;
    let fetch = tokio::spawn(async move { c2.fetch_secrets(request(&["ROOTCA"])).await });
    // Give both requests time to reach the server (without a bundle they would fail with
    // InvalidArgument if the server did not wait); the outcome does not depend on the timing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.publish(fx.snapshot(2, &entries()));
    let r1 = stream.message().await.unwrap().unwrap();
    assert_eq!(names(&r1), ["ROOTCA"]);
    assert_eq!(r1.version_info, "1");
    let fetched = fetch.await.unwrap().unwrap().into_inner();
    assert_eq!(names(&fetched), ["ROOTCA"]);
}

fn agent_config(extra: &str) -> spire_config::AgentConfig {
    let text = format!(
        r#"agent {{
            trust_domain = "example.org"
            server_address = "127.0.0.1"
            server_port = 8081
            insecure_bootstrap = true
            {extra}
        }}
        plugins {{
            KeyManager "memory" {{
                plugin_data {{}}
            }}
            NodeAttestor "join_token" {{
                plugin_data {{}}
            }}
            WorkloadAttestor "unix" {{
                plugin_data {{}}
            }}
        }}"#
    );
    spire_config::AgentConfig::parse(&text, "agent.conf", &Default::default()).unwrap()
}

#[test]
fn sds_settings_from_the_agent_config() {
    let cfg = crate::endpoints::EndpointsConfig::from_agent_config(&agent_config("")).unwrap();
    assert_eq!(cfg.sds, Some(SdsSettings::default()));
    assert_eq!(
        SdsSettings::default(),
        SdsSettings {
            default_svid_name: "default".into(),
            default_bundle_name: "ROOTCA".into(),
            default_all_bundles_name: "ALL".into(),
            disable_spiffe_cert_validation: false,
        }
    );

    let cfg = crate::endpoints::EndpointsConfig::from_agent_config(&agent_config(
        r#"sds {
                default_svid_name = "svid"
                default_bundle_name = "ca"
                default_all_bundles_name = "all"
                disable_spiffe_cert_validation = true
            }"#,
    ))
    .unwrap();
    assert_eq!(
        cfg.sds,
        Some(SdsSettings {
            default_svid_name: "svid".into(),
            default_bundle_name: "ca".into(),
            default_all_bundles_name: "all".into(),
            disable_spiffe_cert_validation: true,
        })
    );

    let cfg = crate::endpoints::EndpointsConfig::from_agent_config(&agent_config(
        "disable_sds_api = true",
    ))
    .unwrap();
    assert_eq!(cfg.sds, None);
}

/// Serves the whole endpoints (Workload API socket) with `sds` and returns an SDS client.
async fn served(
    sds: Option<SdsSettings>,
    snap: IdentitySnapshot,
) -> (
    tempfile::TempDir,
    watch::Sender<Arc<IdentitySnapshot>>,
    CancellationToken,
    SecretDiscoveryServiceClient<Channel>,
) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let (tx, rx) = watch::channel(Arc::new(snap));
    let shutdown = CancellationToken::new();
    let cfg = crate::endpoints::EndpointsConfig {
        socket_path: socket.clone(),
        admin_socket_path: None,
        allow_unauthenticated_verifiers: false,
        allowed_foreign_jwt_claims: vec![],
        workload_attestors: crate::endpoints::WorkloadAttestorsConfig {
            unix: Some(UnixAttestorConfig::default()),
            k8s: None,
        },
        trust_domain: td("example.org"),
        sds,
        disable_workload_api: false,
    };
    tokio::spawn(crate::endpoints::serve(
        cfg,
        rx,
        Arc::new(NoJwt),
        shutdown.clone(),
    ));
    for _ in 0..500 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let client = SecretDiscoveryServiceClient::new(crate::cli::uds_channel(&socket).await.unwrap());
    (dir, tx, shutdown, client)
}

#[tokio::test]
async fn mounted_on_the_workload_socket_unless_disabled() {
    let fx = Fixture::new();
    let (_d, _tx, stop, mut c) =
        served(Some(SdsSettings::default()), fx.snapshot(1, &entries())).await;
    let resp = c
        .fetch_secrets(request(&["default"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(&resp), ["default"]);
    stop.cancel();

    let (_d, _tx, stop, mut c) = served(None, fx.snapshot(1, &entries())).await;
    let err = c.fetch_secrets(request(&["default"])).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    stop.cancel();
}
