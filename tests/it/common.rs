//! Shared harness for the adversarial suite: a real `spire-server` binary (optionally with an
//! `UpstreamAuthority "disk"` whose root key the test holds), mTLS channels to its TCP port, a
//! hand-driven join-token attestation, and Unix-socket channels to a real `spire-agent`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use spire_crypto::PrivateKey;
use spire_proto::server::entry as epb;
use spire_proto::types;
use spire_testkit::{
    AgentConfig, AttestedAgent, CliOutput, Process, ServerConfig, TestCa, UpstreamDisk, bin_path,
    run_cli, temp_dir, tls_channel, wait_until_sync,
};
use spire_tls::{BundleSet, Identity};
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

pub const TD: &str = "example.org";
pub const WAIT: Duration = Duration::from_secs(60);

/// A `spire-server` process with its directory and config.
pub struct Server {
    /// First field: dropped (killed, logs reported) before the directory goes.
    pub proc: Option<Process>,
    pub dir: tempfile::TempDir,
    pub cfg: ServerConfig,
    pub conf: PathBuf,
    /// The upstream root whose key the test holds (when configured).
    pub upstream: Option<TestCa>,
}

impl Server {
    /// A server with default settings plus `configure`.
    pub fn start(configure: impl FnOnce(ServerConfig) -> ServerConfig) -> Server {
        Self::start_in(temp_dir(), None, configure)
    }

    /// A server whose CA is an intermediate of a root the test holds.
    pub fn start_with_upstream(configure: impl FnOnce(ServerConfig) -> ServerConfig) -> Server {
        let dir = temp_dir();
        let ca = TestCa::new("adversarial upstream root");
        let (cert, key) = ca.write(dir.path(), "upstream").unwrap();
        let upstream = UpstreamDisk {
            cert_file_path: cert,
            key_file_path: key,
            bundle_file_path: None,
        };
        Self::start_in(dir, Some(ca), |c| configure(c.upstream_disk(upstream)))
    }

    fn start_in(
        dir: tempfile::TempDir,
        upstream: Option<TestCa>,
        configure: impl FnOnce(ServerConfig) -> ServerConfig,
    ) -> Server {
        let cfg = configure(ServerConfig::new(TD, &dir.path().join("server")));
        let conf = cfg.write(&dir.path().join("server.conf")).unwrap();
        let mut s = Server {
            dir,
            cfg,
            conf,
            proc: None,
            upstream,
        };
        s.run();
        s
    }

    /// Starts (or restarts) the process and waits until the local API answers.
    pub fn run(&mut self) {
        let mut cmd = std::process::Command::new(bin_path("spire-server"));
        cmd.args(["run", "-config", self.conf.to_str().unwrap()]);
        let logs = self.dir.path().join("logs");
        self.proc = Some(Process::spawn_logging_to("spire-server", cmd, &logs).unwrap());
        self.wait_ready();
    }

    pub fn wait_ready(&mut self) {
        let sock = self.sock();
        let proc = self.proc.as_mut().unwrap();
        wait_healthy(
            proc,
            "spire-server",
            &sock,
            "the server's local API answers",
        );
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.kill();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Process::is_running)
    }

    pub fn logs(&self) -> String {
        self.proc.as_ref().map(Process::logs).unwrap_or_default()
    }

    pub fn sock(&self) -> String {
        self.cfg.socket_path.display().to_string()
    }

    pub fn addr(&self) -> String {
        self.cfg.server_address()
    }

    /// Runs `spire-server <args> -socketPath <sock>`.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let sock = self.sock();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-socketPath", sock.as_str()]);
        run_cli(bin_path("spire-server"), all)
    }

    /// Like [`Server::cli`], asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        out.assert_success();
        out.stdout
    }

    /// A fresh join token (optionally aliased to `spiffe_id`).
    pub fn token(&self) -> String {
        cli_field(&self.ok(&["token", "generate", "-ttl", "600"]), "Token")
    }

    /// The X.509 roots of the server's bundle, DER.
    pub fn roots(&self) -> Vec<Vec<u8>> {
        let pem_text = self.ok(&["bundle", "show"]);
        pem::parse_many(pem_text.as_bytes())
            .unwrap()
            .into_iter()
            .map(pem::Pem::into_contents)
            .collect()
    }

    /// Writes the bundle PEM for agents and returns its path.
    pub fn write_bundle(&self) -> PathBuf {
        let path = self.dir.path().join("bundle.pem");
        std::fs::write(&path, self.ok(&["bundle", "show"])).unwrap();
        path
    }

    /// An mTLS channel to the TCP port, verifying the server's SVID; `identity` is the client
    /// certificate (none: anonymous TLS).
    pub async fn channel(&self, identity: Option<Identity>) -> Channel {
        let bundles = BundleSet::with_roots(TD.parse().unwrap(), self.roots()).unwrap();
        tls_channel(&self.addr(), TD, bundles, identity).await
    }

    /// An agent config for this server with files under `dir` (trusting the current bundle).
    pub fn agent_config(&self, dir: &Path) -> AgentConfig {
        let bundle = self.write_bundle();
        self.cfg.agent_config(dir).trust_bundle(bundle)
    }
}

/// Waits until `proc` (the binary `bin`, which must keep running) passes `healthcheck` on the
/// socket `sock`; `what` names the wait.
pub fn wait_healthy(proc: &mut Process, bin: &str, sock: &str, what: &str) {
    wait_until_sync(WAIT, what, || {
        assert!(proc.is_running(), "{bin} exited:\n{}", proc.logs());
        run_cli(bin_path(bin), ["healthcheck", "-socketPath", sock]).success()
    })
    .unwrap();
}

/// An entry for `path` of the trust domain, child of `/node`, with `selectors`.
pub fn entry(path: &str, selectors: Vec<types::Selector>) -> types::Entry {
    types::Entry {
        spiffe_id: Some(types::Spiffeid {
            trust_domain: TD.into(),
            path: path.into(),
        }),
        parent_id: Some(types::Spiffeid {
            trust_domain: TD.into(),
            path: "/node".into(),
        }),
        selectors,
        ..Default::default()
    }
}

/// The SPIFFE ID path of every entry, through ListEntries in pages of 500 (one item per
/// entry listed, duplicates included).
pub async fn entry_paths(c: &mut epb::entry_client::EntryClient<Channel>) -> Vec<String> {
    let mut out = Vec::new();
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
        out.extend(page.entries.into_iter().map(|e| e.spiffe_id.unwrap().path));
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// An attested agent driven by the test (testkit's, with its SPIFFE ID as text).
pub struct Agent(AttestedAgent);

impl std::ops::Deref for Agent {
    type Target = AttestedAgent;
    fn deref(&self) -> &AttestedAgent {
        &self.0
    }
}

impl Agent {
    pub fn id(&self) -> String {
        self.0.id().to_string()
    }
}

/// AttestAgent with a join token, as SPIRE's agent does it.
pub async fn attest_token(server: &Server, token: &str) -> Result<Agent, Status> {
    attest_with_csr(server, token, None).await
}

/// AttestAgent with a join token and, when given, a caller-made CSR for `key`.
pub async fn attest_with_csr(
    server: &Server,
    token: &str,
    csr_and_key: Option<(Vec<u8>, PrivateKey)>,
) -> Result<Agent, Status> {
    let channel = server.channel(None).await;
    let payload = token.as_bytes().to_vec();
    // join_token has no challenge: the first answer is the result.
    let no_challenge = |_: &[u8]| Err(Status::internal("unexpected step"));
    let agent = match csr_and_key {
        Some(csr_and_key) => {
            spire_testkit::attest_with_csr(
                channel,
                "join_token",
                payload,
                csr_and_key,
                no_challenge,
            )
            .await
        }
        None => spire_testkit::attest(channel, "join_token", payload, no_challenge).await,
    };
    agent.map(Agent)
}

/// A channel over the Unix socket at `path` (connects now).
pub async fn uds_channel(path: &Path) -> Channel {
    try_uds_channel(path).await.unwrap()
}

/// Like [`uds_channel`], failing when the socket is not there (yet).
pub async fn try_uds_channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_owned();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
}

/// A request with the Workload API's security header.
pub fn workload_request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("workload.spiffe.io", "true".parse().unwrap());
    r
}

/// A running agent (join token) of `server`, its files under `dir`.
pub struct AgentProc {
    pub cfg: AgentConfig,
    pub proc: Process,
}

impl AgentProc {
    pub fn start(server: &Server, dir: &Path) -> AgentProc {
        Self::start_with(server, dir, |c| c)
    }

    /// Like [`AgentProc::start`], adjusting the config first.
    pub fn start_with(
        server: &Server,
        dir: &Path,
        configure: impl FnOnce(AgentConfig) -> AgentConfig,
    ) -> AgentProc {
        std::fs::create_dir_all(dir).unwrap();
        let token = server.token();
        let cfg = configure(server.agent_config(dir));
        let conf = cfg.write(&dir.join("agent.conf")).unwrap();
        let proc = Process::start(
            bin_path("spire-agent"),
            [
                "run",
                "-config",
                conf.to_str().unwrap(),
                "-joinToken",
                token.as_str(),
            ],
        )
        .unwrap();
        let mut a = AgentProc { cfg, proc };
        let sock = a.socket();
        wait_healthy(
            &mut a.proc,
            "spire-agent",
            &sock,
            "agent healthcheck passes",
        );
        a
    }

    pub fn socket(&self) -> String {
        self.cfg.socket_path.display().to_string()
    }

    /// The agent's own SPIFFE ID, from `spire-server agent list`.
    pub fn id(server: &Server) -> String {
        cli_field(&server.ok(&["agent", "list"]), "SPIFFE ID")
    }
}

/// The uid of this test process.
pub fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Registers `spiffe_id` for this process's uid under `parent`, with extra CLI flags, and
/// returns the entry ID.
pub fn register_me(server: &Server, spiffe_id: &str, parent: &str, extra: &[&str]) -> String {
    let uid = format!("unix:uid:{}", my_uid());
    let mut args = vec![
        "entry",
        "create",
        "-spiffeID",
        spiffe_id,
        "-parentID",
        parent,
        "-selector",
        uid.as_str(),
    ];
    args.extend_from_slice(extra);
    cli_field(&server.ok(&args), "Entry ID")
}

/// The value of the first `<key> : <value>` line in a CLI's pretty output.
fn cli_field(out: &str, key: &str) -> String {
    spire_testkit::cli_field(out, key).unwrap()
}

/// Parses a DER certificate.
pub fn parse_cert(der: &[u8]) -> x509_parser::certificate::X509Certificate<'_> {
    x509_parser::parse_x509_certificate(der).unwrap().1
}
