//! spire-loadgen: simulates SPIRE agents against a real server over the real protocol and
//! reports what it measured (throughput, latency percentiles, bytes per sync, propagation
//! latency, server CPU and memory, database statements).
//!
//! A run has four phases. **Setup**: join tokens and registration entries in realistic shapes
//! are created through the server's local API socket (`BatchCreateEntry` in batches; each
//! agent gets `-workloadsPerAgent` entries parented to its own ID with 2–4 selectors; with
//! `-aliases K` every join token maps its agent to one of K node-alias IDs and each alias gets
//! `-workloadsPerAlias` entries shared by its agents). **Ramp**: every simulated agent attests
//! with its token (`AttestAgent`), opens the spire-rs `Watch` stream, syncs
//! (`SyncAuthorizedEntries` + `GetBundle`), requests X509-SVIDs for all its workload entries
//! (`BatchNewX509SVID`) and JWT-SVIDs (`NewJWTSVID`). **Issue** (optional): each agent
//! re-requests all its SVIDs `-issueRounds` times. **Steady**: agents sync on every push and
//! every `-syncInterval`, while entries are created at `-churn` per second; each churn entry's
//! creation time is matched with the moment its owning agent receives the push and its SVID.
//!
//! Invariants: the tool is a client only; everything it creates carries the run ID (tokens
//! `loadgen-<run>-<n>`, SPIFFE IDs under `/loadgen/<run>/`) and the entries are deleted at the
//! end unless `-keep`. Counts are exact (what was asked and what came back); latencies are
//! nearest-rank percentiles over all samples. Nothing secret (tokens aside, which are
//! single-use and run-scoped) is logged.

pub mod admin;
pub mod agent;
pub mod args;
pub mod bulk;
pub mod procstat;
pub mod report;
pub mod stats;
pub mod workload;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt as _;
use spire_spiffe::{SpiffeId, TrustDomain};
use spire_tls::BundleSet;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admin::{Admin, join_token_agent_id, workload_entry};
use crate::agent::{AgentSpec, Event, Phase, Shared};
pub use crate::args::Args;
use crate::procstat::ProcSample;
pub use crate::report::Report;
use crate::report::{
    AttestReport, ChurnReport, ConfigReport, DbStatement, IssuePhase, JwtReport, PhaseReport,
    Phases, PropagationReport, ServerReport, SetupReport, SteadyReport, SyncReport, WatchReport,
    X509Report,
};
use crate::stats::Metrics;

/// Entries per BatchCreateEntry / BatchDeleteEntry call.
const ENTRY_BATCH: usize = 500;

/// Join-token lifetime.
const TOKEN_TTL_SECS: i32 = 3600;

/// How long churn entries still in flight are waited for after the steady phase.
const DRAIN_GRACE: Duration = Duration::from_secs(3);

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A flag value is unusable.
    #[error("invalid -{flag}: {reason}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// The local API socket could not be reached.
    #[error("cannot connect to the server API socket {}: {source}", .path.display())]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server answered with an error status.
    #[error("{op} failed: {} ({:?})", .status.message(), .status.code())]
    Rpc {
        /// The RPC.
        op: &'static str,
        /// The status.
        status: tonic::Status,
    },
    /// The server's answer does not follow the protocol.
    #[error("{op}: unexpected answer from server: {reason}")]
    Protocol {
        /// The RPC.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// TLS set-up failed.
    #[error("tls: {0}")]
    Tls(#[from] spire_tls::TlsError),
    /// Key or CSR generation failed.
    #[error("crypto: {0}")]
    Crypto(String),
    /// The call did not finish in time.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// Creating the tokens or entries failed.
    #[error("setup: {0}")]
    Setup(String),
}

fn validate(args: &Args) -> Result<TrustDomain, Error> {
    let flag = |flag, reason: &str| Error::Flag {
        flag,
        reason: reason.to_owned(),
    };
    if args.agents == 0 {
        return Err(flag("agents", "must be at least 1"));
    }
    if args.aliases > args.agents {
        return Err(flag("aliases", "must not exceed -agents"));
    }
    if !(args.churn.is_finite() && args.churn >= 0.0) {
        return Err(flag(
            "churn",
            "must be a rate in entries per second, 0 or more",
        ));
    }
    if args.batch_size == 0 {
        return Err(flag("batchSize", "must be at least 1"));
    }
    if args.concurrency == 0 {
        return Err(flag("concurrency", "must be at least 1"));
    }
    if args.sync_interval.is_zero() {
        return Err(flag("syncInterval", "must be longer than zero"));
    }
    args.trust_domain.parse().map_err(|e| Error::Flag {
        flag: "trustDomain",
        reason: format!("{e}"),
    })
}

/// A point in time with the server's resource use and the DB statement counts.
#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    proc: Option<ProcSample>,
    db: Option<DbCalls>,
}

struct Probe {
    pid: Option<u32>,
    pg_url: Option<String>,
    peak_rss_kb: Arc<Mutex<u64>>,
}

impl Probe {
    async fn snapshot(&self) -> Snapshot {
        let proc = self.pid.and_then(|pid| procstat::sample(pid).ok());
        if let Some(p) = proc {
            let mut peak = self
                .peak_rss_kb
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            *peak = (*peak).max(p.rss_kb);
        }
        let db = match &self.pg_url {
            Some(url) => pg_statements(url).await,
            None => None,
        };
        Snapshot {
            at: Instant::now(),
            proc,
            db,
        }
    }
}

/// Statements executed so far per pg_stat_statements entry: query ID → (calls, query text).
type DbCalls = HashMap<String, (u64, String)>;

/// Reads pg_stat_statements through `psql`.
async fn pg_statements(url: &str) -> Option<DbCalls> {
    let out = tokio::process::Command::new("psql")
        .arg(url)
        .args([
            "-XAtqc",
            "select queryid, calls, regexp_replace(left(query, 160), '\\s+', ' ', 'g') \
             from pg_stat_statements",
        ])
        .output()
        .await
        .ok()?;
    if !out.status.success() {
        tracing::warn!(
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "Cannot read pg_stat_statements"
        );
        return None;
    }
    Some(parse_pg_calls(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_pg_calls(text: &str) -> DbCalls {
    let mut m: DbCalls = HashMap::new();
    for line in text.lines() {
        let mut f = line.splitn(3, '|');
        let (Some(id), Some(calls), Some(query)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let Ok(calls) = calls.trim().parse::<u64>() else {
            continue;
        };
        let e = m.entry(id.to_owned()).or_insert((0, query.to_owned()));
        e.0 += calls;
    }
    m
}

/// The statements executed most between two readings.
fn top_statements(a: &DbCalls, b: &DbCalls, n: usize) -> Vec<DbStatement> {
    let mut v: Vec<DbStatement> = b
        .iter()
        .map(|(id, (calls, query))| DbStatement {
            calls: calls.saturating_sub(a.get(id).map_or(0, |x| x.0)),
            query: query.clone(),
        })
        .filter(|d| d.calls > 0)
        .collect();
    v.sort_by(|x, y| y.calls.cmp(&x.calls).then_with(|| x.query.cmp(&y.query)));
    v.truncate(n);
    v
}

fn phase(a: &Snapshot, b: &Snapshot) -> PhaseReport {
    let seconds = b.at.saturating_duration_since(a.at).as_secs_f64();
    let cpu = match (a.proc, b.proc) {
        (Some(x), Some(y)) => Some(y.cpu.saturating_sub(x.cpu).as_secs_f64()),
        _ => None,
    };
    let total = |m: &DbCalls| m.values().map(|v| v.0).sum::<u64>();
    let (db, db_top_statements) = match (&a.db, &b.db) {
        (Some(x), Some(y)) => (
            Some(total(y).saturating_sub(total(x))),
            top_statements(x, y, 8),
        ),
        _ => (None, Vec::new()),
    };
    let per = |v: f64| if seconds > 0.0 { v / seconds } else { 0.0 };
    PhaseReport {
        seconds,
        server_cpu_seconds: cpu,
        server_cpu_cores: cpu.map(per),
        server_rss_kb: b.proc.map(|p| p.rss_kb),
        db_statements: db,
        db_statements_per_second: db.map(|d| per(d as f64)),
        db_top_statements,
    }
}

/// Runs the whole load test described by `args` and returns its report.
pub async fn run(args: Args) -> Result<Report, Error> {
    let td = validate(&args)?;
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let prefix = format!("/loadgen/{run_id}");
    let admin = Admin::connect(&args.socket_path).await?;
    let roots = admin.x509_authorities().await?;
    let bundles = BundleSet::with_roots(td.clone(), roots)?;
    let metrics = Arc::new(Metrics::default());
    let probe = Probe {
        pid: args.server_pid,
        pg_url: args.pg_stat_url.clone(),
        peak_rss_kb: Arc::new(Mutex::new(0)),
    };
    let shutdown = CancellationToken::new();
    let progress_stop = CancellationToken::new();
    let phase_name = Arc::new(Mutex::new("setup"));
    let progress = (!args.progress_interval.is_zero()).then(|| {
        tokio::spawn(progress_loop(
            Arc::clone(&metrics),
            Arc::clone(&phase_name),
            args.agents,
            args.server_pid,
            Arc::clone(&probe.peak_rss_kb),
            args.progress_interval,
            progress_stop.clone(),
        ))
    });

    // ---- setup
    let s0 = probe.snapshot().await;
    let mut specs = Vec::with_capacity(args.agents);
    let mut aliases = Vec::with_capacity(args.aliases);
    for g in 0..args.aliases {
        aliases.push(id(&td, &format!("{prefix}/group/{g}"))?);
    }
    for i in 0..args.agents {
        let token = format!("loadgen-{run_id}-{i}");
        let agent_id = join_token_agent_id(&td, &token)?;
        specs.push(AgentSpec { token, agent_id });
    }
    let mut setup = SetupReport::default();
    let token_results: Vec<Result<(), Error>> = futures::stream::iter(specs.iter().enumerate())
        .map(|(i, s)| {
            let admin = admin.clone();
            let alias = (!aliases.is_empty()).then(|| aliases[i % aliases.len()].clone());
            async move {
                admin
                    .create_join_token(&s.token, TOKEN_TTL_SECS, alias.as_ref())
                    .await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in token_results {
        r?;
        setup.join_tokens += 1;
    }
    let mut entries = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        for j in 0..args.workloads_per_agent {
            let sid = id(&td, &format!("{prefix}/agent/{i}/w/{j}"))?;
            entries.push(workload_entry(&sid, &s.agent_id, j));
        }
    }
    for (g, alias) in aliases.iter().enumerate() {
        for j in 0..args.workloads_per_alias {
            let sid = id(&td, &format!("{prefix}/group/{g}/w/{j}"))?;
            entries.push(workload_entry(&sid, alias, j));
        }
    }
    let mut created_ids: Vec<String> = Vec::with_capacity(entries.len());
    let batches: Vec<Vec<_>> = entries.chunks(ENTRY_BATCH).map(<[_]>::to_vec).collect();
    setup.entry_batches = batches.len() as u64;
    let results: Vec<_> = futures::stream::iter(batches)
        .map(|b| {
            let admin = admin.clone();
            async move { admin.create_entries(b).await }
        })
        .buffer_unordered(2)
        .collect()
        .await;
    for r in results {
        for item in r? {
            match item {
                Ok(id) => {
                    setup.entries_created += 1;
                    created_ids.push(id);
                }
                Err(e) => {
                    if setup.entries_failed == 0 {
                        tracing::warn!(error = %e, "Entry refused by the server");
                    }
                    setup.entries_failed += 1;
                }
            }
        }
    }
    let s1 = probe.snapshot().await;
    setup.seconds = s1.at.saturating_duration_since(s0.at).as_secs_f64();
    setup.entries_per_second = if setup.seconds > 0.0 {
        setup.entries_created as f64 / setup.seconds
    } else {
        0.0
    };

    // ---- ramp
    *phase_name.lock().unwrap_or_else(PoisonError::into_inner) = "ramp";
    let shared = Arc::new(Shared {
        address: args.server_address.clone(),
        trust_domain: td.clone(),
        bundles,
        sync_interval: args.sync_interval,
        watch: !args.no_watch,
        jwt_per_agent: args.jwt_per_agent,
        batch_size: args.batch_size,
        issue_rounds: args.issue_rounds,
        churn_prefix: format!("spiffe://{td}{prefix}/churn/"),
        pending: Mutex::new(std::collections::HashMap::new()),
        metrics: Arc::clone(&metrics),
        attest_slots: tokio::sync::Semaphore::new(args.concurrency),
        shutdown: shutdown.clone(),
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Ramp);
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, spec) in specs.iter().enumerate() {
        tasks.spawn(agent::run(
            Arc::clone(&shared),
            spec.clone(),
            i,
            phase_rx.clone(),
            ev_tx.clone(),
        ));
    }
    drop(ev_tx);
    let mut ready: Vec<usize> = Vec::new();
    let mut first_error: Option<String> = None;
    let mut settled = 0;
    while settled < args.agents {
        match ev_rx.recv().await {
            Some((i, Event::Ready)) => {
                ready.push(i);
                settled += 1;
            }
            Some((_, Event::Failed(e))) => {
                first_error.get_or_insert(e);
                settled += 1;
            }
            Some((_, Event::IssueDone)) => {}
            None => break,
        }
    }
    let s2 = probe.snapshot().await;

    // ---- issue
    let mut issue_phase = None;
    let mut issue_report = None;
    if args.issue_rounds > 0 && !ready.is_empty() {
        *phase_name.lock().unwrap_or_else(PoisonError::into_inner) = "issue";
        let before = metrics.x509_reissued.get();
        let a = probe.snapshot().await;
        let _ = phase_tx.send(Phase::Issue);
        let mut done = 0;
        while done < ready.len() {
            match ev_rx.recv().await {
                Some((_, Event::IssueDone)) => done += 1,
                Some(_) => {}
                None => break,
            }
        }
        let b = probe.snapshot().await;
        let p = phase(&a, &b);
        let svids = metrics.x509_reissued.get() - before;
        issue_phase = Some(IssuePhase {
            svids,
            seconds: p.seconds,
            per_second: if p.seconds > 0.0 {
                svids as f64 / p.seconds
            } else {
                0.0
            },
            per_server_cpu_second: p
                .server_cpu_seconds
                .filter(|c| *c > 0.0)
                .map(|c| svids as f64 / c),
        });
        issue_report = Some(p);
    }

    // ---- steady
    *phase_name.lock().unwrap_or_else(PoisonError::into_inner) = "steady";
    let _ = phase_tx.send(Phase::Steady);
    // Agents already behave as in the steady phase; the measurement starts after the settle
    // time (the server may still be applying the setup's writes to its index).
    tokio::time::sleep(args.settle).await;
    let syncs_before = metrics.syncs.get();
    let sync_bytes_before = metrics.sync_bytes.get();
    let s3 = probe.snapshot().await;
    let churn_stop = CancellationToken::new();
    let churn_task = (args.churn > 0.0 && !ready.is_empty()).then(|| {
        let owners: Vec<SpiffeId> = ready.iter().map(|&i| specs[i].agent_id.clone()).collect();
        tokio::spawn(churn_loop(
            admin.clone(),
            Arc::clone(&shared),
            td.clone(),
            owners,
            args.churn,
            args.churn_keep,
            churn_stop.clone(),
        ))
    });
    tokio::time::sleep(args.duration).await;
    churn_stop.cancel();
    let mut churn_alive = match churn_task {
        Some(t) => t.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let s4 = probe.snapshot().await;
    let syncs_steady = metrics.syncs.get() - syncs_before;
    let sync_bytes_steady = metrics.sync_bytes.get() - sync_bytes_before;
    // Let the last churn entries arrive.
    let drain_until = Instant::now() + DRAIN_GRACE;
    while Instant::now() < drain_until
        && !shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    *phase_name.lock().unwrap_or_else(PoisonError::into_inner) = "stopping";
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    *phase_name.lock().unwrap_or_else(PoisonError::into_inner) = "cleanup";

    // ---- cleanup
    if !args.keep {
        created_ids.append(&mut churn_alive);
        for chunk in created_ids.chunks(ENTRY_BATCH) {
            if let Err(e) = admin.delete_entries(chunk.to_vec()).await {
                tracing::warn!(error = %e, "Cannot delete the run's entries");
                break;
            }
        }
    }
    progress_stop.cancel();
    if let Some(p) = progress {
        let _ = p.await;
    }
    let s_end = probe.snapshot().await;

    // ---- report
    let m = &metrics;
    let ramp = phase(&s1, &s2);
    let steady = phase(&s3, &s4);
    let ready_n = ready.len() as u64;
    let server = match (args.server_pid, s0.proc, s_end.proc) {
        (Some(pid), Some(a), Some(b)) => Some(ServerReport {
            pid,
            rss_kb_start: a.rss_kb,
            rss_kb_peak: (*probe
                .peak_rss_kb
                .lock()
                .unwrap_or_else(PoisonError::into_inner))
            .max(b.rss_kb),
            rss_kb_end: b.rss_kb,
            cpu_seconds: b.cpu.saturating_sub(a.cpu).as_secs_f64(),
        }),
        _ => None,
    };
    let syncs = m.syncs.get();
    let unresolved = shared
        .pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .len() as u64;
    let per_1000 = |v: f64| {
        if ready_n > 0 {
            v * 1000.0 / ready_n as f64
        } else {
            0.0
        }
    };
    Ok(Report {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        run_id,
        config: ConfigReport {
            server_address: args.server_address.clone(),
            trust_domain: td.to_string(),
            agents: args.agents,
            workloads_per_agent: args.workloads_per_agent,
            aliases: args.aliases,
            workloads_per_alias: args.workloads_per_alias,
            churn_per_second: args.churn,
            duration_seconds: args.duration.as_secs_f64(),
            sync_interval_seconds: args.sync_interval.as_secs_f64(),
            watch: !args.no_watch,
            batch_size: args.batch_size,
            issue_rounds: args.issue_rounds,
            concurrency: args.concurrency,
        },
        setup,
        phases: Phases {
            setup: phase(&s0, &s1),
            ramp: ramp.clone(),
            issue: issue_report,
            steady: steady.clone(),
        },
        attestation: AttestReport {
            ok: m.attested.get(),
            failed: m.attest_failed.get(),
            first_error,
            first_sync_empty: m.first_sync_empty.get(),
            latency: m.attest_latency.summary(),
            per_second: if ramp.seconds > 0.0 {
                m.attested.get() as f64 / ramp.seconds
            } else {
                0.0
            },
        },
        sync: SyncReport {
            count: syncs,
            failed: m.sync_failed.get(),
            entries_fetched: m.sync_entries_fetched.get(),
            bytes_total: m.sync_bytes.get(),
            bytes_per_sync: if syncs > 0 {
                m.sync_bytes.get() as f64 / syncs as f64
            } else {
                0.0
            },
            latency: m.sync_latency.summary(),
            bundle_calls: m.bundle_calls.get(),
            bundle_bytes_per_call: if m.bundle_calls.get() > 0 {
                m.bundle_bytes.get() as f64 / m.bundle_calls.get() as f64
            } else {
                0.0
            },
        },
        x509: X509Report {
            requested: m.x509_requested.get(),
            issued: m.x509_issued.get(),
            failed: m.x509_failed.get(),
            initial_issued: m.x509_initial.get(),
            churn_issued: m.x509_churn.get(),
            reissued: m.x509_reissued.get(),
            batches: m.x509_batches.get(),
            batch_latency: m.x509_batch_latency.summary(),
            issue_phase,
        },
        jwt: JwtReport {
            requested: m.jwt_requested.get(),
            issued: m.jwt_issued.get(),
            failed: m.jwt_failed.get(),
            latency: m.jwt_latency.summary(),
        },
        watch: WatchReport {
            streams_opened: m.watch_opened.get(),
            notifications: m.watch_notifications.get(),
            errors: m.watch_errors.get(),
        },
        churn: ChurnReport {
            created: m.churn_created.get(),
            deleted: m.churn_deleted.get(),
            failed: m.churn_failed.get(),
            create_latency: m.churn_create_latency.summary(),
        },
        propagation: PropagationReport {
            samples: m.prop_svid.len() as u64,
            unresolved,
            found_by_poll: m.prop_by_poll.get(),
            to_watch: m.prop_watch.summary(),
            to_svid: m.prop_svid.summary(),
            to_svid_cdf_ms: m.prop_svid.cdf_ms(),
        },
        server,
        steady_state: SteadyReport {
            agents: ready_n,
            syncs_per_second: if steady.seconds > 0.0 {
                syncs_steady as f64 / steady.seconds
            } else {
                0.0
            },
            bytes_per_sync: if syncs_steady > 0 {
                sync_bytes_steady as f64 / syncs_steady as f64
            } else {
                0.0
            },
            server_cpu_cores: steady.server_cpu_cores,
            db_statements_per_second: steady.db_statements_per_second,
            db_statements_per_second_per_1000_agents: steady.db_statements_per_second.map(per_1000),
        },
    })
}

fn id(td: &TrustDomain, path: &str) -> Result<SpiffeId, Error> {
    td.spiffe_id(path)
        .map_err(|e| Error::Setup(format!("invalid SPIFFE ID path {path:?}: {e}")))
}

/// Creates one entry per tick for the next owner (round robin), deleting the oldest once more
/// than `keep` are alive. Returns the IDs still alive.
async fn churn_loop(
    admin: Admin,
    shared: Arc<Shared>,
    td: TrustDomain,
    owners: Vec<SpiffeId>,
    rate: f64,
    keep: usize,
    stop: CancellationToken,
) -> Vec<String> {
    let m = Arc::clone(&shared.metrics);
    let mut alive: VecDeque<String> = VecDeque::new();
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: usize = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let owner = &owners[n % owners.len()];
        let spiffe = format!("{}{n}", shared.churn_prefix);
        let path = spiffe
            .strip_prefix(&format!("spiffe://{td}"))
            .unwrap_or(&spiffe)
            .to_owned();
        n += 1;
        let Ok(sid) = td.spiffe_id(&path) else {
            m.churn_failed.inc();
            continue;
        };
        let entry = workload_entry(&sid, owner, n);
        let t0 = Instant::now();
        shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(spiffe.clone(), t0);
        match admin.create_entries(vec![entry]).await {
            Ok(mut r) => match r.pop() {
                Some(Ok(id)) => {
                    m.churn_created.inc();
                    m.churn_create_latency.record(t0.elapsed());
                    alive.push_back(id);
                }
                _ => {
                    m.churn_failed.inc();
                    shared
                        .pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&spiffe);
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "Churn create failed");
                m.churn_failed.inc();
                shared
                    .pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&spiffe);
            }
        }
        if alive.len() > keep
            && let Some(old) = alive.pop_front()
        {
            match admin.delete_entries(vec![old]).await {
                Ok(1) => m.churn_deleted.inc(),
                _ => m.churn_failed.inc(),
            }
        }
    }
    alive.into_iter().collect()
}

#[allow(clippy::too_many_arguments)]
async fn progress_loop(
    metrics: Arc<Metrics>,
    phase: Arc<Mutex<&'static str>>,
    agents: usize,
    pid: Option<u32>,
    peak: Arc<Mutex<u64>>,
    every: Duration,
    stop: CancellationToken,
) {
    let start = Instant::now();
    let mut last_cpu: Option<(Instant, Duration)> = None;
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let m = &metrics;
        let mut server = String::new();
        if let Some(pid) = pid
            && let Ok(s) = procstat::sample(pid)
        {
            {
                let mut p = peak.lock().unwrap_or_else(PoisonError::into_inner);
                *p = (*p).max(s.rss_kb);
            }
            let now = Instant::now();
            let cores = last_cpu.map(|(t, c)| {
                s.cpu.saturating_sub(c).as_secs_f64()
                    / now.saturating_duration_since(t).as_secs_f64().max(1e-9)
            });
            last_cpu = Some((now, s.cpu));
            server = format!(
                " server rss={:.1}MiB cpu={}",
                s.rss_kb as f64 / 1024.0,
                cores.map_or_else(|| "-".to_owned(), |c| format!("{:.0}%", c * 100.0))
            );
        }
        let ph = *phase.lock().unwrap_or_else(PoisonError::into_inner);
        let prop = m.prop_svid.summary();
        eprintln!(
            "[{:>6.1}s] {ph:<8} attested={}/{agents} ready={} svids={} jwts={} syncs={} pushes={} churn={} prop_p99={:.1}ms{server}",
            start.elapsed().as_secs_f64(),
            m.attested.get(),
            m.agents_ready.get(),
            m.x509_issued.get(),
            m.jwt_issued.get(),
            m.syncs.get(),
            m.watch_notifications.get(),
            m.churn_created.get(),
            prop.p99_ms,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["spire-loadgen"];
        v.extend_from_slice(extra);
        spire_cli::parse_from(v).unwrap()
    }

    #[test]
    fn validation_names_the_flag() {
        assert!(validate(&args(&[])).is_ok());
        let e = validate(&args(&["-agents", "0"])).unwrap_err();
        assert!(e.to_string().contains("-agents"), "{e}");
        let e = validate(&args(&["-agents", "2", "-aliases", "3"])).unwrap_err();
        assert!(e.to_string().contains("-aliases"), "{e}");
        let e = validate(&args(&["-churn", "-1"])).unwrap_err();
        assert!(e.to_string().contains("-churn"), "{e}");
        let e = validate(&args(&["-trustDomain", "Bad Domain"])).unwrap_err();
        assert!(e.to_string().contains("-trustDomain"), "{e}");
    }

    #[test]
    fn phase_rates() {
        let t = Instant::now();
        let a = Snapshot {
            at: t,
            proc: Some(ProcSample {
                cpu: Duration::from_secs(1),
                rss_kb: 10,
                hwm_kb: 10,
            }),
            db: Some(parse_pg_calls("1|60|select 1\n2|40|select 2\n")),
        };
        let b = Snapshot {
            at: t + Duration::from_secs(2),
            proc: Some(ProcSample {
                cpu: Duration::from_secs(2),
                rss_kb: 20,
                hwm_kb: 20,
            }),
            db: Some(parse_pg_calls("1|90|select 1\n2|50|select 2\nbad line\n")),
        };
        let p = phase(&a, &b);
        assert_eq!(p.seconds, 2.0);
        assert_eq!(p.server_cpu_seconds, Some(1.0));
        assert_eq!(p.server_cpu_cores, Some(0.5));
        assert_eq!(p.db_statements, Some(40));
        assert_eq!(p.db_statements_per_second, Some(20.0));
        assert_eq!(p.server_rss_kb, Some(20));
        assert_eq!(
            p.db_top_statements,
            vec![
                DbStatement {
                    calls: 30,
                    query: "select 1".into()
                },
                DbStatement {
                    calls: 10,
                    query: "select 2".into()
                }
            ]
        );
    }
}
