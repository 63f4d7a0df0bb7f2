//! Issue 12 §4 (what must be survived), with the real binaries: `kill -9` of the server in a
//! loop during entry writes, a read-only or full `data_dir` (a clear error, state intact), and
//! the agent's socket directory removed while it runs.
//!
//! Covered elsewhere (not repeated here): one `kill -9` in the middle of a 1,000-entry batch
//! (no half-written entry): crates/spire-server/tests/it/local_api.rs
//! `kill_during_batch_create_leaves_no_half_written_entry`; the agent serving cached SVIDs while
//! the server is down and recovering when it returns:
//! crates/spire-agent/tests/it/manager_e2e.rs
//! `agent_keeps_serving_cached_identities_while_the_server_is_down`; a bad config naming file
//! and key: local_api.rs `bad_config_stops_the_start_naming_file_and_key`.
//! A full `data_dir` (a 2 MiB tmpfs in a private mount namespace): the failing write answers
//! with SQLite's "database or disk is full", the server stays up, every acknowledged entry is
//! listed once and the failed one left nothing.
//!
//! Here too: PostgreSQL unreachable under a running server (through a TCP proxy the test cuts
//! and restores): admin RPCs answer `Unavailable`, the agent keeps serving its cached SVID,
//! everything recovers.
//!
//! A wall-clock jump cannot be made here (the system clock is shared); both processes time
//! their loops with tokio's monotonic clock and take certificate times from their `Clock`, so
//! the jump is tested with a `FakeClock`: spire-server `ca::manager::rotation_tests::
//! clock_jump_*` (forward past the CA's expiry: nothing signed by it, replaced at the next
//! check; backward: no rotation, consistent SVID times) and spire-agent
//! `manager::loop_tests::clock_jump_*` (forward: agent and workload SVIDs replaced once
//! within one check; backward: nothing re-issued).

use std::collections::HashMap;
use std::time::Duration;

use spire_proto::server::entry as epb;
use spire_proto::types;
use spire_proto::workload as wl;
use spire_testkit::{Cli, bin_path};
use tonic::Code;

use crate::common::{
    self, AgentProc, Server, TD, WAIT, register_me, uds_channel, workload_request,
};

fn entry(path: &str) -> types::Entry {
    common::entry(
        path,
        vec![types::Selector {
            r#type: "unix".into(),
            value: "uid:1000".into(),
        }],
    )
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
    for path in common::entry_paths(&mut c).await {
        *out.entry(path).or_insert(0) += 1;
    }
    out
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
    // The agent notices (it checks the socket path every second), re-creates the directory
    // and the socket, and serves again without a restart.
    spire_testkit::wait_until(WAIT, "an SVID from the re-created socket", async || {
        assert!(agent.proc.is_running(), "{}", agent.proc.logs());
        fetch(&socket).await
    })
    .await
    .unwrap();
    assert!(
        agent
            .proc
            .logs()
            .contains("workload api socket was removed; re-creating it"),
        "no warning about the removed socket:\n{}",
        agent.proc.logs()
    );
    // A restart (no join token: it reuses its SVID from data_dir) serves on the same path.
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

/// A TCP forwarder between the server and PostgreSQL that the test can cut (every open
/// connection dropped, new ones closed at once) and restore: a network fault that leaves the
/// shared PostgreSQL server running.
struct CuttableProxy {
    port: u16,
    up: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    async fn start(target: String) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, rx) = tokio::sync::watch::channel(true);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*rx.borrow() {
                    continue; // cut: the connection is dropped as soon as it is accepted
                }
                let mut down = rx.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        CuttableProxy { port, up, task }
    }

    fn cut(&self) {
        self.up.send_replace(false);
    }

    fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fresh database on `SPIRE_TEST_POSTGRES_URL` (created with psql) and the `host:port` of
/// the PostgreSQL server, or `None` when none is configured outside CI (under `CI=true` the
/// testkit fails instead).
fn postgres_database(prefix: &str) -> Option<(String, String)> {
    let admin = spire_testkit::postgres_url()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("{prefix}_{}_{nanos}", std::process::id());
    let out = Cli::new("psql")
        .args([admin.as_str(), "-XAtqc", &format!("CREATE DATABASE {name}")])
        .run()
        .unwrap();
    out.assert_success();
    let (base, _) = admin.rsplit_once('/').unwrap();
    let host_port = base
        .rsplit_once('@')
        .map_or(base, |(_, hp)| hp)
        .trim_start_matches("postgres://")
        .to_owned();
    Some((name, host_port))
}

/// The result of ListEntries (page of 10) on the local API.
async fn list_entries(server: &Server) -> Result<usize, tonic::Status> {
    let mut c = epb::entry_client::EntryClient::new(uds_channel(&server.cfg.socket_path).await);
    c.list_entries(epb::ListEntriesRequest {
        page_size: 10,
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().entries.len())
}

/// The SPIFFE IDs the agent at `socket` serves this process now (empty: no answer).
async fn served_ids(socket: &std::path::Path) -> Vec<String> {
    let Ok(ch) = crate::common::try_uds_channel(socket).await else {
        return Vec::new();
    };
    let mut c = wl::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(ch);
    let Ok(r) = c
        .fetch_x509svid(workload_request(wl::X509svidRequest {}))
        .await
    else {
        return Vec::new();
    };
    match r.into_inner().message().await {
        Ok(Some(m)) => m.svids.into_iter().map(|s| s.spiffe_id).collect(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_unreachable_admin_rpcs_unavailable_agents_keep_serving_then_recover() {
    let Some((db, pg)) = postgres_database("spire_e2e_outage") else {
        return;
    };
    let proxy = CuttableProxy::start(pg).await;
    let url = format!("postgres://postgres@127.0.0.1:{}/{db}", proxy.port);
    let mut server =
        Server::start(|c| c.datastore(spire_testkit::DataStoreConfig::Postgres(url.clone())));
    let agent = AgentProc::start(&server, &server.dir.path().join("agent"));
    let agent_id = AgentProc::id(&server);
    register_me(&server, "spiffe://example.org/before", &agent_id, &[]);
    let socket = agent.cfg.socket_path.clone();
    spire_testkit::wait_until(WAIT, "the workload SVID", async || {
        served_ids(&socket).await == ["spiffe://example.org/before"]
    })
    .await
    .unwrap();

    proxy.cut();
    // Datastore-backed admin RPCs: Unavailable (the client may retry), not a hang or a crash.
    let mut last = None;
    spire_testkit::wait_until(WAIT, "ListEntries answers Unavailable", async || {
        let r = list_entries(&server).await;
        let unavailable = matches!(&r, Err(s) if s.code() == Code::Unavailable);
        last = Some(r);
        unavailable
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: last answer {last:?}"));
    let mut c = epb::entry_client::EntryClient::new(uds_channel(&server.cfg.socket_path).await);
    let err = c
        .batch_create_entry(epb::BatchCreateEntryRequest {
            entries: vec![entry("/during-outage")],
            output_mask: None,
        })
        .await
        .map(|r| r.into_inner().results[0].status.clone().unwrap());
    match err {
        Err(s) => assert_eq!(s.code(), Code::Unavailable, "{s:?}"),
        Ok(st) => assert_eq!(st.code, Code::Unavailable as i32, "{st:?}"),
    }
    // The agent keeps serving its cached SVID for the whole outage (several sync periods).
    for _ in 0..4 {
        assert_eq!(
            served_ids(&socket).await,
            ["spiffe://example.org/before"],
            "the agent stopped serving its cached SVID while the datastore was unreachable"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    assert!(
        server.is_running(),
        "spire-server exited:\n{}",
        server.logs()
    );

    proxy.restore();
    spire_testkit::wait_until(WAIT, "ListEntries answers again", async || {
        list_entries(&server).await.is_ok()
    })
    .await
    .unwrap();
    // Writes work again and reach the agent.
    register_me(&server, "spiffe://example.org/after", &agent_id, &[]);
    spire_testkit::wait_until(WAIT, "the new entry's SVID at the agent", async || {
        let mut ids = served_ids(&socket).await;
        ids.sort();
        ids == ["spiffe://example.org/after", "spiffe://example.org/before"]
    })
    .await
    .unwrap();
    assert!(
        server.is_running(),
        "spire-server exited:\n{}",
        server.logs()
    );
    assert!(!server.logs().contains("panicked"), "{}", server.logs());
}

/// An entry whose selectors make it large (≈ 10 KB), to fill a small filesystem quickly.
fn big_entry(i: usize) -> types::Entry {
    let mut e = entry(&format!("/big/{i}"));
    e.selectors = (0..20)
        .map(|k| types::Selector {
            r#type: "unix".into(),
            value: format!("uid:{i}-{k}-{}", "x".repeat(500)),
        })
        .collect();
    e
}

#[tokio::test(flavor = "multi_thread")]
async fn full_data_dir_is_a_clear_write_error_and_keeps_what_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = spire_testkit::ServerConfig::new(TD, &dir.path().join("server"));
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let conf = cfg.write(&dir.path().join("server.conf")).unwrap();
    // data_dir is a 2 MiB tmpfs in a private mount namespace that only the server sees (a real
    // "no space left on device"); its API socket is outside it, on the test's filesystem.
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        args.push("-r".into());
    }
    for a in [
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount -t tmpfs -o size=2m tmpfs \"$1\" && exec \"$2\" run -config \"$3\"",
        "sh",
    ] {
        args.push(a.into());
    }
    args.push(cfg.data_dir.clone().into());
    args.push(bin_path("spire-server").into());
    args.push(conf.into());
    let mut proc = spire_testkit::Process::start("unshare", args).unwrap();
    let sock = cfg.socket_path.display().to_string();
    common::wait_healthy(
        &mut proc,
        "spire-server",
        &sock,
        "the server's local API answers",
    );

    let mut c = epb::entry_client::EntryClient::new(uds_channel(&cfg.socket_path).await);
    let mut acknowledged = Vec::new();
    let mut failure = None;
    for i in 0..2000 {
        let r = c
            .batch_create_entry(epb::BatchCreateEntryRequest {
                entries: vec![big_entry(i)],
                output_mask: None,
            })
            .await;
        let status = match r {
            Ok(r) => r.into_inner().results[0].status.clone().unwrap(),
            Err(st) => types::Status {
                code: st.code() as i32,
                message: st.message().to_owned(),
            },
        };
        if status.code == 0 {
            acknowledged.push(format!("/big/{i}"));
        } else {
            failure = Some(status);
            break;
        }
    }
    let failure = failure.expect("a 2 MiB data_dir never filled up");
    assert!(
        !acknowledged.is_empty(),
        "no entry fit before the disk was full"
    );
    // The write fails with a status that says why (SQLite: "database or disk is full"), and
    // the server stays up.
    assert!(
        failure.message.contains("full"),
        "the error should say the disk is full: {failure:?}"
    );
    assert!(proc.is_running(), "spire-server died:\n{}", proc.logs());
    // Nothing acknowledged is lost, the failed write left nothing behind, nothing duplicated.
    let mut listed = common::entry_paths(&mut c).await;
    listed.sort();
    acknowledged.sort();
    assert_eq!(listed, acknowledged);
    proc.terminate(Duration::from_secs(30));
}
