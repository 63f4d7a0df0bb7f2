//! Shared fixtures: a `spire-server` process driven through its CLI ([`Server`]), and the
//! scenario most tests start from ([`Env`]): a server and one `spire-agent` attested with a
//! join token aliased to `spiffe://example.org/node`, workload path discovery and an admin
//! socket, healthy before the test begins.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use spire_testkit::{
    AgentConfig, Cli, CliOutput, Process, ServerConfig, bin_path, cli_field, run_cli, temp_dir,
    wait_until_sync,
};

pub(crate) const TD: &str = "example.org";
/// How long a process may take to come up, or an SVID to reach a workload.
pub(crate) const WAIT: Duration = Duration::from_secs(90);
/// The node alias of [`Env`]'s agent: the parent of the entries [`Env::entry`] creates.
pub(crate) const NODE: &str = "spiffe://example.org/node";

pub(crate) fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_spire-agent"))
}

fn server_bin() -> PathBuf {
    bin_path("spire-server")
}

/// `spiffe://example.org/<path>`.
pub(crate) fn id(path: &str) -> String {
    format!("spiffe://{TD}/{path}")
}

pub(crate) fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// `unix:uid:<uid of this process>`.
pub(crate) fn my_uid_selector() -> String {
    format!("unix:uid:{}", my_uid())
}

/// A `spire-server run` process with its config written to `<dir>/server.conf`.
pub(crate) struct Server {
    pub(crate) cfg: ServerConfig,
    pub(crate) process: Process,
    config_path: PathBuf,
}

impl Server {
    /// Starts the server and waits until its API socket answers.
    pub(crate) fn start(dir: &Path, cfg: ServerConfig) -> Server {
        let config_path = cfg.write(&dir.join("server.conf")).unwrap();
        let process = Process::start(
            server_bin(),
            ["run", "-config", config_path.to_str().unwrap()],
        )
        .unwrap();
        let s = Server {
            cfg,
            process,
            config_path,
        };
        s.wait_ready();
        s
    }

    /// [`Server::start`] with default settings: files under `<dir>/server`.
    pub(crate) fn start_default(dir: &Path) -> Server {
        Server::start(dir, ServerConfig::new(TD, &dir.join("server")))
    }

    fn wait_ready(&self) {
        wait_until_sync(WAIT, "server answers on its API socket", || {
            self.cli(&["bundle", "show"]).success()
        })
        .unwrap();
    }

    /// Stops the process (SIGTERM) and starts it again on the same config.
    pub(crate) fn restart(&mut self) {
        self.process.terminate(Duration::from_secs(10));
        self.process = Process::start(
            server_bin(),
            ["run", "-config", self.config_path.to_str().unwrap()],
        )
        .unwrap();
        self.wait_ready();
    }

    pub(crate) fn sock(&self) -> String {
        self.cfg.socket_path.display().to_string()
    }

    /// Runs `spire-server <args> -socketPath <sock>`.
    pub(crate) fn cli(&self, args: &[&str]) -> CliOutput {
        let sock = self.sock();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-socketPath", sock.as_str()]);
        run_cli(server_bin(), all)
    }

    /// Like [`Server::cli`], asserting success; returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        out.assert_success();
        out.stdout
    }

    /// A join token for a node alias `spiffe://example.org/<alias>`.
    pub(crate) fn token(&self, alias: &str) -> String {
        let out = self.ok(&["token", "generate", "-spiffeID", &id(alias)]);
        cli_field(&out, "Token").unwrap_or_else(|| panic!("unexpected token output {out:?}"))
    }

    /// The bundle as PEM, written to `<dir>/bundle.pem`.
    pub(crate) fn write_bundle(&self, dir: &Path) -> PathBuf {
        let path = dir.join("bundle.pem");
        std::fs::write(&path, self.ok(&["bundle", "show"])).unwrap();
        path
    }

    pub(crate) fn agent_list(&self) -> String {
        self.ok(&["agent", "list"])
    }

    /// Creates the entry `spiffe` under `parent` with `selectors` and `extra` CLI flags and
    /// returns its ID.
    pub(crate) fn entry(
        &self,
        parent: &str,
        spiffe: &str,
        selectors: &[&str],
        extra: &[&str],
    ) -> String {
        let mut args = vec!["entry", "create", "-parentID", parent, "-spiffeID", spiffe];
        for s in selectors {
            args.extend(["-selector", s]);
        }
        args.extend_from_slice(extra);
        let out = self.ok(&args);
        entry_id(&out)
    }

    pub(crate) fn delete_entry(&self, entry_id: &str) {
        self.ok(&["entry", "delete", "-entryID", entry_id]);
    }
}

/// The `Entry ID` in the pretty output of `spire-server entry create|show`.
pub(crate) fn entry_id(out: &str) -> String {
    cli_field(out, "Entry ID").unwrap_or_else(|| panic!("no entry id in {out}"))
}

/// Lets other uids reach the sockets under `dir`.
fn open_dir(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A server and one agent (join token for [`NODE`], unix attestor with path discovery, admin
/// socket), the agent healthy. The processes are stopped before the directory goes.
pub(crate) struct Env {
    pub(crate) server: Server,
    pub(crate) agent: Process,
    pub(crate) agent_cfg: AgentConfig,
    pub(crate) admin: PathBuf,
    pub(crate) dir: tempfile::TempDir,
}

impl Env {
    pub(crate) fn start() -> Env {
        Self::start_with(|c| c)
    }

    /// [`Env::start`] with the agent configuration adjusted by `configure`.
    pub(crate) fn start_with(configure: impl FnOnce(AgentConfig) -> AgentConfig) -> Env {
        let dir = temp_dir();
        open_dir(dir.path());
        let server = Server::start_default(dir.path());
        let bundle = server.write_bundle(dir.path());
        let token = server.token("node");

        let agent_dir = dir.path().join("agent");
        std::fs::create_dir_all(&agent_dir).unwrap();
        open_dir(&agent_dir);
        let admin = dir.path().join("admin").join("admin.sock");
        let mut agent_cfg = server.cfg.agent_config(&agent_dir).trust_bundle(&bundle);
        agent_cfg.discover_workload_path = true;
        agent_cfg.admin_socket_path = Some(admin.clone());
        let agent_cfg = configure(agent_cfg);
        let conf = agent_cfg.write(&agent_dir.join("agent.conf")).unwrap();
        let agent = Process::start(
            agent_bin(),
            [
                "run",
                "-config",
                conf.to_str().unwrap(),
                "-joinToken",
                token.as_str(),
            ],
        )
        .unwrap();
        let env = Env {
            server,
            agent,
            agent_cfg,
            admin,
            dir,
        };
        let socket = env.socket();
        wait_until_sync(WAIT, "agent healthcheck passes", || {
            run_cli(agent_bin(), ["healthcheck", "-socketPath", socket.as_str()]).success()
        })
        .unwrap();
        env
    }

    /// The Workload API socket's path.
    pub(crate) fn socket(&self) -> String {
        self.agent_cfg.socket_path.display().to_string()
    }

    /// The value for `SPIFFE_ENDPOINT_SOCKET`.
    pub(crate) fn endpoint(&self) -> String {
        self.agent_cfg.endpoint_socket()
    }

    /// Creates an entry under [`NODE`] and returns its ID.
    pub(crate) fn entry(&self, spiffe: &str, selectors: &[&str], extra: &[&str]) -> String {
        self.server.entry(NODE, spiffe, selectors, extra)
    }

    /// Runs `spire-agent <args> -socketPath <admin socket>`.
    pub(crate) fn admin_cli(&self, args: &[&str]) -> CliOutput {
        let admin = self.admin.display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-socketPath", admin.as_str()]);
        run_cli(agent_bin(), all)
    }

    /// Runs `program args` as `uid` (root only), else as ourselves, with
    /// `SPIFFE_ENDPOINT_SOCKET` set to the agent's.
    pub(crate) fn run_as(&self, uid: Option<u32>, program: &Path, args: &[&str]) -> CliOutput {
        let cli = match uid {
            Some(uid) => Cli::new("setpriv")
                .args([
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".to_owned(),
                    "--".to_owned(),
                ])
                .arg(program)
                .args(args),
            None => Cli::new(program).args(args),
        };
        cli.env("SPIFFE_ENDPOINT_SOCKET", self.endpoint())
            .current_dir("/")
            .timeout(Duration::from_secs(60))
            .run()
            .unwrap()
    }

    /// Runs `spire-agent <args> -socketPath <Workload API socket>` as `uid`.
    pub(crate) fn api(&self, uid: Option<u32>, args: &[&str]) -> CliOutput {
        let socket = self.socket();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-socketPath", socket.as_str()]);
        self.run_as(uid, &agent_bin(), &all)
    }

    /// Waits until `spire-agent api fetch x509` run as `uid` receives `spiffe`.
    pub(crate) fn wait_for_svid(&self, uid: Option<u32>, spiffe: &str) {
        wait_until_sync(WAIT, &format!("{spiffe} is served"), || {
            let out = self.api(uid, &["api", "fetch", "x509"]);
            out.success() && out.stdout.contains(spiffe)
        })
        .unwrap();
    }
}
