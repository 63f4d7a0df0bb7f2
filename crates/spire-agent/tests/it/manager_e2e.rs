//! End-to-end tests of the agent's server side (attestation, restart, sync, rotation, bans)
//! with the real `spire-server` and `spire-agent` binaries on loopback.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use spire_testkit::{
    AgentConfig, KeyManagerConfig, Process, ServerConfig, TestCa, run_cli, temp_dir,
    wait_until_sync,
};

use super::common::{Server, TD, WAIT, agent_bin, entry_id, id, my_uid_selector};

/// `<dir>/agent`, created: the agent's files.
fn agent_dir(dir: &tempfile::TempDir) -> PathBuf {
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    agent_dir
}

/// [`start_agent`], waiting until the agent attested.
fn start_attested_agent(cfg: &AgentConfig, dir: &Path, extra: &[&str]) -> Process {
    let mut agent = start_agent(cfg, dir, extra);
    agent
        .wait_for_log_sync("Node attestation was successful", WAIT)
        .unwrap();
    agent
}

/// Waits until `agent` logs that it issued an X.509-SVID for `spiffe` (`what` names the wait).
fn wait_issued(agent: &Process, what: &str, spiffe: &str) {
    wait_until_sync(WAIT, what, || {
        agent
            .logs()
            .lines()
            .any(|l| l.contains("Issued X509-SVID") && l.contains(spiffe))
    })
    .unwrap();
}

fn start_agent(cfg: &AgentConfig, dir: &Path, extra: &[&str]) -> Process {
    let path = cfg.write(&dir.join("agent.conf")).unwrap();
    let mut args = vec![
        "run".to_owned(),
        "-config".to_owned(),
        path.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Process::start(agent_bin(), args).unwrap()
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn join_token_agent_attests_syncs_and_reuses_its_svid_after_restart() {
    let dir = temp_dir();
    // A disk KeyManager keeps the server's CA across the restart below.
    let scfg = ServerConfig::new(TD, &dir.path().join("server"))
        .key_manager(KeyManagerConfig::Disk(dir.path().join("server-keys.json")));
    let mut server = Server::start(dir.path(), scfg);
    let bundle = server.write_bundle(dir.path());
    let token = server.token("node1");
    let agent_id = format!("spiffe://{TD}/spire/agent/join_token/{token}");

    let agent_dir = agent_dir(&dir);
    let acfg = server
        .cfg
        .agent_config(&agent_dir)
        .trust_bundle(&bundle)
        .key_manager(KeyManagerConfig::Disk(agent_dir.join("keys")));
    let mut agent = start_attested_agent(&acfg, &agent_dir, &["-joinToken", &token]);
    assert!(agent.logs().contains(&agent_id), "agent ID in the logs");
    // The alias entry created with the token is authorized to the agent.
    agent.wait_for_log_sync("Issued X509-SVID", WAIT).unwrap();
    let list = server.agent_list();
    assert!(list.contains(&agent_id), "{list}");
    assert!(list.contains("join_token"), "{list}");

    // An entry created while the agent runs reaches it without a restart.
    let workload_a = id("workload-a");
    server.entry(&id("node1"), &workload_a, &["unix:uid:1000"], &[]);
    agent
        .wait_for_log_sync(&format!("spiffe_id={workload_a}"), WAIT)
        .unwrap();
    wait_issued(&agent, "X509-SVID for workload-a", &workload_a);

    // Restart: the stored SVID is reused, the server sees no second attestation.
    agent.terminate(Duration::from_secs(10));
    let first_logs = agent.logs();
    assert_eq!(count(&first_logs, "Attesting the node to the server"), 1);
    let data: serde_json::Value =
        serde_json::from_slice(&std::fs::read(acfg.data_dir.join("agent-data.json")).unwrap())
            .unwrap();
    assert_eq!(data["reattestable"], false);
    let mut agent = start_agent(&acfg, &agent_dir, &[]);
    agent
        .wait_for_log_sync("Reusing the stored agent SVID", WAIT)
        .unwrap();
    agent
        .wait_for_log_sync(&format!("spiffe_id={workload_a}"), WAIT)
        .unwrap();
    assert!(
        !agent.logs().contains("Attesting the node"),
        "no re-attestation"
    );
    let list = server.agent_list();
    assert_eq!(count(&list, "SPIFFE ID"), 1, "{list}");

    // Server restart: the agent reconnects and keeps syncing.
    server.restart();
    let workload_b = id("workload-b");
    server.entry(&agent_id, &workload_b, &["unix:uid:1001"], &[]);
    wait_issued(
        &agent,
        "X509-SVID for workload-b after server restart",
        &workload_b,
    );
}

#[test]
fn agent_svid_rotates_with_short_ttl_and_keeps_working() {
    let dir = temp_dir();
    let scfg = ServerConfig::new(TD, &dir.path().join("server"))
        .string_setting("agent_ttl", "20s")
        .string_setting("default_x509_svid_ttl", "30s");
    let server = Server::start(dir.path(), scfg);
    let token = server.token("node-rot");
    let agent_dir = agent_dir(&dir);
    let acfg = server.cfg.agent_config(&agent_dir).join_token(&token);
    let mut agent = start_attested_agent(&acfg, &agent_dir, &[]);
    wait_until_sync(WAIT, "two agent SVID renewals", || {
        count(&agent.logs(), "Renewed agent SVID") >= 2
    })
    .unwrap();
    // Still authenticated after rotating: a new entry is signed.
    let after = id("after-rotation");
    server.entry(&id("node-rot"), &after, &["unix:uid:7"], &[]);
    wait_issued(&agent, "X509-SVID after rotation", &after);
    assert!(agent.is_running());
    let list = server.agent_list();
    assert_eq!(count(&list, "SPIFFE ID"), 1, "{list}");
}

#[test]
fn x509pop_agent_attests_and_re_attests_after_eviction() {
    let dir = temp_dir();
    let ca = TestCa::new("node ca");
    let (_, _) = ca.write(dir.path(), "node-ca").unwrap();
    let ca_bundle = dir.path().join("node-ca-root.pem");
    let leaf = ca.issue_leaf("node-x");
    let (cert, key) = leaf.write(dir.path(), "node-x").unwrap();
    let scfg = ServerConfig::new(TD, &dir.path().join("server")).x509pop(&ca_bundle);
    let server = Server::start(dir.path(), scfg);
    let agent_id = format!(
        "spiffe://{TD}/spire/agent/x509pop/{}",
        leaf.sha1_fingerprint()
    );

    let agent_dir = agent_dir(&dir);
    let acfg = server.cfg.agent_config(&agent_dir).x509pop(&cert, &key);
    let mut agent = start_attested_agent(&acfg, &agent_dir, &[]);
    assert!(agent.logs().contains(&agent_id), "x509pop agent ID");
    let list = server.agent_list();
    assert!(list.contains(&agent_id), "{list}");
    assert!(list.contains("x509pop"), "{list}");

    server
        .cli(&["agent", "evict", "-spiffeID", &agent_id])
        .assert_success();
    wait_until_sync(WAIT, "re-attestation after eviction", || {
        count(&agent.logs(), "Node attestation was successful") >= 2
    })
    .unwrap();
    assert!(agent.is_running());
    wait_until_sync(WAIT, "agent listed again", || {
        server.agent_list().contains(&agent_id)
    })
    .unwrap();
}

#[test]
fn banned_join_token_agent_stops() {
    let dir = temp_dir();
    let server = Server::start_default(dir.path());
    let token = server.token("node-ban");
    let agent_id = format!("spiffe://{TD}/spire/agent/join_token/{token}");
    let agent_dir = agent_dir(&dir);
    let acfg = server.cfg.agent_config(&agent_dir).join_token(&token);
    let mut agent = start_attested_agent(&acfg, &agent_dir, &[]);
    server
        .cli(&["agent", "ban", "-spiffeID", &agent_id])
        .assert_success();
    let status = agent.wait_exit(WAIT).unwrap();
    assert!(!status.success(), "a banned agent exits with an error");
    assert!(
        agent.logs().contains("banned or evicted"),
        "clear log line:\n{}",
        agent.logs()
    );
    assert!(
        !acfg.data_dir.join("agent-data.json").exists(),
        "stored SVID dropped"
    );
}

#[test]
fn agent_keeps_serving_cached_identities_while_the_server_is_down() {
    let dir = temp_dir();
    let mut server = Server::start_default(dir.path());
    let token = server.token("node-down");
    let agent_dir = agent_dir(&dir);
    let acfg = server.cfg.agent_config(&agent_dir).join_token(&token);
    let mut agent = start_attested_agent(&acfg, &agent_dir, &[]);
    let workload = id("me");
    server.entry(&id("node-down"), &workload, &[&my_uid_selector()], &[]);
    wait_issued(&agent, "X509-SVID for this process", &workload);
    let sock = acfg.socket_path.display().to_string();
    let fetch = || {
        run_cli(
            agent_bin(),
            [
                "api",
                "fetch",
                "x509",
                "-socketPath",
                sock.as_str(),
                "-timeout",
                "5s",
            ],
        )
    };
    let out = fetch();
    out.assert_success();
    assert!(out.stdout.contains(&workload), "{}", out.stdout);

    let fetch_jwt = |aud: &str| {
        run_cli(
            agent_bin(),
            [
                "api",
                "fetch",
                "jwt",
                "-socketPath",
                sock.as_str(),
                "-audience",
                aud,
                "-timeout",
                "5s",
            ],
        )
    };
    let token_of = |out: &spire_testkit::CliOutput| {
        out.assert_success();
        out.stdout
            .lines()
            .find(|l| l.starts_with('\t') && l.matches('.').count() == 2)
            .map(|l| l.trim().to_owned())
            .unwrap_or_else(|| panic!("no token in {}", out.stdout))
    };
    let jwt = token_of(&fetch_jwt("aud-1"));
    assert_eq!(token_of(&fetch_jwt("aud-1")), jwt, "cached per audience");

    // Server gone: syncs fail, the cached identities are still served.
    server.process.terminate(Duration::from_secs(10));
    agent
        .wait_for_log_sync("Server call failed; will retry", WAIT)
        .unwrap();
    let out = fetch();
    out.assert_success();
    assert!(out.stdout.contains(&workload), "{}", out.stdout);
    assert_eq!(token_of(&fetch_jwt("aud-1")), jwt, "valid cached JWT-SVID");
    assert!(!fetch_jwt("aud-2").success(), "nothing cached for aud-2");
    assert!(agent.is_running());
}

/// Serves `body` over plain HTTP/1.0 on a loopback port, forever (until the test ends).
fn serve_http(body: String) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}/bundle.json")
}

#[test]
fn bootstrap_from_trust_bundle_url_in_spiffe_format() {
    let dir = temp_dir();
    let server = Server::start_default(dir.path());
    let out = server.cli(&["bundle", "show", "-format", "spiffe"]);
    out.assert_success();
    let url = serve_http(out.stdout.clone());
    let token = server.token("node-url");
    let agent_dir = agent_dir(&dir);
    let mut acfg = server
        .cfg
        .agent_config(&agent_dir)
        .join_token(&token)
        .string_setting("trust_bundle_url", &url)
        .string_setting("trust_bundle_format", "spiffe");
    acfg.insecure_bootstrap = false;
    let mut agent = start_attested_agent(&acfg, &agent_dir, &[]);
    assert!(
        !agent.logs().contains("insecure_bootstrap"),
        "the server was verified against the downloaded bundle"
    );
    agent.wait_for_log_sync("Issued X509-SVID", WAIT).unwrap();
}

#[test]
fn wrong_bootstrap_bundle_is_refused() {
    let dir = temp_dir();
    let server = Server::start_default(dir.path());
    let other = TestCa::new("not the server");
    let bundle = dir.path().join("wrong.pem");
    std::fs::write(&bundle, other.cert_pem()).unwrap();
    let token = server.token("node-wrong");
    let agent_dir = agent_dir(&dir);
    let acfg = server
        .cfg
        .agent_config(&agent_dir)
        .join_token(&token)
        .trust_bundle(&bundle);
    let mut agent = start_agent(&acfg, &agent_dir, &[]);
    let status = agent.wait_exit(WAIT).unwrap();
    assert!(!status.success());
    assert!(agent.logs().contains("UnknownIssuer"), "{}", agent.logs());
    assert!(!server.agent_list().contains("join_token"), "not attested");
}

#[test]
fn reattestable_x509pop_agent_rotates_by_re_attesting() {
    let dir = temp_dir();
    let ca = TestCa::new("node ca");
    ca.write(dir.path(), "node-ca").unwrap();
    let leaf = ca.issue_leaf("node-r");
    let (cert, key) = leaf.write(dir.path(), "node-r").unwrap();
    let scfg = ServerConfig::new(TD, &dir.path().join("server"))
        .x509pop(dir.path().join("node-ca-root.pem"))
        .string_setting("agent_ttl", "20s");
    let server = Server::start(dir.path(), scfg);
    let agent_dir = agent_dir(&dir);
    let acfg = server.cfg.agent_config(&agent_dir).x509pop(&cert, &key);
    let mut agent = start_agent(&acfg, &agent_dir, &[]);
    agent.wait_for_log_sync("reattestable=true", WAIT).unwrap();
    agent
        .wait_for_log_sync("Re-attested; agent SVID replaced", WAIT)
        .unwrap();
    assert!(
        !agent.logs().contains("Renewed agent SVID"),
        "no RenewAgent"
    );
    assert!(agent.is_running());
    let list = server.agent_list();
    assert_eq!(count(&list, "SPIFFE ID"), 1, "{list}");
}

#[test]
fn many_entries_sync_in_pages_and_only_changed_entries_are_refetched() {
    let dir = temp_dir();
    let server = Server::start_default(dir.path());
    let token = server.token("node-bulk");
    let parent = format!("spiffe://{TD}/node-bulk");
    let entries: Vec<serde_json::Value> = (0..600)
        .map(|i| {
            serde_json::json!({
                "spiffe_id": format!("spiffe://{TD}/bulk-{i}"),
                "parent_id": parent,
                "selectors": [{"type": "unix", "value": format!("uid:{}", 20000 + i)}],
            })
        })
        .collect();
    let data = dir.path().join("entries.json");
    std::fs::write(
        &data,
        serde_json::to_vec(&serde_json::json!({ "entries": entries })).unwrap(),
    )
    .unwrap();
    server
        .cli(&["entry", "create", "-data", data.to_str().unwrap()])
        .assert_success();

    let agent_dir = agent_dir(&dir);
    let acfg = server.cfg.agent_config(&agent_dir).join_token(&token);
    let mut agent = start_agent(&acfg, &agent_dir, &[]);
    // 600 entries + the alias entry: more than one page of 500.
    agent.wait_for_log_sync("total=601", WAIT).unwrap();
    wait_until_sync(WAIT, "601 X509-SVIDs", || {
        count(&agent.logs(), "Issued X509-SVID") >= 601
    })
    .unwrap();

    let shown = server.cli(&[
        "entry",
        "show",
        "-spiffeID",
        &format!("spiffe://{TD}/bulk-7"),
    ]);
    shown.assert_success();
    let id = entry_id(&shown.stdout);
    server
        .cli(&[
            "entry",
            "update",
            "-entryID",
            &id,
            "-parentID",
            &parent,
            "-spiffeID",
            &format!("spiffe://{TD}/bulk-7"),
            "-selector",
            "unix:uid:5555",
        ])
        .assert_success();
    agent
        .wait_for_log_sync("total=601 fetched=1", WAIT)
        .unwrap();
    wait_until_sync(WAIT, "bulk-7 re-signed after its revision changed", || {
        agent.logs().lines().any(|l| {
            l.contains("Issued X509-SVID")
                && l.contains(&format!("spiffe://{TD}/bulk-7 "))
                && l.contains("renewed=true")
        })
    })
    .unwrap();
}
