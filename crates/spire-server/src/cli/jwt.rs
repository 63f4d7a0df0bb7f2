//! `spire-server jwt mint`.
//!
//! Mirrors `cmd/spire-server/cli/jwt/mint.go`.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use super::CommonArgs;
use super::agent::parse_go_duration;
use super::client::{connect, rpc_error};
use super::entry::id_to_proto;
use super::printer::{self, OutputFormat};
use crate::pb::svid as pb;

#[derive(Debug, Subcommand)]
pub(crate) enum JwtCommand {
    /// Mints a JWT-SVID
    Mint(MintArgs),
}

#[derive(Debug, Args)]
pub(crate) struct MintArgs {
    /// SPIFFE ID of the JWT-SVID
    #[arg(long = "spiffeID")]
    spiffe_id: Option<String>,
    /// TTL of the JWT-SVID
    #[arg(long = "ttl")]
    ttl: Option<String>,
    /// Audience claim that will be included in the SVID. Can be used more than once
    #[arg(long = "audience")]
    audience: Vec<String>,
    /// File to write token to instead of stdout
    #[arg(long = "write")]
    write: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

pub(crate) async fn run(cmd: JwtCommand) -> anyhow::Result<ExitCode> {
    let JwtCommand::Mint(a) = cmd;
    let Some(spiffe_id) = &a.spiffe_id else {
        bail!("spiffeID must be specified: set -spiffeID");
    };
    if a.audience.is_empty() {
        bail!("at least one audience must be specified: set -audience");
    }
    let id = id_to_proto(spiffe_id).context("invalid value for -spiffeID")?;
    let ttl = match &a.ttl {
        Some(t) => {
            let d =
                parse_go_duration(t).with_context(|| format!("invalid value {t:?} for -ttl"))?;
            i32::try_from(d.as_secs()).context("-ttl is too large")?
        }
        None => 0,
    };
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::svid_client::SvidClient::new(channel);
    let resp = client
        .mint_jwtsvid(pb::MintJwtsvidRequest {
            id: Some(id),
            audience: a.audience.clone(),
            ttl,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let Some(svid) = resp.svid else {
        bail!("server response missing SVID");
    };
    if let Some(path) = &a.write {
        std::fs::write(path, format!("{}\n", svid.token))
            .with_context(|| format!("cannot write the token to {path}"))?;
        if a.common.output == OutputFormat::Pretty {
            println!("JWT-SVID written to {path}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.common.output == OutputFormat::Json {
        printer::print_json(&json!({"svid": {
            "token": svid.token,
            "expires_at": svid.expires_at.to_string(),
            "issued_at": svid.issued_at.to_string(),
        }}));
    } else {
        println!("{}", svid.token);
    }
    Ok(ExitCode::SUCCESS)
}
