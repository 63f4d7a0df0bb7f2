//! The agent's X.509-SVID cache limit and its Workload API socket, with the real binaries:
//! a workload whose entry is beyond `x509_svid_cache_max_size` still gets its SVID while it
//! asks for it, and the agent re-creates its socket (and directory) when they are removed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use spire_testkit::wait_until_sync;

use super::common::{Env, WAIT, id, my_uid_selector};

/// Agent log lines containing both `a` and `b`.
fn log_lines_with(env: &Env, a: &str, b: &str) -> usize {
    env.agent
        .logs()
        .lines()
        .filter(|l| l.contains(a) && l.contains(b))
        .count()
}

#[test]
fn workload_beyond_the_cache_limit_gets_its_svid() {
    let env = Env::start_with(|cfg| cfg.setting("x509_svid_cache_max_size", "1"));
    // The node alias entry made with the join token is the agent's oldest entry and fills the
    // cache of one. Entries are ordered by creation time in seconds: make ours strictly younger.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let uid = my_uid_selector();
    // Two workloads: one no caller here matches (another binary), and the caller's own.
    let other = id("cache/other");
    let mine = id("cache/mine");
    env.entry(
        &other,
        &[&uid, "unix:path:/nonexistent/other-workload"],
        &[],
    );
    env.entry(&mine, &[&uid], &[]);
    wait_until_sync(WAIT, "the agent published all three entries", || {
        log_lines_with(&env, "Identity snapshot published", "entries=3") > 0
    })
    .unwrap();
    for beyond in [&other, &mine] {
        assert_eq!(
            log_lines_with(&env, "Issued X509-SVID", beyond),
            0,
            "{beyond} is beyond the limit: not prefetched\n{}",
            env.agent.logs()
        );
    }

    // The workload of `mine` (`spire-agent api fetch x509`) asks: the agent signs for the
    // subscriber and serves it; the entry nobody asks for stays unsigned.
    env.wait_for_svid(None, &mine);
    let out = env.api(None, &["api", "fetch", "x509"]);
    out.assert_success();
    assert!(out.stdout.contains(&mine), "{}", out.stdout);
    assert!(!out.stdout.contains(&other), "{}", out.stdout);
    assert!(log_lines_with(&env, "Issued X509-SVID", &mine) > 0);
    assert_eq!(log_lines_with(&env, "Issued X509-SVID", &other), 0);
}

#[test]
fn agent_recreates_its_removed_socket_directory_and_keeps_serving() {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    // The socket in a directory of its own (the agent's data and config stay).
    let env = Env::start_with(|mut cfg| {
        let base = cfg.data_dir.parent().unwrap().to_owned();
        cfg.socket_path = base.join("sockets").join("api.sock");
        cfg
    });
    let me = id("socket/survivor");
    env.entry(&me, &[&my_uid_selector()], &[]);
    env.wait_for_svid(None, &me);
    let socket = env.agent_cfg.socket_path.clone();
    let sock_dir = socket.parent().unwrap().to_owned();
    let dir_mode = std::fs::metadata(&sock_dir).unwrap().permissions().mode() & 0o7777;

    // The whole directory goes; then, once it is back, the socket file alone.
    for round in ["directory", "socket file"] {
        if round == "directory" {
            std::fs::remove_dir_all(&sock_dir).unwrap();
        } else {
            std::fs::remove_file(&socket).unwrap();
        }
        assert!(!socket.exists());
        wait_until_sync(
            WAIT,
            &format!("served again after removing the {round}"),
            || {
                let out = env.api(None, &["api", "fetch", "x509"]);
                out.success() && out.stdout.contains(&me)
            },
        )
        .unwrap();
        let meta = std::fs::symlink_metadata(&socket).unwrap();
        assert!(meta.file_type().is_socket(), "{round}: {meta:?}");
        assert_eq!(meta.permissions().mode() & 0o777, 0o777, "{round}");
        assert_eq!(
            std::fs::metadata(&sock_dir).unwrap().permissions().mode() & 0o7777,
            dir_mode,
            "{round}: directory mode as at startup"
        );
    }
    let warnings = log_lines_with(
        &env,
        "workload api socket was removed",
        &socket.display().to_string(),
    );
    assert_eq!(warnings, 2, "{}", env.agent.logs());
    let mut agent = env.agent;
    assert!(agent.is_running());
}
