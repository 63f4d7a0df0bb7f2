//! Agent.RenewAgent: renews the calling agent's X509-SVID.
//!
//! The caller is already authorized as an agent (`Policy::Agent`). Agents that may re-attest
//! are refused with `AGENT_MUST_REATTEST`. The new SVID's serial is stored as the node's *new*
//! serial; it becomes current the first time the agent uses it ([`crate::authz::check_agent`]).
//!
//! Mirrors `pkg/server/api/agent/v1/service.go` (`RenewAgent`).

use spire_datastore::NodeUpdate;
use spire_proto::types::permission_denied_details::Reason;
use tonic::{Request, Response, Status};

use crate::api::{Ctx, convert, rate_limit};
use crate::authz::{permission_denied, serial_and_expiry};
use crate::endpoints::tcp::tcp_context;
use crate::pb::agent as pb;
use crate::pb::types;

/// RenewAgent.
pub(crate) async fn renew_agent(
    ctx: &Ctx,
    request: Request<pb::RenewAgentRequest>,
) -> Result<Response<pb::RenewAgentResponse>, Status> {
    let tcp = tcp_context(&request)?;
    let req = request.into_inner();
    let result = async {
        rate_limit(&tcp.limits.sign, &ctx.caller, 1, "renew agent").await?;
        let id = ctx.caller_id()?.clone();
        let node = ctx
            .state
            .datastore
            .get_attested_node(&id)
            .await
            .map_err(|e| Status::internal(format!("failed to fetch agent: {e}")))?
            .ok_or_else(|| Status::not_found("agent not found"))?;
        if node.can_reattest {
            return Err(permission_denied(
                Reason::AgentMustReattest,
                "agent must reattest instead of renew".into(),
            ));
        }
        let params = req
            .params
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("params cannot be nil"))?;
        if params.csr.is_empty() {
            return Err(Status::invalid_argument("missing CSR"));
        }
        let csr = spire_crypto::csr::parse_and_verify_csr(&params.csr)
            .map_err(|e| Status::invalid_argument(format!("failed to parse CSR: {e}")))?;
        let chain = ctx
            .state
            .ca
            .sign_agent_svid(&csr.public_key, &id)
            .map_err(|e| Status::internal(format!("failed to sign X509 SVID: {e}")))?;
        let (serial, not_after) = chain
            .first()
            .and_then(|c| serial_and_expiry(c))
            .ok_or_else(|| Status::internal("failed to sign X509 SVID: unreadable certificate"))?;
        let update = NodeUpdate {
            new_cert_serial_number: Some(serial),
            new_cert_not_after: Some(not_after),
            ..NodeUpdate::default()
        };
        ctx.state
            .datastore
            .update_attested_node(&id, &update)
            .await
            .map_err(|e| Status::internal(format!("failed to update agent: {e}")))?;
        tracing::info!(spiffe_id = %id, "Renewing agent SVID");
        Ok(pb::RenewAgentResponse {
            svid: Some(types::X509svid {
                id: Some(convert::id_to_proto(&id)),
                cert_chain: chain,
                expires_at: not_after,
                hint: String::new(),
            }),
        })
    }
    .await;
    ctx.audit.emit(&result, &[]);
    result.map(Response::new)
}
