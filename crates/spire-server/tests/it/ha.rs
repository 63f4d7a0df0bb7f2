//! HA: two servers of one trust domain on one shared database (PostgreSQL, and MariaDB when
//! `SPIRE_TEST_MYSQL_URL` is set). Each keeps its own CA and both are in the shared bundle; an
//! entry written through one server reaches the other's authorized-entry index (PostgreSQL:
//! woken by LISTEN/NOTIFY), including to a workload under a real `spire-agent` attested to the
//! other server; a join token raced on both servers attests exactly one agent.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spire_crypto::{KeyType, PrivateKey};
use spire_proto::server::{agent as apb, entry as epb};
use spire_proto::types;
use spire_server::ServerState;
use spire_spiffe::{SpiffeId, SystemClock};
use spire_testkit::{CliOutput, DataStoreConfig, KeyManagerConfig, Process};
use spire_tls::{BundleSet, ClientOptions, Identity, PeerMatcher, ServerAuth, SharedIdentity};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::Channel;

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
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
        self.task.abort();
    }
}

async fn start(name: &'static str, ds: DataStoreConfig) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let cfg = spire_testkit::ServerConfig::new(TD, dir.path())
        .datastore(ds)
        .key_manager(KeyManagerConfig::Disk(dir.path().join("data/keys.json")));
    let addr = cfg.server_address();
    let sock = cfg.socket_path.to_str().unwrap().to_owned();
    let config = spire_config::ServerConfig::parse(
        &cfg.render(),
        "server.conf",
        &spire_config::ServerOverrides::default(),
    )
    .unwrap();
    let state = spire_server::server::build_state(config, Arc::new(SystemClock), None)
        .await
        .unwrap();
    let run_state = Arc::clone(&state);
    let task = tokio::spawn(async move {
        let _ = spire_server::server::run(run_state, Vec::new()).await;
    });
    let node = Node {
        name,
        cfg,
        state,
        addr,
        sock,
        _dir: dir,
        task,
    };
    spire_testkit::wait_until(WAIT, "the TCP listener accepts connections", async || {
        tokio::net::TcpStream::connect(&node.addr).await.is_ok()
    })
    .await
    .unwrap();
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
    let shared = match identity {
        Some(i) => SharedIdentity::new(i),
        None => SharedIdentity::empty(),
    };
    let bundles = BundleSet::with_roots(TD.parse().unwrap(), bundle.iter().cloned()).unwrap();
    let cfg = spire_tls::client_config(
        ServerAuth::Verify {
            bundles,
            expected: PeerMatcher::SpireServer(TD.parse().unwrap()),
        },
        ClientOptions {
            identity: shared,
            clock: Arc::new(SystemClock),
        },
    )
    .unwrap();
    spire_tls::connect(&node.addr, cfg).await.unwrap()
}

/// An agent attested with a join token: its key and SVID chain.
struct Agent {
    key: PrivateKey,
    chain: Vec<Vec<u8>>,
}

impl Agent {
    fn id(&self) -> SpiffeId {
        spire_crypto::spiffe_id_from_cert(&self.chain[0]).unwrap()
    }

    fn identity(&self) -> Identity {
        Identity::from_der(
            self.chain.clone(),
            self.key.to_pkcs8_der().unwrap().to_vec(),
        )
        .unwrap()
    }
}

/// AttestAgent with `join_token` against `node`, as SPIRE's agent runs it.
async fn attest_token(node: &Node, bundle: &[Vec<u8>], token: &str) -> Result<Agent, Status> {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let csr = spire_crypto::create_csr(&key, None).unwrap();
    let mut client = apb::agent_client::AgentClient::new(channel(node, bundle, None).await);
    let (tx, rx) = mpsc::channel(4);
    tx.send(apb::AttestAgentRequest {
        step: Some(apb::attest_agent_request::Step::Params(
            apb::attest_agent_request::Params {
                data: Some(types::AttestationData {
                    r#type: "join_token".into(),
                    payload: token.as_bytes().to_vec(),
                }),
                params: Some(apb::AgentX509svidParams { csr }),
            },
        )),
    })
    .await
    .unwrap();
    let mut stream = client
        .attest_agent(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let msg = stream
        .message()
        .await?
        .ok_or_else(|| Status::internal("stream ended early"))?;
    match msg.step {
        Some(apb::attest_agent_response::Step::Result(r)) => {
            let svid = r
                .svid
                .ok_or_else(|| Status::internal("result without SVID"))?;
            Ok(Agent {
                key,
                chain: svid.cert_chain,
            })
        }
        Some(apb::attest_agent_response::Step::Challenge(_)) => {
            Err(Status::internal("join_token does not challenge"))
        }
        None => Err(Status::internal("empty step")),
    }
}

/// The IDs of the entries `node` authorizes for `agent` (GetAuthorizedEntries over mTLS).
async fn authorized_ids(
    node: &Node,
    bundle: &[Vec<u8>],
    agent: &Agent,
) -> Result<Vec<String>, Status> {
    let mut c =
        epb::entry_client::EntryClient::new(channel(node, bundle, Some(agent.identity())).await);
    let r = c
        .get_authorized_entries(epb::GetAuthorizedEntriesRequest { output_mask: None })
        .await?;
    Ok(r.into_inner().entries.into_iter().map(|e| e.id).collect())
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
    let out = cli_ok(&b, &["token", "generate", "-ttl", "600"]).await;
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("Token: "))
        .unwrap()
        .trim()
        .to_owned();
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
    let out = cli_ok(b, &["token", "generate", "-ttl", "600"]).await;
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("Token: "))
        .unwrap()
        .trim()
        .to_owned();
    let agent_cfg = b.cfg.agent_config(dir.path()).trust_bundle(&bundle_path);
    let conf = agent_cfg.write(&dir.path().join("agent.conf")).unwrap();
    let agent_bin = spire_testkit::bin_path("spire-agent");
    let _agent = Process::start(
        &agent_bin,
        [
            "run",
            "-config",
            conf.to_str().unwrap(),
            "-joinToken",
            token.as_str(),
        ],
    )
    .unwrap();
    let sock = agent_cfg.socket_path.display().to_string();
    let agent_cli = move |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-socketPath", sock.as_str()]);
        spire_testkit::Cli::new(&agent_bin)
            .args(all)
            .timeout(Duration::from_secs(60))
            .run()
            .unwrap()
    };
    let agent_cli = Arc::new(agent_cli);
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

/// A fresh database named `spire_ha_<unique>`.
fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("spire_ha_{}_{nanos}", std::process::id())
}

fn postgres_database() -> Option<String> {
    let admin = spire_testkit::postgres_url()?;
    let name = unique_name();
    let out = Command::new("psql")
        .args([admin.as_str(), "-XAtqc", &format!("CREATE DATABASE {name}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "CREATE DATABASE failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (base, _) = admin.rsplit_once('/').unwrap();
    Some(format!("{base}/{name}"))
}

/// A fresh MariaDB database, returned as a Go MySQL DSN (the form SPIRE configs use).
fn mysql_database() -> Option<String> {
    // mysql://user@host:port/db (as scripts/test.sh exports it).
    let admin = spire_testkit::mysql_url()?;
    let rest = admin.strip_prefix("mysql://").unwrap();
    let (user, rest) = rest.split_once('@').unwrap();
    let (hostport, _) = rest.split_once('/').unwrap();
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "3306"));
    let name = unique_name();
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
    assert!(
        out.status.success(),
        "CREATE DATABASE failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
