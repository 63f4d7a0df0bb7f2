//! Command-line flags (Go style, like SPIRE's binaries: `-agents 100`, `-output json`).

use std::path::PathBuf;
use std::time::Duration;

use spire_cli::OutputArgs;

/// Simulates SPIRE agents against a real server and reports what it measured.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "spire-loadgen", version, about)]
pub struct Args {
    /// Server agent API address (host:port).
    #[arg(long = "serverAddress", default_value = "127.0.0.1:8081")]
    pub server_address: String,
    /// Path to the server's local API socket (creates join tokens and entries).
    #[arg(
        long = "socketPath",
        default_value = "/tmp/spire-server/private/api.sock"
    )]
    pub socket_path: PathBuf,
    /// Trust domain of the server.
    #[arg(long = "trustDomain", default_value = "example.org")]
    pub trust_domain: String,
    /// Number of simulated agents.
    #[arg(long = "agents", default_value_t = 100)]
    pub agents: usize,
    /// Workload entries parented to each agent.
    #[arg(long = "workloadsPerAgent", default_value_t = 10)]
    pub workloads_per_agent: usize,
    /// Node aliases: agents are split into this many groups, each agent's join token maps it to
    /// its group's alias ID (0 = no aliases).
    #[arg(long = "aliases", default_value_t = 0)]
    pub aliases: usize,
    /// Workload entries parented to each node alias (shared by all agents of the group).
    #[arg(long = "workloadsPerAlias", default_value_t = 5)]
    pub workloads_per_alias: usize,
    /// Entries created per second during the steady phase (each parented to one simulated
    /// agent, round robin); 0 = no churn.
    #[arg(long = "churn", default_value_t = 0.0)]
    pub churn: f64,
    /// Churn entries kept alive; older ones are deleted as new ones are created.
    #[arg(long = "churnKeep", default_value_t = 100)]
    pub churn_keep: usize,
    /// Length of the steady phase (after every agent has its SVIDs).
    #[arg(long = "duration", default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Time between the end of the ramp and the start of the steady-phase measurement
    /// (agents sync as in the steady phase meanwhile; nothing is counted).
    #[arg(long = "settle", default_value = "0s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Timer-driven sync interval of each agent (SPIRE's default is 5s); Watch pushes trigger
    /// extra syncs.
    #[arg(long = "syncInterval", default_value = "5s", value_parser = humantime::parse_duration)]
    pub sync_interval: Duration,
    /// Disable the spire-rs Watch push stream (poll only, like a SPIRE agent).
    #[arg(long = "noWatch")]
    pub no_watch: bool,
    /// NewJWTSVID calls per agent after its first sync.
    #[arg(long = "jwtPerAgent", default_value_t = 1)]
    pub jwt_per_agent: usize,
    /// CSRs per BatchNewX509SVID call (SPIRE's agent uses 500).
    #[arg(long = "batchSize", default_value_t = 500)]
    pub batch_size: usize,
    /// After the ramp, every agent re-requests X509-SVIDs for all its entries this many times
    /// (reusing its CSRs); measures issuance throughput against server CPU.
    #[arg(long = "issueRounds", default_value_t = 0)]
    pub issue_rounds: usize,
    /// Agents attesting at the same time during the ramp.
    #[arg(long = "concurrency", default_value_t = 32)]
    pub concurrency: usize,
    /// PID of the server process, to report its CPU and memory from /proc.
    #[arg(long = "serverPid")]
    pub server_pid: Option<u32>,
    /// PostgreSQL URL of the server's datastore; when set, DB statements per phase are counted
    /// from pg_stat_statements (through `psql`).
    #[arg(long = "pgStatURL")]
    pub pg_stat_url: Option<String>,
    /// How often progress is printed to stderr (0 = never).
    #[arg(long = "progressInterval", default_value = "2s", value_parser = humantime::parse_duration)]
    pub progress_interval: Duration,
    /// Keep the created join tokens' entries after the run (default: delete them).
    #[arg(long = "keep")]
    pub keep: bool,
    /// Bulk mode (P3): print SQL that generates this many registration entries (and
    /// `-bulkAgents` attested nodes) in a spire-rs PostgreSQL datastore, then exit.
    #[arg(long = "bulkEntries")]
    pub bulk_entries: Option<u64>,
    /// Attested nodes for `-bulkEntries`.
    #[arg(long = "bulkAgents", default_value_t = 300_000)]
    pub bulk_agents: u64,
    /// Workload API mode (P6): drive this spire-agent Workload API socket with
    /// `-workloadClients` concurrent FetchX509SVID clients instead of simulating agents.
    #[arg(long = "workloadSocket")]
    pub workload_socket: Option<PathBuf>,
    /// Concurrent Workload API clients (with `-workloadSocket`).
    #[arg(long = "workloadClients", default_value_t = 1000)]
    pub workload_clients: usize,
    /// Fetches per Workload API client, all clients at once each round.
    #[arg(long = "workloadRounds", default_value_t = 1)]
    pub workload_rounds: usize,
    /// Spread each round's requests evenly over this time (0 = all clients at once).
    #[arg(long = "workloadSpread", default_value = "0s", value_parser = humantime::parse_duration)]
    pub workload_spread: Duration,
    /// How long a Workload API client waits for its first message.
    #[arg(long = "workloadTimeout", default_value = "30s", value_parser = humantime::parse_duration)]
    pub workload_timeout: Duration,
    /// Output format.
    #[command(flatten)]
    pub output: OutputArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use spire_cli::OutputFormat;

    #[test]
    fn go_style_flags() {
        let a: Args = spire_cli::parse_from([
            "spire-loadgen",
            "-serverAddress",
            "127.0.0.1:9000",
            "-agents",
            "5",
            "-workloadsPerAgent=3",
            "-churn",
            "2.5",
            "-duration",
            "2s",
            "-noWatch",
            "-output",
            "json",
        ])
        .unwrap();
        assert_eq!(a.server_address, "127.0.0.1:9000");
        assert_eq!(a.agents, 5);
        assert_eq!(a.workloads_per_agent, 3);
        assert_eq!(a.churn, 2.5);
        assert_eq!(a.duration, Duration::from_secs(2));
        assert!(a.no_watch);
        assert_eq!(a.output.output, OutputFormat::Json);
        assert_eq!(a.batch_size, 500);
    }

    #[test]
    fn unknown_flag_is_an_error() {
        let r: Result<Args, _> = spire_cli::parse_from(["spire-loadgen", "-nope", "1"]);
        assert!(r.is_err());
    }
}
