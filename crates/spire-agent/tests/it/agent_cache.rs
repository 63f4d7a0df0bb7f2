//! The agent's X.509-SVID cache limit and its Workload API socket, with the real binaries:
//! a workload whose entry is beyond `x509_svid_cache_max_size` still gets its SVID while it
//! asks for it, and the agent re-creates its socket (and directory) when they are removed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use spire_testkit::wait_until_sync;

use super::workload_e2e::{Env, WAIT, id, my_uid};

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
    let env = Env::start_with(|cfg| {
        cfg.agent_settings
            .push(("x509_svid_cache_max_size".into(), "1".into()));
    });
    let uid = format!("unix:uid:{}", my_uid());
    // The oldest entry fills the cache of one; no caller here matches it (another binary).
    let first = id("cache/first");
    env.entry(
        &first,
        &[&uid, "unix:path:/nonexistent/other-workload"],
        &[],
    );
    wait_until_sync(WAIT, "the first entry is prefetched", || {
        log_lines_with(&env, "Issued X509-SVID", &first) > 0
    })
    .unwrap();
    // Entries are ordered by creation time in seconds: make the second one strictly younger.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = id("cache/second");
    env.entry(&second, &[&uid], &[]);
    wait_until_sync(WAIT, "the agent synced the second entry", || {
        log_lines_with(&env, "Entry created", &second) > 0
    })
    .unwrap();
    assert_eq!(
        log_lines_with(&env, "Issued X509-SVID", &second),
        0,
        "the second entry is beyond the limit: not prefetched\n{}",
        env.agent.logs()
    );

    // Its workload (`spire-agent api fetch x509`, matching only the second entry) asks: the
    // agent signs for the subscriber and serves it.
    env.wait_for_svid(None, &second);
    let out = env.api(None, &["api", "fetch", "x509"]);
    out.assert_success();
    assert!(out.stdout.contains(&second), "{}", out.stdout);
    assert!(!out.stdout.contains(&first), "{}", out.stdout);
    assert!(log_lines_with(&env, "Issued X509-SVID", &second) > 0);
}
