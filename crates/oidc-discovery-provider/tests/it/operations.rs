//! Operations of the real `spire-server` and `spire-agent`: the `health_checks` listeners, the
//! Prometheus `/metrics` endpoints (parsed by `prometheus_client`, independent of spire-rs)
//! moving with the work done, and logs at DEBUG free of private keys, join tokens and JWTs.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use spire_testkit::{
    Cli, CliOutput, KeyManagerConfig, Process, ServerConfig, free_port, temp_dir, wait_until_sync,
};

use crate::server_api::http_get;

const TIMEOUT: Duration = Duration::from_secs(90);

fn run(bin: &str, args: &[&str]) -> CliOutput {
    let out = Cli::new(spire_testkit::bin_path(bin))
        .args(args)
        .timeout(Duration::from_secs(120))
        .run()
        .unwrap();
    assert!(
        out.success(),
        "{bin} {args:?}: {}\n{}",
        out.stdout,
        out.stderr
    );
    out
}

/// One parsed sample.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: serde_json::Map<String, Value>,
    value: f64,
}

/// Scrapes `/metrics` on `port` and parses it with `prom_parse.py`; `None` without python.
fn scrape(port: u16) -> Option<Vec<Sample>> {
    let python = spire_testkit::python()?;
    let out = Command::new(python)
        .arg(spire_testkit::python_script("prom_parse.py"))
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "prom_parse.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    Some(
        samples
            .into_iter()
            .map(|s| Sample {
                name: s["name"].as_str().unwrap().to_owned(),
                labels: s["labels"].as_object().unwrap().clone(),
                value: s["value"].as_f64().unwrap(),
            })
            .collect(),
    )
}

/// The sum of the samples named `name` whose labels include all of `labels`.
fn total(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).and_then(Value::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// Finds a compact JWS (`eyJ<b64url>.<b64url>.<b64url>`) in `text`.
fn find_jwt(text: &str) -> Option<&str> {
    let is_b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(pos) = text[from..].find("eyJ") {
        let start = from + pos;
        let mut i = start;
        let mut parts = 1;
        let mut part_len = 0;
        while i < bytes.len() && (is_b64(bytes[i]) || bytes[i] == b'.') {
            if bytes[i] == b'.' {
                if part_len == 0 {
                    break;
                }
                parts += 1;
                part_len = 0;
            } else {
                part_len += 1;
            }
            i += 1;
        }
        if parts >= 3 && part_len > 0 {
            return Some(&text[start..i]);
        }
        from = start + 3;
    }
    None
}

#[test]
fn jwt_finder_finds_only_three_part_tokens() {
    assert_eq!(
        find_jwt("a eyJhbGc.eyJzdWIi.c2ln b"),
        Some("eyJhbGc.eyJzdWIi.c2ln")
    );
    assert_eq!(find_jwt("eyJhbGc.eyJzdWIi and eyJ"), None);
    assert_eq!(find_jwt("no token here"), None);
}

fn assert_no_secrets(name: &str, logs: &str, token: &str) {
    assert!(!logs.contains("PRIVATE KEY"), "{name} logged a private key");
    // SPIRE's agent ID embeds the (then spent) token: `.../spire/agent/join_token/<token>`.
    // Anywhere else the token is a leak.
    let outside_ids = logs.replace(&format!("/spire/agent/join_token/{token}"), "");
    assert!(!outside_ids.contains(token), "{name} logged the join token");
    if let Some(jwt) = find_jwt(logs) {
        panic!("{name} logged a JWT: {}...", &jwt[..jwt.len().min(24)]);
    }
}

fn write_agent_config(
    server: &ServerConfig,
    dir: &Path,
    token: &str,
    metrics_port: u16,
) -> (spire_testkit::AgentConfig, std::path::PathBuf) {
    let mut agent = server.agent_config(dir).join_token(token).health_checks();
    agent.extra_top_level.push(format!(
        "telemetry {{\n    Prometheus {{\n        host = \"127.0.0.1\"\n        port = {metrics_port}\n    }}\n}}"
    ));
    let path = agent.write(&dir.join("agent.conf")).unwrap();
    (agent, path)
}

#[test]
fn health_metrics_and_logs_through_a_full_run() {
    let dir = temp_dir();
    let server_metrics = free_port();
    let mut server = ServerConfig::new("example.org", dir.path())
        .key_manager(KeyManagerConfig::Disk(dir.path().join("data/keys.json")))
        .health_checks();
    server.extra_top_level.push(format!(
        "telemetry {{\n    Prometheus {{\n        host = \"127.0.0.1\"\n        port = {server_metrics}\n    }}\n}}"
    ));
    let conf = server.write(&dir.path().join("server.conf")).unwrap();
    let sock = server.socket_path.to_str().unwrap().to_owned();
    let mut cmd = Command::new(spire_testkit::bin_path("spire-server"));
    cmd.arg("run").arg("-config").arg(&conf);
    let server_proc =
        Process::spawn_logging_to("spire-server", cmd, &dir.path().join("logs")).unwrap();
    let server_health = server.health_port.unwrap();
    wait_until_sync(TIMEOUT, "server ready", || {
        http_get(server_health, "/ready", "localhost").is_ok_and(|(s, _)| s == 200)
    })
    .unwrap();
    let (status, body) = http_get(server_health, "/live", "localhost").unwrap();
    assert_eq!(status, 200);
    let live: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(live["datastore"], true);
    assert_eq!(live["ca_active"], true);
    assert_eq!(
        http_get(server_health, "/other", "localhost").unwrap().0,
        404
    );

    let before = scrape(server_metrics);

    // Join-token attestation of a real agent.
    let out = run(
        "spire-server",
        &[
            "token",
            "generate",
            "-spiffeID",
            "spiffe://example.org/node",
            "-socketPath",
            &sock,
        ],
    );
    let token = out
        .stdout
        .trim()
        .strip_prefix("Token: ")
        .unwrap_or_else(|| panic!("unexpected token output {:?}", out.stdout))
        .to_owned();
    let agent_dir = dir.path().join("agent");
    let agent_metrics = free_port();
    let (agent, agent_conf) = write_agent_config(&server, &agent_dir, &token, agent_metrics);
    let mut cmd = Command::new(spire_testkit::bin_path("spire-agent"));
    cmd.arg("run").arg("-config").arg(&agent_conf);
    let agent_proc =
        Process::spawn_logging_to("spire-agent", cmd, &dir.path().join("logs")).unwrap();
    let agent_health = agent.health_port.unwrap();
    wait_until_sync(TIMEOUT, "agent ready", || {
        http_get(agent_health, "/ready", "localhost").is_ok_and(|(s, _)| s == 200)
    })
    .unwrap();
    let (_, body) = http_get(agent_health, "/ready", "localhost").unwrap();
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (ready["agent_svid"].clone(), ready["synced"].clone()),
        (true.into(), true.into())
    );

    // An entry for this test process, then mints through the server CLI.
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let agent_id = format!("spiffe://example.org/spire/agent/join_token/{token}");
    run(
        "spire-server",
        &[
            "entry",
            "create",
            "-parentID",
            &agent_id,
            "-spiffeID",
            "spiffe://example.org/workload",
            "-selector",
            &format!("unix:uid:{uid}"),
            "-socketPath",
            &sock,
        ],
    );
    let minted = run(
        "spire-server",
        &[
            "x509",
            "mint",
            "-spiffeID",
            "spiffe://example.org/minted",
            "-socketPath",
            &sock,
        ],
    );
    assert!(
        minted.stdout.contains("PRIVATE KEY"),
        "x509 mint prints its key to stdout"
    );
    let jwt = run(
        "spire-server",
        &[
            "jwt",
            "mint",
            "-spiffeID",
            "spiffe://example.org/minted",
            "-audience",
            "a",
            "-socketPath",
            &sock,
        ],
    );
    assert!(find_jwt(&jwt.stdout).is_some(), "jwt mint prints a token");

    // The agent serves the workload its SVID once it synced the entry.
    let agent_sock = agent.socket_path.to_str().unwrap().to_owned();
    wait_until_sync(TIMEOUT, "workload X509-SVID", || {
        Cli::new(spire_testkit::bin_path("spire-agent"))
            .args(["api", "fetch", "x509", "-socketPath", &agent_sock])
            .timeout(Duration::from_secs(30))
            .run()
            .is_ok_and(|o| o.success() && o.stdout.contains("spiffe://example.org/workload"))
    })
    .unwrap();
    run(
        "spire-agent",
        &[
            "api",
            "fetch",
            "jwt",
            "-audience",
            "a",
            "-socketPath",
            &agent_sock,
        ],
    );

    // The OIDC Discovery Provider serves the same JWT keys through the agent's Workload API
    // (this process's uid is a registered workload, so the agent answers it).
    let oidc_port = free_port();
    let oidc_conf = dir.path().join("oidc-workload.conf");
    std::fs::write(
        &oidc_conf,
        format!(
            "domains = [\"localhost\"]\ninsecure_addr = \"127.0.0.1:{oidc_port}\"\n\
             workload_api {{\n  socket_path = \"{agent_sock}\"\n  trust_domain = \"example.org\"\n  \
             poll_interval = \"1s\"\n}}\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_oidc-discovery-provider"));
    cmd.arg("-config").arg(&oidc_conf);
    let _provider =
        Process::spawn_logging_to("oidc-discovery-provider", cmd, &dir.path().join("logs"))
            .unwrap();
    let bundle: Value = serde_json::from_str(
        &run(
            "spire-server",
            &["bundle", "show", "-output", "json", "-socketPath", &sock],
        )
        .stdout,
    )
    .unwrap();
    let mut server_kids: Vec<String> = bundle["jwt_authorities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap().to_owned())
        .collect();
    server_kids.sort();
    wait_until_sync(TIMEOUT, "JWKS from the Workload API", || {
        let mut kids = crate::server_api::jwks_kids(oidc_port);
        kids.sort();
        kids == server_kids
    })
    .unwrap();

    // Metrics moved with the work done.
    if let (Some(before), Some(after)) = (before, scrape(server_metrics)) {
        let calls = "spire_server_rpc_calls_total";
        let entry = [
            ("service", "spire.api.server.entry.v1.Entry"),
            ("method", "BatchCreateEntry"),
            ("code", "OK"),
        ];
        assert_eq!(
            total(&after, calls, &entry) - total(&before, calls, &entry),
            1.0
        );
        let mint = [
            ("service", "spire.api.server.svid.v1.SVID"),
            ("method", "MintX509SVID"),
        ];
        assert_eq!(
            total(&after, calls, &mint) - total(&before, calls, &mint),
            1.0
        );
        let attest = [("method", "AttestAgent"), ("code", "OK")];
        assert_eq!(
            total(&after, calls, &attest) - total(&before, calls, &attest),
            1.0
        );
        let latency = "spire_server_rpc_call_duration_seconds_count";
        assert_eq!(
            total(&after, latency, &mint) - total(&before, latency, &mint),
            1.0
        );
        // Datastore operations, counted by the datastore under SPIRE's operation names.
        let ds_ops = "spire_server_datastore_operations_total";
        let ds_ok = |op: &str| {
            let labels = [("operation", op), ("status", "ok")];
            total(&after, ds_ops, &labels) - total(&before, ds_ops, &labels)
        };
        assert_eq!(ds_ok("create_join_token"), 1.0, "{after:#?}");
        assert_eq!(ds_ok("consume_join_token"), 1.0);
        assert_eq!(ds_ok("create_attested_node"), 1.0);
        // The token's alias entry (`-spiffeID`) and `entry create`.
        assert_eq!(ds_ok("create_registration_entry"), 2.0);
        let ds_latency = "spire_server_datastore_operation_duration_seconds_count";
        let entry_op = [("operation", "create_registration_entry")];
        assert_eq!(
            total(&after, ds_latency, &entry_op) - total(&before, ds_latency, &entry_op),
            2.0
        );
        // Agent SVID + minted SVID + the workload's SVID, at least.
        let x509 = "spire_server_server_ca_sign_x509_svid_total";
        let signed = total(&after, x509, &[]) - total(&before, x509, &[]);
        assert!(signed >= 3.0, "{signed} X509-SVIDs signed: {after:#?}");
        // The minted JWT plus the agent's JWT-SVID for the workload.
        let jwts = "spire_server_server_ca_sign_jwt_svid_total";
        assert!(total(&after, jwts, &[]) - total(&before, jwts, &[]) >= 2.0);
        assert!(total(&after, "spire_server_entry_index_entries", &[]) >= 1.0);
    }
    if let Some(agent_samples) = scrape(agent_metrics) {
        assert!(
            total(
                &agent_samples,
                "spire_agent_manager_sync_total",
                &[("status", "ok")]
            ) >= 1.0
        );
        let fetch = [
            ("service", "SpiffeWorkloadAPI"),
            ("method", "FetchX509SVID"),
        ];
        assert!(total(&agent_samples, "spire_agent_rpc_calls_total", &fetch) >= 1.0);
        let jwt_fetch = [("method", "FetchJWTSVID"), ("code", "OK")];
        assert_eq!(
            total(&agent_samples, "spire_agent_rpc_calls_total", &jwt_fetch),
            1.0
        );
        assert!(total(&agent_samples, "spire_agent_cache_x509_svids", &[]) >= 1.0);
    }

    // Nothing secret in the DEBUG logs of the whole run.
    let server_logs = server_proc.logs();
    let agent_logs = agent_proc.logs();
    assert!(
        server_logs.contains("level=DEBUG") || server_logs.contains("DEBUG"),
        "server logs at DEBUG"
    );
    assert!(agent_logs.contains("DEBUG"), "agent logs at DEBUG");
    assert_no_secrets("spire-server", &server_logs, &token);
    assert_no_secrets("spire-agent", &agent_logs, &token);
}
