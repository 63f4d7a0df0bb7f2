//! The provider sourcing keys from a real server's local socket: discovery document, JWKS,
//! validation of a minted JWT-SVID by PyJWT's `PyJWKClient`, key rotation, health, domains.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use spire_testkit::{
    Cli, CliOutput, KeyManagerConfig, Process, ServerConfig, free_port, temp_dir, wait_until_sync,
};

const PROVIDER: &str = env!("CARGO_BIN_EXE_oidc-discovery-provider");
const TIMEOUT: Duration = Duration::from_secs(60);

fn server_cli(sock: &Path, args: &[&str]) -> CliOutput {
    let out = Cli::new(spire_testkit::bin_path("spire-server"))
        .args(args)
        .args(["-socketPath", sock.to_str().unwrap()])
        .timeout(Duration::from_secs(120))
        .run()
        .unwrap();
    assert!(out.success(), "{args:?}: {}\n{}", out.stdout, out.stderr);
    out
}

/// A plain HTTP/1.1 GET: status and body (`Connection: close`, no chunking expected).
pub(crate) fn http_get(port: u16, path: &str, host: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

pub(crate) fn jwks_kids(port: u16) -> Vec<String> {
    match http_get(port, "/keys", "localhost") {
        Ok((200, body)) => serde_json::from_str::<Value>(&body).unwrap()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect(),
        _ => Vec::new(),
    }
}

fn mint(sock: &Path) -> String {
    server_cli(
        sock,
        &[
            "jwt",
            "mint",
            "-spiffeID",
            "spiffe://example.org/x",
            "-audience",
            "a",
        ],
    )
    .stdout
    .trim()
    .to_owned()
}

/// The `kid` of a compact JWT's header.
fn token_kid(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Runs `oidc_verify.py`; `None` when no python is configured (outside CI).
fn pyjwt_verify(port: u16, token: &str) -> Option<Value> {
    let python = spire_testkit::python()?;
    let out = Command::new(python)
        .arg(spire_testkit::python_script("oidc_verify.py"))
        .args([
            "--discovery",
            &format!("http://localhost:{port}/.well-known/openid-configuration"),
            "--audience",
            "a",
            "--token",
            token,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "oidc_verify.py failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

fn write_provider_config(dir: &Path, sock: &Path, port: u16, health_port: u16) -> PathBuf {
    let path = dir.join("oidc.conf");
    std::fs::write(
        &path,
        format!(
            r#"
log_level = "DEBUG"
log_requests = true
domains = ["localhost", "oidc.example.org"]
insecure_addr = "127.0.0.1:{port}"
allow_insecure_scheme = true
server_api {{
    address = "unix://{sock}"
    poll_interval = "1s"
}}
health_checks {{
    bind_address = "127.0.0.1"
    bind_port = "{health_port}"
}}
"#,
            sock = sock.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn jwt_svids_validate_through_discovery_and_rotated_keys_appear() {
    let dir = temp_dir();
    let server_config = ServerConfig::new("example.org", dir.path())
        .key_manager(KeyManagerConfig::Disk(dir.path().join("data/keys.json")));
    let server_conf = server_config
        .write(&dir.path().join("server.conf"))
        .unwrap();
    let sock = server_config.socket_path.clone();
    let mut cmd = Command::new(spire_testkit::bin_path("spire-server"));
    cmd.arg("run").arg("-config").arg(&server_conf);
    let _server = Process::spawn_logging_to("spire-server", cmd, &dir.path().join("logs")).unwrap();
    wait_until_sync(TIMEOUT, "server healthy", || {
        Cli::new(spire_testkit::bin_path("spire-server"))
            .args(["healthcheck", "-socketPath", sock.to_str().unwrap()])
            .run()
            .is_ok_and(|o| o.success())
    })
    .unwrap();

    let (port, health_port) = (free_port(), free_port());
    let conf = write_provider_config(dir.path(), &sock, port, health_port);
    let mut cmd = Command::new(PROVIDER);
    cmd.arg("-config").arg(&conf);
    let provider =
        Process::spawn_logging_to("oidc-discovery-provider", cmd, &dir.path().join("logs"))
            .unwrap();
    wait_until_sync(TIMEOUT, "JWKS served", || !jwks_kids(port).is_empty()).unwrap();

    // The discovery document derives its URLs from the allowed Host.
    let (status, body) = http_get(port, "/.well-known/openid-configuration", "localhost").unwrap();
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["issuer"], "http://localhost");
    assert_eq!(doc["jwks_uri"], "http://localhost/keys");
    assert_eq!(
        doc["response_types_supported"],
        serde_json::json!(["id_token"])
    );
    let (status, body) =
        http_get(port, "/.well-known/openid-configuration", "other.example").unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("other.example"), "{body}");

    // The JWKS holds exactly the server's JWT authorities.
    let bundle: Value =
        serde_json::from_str(&server_cli(&sock, &["bundle", "show", "-output", "json"]).stdout)
            .unwrap();
    let mut server_kids: Vec<String> = bundle["jwt_authorities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap().to_owned())
        .collect();
    server_kids.sort();
    let mut served = jwks_kids(port);
    served.sort();
    assert_eq!(served, server_kids);

    // Health: the provider has keys, so it is ready and live.
    assert_eq!(http_get(health_port, "/ready", "localhost").unwrap().0, 200);
    assert_eq!(http_get(health_port, "/live", "localhost").unwrap().0, 200);

    // A minted JWT-SVID validates with PyJWT through the discovery document.
    let token = mint(&sock);
    let kid = token_kid(&token);
    assert!(served.contains(&kid), "{kid} not in {served:?}");
    if let Some(v) = pyjwt_verify(port, &token) {
        assert_eq!(v["valid"], true);
        assert_eq!(v["sub"], "spiffe://example.org/x");
        assert_eq!(v["kid"], kid.as_str());
        assert_eq!(v["jwks_uri"], format!("http://localhost:{port}/keys"));
    }

    // Rotation: the prepared key appears in /keys; after activation new tokens use it and
    // still validate.
    let prepared: Value = serde_json::from_str(
        &server_cli(
            &sock,
            &["localauthority", "jwt", "prepare", "-output", "json"],
        )
        .stdout,
    )
    .unwrap();
    let new_kid = prepared["prepared_authority"]["authority_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_kid, kid);
    wait_until_sync(TIMEOUT, "prepared key in /keys", || {
        jwks_kids(port).contains(&new_kid)
    })
    .unwrap();
    server_cli(
        &sock,
        &[
            "localauthority",
            "jwt",
            "activate",
            "-authorityID",
            &new_kid,
        ],
    );
    let token = mint(&sock);
    assert_eq!(token_kid(&token), new_kid);
    if let Some(v) = pyjwt_verify(port, &token) {
        assert_eq!(v["kid"], new_kid.as_str());
        let kids = v["jwks_kids"].as_array().unwrap();
        assert!(
            kids.iter().any(|k| k == kid.as_str()),
            "old key still served: {kids:?}"
        );
    }

    // The provider logged no token.
    let logs = provider.logs();
    assert!(!logs.contains(&token[..40]), "provider logged a JWT");
    assert!(logs.contains("Key set updated"), "{logs}");
}

#[test]
fn unix_socket_listener_serves_and_is_removed_on_sigterm() {
    use std::os::unix::net::UnixStream;

    let dir = temp_dir();
    let listen = dir.path().join("run/oidc.sock");
    let conf = dir.path().join("oidc.conf");
    std::fs::write(
        &conf,
        format!(
            "domains = [\"oidc.example.org\"]\nlisten_socket_path = \"{}\"\nallow_insecure_scheme = true\n\
             server_path_prefix = \"/tenant\"\nserver_api {{\n  address = \"unix://{}\"\n}}\n",
            listen.display(),
            dir.path().join("absent.sock").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(PROVIDER);
    cmd.arg("-config").arg(&conf);
    let mut provider =
        Process::spawn_logging_to("oidc-discovery-provider", cmd, &dir.path().join("logs"))
            .unwrap();
    let get = |path: &str| -> std::io::Result<String> {
        let mut s = UnixStream::connect(&listen)?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: oidc.example.org\r\nConnection: close\r\n\r\n"
        )?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        Ok(raw)
    };
    wait_until_sync(TIMEOUT, "socket listening", || get("/").is_ok()).unwrap();
    let raw = get("/tenant/.well-known/openid-configuration").unwrap();
    let body = raw.split_once("\r\n\r\n").unwrap().1;
    let doc: Value = serde_json::from_str(body).unwrap();
    assert_eq!(doc["issuer"], "http://oidc.example.org/tenant");
    assert_eq!(doc["jwks_uri"], "http://oidc.example.org/tenant/keys");
    // No server behind server_api: no keys to serve yet.
    let raw = get("/tenant/keys").unwrap();
    assert!(raw.starts_with("HTTP/1.1 500"), "{raw}");

    provider.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = provider.wait_exit(TIMEOUT).unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!listen.exists(), "socket removed on shutdown");
}
