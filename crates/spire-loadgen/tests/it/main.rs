//! spire-loadgen against a real spire-server process: the report counts exactly what was set up
//! and asked for (no timing is asserted).

// Test helpers outside #[test] functions unwrap freely too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use spire_testkit::{Cli, CliOutput, Process, ServerConfig, bin_path, temp_dir, wait_until_sync};

const TD: &str = "example.org";

struct Server {
    process: Process,
    config: ServerConfig,
    _dir: tempfile::TempDir,
}

fn start_server() -> Server {
    let dir = temp_dir();
    let config = ServerConfig::new(TD, dir.path()).setting(
        "ratelimit",
        "{\n        attestation = false\n        signing = false\n    }",
    );
    let conf = config.write(&dir.path().join("server.conf")).unwrap();
    let process = Process::start(
        bin_path("spire-server"),
        ["run".as_ref(), "-config".as_ref(), conf.as_os_str()],
    )
    .unwrap();
    let socket = config.socket_path.clone();
    let addr = config.server_address();
    wait_until_sync(Duration::from_secs(30), "the server listens", || {
        socket.exists() && std::net::TcpStream::connect(&addr).is_ok()
    })
    .unwrap();
    Server {
        process,
        config,
        _dir: dir,
    }
}

fn loadgen(server: &Server, extra: &[&str]) -> CliOutput {
    let pid = server.process.pid().to_string();
    Cli::new(env!("CARGO_BIN_EXE_spire-loadgen"))
        .args([
            "-serverAddress",
            &server.config.server_address(),
            "-socketPath",
            path(&server.config.socket_path),
            "-trustDomain",
            TD,
            "-serverPid",
            &pid,
            "-output",
            "json",
        ])
        .args(extra)
        .timeout(Duration::from_secs(180))
        .run()
        .unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn u(v: &Value, ptr: &str) -> u64 {
    v.pointer(ptr)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{ptr} missing in report: {v:#}"))
}

#[test]
fn agents_get_exactly_their_svids_and_churn_propagates() {
    let server = start_server();
    let out = loadgen(
        &server,
        &[
            "-agents",
            "5",
            "-workloadsPerAgent",
            "3",
            "-churn",
            "5",
            "-duration",
            "2s",
            "-syncInterval",
            "1s",
            "-progressInterval",
            "500ms",
        ],
    );
    out.assert_success();
    let r = out.stdout_json().unwrap();
    assert_eq!(u(&r, "/setup/join_tokens"), 5);
    assert_eq!(u(&r, "/setup/entries_created"), 15);
    assert_eq!(u(&r, "/setup/entries_failed"), 0);
    assert_eq!(u(&r, "/attestation/ok"), 5);
    assert_eq!(u(&r, "/attestation/failed"), 0);
    assert_eq!(u(&r, "/x509/initial_issued"), 15);
    assert_eq!(u(&r, "/x509/failed"), 0);
    assert_eq!(
        u(&r, "/x509/issued"),
        u(&r, "/x509/initial_issued") + u(&r, "/x509/churn_issued")
    );
    assert_eq!(u(&r, "/x509/requested"), u(&r, "/x509/issued"));
    assert_eq!(u(&r, "/jwt/issued"), 5);
    assert_eq!(u(&r, "/watch/streams_opened"), 5);
    assert!(u(&r, "/churn/created") > 0, "{r:#}");
    let samples = u(&r, "/propagation/samples");
    assert!(samples > 0, "{r:#}");
    assert_eq!(samples, u(&r, "/x509/churn_issued"));
    assert_eq!(u(&r, "/propagation/to_svid/count"), samples);
    assert!(u(&r, "/sync/count") >= 5);
    assert!(u(&r, "/sync/bytes_total") > 0);
    assert_eq!(u(&r, "/server/pid"), u64::from(server.process.pid()));
    assert!(u(&r, "/server/rss_kb_peak") > 0);
    // Progress went to stderr while it ran.
    assert!(out.stderr.contains("attested=5/5"), "{}", out.stderr);
}

#[test]
fn node_aliases_share_their_entries_and_reissue_rounds_count() {
    let server = start_server();
    let out = loadgen(
        &server,
        &[
            "-agents",
            "4",
            "-workloadsPerAgent",
            "2",
            "-aliases",
            "2",
            "-workloadsPerAlias",
            "3",
            "-issueRounds",
            "2",
            "-noWatch",
            "-duration",
            "0s",
            "-progressInterval",
            "0s",
        ],
    );
    out.assert_success();
    let r = out.stdout_json().unwrap();
    // 4×2 own entries + 2 aliases × 3 shared entries.
    assert_eq!(u(&r, "/setup/entries_created"), 14);
    // Every agent sees its 2 entries and its group's 3: 4 × 5.
    assert_eq!(u(&r, "/x509/initial_issued"), 20);
    assert_eq!(u(&r, "/x509/reissued"), 40);
    assert_eq!(u(&r, "/x509/issue_phase/svids"), 40);
    assert_eq!(u(&r, "/x509/failed"), 0);
    assert_eq!(u(&r, "/watch/streams_opened"), 0);
    assert_eq!(u(&r, "/propagation/samples"), 0);
}

#[test]
fn unreachable_socket_is_reported() {
    let dir = temp_dir();
    let sock = dir.path().join("nope.sock");
    let out = Cli::new(env!("CARGO_BIN_EXE_spire-loadgen"))
        .args(["-socketPath", path(&sock), "-agents", "1"])
        .timeout(Duration::from_secs(60))
        .run()
        .unwrap();
    out.assert_failure();
    assert!(out.stderr.contains("nope.sock"), "{}", out.stderr);
}
