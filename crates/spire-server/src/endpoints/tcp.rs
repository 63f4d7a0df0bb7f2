//! The agent-facing TCP listener: `bind_address:bind_port`, TLS with the server's X509-SVID,
//! client certificates optional (validated against the local and federated bundles when
//! presented). Every request is authenticated by [`crate::authz::AuthzLayer`]; the same API
//! services as on the local socket are mounted, plus the spire-rs Watch push stream.
//!
//! Starting it also loads the authorized-entry index and starts following the change log.
//!
//! Mirrors `pkg/server/endpoints/endpoints.go` (`runTCPServer`).

use std::net::SocketAddr;
use std::sync::Arc;

use spire_tls::{
    BundleSet, ClientAuth, Identity, PeerMatcher, ServerOptions, SharedIdentity, TlsIncoming,
};
use tokio::task::JoinHandle;
use tonic::transport::Server;

use crate::authorized_entries::{AuthorizedEntries, change};
use crate::authz::{AuthzLayer, RateLimits};
use crate::node_attestor::NodeAttestors;
use crate::server::ServerState;

/// Everything the agent-facing RPCs share; attached to every TCP request as an extension.
#[derive(Debug)]
pub struct TcpContext {
    /// The server.
    pub state: Arc<ServerState>,
    /// The authorized-entry index.
    pub index: Arc<AuthorizedEntries>,
    /// Per-IP rate limits.
    pub limits: RateLimits,
    /// Configured node attestors.
    pub attestors: NodeAttestors,
}

/// The [`TcpContext`] of a request that came through the TCP listener.
pub fn tcp_context<T>(req: &tonic::Request<T>) -> Result<Arc<TcpContext>, tonic::Status> {
    req.extensions()
        .get::<Arc<TcpContext>>()
        .cloned()
        .ok_or_else(|| {
            tonic::Status::failed_precondition(
                "this RPC is served on the agent-facing TCP listener only",
            )
        })
}

/// Why the TCP listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TcpError {
    /// A node attestor is misconfigured.
    #[error(transparent)]
    NodeAttestor(#[from] crate::node_attestor::NodeAttestorError),
    /// The index could not be loaded.
    #[error(transparent)]
    Index(#[from] crate::authorized_entries::IndexError),
    /// TLS setup failed.
    #[error("cannot set up TLS for the server listener")]
    Tls(#[from] spire_tls::TlsError),
    /// The server has no SVID.
    #[error("the CA manager produced no server SVID")]
    NoServerSvid,
    /// Binding failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server transport failed")]
    Transport(#[source] tonic::transport::Error),
}

/// Spawns [`serve`]; if it fails, logs why and shuts the whole server down.
pub fn spawn(state: Arc<ServerState>) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = serve(Arc::clone(&state)).await {
            tracing::error!(error = %e, cause = ?std::error::Error::source(&e).map(ToString::to_string), "Agent-facing listener failed");
            state.shutdown.cancel();
        }
    })
}

fn identity_from(svid: &crate::ca::ServerSvid) -> Option<Identity> {
    let key = svid.key.to_pkcs8_der().ok()?;
    Identity::from_der(svid.chain.iter().cloned(), key.to_vec()).ok()
}

async fn reload_bundles(state: &ServerState, bundles: &BundleSet) {
    let mut page = spire_datastore::Pagination::first(1000);
    let mut all = Vec::new();
    loop {
        match state.datastore.list_bundles(&page).await {
            Ok(p) => {
                all.extend(p.items);
                if p.next_page_token.is_empty() {
                    break;
                }
                page.token = p.next_page_token;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Failed to load bundles for the server listener");
                return;
            }
        }
    }
    let sets: Vec<_> = all
        .iter()
        .map(|b| {
            (
                b.trust_domain.clone(),
                b.x509_authorities
                    .iter()
                    .map(|a| a.der.clone())
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    if let Err(e) = bundles.replace_all(sets) {
        tracing::warn!(error = %e, "Failed to install bundles for the server listener");
    }
}

/// Wakes the federation refresher whenever the index applied a federation change (or lagged
/// behind and must be assumed to have missed one).
async fn forward_federation_changes(
    state: Arc<ServerState>,
    mut changes: tokio::sync::broadcast::Receiver<Arc<crate::authorized_entries::Notification>>,
) {
    use crate::authorized_entries::change;
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let wake = tokio::select! {
            () = state.shutdown.cancelled() => return,
            r = changes.recv() => match r {
                Ok(n) => n.all & (change::FEDERATED_BUNDLE | change::RESYNC) != 0,
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return,
            },
        };
        if wake {
            state.federation_changed.notify_one();
        }
    }
}

/// Loads the index, binds the listener and serves until `state.shutdown`.
pub async fn serve(state: Arc<ServerState>) -> Result<(), TcpError> {
    let attestors = NodeAttestors::from_config(&state.config)?;
    let index = Arc::new(AuthorizedEntries::new(state.trust_domain.clone()));
    let follower = index.load(&state.datastore).await?;
    tokio::spawn(forward_federation_changes(
        Arc::clone(&state),
        index.subscribe(),
    ));
    tokio::spawn(Arc::clone(&index).run(
        state.datastore.clone(),
        Arc::clone(&state.clock),
        follower,
        state.shutdown.clone(),
    ));

    // Our SVID, kept current.
    let mut svids = state.ca.subscribe_server_svid();
    let current = svids.borrow_and_update().clone();
    let identity = SharedIdentity::empty();
    match current.as_deref().and_then(identity_from) {
        Some(id) => identity.store(id),
        None => return Err(TcpError::NoServerSvid),
    }
    {
        let identity = identity.clone();
        let shutdown = state.shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = svids.changed() => if r.is_err() { return },
                }
                let svid = svids.borrow_and_update().clone();
                if let Some(id) = svid.as_deref().and_then(identity_from) {
                    identity.store(id);
                    tracing::debug!("Server listener SVID rotated");
                }
            }
        });
    }

    // Trusted roots for client certificates: every stored bundle, kept current.
    let bundles = BundleSet::new();
    reload_bundles(&state, &bundles).await;
    {
        let bundles = bundles.clone();
        let state = Arc::clone(&state);
        let mut seq = state.ca.subscribe_bundle();
        let mut notes = index.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = state.shutdown.cancelled() => return,
                    r = seq.changed() => if r.is_err() { return },
                    n = notes.recv() => match n {
                        Ok(n) if n.all & (change::BUNDLE | change::FEDERATED_BUNDLE | change::RESYNC) == 0 => continue,
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return,
                    },
                }
                reload_bundles(&state, &bundles).await;
            }
        });
    }

    let tls = spire_tls::server_config(
        &identity,
        &bundles,
        ServerOptions {
            client_auth: ClientAuth::Optional,
            authorize: PeerMatcher::Any,
            clock: Arc::clone(&state.clock),
        },
    )?;
    let addr_text = format!("{}:{}", state.config.bind_address, state.config.bind_port);
    let addrs = state
        .config
        .bind_socket_addrs()
        .map_err(|source| TcpError::Bind {
            addr: addr_text.clone(),
            source,
        })?;
    let addr: SocketAddr = addrs.into_iter().next().ok_or_else(|| TcpError::Bind {
        addr: addr_text.clone(),
        source: std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            "the address resolves to nothing",
        ),
    })?;
    let incoming = TlsIncoming::bind(addr, tls)
        .await
        .map_err(|source| TcpError::Bind {
            addr: addr_text.clone(),
            source,
        })?;
    tracing::info!(address = %incoming.local_addr().map(|a| a.to_string()).unwrap_or(addr_text), "Starting Server APIs");

    let rl = state.config.ratelimit;
    let ctx = Arc::new(TcpContext {
        state: Arc::clone(&state),
        index,
        limits: RateLimits::new(rl.attestation, rl.signing),
        attestors,
    });
    let s = super::services(&state);
    let watch = spire_proto::spire_rs::agent::watch_server::WatchServer::new(
        crate::api::watch::WatchService::new(Arc::clone(&state)),
    );
    let router = Server::builder()
        .layer(spire_telemetry::metrics::GrpcMetricsLayer::new())
        .layer(AuthzLayer::new(ctx))
        .add_service(s.agent)
        .add_service(s.bundle)
        .add_service(s.entry)
        .add_service(s.svid)
        .add_service(s.localauthority)
        .add_service(crate::api::trustdomain::server(&state))
        .add_service(watch);
    router
        .serve_with_incoming_shutdown(incoming, state.shutdown.clone().cancelled_owned())
        .await
        .map_err(TcpError::Transport)
}
