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

fn print_bundle(b: &types::Bundle, format: BundleFormat) {
    match format {
        BundleFormat::Pem => print!("{}", printer::bundle_pem(b)),
        BundleFormat::Spiffe => match serde_json::to_string_pretty(&printer::bundle_spiffe_json(b))
        {
            Ok(s) => println!("{s}"),
            Err(_) => println!("{{}}"),
        },
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
        print_bundle(&b, a.format);
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
            print_bundle(b, a.format);
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
        print_bundle(b, a.format);
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
    let mut bundle = match a.format {
        BundleFormat::Pem => bundle_from_pem(&data)?,
        BundleFormat::Spiffe => bundle_from_spiffe_json(&data)?,
    };
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

fn bundle_from_pem(data: &[u8]) -> anyhow::Result<types::Bundle> {
    let blocks = pem::parse_many(data).context("bundle data is not valid PEM")?;
    let mut out = types::Bundle::default();
    for b in blocks {
        if b.tag() != "CERTIFICATE" {
            bail!(
                "unexpected PEM block {:?} in bundle data: only CERTIFICATE is allowed",
                b.tag()
            );
        }
        x509_parser::parse_x509_certificate(b.contents())
            .map_err(|e| anyhow::anyhow!("bundle contains an invalid certificate: {e}"))?;
        out.x509_authorities.push(types::X509Certificate {
            asn1: b.contents().to_vec(),
            tainted: false,
        });
    }
    if out.x509_authorities.is_empty() {
        bail!("bundle data contains no certificates");
    }
    Ok(out)
}

fn bundle_from_spiffe_json(data: &[u8]) -> anyhow::Result<types::Bundle> {
    use base64::Engine as _;
    let doc: serde_json::Value =
        serde_json::from_slice(data).context("bundle data is not valid JSON")?;
    let mut out = types::Bundle::default();
    if let Some(seq) = doc.get("spiffe_sequence").and_then(|v| v.as_u64()) {
        out.sequence_number = seq;
    }
    if let Some(h) = doc.get("spiffe_refresh_hint").and_then(|v| v.as_i64()) {
        out.refresh_hint = h;
    }
    let keys = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .cloned()
        .unwrap_or_default();
    let b64 = base64::engine::general_purpose::STANDARD;
    for key in keys {
        match key.get("use").and_then(|u| u.as_str()) {
            Some("x509-svid") => {
                let x5c = key
                    .get("x5c")
                    .and_then(|v| v.as_array())
                    .cloned()
                    .unwrap_or_default();
                if x5c.len() != 1 {
                    bail!("x509-svid key must have exactly one certificate in x5c");
                }
                let der = b64
                    .decode(x5c[0].as_str().unwrap_or_default())
                    .context("x5c is not base64")?;
                out.x509_authorities.push(types::X509Certificate {
                    asn1: der,
                    tainted: false,
                });
            }
            Some("jwt-svid") => {
                let kid = key.get("kid").and_then(|v| v.as_str()).unwrap_or_default();
                if kid.is_empty() {
                    bail!("jwt-svid key is missing a kid");
                }
                let spki = crate::api::convert::spki_from_jwk(&key)
                    .context("jwt-svid key is not a supported public key")?;
                out.jwt_authorities.push(types::JwtKey {
                    public_key: spki,
                    key_id: kid.to_string(),
                    expires_at: 0,
                    tainted: false,
                });
            }
            _ => {}
        }
    }
    Ok(out)
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
