//! Operating the real binaries (issue 8): JSON log files shaped like SPIRE's, log rotation on
//! SIGUSR2, what `run` prints first, `healthcheck -shallow / -verbose`, graceful SIGTERM
//! (exit 0, sockets removed, an open Workload API stream ended by its trailers), and the agent's
//! readiness following its syncs with the server.
//!
//! Covered elsewhere: `/metrics` moving with the work done (datastore operations included) and
//! DEBUG logs free of keys, join tokens and JWTs in
//! `crates/oidc-discovery-provider/tests/it/operations.rs`; the health CLI against fake
//! servers that are live but not ready in the `healthcheck` unit tests of both binaries.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use spire_proto::workload as wl;
use spire_testkit::{KeyManagerConfig, bin_path, hcl_string, run_cli, wait_until_sync};

use crate::common::{AgentProc, Server, TD, WAIT, register_me, uds_channel, workload_request};

/// `GET path` on `127.0.0.1:port`: the status code and body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Every line of `path` as a JSON object with SPIRE's `time`, `level` and `msg`.
fn json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(!text.is_empty(), "{} is empty", path.display());
    text.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", path.display()));
            for key in ["time", "level", "msg"] {
                assert!(
                    v.get(key).is_some_and(Value::is_string),
                    "{}: no {key}: {line}",
                    path.display()
                );
            }
            v
        })
        .collect()
}

/// Whether `text` holds a compact JWS (`eyJ…` . … . …).
fn has_jwt(text: &str) -> bool {
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices("eyJ").any(|(i, _)| {
        let token: String = text[i..]
            .chars()
            .take_while(|&c| is_b64(c) || c == '.')
            .collect();
        let parts: Vec<&str> = token.split('.').collect();
        parts.len() >= 3 && parts[..3].iter().all(|p| !p.is_empty())
    })
}

fn wait_for_line(path: &Path, msg: &str) {
    wait_until_sync(WAIT, &format!("{msg:?} in {}", path.display()), || {
        std::fs::read_to_string(path).is_ok_and(|t| t.contains(msg))
    })
    .unwrap();
}

fn healthcheck(bin: &str, sock: &str, flags: &[&str]) -> spire_testkit::CliOutput {
    let mut args = vec!["healthcheck", "-socketPath", sock];
    args.extend_from_slice(flags);
    run_cli(bin_path(bin), args)
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_rotation_health_cli_and_graceful_shutdown() {
    let mut server_log = PathBuf::new();
    let mut server = Server::start(|c| {
        // The test's directory (the server's own is made at start, after logging is set up).
        let dir = c.socket_path.parent().unwrap().parent().unwrap().to_owned();
        server_log = dir.join("server.log");
        let mut c = c.setting("log_file", &hcl_string(server_log.to_str().unwrap()));
        c.log_format = Some("json".to_owned());
        c
    });
    let sock = server.sock();

    // The first lines say where the server listens, its trust domain, datastore and CA.
    let first: Vec<Value> = json_lines(&server_log).into_iter().take(25).collect();
    let starting = first
        .iter()
        .find(|l| l["msg"] == "Server starting")
        .unwrap_or_else(|| panic!("no startup line in the first lines: {first:#?}"));
    assert_eq!(starting["trust_domain"], TD);
    assert_eq!(starting["address"], server.addr());
    assert_eq!(starting["socket_path"], sock.as_str());
    assert_eq!(starting["datastore"], "sqlite3");
    assert_eq!(starting["level"], "info");
    let x509_ca = starting["ca_x509_authority"].as_str().unwrap();
    assert!(x509_ca.len() >= 16 && x509_ca != "none", "{starting}");
    assert_ne!(starting["ca_jwt_authority"], "none");

    // healthcheck: deep by default, liveness only with -shallow, steps with -verbose.
    let out = healthcheck("spire-server", &sock, &[]);
    out.assert_success();
    assert_eq!(out.stdout.trim(), "Server is healthy.");
    let out = healthcheck("spire-server", &sock, &["-verbose"]);
    out.assert_success();
    for step in [
        "Checking server health...",
        "Fetching bundle via Bundle API...",
        "Successfully fetched bundle.",
    ] {
        assert!(out.stdout.contains(step), "{}", out.stdout);
    }
    let out = healthcheck("spire-server", &sock, &["-shallow", "-verbose"]);
    out.assert_success();
    assert!(
        out.stdout.contains("Server is live") && !out.stdout.contains("Fetching bundle"),
        "{}",
        out.stdout
    );

    // An agent logging JSON to a file, with an admin socket.
    let agent_dir = server.dir.path().join("agent");
    let agent_log = agent_dir.join("agent.log");
    let admin_sock = agent_dir.join("admin").join("admin.sock");
    let mut agent = AgentProc::start_with(&server, &agent_dir, |c| {
        let mut c = c
            .setting("log_format", "\"json\"")
            .setting("log_file", &hcl_string(agent_log.to_str().unwrap()));
        c.admin_socket_path = Some(admin_sock.clone());
        c
    });
    let agent_sock = agent.socket();
    let out = healthcheck("spire-agent", &agent_sock, &["-verbose"]);
    out.assert_success();
    assert!(out.stdout.contains("Agent is healthy."), "{}", out.stdout);
    let out = healthcheck("spire-agent", &agent_sock, &["-shallow", "-verbose"]);
    out.assert_success();
    assert!(out.stdout.contains("Agent is live"), "{}", out.stdout);
    let agent_first: Vec<Value> = json_lines(&agent_log).into_iter().take(25).collect();
    let starting = agent_first
        .iter()
        .find(|l| l["msg"] == "Starting agent")
        .unwrap_or_else(|| panic!("no startup line in the first lines: {agent_first:#?}"));
    assert_eq!(starting["trust_domain"], TD);
    assert_eq!(starting["server_address"], server.addr());
    assert_eq!(starting["socket_path"], agent_sock.as_str());
    assert_eq!(starting["admin_socket_path"], admin_sock.to_str().unwrap());

    // A workload with an open FetchX509SVID stream.
    let agent_id = AgentProc::id(&server);
    register_me(&server, "spiffe://example.org/ops", &agent_id, &[]);
    let mut client = wl::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(
        uds_channel(Path::new(&agent_sock)).await,
    );
    let mut stream = None;
    for _ in 0..600 {
        let mut s = client
            .fetch_x509svid(workload_request(wl::X509svidRequest {}))
            .await
            .unwrap()
            .into_inner();
        if let Ok(Some(first)) = s.message().await
            && !first.svids.is_empty()
        {
            stream = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut stream = stream.expect("the workload got its X509-SVID");

    // Rotation: rename the files, SIGUSR2, and new lines go to new files at the same paths.
    let (server_old, agent_old) = (
        server_log.with_extension("log.1"),
        agent_log.with_extension("log.1"),
    );
    std::fs::rename(&server_log, &server_old).unwrap();
    std::fs::rename(&agent_log, &agent_old).unwrap();
    server
        .proc
        .as_ref()
        .unwrap()
        .signal(Signal::SIGUSR2)
        .unwrap();
    agent.proc.signal(Signal::SIGUSR2).unwrap();
    wait_for_line(&server_log, "Log file reopened");
    wait_for_line(&agent_log, "Log file reopened");
    assert!(server.is_running() && agent.proc.is_running());
    assert!(
        !std::fs::read_to_string(&server_old)
            .unwrap()
            .contains("Log file reopened")
    );
    // The server still works and logs to the new file.
    server.ok(&["entry", "show"]);

    // SIGTERM: the open stream ends cleanly, the agent exits 0 and removes its sockets.
    agent.proc.signal(Signal::SIGTERM).unwrap();
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ends when the agent stops");
    // A clean end: the stream's trailers (OK, or UNAVAILABLE saying why, which workload
    // libraries retry), not a transport error or reset.
    let clean = match &end {
        Ok(None) => true,
        Err(status) => {
            status.code() == tonic::Code::Unavailable
                && status.message() == "agent is shutting down"
        }
        Ok(Some(_)) => false,
    };
    assert!(clean, "clean end of stream expected, got {end:?}");
    let status = agent.proc.wait_exit(WAIT).unwrap();
    assert!(status.success(), "agent exit status {status:?}");
    assert!(!Path::new(&agent_sock).exists(), "Workload API socket left");
    assert!(!admin_sock.exists(), "admin socket left");

    let proc = server.proc.as_mut().unwrap();
    proc.signal(Signal::SIGTERM).unwrap();
    let status = proc.wait_exit(WAIT).unwrap();
    assert!(status.success(), "server exit status {status:?}");
    assert!(!Path::new(&sock).exists(), "server API socket left");

    // Every line of every log file is SPIRE-shaped JSON, and none holds a secret.
    for path in [&server_old, &server_log, &agent_old, &agent_log] {
        let lines = json_lines(path);
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            !text.contains("PRIVATE KEY"),
            "{} holds a key",
            path.display()
        );
        assert!(!has_jwt(&text), "{} holds a JWT", path.display());
        if path == &server_old || path == &agent_old {
            assert!(lines.iter().any(|l| l["level"] == "debug"), "DEBUG logged");
        }
    }
    let server_tail = json_lines(&server_log);
    assert!(
        server_tail
            .iter()
            .any(|l| l["msg"] == "Server stopped gracefully"),
        "{server_tail:#?}"
    );
    let agent_tail = json_lines(&agent_log);
    assert!(
        agent_tail.iter().any(|l| l["msg"] == "Agent stopped"),
        "{agent_tail:#?}"
    );
}

#[test]
fn jwt_detector_needs_three_parts() {
    assert!(has_jwt("x eyJhbGc.eyJzdWIi.c2ln y"));
    assert!(!has_jwt("eyJhbGc.eyJzdWIi and eyJ"));
}

#[test]
fn agent_readiness_follows_its_syncs_with_the_server() {
    let mut server = Server::start(|c| {
        let keys = c.data_dir.join("keys.json");
        c.key_manager(KeyManagerConfig::Disk(keys))
    });
    let agent_dir = server.dir.path().join("agent");
    let agent = AgentProc::start_with(&server, &agent_dir, |c| {
        c.health_checks()
            .setting("experimental", "{\n        sync_interval = \"1s\"\n    }")
    });
    let port = agent.cfg.health_port.unwrap();
    let ready = || http_get(port, "/ready");
    wait_until_sync(WAIT, "agent ready", || {
        ready().is_some_and(|(s, _)| s == 200)
    })
    .unwrap();

    // The server stops (SIGINT: as graceful as SIGTERM): after a few missed syncs
    // (3 × sync_interval) the agent is not ready, though it is still live with a valid SVID.
    let proc = server.proc.as_mut().unwrap();
    proc.signal(Signal::SIGINT).unwrap();
    assert!(proc.wait_exit(WAIT).unwrap().success());
    assert!(
        !Path::new(&server.sock()).exists(),
        "server API socket left"
    );
    wait_until_sync(WAIT, "agent not ready", || {
        ready().is_some_and(|(s, _)| s != 200)
    })
    .unwrap();
    let (_, body) = ready().unwrap();
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["agent_svid"], true, "{body}");
    assert_eq!(body["synced"], false, "{body}");
    assert_eq!(http_get(port, "/live").unwrap().0, 200);

    // Back: the next sync makes it ready again.
    server.run();
    wait_until_sync(WAIT, "agent ready again", || {
        ready().is_some_and(|(s, _)| s == 200)
    })
    .unwrap();
}
