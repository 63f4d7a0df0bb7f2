//! End-to-end tests of the Workload API of the real `spire-agent` binary (attested to the real
//! `spire-server`), called by clients nobody in this project wrote: go-spiffe v2, py-spiffe and
//! the Rust `spiffe` crate, plus `spire-agent api`, `openssl verify` and our own validator.
//! Security: callers of other uids (setpriv) get only their own identities, an unregistered
//! uid and a wrong binary (sha256 selector) get PermissionDenied, a call without the security
//! header gets InvalidArgument.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use spire_testkit::{CliOutput, Process, run_cli, wait_until_sync};

use super::common::{Env, TD, WAIT, id, my_uid_selector};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
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
    let uid_sel = my_uid_selector();
    // A federated trust domain: its bundle reaches only workloads whose entries federate with it.
    let fed_ca = spire_testkit::TestCa::new("other.org root");
    let fed_pem = env.dir.path().join("other-org.pem");
    std::fs::write(&fed_pem, fed_ca.cert_pem()).unwrap();
    env.server.ok(&[
        "bundle",
        "set",
        "-id",
        "spiffe://other.org",
        "-path",
        fed_pem.to_str().unwrap(),
    ]);
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
    let validate = |audience: &str| {
        env.api(
            None,
            &[
                "api",
                "validate",
                "jwt",
                "-audience",
                audience,
                "-svid",
                &token,
            ],
        )
    };
    let out = validate("aud1");
    out.assert_success();
    assert!(out.stdout.contains("SVID is valid."));
    assert!(out.stdout.contains(&format!("SPIFFE ID : {me}")));
    let out = validate("other");
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
    env.entry(&self_id, &[&my_uid_selector()], &[]);
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
    let mut explained = String::new();
    wait_until_sync(WAIT, "explain sees the sleeping process", || {
        let out = env.admin_cli(&["debug", "explain", "-pid", pid.as_str()]);
        explained = out.stdout.clone();
        out.success() && out.stdout.contains("unix:uid:4444")
    })
    .unwrap();
    assert!(explained.contains("Nearest entries:"), "{explained}");
    assert!(explained.contains("Missing   : unix:uid:"), "{explained}");
    let out = env.admin_cli(&["debug", "explain", "-pid", pid.as_str(), "-output", "json"]);
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
    env.entry(&me, &[&my_uid_selector()], &["-x509SVIDTTL", "20"]);
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
