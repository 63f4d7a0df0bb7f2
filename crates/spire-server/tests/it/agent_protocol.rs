//! The agent-facing protocol over real mTLS on loopback, with a hand-built tonic client
//! (the way SPIRE's agent uses it): attestation, authorization, sync, signing, Watch.

use std::sync::Arc;
use std::time::Duration;

use spire_crypto::{KeyType, PrivateKey};
use spire_datastore::{AttestedNode, Entry, NodeFilter};
use spire_proto::server::{agent as apb, entry as epb, svid as spb};
use spire_proto::spire_rs::agent as wpb;
use spire_proto::types;
use spire_proto::types::permission_denied_details::Reason;
use spire_server::ServerState;
use spire_spiffe::{Selector, Selectors, SpiffeId, SystemClock};
use spire_testkit::{IssuedCert, LeafSpec, TestCa};
use spire_tls::{BundleSet, Identity};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::common::{self, Agent, InProcess, selector_strings};

const TD: &str = "example.org";
const WAIT: Duration = Duration::from_secs(20);

struct Server {
    state: Arc<ServerState>,
    addr: String,
    bundles: BundleSet,
    _run: InProcess,
    _dir: tempfile::TempDir,
}

async fn start(x509pop_ca: Option<&TestCa>) -> Server {
    start_with(x509pop_ca, &[]).await
}

async fn start_with(x509pop_ca: Option<&TestCa>, settings: &[(&str, &str)]) -> Server {
    start_full(x509pop_ca, settings, &[]).await
}

/// A server with extra `key = <raw HCL>` settings in `server {}` and extra plugin blocks.
async fn start_full(
    x509pop_ca: Option<&TestCa>,
    settings: &[(&str, &str)],
    plugins: &[&str],
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = spire_testkit::ServerConfig::new(TD, dir.path());
    for (k, v) in settings {
        cfg = cfg.setting(k, v);
    }
    for p in plugins {
        cfg = cfg.plugin(p);
    }
    if let Some(ca) = x509pop_ca {
        let (ca_path, _) = ca.write(dir.path(), "x509pop-ca").unwrap();
        cfg = cfg.x509pop(ca_path);
    }
    let run = InProcess::start(&cfg, Arc::new(SystemClock), WAIT).await;
    let bundle = run.state.ca.bundle().await.unwrap().unwrap();
    let td: spire_spiffe::TrustDomain = TD.parse().unwrap();
    let bundles =
        BundleSet::with_roots(td, bundle.x509_authorities.iter().map(|a| a.der.clone())).unwrap();
    Server {
        state: Arc::clone(&run.state),
        addr: cfg.server_address(),
        bundles,
        _run: run,
        _dir: dir,
    }
}

impl Server {
    async fn channel(&self, identity: Option<Identity>) -> Channel {
        common::tls_channel(&self.addr, TD, self.bundles.clone(), identity).await
    }

    async fn token(&self, token: &str, ttl: i64) {
        let now = self.state.clock.now_unix();
        self.state
            .datastore
            .create_join_token(token, now + ttl)
            .await
            .unwrap();
    }

    async fn entry(&self, spiffe: &str, parent: &str, selectors: &[&str]) -> Entry {
        let e = Entry::new(id(spiffe), id(parent), sels(selectors));
        self.state.datastore.create_entry(&e).await.unwrap()
    }

    /// The stored attested node `id` (which must exist).
    async fn node(&self, id: &SpiffeId) -> AttestedNode {
        self.state
            .datastore
            .get_attested_node(id)
            .await
            .unwrap()
            .unwrap()
    }

    async fn node_count(&self) -> i64 {
        self.state
            .datastore
            .count_attested_nodes(&NodeFilter::default())
            .await
            .unwrap()
    }

    async fn ban(&self, id: &SpiffeId) {
        self.state.datastore.ban_attested_node(id).await.unwrap();
    }
}

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

fn sels(list: &[&str]) -> Selectors {
    list.iter()
        .map(|s| s.parse::<Selector>().unwrap())
        .collect()
}

/// Runs AttestAgent; `answer` computes the response to each challenge.
async fn attest(
    server: &Server,
    kind: &str,
    payload: Vec<u8>,
    answer: impl Fn(&[u8]) -> Vec<u8>,
) -> Result<Agent, Status> {
    common::attest(server.channel(None).await, kind, payload, |c| Ok(answer(c))).await
}

async fn attest_token(server: &Server, token: &str) -> Result<Agent, Status> {
    attest(server, "join_token", token.as_bytes().to_vec(), |_| {
        Vec::new()
    })
    .await
}

/// The x509pop payload for `cert` (leaf only).
fn x509pop_payload(cert: &IssuedCert) -> Vec<u8> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    serde_json::to_vec(&serde_json::json!({ "certificates": [b64.encode(&cert.cert_der)] }))
        .unwrap()
}

/// Answers an x509pop ECDSA challenge with `key_pem` (PKCS#8 P-256), as SPIRE's agent does:
/// a fresh nonce and an ECDSA signature over SHA-256(challenge nonce || our nonce).
fn x509pop_answer(key_pem: &str, challenge: &[u8]) -> Vec<u8> {
    use aws_lc_rs::rand::SecureRandom as _;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let c: serde_json::Value = serde_json::from_slice(challenge).unwrap();
    let nonce = b64
        .decode(c["ecdsa_signature"]["nonce"].as_str().unwrap())
        .unwrap();
    let mut mine = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut mine)
        .unwrap();
    let der = pem::parse(key_pem).unwrap().into_contents();
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).unwrap();
    let msg = [nonce.as_slice(), &mine].concat();
    let sig = kp
        .sign(&aws_lc_rs::rand::SystemRandom::new(), &msg)
        .unwrap();
    let (r, s) = sig.as_ref().split_at(32);
    serde_json::to_vec(&serde_json::json!({
        "rsa_signature": null,
        "ecdsa_signature": { "nonce": b64.encode(mine), "r": b64.encode(r), "s": b64.encode(s) }
    }))
    .unwrap()
}

async fn attest_x509pop(
    server: &Server,
    cert: &IssuedCert,
    signer_pem: &str,
) -> Result<Agent, Status> {
    let pem = signer_pem.to_string();
    attest(server, "x509pop", x509pop_payload(cert), move |c| {
        x509pop_answer(&pem, c)
    })
    .await
}

async fn authorized_ids(server: &Server, agent: &Agent) -> Result<Vec<String>, Status> {
    common::authorized_ids(server.channel(Some(agent.identity())).await).await
}

/// BatchNewX509SVID as `agent` for one entry, with a fresh key's CSR.
async fn new_x509svid(
    server: &Server,
    agent: &Agent,
    entry_id: &str,
) -> Result<spb::BatchNewX509svidResponse, Status> {
    let mut svid = spb::svid_client::SvidClient::new(server.channel(Some(agent.identity())).await);
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    svid.batch_new_x509svid(spb::BatchNewX509svidRequest {
        params: vec![spb::NewX509svidParams {
            entry_id: entry_id.to_owned(),
            csr: spire_crypto::create_csr(&key, None).unwrap(),
        }],
    })
    .await
    .map(tonic::Response::into_inner)
}

/// RenewAgent as `agent` with a CSR for `key`.
async fn renew(
    server: &Server,
    agent: &Agent,
    key: &PrivateKey,
) -> Result<types::X509svid, Status> {
    let mut client =
        apb::agent_client::AgentClient::new(server.channel(Some(agent.identity())).await);
    let r = client
        .renew_agent(apb::RenewAgentRequest {
            params: Some(apb::AgentX509svidParams {
                csr: spire_crypto::create_csr(key, None).unwrap(),
            }),
        })
        .await?;
    Ok(r.into_inner().svid.unwrap())
}

/// Opens a Watch stream as `agent` from `known_revision`.
async fn open_watch(
    server: &Server,
    agent: &Agent,
    known_revision: u64,
    agent_version: &str,
) -> tonic::Streaming<wpb::WatchResponse> {
    let mut watch =
        wpb::watch_client::WatchClient::new(server.channel(Some(agent.identity())).await);
    watch
        .watch(wpb::WatchRequest {
            known_revision,
            agent_version: agent_version.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Waits until the index shows the agent exactly `want` entries.
async fn wait_authorized(server: &Server, agent: &Agent, want: &[&str]) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    spire_testkit::wait_until(WAIT, "authorized entries to match", async || {
        authorized_ids(server, agent).await.ok().as_ref() == Some(&want)
    })
    .await
    .unwrap();
}

/// GetAuthorizedEntries as `agent` is refused: the reason it names.
async fn refusal(server: &Server, agent: &Agent) -> Reason {
    denied_reason(&authorized_ids(server, agent).await.unwrap_err())
}

/// The reason in a PermissionDenied status's details.
fn denied_reason(s: &Status) -> Reason {
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
        #[prost(message, repeated, tag = "3")]
        details: Vec<prost_types::Any>,
    }
    let rpc: RpcStatus = prost::Message::decode(s.details()).unwrap();
    let d: types::PermissionDeniedDetails =
        prost::Message::decode(rpc.details[0].value.as_slice()).unwrap();
    Reason::try_from(d.reason).unwrap()
}

#[tokio::test]
async fn join_token_attests_once_and_not_after_expiry() {
    let server = start(None).await;
    server.token("tok-1", 600).await;
    let agent = attest_token(&server, "tok-1").await.unwrap();
    assert_eq!(
        agent.id().as_str(),
        "spiffe://example.org/spire/agent/join_token/tok-1"
    );
    assert!(!agent.reattestable);
    let node = server.node(&agent.id()).await;
    assert_eq!(node.attestation_type, "join_token");
    assert_eq!(node.cert_serial_number, agent.serial());
    assert!(!node.can_reattest);

    let again = attest_token(&server, "tok-1").await.err().unwrap();
    assert_eq!(again.code(), Code::InvalidArgument, "{again:?}");
    assert!(
        again
            .message()
            .contains("does not exist or has already been used"),
        "{again:?}"
    );

    server.token("tok-old", -10).await;
    let expired = attest_token(&server, "tok-old").await.err().unwrap();
    assert_eq!(expired.code(), Code::InvalidArgument);
    assert!(expired.message().contains("expired"), "{expired:?}");
    let unknown = attest_token(&server, "never-made").await.err().unwrap();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    let count = server.node_count().await;
    assert_eq!(count, 1);
}

#[tokio::test]
async fn x509pop_attests_with_selectors_and_rejects_bad_proofs() {
    let ca = TestCa::new("node CA");
    let other_ca = TestCa::new("other CA");
    let server = start(Some(&ca)).await;
    let cert = ca.issue(&LeafSpec::new("node1").serial(0x0abc));
    let agent = attest_x509pop(&server, &cert, &cert.key_pem).await.unwrap();
    assert_eq!(
        agent.id().as_str(),
        format!(
            "spiffe://example.org/spire/agent/x509pop/{}",
            cert.sha1_fingerprint()
        )
    );
    assert!(agent.reattestable);
    let node = server.node(&agent.id()).await;
    let got: Vec<String> = node.selectors.iter().map(|s| s.to_string()).collect();
    for want in [
        "x509pop:subject:cn:node1".to_string(),
        format!("x509pop:ca:fingerprint:{}", ca.sha1_fingerprint()),
        "x509pop:serialnumber:0abc".to_string(),
    ] {
        assert!(got.contains(&want), "{want} not in {got:?}");
    }
    assert!(node.can_reattest);

    // Re-attestation of the same node works and replaces the SVID serial.
    let again = attest_x509pop(&server, &cert, &cert.key_pem).await.unwrap();
    let node = server.node(&agent.id()).await;
    assert_eq!(node.cert_serial_number, again.serial());

    // A certificate from a CA the server does not trust.
    let foreign = other_ca.issue_leaf("node2");
    let e = attest_x509pop(&server, &foreign, &foreign.key_pem)
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // The right certificate, but the challenge signed with another key.
    let stranger = ca.issue_leaf("node3");
    let e = attest_x509pop(&server, &stranger, &cert.key_pem)
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message()
            .contains("challenge response verification failed"),
        "{e:?}"
    );
    let count = server.node_count().await;
    assert_eq!(count, 1);

    // A banned node cannot re-attest.
    server.ban(&agent.id()).await;
    let e = attest_x509pop(&server, &cert, &cert.key_pem)
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("banned"), "{e:?}");
}

#[tokio::test]
async fn agents_only_get_svids_for_their_entries() {
    let server = start(None).await;
    server.token("a", 600).await;
    server.token("b", 600).await;
    let a = attest_token(&server, "a").await.unwrap();
    let b = attest_token(&server, "b").await.unwrap();
    let ea = server
        .entry("spiffe://example.org/wa", a.id().as_str(), &["unix:uid:1"])
        .await;
    let eb = server
        .entry("spiffe://example.org/wb", b.id().as_str(), &["unix:uid:1"])
        .await;
    wait_authorized(&server, &a, &[&ea.id]).await;
    wait_authorized(&server, &b, &[&eb.id]).await;

    let mut svid = spb::svid_client::SvidClient::new(server.channel(Some(a.identity())).await);
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let csr = spire_crypto::create_csr(&key, None).unwrap();
    let resp = svid
        .batch_new_x509svid(spb::BatchNewX509svidRequest {
            params: vec![
                spb::NewX509svidParams {
                    entry_id: eb.id.clone(),
                    csr: csr.clone(),
                },
                spb::NewX509svidParams {
                    entry_id: ea.id.clone(),
                    csr: csr.clone(),
                },
                spb::NewX509svidParams {
                    entry_id: ea.id.clone(),
                    csr: b"not a csr".to_vec(),
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let r = &resp.results;
    assert_eq!(
        r[0].status.as_ref().unwrap().code,
        Code::PermissionDenied as i32
    );
    assert!(r[0].svid.is_none());
    assert_eq!(r[1].status.as_ref().unwrap().code, 0);
    let issued = r[1].svid.as_ref().unwrap();
    assert_eq!(
        spire_crypto::spiffe_id_from_cert(&issued.cert_chain[0])
            .unwrap()
            .as_str(),
        "spiffe://example.org/wa"
    );
    assert_eq!(
        r[2].status.as_ref().unwrap().code,
        Code::InvalidArgument as i32
    );

    // JWT-SVIDs follow the same rule.
    let e = svid
        .new_jwtsvid(spb::NewJwtsvidRequest {
            entry_id: eb.id.clone(),
            audience: vec!["x".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let jwt = svid
        .new_jwtsvid(spb::NewJwtsvidRequest {
            entry_id: ea.id.clone(),
            audience: vec!["x".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .svid
        .unwrap();
    assert_eq!(jwt.id.unwrap().path, "/wa");

    // Without a client certificate the agent RPCs are refused.
    let mut anon = epb::entry_client::EntryClient::new(server.channel(None).await);
    let e = anon
        .get_authorized_entries(epb::GetAuthorizedEntriesRequest { output_mask: None })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Admin-only RPCs are refused to agents.
    let mut admin = apb::agent_client::AgentClient::new(server.channel(Some(a.identity())).await);
    let e = admin
        .count_agents(apb::CountAgentsRequest { filter: None })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // PostStatus records the version.
    admin
        .post_status(apb::PostStatusRequest {
            current_bundle_serial: 0,
            agent_version: "9.9.9".into(),
        })
        .await
        .unwrap();
    let node = server.node(&a.id()).await;
    assert_eq!(node.agent_version, "9.9.9");
}

#[tokio::test]
async fn banned_agent_is_refused_on_its_next_call() {
    let server = start(None).await;
    server.token("ban-me", 600).await;
    let a = attest_token(&server, "ban-me").await.unwrap();
    let e1 = server
        .entry("spiffe://example.org/w", a.id().as_str(), &["unix:uid:1"])
        .await;
    wait_authorized(&server, &a, &[&e1.id]).await;

    let mut stream = open_watch(&server, &a, 0, "").await;
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.changes, vec![wpb::Change::Unspecified as i32]);

    server.ban(&a.id()).await;
    let e = authorized_ids(&server, &a).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(denied_reason(&e), Reason::AgentBanned);
    let e = new_x509svid(&server, &a, &e1.id).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // The Watch stream ends with PermissionDenied.
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(s) => return Some(s),
            }
        }
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(end.code(), Code::PermissionDenied);

    // Evicted (deleted) agents are not attested any more.
    server
        .state
        .datastore
        .delete_attested_node(&a.id())
        .await
        .unwrap();
    assert_eq!(refusal(&server, &a).await, Reason::AgentNotAttested);
}

#[tokio::test]
async fn entries_reach_agents_through_node_aliases() {
    let ca = TestCa::new("node CA");
    let server = start(Some(&ca)).await;
    let cert = ca.issue_leaf("web-node");
    let agent = attest_x509pop(&server, &cert, &cert.key_pem).await.unwrap();
    let other = ca.issue_leaf("db-node");
    let other_agent = attest_x509pop(&server, &other, &other.key_pem)
        .await
        .unwrap();
    let alias = server
        .entry(
            "spiffe://example.org/node/web",
            "spiffe://example.org/spire/server",
            &["x509pop:subject:cn:web-node"],
        )
        .await;
    let w1 = server
        .entry(
            "spiffe://example.org/web",
            "spiffe://example.org/node/web",
            &["unix:uid:1"],
        )
        .await;
    // Nested below a workload entry.
    let w2 = server
        .entry(
            "spiffe://example.org/web/sidecar",
            "spiffe://example.org/web",
            &["unix:uid:2"],
        )
        .await;
    wait_authorized(&server, &agent, &[&w1.id, &w2.id]).await;
    wait_authorized(&server, &other_agent, &[]).await;
    let ids = authorized_ids(&server, &agent).await.unwrap();
    assert!(!ids.contains(&alias.id));

    let resp = new_x509svid(&server, &agent, &w2.id).await.unwrap();
    assert_eq!(resp.results[0].status.as_ref().unwrap().code, 0);
}

#[tokio::test]
async fn sync_authorized_entries_pages_revisions_and_serves_requested_ids() {
    let server = start(None).await;
    server.token("many", 600).await;
    let a = attest_token(&server, "many").await.unwrap();
    let entries: Vec<Entry> = (0..1201)
        .map(|i| {
            Entry::new(
                id(&format!("spiffe://example.org/w/{i}")),
                a.id(),
                sels(&["unix:uid:1"]),
            )
        })
        .collect();
    let created = server
        .state
        .datastore
        .create_entries_atomic(&entries)
        .await
        .unwrap();
    assert_eq!(created.len(), 1201);
    let mut entry = epb::entry_client::EntryClient::new(server.channel(Some(a.identity())).await);
    spire_testkit::wait_until(WAIT, "the index to hold 1201 entries", async || {
        authorized_ids(&server, &a)
            .await
            .map(|v| v.len())
            .unwrap_or(0)
            == 1201
    })
    .await
    .unwrap();

    let (tx, rx) = mpsc::channel(4);
    tx.send(epb::SyncAuthorizedEntriesRequest {
        output_mask: None,
        ids: Vec::new(),
    })
    .await
    .unwrap();
    let mut stream = entry
        .sync_authorized_entries(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut revisions = Vec::new();
    let mut pages = Vec::new();
    loop {
        let r = stream.message().await.unwrap().unwrap();
        assert!(r.entries.is_empty());
        pages.push(r.entry_revisions.len());
        revisions.extend(r.entry_revisions);
        if !r.more {
            break;
        }
    }
    assert_eq!(pages, vec![500, 500, 201]);
    assert_eq!(revisions.len(), 1201);
    let wanted: Vec<String> = revisions.iter().take(3).map(|r| r.id.clone()).collect();
    tx.send(epb::SyncAuthorizedEntriesRequest {
        output_mask: None,
        ids: wanted.clone(),
    })
    .await
    .unwrap();
    let r = stream.message().await.unwrap().unwrap();
    assert!(!r.more);
    let mut got: Vec<String> = r.entries.iter().map(|e| e.id.clone()).collect();
    got.sort();
    let mut wanted = wanted;
    wanted.sort();
    assert_eq!(got, wanted);
    drop(tx);
    assert!(stream.message().await.unwrap().is_none());

    // Masking the revision number is refused.
    let (tx, rx) = mpsc::channel(1);
    tx.send(epb::SyncAuthorizedEntriesRequest {
        output_mask: Some(types::EntryMask::default()),
        ids: Vec::new(),
    })
    .await
    .unwrap();
    let mut stream = entry
        .sync_authorized_entries(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stream.message().await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn watch_announces_new_entries_for_the_agent() {
    let server = start(None).await;
    server.token("w1", 600).await;
    server.token("w2", 600).await;
    let a = attest_token(&server, "w1").await.unwrap();
    let b = attest_token(&server, "w2").await.unwrap();
    let mut stream = open_watch(&server, &a, 0, "test").await;
    let first = stream.message().await.unwrap().unwrap();
    let start_rev = first.revision;

    // An entry for another agent, then one for this agent.
    server
        .entry("spiffe://example.org/b", b.id().as_str(), &["unix:uid:1"])
        .await;
    let mine = server
        .entry("spiffe://example.org/a", a.id().as_str(), &["unix:uid:1"])
        .await;
    let latest = server.state.datastore.latest_change_id().await.unwrap();
    let note = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        note.changes.contains(&(wpb::Change::Entries as i32)),
        "{note:?}"
    );
    assert!(note.revision > start_rev);
    // Everything up to our entry is covered by the time we hear of a change for us.
    let mut rev = note.revision;
    while rev < u64::try_from(latest).unwrap() {
        let n = tokio::time::timeout(WAIT, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        rev = n.revision;
    }
    wait_authorized(&server, &a, &[&mine.id]).await;

    // Reconnecting with the current revision: nothing to do.
    let mut again = open_watch(&server, &a, rev, "").await;
    let first = again.message().await.unwrap().unwrap();
    assert_eq!(first.changes, vec![wpb::Change::None as i32]);
}

#[tokio::test]
async fn renew_rotates_the_serial_and_retires_the_old_svid() {
    let server = start(None).await;
    server.token("renew", 600).await;
    let a = attest_token(&server, "renew").await.unwrap();
    let old_serial = a.serial();
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let svid = renew(&server, &a, &key).await.unwrap();
    let renewed = Agent {
        key,
        chain: svid.cert_chain,
        reattestable: false,
    };
    assert_eq!(renewed.id(), a.id());
    assert_ne!(renewed.serial(), old_serial);
    let node = server.node(&a.id()).await;
    assert_eq!(node.cert_serial_number, old_serial);
    assert_eq!(node.new_cert_serial_number, renewed.serial());

    // First use of the new SVID makes it current; the old one is then refused.
    authorized_ids(&server, &renewed).await.unwrap();
    let node = server.node(&a.id()).await;
    assert_eq!(node.cert_serial_number, renewed.serial());
    assert!(node.new_cert_serial_number.is_empty());
    assert_eq!(refusal(&server, &a).await, Reason::AgentNotActive);
}

#[tokio::test]
async fn reattestable_agents_must_reattest_instead_of_renewing() {
    let ca = TestCa::new("node CA");
    let server = start(Some(&ca)).await;
    let cert = ca.issue_leaf("n");
    let a = attest_x509pop(&server, &cert, &cert.key_pem).await.unwrap();
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let e = renew(&server, &a, &key).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(denied_reason(&e), Reason::AgentMustReattest);
}

/// Runs the real `spire-server` CLI against the test server's local socket.
async fn cli(server: &Server, args: &[&str]) -> std::process::Output {
    let sock = server.state.config.socket_path.display().to_string();
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(["-socketPath".to_string(), sock]);
    tokio::process::Command::new(env!("CARGO_BIN_EXE_spire-server"))
        .args(&all)
        .output()
        .await
        .unwrap()
}

fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn agent_cli_shows_bans_and_evicts_real_agents() {
    let ca = TestCa::new("node CA");
    let server = start(Some(&ca)).await;
    server.token("cli-token", 600).await;
    let jt = attest_token(&server, "cli-token").await.unwrap();
    let cert = ca.issue(&LeafSpec::new("node1").serial(0x1234));
    let xp = attest_x509pop(&server, &cert, &cert.key_pem).await.unwrap();

    let out = cli(&server, &["agent", "list", "-output", "json"]).await;
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let agents = v["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 2);
    let find = |path: &str| {
        agents
            .iter()
            .find(|a| a["id"]["path"] == path)
            .unwrap_or_else(|| panic!("{path} not listed in {v}"))
            .clone()
    };
    let j = find(jt.id().path());
    assert_eq!(j["attestation_type"], "join_token");
    assert_eq!(j["x509svid_serial_number"], jt.serial());
    assert_eq!(j["can_reattest"], false);
    assert_eq!(j["banned"], false);
    let x = find(xp.id().path());
    assert_eq!(x["attestation_type"], "x509pop");
    assert_eq!(x["can_reattest"], true);
    let sel = selector_strings(&x["selectors"]);
    assert!(
        sel.contains(&"x509pop:subject:cn:node1".to_string()),
        "{sel:?}"
    );
    assert!(
        sel.contains(&"x509pop:serialnumber:1234".to_string()),
        "{sel:?}"
    );

    let out = cli(&server, &["agent", "show", "-spiffeID", xp.id().as_str()]).await;
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(xp.id().as_str()), "{text}");
    assert!(text.contains("x509pop:subject:cn:node1"), "{text}");

    // Ban through the CLI: the agent's next call is refused.
    let out = cli(&server, &["agent", "ban", "-spiffeID", jt.id().as_str()]).await;
    assert_success(&out);
    assert_eq!(refusal(&server, &jt).await, Reason::AgentBanned);

    // Evict: the x509pop agent re-attests; the join-token agent cannot (its token is spent).
    for agent in [&xp, &jt] {
        let out = cli(
            &server,
            &["agent", "evict", "-spiffeID", agent.id().as_str()],
        )
        .await;
        assert_success(&out);
    }
    attest_x509pop(&server, &cert, &cert.key_pem).await.unwrap();
    assert_eq!(
        attest_token(&server, "cli-token")
            .await
            .err()
            .unwrap()
            .code(),
        Code::InvalidArgument
    );
}

/// A key and an X509-SVID chain for `spiffe` signed by the server's CA.
fn server_svid(server: &Server, spiffe: &str) -> (PrivateKey, Vec<Vec<u8>>) {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let chain = server
        .state
        .ca
        .sign_x509_svid(key.public_key(), &id(spiffe), &[], None)
        .unwrap();
    (key, chain)
}

/// An X509-SVID for `spiffe` signed by the server's CA (as if the agent had fetched it).
fn mint(server: &Server, spiffe: &str) -> Identity {
    let (key, chain) = server_svid(server, spiffe);
    Identity::from_der(chain, key.to_pkcs8_der().unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn admin_and_downstream_callers_over_tcp() {
    let server = start_with(None, &[("admin_ids", "[\"spiffe://example.org/admin\"]")]).await;
    // admin_ids: admin RPCs are allowed over mTLS.
    let mut admin = apb::agent_client::AgentClient::new(
        server
            .channel(Some(mint(&server, "spiffe://example.org/admin")))
            .await,
    );
    admin
        .count_agents(apb::CountAgentsRequest { filter: None })
        .await
        .unwrap();
    // Any other SVID of the trust domain is not an admin.
    let mut nobody = apb::agent_client::AgentClient::new(
        server
            .channel(Some(mint(&server, "spiffe://example.org/nobody")))
            .await,
    );
    let e = nobody
        .count_agents(apb::CountAgentsRequest { filter: None })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Nor is it an agent, even with an agent-looking ID that was never attested.
    let mut fake = epb::entry_client::EntryClient::new(
        server
            .channel(Some(mint(&server, "spiffe://example.org/spire/agent/fake")))
            .await,
    );
    let e = fake
        .get_authorized_entries(epb::GetAuthorizedEntriesRequest { output_mask: None })
        .await
        .unwrap_err();
    assert_eq!(denied_reason(&e), Reason::AgentNotAttested);

    // downstream = true entries make their SVIDs downstream callers.
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let csr = spire_crypto::create_csr(&key, None).unwrap();
    let mut ds = spb::svid_client::SvidClient::new(
        server
            .channel(Some(mint(&server, "spiffe://example.org/downstream")))
            .await,
    );
    let e = ds
        .new_downstream_x509ca(spb::NewDownstreamX509caRequest {
            csr: csr.clone(),
            preferred_ttl: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let mut entry = Entry::new(
        id("spiffe://example.org/downstream"),
        id("spiffe://example.org/spire/agent/x"),
        sels(&["unix:uid:0"]),
    );
    entry.downstream = true;
    server.state.datastore.create_entry(&entry).await.unwrap();
    let mut resp = None;
    spire_testkit::wait_until(WAIT, "the downstream entry to be indexed", async || {
        resp = ds
            .new_downstream_x509ca(spb::NewDownstreamX509caRequest {
                csr: csr.clone(),
                preferred_ttl: 0,
            })
            .await
            .ok();
        resp.is_some()
    })
    .await
    .unwrap();
    let resp = resp.unwrap().into_inner();
    assert!(!resp.ca_cert_chain.is_empty());
    assert!(!resp.x509_authorities.is_empty());
    let (_, ca) = x509_parser::parse_x509_certificate(&resp.ca_cert_chain[0]).unwrap();
    assert!(ca.is_ca());
}

#[tokio::test]
async fn x509pop_spiffe_mode_trusts_the_servers_own_svids() {
    let server = start_full(
        None,
        &[],
        &["NodeAttestor \"x509pop\" {\n  plugin_data {\n    mode = \"spiffe\"\n  }\n}"],
    )
    .await;
    let agent = attest_with_server_svid(&server, "spiffe://example.org/spire-exchange/node7")
        .await
        .unwrap();
    assert_eq!(
        agent.id().as_str(),
        "spiffe://example.org/spire/agent/x509pop/node7"
    );

    // An SVID outside the prefix is refused.
    let e = attest_with_server_svid(&server, "spiffe://example.org/web")
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
}

/// x509pop (`spiffe` mode) with an X509-SVID for `spiffe` signed by the server's own CA.
async fn attest_with_server_svid(server: &Server, spiffe: &str) -> Result<Agent, Status> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (key, chain) = server_svid(server, spiffe);
    let payload = serde_json::to_vec(&serde_json::json!({
        "certificates": chain.iter().map(|c| b64.encode(c)).collect::<Vec<_>>()
    }))
    .unwrap();
    let pem = key.to_pkcs8_pem().unwrap().to_string();
    attest(server, "x509pop", payload, move |c| x509pop_answer(&pem, c)).await
}

#[tokio::test]
async fn token_generated_with_spiffe_id_gives_the_agent_an_alias() {
    let server = start(None).await;
    let out = cli(
        &server,
        &[
            "token",
            "generate",
            "-spiffeID",
            "spiffe://example.org/node/a",
            "-output",
            "json",
        ],
    )
    .await;
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = v["value"].as_str().unwrap().to_string();
    let agent = attest_token(&server, &token).await.unwrap();
    assert_eq!(
        agent.id().as_str(),
        format!("spiffe://example.org/spire/agent/join_token/{token}")
    );
    let child = server
        .entry(
            "spiffe://example.org/app",
            "spiffe://example.org/node/a",
            &["unix:uid:7"],
        )
        .await;
    spire_testkit::wait_until(
        WAIT,
        "the alias entry and its child to be authorized",
        async || {
            let ids = authorized_ids(&server, &agent).await.unwrap_or_default();
            ids.len() == 2 && ids.contains(&child.id)
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn bundles_over_tcp() {
    use spire_proto::server::bundle as bpb;
    let server = start(None).await;
    // GetBundle is open to anyone (agents bootstrap and refresh with it).
    let mut anon = bpb::bundle_client::BundleClient::new(server.channel(None).await);
    let b = anon
        .get_bundle(bpb::GetBundleRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.trust_domain, TD);
    assert!(!b.x509_authorities.is_empty());
    let req = || bpb::GetFederatedBundleRequest {
        trust_domain: "other.org".into(),
        ..Default::default()
    };
    let e = anon.get_federated_bundle(req()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Agents may read federated bundles.
    server.token("fed", 600).await;
    let a = attest_token(&server, "fed").await.unwrap();
    let mut client =
        bpb::bundle_client::BundleClient::new(server.channel(Some(a.identity())).await);
    let e = client.get_federated_bundle(req()).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
}
