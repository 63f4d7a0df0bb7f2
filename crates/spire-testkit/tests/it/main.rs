//! Checks that the external tools `scripts/test.sh` prepares reach the tests
//! and run. Each test skips (with a note) when its `SPIRE_TEST_*` variable is
//! unset, and fails under `CI=true`.

use std::time::Duration;

use spire_testkit::{Cli, TestCa, run_cli};

#[test]
fn go_client_reports_grpc_code_when_no_agent() {
    let Some(client) = spire_testkit::go_client() else {
        return;
    };
    let dir = spire_testkit::temp_dir();
    let sock = format!("unix://{}", dir.path().join("none.sock").display());
    let out = run_cli(&client, ["x509", "-socket", &sock, "-timeout", "3s"]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("error: code=Unavailable"), "{out:?}");
    // Usage errors are told apart from gRPC failures.
    let out = run_cli(&client, ["jwt", "-socket", &sock]);
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("error: usage: -audience is required"),
        "{out:?}"
    );
}

#[test]
fn python_client_reports_grpc_code_when_no_agent() {
    let Some(python) = spire_testkit::python() else {
        return;
    };
    let dir = spire_testkit::temp_dir();
    let sock = format!("unix://{}", dir.path().join("none.sock").display());
    let script = spire_testkit::python_script("pyspiffe_client.py");
    let out = Cli::new(&python)
        .arg(&script)
        .args(["--socket", &sock, "--timeout", "3", "raw-x509"])
        .run()
        .unwrap();
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("error: code=Unavailable"), "{out:?}");
    // py-spiffe itself imports and checks the socket.
    let out = Cli::new(&python)
        .arg(&script)
        .args(["--socket", &sock, "x509"])
        .run()
        .unwrap();
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("does not exist"), "{out:?}");
}

#[test]
fn jwt_verifier_checks_signature_and_audience() {
    let Some(python) = spire_testkit::python() else {
        return;
    };
    let dir = spire_testkit::temp_dir();
    // Mint a token and a JWKS with the venv's PyJWT, then check the verifier
    // accepts it and rejects a wrong audience and a foreign key.
    let mint = r#"
import json, sys, time, jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
d = sys.argv[1]
def jwk(k, kid):
    j = json.loads(ECAlgorithm.to_jwk(k.public_key())); j.update(kid=kid, use="jwt-svid"); return j
k1 = ec.generate_private_key(ec.SECP256R1()); k2 = ec.generate_private_key(ec.SECP256R1())
json.dump({"keys": [jwk(k1, "k1")]}, open(d + "/good.json", "w"))
json.dump({"keys": [jwk(k2, "k1")]}, open(d + "/foreign.json", "w"))
claims = {"sub": "spiffe://example.org/w", "aud": ["a1"], "exp": int(time.time()) + 600}
open(d + "/token", "w").write(jwt.encode(claims, k1, algorithm="ES256", headers={"kid": "k1", "typ": "JWT"}))
"#;
    let d = dir.path().to_string_lossy().into_owned();
    Cli::new(&python)
        .args(["-c", mint, &d])
        .run()
        .unwrap()
        .assert_success();
    let token = std::fs::read_to_string(dir.path().join("token")).unwrap();
    let verify = |jwks: &str, aud: &str| {
        Cli::new(&python)
            .arg(spire_testkit::python_script("jwt_verify.py"))
            .args([
                "--jwks",
                &format!("{d}/{jwks}"),
                "--audience",
                aud,
                "--token",
                "-",
            ])
            .stdin(token.clone())
            .run()
            .unwrap()
    };
    let ok = verify("good.json", "a1");
    ok.assert_success();
    assert_eq!(ok.stdout_json().unwrap()["sub"], "spiffe://example.org/w");
    verify("good.json", "other")
        .assert_failure()
        .assert_output_contains("Audience");
    verify("foreign.json", "a1")
        .assert_failure()
        .assert_output_contains("Signature");
}

#[test]
fn envoy_runs() {
    let Some(envoy) = spire_testkit::envoy() else {
        return;
    };
    let out = Cli::new(&envoy)
        .arg("--version")
        .timeout(Duration::from_secs(60))
        .run()
        .unwrap();
    out.assert_success().assert_output_contains("RELEASE");
}

#[test]
fn postgres_answers() {
    let Some(url) = spire_testkit::postgres_url() else {
        return;
    };
    let out = run_cli("psql", [url.as_str(), "-XAtqc", "select 40 + 2"]);
    out.assert_success();
    assert_eq!(out.stdout.trim(), "42");
}

#[test]
fn mysql_answers() {
    let Some(url) = spire_testkit::mysql_url() else {
        return;
    };
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .unwrap();
    let out = run_cli(
        "mariadb",
        [
            "--no-defaults",
            "-h",
            "127.0.0.1",
            "-P",
            port,
            "-u",
            "root",
            "-N",
            "-e",
            "select 40 + 2",
        ],
    );
    out.assert_success();
    assert_eq!(out.stdout.trim(), "42");
}

#[test]
fn openssl_verifies_test_ca_leaf() {
    let dir = spire_testkit::temp_dir();
    let ca = TestCa::new("it-root");
    let (ca_cert, _) = ca.write(dir.path(), "ca").unwrap();
    let (leaf, _) = ca.issue_leaf("it-leaf").write(dir.path(), "leaf").unwrap();
    let openssl = spire_testkit::openssl();
    let ca_cert = ca_cert.to_string_lossy().into_owned();
    let leaf = leaf.to_string_lossy().into_owned();
    run_cli(&openssl, ["verify", "-CAfile", &ca_cert, &leaf]).assert_success();
    let other = TestCa::new("other-root");
    let (other_cert, _) = other.write(dir.path(), "other").unwrap();
    run_cli(
        &openssl,
        ["verify", "-CAfile", &other_cert.to_string_lossy(), &leaf],
    )
    .assert_failure();
}
