//! `spire-server bundle show|list|set|delete|count`.
//!
//! Mirrors `cmd/spire-server/cli/bundle/*.go`.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use super::CommonArgs;
use super::client::{connect, rpc_error};
use super::printer::{self, OutputFormat};
use crate::pb::{bundle as pb, types};

#[derive(Debug, Subcommand)]
pub(crate) enum BundleCommand {
    /// Prints server CA bundle to stdout
    Show(ShowArgs),
    /// Lists federated bundles
    List(ListArgs),
    /// Creates or updates federated bundle data
    Set(SetArgs),
    /// Deletes federated bundle data
    Delete(DeleteArgs),
    /// Count bundles
    Count(CountArgs),
}

/// `-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BundleFormat {
    Pem,
    Spiffe,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The format to show the bundle (only pretty output format supports this flag)
    #[arg(long = "format", value_enum, default_value = "pem")]
    format: BundleFormat,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// The trust domain SPIFFE ID of the bundle to show. If unset, all trust bundles are shown
    #[arg(long = "id")]
    id: Option<String>,
    /// The format to list federated bundles
    #[arg(long = "format", value_enum, default_value = "pem")]
    format: BundleFormat,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
pub(crate) struct SetArgs {
    /// SPIFFE ID of the trust domain
    #[arg(long = "id")]
    id: Option<String>,
    /// Path to the bundle data (stdin if unset)
    #[arg(long = "path")]
    path: Option<String>,
    /// The format of the bundle data
    #[arg(long = "format", value_enum, default_value = "pem")]
    format: BundleFormat,
    #[command(flatten)]
    common: CommonArgs,
}

/// `-mode` of `bundle delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DeleteMode {
    Restrict,
    Delete,
    Dissociate,
}

#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// SPIFFE ID of the trust domain
    #[arg(long = "id")]
    id: Option<String>,
    /// Deletion mode: one of restrict, delete, or dissociate
    #[arg(long = "mode", value_enum, default_value = "restrict")]
    mode: DeleteMode,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
pub(crate) struct CountArgs {
    #[command(flatten)]
    common: CommonArgs,
}

pub(crate) async fn run(cmd: BundleCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BundleCommand::Show(a) => show(a).await,
        BundleCommand::List(a) => list(a).await,
        BundleCommand::Set(a) => set(a).await,
        BundleCommand::Delete(a) => delete(a).await,
        BundleCommand::Count(a) => count(a).await,
    }
}

fn print_bundle(b: &types::Bundle, format: BundleFormat) -> anyhow::Result<()> {
    match format {
        BundleFormat::Pem => print!("{}", printer::bundle_pem(b)),
        BundleFormat::Spiffe => println!("{}", to_spiffe(b)?.to_json_pretty()?),
    }
    Ok(())
}

/// The SPIFFE bundle model of a wire bundle.
fn to_spiffe(b: &types::Bundle) -> anyhow::Result<spire_spiffe::Bundle> {
    let td: spire_spiffe::TrustDomain = b
        .trust_domain
        .parse()
        .map_err(|e| anyhow::anyhow!("server returned an invalid trust domain: {e}"))?;
    let mut out = spire_spiffe::Bundle::new(td);
    out.x509_authorities = b.x509_authorities.iter().map(|a| a.asn1.clone()).collect();
    out.jwt_authorities = b
        .jwt_authorities
        .iter()
        .map(|k| spire_spiffe::JwtAuthority {
            key_id: k.key_id.clone(),
            public_key: k.public_key.clone(),
            expires_at: (k.expires_at != 0).then_some(k.expires_at),
        })
        .collect();
    out.refresh_hint =
        (b.refresh_hint > 0).then(|| std::time::Duration::from_secs(b.refresh_hint as u64));
    out.sequence_number = b.sequence_number;
    Ok(out)
}

/// The wire form of a parsed SPIFFE bundle.
fn from_spiffe(b: spire_spiffe::Bundle) -> types::Bundle {
    types::Bundle {
        trust_domain: b.trust_domain.as_str().to_string(),
        x509_authorities: b
            .x509_authorities
            .into_iter()
            .map(|asn1| types::X509Certificate {
                asn1,
                tainted: false,
            })
            .collect(),
        jwt_authorities: b
            .jwt_authorities
            .into_iter()
            .map(|k| types::JwtKey {
                public_key: k.public_key,
                key_id: k.key_id,
                expires_at: k.expires_at.unwrap_or(0),
                tainted: false,
            })
            .collect(),
        refresh_hint: b.refresh_hint.map_or(0, |d| d.as_secs() as i64),
        sequence_number: b.sequence_number,
        wit_authorities: Vec::new(),
    }
}

async fn show(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::bundle_client::BundleClient::new(channel);
    let b = client
        .get_bundle(pb::GetBundleRequest { output_mask: None })
        .await
        .map_err(rpc_error)?
        .into_inner();
    if a.common.output == OutputFormat::Json {
        printer::print_json(&printer::bundle_json(&b));
    } else {
        print_bundle(&b, a.format)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Accepts `spiffe://td` or a bare trust domain name; returns the trust domain name.
fn trust_domain_arg(id: &str) -> anyhow::Result<String> {
    let s = id.strip_prefix("spiffe://").unwrap_or(id);
    let td: spire_spiffe::TrustDomain = s
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid value {id:?} for -id: {e}"))?;
    Ok(td.as_str().to_string())
}

async fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::bundle_client::BundleClient::new(channel);
    let bundles = if let Some(id) = &a.id {
        let td = trust_domain_arg(id)?;
        vec![
            client
                .get_federated_bundle(pb::GetFederatedBundleRequest {
                    trust_domain: td,
                    output_mask: None,
                })
                .await
                .map_err(rpc_error)?
                .into_inner(),
        ]
    } else {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let resp = client
                .list_federated_bundles(pb::ListFederatedBundlesRequest {
                    output_mask: None,
                    page_size: 1000,
                    page_token: token.clone(),
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            all.extend(resp.bundles);
            if resp.next_page_token.is_empty() {
                break;
            }
            token = resp.next_page_token;
        }
        all
    };
    if a.common.output == OutputFormat::Json {
        let arr: Vec<_> = bundles.iter().map(printer::bundle_json).collect();
        printer::print_json(&json!({"bundles": arr, "next_page_token": ""}));
        return Ok(ExitCode::SUCCESS);
    }
    if a.id.is_some() {
        if let Some(b) = bundles.first() {
            print_bundle(b, a.format)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    for (i, b) in bundles.iter().enumerate() {
        if i > 0 {
            println!();
        }
        println!("****************************************");
        println!("* {}", b.trust_domain);
        println!("****************************************");
        print_bundle(b, a.format)?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn set(a: SetArgs) -> anyhow::Result<ExitCode> {
    let Some(id) = &a.id else {
        bail!("id flag is required: set -id");
    };
    let td = trust_domain_arg(id)?;
    let data = match &a.path {
        Some(p) => std::fs::read(p).with_context(|| format!("cannot read {p}"))?,
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read from stdin")?;
            buf
        }
    };
    let parsed_td: spire_spiffe::TrustDomain = td
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid value {id:?} for -id: {e}"))?;
    let mut bundle = match a.format {
        BundleFormat::Pem => spire_spiffe::Bundle::from_pem(parsed_td, &data)
            .map(from_spiffe)
            .context("invalid PEM bundle data")?,
        BundleFormat::Spiffe => spire_spiffe::Bundle::from_json(parsed_td, &data)
            .map(from_spiffe)
            .context("invalid SPIFFE bundle data")?,
    };
    if bundle.x509_authorities.is_empty() {
        bail!("bundle data contains no X.509 authorities");
    }
    bundle.trust_domain = td;
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::bundle_client::BundleClient::new(channel);
    let resp = client
        .batch_set_federated_bundle(pb::BatchSetFederatedBundleRequest {
            bundle: vec![bundle],
            output_mask: None,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let status = resp.results.first().and_then(|r| r.status.clone());
    if a.common.output == OutputFormat::Json {
        let arr: Vec<_> = resp
            .results
            .iter()
            .map(|r| {
                json!({"status": printer::status_json(r.status.as_ref()),
                       "bundle": r.bundle.as_ref().map(printer::bundle_json)})
            })
            .collect();
        printer::print_json(&json!({"results": arr}));
    }
    match status {
        Some(s) if s.code != 0 => {
            eprintln!("Error: failed to set federated bundle: {}", s.message);
            Ok(ExitCode::from(1))
        }
        _ => {
            if a.common.output == OutputFormat::Pretty {
                println!("bundle set.");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn delete(a: DeleteArgs) -> anyhow::Result<ExitCode> {
    let Some(id) = &a.id else {
        bail!("id is required: set -id");
    };
    let td = trust_domain_arg(id)?;
    let mode = match a.mode {
        DeleteMode::Restrict => pb::batch_delete_federated_bundle_request::Mode::Restrict,
        DeleteMode::Delete => pb::batch_delete_federated_bundle_request::Mode::Delete,
        DeleteMode::Dissociate => pb::batch_delete_federated_bundle_request::Mode::Dissociate,
    };
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::bundle_client::BundleClient::new(channel);
    let resp = client
        .batch_delete_federated_bundle(pb::BatchDeleteFederatedBundleRequest {
            trust_domains: vec![td],
            mode: mode as i32,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let status = resp.results.first().and_then(|r| r.status.clone());
    if a.common.output == OutputFormat::Json {
        let arr: Vec<_> = resp
            .results
            .iter()
            .map(|r| json!({"status": printer::status_json(r.status.as_ref()), "trust_domain": r.trust_domain}))
            .collect();
        printer::print_json(&json!({"results": arr}));
    }
    match status {
        Some(s) if s.code != 0 => {
            eprintln!("Error: failed to delete federated bundle: {}", s.message);
            Ok(ExitCode::from(1))
        }
        _ => {
            if a.common.output == OutputFormat::Pretty {
                println!("bundle deleted.");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn count(a: CountArgs) -> anyhow::Result<ExitCode> {
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::bundle_client::BundleClient::new(channel);
    let resp = client
        .count_bundles(pb::CountBundlesRequest {})
        .await
        .map_err(rpc_error)?
        .into_inner();
    if a.common.output == OutputFormat::Json {
        printer::print_json(&json!({"count": resp.count}));
    } else if resp.count == 1 {
        println!("1 bundle");
    } else {
        println!("{} bundles", resp.count);
    }
    Ok(ExitCode::SUCCESS)
}
