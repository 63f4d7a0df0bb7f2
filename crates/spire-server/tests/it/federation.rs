//! Federation end to end with real `spire-server` binaries on loopback: two trust domains, each
//! serving its bundle endpoint (one `https_spiffe`, one `https_web` with a test Web CA),
//! each fetching the other's bundle; CA rotation reaching the other side; relationship and
//! bundle deletion; bad endpoint answers rejected with the last good bundle kept.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spire_testkit::{LeafSpec, ServerConfig, TestCa, free_port, temp_dir, wait_until_sync};

use crate::common::{AgentProc, ServerProc};

const WAIT: Duration = Duration::from_secs(60);

/// Starts a server of `td` with `federation` (HCL body of the `federation` block) and
/// `SSL_CERT_FILE` pointing at `web_roots` when given.
fn start_server(td: &str, federation: &str, web_roots: Option<&Path>) -> ServerProc {
    start_server_in(temp_dir(), td, federation, web_roots)
}

fn start_server_in(
    dir: tempfile::TempDir,
    td: &str,
    federation: &str,
    web_roots: Option<&Path>,
) -> ServerProc {
    let config = ServerConfig::new(td, dir.path());
    let text = config.render().replacen(
        "server {\n",
        &format!("server {{\n    federation {{\n{federation}\n    }}\n"),
        1,
    );
    ServerProc::start(&format!("spire-server-{td}"), dir, config, &text, |cmd| {
        match web_roots {
            Some(p) => cmd.env("SSL_CERT_FILE", p),
            None => cmd.env_remove("SSL_CERT_FILE"),
        };
    })
}

/// Federation views of a server process.
impl ServerProc {
    /// The stored bundle of `td` (PEM), if any.
    fn federated(&self, td: &str) -> Option<String> {
        let out = self.run(&["bundle", "list", "-id", &format!("spiffe://{td}")]);
        out.status.success().then_some(out.stdout)
    }

    /// Starts an agent of this server's trust domain (join token aliased to
    /// `spiffe://<td>/node`) and waits until it is healthy.
    fn td_agent(&self) -> AgentProc {
        let td = &self.config.trust_domain;
        self.agent(&format!("spire-agent-{td}"), &format!("spiffe://{td}/node"))
    }

    /// Registers `id` for processes of the current uid under this server's agent.
    fn workload_entry(&self, id: &str, federates_with: &[&str]) {
        let parent = format!("spiffe://{}/node", self.config.trust_domain);
        let mut extra = Vec::new();
        for td in federates_with {
            extra.extend(["-federatesWith", td]);
        }
        self.register_uid(&parent, id, &extra);
    }

    fn log_count(&self, needle: &str) -> usize {
        self.process.logs().matches(needle).count()
    }

    /// Waits until `needle` appears more often in the logs than `before`.
    fn wait_log_after(&self, needle: &str, before: usize) {
        wait_until_sync(WAIT, needle, || self.log_count(needle) > before).unwrap_or_else(|e| {
            panic!("{e}\n{}", self.process.log_report());
        });
    }
}

/// Waits until `server` holds `td`'s bundle equal to `want` (PEM).
fn wait_bundle(server: &ServerProc, td: &str, want: &str) {
    wait_until_sync(WAIT, &format!("bundle of {td} replicated"), || {
        server.federated(td).as_deref() == Some(want)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: have {:?}, want {want:?}\n{}",
            server.federated(td),
            server.process.log_report()
        )
    });
}

fn federation_block(port: u16, profile: &str, federates_with: &str) -> String {
    format!(
        "        bundle_endpoint {{\n            address = \"127.0.0.1\"\n            port = {port}\n            refresh_hint = \"1s\"\n{profile}\n        }}\n{federates_with}"
    )
}

/// The `https_spiffe` profile block of a bundle endpoint.
const HTTPS_SPIFFE_PROFILE: &str = "            profile \"https_spiffe\" {}";

/// The `https_web` profile block serving `cert` / `key` (re-read every second when `sync`).
fn https_web_profile(cert: &Path, key: &Path, sync: bool) -> String {
    let sync = if sync {
        "                    file_sync_interval = \"1s\"\n"
    } else {
        ""
    };
    format!(
        "            profile \"https_web\" {{\n                serving_cert_file {{\n                    cert_file_path = \"{}\"\n                    key_file_path = \"{}\"\n{sync}                }}\n            }}",
        cert.display(),
        key.display()
    )
}

/// A Web CA for https_web endpoints, written to `<dir>/web-roots.pem` (for `SSL_CERT_FILE`).
fn web_ca_in(dir: &tempfile::TempDir) -> (TestCa, PathBuf) {
    let web_ca = TestCa::new("Federation Test Web CA");
    let web_roots = dir.path().join("web-roots.pem");
    std::fs::write(&web_roots, web_ca.root_pem()).unwrap();
    (web_ca, web_roots)
}

/// B's side of an https_web bundle endpoint: B's directory, the Web CA (written to
/// `web-roots.pem` there, for A's `SSL_CERT_FILE`) and B's `localhost` serving certificate
/// and key files.
struct WebEndpoint {
    dir: tempfile::TempDir,
    ca: TestCa,
    roots: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn web_endpoint() -> WebEndpoint {
    let dir = temp_dir();
    let (ca, roots) = web_ca_in(&dir);
    let (cert, key) = ca
        .issue(&LeafSpec::new("localhost").dns("localhost"))
        .write(dir.path(), "endpoint")
        .unwrap();
    WebEndpoint {
        dir,
        ca,
        roots,
        cert,
        key,
    }
}

#[test]
fn two_trust_domains_federate_both_ways() {
    // The Web CA that B's https_web endpoint certificate chains to; A trusts it.
    let WebEndpoint {
        dir: dir_b,
        ca: web_ca,
        roots: web_roots,
        cert,
        key,
    } = web_endpoint();

    let port_a = free_port();
    let port_b = free_port();
    // A: https_spiffe endpoint; statically federates with B over https_web.
    let a = start_server(
        "a.test",
        &federation_block(
            port_a,
            HTTPS_SPIFFE_PROFILE,
            &format!(
                "        federates_with \"b.test\" {{\n            bundle_endpoint_url = \"https://localhost:{port_b}\"\n            bundle_endpoint_profile \"https_web\" {{}}\n        }}"
            ),
        ),
        Some(&web_roots),
    );
    // B: https_web endpoint with a certificate file; its relationship with A is dynamic.
    let b = start_server_in(
        dir_b,
        "b.test",
        &federation_block(port_b, &https_web_profile(&cert, &key, true), ""),
        None,
    );

    // A learns B's bundle through B's https_web endpoint.
    let b_bundle = b.ok(&["bundle", "show"]);
    wait_bundle(&a, "b.test", &b_bundle);

    // B: a relationship naming the wrong endpoint SPIFFE ID is refused at the handshake.
    let a_bundle_json = a.ok(&["bundle", "show", "-format", "spiffe"]);
    let bootstrap = b.path("a-bundle.json");
    std::fs::write(&bootstrap, &a_bundle_json).unwrap();
    let url_a = format!("https://127.0.0.1:{port_a}");
    let failures = b.log_count("Error updating bundle");
    let out = b.ok(&[
        "federation",
        "create",
        "-trustDomain",
        "a.test",
        "-bundleEndpointURL",
        &url_a,
        "-bundleEndpointProfile",
        "https_spiffe",
        "-endpointSpiffeID",
        "spiffe://a.test/not-the-server",
        "-trustDomainBundlePath",
        bootstrap.to_str().unwrap(),
        "-trustDomainBundleFormat",
        "spiffe",
    ]);
    assert!(
        out.contains("Endpoint SPIFFE ID        : spiffe://a.test/not-the-server"),
        "{out}"
    );
    b.wait_log_after("Error updating bundle", failures);
    let refresh = b.run(&["federation", "refresh", "-id", "a.test"]);
    assert!(!refresh.status.success());
    assert!(
        refresh.stderr.contains("failed to refresh bundle"),
        "{}",
        refresh.stderr
    );

    // Fixing the ID makes B fetch A's bundle through A's https_spiffe endpoint.
    let out = b.ok(&[
        "federation",
        "update",
        "-trustDomain",
        "a.test",
        "-bundleEndpointURL",
        &url_a,
        "-bundleEndpointProfile",
        "https_spiffe",
        "-endpointSpiffeID",
        "spiffe://a.test/spire/server",
    ]);
    assert!(
        out.contains("Endpoint SPIFFE ID        : spiffe://a.test/spire/server"),
        "{out}"
    );
    assert_eq!(
        b.ok(&["federation", "refresh", "-id", "a.test"]),
        "Bundle refreshed\n"
    );
    let a_bundle = a.ok(&["bundle", "show"]);
    wait_bundle(&b, "a.test", &a_bundle);

    let list = b.ok(&["federation", "list"]);
    assert!(
        list.starts_with("Found 1 federation relationship\n"),
        "{list}"
    );
    assert!(
        list.contains("Bundle endpoint profile   : https_spiffe"),
        "{list}"
    );
    let show = b.ok(&["federation", "show", "-trustDomain", "a.test"]);
    assert!(
        show.starts_with("Found a federation relationship with trust domain a.test:"),
        "{show}"
    );
    // Static relationships are not in the datastore.
    assert!(
        a.ok(&["federation", "list"])
            .starts_with("Found 0 federation relationships")
    );

    // A static relationship overrides a dynamic one for the same trust domain: this broken
    // URL is never used.
    a.ok(&[
        "federation",
        "create",
        "-trustDomain",
        "b.test",
        "-bundleEndpointURL",
        "https://127.0.0.1:1",
        "-bundleEndpointProfile",
        "https_web",
    ]);
    assert!(
        a.ok(&["federation", "list"])
            .starts_with("Found 1 federation relationship\n")
    );

    // B's endpoint answers GET / with its bundle document.
    let (leaf, answer) = get_endpoint(port_b, web_ca.root_pem());
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{answer}"
    );
    let body: serde_json::Value =
        serde_json::from_str(&answer[answer.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["spiffe_refresh_hint"], 1, "{body}");
    assert!(body["spiffe_sequence"].is_u64(), "{body}");
    let x509_keys = body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["use"] == "x509-svid")
        .count();
    assert_eq!(x509_keys, 1, "{body}");
    let (_, other) = request_endpoint(port_b, web_ca.root_pem(), "GET /other HTTP/1.1");
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    let (_, post) = request_endpoint(port_b, web_ca.root_pem(), "POST / HTTP/1.1");
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");

    // A new authority prepared in B reaches A (and one prepared in A reaches B).
    b.ok(&["localauthority", "x509", "prepare"]);
    let b_rotated = b.ok(&["bundle", "show"]);
    assert_ne!(b_rotated, b_bundle);
    assert_eq!(b_rotated.matches("BEGIN CERTIFICATE").count(), 2);
    wait_bundle(&a, "b.test", &b_rotated);
    let prepared = a.ok(&["localauthority", "x509", "prepare", "-output", "json"]);
    let prepared: serde_json::Value = serde_json::from_str(&prepared).unwrap();
    let new_authority = prepared["prepared_authority"]["authority_id"]
        .as_str()
        .unwrap();
    let a_rotated = a.ok(&["bundle", "show"]);
    assert_ne!(a_rotated, a_bundle);
    wait_bundle(&b, "a.test", &a_rotated);

    // Activating it renews A's server SVID; the https_spiffe endpoint presents the new one
    // without a restart, and B keeps authenticating it.
    let server_id = "spiffe://a.test/spire/server";
    let before = spiffe_endpoint_leaf(port_a, &a_rotated, server_id);
    a.ok(&[
        "localauthority",
        "x509",
        "activate",
        "-authorityID",
        new_authority,
    ]);
    wait_until_sync(WAIT, "the endpoint presents the renewed SVID", || {
        spiffe_endpoint_leaf(port_a, &a_rotated, server_id) != before
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", a.process.log_report()));
    assert_eq!(
        b.ok(&["federation", "refresh", "-id", "a.test"]),
        "Bundle refreshed\n"
    );

    // Deleting the relationship stops the refreshes; deleting the bundle then removes it.
    assert_eq!(
        b.ok(&["federation", "delete", "-id", "a.test"]),
        "federation relationship deleted.\n"
    );
    b.wait_log_after("Trust domain no longer managed", 0);
    b.ok(&["bundle", "delete", "-id", "spiffe://a.test"]);
    assert_eq!(b.federated("a.test"), None);
    let refresh = b.run(&["federation", "refresh", "-id", "a.test"]);
    assert!(
        refresh
            .stderr
            .contains("there is no federation relationship with trust domain"),
        "{}",
        refresh.stderr
    );
    assert!(b.ok(&["bundle", "list"]).is_empty());
    assert!(
        b.ok(&["federation", "list"])
            .starts_with("Found 0 federation relationships")
    );

    // B's serving certificate files are re-read when they change.
    assert_eq!(leaf, first_der(&std::fs::read(&cert).unwrap()));
    let renewed = web_ca.issue(&LeafSpec::new("localhost").dns("localhost"));
    std::fs::write(&key, &renewed.key_pem).unwrap();
    std::fs::write(&cert, &renewed.chain_pem).unwrap();
    wait_until_sync(WAIT, "the renewed serving certificate is presented", || {
        get_endpoint(port_b, web_ca.root_pem()).0 == renewed.cert_der
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", b.process.log_report()));
    // A keeps fetching through the renewed certificate.
    assert_eq!(
        a.ok(&["federation", "refresh", "-id", "b.test"]).trim(),
        "Bundle refreshed"
    );
}

/// The leaf an https_spiffe endpoint presents, authenticated as `id` against `bundle_pem`.
fn spiffe_endpoint_leaf(port: u16, bundle_pem: &str, id: &str) -> Vec<u8> {
    let id: spire_spiffe::SpiffeId = id.parse().unwrap();
    let bundles = spire_tls::BundleSet::new();
    bundles
        .set_roots(
            id.trust_domain().clone(),
            spire_spiffe::parse_pem_certificates(bundle_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let config = spire_tls::client_config(
        spire_tls::ServerAuth::Verify {
            bundles,
            expected: spire_tls::PeerMatcher::Exact(id),
        },
        spire_tls::ClientOptions::default(),
    )
    .unwrap();
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).unwrap();
    }
    conn.peer_certificates().unwrap()[0].to_vec()
}

fn first_der(pem_text: &[u8]) -> Vec<u8> {
    spire_spiffe::parse_pem_certificates(pem_text)
        .unwrap()
        .remove(0)
}

/// `GET /` on a local https_web bundle endpoint trusted through `roots_pem`: the presented
/// leaf (DER) and the raw HTTP answer.
fn get_endpoint(port: u16, roots_pem: &str) -> (Vec<u8>, String) {
    request_endpoint(port, roots_pem, "GET / HTTP/1.1")
}

/// Sends `request_line` to a local https_web bundle endpoint: the presented leaf and the raw
/// HTTP answer.
fn request_endpoint(port: u16, roots_pem: &str, request_line: &str) -> (Vec<u8>, String) {
    let mut roots = rustls::RootCertStore::empty();
    for der in spire_spiffe::parse_pem_certificates(roots_pem.as_bytes()).unwrap() {
        roots
            .add(rustls::pki_types::CertificateDer::from(der))
            .unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(spire_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(
        format!("{request_line}\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    let leaf = tls.conn.peer_certificates().unwrap()[0].to_vec();
    (leaf, String::from_utf8_lossy(&answer).into_owned())
}

/// What the fake endpoint answers.
#[derive(Clone)]
enum Answer {
    /// 200 with this body.
    Body(Vec<u8>),
    /// This status with an empty body.
    Status(u16),
    /// `/` redirects (307) to `/moved`, which answers 200 with this body.
    Moved(Vec<u8>),
}

/// A tiny HTTPS server answering every request with the current [`Answer`], presenting the
/// current certificate.
struct FakeEndpoint {
    port: u16,
    answer: Arc<Mutex<Answer>>,
    tls: Arc<Mutex<Arc<rustls::ServerConfig>>>,
}

fn tls_config(cert: &spire_testkit::IssuedCert) -> Arc<rustls::ServerConfig> {
    let chain = spire_spiffe::parse_pem_certificates(cert.chain_pem.as_bytes())
        .unwrap()
        .into_iter()
        .map(rustls::pki_types::CertificateDer::from)
        .collect();
    let key = pem::parse(&cert.key_pem).unwrap().into_contents();
    let config = rustls::ServerConfig::builder_with_provider(spire_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()))
        .unwrap();
    Arc::new(config)
}

impl FakeEndpoint {
    fn start(cert: &spire_testkit::IssuedCert, answer: Answer) -> FakeEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let ep = FakeEndpoint {
            port,
            answer: Arc::new(Mutex::new(answer)),
            tls: Arc::new(Mutex::new(tls_config(cert))),
        };
        let answer = Arc::clone(&ep.answer);
        let tls = Arc::clone(&ep.tls);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(tcp) = conn else { continue };
                let answer = answer.lock().unwrap().clone();
                let config = Arc::clone(&tls.lock().unwrap());
                std::thread::spawn(move || serve_one(tcp, config, answer));
            }
        });
        ep
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn set_cert(&self, cert: &spire_testkit::IssuedCert) {
        *self.tls.lock().unwrap() = tls_config(cert);
    }
}

fn serve_one(tcp: std::net::TcpStream, config: Arc<rustls::ServerConfig>, answer: Answer) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tls.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let first_line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let (status, body, location) = match answer {
        Answer::Body(b) => (200, b, None),
        Answer::Status(s) => (s, Vec::new(), None),
        Answer::Moved(_) if first_line.starts_with("GET / ") => (307, Vec::new(), Some("/moved")),
        Answer::Moved(b) => (200, b, None),
    };
    let location = location.map_or(String::new(), |l| format!("Location: {l}\r\n"));
    let _ = write!(
        tls,
        "HTTP/1.1 {status} X\r\n{location}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tls.write_all(&body);
    let _ = tls.flush();
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// A self-signed CA certificate carrying the SPIFFE ID of `td` (as SPIRE's CAs do), DER.
fn spiffe_ca(td: &str) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.subject_alt_names = vec![rcgen::SanType::URI(
        format!("spiffe://{td}").as_str().try_into().unwrap(),
    )];
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

fn bundle_json(td: &str, ca: &[u8], seq: u64) -> Vec<u8> {
    let mut b = spire_spiffe::Bundle::new(td.parse().unwrap());
    b.x509_authorities.push(ca.to_vec());
    b.refresh_hint = Some(Duration::from_secs(1));
    b.sequence_number = seq;
    b.to_json().unwrap().into_bytes()
}

#[test]
fn bad_endpoint_answers_keep_the_last_good_bundle() {
    let dir = temp_dir();
    let (web_ca, web_roots) = web_ca_in(&dir);
    let good_cert = web_ca.issue(&LeafSpec::new("localhost").dns("localhost"));
    let now = time::OffsetDateTime::now_utc();
    let expired_cert = web_ca.issue(
        &LeafSpec::new("localhost")
            .dns("localhost")
            .validity(now - time::Duration::days(2), now - time::Duration::days(1)),
    );

    let c_ca = spiffe_ca("c.test");
    let good = bundle_json("c.test", &c_ca, 1);
    let fake = FakeEndpoint::start(&good_cert, Answer::Body(good.clone()));

    let a = start_server_in(dir, "a.test", "", Some(&web_roots));
    // Created from a JSON file, as `-data` takes it.
    let data = a.path("relationships.json");
    std::fs::write(
        &data,
        serde_json::json!({"federationRelationships": [{
            "trustDomain": "c.test",
            "bundleEndpointURL": format!("https://localhost:{}", fake.port),
            "bundleEndpointProfile": "https_web",
        }]})
        .to_string(),
    )
    .unwrap();
    a.ok(&["federation", "create", "-data", data.to_str().unwrap()]);
    let listed: serde_json::Value =
        serde_json::from_str(&a.ok(&["federation", "list", "-output", "json"])).unwrap();
    assert_eq!(
        listed["federation_relationships"][0]["trust_domain"], "c.test",
        "{listed}"
    );
    assert!(
        listed["federation_relationships"][0]["https_web"].is_object(),
        "{listed}"
    );
    let good_pem = spire_spiffe::certificates_to_pem(std::slice::from_ref(&c_ca));
    wait_bundle(&a, "c.test", &good_pem);

    let failure = "Error updating bundle";
    type Case<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "not JSON",
            Box::new(|| fake.set(Answer::Body(b"<html>maintenance</html>".to_vec()))),
            "the answer is not a valid SPIFFE bundle",
        ),
        (
            "oversized",
            Box::new(|| fake.set(Answer::Body(vec![b' '; 5 * 1024 * 1024]))),
            "answered more than 4194304 bytes",
        ),
        (
            "wrong trust domain",
            Box::new(|| {
                fake.set(Answer::Body(bundle_json(
                    "c.test",
                    &spiffe_ca("other.test"),
                    2,
                )))
            }),
            "X.509 authority of trust domain",
        ),
        (
            "HTTP error",
            Box::new(|| fake.set(Answer::Status(404))),
            "answered HTTP 404",
        ),
        (
            "expired certificate",
            Box::new(|| {
                fake.set(Answer::Body(bundle_json("c.test", &spiffe_ca("c.test"), 3)));
                fake.set_cert(&expired_cert);
            }),
            "cannot connect to the bundle endpoint",
        ),
    ];
    for (what, apply, reason) in cases {
        let before = a.log_count(reason);
        let failures = a.log_count(failure);
        apply();
        a.wait_log_after(reason, before);
        assert!(a.log_count(failure) > failures, "{what}: no failure logged");
        assert_eq!(
            a.federated("c.test").as_deref(),
            Some(good_pem.as_str()),
            "{what}: the last good bundle must be kept"
        );
        let refresh = a.run(&["federation", "refresh", "-id", "c.test"]);
        assert!(!refresh.status.success(), "{what}: refresh must fail");
    }
    assert!(
        a.process.logs().contains("certificate expired") || a.process.logs().contains("Expired"),
        "the expired certificate is named as the cause\n{}",
        a.process.log_report()
    );

    // A temporary redirect is followed.
    fake.set_cert(&good_cert);
    let c_ca_moved = spiffe_ca("c.test");
    fake.set(Answer::Moved(bundle_json("c.test", &c_ca_moved, 4)));
    assert_eq!(
        a.ok(&["federation", "refresh", "-id", "c.test"]),
        "Bundle refreshed\n"
    );
    assert_eq!(
        a.federated("c.test"),
        Some(spire_spiffe::certificates_to_pem(std::slice::from_ref(
            &c_ca_moved
        )))
    );

    // A good answer is taken again.
    fake.set_cert(&good_cert);
    let c_ca2 = spiffe_ca("c.test");
    fake.set(Answer::Body(bundle_json("c.test", &c_ca2, 5)));
    assert_eq!(
        a.ok(&["federation", "refresh", "-id", "c.test"]),
        "Bundle refreshed\n"
    );
    assert_eq!(
        a.federated("c.test"),
        Some(spire_spiffe::certificates_to_pem(&[c_ca2]))
    );
}

/// Domains A and B federate both ways; a go-spiffe `spiffetls` client in A talks to a server
/// workload in B, each authorizing the other's SPIFFE ID; a client in an unfederated third
/// domain C is refused.
#[test]
fn workloads_of_federated_domains_talk_mtls() {
    let Some(go) = spire_testkit::go_client() else {
        return;
    };
    let WebEndpoint {
        dir: dir_b,
        roots: web_roots,
        cert,
        key,
        ..
    } = web_endpoint();
    let port_a = free_port();
    let port_b = free_port();
    // A's relationship with B is dynamic (created below), B's with A static.
    let a = start_server(
        "a.test",
        &federation_block(port_a, HTTPS_SPIFFE_PROFILE, ""),
        Some(&web_roots),
    );
    let b = start_server_in(
        dir_b,
        "b.test",
        &federation_block(
            port_b,
            &https_web_profile(&cert, &key, false),
            &format!(
                "        federates_with \"a.test\" {{\n            bundle_endpoint_url = \"https://127.0.0.1:{port_a}\"\n            bundle_endpoint_profile \"https_spiffe\" {{\n                endpoint_spiffe_id = \"spiffe://a.test/spire/server\"\n            }}\n        }}"
            ),
        ),
        None,
    );
    let c = start_server("c.test", "", None);
    // B's static https_spiffe relationship needs A's bundle to start with.
    let bootstrap = b.path("a-bundle.pem");
    std::fs::write(&bootstrap, a.ok(&["bundle", "show"])).unwrap();
    b.ok(&[
        "bundle",
        "set",
        "-id",
        "spiffe://a.test",
        "-path",
        bootstrap.to_str().unwrap(),
    ]);
    a.ok(&[
        "federation",
        "create",
        "-trustDomain",
        "b.test",
        "-bundleEndpointURL",
        &format!("https://localhost:{port_b}"),
        "-bundleEndpointProfile",
        "https_web",
    ]);
    wait_bundle(&a, "b.test", &b.ok(&["bundle", "show"]));
    wait_bundle(&b, "a.test", &a.ok(&["bundle", "show"]));

    let agent_a = a.td_agent();
    let agent_b = b.td_agent();
    let agent_c = c.td_agent();
    let client_a = "spiffe://a.test/client";
    let server_b = "spiffe://b.test/server";
    let client_c = "spiffe://c.test/client";
    a.workload_entry(client_a, &["spiffe://b.test"]);
    b.workload_entry(server_b, &["spiffe://a.test"]);
    c.workload_entry(client_c, &[]);
    agent_a.wait_for_svid(client_a);
    agent_b.wait_for_svid(server_b);
    agent_c.wait_for_svid(client_c);

    let (mut server, addr) = agent_b.go_mtls_server(&go, client_a);

    // C has no bundle for B: its client refuses B's server certificate.
    let refused = agent_c.go(
        &go,
        &[
            "mtls-client",
            "-addr",
            &addr,
            "-server-id",
            server_b,
            "-timeout",
            "20s",
        ],
    );
    assert!(!refused.status.success(), "{}", refused.stdout);
    assert!(refused.stderr.contains("b.test"), "{}", refused.stderr);

    // A's client, once its agent has B's bundle, authenticates B's server and is accepted.
    let mut reply = String::new();
    wait_until_sync(WAIT, "A's client completes mTLS with B's server", || {
        let out = agent_a.go(
            &go,
            &[
                "mtls-client",
                "-addr",
                &addr,
                "-server-id",
                server_b,
                "-timeout",
                "10s",
            ],
        );
        reply = out.stdout.clone();
        out.status.success()
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n{}",
            agent_a.process.log_report(),
            server.log_report()
        )
    });
    assert!(
        reply.contains(&format!("\"peer_id\":\"{server_b}\"")),
        "{reply}"
    );
    server.wait_exit(WAIT).unwrap();
    assert!(
        server
            .stdout()
            .contains(&format!("\"peer_id\":\"{client_a}\"")),
        "{}",
        server.stdout()
    );

    // A new authority in B reaches A's workloads.
    assert!(!agent_a.fetch().contains("b.test] CA #2"));
    b.ok(&["localauthority", "x509", "prepare"]);
    wait_until_sync(WAIT, "B's new authority reaches A's workloads", || {
        agent_a.fetch().contains("b.test] CA #2 Valid After")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent_a.fetch()));

    // Deleting the relationship and the bundle removes B's bundle from A's workloads.
    a.ok(&["federation", "delete", "-id", "b.test"]);
    a.wait_log_after("Trust domain no longer managed", 0);
    a.ok(&[
        "bundle",
        "delete",
        "-id",
        "spiffe://b.test",
        "-mode",
        "dissociate",
    ]);
    wait_until_sync(WAIT, "B's bundle leaves A's workloads", || {
        let out = agent_a.fetch();
        out.contains(client_a) && !out.contains("b.test]")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent_a.fetch()));
}
