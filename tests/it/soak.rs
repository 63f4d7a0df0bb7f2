//! Issue 12 §5: a soak run with churn against the real binaries. One server, two agents, and
//! for the whole run:
//! - workloads streaming: 5 FetchX509SVID streams on agent A and 1 on agent B, each checking
//!   that every SVID it receives is currently valid;
//! - SVIDs rotating on short TTLs: workload entries with a 20 s X509-SVID TTL, agents with a
//!   30 s `agent_ttl`;
//! - entries created and deleted continuously through the local API;
//! - agent B restarted (SIGTERM, then started again on the same data) every 30 s.
//!
//! At the end: every stream is alive and holds a valid SVID and has seen it rotate; fresh
//! fetches on both agents succeed; the descriptors of the server and agent A grew by at most
//! [`FD_GROWTH_BOUND`] and their resident memory by at most [`RSS_GROWTH_BOUND_KIB`] from the
//! first sample taken after warm-up.
//!
//! Duration: `SPIRE_SOAK_SECS` (default 100 s, which CI runs as part of the suite). The
//! documented one-hour run:
//!
//! ```text
//! cargo build --workspace --bins
//! SPIRE_SOAK_SECS=3600 cargo test -p spire-e2e --test it soak -- --nocapture
//! ```
//!
//! (`--nocapture` prints a line per sample: elapsed time, descriptors and RSS of each process,
//! stream updates and entry churn so far.)
//!
//! The last one-hour run and its figures: docs/soak.md.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use spire_proto::server::entry as epb;
use spire_proto::types;
use spire_proto::workload as wl;
use spire_testkit::{KeyManagerConfig, Process, bin_path};

use crate::common::{
    AgentProc, Server, TD, WAIT, parse_cert, register_me, try_uds_channel, uds_channel,
    workload_request,
};

/// Allowed growth in open descriptors (server, agent A) over the run.
const FD_GROWTH_BOUND: usize = 16;
/// Allowed growth in resident memory (server, agent A) over the run, in KiB.
const RSS_GROWTH_BOUND_KIB: u64 = 64 * 1024;
const WARM_UP: Duration = Duration::from_secs(20);

fn soak_duration() -> Duration {
    let secs = std::env::var("SPIRE_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(100);
    Duration::from_secs(secs.max(60))
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn valid_now(der: &[u8]) -> bool {
    let cert = parse_cert(der);
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    cert.validity().not_before.timestamp() <= now + 5 && now < cert.validity().not_after.timestamp()
}

/// What one workload stream saw.
#[derive(Default)]
struct StreamLog {
    updates: u64,
    serials: HashSet<String>,
    last: Vec<u8>,
    error: Option<String>,
}

fn spawn_stream(
    socket: std::path::PathBuf,
    log: Arc<std::sync::Mutex<StreamLog>>,
    reconnect: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let result: Result<(), String> = async {
                let ch = try_uds_channel(&socket).await.map_err(|e| e.to_string())?;
                let mut c = wl::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(ch);
                let mut s = c
                    .fetch_x509svid(workload_request(wl::X509svidRequest {}))
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner();
                while let Some(m) = s.message().await.map_err(|e| e.to_string())? {
                    let svid = m.svids.first().ok_or("an update without SVIDs")?;
                    let leaf = pem_or_der_leaf(&svid.x509_svid);
                    if !valid_now(&leaf) {
                        return Err("received an SVID that is not currently valid".into());
                    }
                    let mut l = log.lock().unwrap();
                    l.updates += 1;
                    l.serials
                        .insert(parse_cert(&leaf).tbs_certificate.serial.to_string());
                    l.last = leaf;
                }
                Err("the stream ended".into())
            }
            .await;
            if let Err(e) = result {
                if !reconnect {
                    log.lock().unwrap().error = Some(e);
                    return;
                }
                // Agent B restarts: its streams reconnect once its socket is back.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    })
}

/// The first FetchX509SVID answer on `socket`, if any.
async fn fetch_first(socket: &std::path::Path) -> Option<wl::X509svidResponse> {
    let ch = try_uds_channel(socket).await.ok()?;
    let mut c = wl::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(ch);
    let r = c
        .fetch_x509svid(workload_request(wl::X509svidRequest {}))
        .await
        .ok()?;
    r.into_inner().message().await.ok().flatten()
}

/// The leaf of a DER chain (concatenated certificates).
fn pem_or_der_leaf(chain: &[u8]) -> Vec<u8> {
    let (rest, _) = x509_parser::parse_x509_certificate(chain).unwrap();
    chain[..chain.len() - rest.len()].to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn soak_with_churn_keeps_resources_bounded_and_svids_valid() {
    let duration = soak_duration();
    let server = Server::start(|c| c.string_setting("agent_ttl", "30s"));
    let disk = |c: spire_testkit::AgentConfig| {
        let keys = c.data_dir.join("keys");
        spire_testkit::AgentConfig {
            key_manager: KeyManagerConfig::Disk(keys),
            ..c
        }
    };
    let a = AgentProc::start_with(&server, &server.dir.path().join("a"), disk);
    let a_id = AgentProc::id(&server);
    let mut b = AgentProc::start_with(&server, &server.dir.path().join("b"), disk);
    let out = server.ok(&["agent", "list"]);
    let b_id = out
        .lines()
        .filter_map(|l| l.split_once(':').filter(|(k, _)| k.trim() == "SPIFFE ID"))
        .map(|(_, v)| v.trim().to_owned())
        .find(|id| *id != a_id)
        .unwrap();
    register_me(
        &server,
        "spiffe://example.org/soak-a",
        &a_id,
        &["-x509SVIDTTL", "20"],
    );
    register_me(
        &server,
        "spiffe://example.org/soak-b",
        &b_id,
        &["-x509SVIDTTL", "20"],
    );

    for socket in [&a.cfg.socket_path, &b.cfg.socket_path] {
        spire_testkit::wait_until(WAIT, "the workload entry at the agent", async || {
            fetch_first(socket).await.is_some()
        })
        .await
        .unwrap();
    }
    let logs: Vec<Arc<std::sync::Mutex<StreamLog>>> = (0..6).map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    for (i, log) in logs.iter().enumerate() {
        let (socket, reconnect) = if i < 5 {
            (a.cfg.socket_path.clone(), false)
        } else {
            (b.cfg.socket_path.clone(), true)
        };
        tasks.push(spawn_stream(socket, Arc::clone(log), reconnect));
    }

    // Entry churn through the local API.
    let churned = Arc::new(AtomicU64::new(0));
    let churn = {
        let sock = server.cfg.socket_path.clone();
        let churned = Arc::clone(&churned);
        let parents = [a_id.clone(), b_id.clone()];
        tokio::spawn(async move {
            let mut c = epb::entry_client::EntryClient::new(uds_channel(&sock).await);
            for i in 0u64.. {
                let parent = parents[usize::try_from(i % 2).unwrap()].clone();
                let e = types::Entry {
                    spiffe_id: Some(types::Spiffeid {
                        trust_domain: TD.into(),
                        path: format!("/churn/{i}"),
                    }),
                    parent_id: Some(types::Spiffeid {
                        trust_domain: TD.into(),
                        path: parent.trim_start_matches("spiffe://example.org").into(),
                    }),
                    selectors: vec![types::Selector {
                        r#type: "unix".into(),
                        value: format!("uid:{}", 50_000 + i % 7),
                    }],
                    ..Default::default()
                };
                let r = c
                    .batch_create_entry(epb::BatchCreateEntryRequest {
                        entries: vec![e],
                        output_mask: None,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let id = r.results[0].entry.as_ref().unwrap().id.clone();
                tokio::time::sleep(Duration::from_millis(150)).await;
                c.batch_delete_entry(epb::BatchDeleteEntryRequest { ids: vec![id] })
                    .await
                    .unwrap();
                churned.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };

    let server_pid = server.proc.as_ref().unwrap().pid();
    let a_pid = a.proc.pid();
    let start = Instant::now();
    let mut baseline = None;
    let mut last_restart = Instant::now();
    let b_conf = server.dir.path().join("b").join("agent.conf");
    while start.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(5)).await;
        for (i, l) in logs.iter().enumerate() {
            if let Some(e) = &l.lock().unwrap().error {
                panic!("stream {i} failed: {e}");
            }
        }
        assert!(!churn.is_finished(), "the entry churn stopped");
        if last_restart.elapsed() >= Duration::from_secs(30) {
            b.proc.terminate(Duration::from_secs(30));
            b.proc = Process::start(
                bin_path("spire-agent"),
                ["run", "-config", b_conf.to_str().unwrap()],
            )
            .unwrap();
            last_restart = Instant::now();
        }
        let sample = (
            fds(server_pid),
            rss_kib(server_pid),
            fds(a_pid),
            rss_kib(a_pid),
        );
        eprintln!(
            "soak t={:>5}s server fds={} rss={}KiB agent-a fds={} rss={}KiB (updates, distinct SVIDs)={:?} churned={}",
            start.elapsed().as_secs(),
            sample.0,
            sample.1,
            sample.2,
            sample.3,
            logs.iter()
                .map(|l| {
                    let l = l.lock().unwrap();
                    (l.updates, l.serials.len())
                })
                .collect::<Vec<_>>(),
            churned.load(Ordering::Relaxed)
        );
        if baseline.is_none() && start.elapsed() >= WARM_UP {
            baseline = Some(sample);
        }
    }
    churn.abort();
    let base = baseline.unwrap();
    let end = (
        fds(server_pid),
        rss_kib(server_pid),
        fds(a_pid),
        rss_kib(a_pid),
    );
    eprintln!(
        "soak end after {}s: server fds {} -> {}, rss {} -> {} KiB; agent-a fds {} -> {}, rss {} -> {} KiB; entries churned {}",
        start.elapsed().as_secs(),
        base.0,
        end.0,
        base.1,
        end.1,
        base.2,
        end.2,
        base.3,
        end.3,
        churned.load(Ordering::Relaxed)
    );
    assert!(
        end.0 <= base.0 + FD_GROWTH_BOUND,
        "server fds {} -> {}",
        base.0,
        end.0
    );
    assert!(
        end.2 <= base.2 + FD_GROWTH_BOUND,
        "agent fds {} -> {}",
        base.2,
        end.2
    );
    assert!(
        end.1 <= base.1 + RSS_GROWTH_BOUND_KIB,
        "server rss {} -> {} KiB",
        base.1,
        end.1
    );
    assert!(
        end.3 <= base.3 + RSS_GROWTH_BOUND_KIB,
        "agent rss {} -> {} KiB",
        base.3,
        end.3
    );
    assert!(churned.load(Ordering::Relaxed) > 10);

    // Every workload holds a valid SVID and saw it rotate (20 s TTL over >= 60 s).
    for (i, l) in logs.iter().enumerate() {
        let l = l.lock().unwrap();
        assert!(l.error.is_none(), "stream {i}: {:?}", l.error);
        assert!(valid_now(&l.last), "stream {i} holds an expired SVID");
        assert!(l.serials.len() >= 2, "stream {i} never saw a rotation");
    }
    for t in &tasks {
        assert!(!t.is_finished());
    }
    for (socket, want) in [
        (&a.cfg.socket_path, "soak-a"),
        (&b.cfg.socket_path, "soak-b"),
    ] {
        let mut got = None;
        spire_testkit::wait_until(WAIT, "a fresh fetch", async || {
            got = fetch_first(socket).await;
            got.is_some()
        })
        .await
        .unwrap();
        let svid = &got.unwrap().svids[0];
        assert!(svid.spiffe_id.ends_with(want), "{}", svid.spiffe_id);
        assert!(valid_now(&pem_or_der_leaf(&svid.x509_svid)));
    }
    for t in tasks {
        t.abort();
    }
}
