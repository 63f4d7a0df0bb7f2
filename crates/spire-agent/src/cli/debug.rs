//! `spire-agent debug getinfo` (SPIRE's agent Debug API) and `spire-agent debug explain -pid N`
//! (spire-rs addition: why a running process does or does not get an identity), both over the
//! agent's admin socket.

/// `println!` that tolerates a closed stdout.
macro_rules! outln {
    () => { super::write_stdout("\n") };
    ($($t:tt)*) => { super::write_stdout(&format!("{}\n", format_args!($($t)*))) };
}

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use spire_cli::{OutputArgs, OutputFormat};
use spire_proto::spire_rs::agent::ExplainRequest;
use spire_proto::spire_rs::agent::explain_client::ExplainClient;

use super::uds_channel;

/// `spire-agent debug ...`.
#[derive(Debug, Args)]
pub struct DebugArgs {
    /// The debug subcommand.
    #[command(subcommand)]
    pub command: DebugCommand,
}

/// The `debug` subcommands.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Prints debug information about the agent
    #[command(name = "getinfo")]
    GetInfo(super::logger::AdminArgs),
    /// Explains which entries a running process matches, or which selectors it lacks
    Explain(ExplainArgs),
}

/// Flags of `debug explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Process id of the workload to explain
    #[arg(long = "pid")]
    pub pid: i32,
    /// Path to the SPIRE Agent admin socket (default: admin_socket_path of -config)
    #[arg(long = "socketPath")]
    pub socket_path: Option<String>,
    /// Agent config file to read admin_socket_path from
    #[arg(long = "config", default_value = "conf/agent/agent.conf")]
    pub config: PathBuf,
    /// How many near-miss entries to show
    #[arg(long = "nearest", default_value_t = 3)]
    pub nearest: u32,
    #[command(flatten)]
    output: OutputArgs,
}

/// Runs `spire-agent debug ...`.
pub fn main(args: DebugArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let res = rt.block_on(async {
        match args.command {
            DebugCommand::Explain(a) => explain(a).await,
            DebugCommand::GetInfo(a) => get_info(a).await,
        }
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

async fn get_info(a: super::logger::AdminArgs) -> Result<(), String> {
    use spire_proto::agent::debug as pb;
    let ch = super::logger::admin_channel(&a.socket_path).await?;
    let info = pb::debug_client::DebugClient::new(ch)
        .get_info(pb::GetInfoRequest {})
        .await
        .map_err(|s| format!("rpc error: code = {:?} desc = {}", s.code(), s.message()))?
        .into_inner();
    let id_text = |c: &pb::get_info_response::Cert| {
        c.id.as_ref().map_or_else(
            || "(none)".to_owned(),
            |i| format!("spiffe://{}{}", i.trust_domain, i.path),
        )
    };
    if a.output.output == OutputFormat::Json {
        let chain: Vec<serde_json::Value> = info
            .svid_chain
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id.as_ref().map(|i| serde_json::json!({
                        "trust_domain": i.trust_domain,
                        "path": i.path,
                    })),
                    "expires_at": c.expires_at.to_string(),
                    "subject": c.subject,
                })
            })
            .collect();
        #[expect(deprecated, reason = "SPIRE prints the superseded svids_count too")]
        let svids_count = info.svids_count;
        let v = serde_json::json!({
            "svid_chain": chain,
            "uptime": info.uptime,
            "svids_count": svids_count,
            "last_sync_success": info.last_sync_success.to_string(),
            "cached_x509_svids_count": info.cached_x509_svids_count,
            "cached_jwt_svids_count": info.cached_jwt_svids_count,
            "cached_svidstore_x509_svids_count": info.cached_svidstore_x509_svids_count,
        });
        outln!("{v}");
        return Ok(());
    }
    let rfc3339 = |secs: i64| {
        spire_spiffe::to_offset_date_time(spire_spiffe::from_unix_secs(secs))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| secs.to_string())
    };
    let uptime = go_duration_secs(i64::from(info.uptime));
    outln!("Agent Debug Info:");
    outln!("  Uptime:                          {uptime}");
    outln!(
        "  Last Sync Success:               {}",
        if info.last_sync_success == 0 {
            "(never)".to_owned()
        } else {
            rfc3339(info.last_sync_success)
        }
    );
    outln!(
        "  Cached X.509 SVIDs:              {}",
        info.cached_x509_svids_count
    );
    outln!(
        "  Cached JWT SVIDs:                {}",
        info.cached_jwt_svids_count
    );
    outln!(
        "  Cached SVID Store X.509 SVIDs:   {}",
        info.cached_svidstore_x509_svids_count
    );
    if !info.svid_chain.is_empty() {
        outln!("  SVID Chain:");
        for (i, c) in info.svid_chain.iter().enumerate() {
            outln!("    [{i}] SPIFFE ID:  {}", id_text(c));
            outln!("        Subject:    {}", c.subject);
            outln!("        Expires At: {}", rfc3339(c.expires_at));
        }
    }
    Ok(())
}

/// Whole seconds as Go's `time.Duration.String()` prints them (`0s`, `45s`, `2m0s`, `1h2m3s`).
fn go_duration_secs(secs: i64) -> String {
    let secs = secs.max(0);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

fn admin_socket(a: &ExplainArgs) -> Result<PathBuf, String> {
    if let Some(s) = &a.socket_path {
        return spire_cli::socket_path_from_addr(s).map_err(|e| e.to_string());
    }
    let cfg =
        spire_config::AgentConfig::load(&a.config, None, &spire_config::AgentOverrides::default())
            .map_err(|e| {
                format!(
                    "no -socketPath given and cannot read the agent config {}: {e}",
                    a.config.display()
                )
            })?;
    cfg.admin_socket_path.ok_or_else(|| {
        format!(
            "the agent has no admin socket: set admin_socket_path in {} (or pass -socketPath)",
            a.config.display()
        )
    })
}

async fn explain(a: ExplainArgs) -> Result<(), String> {
    let path = admin_socket(&a)?;
    let ch = uds_channel(&path).await.map_err(|e| {
        format!(
            "cannot connect to the admin socket {}: {}",
            path.display(),
            super::error_chain(&e)
        )
    })?;
    let resp = ExplainClient::new(ch)
        .explain(ExplainRequest {
            pid: a.pid,
            max_nearest: a.nearest,
        })
        .await
        .map_err(|s| format!("explain failed: {}", s.message()))?
        .into_inner();
    if a.output.output == OutputFormat::Json {
        let entry = |e: &spire_proto::spire_rs::agent::ExplainedEntry| {
            serde_json::json!({
                "entry_id": e.entry_id,
                "spiffe_id": e.spiffe_id,
                "missing_selectors": e.missing_selectors,
                "svid_signed": e.svid_signed,
            })
        };
        let v = serde_json::json!({
            "pid": resp.pid,
            "selectors": resp.selectors,
            "matched": resp.matched.iter().map(entry).collect::<Vec<_>>(),
            "nearest": resp.nearest.iter().map(entry).collect::<Vec<_>>(),
            "snapshot_revision": resp.snapshot_revision,
        });
        outln!("{v}");
        return Ok(());
    }
    let ex = crate::endpoints::explain::Explanation {
        pid: resp.pid,
        selectors: resp
            .selectors
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect(),
        matched: resp.matched.iter().map(to_entry).collect(),
        nearest: resp.nearest.iter().map(to_entry).collect(),
        revision: resp.snapshot_revision,
    };
    outln!("{ex}");
    Ok(())
}

fn to_entry(
    e: &spire_proto::spire_rs::agent::ExplainedEntry,
) -> crate::endpoints::explain::ExplainedEntry {
    crate::endpoints::explain::ExplainedEntry {
        entry_id: e.entry_id.clone(),
        spiffe_id: e.spiffe_id.clone(),
        missing: e
            .missing_selectors
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect(),
        svid_signed: e.svid_signed,
    }
}
