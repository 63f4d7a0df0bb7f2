//! End-to-end tests of the Workload API of the real `spire-agent` binary (attested to the real
//! `spire-server`), called by clients nobody in this project wrote: go-spiffe v2, py-spiffe and
//! the Rust `spiffe` crate, plus `spire-agent api`, `openssl verify` and our own validator.
//! Security: callers of other uids (setpriv) get only their own identities, an unregistered
//! uid and a wrong binary (sha256 selector) get PermissionDenied, a call without the security
//! header gets InvalidArgument.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use spire_testkit::{
    AgentConfig, Cli, CliOutput, Process, ServerConfig, bin_path, run_cli, temp_dir,
    wait_until_sync,
};

const TD: &str = "example.org";
pub(crate) const WAIT: Duration = Duration::from_secs(90);
const NODE: &str = "spiffe://example.org/node";

pub(crate) fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_spire-agent"))
}

pub(crate) fn id(path: &str) -> String {
    format!("spiffe://{TD}/{path}")
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub(crate) fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Lets other uids reach the sockets under `dir`.
fn open_dir(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A server and one agent (join token, unix attestor with path discovery, admin socket).
pub(crate) struct Env {
    pub(crate) dir: tempfile::TempDir,
    server_cfg: ServerConfig,
    _server: Process,
    pub(crate) agent: Process,
    pub(crate) agent_cfg: AgentConfig,
    admin: PathBuf,
}

impl Env {
    fn start() -> Env {
        Self::start_with(|_| {})
    }

    /// [`Env::start`] with the agent configuration adjusted by `configure`.
    pub(crate) fn start_with(configure: impl FnOnce(&mut AgentConfig)) -> Env {
        let dir = temp_dir();
        open_dir(dir.path());
        let server_cfg = ServerConfig::new(TD, &dir.path().join("server"));
        let server_conf = server_cfg.write(&dir.path().join("server.conf")).unwrap();
        let server = Process::start(
            bin_path("spire-server"),
            ["run", "-config", server_conf.to_str().unwrap()],
        )
        .unwrap();
        let sock = server_cfg.socket_path.display().to_string();
        wait_until_sync(WAIT, "server answers on its API socket", || {
            run_cli(
                bin_path("spire-server"),
                ["bundle", "show", "-socketPath", sock.as_str()],
            )
            .success()
        })
        .unwrap();
        let bundle = run_cli(
            bin_path("spire-server"),
            ["bundle", "show", "-socketPath", sock.as_str()],
        );
        let bundle_path = dir.path().join("bundle.pem");
        std::fs::write(&bundle_path, &bundle.stdout).unwrap();
        let token_out = run_cli(
            bin_path("spire-server"),
            [
                "token",
                "generate",
                "-socketPath",
                sock.as_str(),
                "-spiffeID",
                NODE,
            ],
        );
        token_out.assert_success();
        let token = token_out
            .stdout
            .trim()
            .strip_prefix("Token:")
            .unwrap()
            .trim()
            .to_owned();

        let agent_dir = dir.path().join("agent");
        std::fs::create_dir_all(&agent_dir).unwrap();
        open_dir(&agent_dir);
        let admin = dir.path().join("admin").join("admin.sock");
        let mut agent_cfg = server_cfg
            .agent_config(&agent_dir)
            .trust_bundle(&bundle_path);
        agent_cfg.discover_workload_path = true;
        agent_cfg.admin_socket_path = Some(admin.clone());
        configure(&mut agent_cfg);
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
            dir,
            server_cfg,
            _server: server,
            agent,
            agent_cfg,
            admin,
        };
        let socket = env.socket();
        wait_until_sync(WAIT, "agent healthcheck passes", || {
            run_cli(agent_bin(), ["healthcheck", "-socketPath", socket.as_str()]).success()
        })
        .unwrap();
        env
    }

    pub(crate) fn socket(&self) -> String {
        self.agent_cfg.socket_path.display().to_string()
    }

    pub(crate) fn endpoint(&self) -> String {
        self.agent_cfg.endpoint_socket()
    }

    pub(crate) fn entry(&self, spiffe: &str, selectors: &[&str], extra: &[&str]) {
        let sock = self.server_cfg.socket_path.display().to_string();
        let mut args = vec![
            "entry".to_owned(),
            "create".into(),
            "-socketPath".into(),
            sock,
            "-parentID".into(),
            NODE.into(),
            "-spiffeID".into(),
            spiffe.into(),
        ];
        for s in selectors {
            args.push("-selector".into());
            args.push((*s).to_owned());
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        run_cli(bin_path("spire-server"), args).assert_success();
    }

    /// Runs `program args` as `uid` (root only), else as ourselves.
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

fn json(out: &CliOutput) -> serde_json::Value {
    out.assert_success();
    out.stdout_json().unwrap()
}

fn openssl_verify(bundle: &Path, chain: &Path) {
    let out = run_cli(
        spire_testkit::openssl(),
        [
            "verify".as_ref(),
            "-CAfile".as_ref(),
            bundle.as_os_str(),
            chain.as_os_str(),
        ],
    );
    out.assert_success();
    assert!(out.stdout.contains(": OK"), "{}", out.stdout);
}

fn validate_with_ours(chain_pem: &Path, bundle_pem: &Path) -> String {
    let chain = spire_spiffe::parse_pem_certificates(&std::fs::read(chain_pem).unwrap()).unwrap();
    let td: spire_spiffe::TrustDomain = TD.parse().unwrap();
    let bundle = spire_spiffe::Bundle::from_pem(td, &std::fs::read(bundle_pem).unwrap()).unwrap();
    spire_crypto::validate_x509_svid(&chain, &bundle, SystemTime::now())
        .unwrap()
        .to_string()
}

#[test]
fn independent_clients_get_valid_svids_from_the_agent() {
    let env = Env::start();
    let me = id("workload");
    let me2 = id("workload2");
    let uid_sel = format!("unix:uid:{}", my_uid());
    // A federated trust domain: its bundle reaches only workloads whose entries federate with it.
    let fed_ca = spire_testkit::TestCa::new("other.org root");
    let fed_pem = env.dir.path().join("other-org.pem");
    std::fs::write(&fed_pem, fed_ca.cert_pem()).unwrap();
    run_cli(
        bin_path("spire-server"),
        [
            "bundle",
            "set",
            "-socketPath",
            &env.server_cfg.socket_path.display().to_string(),
            "-id",
            "spiffe://other.org",
            "-path",
            fed_pem.to_str().unwrap(),
        ],
    )
    .assert_success();
    env.entry(&me, &[&uid_sel], &["-hint", "main"]);
    env.entry(&me2, &[&uid_sel], &["-federatesWith", "spiffe://other.org"]);
    env.wait_for_svid(None, &me);
    env.wait_for_svid(None, &me2);
    wait_until_sync(WAIT, "the federated bundle is served", || {
        let out = env.api(None, &["api", "fetch", "x509"]);
        out.success()
            && out
                .stdout
                .contains("[spiffe://other.org] CA #1 Valid After:")
    })
    .unwrap();

    // spire-agent api fetch x509 -write: files as SPIRE writes them, key 0600, verifiable.
    let out_dir = env.dir.path().join("cli-out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = env.api(
        None,
        &["api", "fetch", "x509", "-write", out_dir.to_str().unwrap()],
    );
    out.assert_success();
    assert!(
        out.stdout.contains("Received 2 svids after"),
        "{}",
        out.stdout
    );
    // The federated bundle is written next to each SVID, as SPIRE's CLI does.
    let fed_written = spire_spiffe::parse_pem_certificates(
        &std::fs::read(out_dir.join("federated_bundle.0.0.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(fed_written, [fed_ca.cert_der().to_vec()]);
    for i in 0..2 {
        let svid = out_dir.join(format!("svid.{i}.pem"));
        let key = out_dir.join(format!("svid.{i}.key"));
        let bundle = out_dir.join(format!("bundle.{i}.pem"));
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        openssl_verify(&bundle, &svid);
        let got = validate_with_ours(&svid, &bundle);
        assert!(got == me || got == me2, "{got}");
    }
    let js = json(&env.api(None, &["api", "fetch", "x509", "-output", "json"]));
    assert_eq!(js["svids"].as_array().unwrap().len(), 2);

    // JWT through the CLI: fetch, validate, and a wrong audience is refused.
    let out = env.api(
        None,
        &["api", "fetch", "jwt", "-audience", "aud1", "-spiffeID", &me],
    );
    out.assert_success();
    let token = out.stdout.lines().nth(1).unwrap().trim().to_owned();
    assert!(
        out.stdout.contains(&format!("bundle(spiffe://{TD}):")),
        "{}",
        out.stdout
    );
    let out = env.api(
        None,
        &[
            "api",
            "validate",
            "jwt",
            "-audience",
            "aud1",
            "-svid",
            &token,
        ],
    );
    out.assert_success();
    assert!(out.stdout.contains("SVID is valid."));
    assert!(out.stdout.contains(&format!("SPIFFE ID : {me}")));
    let out = env.api(
        None,
        &[
            "api",
            "validate",
            "jwt",
            "-audience",
            "other",
            "-svid",
            &token,
        ],
    );
    out.assert_failure();
    assert!(out.stderr.contains("SVID is not valid"), "{}", out.stderr);

    // The Rust `spiffe` crate.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = spiffe::WorkloadApiClient::connect_to(env.endpoint())
            .await
            .unwrap();
        let ctx = c.fetch_x509_context().await.unwrap();
        let mut ids: Vec<String> = ctx
            .svids()
            .iter()
            .map(|s| s.spiffe_id().to_string())
            .collect();
        ids.sort();
        assert_eq!(ids, [me.clone(), me2.clone()]);
        let mut tds: Vec<String> = ctx
            .bundle_set()
            .iter()
            .map(|(td, _)| td.to_string())
            .collect();
        tds.sort();
        assert_eq!(tds, [TD, "other.org"]);
        let hinted = ctx
            .svids()
            .iter()
            .find(|s| s.spiffe_id().to_string() == me)
            .unwrap();
        assert_eq!(hinted.hint(), Some("main"));
        let tok = c.fetch_jwt_token(["svc"], None).await.unwrap();
        c.validate_jwt_token("svc", &tok).await.unwrap();
        assert!(c.validate_jwt_token("nope", &tok).await.is_err());
        let source = spiffe::JwtSource::builder()
            .endpoint(env.endpoint())
            .build()
            .await
            .unwrap();
        spiffe::JwtSvid::parse_and_validate(&tok, &source, &["svc"]).unwrap();
        source.shutdown().await;
    });

    // A hand-built tonic client without the security header.
    rt.block_on(async {
        let path = PathBuf::from(env.socket());
        let ch = spire_agent::cli::uds_channel(&path).await.unwrap();
        let mut c =
            spire_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(ch);
        let err = c
            .fetch_jwtsvid(spire_proto::workload::JwtsvidRequest {
                audience: vec!["a".into()],
                spiffe_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(err.message(), "security header missing from request");
    });

    // go-spiffe.
    if let Some(go) = spire_testkit::go_client() {
        let go_dir = env.dir.path().join("go-out");
        let js = json(&env.run_as(None, &go, &["x509", "-out", go_dir.to_str().unwrap()]));
        let ids: Vec<&str> = js["spiffe_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            ids.contains(&me.as_str()) && ids.contains(&me2.as_str()),
            "{js}"
        );
        assert_eq!(
            js["bundle_trust_domains"],
            serde_json::json!([TD, "other.org"]),
            "{js}"
        );
        for s in js["svids"].as_array().unwrap() {
            let chain = PathBuf::from(s["chain_path"].as_str().unwrap());
            let bundle = go_dir.join(format!("bundle_{TD}.pem"));
            openssl_verify(&bundle, &chain);
            validate_with_ours(&chain, &bundle);
        }
        let js = json(&env.run_as(None, &go, &["jwt", "-audience", "go-aud"]));
        let tok = js["token"].as_str().unwrap().to_owned();
        let js = json(&env.run_as(
            None,
            &go,
            &["validate", "-audience", "go-aud", "-token", &tok],
        ));
        assert!(
            js["spiffe_id"]
                .as_str()
                .unwrap()
                .starts_with(&format!("spiffe://{TD}/"))
        );
    }

    // py-spiffe (gRPC C-core: exercises the :authority repair).
    if let Some(py) = spire_testkit::python() {
        let script = spire_testkit::python_script("pyspiffe_client.py");
        let script = script.to_str().unwrap();
        let py_dir = env.dir.path().join("py-out");
        let js = json(&env.run_as(
            None,
            &py,
            &[script, "x509", "--out", py_dir.to_str().unwrap()],
        ));
        assert_eq!(js["svids"].as_array().unwrap().len(), 2, "{js}");
        for s in js["svids"].as_array().unwrap() {
            let chain = PathBuf::from(s["chain_path"].as_str().unwrap());
            openssl_verify(&py_dir.join(format!("bundle_{TD}.pem")), &chain);
        }
        assert_eq!(
            js["bundle_trust_domains"],
            serde_json::json!([TD, "other.org"]),
            "{js}"
        );
        let js = json(&env.run_as(None, &py, &[script, "bundles"]));
        assert_eq!(js["x509"][TD], 1, "{js}");
        assert_eq!(js["x509"]["other.org"], 1, "{js}");
        assert_eq!(js["jwt"][TD].as_array().unwrap().len(), 1, "{js}");
        let js = json(&env.run_as(None, &py, &[script, "jwt", "--audience", "py-aud"]));
        let tok = js["token"].as_str().unwrap().to_owned();
        for cmd in ["validate", "validate-local"] {
            let js = json(&env.run_as(
                None,
                &py,
                &[script, cmd, "--audience", "py-aud", "--token", &tok],
            ));
            assert!(
                js["spiffe_id"].as_str().unwrap().starts_with("spiffe://"),
                "{js}"
            );
        }
        let out = env.run_as(None, &py, &[script, "raw-x509", "--no-header"]);
        out.assert_failure();
        assert!(
            out.stderr.contains("code=InvalidArgument"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn callers_get_only_their_own_identities() {
    if !is_root() {
        eprintln!("note: not root, cannot run workloads as other uids; skipping");
        return;
    }
    let env = Env::start();
    let self_id = id("self");
    let peer_a = id("peer-a");
    let peer_b = id("peer-b");
    let hashed = id("hashed");
    env.entry(&self_id, &[&format!("unix:uid:{}", my_uid())], &[]);
    env.entry(&peer_a, &["unix:uid:4242"], &[]);
    env.entry(&peer_b, &["unix:uid:4243"], &[]);
    env.wait_for_svid(None, &self_id);
    env.wait_for_svid(Some(4242), &peer_a);

    // Each uid sees only its own SVID.
    let out = env.api(Some(4242), &["api", "fetch", "x509"]);
    out.assert_success();
    assert!(
        out.stdout.contains(&peer_a) && !out.stdout.contains(&self_id),
        "{}",
        out.stdout
    );
    let out = env.api(None, &["api", "fetch", "x509"]);
    assert!(!out.stdout.contains(&peer_a), "{}", out.stdout);

    // An unregistered uid: PermissionDenied, and one explain line in the agent log.
    let out = env.api(Some(4444), &["api", "fetch", "x509"]);
    out.assert_failure();
    assert!(out.stderr.contains("PermissionDenied"), "{}", out.stderr);
    assert!(out.stderr.contains("no identity issued"), "{}", out.stderr);
    let logs = env.agent.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("no identity issued") && l.contains("unix:uid:4444"))
        .unwrap_or_else(|| panic!("no explain line in the agent log:\n{logs}"));
    assert!(line.contains("pid="), "{line}");
    assert!(line.contains("lacks [unix:uid:"), "{line}");

    // debug explain for a running process of that uid, over the admin socket.
    let mut sleeper = std::process::Command::new("setpriv")
        .args([
            "--reuid=4444",
            "--regid=4444",
            "--clear-groups",
            "--",
            "sleep",
            "120",
        ])
        .spawn()
        .unwrap();
    let pid = sleeper.id().to_string();
    let admin = env.admin.display().to_string();
    let mut explained = String::new();
    wait_until_sync(WAIT, "explain sees the sleeping process", || {
        let out = run_cli(
            agent_bin(),
            [
                "debug",
                "explain",
                "-pid",
                pid.as_str(),
                "-socketPath",
                admin.as_str(),
            ],
        );
        explained = out.stdout.clone();
        out.success() && out.stdout.contains("unix:uid:4444")
    })
    .unwrap();
    assert!(explained.contains("Nearest entries:"), "{explained}");
    assert!(explained.contains("Missing   : unix:uid:"), "{explained}");
    let out = run_cli(
        agent_bin(),
        [
            "debug",
            "explain",
            "-pid",
            pid.as_str(),
            "-socketPath",
            admin.as_str(),
            "-output",
            "json",
        ],
    );
    let js = json(&out);
    assert!(js["matched"].as_array().unwrap().is_empty(), "{js}");
    assert!(!js["nearest"].as_array().unwrap().is_empty(), "{js}");
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    let Some(go) = spire_testkit::go_client() else {
        return;
    };
    // sha256 selector: the Go client binary gets the identity, another binary of the same uid
    // does not.
    let digest = hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &std::fs::read(&go).unwrap(),
    ));
    env.entry(
        &hashed,
        &["unix:uid:4343", &format!("unix:sha256:{digest}")],
        &[],
    );
    wait_until_sync(WAIT, "the hashed binary is served", || {
        let out = env.run_as(Some(4343), &go, &["x509", "-timeout", "5s"]);
        out.success() && out.stdout.contains(&hashed)
    })
    .unwrap();
    let out = env.api(Some(4343), &["api", "fetch", "x509"]);
    out.assert_failure();
    assert!(out.stderr.contains("PermissionDenied"), "{}", out.stderr);

    // spiffetls mTLS between two workloads of two uids, each authorizing the other's ID.
    env.wait_for_svid(Some(4243), &peer_b);
    let mut server_cmd = std::process::Command::new("setpriv");
    server_cmd
        .args(["--reuid=4242", "--regid=4242", "--clear-groups", "--"])
        .arg(&go)
        .args([
            "mtls-server",
            "-addr",
            "127.0.0.1:0",
            "-allow-id",
            &peer_b,
            "-timeout",
            "60s",
        ])
        .env("SPIFFE_ENDPOINT_SOCKET", env.endpoint())
        .current_dir("/");
    let mut server = Process::spawn("go-mtls-server", server_cmd).unwrap();
    let mut addr = String::new();
    wait_until_sync(WAIT, "the mTLS server listens", || {
        let out = server.stdout();
        if let Some(line) = out.lines().find(|l| l.contains("\"listening\"")) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            addr = v["addr"].as_str().unwrap().to_owned();
            true
        } else {
            false
        }
    })
    .unwrap();
    let js = json(&env.run_as(
        Some(4243),
        &go,
        &["mtls-client", "-addr", &addr, "-server-id", &peer_a],
    ));
    assert!(js.to_string().contains(&peer_a), "{js}");
    server.wait_exit(WAIT).unwrap();
    assert!(
        server
            .stdout()
            .contains(&format!("\"peer_id\":\"{peer_b}\"")),
        "{}",
        server.stdout()
    );
}

#[test]
fn x509_sources_observe_rotation() {
    let env = Env::start();
    let me = id("rotating");
    env.entry(
        &me,
        &[&format!("unix:uid:{}", my_uid())],
        &["-x509SVIDTTL", "20"],
    );
    env.wait_for_svid(None, &me);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let rust_source = rt.block_on(async {
        spiffe::X509Source::builder()
            .endpoint(env.endpoint())
            .build()
            .await
            .unwrap()
    });
    let first = rust_source.svid().unwrap();

    if let Some(go) = spire_testkit::go_client() {
        let out = env.run_as(
            None,
            &go,
            &["watch-rotation", "-count", "2", "-timeout", "90s"],
        );
        out.assert_success();
        assert!(out.stdout.contains("\"event\":\"done\""), "{}", out.stdout);
    }

    rt.block_on(async {
        let mut updates = rust_source.updated();
        tokio::time::timeout(WAIT, async {
            loop {
                if rust_source.svid().unwrap().leaf().as_ref() != first.leaf().as_ref() {
                    return;
                }
                updates.changed().await.unwrap();
            }
        })
        .await
        .expect("the Rust X509Source saw a rotated SVID");
        rust_source.shutdown().await;
    });
}
