//! Issue 12 §4 (what must be survived), with the real binaries: `kill -9` of the server in a
//! loop during entry writes, a read-only `data_dir`, and the agent's socket directory removed
//! while it runs.
//!
//! Covered elsewhere (not repeated here): one `kill -9` in the middle of a 1,000-entry batch
//! (no half-written entry): crates/spire-server/tests/it/local_api.rs
//! `kill_during_batch_create_leaves_no_half_written_entry`; the agent serving cached SVIDs while
//! the server is down and recovering when it returns:
//! crates/spire-agent/tests/it/manager_e2e.rs
//! `agent_keeps_serving_cached_identities_while_the_server_is_down`; a bad config naming file
//! and key: local_api.rs `bad_config_stops_the_start_naming_file_and_key`.
//! Not covered yet: PostgreSQL stopped under a running server, a full `data_dir`, a wall-clock
//! jump.

use std::collections::HashMap;
use std::time::Duration;

use spire_proto::server::entry as epb;
use spire_proto::types;
use spire_proto::workload as wl;
use spire_testkit::{Cli, bin_path};
use tonic::Code;

use crate::common::{AgentProc, Server, TD, WAIT, register_me, uds_channel, workload_request};

fn entry(path: &str) -> types::Entry {
    types::Entry {
        spiffe_id: Some(types::Spiffeid {
            trust_domain: TD.into(),
            path: path.into(),
        }),
        parent_id: Some(types::Spiffeid {
            trust_domain: TD.into(),
            path: "/node".into(),
        }),
        selectors: vec![types::Selector {
            r#type: "unix".into(),
            value: "uid:1000".into(),
        }],
        ..Default::default()
    }
}

/// Creates one entry; Ok(true) created, Ok(false) already there, Err: no answer.
async fn create(
    c: &mut epb::entry_client::EntryClient<tonic::transport::Channel>,
    path: &str,
) -> Result<bool, tonic::Status> {
    let r = c
        .batch_create_entry(epb::BatchCreateEntryRequest {
            entries: vec![entry(path)],
            output_mask: None,
        })
        .await?
        .into_inner();
    let st = r.results[0].status.clone().unwrap();
    match st.code {
        0 => Ok(true),
        c if c == Code::AlreadyExists as i32 => Ok(false),
        _ => Err(tonic::Status::new(Code::from(st.code), st.message)),
    }
}

/// All entries' SPIFFE ID paths, with multiplicity.
async fn all_paths(server: &Server) -> HashMap<String, usize> {
    let mut c = epb::entry_client::EntryClient::new(uds_channel(&server.cfg.socket_path).await);
    let mut out = HashMap::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_entries(epb::ListEntriesRequest {
                page_size: 500,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for e in page.entries {
            *out.entry(e.spiffe_id.unwrap().path).or_insert(0) += 1;
        }
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_loop_during_entry_writes_loses_and_duplicates_nothing() {
    let mut server = Server::start(|c| c);
    let mut acked: Vec<String> = Vec::new();
    let mut in_doubt: Vec<String> = Vec::new();
    for round in 0..5u64 {
        let sock = server.cfg.socket_path.clone();
        let writer = tokio::spawn(async move {
            let mut c = epb::entry_client::EntryClient::new(uds_channel(&sock).await);
            let mut acked = Vec::new();
            for i in 0.. {
                let path = format!("/kill/{round}/{i}");
                match create(&mut c, &path).await {
                    Ok(true) => acked.push(path),
                    Ok(false) => panic!("{path} existed before it was created"),
                    Err(_) => return (acked, path),
                }
            }
            unreachable!()
        });
        // Let some writes through, then SIGKILL in the middle of the stream of writes.
        tokio::time::sleep(Duration::from_millis(500 + 170 * round)).await;
        server.kill9();
        let (ok, doubt) = tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
        assert!(
            !ok.is_empty(),
            "round {round}: no write was acknowledged before the kill"
        );
        acked.extend(ok);
        in_doubt.push(doubt);
        // Every restart is clean: the server comes back on the same data.
        server.run();
    }
    // The in-doubt writes (no answer before the kill) are either there or not; retrying each
    // once must not make a second copy.
    let mut c = epb::entry_client::EntryClient::new(uds_channel(&server.cfg.socket_path).await);
    for p in &in_doubt {
        create(&mut c, p).await.unwrap();
    }
    let paths = all_paths(&server).await;
    for p in acked.iter().chain(&in_doubt) {
        assert_eq!(
            paths.get(p),
            Some(&1),
            "{p}: acknowledged or retried entry lost or duplicated"
        );
    }
    assert_eq!(
        paths.len(),
        acked.len() + in_doubt.len(),
        "unexpected extra entries"
    );
    assert!(paths.values().all(|n| *n == 1));
    assert!(!server.logs().contains("panicked"), "{}", server.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_data_dir_is_a_clear_start_error_and_leaves_state_intact() {
    // Keys on disk under data_dir, so the bundle must survive the restarts unchanged.
    let mut server = Server::start(|c| {
        let keys = c.data_dir.join("keys.json");
        c.key_manager(spire_testkit::KeyManagerConfig::Disk(keys))
    });
    register_me(
        &server,
        "spiffe://example.org/before",
        "spiffe://example.org/node",
        &[],
    );
    let bundle_before = server.ok(&["bundle", "show"]);
    server
        .proc
        .as_mut()
        .unwrap()
        .terminate(Duration::from_secs(30));

    let data_dir = server.cfg.data_dir.clone();
    let conf = server.conf.clone();
    // Remount the directory read-only in a private mount namespace that only the server sees
    // (permission bits would not stop root). Not root: a user namespace (`-r`) grants the
    // mount privilege inside it.
    let mut ns_args = vec!["-m", "--propagation", "private"];
    if !nix::unistd::geteuid().is_root() {
        ns_args.insert(0, "-r");
    }
    let out = Cli::new("unshare")
        .args(ns_args)
        .args([
            "sh",
            "-c",
            "mount --bind \"$1\" \"$1\" && mount -o remount,ro,bind \"$1\" \"$1\" && exec \"$2\" run -config \"$3\"",
            "sh",
        ])
        .arg(&data_dir)
        .arg(bin_path("spire-server"))
        .arg(&conf)
        .timeout(Duration::from_secs(90))
        .run()
        .unwrap();
    assert!(
        !out.stderr.contains("unshare failed") && !out.stderr.contains("mount:"),
        "could not set up the read-only mount: {}",
        out.stderr
    );
    out.assert_failure();
    let text = format!("{}{}", out.stdout, out.stderr);
    let db = data_dir.join("datastore.sqlite3");
    // At once (before any connection pool waits for its acquire timeout), naming the file,
    // what is not writable and the operating system's reason.
    assert!(
        text.contains(&format!(
            "cannot open the sqlite3 datastore at {}: the database file is not writable",
            db.display()
        )),
        "the error should name the datastore file and the cause: {text}"
    );
    assert!(text.contains("Read-only file system"), "{text}");
    assert!(!text.contains("pool timed out"), "{text}");

    // Writable again: everything is as it was.
    server.run();
    let shown = server.ok(&["entry", "show"]);
    assert!(shown.contains("spiffe://example.org/before"), "{shown}");
    assert_eq!(server.ok(&["bundle", "show"]), bundle_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_survives_its_socket_directory_being_removed() {
    let server = Server::start(|c| c);
    let agent_dir = server.dir.path().join("agent");
    let public = agent_dir.join("public");
    let mut agent = AgentProc::start_with(&server, &agent_dir, |mut c| {
        c.socket_path = public.join("api.sock");
        // Keys on disk, so a restart reuses the agent's SVID instead of attesting again.
        c.key_manager = spire_testkit::KeyManagerConfig::Disk(c.data_dir.join("keys"));
        c
    });
    register_me(
        &server,
        "spiffe://example.org/w",
        &AgentProc::id(&server),
        &[],
    );
    let socket = agent.cfg.socket_path.clone();
    let fetch = async |socket: &std::path::Path| -> bool {
        if !socket.exists() {
            return false;
        }
        let mut c =
            wl::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(uds_channel(socket).await);
        match c
            .fetch_x509svid(workload_request(wl::X509svidRequest {}))
            .await
        {
            Ok(r) => r.into_inner().message().await.is_ok_and(|m| m.is_some()),
            Err(_) => false,
        }
    };
    spire_testkit::wait_until(WAIT, "an SVID", async || fetch(&socket).await)
        .await
        .unwrap();

    std::fs::remove_dir_all(&public).unwrap();
    // The agent keeps running: its server-side work does not depend on the socket.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        agent.proc.is_running(),
        "spire-agent died:\n{}",
        agent.proc.logs()
    );
    // FIXME(spire-agent endpoints): the Workload API socket is not recreated (SPIRE behaves the
    // same); workloads are cut off until the agent restarts. Asserting the current behaviour.
    assert!(!socket.exists());
    assert!(!fetch(&socket).await);
    // A restart (no join token: it reuses its SVID from data_dir) restores the socket.
    agent.proc.terminate(Duration::from_secs(30));
    let conf = agent_dir.join("agent.conf");
    let mut restarted = spire_testkit::Process::start(
        bin_path("spire-agent"),
        ["run", "-config", conf.to_str().unwrap()],
    )
    .unwrap();
    spire_testkit::wait_until(WAIT, "an SVID after the restart", async || {
        assert!(restarted.is_running(), "{}", restarted.logs());
        fetch(&socket).await
    })
    .await
    .unwrap();
}
