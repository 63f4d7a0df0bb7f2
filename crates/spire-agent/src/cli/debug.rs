//! `spire-agent debug explain -pid N`: why a running process does or does not get an identity,
//! asked over the agent's admin socket (spire-rs addition).

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
