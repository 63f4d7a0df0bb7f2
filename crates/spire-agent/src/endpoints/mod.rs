//! The agent's local endpoints: the SPIFFE Workload API (plus `grpc.health.v1`) on the public
//! Unix socket; on the admin socket SPIRE's Delegated Identity, Debug and Logger APIs and the
//! spire-rs `debug explain` service ([`admin`]).
//!
//! Every Workload API call identifies its caller from the socket's peer credentials
//! ([`crate::peertracker`]), runs the workload attestors, checks the caller's pid still names
//! the process that connected, and gives it only the identities whose entry selectors are a
//! subset of its selectors.

pub mod admin;
pub mod agent_debug;
pub mod agent_logger;
pub mod authority;
pub mod delegated;
pub mod explain;
pub mod sds;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use spire_spiffe::TrustDomain;
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::attestor::workload::{Attestors, UnixAttestor, UnixAttestorConfig, WorkloadAttestor};
use crate::identity::{IdentitySnapshot, JwtSvidSource};
use crate::peertracker::PeerStream;

/// Workload attestor settings (`WorkloadAttestor` plugin blocks of the agent config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadAttestorsConfig {
    /// `WorkloadAttestor "unix"`, if configured.
    pub unix: Option<UnixAttestorConfig>,
    /// `WorkloadAttestor "k8s"`, if configured.
    pub k8s: Option<spire_plugin_k8s::K8sWorkloadConfig>,
}

impl WorkloadAttestorsConfig {
    /// Reads the enabled `WorkloadAttestor` blocks of an agent config.
    pub fn from_plugins(plugins: &spire_config::Plugins) -> Result<Self, EndpointsError> {
        let mut out = Self::default();
        for p in plugins.enabled("WorkloadAttestor") {
            match p.name.as_str() {
                "unix" => {
                    out.unix = Some(
                        p.plugin_data()
                            .map_err(|e| EndpointsError::Config(e.to_string()))?,
                    );
                }
                "k8s" => {
                    let cfg: spire_plugin_k8s::K8sWorkloadConfig = p
                        .plugin_data()
                        .map_err(|e| EndpointsError::Config(e.to_string()))?;
                    crate::attestor::workload::k8s::K8sAttestor::new(cfg.clone())
                        .map_err(|e| EndpointsError::Config(e.to_string()))?;
                    out.k8s = Some(cfg);
                }
                other => {
                    return Err(EndpointsError::Config(format!(
                        "unsupported WorkloadAttestor plugin {other:?}: expected \"unix\" or \"k8s\""
                    )));
                }
            }
        }
        Ok(out)
    }

    fn build(&self) -> Attestors {
        let mut list: Vec<Arc<dyn WorkloadAttestor>> = Vec::new();
        if let Some(unix) = &self.unix {
            list.push(Arc::new(UnixAttestor::new(unix.clone())));
        }
        if let Some(k8s) = &self.k8s {
            match crate::attestor::workload::k8s::K8sAttestor::new(k8s.clone()) {
                Ok(a) => list.push(Arc::new(a)),
                Err(e) => tracing::error!(error = %e, "Cannot start the k8s workload attestor"),
            }
        }
        Attestors::new(list)
    }
}

/// What [`serve`] needs to know.
#[derive(Debug, Clone)]
pub struct EndpointsConfig {
    /// The Workload API socket (`socket_path`).
    pub socket_path: PathBuf,
    /// The admin socket (`admin_socket_path`); off when `None`.
    pub admin_socket_path: Option<PathBuf>,
    /// `allow_unauthenticated_verifiers`: bundle streams for callers without identities.
    pub allow_unauthenticated_verifiers: bool,
    /// `allowed_foreign_jwt_claims`: claims ValidateJWTSVID returns for foreign tokens.
    pub allowed_foreign_jwt_claims: Vec<String>,
    /// The workload attestors.
    pub workload_attestors: WorkloadAttestorsConfig,
    /// The agent's trust domain.
    pub trust_domain: TrustDomain,
    /// Envoy SDS v3 on the Workload API socket (`sds { }`); off when `None` (`disable_sds_api`).
    pub sds: Option<sds::SdsSettings>,
    /// `disable_workload_api`: the socket serves no `SpiffeWorkloadAPI` (SDS and health stay).
    pub disable_workload_api: bool,
}

impl EndpointsConfig {
    /// The endpoint settings of an agent config.
    pub fn from_agent_config(cfg: &spire_config::AgentConfig) -> Result<Self, EndpointsError> {
        Ok(Self {
            socket_path: cfg.socket_path.clone(),
            admin_socket_path: cfg.admin_socket_path.clone(),
            allow_unauthenticated_verifiers: cfg.allow_unauthenticated_verifiers,
            allowed_foreign_jwt_claims: cfg.allowed_foreign_jwt_claims.clone(),
            workload_attestors: WorkloadAttestorsConfig::from_plugins(&cfg.plugins)?,
            trust_domain: cfg.trust_domain.clone(),
            sds: (!cfg.disable_sds_api).then(|| sds::SdsSettings::from(&cfg.sds)),
            disable_workload_api: cfg.disable_workload_api,
        })
    }
}

/// Why the endpoints could not be served.
#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    /// Bad endpoint settings.
    #[error("invalid endpoints configuration: {0}")]
    Config(String),
    /// The socket could not be created.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("endpoint server on {path} failed: {source}")]
    Serve {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
}

/// How long a caller whose entries have no signed SVID yet waits for the manager to sign one.
pub const SVID_WAIT: Duration = Duration::from_secs(10);

/// Binds `path` as a Unix socket with `mode`: creates the parent directory and replaces a
/// stale socket (never a regular file).
pub fn bind_socket(path: &Path, mode: u32) -> Result<UnixListener, EndpointsError> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    let err = |source| EndpointsError::Listen {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
        Ok(_) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "path exists and is not a socket",
            )));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    Ok(listener)
}

fn incoming(
    listener: UnixListener,
) -> impl futures::Stream<Item = Result<PeerStream, std::io::Error>> {
    tokio_stream::wrappers::UnixListenerStream::new(listener).map(|r| r.map(PeerStream::new))
}

/// How long open streams (an `X509Source` keeps one for ever) may hold up shutdown before
/// their connections are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Runs a server whose graceful shutdown starts when `stop` is cancelled, and drops it (closing
/// its connections) if it has not finished [`SHUTDOWN_GRACE`] later.
async fn with_grace<F>(server: F, stop: &CancellationToken) -> Result<(), tonic::transport::Error>
where
    F: std::future::Future<Output = Result<(), tonic::transport::Error>>,
{
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return r,
        () = stop.cancelled() => {}
    }
    match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
        Ok(r) => r,
        Err(_) => {
            tracing::debug!("closing workload api connections still open after the grace period");
            Ok(())
        }
    }
}

/// Serves the Workload API on `cfg.socket_path` (mode 0777: any local user may call, each gets
/// only its own identities) and, if set, the admin service on `cfg.admin_socket_path` (mode
/// 0770), until `shutdown` is cancelled. Removes the sockets on the way out.
pub async fn serve(
    cfg: EndpointsConfig,
    snapshots: watch::Receiver<Arc<IdentitySnapshot>>,
    jwt: Arc<dyn JwtSvidSource>,
    shutdown: CancellationToken,
) -> Result<(), EndpointsError> {
    let subscribers = crate::identity::SubscriberRegistry::new();
    serve_with_subscribers(cfg, snapshots, jwt, subscribers, shutdown).await
}

/// [`serve`], registering X.509 subscribers in `subscribers` (shared with the manager).
pub async fn serve_with_subscribers(
    cfg: EndpointsConfig,
    snapshots: watch::Receiver<Arc<IdentitySnapshot>>,
    jwt: Arc<dyn JwtSvidSource>,
    subscribers: Arc<crate::identity::SubscriberRegistry>,
    shutdown: CancellationToken,
) -> Result<(), EndpointsError> {
    let admin = admin::AdminParts::new(std::time::SystemTime::now());
    serve_with_admin(cfg, snapshots, jwt, subscribers, admin, shutdown).await
}

/// [`serve_with_subscribers`], with what the admin socket's SPIRE services (Delegated Identity,
/// Debug, Logger) need from the rest of the agent.
pub async fn serve_with_admin(
    cfg: EndpointsConfig,
    snapshots: watch::Receiver<Arc<IdentitySnapshot>>,
    jwt: Arc<dyn JwtSvidSource>,
    subscribers: Arc<crate::identity::SubscriberRegistry>,
    admin: admin::AdminParts,
    shutdown: CancellationToken,
) -> Result<(), EndpointsError> {
    let attestors = cfg.workload_attestors.build();
    let state = Arc::new(workload::WorkloadState {
        snapshots,
        jwt,
        attestors,
        allow_unauthenticated_verifiers: cfg.allow_unauthenticated_verifiers,
        allowed_foreign_jwt_claims: cfg.allowed_foreign_jwt_claims.clone(),
        clock: Arc::new(spire_spiffe::SystemClock),
        svid_wait: SVID_WAIT,
        subscribers,
    });

    let public = bind_socket(&cfg.socket_path, 0o777)?;
    tracing::info!(path = %cfg.socket_path.display(), "starting workload api");
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<spire_proto::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer<
            workload::WorkloadService,
        >>()
        .await;
    // gRPC server reflection (the Workload Endpoint spec's SHOULD), v1 and v1alpha as grpc-go
    // registers them, advertising the Workload API and health services.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(spire_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(spire_proto::workload::spiffe_workload_api_server::SERVICE_NAME)
            .with_service_name("grpc.health.v1.Health")
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| EndpointsError::Config(format!("cannot build reflection service: {e}")))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| EndpointsError::Config(format!("cannot build reflection service: {e}")))?;

    // One server failing stops the other (and `serve` returns its error).
    let stop = shutdown.child_token();
    let public_server = tonic::transport::Server::builder()
        .layer(spire_telemetry::metrics::GrpcMetricsLayer::new())
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_optional_service(
            (!cfg.disable_workload_api)
                .then(|| workload::WorkloadService::new(state.clone()).into_server()),
        )
        .add_optional_service(
            cfg.sds
                .clone()
                .map(|s| sds::SdsService::new(state.clone(), s).into_server()),
        )
        .serve_with_incoming_shutdown(
            workload::watched_incoming(public, cfg.socket_path.clone(), 0o777, stop.clone()),
            stop.clone().cancelled_owned(),
        );
    let public_path = cfg.socket_path.clone();
    let public_task = {
        let stop = stop.clone();
        let path = public_path.clone();
        async move {
            let r = with_grace(public_server, &stop)
                .await
                .map_err(|source| EndpointsError::Serve { path, source });
            stop.cancel();
            r
        }
    };

    let result = match &cfg.admin_socket_path {
        Some(admin_path) => {
            let listener = bind_socket(admin_path, 0o770)?;
            tracing::info!(path = %admin_path.display(), "starting admin api");
            let admin_server = tonic::transport::Server::builder()
                .layer(spire_telemetry::metrics::GrpcMetricsLayer::new())
                .add_service(admin::AdminService::new(state.clone()).into_server())
                .add_service(
                    delegated::DelegatedIdentityService::new(
                        state.clone(),
                        &admin.authorized_delegates,
                    )
                    .into_server(),
                )
                .add_service(
                    agent_debug::DebugService::new(
                        state.clone(),
                        admin.agent_identity.clone(),
                        admin.status.clone(),
                        state.clock.clone(),
                    )
                    .into_server(),
                )
                .add_service(agent_logger::LoggerService::new().into_server())
                .serve_with_incoming_shutdown(incoming(listener), stop.clone().cancelled_owned());
            let admin_task = {
                let stop = stop.clone();
                let path = admin_path.clone();
                async move {
                    let r = with_grace(admin_server, &stop)
                        .await
                        .map_err(|source| EndpointsError::Serve { path, source });
                    stop.cancel();
                    r
                }
            };
            let (a, b) = tokio::join!(public_task, admin_task);
            let _ = std::fs::remove_file(admin_path);
            a.and(b)
        }
        None => public_task.await,
    };
    let _ = std::fs::remove_file(&public_path);
    result
}

#[cfg(test)]
mod tests;
