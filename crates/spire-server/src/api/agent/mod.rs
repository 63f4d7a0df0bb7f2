//! `spire.api.server.agent.v1.Agent`: attested agent management and join tokens (admin/local),
//! plus the agent-facing RPCs ([`attest`], [`renew`], [`post_status`]).
//!
//! Mirrors `pkg/server/api/agent/v1/service.go`.

pub mod attest;
pub mod post_status;
pub mod renew;

use std::sync::Arc;

use spire_datastore as ds;
use tonic::{Request, Response, Status};

use super::convert;
use super::{Ctx, Policy, pagination};
use crate::pb::agent as pb;
use crate::pb::types;
use crate::server::ServerState;

/// The Agent service.
#[derive(Debug, Clone)]
pub struct AgentService {
    state: Arc<ServerState>,
}

impl AgentService {
    /// A service over `state`.
    pub fn new(state: Arc<ServerState>) -> Self {
        AgentService { state }
    }
}

/// Errors of this module, mapped to gRPC statuses in one place.
#[derive(Debug, thiserror::Error)]
enum AgentError {
    #[error("{0}")]
    Invalid(String),
    #[error("agent not found")]
    NotFound,
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{what}")]
    DataStore {
        what: &'static str,
        #[source]
        source: ds::Error,
    },
}

impl AgentError {
    fn ds(what: &'static str) -> impl FnOnce(ds::Error) -> AgentError {
        move |source| match source {
            ds::Error::NotFound { .. } => AgentError::NotFound,
            ds::Error::AlreadyExists { .. } => {
                AgentError::AlreadyExists(format!("{what}: {source}"))
            }
            ds::Error::EntryAlreadyExists(_) => {
                AgentError::AlreadyExists(format!("{what}: similar entry already exists"))
            }
            source => AgentError::DataStore { what, source },
        }
    }
}

impl From<AgentError> for Status {
    fn from(e: AgentError) -> Status {
        match &e {
            AgentError::Invalid(m) => Status::invalid_argument(m.clone()),
            AgentError::NotFound => Status::not_found("agent not found"),
            AgentError::AlreadyExists(m) => Status::already_exists(m.clone()),
            AgentError::DataStore { what, source } => crate::api::datastore_status(what, source),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn node_filter(
    by_attestation_type: &str,
    by_selector_match: Option<&types::SelectorMatch>,
    by_banned: Option<bool>,
    by_can_reattest: Option<bool>,
    by_expires_before: &str,
) -> Result<ds::NodeFilter, AgentError> {
    let mut f = ds::NodeFilter::default();
    if !by_attestation_type.is_empty() {
        f.by_attestation_type = Some(by_attestation_type.to_string());
    }
    if let Some(m) = by_selector_match {
        let selectors = convert::selectors_from_proto(&m.selectors)
            .map_err(|e| AgentError::Invalid(format!("failed to parse selectors: {e}")))?;
        let mode = convert::match_mode(m.r#match)
            .map_err(|e| AgentError::Invalid(format!("failed to parse selectors: {e}")))?;
        f.by_selectors = Some(ds::SelectorFilter { selectors, mode });
    }
    f.by_banned = by_banned;
    f.by_can_reattest = by_can_reattest;
    if !by_expires_before.is_empty() {
        f.by_expires_before = Some(parse_go_time(by_expires_before).ok_or_else(|| {
            AgentError::Invalid(format!(
                "failed to parse expires before {by_expires_before:?}: expected the format \"2006-01-02 15:04:05 -0700 -07\""
            ))
        })?);
    }
    Ok(f)
}

/// Parses Go's `time.Time.String()` layout (`2006-01-02 15:04:05 -0700 MST`, zone name
/// optional) into Unix seconds.
fn parse_go_time(s: &str) -> Option<i64> {
    let mut parts = s.split_whitespace();
    let date = parts.next()?;
    let clock = parts.next()?;
    let offset = parts.next().unwrap_or("+0000");
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second] [offset_hour sign:mandatory][offset_minute]"
    );
    let text = format!("{date} {clock} {offset}");
    time::OffsetDateTime::parse(&text, fmt)
        .ok()
        .map(|t| t.unix_timestamp())
}

fn agent_id(
    state: &ServerState,
    id: Option<&types::Spiffeid>,
) -> Result<spire_spiffe::SpiffeId, AgentError> {
    let id = convert::member_id_from_proto(id, &state.trust_domain)
        .map_err(|m| AgentError::Invalid(format!("invalid agent ID: {m}")))?;
    if !id.path().starts_with("/spire/agent/") {
        return Err(AgentError::Invalid(format!(
            "invalid agent ID: \"{id}\" is not an agent in trust domain \"{}\"; path is not in the agent namespace",
            state.trust_domain
        )));
    }
    Ok(id)
}

#[tonic::async_trait]
impl pb::agent_server::Agent for AgentService {
    async fn count_agents(
        &self,
        request: Request<pb::CountAgentsRequest>,
    ) -> Result<Response<pb::CountAgentsResponse>, Status> {
        let ctx = Ctx::new(&self.state, &request, "CountAgents", Policy::AdminOrLocal)?;
        let req = request.into_inner();
        let result = async {
            let f = match &req.filter {
                Some(f) => node_filter(
                    &f.by_attestation_type,
                    f.by_selector_match.as_ref(),
                    f.by_banned,
                    f.by_can_reattest,
                    &f.by_expires_before,
                )?,
                None => ds::NodeFilter::default(),
            };
            let n = ctx
                .state
                .datastore
                .count_attested_nodes(&f)
                .await
                .map_err(AgentError::ds("failed to count agents"))?;
            Ok::<_, AgentError>(pb::CountAgentsResponse {
                count: i32::try_from(n).unwrap_or(i32::MAX),
            })
        }
        .await;
        ctx.respond(result, &[])
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let ctx = Ctx::new(&self.state, &request, "ListAgents", Policy::AdminOrLocal)?;
        let req = request.into_inner();
        let result = async {
            let page = pagination(req.page_size, &req.page_token).map_err(AgentError::Invalid)?;
            let f = match &req.filter {
                Some(f) => node_filter(
                    &f.by_attestation_type,
                    f.by_selector_match.as_ref(),
                    f.by_banned,
                    f.by_can_reattest,
                    &f.by_expires_before,
                )?,
                None => ds::NodeFilter::default(),
            };
            let page = ctx
                .state
                .datastore
                .list_attested_nodes(&f, &page)
                .await
                .map_err(AgentError::ds("failed to list agents"))?;
            Ok::<_, AgentError>(pb::ListAgentsResponse {
                agents: page
                    .items
                    .iter()
                    .map(|n| convert::agent_to_proto(n, req.output_mask.as_ref()))
                    .collect(),
                next_page_token: page.next_page_token,
            })
        }
        .await;
        ctx.respond(result, &[])
    }

    async fn get_agent(
        &self,
        request: Request<pb::GetAgentRequest>,
    ) -> Result<Response<types::Agent>, Status> {
        let ctx = Ctx::new(&self.state, &request, "GetAgent", Policy::AdminOrLocal)?;
        let req = request.into_inner();
        let result = async {
            let id = agent_id(&ctx.state, req.id.as_ref())?;
            let node = ctx
                .state
                .datastore
                .get_attested_node(&id)
                .await
                .map_err(AgentError::ds("failed to fetch agent"))?
                .ok_or(AgentError::NotFound)?;
            Ok::<_, AgentError>(convert::agent_to_proto(&node, req.output_mask.as_ref()))
        }
        .await;
        ctx.respond(result, &[("id", printable_id(req.id.as_ref()))])
    }

    async fn delete_agent(
        &self,
        request: Request<pb::DeleteAgentRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = Ctx::new(&self.state, &request, "DeleteAgent", Policy::AdminOrLocal)?;
        let req = request.into_inner();
        let result = async {
            let id = agent_id(&ctx.state, req.id.as_ref())?;
            ctx.state
                .datastore
                .delete_attested_node(&id)
                .await
                .map_err(AgentError::ds("failed to remove agent"))?;
            tracing::info!(spiffe_id = %id, "Agent deleted");
            Ok::<_, AgentError>(())
        }
        .await;
        ctx.respond(result, &[("id", printable_id(req.id.as_ref()))])
    }

    async fn ban_agent(
        &self,
        request: Request<pb::BanAgentRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = Ctx::new(&self.state, &request, "BanAgent", Policy::AdminOrLocal)?;
        let req = request.into_inner();
        let result = async {
            let id = agent_id(&ctx.state, req.id.as_ref())?;
            ctx.state
                .datastore
                .ban_attested_node(&id)
                .await
                .map_err(AgentError::ds("failed to ban agent"))?;
            tracing::info!(spiffe_id = %id, "Agent banned");
            Ok::<_, AgentError>(())
        }
        .await;
        ctx.respond(result, &[("id", printable_id(req.id.as_ref()))])
    }

    type AttestAgentStream = attest::AttestAgentStream;

    async fn attest_agent(
        &self,
        request: Request<tonic::Streaming<pb::AttestAgentRequest>>,
    ) -> Result<Response<Self::AttestAgentStream>, Status> {
        let ctx = Ctx::new(&self.state, &request, "AttestAgent", Policy::Any)?;
        attest::attest_agent(&ctx, request).await
    }

    async fn renew_agent(
        &self,
        request: Request<pb::RenewAgentRequest>,
    ) -> Result<Response<pb::RenewAgentResponse>, Status> {
        let ctx = Ctx::new(&self.state, &request, "RenewAgent", Policy::Agent)?;
        renew::renew_agent(&ctx, request).await
    }

    async fn create_join_token(
        &self,
        request: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<types::JoinToken>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "CreateJoinToken",
            Policy::AdminOrLocal,
        )?;
        let req = request.into_inner();
        let result = async {
            if req.ttl < 1 {
                return Err(AgentError::Invalid(
                    "ttl is required, you must provide one".into(),
                ));
            }
            let alias = match req.agent_id.as_ref() {
                Some(id) => Some(
                    convert::member_id_from_proto(Some(id), &ctx.state.trust_domain)
                        .map_err(|m| AgentError::Invalid(format!("invalid agent ID: {m}")))?,
                ),
                None => None,
            };
            let token = if req.token.is_empty() {
                uuid::Uuid::new_v4().to_string()
            } else {
                if req.token.len() > 512 || !req.token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(AgentError::Invalid(
                        "invalid token: at most 512 printable ASCII characters".into(),
                    ));
                }
                req.token.clone()
            };
            let expires_at = ctx.state.clock.now_unix() + i64::from(req.ttl);
            ctx.state
                .datastore
                .create_join_token(&token, expires_at)
                .await
                .map_err(AgentError::ds("failed to create token"))?;
            if let Some(alias) = alias {
                let parent = ctx
                    .state
                    .trust_domain
                    .spiffe_id(&format!("/spire/agent/join_token/{token}"))
                    .map_err(|e| AgentError::Invalid(format!("invalid token: {e}")))?;
                let mut selectors = spire_spiffe::Selectors::new();
                let sel = spire_spiffe::Selector::new("spiffe_id", &parent)
                    .map_err(|e| AgentError::Invalid(format!("invalid token: {e}")))?;
                selectors.insert(sel);
                let entry = ds::Entry::new(alias, parent, selectors);
                ctx.state
                    .datastore
                    .create_entry(&entry)
                    .await
                    .map_err(AgentError::ds("failed to create token registration entry"))?;
            }
            Ok(types::JoinToken {
                value: token,
                expires_at,
            })
        }
        .await;
        ctx.respond(result, &[("ttl", req.ttl.to_string())])
    }

    async fn post_status(
        &self,
        request: Request<pb::PostStatusRequest>,
    ) -> Result<Response<pb::PostStatusResponse>, Status> {
        let ctx = Ctx::new(&self.state, &request, "PostStatus", Policy::Agent)?;
        post_status::post_status(&ctx, request).await
    }
}

fn printable_id(id: Option<&types::Spiffeid>) -> String {
    id.map(|i| format!("spiffe://{}{}", i.trust_domain, i.path))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_time_layout() {
        assert_eq!(parse_go_time("1970-01-01 00:01:00 +0000 UTC"), Some(60));
        assert_eq!(parse_go_time("1970-01-01 01:00:00 +0100 CET"), Some(0));
        assert_eq!(parse_go_time("yesterday"), None);
    }
}
