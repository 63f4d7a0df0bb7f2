//! The running server: shared state ([`ServerState`]), construction from a validated config
//! (plugins, datastore, CA manager) and the main loop (listeners, rotation, shutdown).
//!
//! Mirrors `pkg/server/server.go`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use spire_config::ServerConfig;
use spire_datastore::{DataStore, DataStoreConfig};
use spire_spiffe::{Clock, TrustDomain};
use tokio_util::sync::CancellationToken;

use crate::ca::{CaConfig, CaManager};
use crate::plugin::upstreamauthority::UpstreamAuthority;

/// Everything the APIs and background tasks share. Built once, held as `Arc<ServerState>`.
pub struct ServerState {
    /// The validated configuration.
    pub config: Arc<ServerConfig>,
    /// The server's trust domain.
    pub trust_domain: TrustDomain,
    /// The clock every expiry decision uses.
    pub clock: Arc<dyn Clock>,
    /// The datastore.
    pub datastore: DataStore,
    /// The signing authorities.
    pub ca: Arc<CaManager>,
    /// The log level control (Logger API); `None` when the process did not install logging.
    pub log: Option<spire_telemetry::LogHandle>,
    /// When the server started (Debug API uptime).
    pub started: Instant,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Woken when the change log shows a federation change (a relationship or a federated
    /// bundle written by any server of the trust domain), so the federation refresher re-reads
    /// the relationships at once instead of polling the database.
    pub federation_changed: tokio::sync::Notify,
}

impl fmt::Debug for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerState")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl ServerState {
    /// Whether the audit log is on.
    pub fn audit_enabled(&self) -> bool {
        self.config.audit_log_enabled
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A plugin block is missing or wrong.
    #[error("plugins.{plugin_type}.{name}: {reason}")]
    Plugin {
        /// Plugin type.
        plugin_type: String,
        /// Plugin name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A required plugin type is missing.
    #[error("plugins.{0}: exactly one {0} plugin must be configured")]
    MissingPlugin(&'static str),
    /// The datastore failed to open.
    #[error("cannot open the datastore")]
    DataStore(#[source] spire_datastore::Error),
    /// The CA manager failed to start.
    #[error("cannot start the CA manager")]
    Ca(#[source] crate::ca::CaError),
    /// A listener failed.
    #[error("cannot serve the local API on {}", path.display())]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server transport failed")]
    Transport(#[source] tonic::transport::Error),
}

/// Settings of `DataStore "sql"`, checked.
fn datastore_config(config: &ServerConfig) -> Result<DataStoreConfig, ServerError> {
    let plugin = config
        .plugins
        .single("DataStore")
        .ok_or(ServerError::MissingPlugin("DataStore"))?;
    let err = |reason: String| ServerError::Plugin {
        plugin_type: "DataStore".into(),
        name: plugin.name.clone(),
        reason,
    };
    if plugin.name != "sql" {
        return Err(err(
            "unknown DataStore plugin: the only built-in DataStore is \"sql\"".into(),
        ));
    }
    let data: serde_json::Value = plugin.plugin_data().map_err(|e| err(e.to_string()))?;
    let obj = data.as_object().cloned().unwrap_or_default();
    let mut database_type = "sqlite3".to_string();
    let mut connection_string = None;
    let mut max_open_conns = None;
    let mut disable_migration = false;
    let mut ro_connection_string = None;
    for (k, v) in &obj {
        match k.as_str() {
            "database_type" => {
                database_type = v
                    .as_str()
                    .ok_or_else(|| err("database_type must be a string".into()))?
                    .to_string();
            }
            "connection_string" => {
                connection_string = Some(
                    v.as_str()
                        .ok_or_else(|| err("connection_string must be a string".into()))?
                        .to_string(),
                );
            }
            "max_open_conns" => {
                let n = v
                    .as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| err("max_open_conns must be a number".into()))?;
                max_open_conns = Some(u32::try_from(n).unwrap_or(u32::MAX));
            }
            "disable_migration" => {
                disable_migration = v
                    .as_bool()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .ok_or_else(|| err("disable_migration must be a boolean".into()))?;
            }
            "ro_connection_string" => {
                ro_connection_string = Some(
                    v.as_str()
                        .ok_or_else(|| err("ro_connection_string must be a string".into()))?
                        .to_string(),
                );
            }
            "max_idle_conns" | "conn_max_lifetime" | "log_sql" => {}
            other => {
                return Err(err(format!(
                    "unknown configuration key {other:?} (expected database_type, connection_string, max_open_conns, max_idle_conns, conn_max_lifetime, disable_migration)"
                )));
            }
        }
    }
    if !matches!(database_type.as_str(), "sqlite3" | "postgres" | "mysql") {
        return Err(err(format!(
            "unsupported database_type {database_type:?}: expected \"sqlite3\", \"postgres\" or \"mysql\""
        )));
    }
    let connection_string =
        connection_string.ok_or_else(|| err("connection_string is required".into()))?;
    let connection_string = if database_type == "sqlite3"
        && !connection_string.starts_with("file:")
        && connection_string != ":memory:"
        && Path::new(&connection_string).is_relative()
    {
        config
            .data_dir
            .join(&connection_string)
            .display()
            .to_string()
    } else {
        connection_string
    };
    let mut c = DataStoreConfig::new(database_type, connection_string);
    c.max_open_conns = max_open_conns;
    c.disable_migration = disable_migration;
    c.ro_connection_string = ro_connection_string;
    Ok(c)
}

/// Checks the plugin configuration without opening anything (`spire-server validate`).
pub fn validate_plugins(config: &ServerConfig) -> Result<(), ServerError> {
    datastore_config(config)?;
    let km = config
        .plugins
        .single("KeyManager")
        .ok_or(ServerError::MissingPlugin("KeyManager"))?;
    if !matches!(km.name.as_str(), "disk" | "memory") {
        return Err(ServerError::Plugin {
            plugin_type: "KeyManager".into(),
            name: km.name.clone(),
            reason: "unknown KeyManager plugin: built-ins are \"disk\" and \"memory\"".into(),
        });
    }
    upstream_authority(config)?;
    crate::node_attestor::NodeAttestors::from_config(config).map_err(|e| ServerError::Plugin {
        plugin_type: "NodeAttestor".into(),
        name: e.name,
        reason: e.reason,
    })?;
    Ok(())
}

fn upstream_authority(
    config: &ServerConfig,
) -> Result<Option<Arc<dyn UpstreamAuthority>>, ServerError> {
    let Some(p) = config.plugins.single("UpstreamAuthority") else {
        return Ok(None);
    };
    let err = |reason: String| ServerError::Plugin {
        plugin_type: "UpstreamAuthority".into(),
        name: p.name.clone(),
        reason,
    };
    let data: serde_json::Value = p.plugin_data().map_err(|e| err(e.to_string()))?;
    let up = crate::plugin::upstreamauthority::build(&p.name, &data, &config.trust_domain)
        .map_err(err)?;
    Ok(Some(up))
}

/// Opens the datastore, builds the plugins and starts the CA manager.
pub async fn build_state(
    config: ServerConfig,
    clock: Arc<dyn Clock>,
    log: Option<spire_telemetry::LogHandle>,
) -> Result<Arc<ServerState>, ServerError> {
    let ds_config = datastore_config(&config)?;
    let km_plugin = config
        .plugins
        .single("KeyManager")
        .ok_or(ServerError::MissingPlugin("KeyManager"))?;
    let km_data: serde_json::Value = km_plugin.plugin_data().map_err(|e| ServerError::Plugin {
        plugin_type: "KeyManager".into(),
        name: km_plugin.name.clone(),
        reason: e.to_string(),
    })?;
    if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
        return Err(ServerError::Plugin {
            plugin_type: "DataStore".into(),
            name: "sql".into(),
            reason: format!("cannot create data_dir {}: {e}", config.data_dir.display()),
        });
    }
    let key_manager = crate::plugin::keymanager::build(&km_plugin.name, &km_data, &config.data_dir)
        .map_err(|e| ServerError::Plugin {
            plugin_type: "KeyManager".into(),
            name: km_plugin.name.clone(),
            reason: e.to_string(),
        })?;
    let upstream = upstream_authority(&config)?;
    let datastore = DataStore::open(&ds_config, Arc::clone(&clock))
        .await
        .map_err(ServerError::DataStore)?;
    let ca_config = ca_config(&config);
    warn_if_ttls_cut_short(&ca_config);
    // Each server of a trust domain keeps its own CA journal (HA: several servers, one
    // database), keyed by an ID kept in its data_dir.
    let journal_id = server_instance_id(&config.data_dir)?;
    let ca = CaManager::start_with_journal_id(
        ca_config,
        journal_id,
        Arc::clone(&clock),
        key_manager,
        upstream,
        datastore.clone(),
    )
    .await
    .map_err(ServerError::Ca)?;
    Ok(Arc::new(ServerState {
        trust_domain: config.trust_domain.clone(),
        config: Arc::new(config),
        clock,
        datastore,
        ca,
        log,
        started: Instant::now(),
        shutdown: CancellationToken::new(),
        federation_changed: tokio::sync::Notify::new(),
    }))
}

/// SPIRE warns when SVID TTLs exceed what the CA can issue for (`min(ca_ttl/6, 7d)`): such
/// SVIDs would be cut short at the CA's expiry.
fn warn_if_ttls_cut_short(c: &CaConfig) {
    let limit = (c.ca_ttl / 6).min(std::time::Duration::from_secs(7 * 24 * 3600));
    for (name, ttl) in [
        ("default_x509_svid_ttl", c.default_x509_svid_ttl),
        ("default_jwt_svid_ttl", c.default_jwt_svid_ttl),
        ("agent_ttl", c.agent_ttl),
    ] {
        if ttl > limit {
            tracing::warn!(
                setting = name,
                ttl_s = ttl.as_secs(),
                ca_ttl_s = c.ca_ttl.as_secs(),
                "SVID TTL is greater than the CA rotation window allows: SVIDs will be cut short"
            );
        }
    }
}

/// The ID of this server process's state among the servers sharing a datastore: read from
/// `<data_dir>/server_id`, created (random) on first start. It keys the server's CA journal, so
/// HA servers on one database never load or overwrite each other's authorities.
pub fn server_instance_id(data_dir: &Path) -> Result<String, ServerError> {
    let path = data_dir.join("server_id");
    let err = |what: &str, e: std::io::Error| ServerError::Plugin {
        plugin_type: "DataStore".into(),
        name: "sql".into(),
        reason: format!("cannot {what} the server ID file {}: {e}", path.display()),
    };
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(format!("server/{}", s.trim())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("read", e)),
    }
    let id = uuid::Uuid::new_v4().to_string();
    let tmp = data_dir.join(".server_id.tmp");
    std::fs::write(&tmp, format!("{id}\n")).map_err(|e| err("write", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| err("write", e))?;
    Ok(format!("server/{id}"))
}

/// The CA settings of a server config.
pub fn ca_config(config: &ServerConfig) -> CaConfig {
    CaConfig {
        trust_domain: config.trust_domain.clone(),
        ca_key_type: key_type(config.ca_key_type),
        jwt_key_type: key_type(config.jwt_key_type),
        ca_ttl: config.ca_ttl,
        ca_subject: spire_crypto::x509::CaSubject {
            country: config.ca_subject.country.clone(),
            organization: config.ca_subject.organization.clone(),
            common_name: (!config.ca_subject.common_name.is_empty())
                .then(|| config.ca_subject.common_name.clone()),
        },
        jwt_issuer: config.jwt_issuer.clone(),
        default_x509_svid_ttl: config.default_x509_svid_ttl,
        default_jwt_svid_ttl: config.default_jwt_svid_ttl,
        agent_ttl: config.agent_ttl,
        disable_jwt_svids: config.disable_jwt_svids,
    }
}

fn key_type(k: spire_config::KeyType) -> spire_crypto::KeyType {
    match k {
        spire_config::KeyType::Rsa2048 => spire_crypto::KeyType::Rsa2048,
        spire_config::KeyType::Rsa4096 => spire_crypto::KeyType::Rsa4096,
        spire_config::KeyType::EcP256 => spire_crypto::KeyType::EcP256,
        spire_config::KeyType::EcP384 => spire_crypto::KeyType::EcP384,
    }
}

/// Runs the server until SIGINT/SIGTERM or `state.shutdown`: the local API socket, the CA
/// rotation loop, and whatever extra listeners the caller added to `extra`.
pub async fn run(
    state: Arc<ServerState>,
    extra: Vec<tokio::task::JoinHandle<()>>,
) -> Result<(), ServerError> {
    // SIGUSR2 reopens the log file; installed first: unhandled, SIGUSR2 ends the process.
    let reopen_task = match &state.log {
        Some(log) => match log.reopen_on_sigusr2() {
            Ok(t) => Some(t),
            Err(error) => {
                tracing::warn!(%error, "Log file rotation on SIGUSR2 unavailable");
                None
            }
        },
        None => None,
    };
    log_startup(&state).await;
    let notifier_tasks = crate::notifier::spawn(&state)?;
    let ca_task = tokio::spawn(Arc::clone(&state.ca).run(state.shutdown.clone()));
    let prune_task = tokio::spawn(crate::housekeeping::run(Arc::clone(&state)));
    let tcp_task = crate::endpoints::tcp::spawn(Arc::clone(&state));
    let federation_tasks = crate::federation::spawn(&state);
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Stopping server");
        shutdown.cancel();
    });
    let result = crate::endpoints::serve_local(Arc::clone(&state)).await;
    state.shutdown.cancel();
    let _ = ca_task.await;
    let _ = prune_task.await;
    let _ = tcp_task.await;
    for t in federation_tasks {
        let _ = t.await;
    }
    for t in notifier_tasks {
        let _ = t.await;
    }
    for t in extra {
        t.abort();
    }
    if let Some(t) = reopen_task {
        t.abort();
    }
    state.datastore.close().await;
    result
}

/// One line with what an operator needs first: where the server listens, its trust domain,
/// the datastore (type only: a connection string may hold a password) and the CA state.
async fn log_startup(state: &ServerState) {
    let c = &state.config;
    let (x509, x509_prepared, _) = state.ca.x509_states().await;
    let (jwt, _, _) = state.ca.jwt_states().await;
    let datastore = match state.datastore.backend() {
        spire_datastore::Backend::Sqlite => "sqlite3",
        spire_datastore::Backend::Postgres => "postgres",
        spire_datastore::Backend::Mysql => "mysql",
        _ => "sql",
    };
    let id = |a: &Option<crate::ca::AuthorityState>| {
        a.as_ref()
            .map_or_else(|| "none".to_owned(), |a| a.authority_id.clone())
    };
    tracing::info!(
        trust_domain = %state.trust_domain,
        address = %format!("{}:{}", c.bind_address, c.bind_port),
        socket_path = %c.socket_path.display(),
        data_dir = %c.data_dir.display(),
        datastore,
        ca_x509_authority = %id(&x509),
        ca_x509_expires_at = x509.as_ref().map_or(0, |a| a.expires_at),
        ca_x509_prepared = %id(&x509_prepared),
        ca_jwt_authority = %id(&jwt),
        upstream_authority = c.plugins.single("UpstreamAuthority").is_some(),
        "Server starting"
    );
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
