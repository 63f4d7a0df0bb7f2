//! The server's gRPC APIs (`spire.api.server.*`), one module per service.
//!
//! Every service is one struct holding `Arc<ServerState>`; the same service values are mounted
//! on the local Unix socket (caller class *local*) and on the TCP listener (callers identified
//! by their X509-SVID). Each RPC starts with an explicit authorization decision through
//! [`authorize`], and each module maps its errors to `tonic::Status` in one place.
//!
//! Mirrors `pkg/server/api/*`.

pub mod agent;
pub mod audit;
pub mod bundle;
pub mod caller;
pub mod convert;
pub mod debug;
pub mod entry;
pub mod health;
pub mod localauthority;
pub mod logger;
pub mod svid;
pub mod trustdomain;
pub mod watch;

use std::sync::Arc;

use spire_datastore as ds;
use tonic::{Response, Status};

pub use caller::{Caller, CallerKind};

use crate::server::ServerState;

/// Who may call an RPC (SPIRE `pkg/server/authpolicy/policy_data.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Anybody, authenticated or not.
    Any,
    /// The local socket only.
    Local,
    /// The local socket or an admin SVID.
    AdminOrLocal,
    /// The local socket, an admin SVID or an active agent.
    AdminLocalOrAgent,
    /// An active agent only.
    Agent,
    /// A downstream SPIRE server only.
    Downstream,
}

/// Authorizes `caller` for an RPC guarded by `policy`.
///
/// Agent and downstream checks are made by the TCP listener, which attaches
/// [`CallerKind::Agent`] / [`CallerKind::Downstream`] / [`CallerKind::Admin`] to the request
/// after validating the peer's SVID against the datastore.
pub fn authorize(caller: &Caller, policy: Policy) -> Result<(), Status> {
    let ok = match policy {
        Policy::Any => true,
        Policy::Local => matches!(caller.kind, CallerKind::Local { .. }),
        Policy::AdminOrLocal => {
            matches!(
                caller.kind,
                CallerKind::Local { .. } | CallerKind::Admin { .. }
            )
        }
        Policy::AdminLocalOrAgent => matches!(
            caller.kind,
            CallerKind::Local { .. } | CallerKind::Admin { .. } | CallerKind::Agent { .. }
        ),
        Policy::Agent => matches!(caller.kind, CallerKind::Agent { .. }),
        Policy::Downstream => matches!(caller.kind, CallerKind::Downstream { .. }),
    };
    if ok {
        Ok(())
    } else {
        Err(Status::permission_denied("authorization denied for method"))
    }
}

/// Everything an RPC handler needs: shared state plus the caller of this request.
pub(crate) struct Ctx {
    pub(crate) state: Arc<ServerState>,
    /// The caller (agent-facing RPCs read the agent's SPIFFE ID from it).
    #[allow(dead_code)]
    pub(crate) caller: Caller,
    pub(crate) audit: audit::Audit,
}

impl Ctx {
    /// Extracts the caller from `req`, authorizes it and prepares the audit record.
    pub(crate) fn new<T>(
        state: &Arc<ServerState>,
        req: &tonic::Request<T>,
        method: &'static str,
        policy: Policy,
    ) -> Result<Self, Status> {
        let caller = Caller::from_request(req);
        let audit = audit::Audit::new(state.audit_enabled(), method, &caller);
        if let Err(status) = authorize(&caller, policy) {
            audit.emit_error(&status, &[]);
            return Err(status);
        }
        Ok(Ctx {
            state: Arc::clone(state),
            caller,
            audit,
        })
    }

    /// The caller's SPIFFE ID, which the agent- and downstream-facing RPCs always have.
    pub(crate) fn caller_id(&self) -> Result<&spire_spiffe::SpiffeId, Status> {
        self.caller
            .spiffe_id()
            .ok_or_else(|| Status::internal("caller ID missing from request context"))
    }

    /// Ends a unary RPC: audits `result` with the request's `fields` and makes it the response.
    pub(crate) fn respond<T, E: Into<Status>>(
        &self,
        result: Result<T, E>,
        fields: &[(&str, String)],
    ) -> Result<Response<T>, Status> {
        let result = result.map_err(Into::into);
        self.audit.emit(&result, fields);
        result.map(Response::new)
    }

    /// One item of a batch RPC: its per-item status, audited with the item's `fields`, and its
    /// value when it succeeded.
    pub(crate) fn item<T, E: Into<Status>>(
        &self,
        outcome: Result<T, E>,
        fields: &[(&str, String)],
    ) -> (crate::pb::types::Status, Option<T>) {
        let (status, value) = match outcome {
            Ok(v) => (ok_status(), Some(v)),
            Err(e) => (item_status(&e.into()), None),
        };
        self.audit.emit_item(&status, fields);
        (status, value)
    }
}

/// Waits until `limiter` lets the caller make `n` more requests. A refusal keeps the limiter's
/// code and names the `limit` ("renew agent", "JWT signing request", ...).
pub(crate) async fn rate_limit(
    limiter: &crate::authz::RateLimiter,
    caller: &Caller,
    n: usize,
    limit: &str,
) -> Result<(), Status> {
    limiter.wait(caller, n).await.map_err(|s| {
        Status::new(
            s.code(),
            format!(
                "rejecting request due to {limit} rate limiting: {}",
                s.message()
            ),
        )
    })
}

/// Largest page a List RPC returns.
const MAX_PAGE_SIZE: i32 = 1000;

/// The datastore page a List RPC asks for: `page_size` 0 asks for all remaining items,
/// larger sizes are capped at [`MAX_PAGE_SIZE`]. A negative size is refused with the returned
/// message (an invalid argument).
pub(crate) fn pagination(page_size: i32, page_token: &str) -> Result<ds::Pagination, String> {
    if page_size < 0 {
        return Err(format!("page_size {page_size} must not be negative"));
    }
    Ok(ds::Pagination {
        token: page_token.to_string(),
        page_size: page_size.min(MAX_PAGE_SIZE) as u32,
    })
}

/// A per-item `spire.api.types.Status` for success.
pub(crate) fn ok_status() -> crate::pb::types::Status {
    crate::pb::types::Status {
        code: 0,
        message: "OK".to_string(),
    }
}

/// The status for a failed datastore operation `what`: `Unavailable` while the database cannot
/// be reached (clients retry), `Internal` otherwise. Logged either way.
pub(crate) fn datastore_status(what: &str, source: &spire_datastore::Error) -> Status {
    tracing::error!(error = %source, "{what}");
    if source.is_unavailable() {
        Status::unavailable(format!("{what}: the datastore is unreachable"))
    } else {
        Status::internal(format!("{what}: {source}"))
    }
}

/// A per-item `spire.api.types.Status` from a `tonic::Status`.
pub(crate) fn item_status(s: &Status) -> crate::pb::types::Status {
    crate::pb::types::Status {
        code: s.code() as i32,
        message: s.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> spire_spiffe::SpiffeId {
        "spiffe://example.org/x".parse().unwrap()
    }

    #[test]
    fn authorization_table() {
        let local = Caller::local();
        let admin = Caller {
            kind: CallerKind::Admin {
                addr: None,
                id: id(),
            },
        };
        let agent = Caller {
            kind: CallerKind::Agent {
                addr: None,
                id: id(),
            },
        };
        let downstream = Caller {
            kind: CallerKind::Downstream {
                addr: None,
                id: id(),
            },
        };
        let anon = Caller {
            kind: CallerKind::Unauthenticated {
                addr: None,
                id: None,
            },
        };
        let cases = [
            (Policy::Any, [true, true, true, true, true]),
            (Policy::Local, [true, false, false, false, false]),
            (Policy::AdminOrLocal, [true, true, false, false, false]),
            (Policy::AdminLocalOrAgent, [true, true, true, false, false]),
            (Policy::Agent, [false, false, true, false, false]),
            (Policy::Downstream, [false, false, false, true, false]),
        ];
        for (policy, allowed) in cases {
            for (caller, want) in [&local, &admin, &agent, &downstream, &anon]
                .iter()
                .zip(allowed)
            {
                let got = authorize(caller, policy);
                assert_eq!(got.is_ok(), want, "{policy:?} for {:?}", caller.kind);
                if let Err(s) = got {
                    assert_eq!(s.code(), tonic::Code::PermissionDenied);
                }
            }
        }
    }

    #[test]
    fn pagination_caps_and_refuses_negative_sizes() {
        let p = pagination(0, "t").unwrap();
        assert_eq!((p.page_size, p.token.as_str()), (0, "t"));
        assert_eq!(pagination(5, "").unwrap().page_size, 5);
        assert_eq!(pagination(5000, "").unwrap().page_size, 1000);
        assert_eq!(
            pagination(-1, "").unwrap_err(),
            "page_size -1 must not be negative"
        );
    }

    #[test]
    fn uds_peer_credentials_make_a_local_caller() {
        let req = tonic::Request::new(());
        assert!(matches!(
            Caller::from_request(&req).kind,
            CallerKind::Unauthenticated { .. }
        ));
        let mut req = tonic::Request::new(());
        req.extensions_mut().insert(Caller::local());
        assert!(matches!(
            Caller::from_request(&req).kind,
            CallerKind::Local { .. }
        ));
    }
}
