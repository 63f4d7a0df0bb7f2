//! Authentication and authorization of TCP callers, and per-IP rate limits.
//!
//! Every request on the agent-facing listener passes through [`AuthzLayer`], which turns the
//! TLS peer (from [`spire_tls::PeerInfo`]) into a [`Caller`]: *admin* (SVID in `admin_ids` or
//! named by an `admin = true` entry), *agent* (an active agent, see [`check_agent`]),
//! *downstream* (named by a `downstream = true` entry) or *unauthenticated*. The RPC handlers
//! then apply SPIRE's default policy table (`pkg/server/authpolicy/policy_data.json`) through
//! [`crate::api::authorize`]. For the methods open to agents ([`AGENT_METHODS`]), an agent SVID
//! that fails the check is refused here with SPIRE's `PermissionDeniedDetails` reason, so
//! agents can tell "banned" from "must re-attest".
//!
//! Mirrors `pkg/server/api/middleware` and `pkg/server/endpoints/middleware.go`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use spire_datastore::NodeUpdate;
use spire_proto::types::PermissionDeniedDetails;
use spire_proto::types::permission_denied_details::Reason;
use spire_spiffe::SpiffeId;
use spire_tls::PeerInfo;
use tonic::{Code, Status};

use crate::api::{Caller, CallerKind};
use crate::authorized_entries::AuthorizedEntries;
use crate::endpoints::tcp::TcpContext;
use crate::server::ServerState;

/// Full gRPC method names an agent may call (`allow_agent` in SPIRE's policy data, plus the
/// spire-rs Watch stream).
pub const AGENT_METHODS: &[&str] = &[
    "/spire.api.server.agent.v1.Agent/RenewAgent",
    "/spire.api.server.agent.v1.Agent/PostStatus",
    "/spire.api.server.entry.v1.Entry/GetAuthorizedEntries",
    "/spire.api.server.entry.v1.Entry/SyncAuthorizedEntries",
    "/spire.api.server.svid.v1.SVID/BatchNewX509SVID",
    "/spire.api.server.svid.v1.SVID/NewJWTSVID",
    "/spire.api.server.svid.v1.SVID/BatchNewWITSVID",
    "/spire.api.server.bundle.v1.Bundle/GetFederatedBundle",
    "/spire_rs.agent.v1.Watch/Watch",
];

/// Whether `method` (a full gRPC path) is open to agents.
pub fn agent_method(method: &str) -> bool {
    AGENT_METHODS.contains(&method)
}

/// Whether `id` is an agent ID of `state`'s trust domain (`/spire/agent/...`).
pub fn is_agent_id(state: &ServerState, id: &SpiffeId) -> bool {
    id.is_member_of(&state.trust_domain) && id.path().starts_with("/spire/agent/")
}

/// A PermissionDenied status carrying SPIRE's `PermissionDeniedDetails` (as a
/// `google.rpc.Status` detail, the way grpc-go's `status.WithDetails` encodes it).
pub fn permission_denied(reason: Reason, message: String) -> Status {
    let detail = PermissionDeniedDetails {
        reason: reason as i32,
    };
    let any = prost_types::Any {
        type_url: "type.googleapis.com/spire.api.types.PermissionDeniedDetails".into(),
        value: prost::Message::encode_to_vec(&detail),
    };
    let rpc = RpcStatus {
        code: Code::PermissionDenied as i32,
        message: message.clone(),
        details: vec![any],
    };
    Status::with_details(
        Code::PermissionDenied,
        message,
        prost::Message::encode_to_vec(&rpc).into(),
    )
}

/// `google.rpc.Status`, for status details.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// Serial number (decimal, as SPIRE stores it) and NotAfter (Unix seconds) of a DER
/// certificate.
pub fn serial_and_expiry(der: &[u8]) -> Option<(String, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some((
        cert.tbs_certificate.serial.to_string(),
        cert.validity().not_after.timestamp(),
    ))
}

/// SPIRE's agent check: the SVID is unexpired, the agent is attested and not banned, and the
/// SVID's serial is the current one or the one issued last (which then becomes current).
///
/// The agent record comes from `index` when it is fresh ([`AuthorizedEntries::fresh_agent`]:
/// no node write of this process is newer than the index) and the SVID is the agent's
/// current one, the steady-state case, which then needs no database read. Every other
/// outcome (unknown agent, banned, other serial, stale index) is decided on the record read
/// from the datastore, so the cache can only confirm what the database would, never refuse
/// what it would accept or accept what a local ban, eviction or re-attestation refused.
pub async fn check_agent(
    state: &ServerState,
    index: Option<&AuthorizedEntries>,
    id: &SpiffeId,
    leaf: &[u8],
) -> Result<(), Status> {
    let (serial, not_after) = serial_and_expiry(leaf)
        .ok_or_else(|| Status::unauthenticated("cannot parse the agent SVID"))?;
    if state.clock.now_unix() > not_after {
        return Err(permission_denied(
            Reason::AgentExpired,
            format!("agent {:?} SVID is expired", id.as_str()),
        ));
    }
    if let Some(node) = index.and_then(|ix| ix.fresh_agent(&state.datastore, id.as_str()))
        && !node.cert_serial_number.is_empty()
        && node.cert_serial_number == serial
    {
        return Ok(());
    }
    let node = state
        .datastore
        .get_attested_node(id)
        .await
        .map_err(|e| Status::internal(format!("unable to look up agent information: {e}")))?;
    let Some(node) = node else {
        return Err(permission_denied(
            Reason::AgentNotAttested,
            format!("agent {:?} is not attested", id.as_str()),
        ));
    };
    if node.cert_serial_number.is_empty() {
        return Err(permission_denied(
            Reason::AgentBanned,
            format!("agent {:?} is banned", id.as_str()),
        ));
    }
    if node.cert_serial_number == serial {
        return Ok(());
    }
    if !node.new_cert_serial_number.is_empty() && node.new_cert_serial_number == serial {
        let update = NodeUpdate {
            cert_serial_number: Some(node.new_cert_serial_number.clone()),
            cert_not_after: Some(node.new_cert_not_after),
            new_cert_serial_number: Some(String::new()),
            new_cert_not_after: Some(0),
            ..NodeUpdate::default()
        };
        state
            .datastore
            .update_attested_node(id, &update)
            .await
            .map_err(|e| Status::internal(format!("unable to activate the new agent SVID: {e}")))?;
        tracing::debug!(spiffe_id = %id, "Activated the new agent SVID");
        return Ok(());
    }
    Err(permission_denied(
        Reason::AgentNotActive,
        format!(
            "agent {:?} expected to have serial number {:?}; has {:?}",
            id.as_str(),
            node.cert_serial_number,
            serial
        ),
    ))
}

/// Classifies the TLS peer of a request on `method`.
pub async fn authenticate(
    ctx: &TcpContext,
    method: &str,
    peer: Option<&PeerInfo>,
) -> Result<Caller, Status> {
    let state = &ctx.state;
    let addr = peer.map(PeerInfo::remote_addr);
    let Some((id, leaf)) =
        peer.and_then(|p| Some((p.peer_spiffe_id()?.clone(), p.peer_leaf()?.clone())))
    else {
        return Ok(Caller {
            kind: CallerKind::Unauthenticated { addr, id: None },
        });
    };
    if state.config.admin_ids.contains(&id) || ctx.index.read().is_admin(id.as_str()) {
        return Ok(Caller {
            kind: CallerKind::Admin { addr, id },
        });
    }
    if agent_method(method) && is_agent_id(state, &id) {
        check_agent(state, Some(&ctx.index), &id, leaf.as_ref()).await?;
        return Ok(Caller {
            kind: CallerKind::Agent { addr, id },
        });
    }
    if ctx.index.read().is_downstream(id.as_str()) {
        return Ok(Caller {
            kind: CallerKind::Downstream { addr, id },
        });
    }
    Ok(Caller {
        kind: CallerKind::Unauthenticated { addr, id: Some(id) },
    })
}

/// The tower layer that authenticates every request of the TCP listener and attaches the
/// [`Caller`] and the shared [`TcpContext`] to it.
#[derive(Clone)]
pub struct AuthzLayer {
    ctx: Arc<TcpContext>,
}

impl AuthzLayer {
    /// A layer over `ctx`.
    pub fn new(ctx: Arc<TcpContext>) -> Self {
        AuthzLayer { ctx }
    }
}

impl<S> tower::Layer<S> for AuthzLayer {
    type Service = Authz<S>;

    fn layer(&self, inner: S) -> Authz<S> {
        Authz {
            inner,
            ctx: Arc::clone(&self.ctx),
        }
    }
}

/// See [`AuthzLayer`].
#[derive(Clone)]
pub struct Authz<S> {
    inner: S,
    ctx: Arc<TcpContext>,
}

impl<S, B> tower::Service<http::Request<B>> for Authz<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let ctx = Arc::clone(&self.ctx);
        Box::pin(async move {
            let method = req.uri().path().to_string();
            let peer = req.extensions().get::<PeerInfo>().cloned();
            match authenticate(&ctx, &method, peer.as_ref()).await {
                Ok(caller) => {
                    req.extensions_mut().insert(caller);
                    req.extensions_mut().insert(ctx);
                    inner.call(req).await
                }
                Err(status) => {
                    tracing::debug!(method = %method, code = ?status.code(), message = status.message(), "Request refused");
                    Ok(status.into_http())
                }
            }
        })
    }
}

/// SPIRE's per-IP limits.
pub mod limits {
    /// AttestAgent calls per second per IP.
    pub const ATTEST_PER_IP: u32 = 1;
    /// Signatures (X.509 CSRs, JWT-SVIDs) per second per IP.
    pub const SIGN_PER_IP: u32 = 500;
    /// PostStatus calls per second per IP.
    pub const POST_STATUS_PER_IP: u32 = 10;
}

/// A per-IP token bucket that makes callers wait (like Go's `rate.Limiter.WaitN`), with a
/// burst equal to the per-second rate. Disabled limiters never wait.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: u32,
    enabled: bool,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Most IPs tracked before idle buckets are dropped.
const MAX_BUCKETS: usize = 65_536;

impl RateLimiter {
    /// `per_sec` events per second per IP; `enabled = false` never limits.
    pub fn new(per_sec: u32, enabled: bool) -> Self {
        RateLimiter {
            per_sec: per_sec.max(1),
            enabled,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// How long a caller at `ip` asking for `n` events must wait, reserving them; an error
    /// when `n` can never fit.
    pub fn reserve(&self, ip: IpAddr, n: u32, now: Instant) -> Result<Duration, Status> {
        if !self.enabled || n == 0 {
            return Ok(Duration::ZERO);
        }
        if n > self.per_sec {
            return Err(Status::resource_exhausted(format!(
                "rate ({n}) exceeds burst size ({})",
                self.per_sec
            )));
        }
        let rate = f64::from(self.per_sec);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| now.duration_since(b.last).as_secs_f64() * rate < rate);
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: rate,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate) - f64::from(n);
        b.last = now;
        if b.tokens >= 0.0 {
            Ok(Duration::ZERO)
        } else {
            Ok(Duration::from_secs_f64(-b.tokens / rate))
        }
    }

    /// Waits until `n` events are allowed for the caller's IP (no IP: no limit).
    pub async fn wait(&self, caller: &Caller, n: usize) -> Result<(), Status> {
        let Some(ip) = caller_ip(caller) else {
            return Ok(());
        };
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let d = self.reserve(ip, n, Instant::now())?;
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
        Ok(())
    }
}

fn caller_ip(caller: &Caller) -> Option<IpAddr> {
    match &caller.kind {
        CallerKind::Admin { addr, .. }
        | CallerKind::Agent { addr, .. }
        | CallerKind::Downstream { addr, .. }
        | CallerKind::Unauthenticated { addr, .. } => addr.map(|a| a.ip()),
        CallerKind::Local { .. } => None,
    }
}

/// The limiters of one listener.
#[derive(Debug)]
pub struct RateLimits {
    /// AttestAgent.
    pub attest: RateLimiter,
    /// BatchNewX509SVID, NewJWTSVID, RenewAgent.
    pub sign: RateLimiter,
    /// PostStatus.
    pub post_status: RateLimiter,
}

impl RateLimits {
    /// From the `ratelimit` config block.
    pub fn new(attestation: bool, signing: bool) -> Self {
        RateLimits {
            attest: RateLimiter::new(limits::ATTEST_PER_IP, attestation),
            sign: RateLimiter::new(limits::SIGN_PER_IP, signing),
            post_status: RateLimiter::new(limits::POST_STATUS_PER_IP, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_makes_callers_wait() {
        let l = RateLimiter::new(2, true);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(l.reserve(ip, 1, t0).unwrap(), Duration::ZERO);
        assert_eq!(l.reserve(ip, 1, t0).unwrap(), Duration::ZERO);
        assert_eq!(l.reserve(ip, 1, t0).unwrap(), Duration::from_millis(500));
        // Another IP has its own bucket.
        assert_eq!(l.reserve(other, 2, t0).unwrap(), Duration::ZERO);
        // More than the burst can never be served.
        assert_eq!(
            l.reserve(ip, 3, t0).unwrap_err().code(),
            Code::ResourceExhausted
        );
        // Disabled: never waits.
        let off = RateLimiter::new(1, false);
        for _ in 0..10 {
            assert_eq!(off.reserve(ip, 1, t0).unwrap(), Duration::ZERO);
        }
    }

    #[test]
    fn permission_denied_carries_the_reason() {
        let s = permission_denied(Reason::AgentBanned, "agent \"x\" is banned".into());
        assert_eq!(s.code(), Code::PermissionDenied);
        let rpc: RpcStatus = prost::Message::decode(s.details()).unwrap();
        assert_eq!(rpc.details.len(), 1);
        let d: PermissionDeniedDetails =
            prost::Message::decode(rpc.details[0].value.as_slice()).unwrap();
        assert_eq!(d.reason, Reason::AgentBanned as i32);
    }
}
