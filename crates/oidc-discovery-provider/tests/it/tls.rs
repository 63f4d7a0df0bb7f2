//! `serving_cert_file`: HTTPS with a certificate from files, reloaded when the files change;
//! the discovery document then advertises `https://` URLs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use spire_testkit::{LeafSpec, Process, TestCa, free_port, temp_dir, wait_until_sync};

const TIMEOUT: Duration = Duration::from_secs(60);

/// GETs `path` over TLS trusting `root`; returns the leaf certificate presented and the body.
fn https_get(port: u16, root: &[u8], path: &str) -> std::io::Result<(Vec<u8>, String)> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(root.to_vec()))
        .map_err(std::io::Error::other)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    // The server may close without close_notify; what was read is enough.
    let _ = tls.read_to_end(&mut raw);
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((leaf, body))
}

#[test]
fn serving_cert_file_serves_https_and_reloads_the_certificate() {
    let dir = temp_dir();
    let ca = TestCa::new("oidc test root");
    let first = ca.issue(&LeafSpec::new("localhost").dns("localhost").serial(1));
    let (cert_path, key_path) = first.write(dir.path(), "serving").unwrap();
    let port = free_port();
    let conf = dir.path().join("oidc.conf");
    std::fs::write(
        &conf,
        format!(
            "domains = [\"localhost\"]\nserving_cert_file {{\n  cert_file_path = \"{}\"\n  \
             key_file_path = \"{}\"\n  addr = \"127.0.0.1:{port}\"\n  file_sync_interval = \"1s\"\n}}\n\
             server_api {{\n  address = \"unix://{}\"\n}}\n",
            cert_path.display(),
            key_path.display(),
            dir.path().join("absent.sock").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oidc-discovery-provider"));
    cmd.arg("-config").arg(&conf);
    let _provider =
        Process::spawn_logging_to("oidc-discovery-provider", cmd, &dir.path().join("logs"))
            .unwrap();

    let root = ca.cert_der().to_vec();
    wait_until_sync(TIMEOUT, "HTTPS discovery document", || {
        https_get(port, &root, "/.well-known/openid-configuration")
            .is_ok_and(|(_, body)| body.contains("issuer"))
    })
    .unwrap();
    let (leaf, body) = https_get(port, &root, "/.well-known/openid-configuration").unwrap();
    assert_eq!(leaf, first.cert_der);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["issuer"], "https://localhost");
    assert_eq!(doc["jwks_uri"], "https://localhost/keys");

    // A client that does not trust the root fails the handshake.
    let other = TestCa::new("other root");
    assert!(https_get(port, other.cert_der(), "/keys").is_err());

    // Replacing the files switches the certificate without a restart.
    let second = ca.issue(&LeafSpec::new("localhost").dns("localhost").serial(2));
    std::thread::sleep(Duration::from_millis(1100)); // a distinct modification time
    second.write(dir.path(), "serving").unwrap();
    wait_until_sync(TIMEOUT, "reloaded certificate", || {
        https_get(port, &root, "/keys").is_ok_and(|(leaf, _)| leaf == second.cert_der)
    })
    .unwrap();
}
