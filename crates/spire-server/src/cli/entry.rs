//! `spire-server entry create|update|show|count|delete`.
//!
//! Mirrors `cmd/spire-server/cli/entry/*.go`.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::json;

use super::client::{connect, rpc_error};
use super::printer::{self, OutputFormat};
use super::{CommonArgs, MatchMode};
use crate::pb::{entry as pb, types};

#[derive(Debug, Subcommand)]
pub(crate) enum EntryCommand {
    /// Creates registration entries
    Create(CreateArgs),
    /// Updates registration entries
    Update(UpdateArgs),
    /// Displays configured registration entries
    Show(ShowArgs),
    /// Count registration entries
    Count(CountArgs),
    /// Deletes registration entries
    Delete(DeleteArgs),
}

/// Fields shared by `entry create` and `entry update`.
#[derive(Debug, Args)]
pub(crate) struct EntryFields {
    /// The SPIFFE ID that this record represents
    #[arg(long = "spiffeID")]
    pub(crate) spiffe_id: Option<String>,
    /// The SPIFFE ID of this record's parent
    #[arg(long = "parentID")]
    pub(crate) parent_id: Option<String>,
    /// A colon-delimited type:value selector. Can be used more than once
    #[arg(long = "selector")]
    pub(crate) selector: Vec<String>,
    /// The lifetime, in seconds, for x509-SVIDs issued based on this registration entry
    #[arg(long = "x509SVIDTTL", allow_negative_numbers = true)]
    pub(crate) x509_svid_ttl: Option<i32>,
    /// The lifetime, in seconds, for JWT-SVIDs issued based on this registration entry
    #[arg(long = "jwtSVIDTTL", allow_negative_numbers = true)]
    pub(crate) jwt_svid_ttl: Option<i32>,
    /// A trust domain to federate with. Can be used more than once
    #[arg(long = "federatesWith")]
    pub(crate) federates_with: Vec<String>,
    /// If set, the SPIFFE ID in this entry will be granted access to the SPIRE Server's APIs
    #[arg(long = "admin", action = clap::ArgAction::SetTrue)]
    pub(crate) admin: bool,
    /// A boolean value that, when set, indicates that the entry describes a downstream SPIRE server
    #[arg(long = "downstream", action = clap::ArgAction::SetTrue)]
    pub(crate) downstream: bool,
    /// An expiry, from epoch in seconds, for the resulting registration entry to be pruned
    #[arg(long = "entryExpiry", allow_negative_numbers = true)]
    pub(crate) entry_expiry: Option<i64>,
    /// A DNS name that will be included in SVIDs issued based on this entry. Can be used more than once
    #[arg(long = "dns")]
    pub(crate) dns: Vec<String>,
    /// A boolean value that, when set, indicates that the resulting issued SVID from this entry must be stored through an SVIDStore plugin
    #[arg(long = "storeSVID", action = clap::ArgAction::SetTrue)]
    pub(crate) store_svid: bool,
    /// The entry hint, used to disambiguate entries with the same SPIFFE ID
    #[arg(long = "hint")]
    pub(crate) hint: Option<String>,
    /// Do not pre-fetch X509-SVIDs for this entry
    #[arg(long = "disableX509SVIDPrefetch", action = clap::ArgAction::SetTrue)]
    pub(crate) disable_x509_svid_prefetch: bool,
    /// Include a jti claim in JWT-SVIDs issued for this entry
    #[arg(long = "jwtSVIDIncludeJTI", action = clap::ArgAction::SetTrue)]
    pub(crate) jwt_svid_include_jti: bool,
    /// Path to a file containing registration JSON (optional). If set to '-', read the JSON from stdin.
    #[arg(long = "data")]
    pub(crate) data: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    #[command(flatten)]
    pub(crate) fields: EntryFields,
    /// If set, this entry will be applied to matching nodes rather than workloads
    #[arg(long = "node", action = clap::ArgAction::SetTrue)]
    pub(crate) node: bool,
    /// A custom ID for this registration entry (optional). If not set, a new entry ID will be generated
    #[arg(long = "entryID")]
    pub(crate) entry_id: Option<String>,
    #[command(flatten)]
    pub(crate) common: CommonArgs,
}

#[derive(Debug, Args)]
pub(crate) struct UpdateArgs {
    #[command(flatten)]
    pub(crate) fields: EntryFields,
    /// The Registration Entry ID of the record to update
    #[arg(long = "entryID")]
    pub(crate) entry_id: Option<String>,
    #[command(flatten)]
    pub(crate) common: CommonArgs,
}

/// Filters shared by `entry show` and `entry count`.
#[derive(Debug, Args)]
pub(crate) struct FilterArgs {
    /// The SPIFFE ID of the records to show
    #[arg(long = "spiffeID")]
    spiffe_id: Option<String>,
    /// The Parent ID of the records to show
    #[arg(long = "parentID")]
    parent_id: Option<String>,
    /// A colon-delimited type:value selector. Can be used more than once
    #[arg(long = "selector")]
    selector: Vec<String>,
    /// The match mode used when filtering by selectors
    #[arg(long = "matchSelectorsOn", value_enum, default_value = "superset")]
    match_selectors_on: MatchMode,
    /// SPIFFE ID of a trust domain an entry is federate with. Can be used more than once
    #[arg(long = "federatesWith")]
    federates_with: Vec<String>,
    /// The match mode used when filtering by federates with
    #[arg(long = "matchFederatesWithOn", value_enum, default_value = "superset")]
    match_federates_with_on: MatchMode,
    /// The Hint of the records to show (optional)
    #[arg(long = "hint")]
    hint: Option<String>,
    /// Whether or not to show entries which are downstream
    #[arg(long = "downstream", action = clap::ArgAction::SetTrue)]
    downstream: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The Entry ID of the records to show
    #[arg(long = "entryID")]
    entry_id: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
pub(crate) struct CountArgs {
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// The Registration Entry ID of the record to delete
    #[arg(long = "entryID")]
    entry_id: Option<String>,
    /// Path to a file containing a JSON structure for batch deletion (optional). If set to '-', read from stdin.
    #[arg(long = "file")]
    file: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

pub(crate) async fn run(cmd: EntryCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        EntryCommand::Create(a) => create(a).await,
        EntryCommand::Update(a) => update(a).await,
        EntryCommand::Show(a) => show(a).await,
        EntryCommand::Count(a) => count(a).await,
        EntryCommand::Delete(a) => delete(a).await,
    }
}

// === create / update ===

async fn create(a: CreateArgs) -> anyhow::Result<ExitCode> {
    let entries = match &a.fields.data {
        Some(path) => read_entries_json(path)?,
        None => {
            let mut e = entry_from_flags(&a.fields, a.node, true)?;
            if let Some(id) = &a.entry_id {
                e.id = id.clone();
            }
            vec![e]
        }
    };
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::entry_client::EntryClient::new(channel);
    let resp = client
        .batch_create_entry(pb::BatchCreateEntryRequest {
            entries: entries.clone(),
            output_mask: None,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    print_batch(
        &resp
            .results
            .iter()
            .map(|r| (r.status.clone(), r.entry.clone()))
            .collect::<Vec<_>>(),
        &entries,
        a.common.output,
        "create",
    )
}

async fn update(a: UpdateArgs) -> anyhow::Result<ExitCode> {
    let entries = match &a.fields.data {
        Some(path) => read_entries_json(path)?,
        None => {
            let Some(id) = a.entry_id.clone() else {
                bail!("entry ID is required: set -entryID");
            };
            let mut e = entry_from_flags(&a.fields, false, false)?;
            e.id = id;
            vec![e]
        }
    };
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::entry_client::EntryClient::new(channel);
    let resp = client
        .batch_update_entry(pb::BatchUpdateEntryRequest {
            entries: entries.clone(),
            input_mask: None,
            output_mask: None,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    print_batch(
        &resp
            .results
            .iter()
            .map(|r| (r.status.clone(), r.entry.clone()))
            .collect::<Vec<_>>(),
        &entries,
        a.common.output,
        "update",
    )
}

fn print_batch(
    results: &[(Option<types::Status>, Option<types::Entry>)],
    requested: &[types::Entry],
    output: OutputFormat,
    verb: &str,
) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    if output == OutputFormat::Json {
        let arr: Vec<_> = results
            .iter()
            .map(|(st, e)| {
                json!({
                    "status": printer::status_json(st.as_ref()),
                    "entry": e.as_ref().map(printer::entry_json),
                })
            })
            .collect();
        failed = results
            .iter()
            .any(|(st, _)| st.as_ref().is_some_and(|s| s.code != 0));
        printer::print_json(&json!({ "results": arr }));
    } else {
        for (i, (st, e)) in results.iter().enumerate() {
            match st {
                Some(s) if s.code != 0 => {
                    failed = true;
                    eprintln!(
                        "Failed to {verb} the following entry (code: {}, msg: \"{}\"):",
                        printer::code_name(s.code),
                        s.message
                    );
                    if let Some(shown) = e.as_ref().or(requested.get(i)) {
                        eprint!("{}", printer::entry_pretty(shown));
                    }
                }
                _ => {
                    if let Some(e) = e {
                        print!("{}", printer::entry_pretty(e));
                    }
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Builds the wire entry from flags, validating what the CLI validates in SPIRE.
fn entry_from_flags(f: &EntryFields, node: bool, create: bool) -> anyhow::Result<types::Entry> {
    let Some(spiffe_id) = &f.spiffe_id else {
        bail!("a SPIFFE ID is required: set -spiffeID");
    };
    if f.selector.is_empty() {
        bail!("at least one selector is required: set -selector type:value");
    }
    if node && f.parent_id.is_some() {
        bail!("-node and -parentID cannot be used together");
    }
    if !node && f.parent_id.is_none() {
        bail!("a parent ID is required if the node flag is not set: set -parentID");
    }
    if let Some(ttl) = f.x509_svid_ttl
        && ttl < 0
    {
        bail!("invalid value {ttl} for -x509SVIDTTL: a positive x509-SVID TTL is required");
    }
    if let Some(ttl) = f.jwt_svid_ttl
        && ttl < 0
    {
        bail!("invalid value {ttl} for -jwtSVIDTTL: a positive JWT-SVID TTL is required");
    }
    let spiffe = id_to_proto(spiffe_id).context("invalid value for -spiffeID")?;
    let parent = if node {
        types::Spiffeid {
            trust_domain: spiffe.trust_domain.clone(),
            path: "/spire/server".into(),
        }
    } else {
        let p = f.parent_id.as_deref().unwrap_or_default();
        id_to_proto(p).context("invalid value for -parentID")?
    };
    let mut selectors = Vec::new();
    for s in &f.selector {
        selectors.push(parse_selector(s)?);
    }
    let attrs = Some(types::entry::AdditionalAttributes {
        disable_x509_svid_prefetch: f.disable_x509_svid_prefetch,
        jwt_svid_include_jti: f.jwt_svid_include_jti,
    });
    let _ = create;
    Ok(types::Entry {
        id: String::new(),
        spiffe_id: Some(spiffe),
        parent_id: Some(parent),
        selectors,
        x509_svid_ttl: f.x509_svid_ttl.unwrap_or(0),
        jwt_svid_ttl: f.jwt_svid_ttl.unwrap_or(0),
        federates_with: f.federates_with.clone(),
        admin: f.admin,
        downstream: f.downstream,
        expires_at: f.entry_expiry.unwrap_or(0),
        dns_names: f.dns.clone(),
        revision_number: 0,
        store_svid: f.store_svid,
        hint: f.hint.clone().unwrap_or_default(),
        created_at: 0,
        additional_attributes: attrs,
    })
}

/// Splits a SPIFFE ID string into the wire form, rejecting anything that is not `spiffe://td/path`.
pub(crate) fn id_to_proto(s: &str) -> anyhow::Result<types::Spiffeid> {
    let id: spire_spiffe::SpiffeId = s
        .parse()
        .map_err(|e| anyhow::anyhow!("{s:?} is not a valid SPIFFE ID: {e}"))?;
    Ok(types::Spiffeid {
        trust_domain: id.trust_domain().as_str().to_string(),
        path: id.path().to_string(),
    })
}

/// Parses `type:value`; everything after the first `:` is the value.
pub(crate) fn parse_selector(s: &str) -> anyhow::Result<types::Selector> {
    match s.split_once(':') {
        Some((t, v)) if !t.is_empty() && !v.is_empty() => Ok(types::Selector {
            r#type: t.to_string(),
            value: v.to_string(),
        }),
        _ => bail!("selector \"{s}\" must be formatted as type:value"),
    }
}

/// SPIRE's `-data` JSON: `{"entries": [{"spiffe_id": "spiffe://…", "parent_id": …, …}]}`.
#[derive(Debug, Deserialize)]
struct EntriesFile {
    #[serde(default)]
    entries: Vec<EntryJson>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryJson {
    #[serde(default)]
    entry_id: String,
    #[serde(default)]
    spiffe_id: String,
    #[serde(default)]
    parent_id: String,
    #[serde(default)]
    selectors: Vec<SelectorJson>,
    #[serde(default, alias = "ttl")]
    x509_svid_ttl: i32,
    #[serde(default)]
    jwt_svid_ttl: i32,
    #[serde(default)]
    federates_with: Vec<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    downstream: bool,
    #[serde(default)]
    entry_expiry: i64,
    #[serde(default)]
    dns_names: Vec<String>,
    #[serde(default)]
    revision_number: i64,
    #[serde(default)]
    store_svid: bool,
    #[serde(default)]
    hint: String,
    #[serde(default)]
    created_at: i64,
}

#[derive(Debug, Deserialize)]
struct SelectorJson {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

fn read_input(path: &str) -> anyhow::Result<String> {
    if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read from stdin")?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))
    }
}

fn read_entries_json(path: &str) -> anyhow::Result<Vec<types::Entry>> {
    let text = read_input(path)?;
    parse_entries_json(&text).with_context(|| format!("invalid registration JSON in {path}"))
}

fn parse_entries_json(text: &str) -> anyhow::Result<Vec<types::Entry>> {
    let file: EntriesFile = serde_json::from_str(text)?;
    let mut out = Vec::with_capacity(file.entries.len());
    for (i, e) in file.entries.into_iter().enumerate() {
        let spiffe =
            id_to_proto(&e.spiffe_id).with_context(|| format!("entry {i}: invalid spiffe_id"))?;
        let parent =
            id_to_proto(&e.parent_id).with_context(|| format!("entry {i}: invalid parent_id"))?;
        out.push(types::Entry {
            id: e.entry_id,
            spiffe_id: Some(spiffe),
            parent_id: Some(parent),
            selectors: e
                .selectors
                .into_iter()
                .map(|s| types::Selector {
                    r#type: s.kind,
                    value: s.value,
                })
                .collect(),
            x509_svid_ttl: e.x509_svid_ttl,
            jwt_svid_ttl: e.jwt_svid_ttl,
            federates_with: e.federates_with,
            admin: e.admin,
            downstream: e.downstream,
            expires_at: e.entry_expiry,
            dns_names: e.dns_names,
            revision_number: e.revision_number,
            store_svid: e.store_svid,
            hint: e.hint,
            created_at: e.created_at,
            additional_attributes: None,
        });
    }
    Ok(out)
}

// === show / count ===

/// The wire filters of `-spiffeID`, `-parentID`, `-selector` and `-federatesWith`.
type FilterParts = (
    Option<types::Spiffeid>,
    Option<types::Spiffeid>,
    Option<types::SelectorMatch>,
    Option<types::FederatesWithMatch>,
);

fn filter_parts(f: &FilterArgs) -> anyhow::Result<FilterParts> {
    let by_spiffe = match &f.spiffe_id {
        Some(s) => Some(id_to_proto(s).context("invalid value for -spiffeID")?),
        None => None,
    };
    let by_parent = match &f.parent_id {
        Some(s) => Some(id_to_proto(s).context("invalid value for -parentID")?),
        None => None,
    };
    let by_selectors = if f.selector.is_empty() {
        None
    } else {
        let mut sels = Vec::new();
        for s in &f.selector {
            sels.push(parse_selector(s)?);
        }
        Some(types::SelectorMatch {
            selectors: sels,
            r#match: f.match_selectors_on.wire(),
        })
    };
    let by_fed = if f.federates_with.is_empty() {
        None
    } else {
        Some(types::FederatesWithMatch {
            trust_domains: f.federates_with.clone(),
            r#match: f.match_federates_with_on.wire(),
        })
    };
    Ok((by_spiffe, by_parent, by_selectors, by_fed))
}

async fn show(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::entry_client::EntryClient::new(channel);
    let entries = if let Some(id) = &a.entry_id {
        let e = client
            .get_entry(pb::GetEntryRequest {
                id: id.clone(),
                output_mask: None,
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        vec![e]
    } else {
        let (by_spiffe_id, by_parent_id, by_selectors, by_federates_with) =
            filter_parts(&a.filter)?;
        let filter = pb::list_entries_request::Filter {
            by_spiffe_id,
            by_parent_id,
            by_selectors,
            by_federates_with,
            by_hint: a.filter.hint.clone(),
            by_downstream: a.filter.downstream.then_some(true),
        };
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let resp = client
                .list_entries(pb::ListEntriesRequest {
                    filter: Some(filter.clone()),
                    output_mask: None,
                    page_size: 1000,
                    page_token: token.clone(),
                })
                .await
                .map_err(rpc_error)?
                .into_inner();
            all.extend(resp.entries);
            if resp.next_page_token.is_empty() {
                break;
            }
            token = resp.next_page_token;
        }
        all
    };
    if a.common.output == OutputFormat::Json {
        let arr: Vec<_> = entries.iter().map(printer::entry_json).collect();
        printer::print_json(&json!({ "entries": arr, "next_page_token": "" }));
    } else {
        let n = entries.len();
        println!("Found {n} {}", if n == 1 { "entry" } else { "entries" });
        for e in &entries {
            print!("{}", printer::entry_pretty(e));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn count(a: CountArgs) -> anyhow::Result<ExitCode> {
    let (by_spiffe_id, by_parent_id, by_selectors, by_federates_with) = filter_parts(&a.filter)?;
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::entry_client::EntryClient::new(channel);
    let resp = client
        .count_entries(pb::CountEntriesRequest {
            filter: Some(pb::count_entries_request::Filter {
                by_spiffe_id,
                by_parent_id,
                by_selectors,
                by_federates_with,
                by_hint: a.filter.hint.clone(),
                by_downstream: a.filter.downstream.then_some(true),
            }),
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    if a.common.output == OutputFormat::Json {
        printer::print_json(&json!({ "count": resp.count }));
    } else if resp.count == 1 {
        println!("1 registration entry");
    } else {
        println!("{} registration entries", resp.count);
    }
    Ok(ExitCode::SUCCESS)
}

// === delete ===

#[derive(Debug, Deserialize)]
struct DeleteFile {
    #[serde(default)]
    ids: Vec<String>,
}

async fn delete(a: DeleteArgs) -> anyhow::Result<ExitCode> {
    let ids = match (&a.entry_id, &a.file) {
        (Some(_), Some(_)) => bail!("-entryID and -file cannot be used together"),
        (Some(id), None) => vec![id.clone()],
        (None, Some(path)) => {
            let text = read_input(path)?;
            let f: DeleteFile = serde_json::from_str(&text)
                .with_context(|| format!("invalid JSON in {path}: expected {{\"ids\": [...]}}"))?;
            f.ids
        }
        (None, None) => bail!("an entry ID is required: set -entryID or -file"),
    };
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::entry_client::EntryClient::new(channel);
    let resp = client
        .batch_delete_entry(pb::BatchDeleteEntryRequest { ids })
        .await
        .map_err(rpc_error)?
        .into_inner();
    let mut failed = false;
    if a.common.output == OutputFormat::Json {
        let arr: Vec<_> = resp
            .results
            .iter()
            .map(|r| json!({"status": printer::status_json(r.status.as_ref()), "id": r.id}))
            .collect();
        failed = resp
            .results
            .iter()
            .any(|r| r.status.as_ref().is_some_and(|s| s.code != 0));
        printer::print_json(&json!({ "results": arr }));
    } else {
        for r in &resp.results {
            match &r.status {
                Some(s) if s.code != 0 => {
                    failed = true;
                    eprintln!(
                        "Failed to delete entry with ID {} (code: {}, msg: \"{}\")",
                        r.id,
                        printer::code_name(s.code),
                        s.message
                    );
                }
                _ => println!("Deleted entry with ID: {}", r.id),
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_needs_a_colon() {
        let err = parse_selector("unix").unwrap_err();
        assert_eq!(
            err.to_string(),
            "selector \"unix\" must be formatted as type:value"
        );
        let s = parse_selector("k8s:ns:prod").unwrap();
        assert_eq!((s.r#type.as_str(), s.value.as_str()), ("k8s", "ns:prod"));
    }

    #[test]
    fn parses_spire_data_json() {
        let text = r#"{"entries":[{"selectors":[{"type":"unix","value":"uid:1111"}],
            "spiffe_id":"spiffe://example.org/Blog","parent_id":"spiffe://example.org/spire/agent/x",
            "x509_svid_ttl":200,"jwt_svid_ttl":30,"dns_names":["a.example"],"admin":true}]}"#;
        let got = parse_entries_json(text).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].x509_svid_ttl, 200);
        assert_eq!(got[0].spiffe_id.as_ref().unwrap().path, "/Blog");
        assert!(parse_entries_json(r#"{"entries":[{"spiffe_id":"nope"}]}"#).is_err());
    }
}
