//! `spire-server localauthority x509|jwt show|prepare|activate|taint|revoke`.
//!
//! Mirrors `cmd/spire-server/cli/localauthority/{x509,jwt}/*.go`.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::CommonArgs;
use super::client::{connect, rpc_error};
use super::printer::{self, OutputFormat};
use crate::pb::localauthority as pb;

#[derive(Debug, Subcommand)]
pub(crate) enum LocalAuthorityCommand {
    /// Manages X.509 authorities
    #[command(subcommand)]
    X509(AuthorityCommand),
    /// Manages JWT authorities
    #[command(subcommand)]
    Jwt(AuthorityCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuthorityCommand {
    /// Shows the local authorities
    Show(NoId),
    /// Prepares a new local authority
    Prepare(NoId),
    /// Activates a prepared local authority
    Activate(WithId),
    /// Marks the previously active authority as tainted
    Taint(WithId),
    /// Revokes the previously active authority
    Revoke(WithId),
}

#[derive(Debug, Args)]
pub(crate) struct NoId {
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
pub(crate) struct WithId {
    /// The authority ID of the local authority
    #[arg(long = "authorityID")]
    authority_id: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Clone, Copy)]
enum Kind {
    X509,
    Jwt,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::X509 => "X.509",
            Kind::Jwt => "JWT",
        }
    }
}

pub(crate) async fn run(cmd: LocalAuthorityCommand) -> anyhow::Result<ExitCode> {
    let (kind, cmd) = match cmd {
        LocalAuthorityCommand::X509(c) => (Kind::X509, c),
        LocalAuthorityCommand::Jwt(c) => (Kind::Jwt, c),
    };
    match cmd {
        AuthorityCommand::Show(a) => show(kind, a.common).await,
        AuthorityCommand::Prepare(a) => {
            let mut c = client(&a.common).await?;
            let st = match kind {
                Kind::X509 => {
                    c.prepare_x509_authority(pb::PrepareX509AuthorityRequest {})
                        .await
                        .map_err(rpc_error)?
                        .into_inner()
                        .prepared_authority
                }
                Kind::Jwt => {
                    c.prepare_jwt_authority(pb::PrepareJwtAuthorityRequest {})
                        .await
                        .map_err(rpc_error)?
                        .into_inner()
                        .prepared_authority
                }
            };
            single(
                kind,
                "Prepared",
                "prepared_authority",
                st.as_ref(),
                a.common.output,
            )
        }
        AuthorityCommand::Activate(a) => {
            let id = required(&a.authority_id)?;
            let mut c = client(&a.common).await?;
            let st = match kind {
                Kind::X509 => {
                    c.activate_x509_authority(pb::ActivateX509AuthorityRequest { authority_id: id })
                        .await
                        .map_err(rpc_error)?
                        .into_inner()
                        .activated_authority
                }
                Kind::Jwt => {
                    c.activate_jwt_authority(pb::ActivateJwtAuthorityRequest { authority_id: id })
                        .await
                        .map_err(rpc_error)?
                        .into_inner()
                        .activated_authority
                }
            };
            single(
                kind,
                "Activated",
                "activated_authority",
                st.as_ref(),
                a.common.output,
            )
        }
        AuthorityCommand::Taint(a) => {
            let id = required(&a.authority_id)?;
            let mut c = client(&a.common).await?;
            let st = match kind {
                Kind::X509 => {
                    c.taint_x509_authority(pb::TaintX509AuthorityRequest { authority_id: id })
                        .await
                        .map_err(rpc_error)?
                        .into_inner()
                        .tainted_authority
                }
                Kind::Jwt => {
                    c.taint_jwt_authority(pb::TaintJwtAuthorityRequest { authority_id: id })
                        .await
                        .map_err(rpc_error)?
                        .into_inner()
                        .tainted_authority
                }
            };
            single(
                kind,
                "Tainted",
                "tainted_authority",
                st.as_ref(),
                a.common.output,
            )
        }
        AuthorityCommand::Revoke(a) => {
            let id = required(&a.authority_id)?;
            let mut c = client(&a.common).await?;
            let st = match kind {
                Kind::X509 => {
                    c.revoke_x509_authority(pb::RevokeX509AuthorityRequest { authority_id: id })
                        .await
                        .map_err(rpc_error)?
                        .into_inner()
                        .revoked_authority
                }
                Kind::Jwt => {
                    c.revoke_jwt_authority(pb::RevokeJwtAuthorityRequest { authority_id: id })
                        .await
                        .map_err(rpc_error)?
                        .into_inner()
                        .revoked_authority
                }
            };
            single(
                kind,
                "Revoked",
                "revoked_authority",
                st.as_ref(),
                a.common.output,
            )
        }
    }
}

async fn client(
    common: &CommonArgs,
) -> anyhow::Result<pb::local_authority_client::LocalAuthorityClient<Channel>> {
    Ok(pb::local_authority_client::LocalAuthorityClient::new(
        connect(&common.socket_path).await?,
    ))
}

fn required(id: &Option<String>) -> anyhow::Result<String> {
    match id {
        Some(id) if !id.is_empty() => Ok(id.clone()),
        _ => bail!("an authority ID is required: set -authorityID"),
    }
}

fn state_json(s: Option<&pb::AuthorityState>) -> Value {
    match s {
        Some(s) => json!({
            "authority_id": s.authority_id,
            "expires_at": s.expires_at.to_string(),
            "upstream_authority_subject_key_id": s.upstream_authority_subject_key_id,
        }),
        None => Value::Null,
    }
}

fn state_pretty(kind: Kind, which: &str, s: Option<&pb::AuthorityState>) {
    println!("{which} {} authority:", kind.label());
    match s {
        Some(s) if !s.authority_id.is_empty() => {
            println!("  Authority ID: {}", s.authority_id);
            println!("  Expires at: {}", printer::go_time(s.expires_at));
            if !s.upstream_authority_subject_key_id.is_empty() {
                println!(
                    "  Upstream authority Subject Key ID: {}",
                    s.upstream_authority_subject_key_id
                );
            }
        }
        _ => println!(
            "  No {} {} authority found",
            which.to_lowercase(),
            kind.label()
        ),
    }
}

fn single(
    kind: Kind,
    verb: &str,
    key: &str,
    s: Option<&pb::AuthorityState>,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    if output == OutputFormat::Json {
        let mut m = serde_json::Map::new();
        m.insert(key.to_string(), state_json(s));
        printer::print_json(&Value::Object(m));
    } else {
        state_pretty(kind, verb, s);
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(kind: Kind, common: CommonArgs) -> anyhow::Result<ExitCode> {
    let mut c = client(&common).await?;
    let (active, prepared, old) = match kind {
        Kind::X509 => {
            let r = c
                .get_x509_authority_state(pb::GetX509AuthorityStateRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner();
            (r.active, r.prepared, r.old)
        }
        Kind::Jwt => {
            let r = c
                .get_jwt_authority_state(pb::GetJwtAuthorityStateRequest {})
                .await
                .map_err(rpc_error)?
                .into_inner();
            (r.active, r.prepared, r.old)
        }
    };
    if common.output == OutputFormat::Json {
        printer::print_json(&json!({
            "active": state_json(active.as_ref()),
            "prepared": state_json(prepared.as_ref()),
            "old": state_json(old.as_ref()),
        }));
    } else {
        state_pretty(kind, "Active", active.as_ref());
        println!();
        state_pretty(kind, "Prepared", prepared.as_ref());
        println!();
        state_pretty(kind, "Old", old.as_ref());
    }
    Ok(ExitCode::SUCCESS)
}
