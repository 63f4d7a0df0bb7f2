//! HA: two servers of one trust domain on one shared database (PostgreSQL, and MariaDB when
//! `SPIRE_TEST_MYSQL_URL` is set). Each keeps its own CA and both are in the shared bundle; an
//! entry written through one server reaches the other's authorized-entry index (PostgreSQL:
//! woken by LISTEN/NOTIFY), including to a workload under a real `spire-agent` attested to the
//! other server; a join token raced on both servers attests exactly one agent.
//!
//! Agent failover: an agent configured with both servers' addresses moves to B when A is
//! killed with SIGKILL, without re-attesting, and its workload's stream never breaks. Bounded
//! bundles: once a server vanishes, its authorities leave the shared bundle 24 h after they
//! expire, and one server's authorities in the bundle never exceed the documented bound.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spire_server::ServerState;
use spire_spiffe::{Clock as _, SpiffeId, SystemClock};
use spire_testkit::{CliOutput, DataStoreConfig, KeyManagerConfig, Process};
use spire_tls::{BundleSet, Identity};
use tonic::Status;
use tonic::transport::Channel;

use crate::common::{self, Agent, InProcess};

const TD: &str = "example.org";
const BIN: &str = env!("CARGO_BIN_EXE_spire-server");
const WAIT: Duration = Duration::from_secs(30);

/// One in-process server with its own data_dir and disk key manager.
struct Node {
    name: &'static str,
    cfg: spire_testkit::ServerConfig,
    state: Arc<ServerState>,
    addr: String,
    sock: String,
    _run: InProcess,
    _dir: tempfile::TempDir,
}

async fn start(name: &'static str, ds: DataStoreConfig) -> Node {
    start_with_clock(name, ds, Arc::new(SystemClock)).await
}

async fn start_with_clock(
    name: &'static str,
    ds: DataStoreConfig,
    clock: Arc<dyn spire_spiffe::Clock>,
) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let cfg = spire_testkit::ServerConfig::new(TD, dir.path())
        .datastore(ds)
        .key_manager(KeyManagerConfig::Disk(dir.path().join("data/keys.json")));
    let run = InProcess::start(&cfg, clock, WAIT).await;
    let node = Node {
        name,
        addr: cfg.server_address(),
        sock: cfg.socket_path.to_str().unwrap().to_owned(),
        cfg,
        state: Arc::clone(&run.state),
        _run: run,
        _dir: dir,
    };
    let sock = node.sock.clone();
    spire_testkit::wait_until(WAIT, "the local API answers", async || {
        let sock = sock.clone();
        tokio::task::spawn_blocking(move || {
            cli(&["healthcheck", "-socketPath", &sock]).status.success()
        })
        .await
        .unwrap()
    })
    .await
    .unwrap();
    node
}

/// Runs `spire-server <args> -socketPath <node's socket>` off the runtime's worker threads.
async fn run_cli(node: &Node, args: &[&str]) -> CliOutput {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(["-socketPath".to_string(), node.sock.clone()]);
    tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        cli(&refs)
    })
    .await
    .unwrap()
}

async fn cli_ok(node: &Node, args: &[&str]) -> String {
    let out = run_cli(node, args).await;
    assert!(
        out.status.success(),
        "server {}: {args:?} failed: {}\n{}",
        node.name,
        out.stdout,
        out.stderr
    );
    out.stdout
}

fn cli(args: &[&str]) -> CliOutput {
    spire_testkit::Cli::new(BIN)
        .args(args)
        .timeout(Duration::from_secs(120))
        .run()
        .unwrap()
}

/// A client channel to `node` trusting `bundle` (which must hold the node's CA).
async fn channel(node: &Node, bundle: &[Vec<u8>], identity: Option<Identity>) -> Channel {
    let bundles = BundleSet::with_roots(TD.parse().unwrap(), bundle.iter().cloned()).unwrap();
    common::tls_channel(&node.addr, TD, bundles, identity).await
}

/// AttestAgent with `join_token` against `node`, as SPIRE's agent runs it.
async fn attest_token(node: &Node, bundle: &[Vec<u8>], token: &str) -> Result<Agent, Status> {
    common::attest(
        channel(node, bundle, None).await,
        "join_token",
        token.as_bytes().to_vec(),
        |_| Err(Status::internal("join_token does not challenge")),
    )
    .await
}

/// The IDs of the entries `node` authorizes for `agent` (GetAuthorizedEntries over mTLS).
async fn authorized_ids(
    node: &Node,
    bundle: &[Vec<u8>],
    agent: &Agent,
) -> Result<Vec<String>, Status> {
    common::authorized_ids(channel(node, bundle, Some(agent.identity())).await).await
}

/// The join token in the output of `token generate`.
fn token_of(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Token: "))
        .unwrap()
        .trim()
        .to_owned()
}

/// Starts `spire-agent run -config <conf> -joinToken <token>` and returns it with a runner of
/// `spire-agent <args> -socketPath <socket>`.
fn start_agent(
    conf: &std::path::Path,
    token: &str,
    socket: &std::path::Path,
) -> (
    Process,
    Arc<impl Fn(&[&str]) -> CliOutput + Send + Sync + 'static>,
) {
    let agent_bin = spire_testkit::bin_path("spire-agent");
    let agent = Process::start(
        &agent_bin,
        [
            "run",
            "-config",
            conf.to_str().unwrap(),
            "-joinToken",
            token,
        ],
    )
    .unwrap();
    let sock = socket.display().to_string();
    let agent_cli = move |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-socketPath", sock.as_str()]);
        spire_testkit::Cli::new(&agent_bin)
            .args(all)
            .timeout(Duration::from_secs(60))
            .run()
            .unwrap()
    };
    (agent, Arc::new(agent_cli))
}

/// Hex subject key IDs of the certificates in PEM `text`.
fn skids(text: &str) -> BTreeSet<String> {
    pem::parse_many(text)
        .unwrap()
        .iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| {
            let (_, c) = x509_parser::parse_x509_certificate(p.contents()).unwrap();
            let ski = c
                .extensions()
                .iter()
                .find_map(|e| match e.parsed_extension() {
                    x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                        Some(hex::encode(k.0))
                    }
                    _ => None,
                })
                .unwrap_or_default();
            ski.to_ascii_lowercase()
        })
        .collect()
}

/// The whole HA scenario on one shared database.
async fn two_servers_share_one_database(backend: &str, ds: DataStoreConfig) {
    // Both servers start at the same time on the empty database.
    let (a, b) = tokio::join!(start("A", ds.clone()), start("B", ds));

    // Each keeps its own CA, and both CAs (and JWT keys) are in the shared bundle.
    let (a_x509, _, _) = a.state.ca.x509_states().await;
    let (b_x509, _, _) = b.state.ca.x509_states().await;
    let a_skid = a_x509.unwrap().authority_id.to_ascii_lowercase();
    let b_skid = b_x509.unwrap().authority_id.to_ascii_lowercase();
    assert_ne!(a_skid, b_skid, "the servers must not share a CA");
    for node in [&a, &b] {
        let shown = skids(&cli_ok(node, &["bundle", "show"]).await);
        assert!(
            shown.contains(&a_skid) && shown.contains(&b_skid),
            "bundle show on {} lists {shown:?}, want both {a_skid} and {b_skid}",
            node.name
        );
    }
    let stored = a.state.ca.bundle().await.unwrap().unwrap();
    let (a_jwt, _, _) = a.state.ca.jwt_states().await;
    let (b_jwt, _, _) = b.state.ca.jwt_states().await;
    for kid in [a_jwt.unwrap().authority_id, b_jwt.unwrap().authority_id] {
        assert!(
            stored.jwt_authorities.iter().any(|k| k.key_id == kid),
            "JWT key {kid} missing from the shared bundle"
        );
    }
    let roots: Vec<Vec<u8>> = stored
        .x509_authorities
        .iter()
        .map(|x| x.der.clone())
        .collect();

    // An agent attests to B with a token generated on B.
    let token = token_of(&cli_ok(&b, &["token", "generate", "-ttl", "600"]).await);
    let agent = attest_token(&b, &roots, &token).await.unwrap();
    let agent_id = agent.id().to_string();
    assert!(authorized_ids(&b, &roots, &agent).await.unwrap().is_empty());

    // An entry created through A reaches B: its `entry show` and its index for B's agent.
    let started = Instant::now();
    let out = cli_ok(
        &a,
        &[
            "entry",
            "create",
            "-parentID",
            &agent_id,
            "-spiffeID",
            "spiffe://example.org/ha/workload",
            "-selector",
            "unix:uid:1000",
            "-output",
            "json",
        ],
    )
    .await;
    let created: serde_json::Value = serde_json::from_str(&out).unwrap();
    let entry_id = created["results"][0]["entry"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no entry id in {out}"))
        .to_owned();
    spire_testkit::wait_until(
        WAIT,
        "B authorizes the entry created through A",
        async || {
            authorized_ids(&b, &roots, &agent)
                .await
                .is_ok_and(|ids| ids == [entry_id.clone()])
        },
    )
    .await
    .unwrap();
    eprintln!(
        "{backend}: entry created through server A reached server B's authorized entries in {} ms",
        started.elapsed().as_millis()
    );
    let shown: serde_json::Value = serde_json::from_str(
        &cli_ok(
            &b,
            &["entry", "show", "-entryID", &entry_id, "-output", "json"],
        )
        .await,
    )
    .unwrap();
    assert_eq!(
        shown["entries"][0]["spiffe_id"]["path"].as_str(),
        Some("/ha/workload"),
        "B's entry show: {shown}"
    );

    // A real spire-agent attested to B: a workload under it (this process's uid) gets the SVID
    // of an entry created through A.
    real_agent_on_b_serves_entry_from_a(backend, &a, &b, &roots).await;

    // Join-token races across the two servers: exactly one attestation per token succeeds.
    for round in 0..4 {
        let token = format!("ha-race-{round}");
        a.state
            .datastore
            .create_join_token(&token, a.state.clock.now_unix() + 600)
            .await
            .unwrap();
        let (ra, rb) = tokio::join!(
            attest_token(&a, &roots, &token),
            attest_token(&b, &roots, &token)
        );
        let winners = [ra.is_ok(), rb.is_ok()].iter().filter(|ok| **ok).count();
        assert_eq!(
            winners,
            1,
            "round {round}: A {:?}, B {:?}",
            ra.as_ref().err(),
            rb.as_ref().err()
        );
        let agent_id: SpiffeId = format!("spiffe://{TD}/spire/agent/join_token/{token}")
            .parse()
            .unwrap();
        assert!(
            a.state
                .datastore
                .get_attested_node(&agent_id)
                .await
                .unwrap()
                .is_some()
        );
    }
}

async fn real_agent_on_b_serves_entry_from_a(backend: &str, a: &Node, b: &Node, roots: &[Vec<u8>]) {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let bundle_path = dir.path().join("bundle.pem");
    let pems: Vec<pem::Pem> = roots
        .iter()
        .map(|der| pem::Pem::new("CERTIFICATE", der.clone()))
        .collect();
    std::fs::write(&bundle_path, pem::encode_many(&pems)).unwrap();
    let token = token_of(&cli_ok(b, &["token", "generate", "-ttl", "600"]).await);
    let agent_cfg = b.cfg.agent_config(dir.path()).trust_bundle(&bundle_path);
    let conf = agent_cfg.write(&dir.path().join("agent.conf")).unwrap();
    let (_agent, agent_cli) = start_agent(&conf, &token, &agent_cfg.socket_path);
    {
        let agent_cli = Arc::clone(&agent_cli);
        spire_testkit::wait_until(WAIT, "the agent is healthy", async || {
            let agent_cli = Arc::clone(&agent_cli);
            tokio::task::spawn_blocking(move || agent_cli(&["healthcheck"]).status.success())
                .await
                .unwrap()
        })
        .await
        .unwrap();
    }
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let agent_id = format!("spiffe://{TD}/spire/agent/join_token/{token}");
    let started = Instant::now();
    cli_ok(
        a,
        &[
            "entry",
            "create",
            "-parentID",
            &agent_id,
            "-spiffeID",
            "spiffe://example.org/ha/real-workload",
            "-selector",
            &format!("unix:uid:{uid}"),
        ],
    )
    .await;
    spire_testkit::wait_until(
        WAIT,
        "the workload under B's agent gets the SVID",
        async || {
            let agent_cli = Arc::clone(&agent_cli);
            tokio::task::spawn_blocking(move || {
                let out = agent_cli(&["api", "fetch", "x509"]);
                out.status.success() && out.stdout.contains("spiffe://example.org/ha/real-workload")
            })
            .await
            .unwrap()
        },
    )
    .await
    .unwrap();
    eprintln!(
        "{backend}: entry created through server A reached a workload under server B's agent in {} ms",
        started.elapsed().as_millis()
    );
}

fn postgres_database() -> Option<String> {
    common::postgres_database("spire_ha")
}

/// A fresh MariaDB database, returned as a Go MySQL DSN (the form SPIRE configs use).
fn mysql_database() -> Option<String> {
    // mysql://user@host:port/db (as scripts/test.sh exports it).
    let admin = spire_testkit::mysql_url()?;
    let rest = admin.strip_prefix("mysql://").unwrap();
    let (user, rest) = rest.split_once('@').unwrap();
    let (hostport, _) = rest.split_once('/').unwrap();
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "3306"));
    let name = common::unique_db_name("spire_ha");
    let out = Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h",
            host,
            "-P",
            port,
            "-u",
            user,
            "-e",
            &format!("CREATE DATABASE {name}"),
        ])
        .output()
        .unwrap();
    common::assert_created(&out);
    Some(format!(
        "{user}@tcp({host}:{port})/{name}?parseTime=true&charset=utf8mb4"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_postgres() {
    let Some(url) = postgres_database() else {
        return;
    };
    two_servers_share_one_database("postgres", DataStoreConfig::Postgres(url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_mariadb() {
    let Some(dsn) = mysql_database() else {
        return;
    };
    two_servers_share_one_database("mariadb", DataStoreConfig::Mysql(dsn)).await;
}

/// A `spire-server run` process (so that it can be killed with SIGKILL).
struct ServerProcess {
    cfg: spire_testkit::ServerConfig,
    process: Process,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    fn sock(&self) -> String {
        self.cfg.socket_path.display().to_string()
    }

    async fn cli_ok(&self, args: &[&str]) -> String {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(["-socketPath".to_string(), self.sock()]);
        let out = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            cli(&refs)
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{args:?} failed: {}\n{}\nserver log:\n{}",
            out.stdout,
            out.stderr,
            self.process.logs()
        );
        out.stdout
    }
}

async fn start_process(ds: DataStoreConfig) -> ServerProcess {
    let dir = tempfile::tempdir().unwrap();
    let cfg = spire_testkit::ServerConfig::new(TD, dir.path())
        .datastore(ds)
        .key_manager(KeyManagerConfig::Disk(dir.path().join("data/keys.json")));
    let conf = cfg.write(&dir.path().join("server.conf")).unwrap();
    let process = Process::start(BIN, ["run", "-config", conf.to_str().unwrap()]).unwrap();
    let sock = cfg.socket_path.display().to_string();
    spire_testkit::wait_until(WAIT, "the server's local API answers", async || {
        let sock = sock.clone();
        tokio::task::spawn_blocking(move || {
            cli(&["healthcheck", "-socketPath", &sock]).status.success()
        })
        .await
        .unwrap()
    })
    .await
    .unwrap();
    ServerProcess {
        cfg,
        process,
        _dir: dir,
    }
}

/// `(SPIFFE ID, serial number)` of each agent in `agent list`.
fn agents_listed(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut id = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("SPIFFE ID") {
            id = Some(v.trim_start_matches([' ', ':']).trim().to_owned());
        } else if let Some(v) = line.strip_prefix("Serial number") {
            let serial = v.trim_start_matches([' ', ':']).trim().to_owned();
            out.push((id.take().unwrap_or_default(), serial));
        }
    }
    out
}

/// `(SPIFFE ID, serial, NotAfter unix)` of each X509-SVID in `api fetch x509 -output json`.
fn workload_svids(json: &str) -> Vec<(String, String, i64)> {
    use base64::Engine as _;
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["svids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let der = base64::engine::general_purpose::STANDARD
                .decode(s["x509_svid"].as_str().unwrap())
                .unwrap();
            let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
            (
                s["spiffe_id"].as_str().unwrap().to_owned(),
                c.tbs_certificate.raw_serial_as_string(),
                c.validity().not_after.timestamp(),
            )
        })
        .collect()
}

/// Two `spire-server` processes on one database; an agent configured with both addresses
/// (`server_address = "A,B"`) runs on A. `kill -9` of A: the agent moves to B without
/// re-attesting (same agent SVID serial, one attestation in its log), a workload's open
/// FetchX509SVID stream (`spire-agent api watch`) never breaks and its SVID stays the same and
/// valid, and an entry created through B afterwards reaches the workload.
/// How server A goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// `kill -9`: connections are reset at once.
    Kill,
    /// SIGSTOP: the process hangs, its connections stay open and new ones complete TCP but
    /// never TLS (as a hung process or, for open connections, a host that vanished).
    Hang,
}

async fn agent_fails_over_to_another_server(backend: &str, ds: DataStoreConfig, outage: Outage) {
    use std::os::unix::fs::MetadataExt as _;
    let a = start_process(ds.clone()).await;
    let mut a = a;
    let b = start_process(ds).await;

    // The bootstrap bundle holds both servers' CAs (B publishes its CA when it starts).
    let mut bundle_pem = String::new();
    for _ in 0..300 {
        bundle_pem = b.cli_ok(&["bundle", "show"]).await;
        if skids(&bundle_pem).len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(skids(&bundle_pem).len() >= 2, "bundle: {bundle_pem}");
    let dir = tempfile::tempdir().unwrap();
    let bundle_path = dir.path().join("bundle.pem");
    std::fs::write(&bundle_path, &bundle_pem).unwrap();

    let token = token_of(&a.cli_ok(&["token", "generate", "-ttl", "600"]).await);
    let mut agent_cfg = a.cfg.agent_config(dir.path()).trust_bundle(&bundle_path);
    let (a_addr, b_addr) = (a.cfg.server_address(), b.cfg.server_address());
    agent_cfg.server_address = format!("{a_addr},{b_addr}");
    let conf = agent_cfg.write(&dir.path().join("agent.conf")).unwrap();
    let (mut agent, agent_cli) = start_agent(&conf, &token, &agent_cfg.socket_path);
    let agent_bin = spire_testkit::bin_path("spire-agent");
    let sock = agent_cfg.socket_path.display().to_string();
    agent
        .wait_for_log("Connected to the server", WAIT)
        .await
        .unwrap();
    let first_server = agent
        .logs()
        .lines()
        .find(|l| l.contains("Connected to the server"))
        .unwrap()
        .to_owned();
    assert!(
        first_server.contains(&a_addr),
        "the agent must start on A ({a_addr}), the first address: {first_server}"
    );

    // A workload (this process's uid) gets an SVID of an entry created through A.
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let agent_id = format!("spiffe://{TD}/spire/agent/join_token/{token}");
    let selector = format!("unix:uid:{uid}");
    a.cli_ok(&[
        "entry",
        "create",
        "-parentID",
        &agent_id,
        "-spiffeID",
        "spiffe://example.org/failover/before",
        "-selector",
        &selector,
    ])
    .await;
    let fetch = {
        let agent_cli = Arc::clone(&agent_cli);
        move || {
            let agent_cli = Arc::clone(&agent_cli);
            async move {
                tokio::task::spawn_blocking(move || {
                    let out = agent_cli(&["api", "fetch", "x509", "-output", "json"]);
                    if out.status.success() {
                        workload_svids(&out.stdout)
                    } else {
                        Vec::new()
                    }
                })
                .await
                .unwrap()
            }
        }
    };
    spire_testkit::wait_until(WAIT, "the workload gets its first SVID", async || {
        fetch()
            .await
            .iter()
            .any(|s| s.0 == "spiffe://example.org/failover/before")
    })
    .await
    .unwrap();
    let before = fetch().await;
    // A workload holding the FetchX509SVID stream open across the failover.
    let mut watcher = Process::start(&agent_bin, ["api", "watch", "-socketPath", &sock]).unwrap();
    watcher
        .wait_for_log("spiffe://example.org/failover/before", WAIT)
        .await
        .unwrap();
    let listed = agents_listed(&b.cli_ok(&["agent", "list"]).await);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].0, agent_id);
    let agent_serial = listed[0].1.clone();

    // kill -9 A (or stop it).
    match outage {
        Outage::Kill => {
            a.process.kill();
        }
        Outage::Hang => a.process.signal(nix::sys::signal::Signal::SIGSTOP).unwrap(),
    }
    let killed = Instant::now();
    // A hung server is given up when a call times out (30 s), then its address when the TLS
    // handshake does (5 s).
    let limit = match outage {
        Outage::Kill => WAIT,
        Outage::Hang => Duration::from_secs(120),
    };
    agent
        .wait_for_log("Connected to another server", limit)
        .await
        .unwrap();
    let failover = killed.elapsed();
    let moved = agent
        .logs()
        .lines()
        .find(|l| l.contains("Connected to another server"))
        .unwrap()
        .to_owned();
    assert!(
        moved.contains(&b_addr),
        "the agent must move to B ({b_addr}): {moved}"
    );

    // An entry created through B reaches the workload's open stream.
    let created = Instant::now();
    b.cli_ok(&[
        "entry",
        "create",
        "-parentID",
        &agent_id,
        "-spiffeID",
        "spiffe://example.org/failover/after",
        "-selector",
        &selector,
    ])
    .await;
    watcher
        .wait_for_log("spiffe://example.org/failover/after", WAIT)
        .await
        .unwrap();
    eprintln!(
        "{backend}: agent failover after {outage:?} of its server: reconnected to the other server in {} ms; \
         an entry created through it reached the workload {} ms later ({} ms after the kill)",
        failover.as_millis(),
        created.elapsed().as_millis(),
        killed.elapsed().as_millis()
    );

    // The workload noticed nothing: its stream is still open, its first SVID is unchanged and
    // valid.
    assert!(
        watcher.is_running(),
        "the workload's FetchX509SVID stream broke:\n{}",
        watcher.logs()
    );
    let after = fetch().await;
    let first = before
        .iter()
        .find(|s| s.0.ends_with("/failover/before"))
        .unwrap();
    assert!(after.contains(first), "before {before:?}, after {after:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(first.2 > now, "the SVID expired: {first:?}");
    assert!(after.iter().any(|s| s.0.ends_with("/failover/after")));

    // No re-attestation: one agent, same SVID serial, one attestation in the agent's log.
    assert!(agent.is_running(), "agent exited:\n{}", agent.logs());
    let listed = agents_listed(&b.cli_ok(&["agent", "list"]).await);
    assert_eq!(listed, [(agent_id.clone(), agent_serial)]);
    assert_eq!(
        agent
            .logs()
            .matches("Node attestation was successful")
            .count(),
        1,
        "{}",
        agent.logs()
    );
    watcher.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_failover_on_postgres() {
    let Some(url) = postgres_database() else {
        return;
    };
    agent_fails_over_to_another_server("postgres", DataStoreConfig::Postgres(url), Outage::Kill)
        .await;
}

/// A server that hangs (SIGSTOP) instead of dying: the agent gives it up when a call times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_failover_from_a_hung_server_on_postgres() {
    let Some(url) = postgres_database() else {
        return;
    };
    agent_fails_over_to_another_server("postgres", DataStoreConfig::Postgres(url), Outage::Hang)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_failover_on_mariadb() {
    let Some(dsn) = mysql_database() else {
        return;
    };
    agent_fails_over_to_another_server("mariadb", DataStoreConfig::Mysql(dsn), Outage::Kill).await;
}

/// The X.509 authority count per live server the bundle never exceeds, for `ca_ttl` = `l`: an
/// authority is prepared when the current one has half its lifetime left (one every `l / 2`)
/// and stays in the bundle until 24 h after it expires (`l + 24 h` in all).
fn authorities_bound(l: Duration) -> usize {
    let window = l + spire_server::ca::manager::BUNDLE_PRUNE_AFTER;
    (window.as_secs() / (l.as_secs() / 2)) as usize + 1
}

/// Bounded bundles (SPIRE #4699, #4415): two servers share the bundle; B vanishes for good. A
/// keeps rotating (one-hour steps of a fake clock over ten CA lifetimes): B's X.509 authority
/// and JWT key leave the bundle (and `bundle show`'s JWKS) once they have been expired for
/// 24 h, and the X.509 and JWT key counts never exceed the documented per-server bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bundle_forgets_a_vanished_server_and_stays_bounded() {
    let Some(url) = postgres_database() else {
        return;
    };
    let ds = DataStoreConfig::Postgres(url);
    let clock = Arc::new(spire_spiffe::FakeClock::new(std::time::SystemTime::now()));
    let a = start_with_clock("A", ds.clone(), clock.clone()).await;
    let b = start_with_clock("B", ds, clock.clone()).await;
    let (b_x509, _, _) = b.state.ca.x509_states().await;
    let (b_jwt, _, _) = b.state.ca.jwt_states().await;
    let b_x509 = b_x509.unwrap();
    let b_jwt = b_jwt.unwrap();
    let b_skid = b_x509.authority_id.to_ascii_lowercase();
    let b_kid = b_jwt.authority_id.clone();
    let b_gone_after = b_x509.expires_at.max(b_jwt.expires_at)
        + spire_server::ca::manager::BUNDLE_PRUNE_AFTER.as_secs() as i64;
    // Both servers' authorities are in the shared bundle (B's may need a moment to appear).
    spire_testkit::wait_until(WAIT, "B's authorities are in the bundle", async || {
        let bundle = a.state.ca.bundle().await.unwrap().unwrap();
        bundle.jwt_authorities.iter().any(|k| k.key_id == b_kid)
            && skids(&cli_ok(&a, &["bundle", "show"]).await).contains(&b_skid)
    })
    .await
    .unwrap();
    drop(b); // gone for good

    let ttl = a.state.ca.config().ca_ttl;
    let bound = authorities_bound(ttl);
    let (mut max_x509, mut max_jwt, mut max_all) = (0, 0, 0);
    let steps = 10 * ttl.as_secs() / 3600;
    let mut b_seen_after_deadline = Vec::new();
    for _ in 0..steps {
        clock.advance(Duration::from_secs(3600));
        a.state.ca.rotate().await.unwrap();
        let bundle = a.state.ca.bundle().await.unwrap().unwrap();
        // While B's authorities (one of each kind) linger, they come on top of A's.
        max_all = max_all
            .max(bundle.x509_authorities.len())
            .max(bundle.jwt_authorities.len());
        // One rotation step (at most an hour) after B's authorities passed the grace period,
        // they must be gone.
        if clock.now_unix() > b_gone_after + 3600 {
            max_x509 = max_x509.max(bundle.x509_authorities.len());
            max_jwt = max_jwt.max(bundle.jwt_authorities.len());
            let pem: Vec<pem::Pem> = bundle
                .x509_authorities
                .iter()
                .map(|x| pem::Pem::new("CERTIFICATE", x.der.clone()))
                .collect();
            if skids(&pem::encode_many(&pem)).contains(&b_skid)
                || bundle.jwt_authorities.iter().any(|k| k.key_id == b_kid)
            {
                b_seen_after_deadline.push(clock.now_unix());
            }
        }
    }
    assert!(
        b_seen_after_deadline.is_empty(),
        "B's authorities still in the bundle at {b_seen_after_deadline:?} (gone after {b_gone_after})"
    );
    // The JWKS (SPIFFE bundle) as `bundle show -format spiffe` prints it.
    let jwks: serde_json::Value =
        serde_json::from_str(&cli_ok(&a, &["bundle", "show", "-format", "spiffe"]).await).unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    let jwt_keys = keys.iter().filter(|k| k["use"] == "jwt-svid").count();
    let x509_keys = keys.iter().filter(|k| k["use"] == "x509-svid").count();
    assert!(keys.iter().all(|k| k["kid"] != b_kid.as_str()));
    eprintln!(
        "bundle of one live server over {steps} one-hour rotation steps (ca_ttl {ttl:?}): at most \
         {max_x509} X.509 authorities and {max_jwt} JWT keys (bound {bound} each) once the \
         vanished server's aged out, {max_all} before; at the end {x509_keys} X.509 and \
         {jwt_keys} JWT keys"
    );
    assert!(
        max_all <= bound + 1,
        "{max_all} authorities of one kind > {bound} + 1"
    );
    assert!(
        (1..=bound).contains(&max_x509),
        "{max_x509} X.509 authorities > {bound}"
    );
    assert!(
        (1..=bound).contains(&max_jwt),
        "{max_jwt} JWT keys > {bound}"
    );
    assert!((1..=bound).contains(&jwt_keys) && (1..=bound).contains(&x509_keys));
}
