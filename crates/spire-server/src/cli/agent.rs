//! `spire-server agent list|show|count|ban|evict|purge`.
//!
//! Mirrors `cmd/spire-server/cli/agent/*.go`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{connect, rpc_error};
use super::entry::{id_to_proto, parse_selector};
use super::printer::{self, OutputFormat};
use super::{CommonArgs, MatchMode, go_bool};
use crate::pb::{agent as pb, types};

#[derive(Debug, Subcommand)]
pub(crate) enum AgentCommand {
    /// Lists attested agents and their SPIFFE IDs
    List(ListArgs),
    /// Shows the details of an attested agent given its SPIFFE ID
    Show(IdArgs),
    /// Count attested agents
    Count(FilterOnly),
    /// Ban an attested agent given its SPIFFE ID
    Ban(IdArgs),
    /// Evicts an attested agent given its SPIFFE ID
    Evict(IdArgs),
    /// Purge expired agents that were attested using a non-TOFU security model
    Purge(PurgeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct FilterArgs {
    /// A colon-delimited type:value selector. Can be used more than once
    #[arg(long = "selector")]
    selector: Vec<String>,
    /// The match mode used when filtering by selectors
    #[arg(long = "matchSelectorsOn", value_enum, default_value = "superset")]
    match_selectors_on: MatchMode,
    /// Filter by attestation type, like join_token or x509pop
    #[arg(long = "attestationType")]
    attestation_type: Option<String>,
    /// Filter based on string received, 'true': agents that can reattest, 'false': agents that can't reattest
    #[arg(long = "canReattest", value_parser = go_bool)]
    can_reattest: Option<bool>,
    /// Filter based on string received, 'true': banned agents, 'false': not banned agents
    #[arg(long = "banned", value_parser = go_bool)]
    banned: Option<bool>,
    /// Filter by expiration time (format: "2006-01-02 15:04:05 -0700 -07")
    #[arg(long = "expiresBefore")]
    expires_before: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
pub(crate) struct FilterOnly {
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    /// The SPIFFE ID of the agent
    #[arg(long = "spiffeID")]
    spiffe_id: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PurgeArgs {
    /// Amount of time that has passed since the agent's SVID has expired
    #[arg(long = "expiredFor", default_value = "720h")]
    expired_for: String,
    /// Indicates that the command will not perform any action, but will print the agents that would be purged
    #[arg(long = "dryRun", action = clap::ArgAction::SetTrue)]
    dry_run: bool,
    #[command(flatten)]
    common: CommonArgs,
}

pub(crate) async fn run(cmd: AgentCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        AgentCommand::List(a) => list(a).await,
        AgentCommand::Show(a) => show(a).await,
        AgentCommand::Count(a) => count(a).await,
        AgentCommand::Ban(a) => ban(a).await,
        AgentCommand::Evict(a) => evict(a).await,
        AgentCommand::Purge(a) => purge(a).await,
    }
}

fn list_filter(f: &FilterArgs) -> anyhow::Result<pb::list_agents_request::Filter> {
    let by_selector_match = if f.selector.is_empty() {
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
    Ok(pb::list_agents_request::Filter {
        by_attestation_type: f.attestation_type.clone().unwrap_or_default(),
        by_selector_match,
        by_banned: f.banned,
        by_can_reattest: f.can_reattest,
        by_expires_before: f.expires_before.clone().unwrap_or_default(),
    })
}

async fn list_all(
    client: &mut pb::agent_client::AgentClient<tonic::transport::Channel>,
    filter: pb::list_agents_request::Filter,
) -> anyhow::Result<Vec<types::Agent>> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let resp = client
            .list_agents(pb::ListAgentsRequest {
                filter: Some(filter.clone()),
                output_mask: None,
                page_size: 1000,
                page_token: token.clone(),
            })
            .await
            .map_err(rpc_error)?
            .into_inner();
        all.extend(resp.agents);
        if resp.next_page_token.is_empty() {
            return Ok(all);
        }
        token = resp.next_page_token;
    }
}

async fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let filter = list_filter(&a.filter)?;
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::agent_client::AgentClient::new(channel);
    let agents = list_all(&mut client, filter).await?;
    if a.common.output == OutputFormat::Json {
        let arr: Vec<_> = agents.iter().map(printer::agent_json).collect();
        printer::print_json(&json!({"agents": arr, "next_page_token": ""}));
    } else if agents.is_empty() {
        println!("No attested agents found");
    } else {
        let n = agents.len();
        println!(
            "Found {n} attested agent{}:\n",
            if n == 1 { "" } else { "s" }
        );
        for ag in &agents {
            print!("{}", printer::agent_pretty(ag));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn required_id(id: &Option<String>) -> anyhow::Result<types::Spiffeid> {
    let Some(id) = id else {
        bail!("a SPIFFE ID is required: set -spiffeID");
    };
    id_to_proto(id).context("invalid value for -spiffeID")
}

async fn show(a: IdArgs) -> anyhow::Result<ExitCode> {
    let id = required_id(&a.spiffe_id)?;
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::agent_client::AgentClient::new(channel);
    let agent = client
        .get_agent(pb::GetAgentRequest {
            id: Some(id),
            output_mask: None,
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    if a.common.output == OutputFormat::Json {
        printer::print_json(&printer::agent_json(&agent));
    } else {
        println!("Found an attested agent given its SPIFFE ID\n");
        print!("{}", printer::agent_pretty(&agent));
    }
    Ok(ExitCode::SUCCESS)
}

async fn count(a: FilterOnly) -> anyhow::Result<ExitCode> {
    let f = list_filter(&a.filter)?;
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::agent_client::AgentClient::new(channel);
    let resp = client
        .count_agents(pb::CountAgentsRequest {
            filter: Some(pb::count_agents_request::Filter {
                by_attestation_type: f.by_attestation_type,
                by_selector_match: f.by_selector_match,
                by_banned: f.by_banned,
                by_can_reattest: f.by_can_reattest,
                by_expires_before: f.by_expires_before,
            }),
        })
        .await
        .map_err(rpc_error)?
        .into_inner();
    if a.common.output == OutputFormat::Json {
        printer::print_json(&json!({"count": resp.count}));
    } else if resp.count == 1 {
        println!("1 attested agent");
    } else {
        println!("{} attested agents", resp.count);
    }
    Ok(ExitCode::SUCCESS)
}

async fn ban(a: IdArgs) -> anyhow::Result<ExitCode> {
    let id = required_id(&a.spiffe_id)?;
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::agent_client::AgentClient::new(channel);
    client
        .ban_agent(pb::BanAgentRequest { id: Some(id) })
        .await
        .map_err(rpc_error)?;
    if a.common.output == OutputFormat::Json {
        printer::print_json(&json!({}));
    } else {
        println!("Agent banned successfully");
    }
    Ok(ExitCode::SUCCESS)
}

async fn evict(a: IdArgs) -> anyhow::Result<ExitCode> {
    let id = required_id(&a.spiffe_id)?;
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::agent_client::AgentClient::new(channel);
    client
        .delete_agent(pb::DeleteAgentRequest { id: Some(id) })
        .await
        .map_err(rpc_error)?;
    if a.common.output == OutputFormat::Json {
        printer::print_json(&json!({}));
    } else {
        println!("Agent evicted successfully");
    }
    Ok(ExitCode::SUCCESS)
}

async fn purge(a: PurgeArgs) -> anyhow::Result<ExitCode> {
    let expired_for = parse_go_duration(&a.expired_for)
        .with_context(|| format!("invalid value {:?} for -expiredFor", a.expired_for))?;
    let dry_run = a.dry_run;
    let channel = connect(&a.common.socket_path).await?;
    let mut client = pb::agent_client::AgentClient::new(channel);
    let agents = list_all(&mut client, pb::list_agents_request::Filter::default()).await?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let cutoff = now - i64::try_from(expired_for.as_secs()).unwrap_or(i64::MAX);
    let expired: Vec<_> = agents
        .into_iter()
        .filter(|ag| ag.can_reattest && ag.x509svid_expires_at < cutoff)
        .collect();
    let mut results = Vec::new();
    for ag in &expired {
        let id = printer::id_string(ag.id.as_ref());
        if dry_run {
            results.push((id, None));
            continue;
        }
        let r = client
            .delete_agent(pb::DeleteAgentRequest { id: ag.id.clone() })
            .await;
        results.push((id, r.err().map(|s| s.message().to_string())));
    }
    if a.common.output == OutputFormat::Json {
        let arr: Vec<_> = results
            .iter()
            .map(|(id, err)| json!({"agent_id": id, "deleted": !dry_run && err.is_none(), "error": err.clone().unwrap_or_default()}))
            .collect();
        printer::print_json(&json!({"expired_agents": arr}));
    } else if expired.is_empty() {
        println!("No agents to purge.");
    } else if dry_run {
        println!("Found {} expired agents\n", expired.len());
        for (id, _) in &results {
            println!("\tSPIFFE ID : {id}");
        }
    } else {
        println!("Found {} expired agents\n", expired.len());
        for (id, err) in &results {
            match err {
                None => println!("Agent purged: {id}"),
                Some(e) => println!("Agent failed to purge: {id}: {e}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses a Go duration such as `720h`, `1h30m`, `90s`.
pub(crate) fn parse_go_duration(s: &str) -> anyhow::Result<Duration> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        bail!("empty duration");
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            bail!("missing number in duration {s:?}");
        }
        let n: f64 = rest[..num_len].parse().context("bad number")?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => bail!("unknown unit {other:?} in duration {s:?}"),
        };
        rest = &rest[unit_len..];
        total += n * mult;
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(
            parse_go_duration("720h").unwrap(),
            Duration::from_secs(720 * 3600)
        );
        assert_eq!(
            parse_go_duration("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert!(parse_go_duration("5 days").is_err());
    }
}
