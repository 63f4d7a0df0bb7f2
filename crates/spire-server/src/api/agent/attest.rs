//! Agent.AttestAgent: node attestation (bidirectional stream).
//!
//! Any caller may call it (`Policy::Any`); it is rate-limited per IP (`ratelimit.attestation`).
//! The first request carries the attestation data and a CSR for the agent key; challenge /
//! response rounds follow for `x509pop`; the last response carries the agent X509-SVID. The
//! node, its selectors and its SVID serial are stored in one transaction, which for
//! `join_token` also consumes the token (so a token attests at most one agent).
//!
//! Mirrors `pkg/server/api/agent/v1/service.go` (`AttestAgent`).

use std::pin::Pin;

use futures::Stream;
use spire_datastore::{AttestedNode, JoinTokenStatus, NodeUpdate, WriteTx};
use spire_spiffe::Selectors;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::api::{Caller, Ctx, convert, rate_limit};
use crate::authz::serial_and_expiry;
use crate::endpoints::tcp::{TcpContext, tcp_context};
use crate::node_attestor::{AttestResult, join_token, k8s_psat, x509pop};
use crate::pb::agent as pb;
use crate::pb::types;

/// How long the agent gets for each step (first request, each challenge response).
pub const STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The next request on the stream, within [`STEP_TIMEOUT`].
async fn next(
    inbound: &mut Streaming<pb::AttestAgentRequest>,
) -> Result<Option<pb::AttestAgentRequest>, Status> {
    tokio::time::timeout(STEP_TIMEOUT, inbound.message())
        .await
        .map_err(|_| Status::deadline_exceeded("timed out waiting for the agent"))?
}

/// The response stream of AttestAgent.
pub type AttestAgentStream =
    Pin<Box<dyn Stream<Item = Result<pb::AttestAgentResponse, Status>> + Send>>;

/// AttestAgent.
pub(crate) async fn attest_agent(
    ctx: &Ctx,
    request: Request<Streaming<pb::AttestAgentRequest>>,
) -> Result<Response<AttestAgentStream>, Status> {
    let tcp = tcp_context(&request)?;
    let caller = ctx.caller.clone();
    let audit = ctx.audit.clone();
    let inbound = request.into_inner();
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let result = run(&tcp, &caller, inbound, &tx).await;
        let fields = match &result {
            Ok((id, kind, _)) => vec![
                ("agent_id", id.clone()),
                ("node_attestor_type", kind.clone()),
            ],
            Err(_) => Vec::new(),
        };
        let result = result.map(|(_, _, r)| r);
        audit.emit(&result, &fields);
        let _ = tx.send(result).await;
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

type Outbound = mpsc::Sender<Result<pb::AttestAgentResponse, Status>>;

async fn run(
    tcp: &TcpContext,
    caller: &Caller,
    mut inbound: Streaming<pb::AttestAgentRequest>,
    tx: &Outbound,
) -> Result<(String, String, pb::AttestAgentResponse), Status> {
    rate_limit(&tcp.limits.attest, caller, 1, "attest agent").await?;
    let first = next(&mut inbound)
        .await
        .map_err(|e| {
            Status::invalid_argument(format!(
                "failed to receive request from stream: {}",
                e.message()
            ))
        })?
        .ok_or_else(|| {
            Status::invalid_argument("failed to receive request from stream: stream closed")
        })?;
    let Some(pb::attest_agent_request::Step::Params(params)) = first.step else {
        return Err(Status::invalid_argument("malformed param: missing params"));
    };
    let data = params
        .data
        .ok_or_else(|| Status::invalid_argument("malformed param: missing attestation data"))?;
    if data.r#type.is_empty() {
        return Err(Status::invalid_argument(
            "malformed param: missing attestation data type",
        ));
    }
    let svid_params = params
        .params
        .ok_or_else(|| Status::invalid_argument("malformed param: missing X509-SVID params"))?;
    if svid_params.csr.is_empty() {
        return Err(Status::invalid_argument("malformed param: missing CSR"));
    }
    let csr = spire_crypto::csr::parse_and_verify_csr(&svid_params.csr)
        .map_err(|e| Status::invalid_argument(format!("failed to parse CSR: {e}")))?;
    let state = &tcp.state;
    let kind = data.r#type.clone();

    let (db, result) = match kind.as_str() {
        join_token::NAME if tcp.attestors.join_token => {
            let used = || {
                Status::invalid_argument(
                    "failed to attest: join token does not exist or has already been used",
                )
            };
            let token = std::str::from_utf8(&data.payload).map_err(|_| used())?;
            let agent_id = join_token::agent_id(&state.trust_domain, token).map_err(|_| used())?;
            let mut db = state
                .datastore
                .begin()
                .await
                .map_err(internal("failed to fetch join token"))?;
            match db
                .consume_join_token(token, state.clock.now_unix())
                .await
                .map_err(internal("failed to fetch join token"))?
            {
                JoinTokenStatus::Valid { .. } => {}
                JoinTokenStatus::NotFound => return Err(used()),
                JoinTokenStatus::Expired { .. } => {
                    db.commit()
                        .await
                        .map_err(internal("failed to delete join token"))?;
                    return Err(Status::invalid_argument("join token expired"));
                }
            }
            (
                db,
                AttestResult {
                    agent_id,
                    selectors: Selectors::new(),
                    can_reattest: false,
                },
            )
        }
        x509pop::NAME if tcp.attestors.x509pop.is_some() => {
            let Some(plugin) = tcp.attestors.x509pop.as_ref() else {
                return Err(not_configured(&kind));
            };
            let own_roots = if plugin.spiffe_mode() {
                state
                    .ca
                    .bundle()
                    .await
                    .map_err(|e| Status::internal(format!("failed to get trust bundle: {e}")))?
                    .map(|b| b.x509_authorities.into_iter().map(|a| a.der).collect())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            let now = rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                u64::try_from(state.clock.now_unix()).unwrap_or(0),
            ));
            let pending = plugin.begin(&state.trust_domain, &data.payload, &own_roots, now)?;
            let challenge = pb::AttestAgentResponse {
                step: Some(pb::attest_agent_response::Step::Challenge(
                    pending.challenge().to_vec(),
                )),
            };
            tx.send(Ok(challenge))
                .await
                .map_err(|_| Status::internal("failed to send challenge to agent"))?;
            let answer = next(&mut inbound)
                .await
                .map_err(|e| {
                    Status::internal(format!(
                        "failed to receive challenge from agent: {}",
                        e.message()
                    ))
                })?
                .ok_or_else(|| {
                    Status::internal("failed to receive challenge from agent: stream closed")
                })?;
            let Some(pb::attest_agent_request::Step::ChallengeResponse(answer)) = answer.step
            else {
                return Err(Status::invalid_argument("expected a challenge response"));
            };
            let result = pending.finish(&answer)?;
            let db = state
                .datastore
                .begin()
                .await
                .map_err(internal("failed to fetch agent"))?;
            (db, result)
        }
        k8s_psat::NAME if tcp.attestors.k8s_psat.is_some() => {
            let Some(plugin) = tcp.attestors.k8s_psat.as_ref() else {
                return Err(not_configured(&kind));
            };
            let result = plugin.attest(&state.trust_domain, &data.payload).await?;
            let db = state
                .datastore
                .begin()
                .await
                .map_err(internal("failed to fetch agent"))?;
            (db, result)
        }
        _ => return Err(not_configured(&kind)),
    };
    let response = finish(tcp, db, &kind, &result, &csr.public_key).await?;
    tracing::info!(agent_id = %result.agent_id, node_attestor_type = %kind, address = ?caller_addr(caller), "Agent attestation request completed");
    Ok((result.agent_id.to_string(), kind, response))
}

fn caller_addr(c: &Caller) -> Option<std::net::SocketAddr> {
    match &c.kind {
        crate::api::CallerKind::Unauthenticated { addr, .. }
        | crate::api::CallerKind::Agent { addr, .. }
        | crate::api::CallerKind::Admin { addr, .. }
        | crate::api::CallerKind::Downstream { addr, .. } => *addr,
        crate::api::CallerKind::Local { .. } => None,
    }
}

fn not_configured(kind: &str) -> Status {
    Status::failed_precondition(format!(
        "error getting node attestor: could not find node attestor type {kind:?}"
    ))
}

fn internal(what: &'static str) -> impl Fn(spire_datastore::Error) -> Status {
    move |e| crate::api::datastore_status(what, &e)
}

/// Signs the agent SVID and stores the node, in the transaction `db`.
async fn finish(
    tcp: &TcpContext,
    mut db: WriteTx,
    kind: &str,
    result: &AttestResult,
    public_key: &spire_crypto::PublicKey,
) -> Result<pb::AttestAgentResponse, Status> {
    let state = &tcp.state;
    let id = &result.agent_id;
    if id.path() == "/spire/server" {
        return Err(Status::internal(
            "agent ID cannot collide with the server ID",
        ));
    }
    let existing = db
        .get_attested_node(id)
        .await
        .map_err(internal("failed to fetch agent"))?;
    if existing.as_ref().is_some_and(AttestedNode::is_banned) {
        return Err(Status::permission_denied(
            "failed to attest: agent is banned",
        ));
    }
    let chain = state
        .ca
        .sign_agent_svid(public_key, id)
        .map_err(|e| Status::internal(format!("failed to sign X509 SVID: {e}")))?;
    let (serial, not_after) = chain
        .first()
        .and_then(|c| serial_and_expiry(c))
        .ok_or_else(|| Status::internal("failed to sign X509 SVID: unreadable certificate"))?;
    if existing.is_some() {
        db.set_node_selectors(id, &result.selectors)
            .await
            .map_err(internal("failed to update selectors"))?;
        let update = NodeUpdate {
            cert_serial_number: Some(serial),
            cert_not_after: Some(not_after),
            new_cert_serial_number: Some(String::new()),
            new_cert_not_after: Some(0),
            can_reattest: Some(result.can_reattest),
            ..NodeUpdate::default()
        };
        db.update_attested_node(id, &update)
            .await
            .map_err(internal("failed to update attested agent"))?;
    } else {
        let node = AttestedNode {
            spiffe_id: id.clone(),
            attestation_type: kind.to_string(),
            cert_serial_number: serial,
            cert_not_after: not_after,
            new_cert_serial_number: String::new(),
            new_cert_not_after: 0,
            can_reattest: result.can_reattest,
            agent_version: String::new(),
            selectors: result.selectors.clone(),
        };
        db.create_attested_node(&node)
            .await
            .map_err(internal("failed to create attested agent"))?;
    }
    db.commit()
        .await
        .map_err(internal("failed to store attested agent"))?;
    Ok(pb::AttestAgentResponse {
        step: Some(pb::attest_agent_response::Step::Result(
            pb::attest_agent_response::Result {
                svid: Some(types::X509svid {
                    id: Some(convert::id_to_proto(id)),
                    cert_chain: chain,
                    expires_at: not_after,
                    hint: String::new(),
                }),
                reattestable: result.can_reattest,
            },
        )),
    })
}
