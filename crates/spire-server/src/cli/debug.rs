//! `spire-server debug getinfo`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use super::CommonArgs;
use super::client::{connect, rpc_error};
use super::printer::{self, OutputFormat};
use crate::pb::debug as pb;

#[derive(Debug, Subcommand)]
pub(crate) enum DebugCommand {
    /// Get debug information
    Getinfo(GetInfoArgs),
}

#[derive(Debug, Args)]
pub(crate) struct GetInfoArgs {
    #[command(flatten)]
    common: CommonArgs,
}

pub(crate) async fn run(cmd: DebugCommand) -> anyhow::Result<ExitCode> {
    let DebugCommand::Getinfo(a) = cmd;
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::debug_client::DebugClient::new(channel);
    let info = client
        .get_info(pb::GetInfoRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if a.common.output == OutputFormat::Json {
        let chain: Vec<_> = info
            .svid_chain
            .iter()
            .map(|c| json!({
                "id": c.id.as_ref().map(|i| json!({"trust_domain": i.trust_domain, "path": i.path})),
                "expires_at": c.expires_at.to_string(),
                "subject": c.subject,
            }))
            .collect();
        printer::print_json(&json!({
            "svid_chain": chain,
            "uptime": info.uptime,
            "agents_count": info.agents_count,
            "federated_bundles_count": info.federated_bundles_count,
            "entries_count": info.entries_count,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    println!("Uptime: {}", info.uptime);
    println!("Agents count: {}", info.agents_count);
    println!("Entries count: {}", info.entries_count);
    println!("Federated bundles count: {}", info.federated_bundles_count);
    println!("SVID chain:");
    for c in &info.svid_chain {
        if let Some(id) = &c.id {
            println!("- ID: spiffe://{}{}", id.trust_domain, id.path);
        } else {
            println!("- ID: ");
        }
        println!("  Expires at: {}", printer::go_time(c.expires_at));
        println!("  Subject: {}", c.subject);
    }
    Ok(ExitCode::SUCCESS)
}
