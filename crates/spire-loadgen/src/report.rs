//! The run's report: JSON (`-output json`) and a human-readable summary.

use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::Percentiles;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Tool version.
    pub version: String,
    /// The run's identifier (part of every token and SPIFFE ID it created).
    pub run_id: String,
    /// What was asked for.
    pub config: ConfigReport,
    /// Join tokens and entries created through the local API.
    pub setup: SetupReport,
    /// Per phase: duration, server CPU, database statements.
    pub phases: Phases,
    /// AttestAgent.
    pub attestation: AttestReport,
    /// SyncAuthorizedEntries and GetBundle.
    pub sync: SyncReport,
    /// BatchNewX509SVID.
    pub x509: X509Report,
    /// NewJWTSVID.
    pub jwt: JwtReport,
    /// The Watch push streams.
    pub watch: WatchReport,
    /// Entry churn during the steady phase.
    pub churn: ChurnReport,
    /// Entry created → SVID signed at the owning agent.
    pub propagation: PropagationReport,
    /// The server process (when `-serverPid` was given).
    pub server: Option<ServerReport>,
    /// Steady-state rates normalized per 1,000 agents.
    pub steady_state: SteadyReport,
}

/// The run's parameters.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigReport {
    /// Server address.
    pub server_address: String,
    /// Trust domain.
    pub trust_domain: String,
    /// Simulated agents.
    pub agents: usize,
    /// Entries per agent.
    pub workloads_per_agent: usize,
    /// Node alias groups.
    pub aliases: usize,
    /// Entries per alias.
    pub workloads_per_alias: usize,
    /// Churn rate (entries/s).
    pub churn_per_second: f64,
    /// Steady-phase length (s).
    pub duration_seconds: f64,
    /// Timer sync interval (s).
    pub sync_interval_seconds: f64,
    /// Whether agents held Watch streams.
    pub watch: bool,
    /// CSRs per BatchNewX509SVID.
    pub batch_size: usize,
    /// Re-issuance rounds.
    pub issue_rounds: usize,
    /// Concurrent attestations.
    pub concurrency: usize,
}

/// Setup through the local API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SetupReport {
    /// Join tokens created.
    pub join_tokens: u64,
    /// Registration entries created (workload entries; alias entries are created by the
    /// server with the tokens).
    pub entries_created: u64,
    /// Entries the server refused.
    pub entries_failed: u64,
    /// BatchCreateEntry calls.
    pub entry_batches: u64,
    /// Wall time of the setup.
    pub seconds: f64,
    /// Entries created per second.
    pub entries_per_second: f64,
}

/// A database statement and how often it ran.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DbStatement {
    /// Executions in the phase.
    pub calls: u64,
    /// Normalized statement text (truncated).
    pub query: String,
}

/// One phase's resource use.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseReport {
    /// Wall time.
    pub seconds: f64,
    /// Server CPU time used (user + system), when known.
    pub server_cpu_seconds: Option<f64>,
    /// Average server cores busy.
    pub server_cpu_cores: Option<f64>,
    /// Server RSS at the end of the phase, KiB.
    pub server_rss_kb: Option<u64>,
    /// Database statements executed (pg_stat_statements), when known.
    pub db_statements: Option<u64>,
    /// Database statements per second.
    pub db_statements_per_second: Option<f64>,
    /// The statements run most often in the phase (pg_stat_statements).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub db_top_statements: Vec<DbStatement>,
}

/// All phases.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phases {
    /// Local-API setup.
    pub setup: PhaseReport,
    /// Attestation, first sync, first SVIDs, first JWTs of every agent.
    pub ramp: PhaseReport,
    /// Re-issuance rounds (absent unless `-issueRounds`).
    pub issue: Option<PhaseReport>,
    /// Steady state (with churn if any).
    pub steady: PhaseReport,
}

/// Attestation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AttestReport {
    /// Agents attested.
    pub ok: u64,
    /// Agents that failed to attest.
    pub failed: u64,
    /// First failure message, if any.
    pub first_error: Option<String>,
    /// Agents whose first SyncAuthorizedEntries right after attestation returned none of their
    /// workload entries (they got them on a later push or timer sync).
    pub first_sync_empty: u64,
    /// Latency (connect, attest, reconnect with the SVID).
    pub latency: Percentiles,
    /// Attestations per second over the ramp.
    pub per_second: f64,
}

/// Entry sync.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    /// Completed syncs.
    pub count: u64,
    /// Failed syncs.
    pub failed: u64,
    /// Entries received in full.
    pub entries_fetched: u64,
    /// Protobuf bytes of all SyncAuthorizedEntries responses.
    pub bytes_total: u64,
    /// Average response bytes per sync.
    pub bytes_per_sync: f64,
    /// Latency of SyncAuthorizedEntries.
    pub latency: Percentiles,
    /// GetBundle calls.
    pub bundle_calls: u64,
    /// Average GetBundle response bytes.
    pub bundle_bytes_per_call: f64,
}

/// X.509-SVID issuance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct X509Report {
    /// CSRs sent.
    pub requested: u64,
    /// SVIDs received.
    pub issued: u64,
    /// Refused or lost.
    pub failed: u64,
    /// SVIDs for the entries created at setup (first issuance).
    pub initial_issued: u64,
    /// SVIDs for churn entries.
    pub churn_issued: u64,
    /// SVIDs from the re-issuance rounds.
    pub reissued: u64,
    /// BatchNewX509SVID calls.
    pub batches: u64,
    /// Latency per call.
    pub batch_latency: Percentiles,
    /// The issuance phase (`-issueRounds`).
    pub issue_phase: Option<IssuePhase>,
}

/// Throughput of the re-issuance rounds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct IssuePhase {
    /// SVIDs issued in the phase.
    pub svids: u64,
    /// Wall time.
    pub seconds: f64,
    /// SVIDs per wall-clock second.
    pub per_second: f64,
    /// SVIDs per second of server CPU (= per core), when the server PID is known.
    pub per_server_cpu_second: Option<f64>,
}

/// JWT-SVIDs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JwtReport {
    /// Calls.
    pub requested: u64,
    /// Tokens received.
    pub issued: u64,
    /// Failures.
    pub failed: u64,
    /// Latency.
    pub latency: Percentiles,
}

/// Watch streams.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchReport {
    /// Streams opened.
    pub streams_opened: u64,
    /// Pushes received (beyond each stream's first response).
    pub notifications: u64,
    /// Streams that failed or ended early.
    pub errors: u64,
}

/// Churn.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChurnReport {
    /// Entries created.
    pub created: u64,
    /// Entries deleted.
    pub deleted: u64,
    /// Failures.
    pub failed: u64,
    /// BatchCreateEntry latency.
    pub create_latency: Percentiles,
}

/// Propagation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PropagationReport {
    /// Churn entries whose SVID reached the owning agent.
    pub samples: u64,
    /// Churn entries still without an SVID at the end.
    pub unresolved: u64,
    /// Samples first seen by a timer sync (no push after creation).
    pub found_by_poll: u64,
    /// Creation requested → Watch push at the owning agent.
    pub to_watch: Percentiles,
    /// Creation requested → X509-SVID received by the owning agent.
    pub to_svid: Percentiles,
    /// The empirical distribution of `to_svid`: the latency (ms) at each percentile 0, 1,
    /// ..., 100 (for plots).
    pub to_svid_cdf_ms: Vec<f64>,
}

/// The server process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ServerReport {
    /// PID.
    pub pid: u32,
    /// RSS at the start, KiB.
    pub rss_kb_start: u64,
    /// Highest RSS sampled during the run, KiB.
    pub rss_kb_peak: u64,
    /// RSS at the end, KiB.
    pub rss_kb_end: u64,
    /// CPU time used during the run.
    pub cpu_seconds: f64,
}

/// Steady-state figures.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SteadyReport {
    /// Agents connected.
    pub agents: u64,
    /// Syncs per second (all agents).
    pub syncs_per_second: f64,
    /// Average SyncAuthorizedEntries response bytes per sync in the steady phase.
    pub bytes_per_sync: f64,
    /// Average server cores busy.
    pub server_cpu_cores: Option<f64>,
    /// Database statements per second.
    pub db_statements_per_second: Option<f64>,
    /// Database statements per second per 1,000 agents.
    pub db_statements_per_second_per_1000_agents: Option<f64>,
}

fn pct(p: &Percentiles) -> String {
    if p.count == 0 {
        return "no samples".to_owned();
    }
    format!(
        "n={} p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
        p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
    )
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}{unit}"))
}

impl Report {
    /// The human-readable summary.
    pub fn pretty(&self) -> String {
        let mut s = String::new();
        let c = &self.config;
        let _ = writeln!(
            s,
            "spire-loadgen {} run {}: {} agents x {} workloads, {} aliases x {}, churn {}/s, steady {}s, sync every {}s{}",
            self.version,
            self.run_id,
            c.agents,
            c.workloads_per_agent,
            c.aliases,
            c.workloads_per_alias,
            c.churn_per_second,
            c.duration_seconds,
            c.sync_interval_seconds,
            if c.watch { " + Watch" } else { "" }
        );
        let _ = writeln!(
            s,
            "setup        {} tokens, {} entries ({} failed) in {:.2}s ({:.0} entries/s)",
            self.setup.join_tokens,
            self.setup.entries_created,
            self.setup.entries_failed,
            self.setup.seconds,
            self.setup.entries_per_second
        );
        let a = &self.attestation;
        let _ = writeln!(
            s,
            "attestation  ok={} failed={} first-sync-empty={} {:.1}/s {}",
            a.ok,
            a.failed,
            a.first_sync_empty,
            a.per_second,
            pct(&a.latency)
        );
        if let Some(e) = &a.first_error {
            let _ = writeln!(s, "             first error: {e}");
        }
        let y = &self.sync;
        let _ = writeln!(
            s,
            "sync         {} syncs ({} failed), {:.0} bytes/sync, {} entries fetched, {}",
            y.count,
            y.failed,
            y.bytes_per_sync,
            y.entries_fetched,
            pct(&y.latency)
        );
        let x = &self.x509;
        let _ = writeln!(
            s,
            "x509         requested={} issued={} failed={} (initial {}, churn {}, reissued {}) in {} batches, {}",
            x.requested,
            x.issued,
            x.failed,
            x.initial_issued,
            x.churn_issued,
            x.reissued,
            x.batches,
            pct(&x.batch_latency)
        );
        if let Some(i) = &x.issue_phase {
            let _ = writeln!(
                s,
                "issuance     {} SVIDs in {:.2}s = {:.0}/s wall, {} per server CPU second",
                i.svids,
                i.seconds,
                i.per_second,
                opt(i.per_server_cpu_second, "")
            );
        }
        let j = &self.jwt;
        let _ = writeln!(
            s,
            "jwt          requested={} issued={} failed={} {}",
            j.requested,
            j.issued,
            j.failed,
            pct(&j.latency)
        );
        let w = &self.watch;
        let _ = writeln!(
            s,
            "watch        {} streams, {} pushes, {} errors",
            w.streams_opened, w.notifications, w.errors
        );
        let ch = &self.churn;
        let _ = writeln!(
            s,
            "churn        created={} deleted={} failed={} create {}",
            ch.created,
            ch.deleted,
            ch.failed,
            pct(&ch.create_latency)
        );
        let p = &self.propagation;
        let _ = writeln!(
            s,
            "propagation  samples={} unresolved={} by-poll={}\n  to watch   {}\n  to svid    {}",
            p.samples,
            p.unresolved,
            p.found_by_poll,
            pct(&p.to_watch),
            pct(&p.to_svid)
        );
        for (name, ph) in [
            ("setup", Some(&self.phases.setup)),
            ("ramp", Some(&self.phases.ramp)),
            ("issue", self.phases.issue.as_ref()),
            ("steady", Some(&self.phases.steady)),
        ] {
            if let Some(ph) = ph {
                let _ = writeln!(
                    s,
                    "phase {name:<6} {:.2}s, server cpu {} ({} cores), rss {}, db {} stmts ({})",
                    ph.seconds,
                    opt(ph.server_cpu_seconds, "s"),
                    opt(ph.server_cpu_cores, ""),
                    ph.server_rss_kb.map_or_else(
                        || "n/a".to_owned(),
                        |k| format!("{:.1}MiB", k as f64 / 1024.0)
                    ),
                    ph.db_statements
                        .map_or_else(|| "n/a".to_owned(), |d| d.to_string()),
                    opt(ph.db_statements_per_second, "/s")
                );
            }
        }
        for d in &self.phases.steady.db_top_statements {
            let _ = writeln!(s, "  steady db {:>8}  {}", d.calls, d.query);
        }
        if let Some(sv) = &self.server {
            let _ = writeln!(
                s,
                "server pid {}: rss start {:.1}MiB peak {:.1}MiB end {:.1}MiB, cpu {:.2}s",
                sv.pid,
                sv.rss_kb_start as f64 / 1024.0,
                sv.rss_kb_peak as f64 / 1024.0,
                sv.rss_kb_end as f64 / 1024.0,
                sv.cpu_seconds
            );
        }
        let st = &self.steady_state;
        let _ = writeln!(
            s,
            "steady state {} agents: {:.1} syncs/s ({:.0} bytes/sync), server {} cores, db {} ({} per 1000 agents)",
            st.agents,
            st.syncs_per_second,
            st.bytes_per_sync,
            opt(st.server_cpu_cores, ""),
            opt(st.db_statements_per_second, "/s"),
            opt(st.db_statements_per_second_per_1000_agents, "/s")
        );
        s
    }
}
