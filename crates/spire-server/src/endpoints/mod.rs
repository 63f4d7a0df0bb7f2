//! The server's listeners. The local Unix socket serves every API with caller class *local*;
//! the agent-facing TCP listener (mTLS) mounts the same [`Services`].
//!
//! Mirrors `pkg/server/endpoints/endpoints.go`.

pub mod tcp;

use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tonic::transport::server::Router;

use crate::api;
use crate::pb;
use crate::server::{ServerError, ServerState};

/// Largest gRPC message the server accepts (a 1,000-entry batch fits comfortably).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// One instance of every API service, ready to mount on a tonic router.
pub struct Services {
    /// `spire.api.server.agent.v1.Agent`.
    pub agent: pb::agent::agent_server::AgentServer<api::agent::AgentService>,
    /// `spire.api.server.bundle.v1.Bundle`.
    pub bundle: pb::bundle::bundle_server::BundleServer<api::bundle::BundleService>,
    /// `spire.api.server.debug.v1.Debug`.
    pub debug: pb::debug::debug_server::DebugServer<api::debug::DebugService>,
    /// `spire.api.server.entry.v1.Entry`.
    pub entry: pb::entry::entry_server::EntryServer<api::entry::EntryService>,
    /// `spire.api.server.localauthority.v1.LocalAuthority`.
    pub localauthority: pb::localauthority::local_authority_server::LocalAuthorityServer<
        api::localauthority::LocalAuthorityService,
    >,
    /// `spire.api.server.logger.v1.Logger`.
    pub logger: pb::logger::logger_server::LoggerServer<api::logger::LoggerService>,
    /// `spire.api.server.svid.v1.SVID`.
    pub svid: pb::svid::svid_server::SvidServer<api::svid::SvidService>,
}

/// Builds every service over `state`.
pub fn services(state: &Arc<ServerState>) -> Services {
    let s = || Arc::clone(state);
    Services {
        agent: pb::agent::agent_server::AgentServer::new(api::agent::AgentService::new(s()))
            .max_decoding_message_size(MAX_MESSAGE_SIZE),
        bundle: pb::bundle::bundle_server::BundleServer::new(api::bundle::BundleService::new(s()))
            .max_decoding_message_size(MAX_MESSAGE_SIZE),
        debug: pb::debug::debug_server::DebugServer::new(api::debug::DebugService::new(s())),
        entry: pb::entry::entry_server::EntryServer::new(api::entry::EntryService::new(s()))
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE),
        localauthority: pb::localauthority::local_authority_server::LocalAuthorityServer::new(
            api::localauthority::LocalAuthorityService::new(s()),
        ),
        logger: pb::logger::logger_server::LoggerServer::new(api::logger::LoggerService::new(s())),
        svid: pb::svid::svid_server::SvidServer::new(api::svid::SvidService::new(s()))
            .max_decoding_message_size(MAX_MESSAGE_SIZE),
    }
}

/// A router with every API service plus `grpc.health.v1`.
pub async fn router(
    state: &Arc<ServerState>,
) -> Router<
    tower::layer::util::Stack<
        spire_telemetry::metrics::GrpcMetricsLayer,
        tower::layer::util::Identity,
    >,
> {
    let s = services(state);
    let health = api::health::service(state).await;
    Server::builder()
        .layer(spire_telemetry::metrics::GrpcMetricsLayer::new())
        .add_service(health)
        .add_service(s.agent)
        .add_service(s.bundle)
        .add_service(s.debug)
        .add_service(s.entry)
        .add_service(s.localauthority)
        .add_service(s.logger)
        .add_service(s.svid)
        .add_service(api::trustdomain::server(state))
}

/// Serves the local API on `state.config.socket_path` until `state.shutdown` is cancelled.
pub async fn serve_local(state: Arc<ServerState>) -> Result<(), ServerError> {
    let path = state.config.socket_path.clone();
    let listener = bind_uds(&path)
        .await
        .map_err(|source| ServerError::Listen {
            path: path.clone(),
            source,
        })?;
    tracing::info!(path = %path.display(), "Starting Server APIs");
    let router = router(&state).await;
    let shutdown = state.shutdown.clone();
    let result = router
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await
        .map_err(ServerError::Transport);
    let _ = std::fs::remove_file(&path);
    result
}

/// Creates the socket's directory (mode 0700 when created here), replaces a stale socket and
/// refuses to replace one a live server is listening on.
pub async fn bind_uds(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another server is listening on this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o770))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[tokio::test]
    async fn socket_directory_is_private_and_stale_sockets_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("private").join("api.sock");
        let first = bind_uds(&path).await.unwrap();
        let mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        // A live listener is not replaced.
        let err = bind_uds(&path).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        // Once nobody listens, the stale socket file is replaced.
        drop(first);
        assert!(path.exists());
        bind_uds(&path).await.unwrap();
    }
}
