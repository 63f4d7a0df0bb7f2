//! Who is calling: the local socket's peer credentials or the TCP peer's identity.

use std::net::SocketAddr;
use std::path::PathBuf;

use spire_spiffe::SpiffeId;
use tonic::transport::server::UdsConnectInfo;

/// The caller of one RPC.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller class and its identity.
    pub kind: CallerKind,
}

/// Caller classes of SPIRE's authorization policy.
#[derive(Debug, Clone)]
pub enum CallerKind {
    /// A process on this host, over the local Unix socket.
    Local {
        /// Peer uid (SO_PEERCRED), if known.
        uid: Option<u32>,
        /// Peer gid, if known.
        gid: Option<u32>,
        /// Peer pid, if known.
        pid: Option<i32>,
        /// Path of the peer's binary (`/proc/<pid>/exe`), if readable.
        path: Option<PathBuf>,
    },
    /// A TCP peer presenting an admin X509-SVID.
    Admin {
        /// Peer address.
        addr: Option<SocketAddr>,
        /// The SVID's SPIFFE ID.
        id: SpiffeId,
    },
    /// A TCP peer presenting the SVID of an active agent.
    Agent {
        /// Peer address.
        addr: Option<SocketAddr>,
        /// The agent's SPIFFE ID.
        id: SpiffeId,
    },
    /// A TCP peer presenting the SVID of a downstream entry.
    Downstream {
        /// Peer address.
        addr: Option<SocketAddr>,
        /// The SVID's SPIFFE ID.
        id: SpiffeId,
    },
    /// A TCP peer with no (or an unrecognized) client certificate.
    Unauthenticated {
        /// Peer address.
        addr: Option<SocketAddr>,
        /// The SPIFFE ID of a presented client certificate that granted no role.
        id: Option<SpiffeId>,
    },
}

impl Caller {
    /// The caller of `req`: an explicit [`Caller`] extension (set by the TCP listener) wins;
    /// otherwise the Unix socket's peer credentials make it a local caller; otherwise it is
    /// unauthenticated.
    pub fn from_request<T>(req: &tonic::Request<T>) -> Caller {
        if let Some(c) = req.extensions().get::<Caller>() {
            return c.clone();
        }
        if let Some(info) = req.extensions().get::<UdsConnectInfo>() {
            let cred = info.peer_cred;
            let pid = cred.and_then(|c| c.pid());
            let path = pid.and_then(|p| std::fs::read_link(format!("/proc/{p}/exe")).ok());
            return Caller {
                kind: CallerKind::Local {
                    uid: cred.map(|c| c.uid()),
                    gid: cred.map(|c| c.gid()),
                    pid,
                    path,
                },
            };
        }
        Caller {
            kind: CallerKind::Unauthenticated {
                addr: req.remote_addr(),
                id: None,
            },
        }
    }

    /// A local caller with unknown credentials (tests and in-process use).
    pub fn local() -> Caller {
        Caller {
            kind: CallerKind::Local {
                uid: None,
                gid: None,
                pid: None,
                path: None,
            },
        }
    }

    /// The SPIFFE ID of a TLS caller, if any.
    pub fn spiffe_id(&self) -> Option<&SpiffeId> {
        match &self.kind {
            CallerKind::Admin { id, .. }
            | CallerKind::Agent { id, .. }
            | CallerKind::Downstream { id, .. } => Some(id),
            CallerKind::Unauthenticated { id, .. } => id.as_ref(),
            CallerKind::Local { .. } => None,
        }
    }
}
