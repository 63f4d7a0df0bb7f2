//! Shared test support: an in-process server, mTLS channels to a server's TCP port and an
//! agent attested by hand (AttestAgent driven like SPIRE's agent; both from spire-testkit),
//! fresh PostgreSQL databases, and real `spire-server` / `spire-agent` processes driven
//! through their CLIs.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use spire_proto::server::entry as epb;
use spire_server::ServerState;
use spire_spiffe::Clock;
use spire_testkit::{
    AgentConfig, Cli, CliOutput, Process, ServerConfig, cli_field, wait_until_sync,
};
/// The mTLS channel to a server's TCP port, and AttestAgent driven by hand.
pub use spire_testkit::{AttestedAgent as Agent, attest, tls_channel};
use tonic::Status;
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_spire-server");
/// How long a process server or agent may take to come up or to serve an SVID.
const PROCESS_WAIT: Duration = Duration::from_secs(90);

/// A server running in this process; dropping it stops the server.
pub struct InProcess {
    pub state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
        self.task.abort();
    }
}

impl InProcess {
    /// Builds a server from `cfg`'s HCL with `clock`, runs it, and waits (up to `wait`) until
    /// its TCP listener accepts connections.
    pub async fn start(cfg: &ServerConfig, clock: Arc<dyn Clock>, wait: Duration) -> InProcess {
        let config = spire_config::ServerConfig::parse(
            &cfg.render(),
            "server.conf",
            &spire_config::ServerOverrides::default(),
        )
        .unwrap();
        let state = spire_server::server::build_state(config, clock, None)
            .await
            .unwrap();
        let run_state = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let _ = spire_server::server::run(run_state, Vec::new()).await;
        });
        let server = InProcess { state, task };
        let addr = cfg.server_address();
        spire_testkit::wait_until(wait, "the TCP listener accepts connections", async || {
            tokio::net::TcpStream::connect(&addr).await.is_ok()
        })
        .await
        .unwrap();
        server
    }
}

/// The sorted IDs of the entries GetAuthorizedEntries returns over `channel` (which carries
/// the agent's identity).
pub async fn authorized_ids(channel: Channel) -> Result<Vec<String>, Status> {
    let mut c = epb::entry_client::EntryClient::new(channel);
    let r = c
        .get_authorized_entries(epb::GetAuthorizedEntriesRequest { output_mask: None })
        .await?;
    let mut ids: Vec<String> = r.into_inner().entries.into_iter().map(|e| e.id).collect();
    ids.sort();
    Ok(ids)
}

/// A database name `<prefix>_<pid>_<nanos>`, unique on this machine.
pub fn unique_db_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// A fresh PostgreSQL database on `SPIRE_TEST_POSTGRES_URL` (created with psql), or `None`
/// when no server is configured outside CI (under `CI=true` the testkit fails instead).
pub fn postgres_database(prefix: &str) -> Option<String> {
    let admin = spire_testkit::postgres_url()?;
    let name = unique_db_name(prefix);
    let out = Command::new("psql")
        .args([admin.as_str(), "-XAtqc", &format!("CREATE DATABASE {name}")])
        .output()
        .unwrap();
    assert_created(&out);
    let (base, _) = admin.rsplit_once('/').unwrap();
    Some(format!("{base}/{name}"))
}

/// `CREATE DATABASE` (run by `out`'s command) succeeded.
pub fn assert_created(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "CREATE DATABASE failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `type:value` of each selector in a JSON list of `{type, value}` objects.
pub fn selector_strings(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s["type"].as_str().unwrap(),
                s["value"].as_str().unwrap()
            )
        })
        .collect()
}

/// A `spire-server run` process driven through its CLI. Fields drop in order: the process
/// (printing its logs on a failure) before its directory.
pub struct ServerProc {
    pub process: Process,
    pub dir: tempfile::TempDir,
    pub config: ServerConfig,
}

impl ServerProc {
    /// Starts `spire-server run` named `name` on the HCL `text` (written into `dir`, the
    /// directory of `config`), `command` adjusting the command first, and waits until the
    /// local API answers.
    pub fn start(
        name: &str,
        dir: tempfile::TempDir,
        config: ServerConfig,
        text: &str,
        command: impl FnOnce(&mut Command),
    ) -> ServerProc {
        std::fs::create_dir_all(&config.data_dir).unwrap();
        let path = dir.path().join("server.conf");
        std::fs::write(&path, text).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("run").arg("-config").arg(&path);
        command(&mut cmd);
        let process = Process::spawn_logging_to(name, cmd, &dir.path().join("logs")).unwrap();
        let s = ServerProc {
            process,
            dir,
            config,
        };
        wait_until_sync(PROCESS_WAIT, &format!("{name} healthy"), || {
            s.run(&["healthcheck"]).status.success()
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", s.process.log_report()));
        s
    }

    /// Runs `spire-server <args> -socketPath <sock>`.
    pub fn run(&self, args: &[&str]) -> CliOutput {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-socketPath", self.config.socket_path.to_str().unwrap()]);
        Cli::new(BIN)
            .args(&all)
            .timeout(Duration::from_secs(60))
            .run()
            .unwrap()
    }

    /// Like [`ServerProc::run`], asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}\n{}\n{}",
            out.stdout,
            out.stderr,
            self.process.log_report()
        );
        out.stdout
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    pub fn addr(&self) -> String {
        self.config.server_address()
    }

    /// Starts an agent named `name` (files under `<dir>/<name>`) attested with a join token
    /// aliased to `node_id`, and waits until it is healthy.
    pub fn agent(&self, name: &str, node_id: &str) -> AgentProc {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir).unwrap();
        let bundle = dir.join("bootstrap.pem");
        std::fs::write(&bundle, self.ok(&["bundle", "show"])).unwrap();
        let out = self.ok(&["token", "generate", "-spiffeID", node_id]);
        let token = cli_field(&out, "Token").unwrap();
        let config = self
            .config
            .agent_config(&dir)
            .trust_bundle(&bundle)
            .join_token(&token);
        let conf = config.write(&dir.join("agent.conf")).unwrap();
        let mut cmd = Command::new(spire_testkit::bin_path("spire-agent"));
        cmd.arg("run").arg("-config").arg(&conf);
        let process = Process::spawn_logging_to(name, cmd, &dir.join("logs")).unwrap();
        let agent = AgentProc { config, process };
        wait_until_sync(PROCESS_WAIT, &format!("{name} healthy"), || {
            agent.run(&["healthcheck"]).status.success()
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.process.log_report()));
        agent
    }

    /// Registers `id` under `parent` for processes of this uid, with `extra` CLI flags.
    pub fn register_uid(&self, parent: &str, id: &str, extra: &[&str]) {
        let uid = format!("unix:uid:{}", nix::unistd::getuid().as_raw());
        let mut args = vec![
            "entry",
            "create",
            "-parentID",
            parent,
            "-spiffeID",
            id,
            "-selector",
            &uid,
        ];
        args.extend_from_slice(extra);
        self.ok(&args);
    }
}

/// A `spire-agent run` process started by [`ServerProc::agent`].
pub struct AgentProc {
    pub config: AgentConfig,
    pub process: Process,
}

impl AgentProc {
    /// Runs `spire-agent <args> -socketPath <sock>`.
    pub fn run(&self, args: &[&str]) -> CliOutput {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-socketPath", self.config.socket_path.to_str().unwrap()]);
        Cli::new(spire_testkit::bin_path("spire-agent"))
            .args(&all)
            .timeout(Duration::from_secs(60))
            .run()
            .unwrap()
    }

    /// `spire-agent api fetch x509` (pretty): its stdout.
    pub fn fetch(&self) -> String {
        self.run(&["api", "fetch", "x509"]).stdout
    }

    /// Waits until the Workload API serves `id`.
    pub fn wait_for_svid(&self, id: &str) {
        wait_until_sync(PROCESS_WAIT, &format!("{id} is served"), || {
            let out = self.run(&["api", "fetch", "x509"]);
            out.status.success() && out.stdout.contains(id)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.process.log_report()));
    }

    /// Writes `svid.0.pem`, `svid.0.key` and `bundle.0.pem` into `dir`.
    pub fn write_svid(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let out = self.run(&["api", "fetch", "x509", "-write", dir.to_str().unwrap()]);
        assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    }

    /// Runs the Go spiffe-client against this agent's Workload API.
    pub fn go(&self, go: &Path, args: &[&str]) -> CliOutput {
        Cli::new(go)
            .args(args)
            .env("SPIFFE_ENDPOINT_SOCKET", self.config.endpoint_socket())
            .timeout(Duration::from_secs(60))
            .run()
            .unwrap()
    }

    /// Starts the Go `mtls-server` on this agent's Workload API, accepting `allow_id`, and
    /// returns it with the address it listens on.
    pub fn go_mtls_server(&self, go: &Path, allow_id: &str) -> (Process, String) {
        let mut cmd = Command::new(go);
        cmd.args([
            "mtls-server",
            "-addr",
            "127.0.0.1:0",
            "-allow-id",
            allow_id,
            "-timeout",
            "120s",
        ])
        .env("SPIFFE_ENDPOINT_SOCKET", self.config.endpoint_socket());
        let server = Process::spawn("go-mtls-server", cmd).unwrap();
        let mut addr = String::new();
        wait_until_sync(PROCESS_WAIT, "the mTLS server listens", || {
            match server
                .stdout()
                .lines()
                .find(|l| l.contains("\"listening\""))
            {
                Some(line) => {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    addr = v["addr"].as_str().unwrap().to_owned();
                    true
                }
                None => false,
            }
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", server.log_report()));
        (server, addr)
    }
}
