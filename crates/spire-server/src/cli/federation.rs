//! `spire-server federation create|update|list|show|delete|refresh`.
//!
//! Mirrors `cmd/spire-server/cli/federation/*.go`: relationships come either from flags or
//! from a JSON file (`-data`, `-` for stdin) of the form
//! `{"federationRelationships": [{"trustDomain", "bundleEndpointURL", "bundleEndpointProfile",
//! "endpointSPIFFEID", "trustDomainBundle", "trustDomainBundleFormat"}]}`.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::CommonArgs;
use super::client::{connect, rpc_error};
use super::printer::{self, OutputFormat};
use crate::pb::types;
use spire_proto::server::trustdomain as pb;
use types::federation_relationship::BundleEndpointProfile as WireProfile;

#[derive(Debug, Subcommand)]
pub(crate) enum FederationCommand {
    /// Creates a dynamic federation relationship with a foreign trust domain
    Create(CreateArgs),
    /// Updates a dynamic federation relationship with a foreign trust domain
    Update(CreateArgs),
    /// Lists all dynamic federation relationships
    List(ListArgs),
    /// Shows a dynamic federation relationship
    Show(ShowArgs),
    /// Deletes a dynamic federation relationship
    Delete(IdArgs),
    /// Refreshes the bundle from the specified federated trust domain
    Refresh(IdArgs),
}

/// The relationship flags shared by create and update.
#[derive(Debug, Args, Default)]
pub(crate) struct RelationshipFlags {
    /// Name of the trust domain to federate with (e.g., example.org)
    #[arg(long = "trustDomain")]
    trust_domain: Option<String>,
    /// URL of the SPIFFE bundle endpoint that provides the trust bundle (must use the HTTPS protocol)
    #[arg(long = "bundleEndpointURL")]
    bundle_endpoint_url: Option<String>,
    /// Endpoint profile type (either "https_web" or "https_spiffe")
    #[arg(long = "bundleEndpointProfile")]
    bundle_endpoint_profile: Option<String>,
    /// SPIFFE ID of the SPIFFE bundle endpoint server. Only used for 'spiffe' profile.
    #[arg(long = "endpointSpiffeID")]
    endpoint_spiffe_id: Option<String>,
    /// Path to the trust domain bundle data (optional).
    #[arg(long = "trustDomainBundlePath")]
    trust_domain_bundle_path: Option<String>,
    /// The format of the bundle data (optional). Either "pem" or "spiffe".
    #[arg(long = "trustDomainBundleFormat", default_value = "pem")]
    trust_domain_bundle_format: String,
}

impl RelationshipFlags {
    fn is_empty(&self) -> bool {
        self.trust_domain.is_none()
            && self.bundle_endpoint_url.is_none()
            && self.bundle_endpoint_profile.is_none()
            && self.endpoint_spiffe_id.is_none()
            && self.trust_domain_bundle_path.is_none()
            && self.trust_domain_bundle_format == "pem"
    }
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Path to a file containing federation relationships in JSON format (optional). If set to '-', read the JSON from stdin.
    #[arg(long = "data")]
    data: Option<String>,
    #[command(flatten)]
    fields: RelationshipFlags,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The trust domain name of the federation relationship to show
    #[arg(long = "trustDomain")]
    trust_domain: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    /// SPIFFE ID of the trust domain
    #[arg(long = "id")]
    id: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

pub(crate) async fn run(cmd: FederationCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FederationCommand::Create(a) => create_or_update(a, false).await,
        FederationCommand::Update(a) => create_or_update(a, true).await,
        FederationCommand::List(a) => list(a).await,
        FederationCommand::Show(a) => show(a).await,
        FederationCommand::Delete(a) => delete(a).await,
        FederationCommand::Refresh(a) => refresh(a).await,
    }
}

/// One relationship as the JSON file or the flags give it.
#[derive(Debug, Default)]
struct RelationshipInput {
    trust_domain: String,
    bundle_endpoint_url: String,
    bundle_endpoint_profile: String,
    endpoint_spiffe_id: String,
    bundle_path: Option<String>,
    bundle_raw: Option<Value>,
    bundle_format: String,
}

fn parse_bundle(data: &[u8], format: &str, td: &str) -> anyhow::Result<types::Bundle> {
    let trust_domain: spire_spiffe::TrustDomain = td
        .strip_prefix("spiffe://")
        .unwrap_or(td)
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid trust domain {td:?}: {e}"))?;
    let bundle = match format {
        "pem" => spire_spiffe::Bundle::from_pem(trust_domain, data)
            .map_err(|e| anyhow::anyhow!("unable to parse bundle data: {e}"))?,
        "spiffe" => spire_spiffe::Bundle::from_json(trust_domain, data)
            .map_err(|e| anyhow::anyhow!("unable to parse bundle data: {e}"))?,
        other => bail!("bundle format {other:?} is unsupported (expected pem or spiffe)"),
    };
    Ok(types::Bundle {
        trust_domain: bundle.trust_domain.as_str().to_owned(),
        x509_authorities: bundle
            .x509_authorities
            .into_iter()
            .map(|asn1| types::X509Certificate {
                asn1,
                tainted: false,
            })
            .collect(),
        jwt_authorities: bundle
            .jwt_authorities
            .into_iter()
            .map(|k| types::JwtKey {
                public_key: k.public_key,
                key_id: k.key_id,
                expires_at: k.expires_at.unwrap_or(0),
                tainted: false,
            })
            .collect(),
        refresh_hint: bundle
            .refresh_hint
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        sequence_number: bundle.sequence_number,
        wit_authorities: Vec::new(),
    })
}

fn to_proto(r: &RelationshipInput) -> anyhow::Result<types::FederationRelationship> {
    if r.trust_domain.is_empty() {
        bail!("trust domain is required");
    }
    if r.bundle_endpoint_url.is_empty() {
        bail!("bundle endpoint URL is required");
    }
    let mut bundle_td = r.trust_domain.clone();
    let profile = match r.bundle_endpoint_profile.as_str() {
        "https_web" => WireProfile::HttpsWeb(types::HttpsWebProfile {}),
        "https_spiffe" => {
            if r.endpoint_spiffe_id.is_empty() {
                bail!("endpoint SPIFFE ID is required if 'https_spiffe' endpoint profile is set");
            }
            let id: spire_spiffe::SpiffeId = r
                .endpoint_spiffe_id
                .parse()
                .map_err(|e| anyhow::anyhow!("cannot parse bundle endpoint SPIFFE ID: {e}"))?;
            bundle_td = id.trust_domain().as_str().to_owned();
            WireProfile::HttpsSpiffe(types::HttpsspiffeProfile {
                endpoint_spiffe_id: r.endpoint_spiffe_id.clone(),
            })
        }
        other => bail!("unknown bundle endpoint profile type: {other:?}"),
    };
    let trust_domain_bundle = if let Some(path) = &r.bundle_path {
        let data =
            std::fs::read(path).with_context(|| format!("cannot read bundle file {path}"))?;
        Some(
            parse_bundle(&data, &r.bundle_format, &bundle_td)
                .context("cannot parse bundle file")?,
        )
    } else if let Some(raw) = &r.bundle_raw {
        let data = match r.bundle_format.as_str() {
            "pem" => raw
                .as_str()
                .context("cannot parse bundle raw message: trustDomainBundle must be a PEM string")?
                .as_bytes()
                .to_vec(),
            _ => serde_json::to_vec(raw)?,
        };
        Some(
            parse_bundle(&data, &r.bundle_format, &bundle_td)
                .context("cannot parse bundle raw message")?,
        )
    } else {
        None
    };
    Ok(types::FederationRelationship {
        trust_domain: r.trust_domain.clone(),
        bundle_endpoint_url: r.bundle_endpoint_url.clone(),
        bundle_endpoint_profile: Some(profile),
        trust_domain_bundle,
    })
}

fn from_file(path: &str) -> anyhow::Result<Vec<types::FederationRelationship>> {
    let data = if path == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read stdin")?;
        buf
    } else {
        std::fs::read(path).with_context(|| format!("cannot read {path}"))?
    };
    let v: Value = serde_json::from_slice(&data).context("failed to parse JSON")?;
    let items = v
        .get("federationRelationships")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let text = |o: &Value, k: &str| {
        o.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    items
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let format = text(o, "trustDomainBundleFormat");
            let input = RelationshipInput {
                trust_domain: text(o, "trustDomain"),
                bundle_endpoint_url: text(o, "bundleEndpointURL"),
                bundle_endpoint_profile: text(o, "bundleEndpointProfile"),
                endpoint_spiffe_id: text(o, "endpointSPIFFEID"),
                bundle_path: None,
                bundle_raw: o.get("trustDomainBundle").cloned(),
                bundle_format: if format.is_empty() {
                    "pem".into()
                } else {
                    format
                },
            };
            to_proto(&input).with_context(|| format!("could not parse item {i}"))
        })
        .collect()
}

fn relationships(a: &CreateArgs) -> anyhow::Result<Vec<types::FederationRelationship>> {
    if let Some(path) = &a.data {
        if !a.fields.is_empty() {
            bail!("cannot use other flags to specify relationship fields when 'data' flag is set");
        }
        return from_file(path);
    }
    let f = &a.fields;
    let input = RelationshipInput {
        trust_domain: f.trust_domain.clone().unwrap_or_default(),
        bundle_endpoint_url: f.bundle_endpoint_url.clone().unwrap_or_default(),
        bundle_endpoint_profile: f.bundle_endpoint_profile.clone().unwrap_or_default(),
        endpoint_spiffe_id: f.endpoint_spiffe_id.clone().unwrap_or_default(),
        bundle_path: f.trust_domain_bundle_path.clone(),
        bundle_raw: None,
        bundle_format: f.trust_domain_bundle_format.clone(),
    };
    Ok(vec![to_proto(&input)?])
}

/// SPIRE's pretty layout of one relationship.
fn pretty(r: &types::FederationRelationship) -> String {
    let mut out = format!(
        "Trust domain              : {}\nBundle endpoint URL       : {}\n",
        r.trust_domain, r.bundle_endpoint_url
    );
    match &r.bundle_endpoint_profile {
        Some(WireProfile::HttpsWeb(_)) => out.push_str("Bundle endpoint profile   : https_web\n"),
        Some(WireProfile::HttpsSpiffe(p)) => {
            out.push_str("Bundle endpoint profile   : https_spiffe\n");
            out.push_str(&format!(
                "Endpoint SPIFFE ID        : {}\n",
                p.endpoint_spiffe_id
            ));
        }
        None => {}
    }
    out
}

/// protojson of a relationship.
fn relationship_json(r: &types::FederationRelationship) -> Value {
    let mut v = json!({
        "trust_domain": r.trust_domain,
        "bundle_endpoint_url": r.bundle_endpoint_url,
    });
    match &r.bundle_endpoint_profile {
        Some(WireProfile::HttpsWeb(_)) => v["https_web"] = json!({}),
        Some(WireProfile::HttpsSpiffe(p)) => {
            v["https_spiffe"] = json!({"endpoint_spiffe_id": p.endpoint_spiffe_id})
        }
        None => {}
    }
    if let Some(b) = &r.trust_domain_bundle {
        v["trust_domain_bundle"] = printer::bundle_json(b);
    }
    v
}

async fn create_or_update(a: CreateArgs, update: bool) -> anyhow::Result<ExitCode> {
    let requested = relationships(&a)?;
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::trust_domain_client::TrustDomainClient::new(channel);
    let results: Vec<(Option<types::Status>, Option<types::FederationRelationship>)> = if update {
        client
            .batch_update_federation_relationship(pb::BatchUpdateFederationRelationshipRequest {
                federation_relationships: requested.clone(),
                input_mask: None,
                output_mask: None,
            })
            .await
            .map_err(|s| anyhow::anyhow!("request failed: {}", rpc_error(s)))?
            .into_inner()
            .results
            .into_iter()
            .map(|r| (r.status, r.federation_relationship))
            .collect()
    } else {
        client
            .batch_create_federation_relationship(pb::BatchCreateFederationRelationshipRequest {
                federation_relationships: requested.clone(),
                output_mask: None,
            })
            .await
            .map_err(|s| anyhow::anyhow!("request failed: {}", rpc_error(s)))?
            .into_inner()
            .results
            .into_iter()
            .map(|r| (r.status, r.federation_relationship))
            .collect()
    };
    if a.common.output == OutputFormat::Json {
        let arr: Vec<Value> = results
            .iter()
            .map(|(s, r)| {
                let mut v = json!({"status": printer::status_json(s.as_ref())});
                if let Some(r) = r {
                    v["federation_relationship"] = relationship_json(r);
                }
                v
            })
            .collect();
        printer::print_json(&json!({"results": arr}));
    }
    let verb = if update { "update" } else { "create" };
    let mut failed = false;
    let pretty_out = a.common.output != OutputFormat::Json;
    for (i, (status, rel)) in results.iter().enumerate() {
        let code = status.as_ref().map_or(0, |s| s.code);
        if code == 0 {
            if pretty_out && let Some(r) = rel {
                println!();
                print!("{}", pretty(r));
            }
        } else {
            failed = true;
            if pretty_out {
                let msg = status
                    .as_ref()
                    .map(|s| s.message.clone())
                    .unwrap_or_default();
                println!();
                eprintln!(
                    "Failed to {verb} the following federation relationship (code: {}, msg: {msg:?}):",
                    printer::code_name(code)
                );
                if let Some(r) = requested.get(i) {
                    eprint!("{}", pretty(r));
                }
            }
        }
    }
    if failed {
        bail!("failed to {verb} one or more federation relationships");
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::trust_domain_client::TrustDomainClient::new(channel);
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let resp = client
            .list_federation_relationships(pb::ListFederationRelationshipsRequest {
                output_mask: None,
                page_size: 1000,
                page_token: token.clone(),
            })
            .await
            .map_err(|s| {
                anyhow::anyhow!("error listing federation relationship: {}", rpc_error(s))
            })?
            .into_inner();
        all.extend(resp.federation_relationships);
        if resp.next_page_token.is_empty() {
            break;
        }
        token = resp.next_page_token;
    }
    if a.common.output == OutputFormat::Json {
        let arr: Vec<Value> = all.iter().map(relationship_json).collect();
        printer::print_json(&json!({"federation_relationships": arr, "next_page_token": ""}));
        return Ok(ExitCode::SUCCESS);
    }
    let noun = if all.len() == 1 {
        "federation relationship"
    } else {
        "federation relationships"
    };
    println!("Found {} {noun}", all.len());
    for r in &all {
        println!();
        print!("{}", pretty(r));
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let Some(td) = a.trust_domain.filter(|t| !t.is_empty()) else {
        bail!("a trust domain name is required");
    };
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::trust_domain_client::TrustDomainClient::new(channel);
    let r = client
        .get_federation_relationship(pb::GetFederationRelationshipRequest {
            trust_domain: td.clone(),
            output_mask: None,
        })
        .await
        .map_err(|s| anyhow::anyhow!("error showing federation relationship: {}", rpc_error(s)))?
        .into_inner();
    if a.common.output == OutputFormat::Json {
        printer::print_json(&relationship_json(&r));
    } else {
        print!("Found a federation relationship with trust domain {td}:\n\n");
        print!("{}", pretty(&r));
    }
    Ok(ExitCode::SUCCESS)
}

async fn delete(a: IdArgs) -> anyhow::Result<ExitCode> {
    let Some(id) = a.id.filter(|t| !t.is_empty()) else {
        bail!("id is required");
    };
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::trust_domain_client::TrustDomainClient::new(channel);
    let resp = client
        .batch_delete_federation_relationship(pb::BatchDeleteFederationRelationshipRequest {
            trust_domains: vec![id],
        })
        .await
        .map_err(|s| anyhow::anyhow!("failed to delete federation relationship: {}", rpc_error(s)))?
        .into_inner();
    if a.common.output == OutputFormat::Json {
        let arr: Vec<Value> = resp
            .results
            .iter()
            .map(|r| json!({"status": printer::status_json(r.status.as_ref()), "trust_domain": r.trust_domain}))
            .collect();
        printer::print_json(&json!({"results": arr}));
    }
    let Some(result) = resp.results.first() else {
        bail!("the server returned no result");
    };
    let code = result.status.as_ref().map_or(0, |s| s.code);
    if code != 0 {
        let msg = result
            .status
            .as_ref()
            .map(|s| s.message.clone())
            .unwrap_or_default();
        bail!(
            "failed to delete federation relationship {:?}: {msg}",
            result.trust_domain
        );
    }
    if a.common.output != OutputFormat::Json {
        println!("federation relationship deleted.");
    }
    Ok(ExitCode::SUCCESS)
}

async fn refresh(a: IdArgs) -> anyhow::Result<ExitCode> {
    let Some(id) = a.id.filter(|t| !t.is_empty()) else {
        bail!("id is required");
    };
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::trust_domain_client::TrustDomainClient::new(channel);
    match client
        .refresh_bundle(pb::RefreshBundleRequest {
            trust_domain: id.clone(),
        })
        .await
    {
        Ok(_) => {}
        Err(s) if s.code() == tonic::Code::NotFound => {
            bail!("there is no federation relationship with trust domain {id:?}")
        }
        Err(s) => bail!("failed to refresh bundle: {}", rpc_error(s)),
    }
    if a.common.output == OutputFormat::Json {
        printer::print_json(&json!({}));
    } else {
        println!("Bundle refreshed");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(profile: &str, id: &str) -> RelationshipInput {
        RelationshipInput {
            trust_domain: "b.test".into(),
            bundle_endpoint_url: "https://127.0.0.1:8443".into(),
            bundle_endpoint_profile: profile.into(),
            endpoint_spiffe_id: id.into(),
            bundle_format: "pem".into(),
            ..Default::default()
        }
    }

    #[test]
    fn flags_become_a_relationship() {
        let r = to_proto(&input("https_spiffe", "spiffe://b.test/spire/server")).unwrap();
        assert_eq!(
            pretty(&r),
            "Trust domain              : b.test\nBundle endpoint URL       : https://127.0.0.1:8443\nBundle endpoint profile   : https_spiffe\nEndpoint SPIFFE ID        : spiffe://b.test/spire/server\n"
        );
        let err = to_proto(&input("https_spiffe", "")).unwrap_err();
        assert!(
            err.to_string().contains("endpoint SPIFFE ID is required"),
            "{err}"
        );
        let err = to_proto(&input("ftp", "")).unwrap_err();
        assert!(
            err.to_string().contains("unknown bundle endpoint profile"),
            "{err}"
        );
        let mut no_td = input("https_web", "");
        no_td.trust_domain.clear();
        assert_eq!(
            to_proto(&no_td).unwrap_err().to_string(),
            "trust domain is required"
        );
    }

    #[test]
    fn spiffe_bundle_in_json_data() {
        let r = to_proto(&RelationshipInput {
            bundle_raw: Some(json!({"keys": [], "spiffe_refresh_hint": 60})),
            bundle_format: "spiffe".into(),
            ..input("https_web", "")
        })
        .unwrap();
        let b = r.trust_domain_bundle.unwrap();
        assert_eq!(b.trust_domain, "b.test");
        assert_eq!(b.refresh_hint, 60);
    }
}
