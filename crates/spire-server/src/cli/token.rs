//! `spire-server token generate`.
//!
//! Mirrors `cmd/spire-server/cli/token/generate.go`.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::json;

use super::CommonArgs;
use super::client::{connect, rpc_error};
use super::entry::id_to_proto;
use super::printer::{self, OutputFormat};
use crate::pb::agent as pb;

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Generates a join token
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// Additional SPIFFE ID to assign the token owner (optional)
    #[arg(long = "spiffeID")]
    spiffe_id: Option<String>,
    /// Token TTL in seconds
    #[arg(long = "ttl", default_value_t = 600, allow_negative_numbers = true)]
    ttl: i32,
    #[command(flatten)]
    common: CommonArgs,
}

pub(crate) async fn run(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    let TokenCommand::Generate(a) = cmd;
    if a.ttl < 0 {
        anyhow::bail!(
            "invalid value {} for -ttl: the TTL must not be negative",
            a.ttl
        );
    }
    let agent_id = match &a.spiffe_id {
        Some(s) => Some(id_to_proto(s).context("invalid value for -spiffeID")?),
        None => None,
    };
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::agent_client::AgentClient::new(channel);
    let token = client
        .create_join_token(pb::CreateJoinTokenRequest {
            ttl: a.ttl,
            token: String::new(),
            agent_id,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    if a.common.output == OutputFormat::Json {
        printer::print_json(
            &json!({"value": token.value, "expires_at": token.expires_at.to_string()}),
        );
    } else {
        println!("Token: {}", token.value);
        if a.spiffe_id.is_none() {
            eprintln!("Warning: Missing SPIFFE ID.");
        }
    }
    Ok(ExitCode::SUCCESS)
}
