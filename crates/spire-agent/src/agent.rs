//! [`run`]: the whole agent. Config → bootstrap trust → reuse the stored agent SVID or attest →
//! manager (sync, signing, rotation) → Workload API endpoints, until SIGINT/SIGTERM or until
//! the server rejects the agent for good.

use std::path::Path;
use std::sync::Arc;

use spire_config::{AgentConfig, TrustBundleFormat, TrustBundleSource};
use spire_spiffe::{Bundle, Clock, TrustDomain};
use spire_tls::{BundleSet, SharedIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::attestor::node::{self, NodeAttestor};
use crate::client::{self, IssuedSvid, ServerClient};
use crate::identity::{JwtSvidSource, SubscriberRegistry};
use crate::manager::keys::AgentKeyStore;
use crate::manager::{self, AgentSvid, Manager, ManagerConfig, ManagerError, ManagerParts};
use crate::storage::{self, AgentData};

/// Largest bootstrap bundle accepted from `trust_bundle_url`.
const MAX_BUNDLE_DOWNLOAD: usize = 4 << 20;

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The bootstrap trust bundle could not be loaded.
    #[error("cannot load the bootstrap trust bundle: {0}")]
    Bootstrap(String),
    /// The node attestor is not usable.
    #[error(transparent)]
    Attestor(#[from] node::NodeAttestorError),
    /// The agent key store is not usable.
    #[error(transparent)]
    Keys(#[from] manager::keys::KeyStoreError),
    /// The manager failed (attestation, rejection by the server, storage).
    #[error(transparent)]
    Manager(#[from] ManagerError),
    /// The agent state could not be written.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// The Workload API endpoints failed.
    #[error("workload endpoints: {0}")]
    Endpoints(String),
    /// The health or metrics listener could not start.
    #[error("telemetry")]
    Telemetry(#[source] spire_telemetry::TelemetryError),
}

/// `host:port` for the server, with brackets around a bare IPv6 address; several, separated by
/// commas, when `server_address` names several servers (the client fails over between them).
pub fn server_address(cfg: &AgentConfig) -> String {
    cfg.server_targets().join(",")
}

fn parse_bundle(
    td: &TrustDomain,
    format: TrustBundleFormat,
    bytes: &[u8],
    source: &str,
) -> Result<Bundle, AgentError> {
    let bundle = match format {
        TrustBundleFormat::Pem => Bundle::from_pem(td.clone(), bytes).map_err(|e| e.to_string()),
        TrustBundleFormat::Spiffe => {
            Bundle::from_json(td.clone(), bytes).map_err(|e| e.to_string())
        }
    }
    .map_err(|e| AgentError::Bootstrap(format!("{source}: {e}")))?;
    if bundle.x509_authorities.is_empty() {
        return Err(AgentError::Bootstrap(format!(
            "{source}: no X.509 authorities in the bundle"
        )));
    }
    Ok(bundle)
}

/// The bootstrap bundle from the configuration; `None` for `insecure_bootstrap`.
pub async fn bootstrap_bundle(cfg: &AgentConfig) -> Result<Option<Bundle>, AgentError> {
    match &cfg.trust_bundle {
        TrustBundleSource::Path(p) => {
            let bytes = std::fs::read(p).map_err(|e| {
                AgentError::Bootstrap(format!(
                    "cannot read trust_bundle_path {}: {e}",
                    p.display()
                ))
            })?;
            parse_bundle(
                &cfg.trust_domain,
                cfg.trust_bundle_format,
                &bytes,
                &p.display().to_string(),
            )
            .map(Some)
        }
        TrustBundleSource::Url { url, unix_socket } => {
            let bytes = http_get(url, unix_socket.as_deref()).await?;
            parse_bundle(&cfg.trust_domain, cfg.trust_bundle_format, &bytes, url).map(Some)
        }
        TrustBundleSource::InsecureBootstrap => Ok(None),
    }
}

/// Files holding the system's Web PKI roots, first found wins (`SSL_CERT_FILE` overrides).
const SYSTEM_ROOTS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The Web PKI roots used to download the bootstrap bundle over HTTPS.
fn web_pki_roots() -> Result<Vec<Vec<u8>>, String> {
    let path = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            SYSTEM_ROOTS
                .iter()
                .map(std::path::PathBuf::from)
                .find(|p| p.is_file())
        })
        .ok_or("no system CA file found (set SSL_CERT_FILE)")?;
    let pem = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    spire_spiffe::parse_pem_certificates(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// An HTTP/1.0 GET of `url` (`http://`, or `https://` verified with `roots`, optionally over a
/// Unix socket); returns the body of a 200 answer.
async fn http_get(url: &str, unix_socket: Option<&Path>) -> Result<Vec<u8>, AgentError> {
    http_get_with_roots(url, unix_socket, None).await
}

async fn http_get_with_roots(
    url: &str,
    unix_socket: Option<&Path>,
    roots: Option<Vec<Vec<u8>>>,
) -> Result<Vec<u8>, AgentError> {
    let err = |m: String| AgentError::Bootstrap(format!("trust_bundle_url {url}: {m}"));
    let uri: http::Uri = url.parse().map_err(|e| err(format!("invalid URL: {e}")))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(err("expected an http:// or https:// URL".into())),
    };
    let host = uri
        .host()
        .ok_or_else(|| err("URL has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: spire-agent\r\nAccept: */*\r\n\r\n"
    );
    let connector = if tls {
        let roots = match roots {
            Some(r) => r,
            None => web_pki_roots().map_err(err)?,
        };
        let mut store = rustls::RootCertStore::empty();
        for der in roots {
            // Some system bundles hold certificates rustls cannot use; skip those.
            let _ = store.add(rustls::pki_types::CertificateDer::from(der));
        }
        let config = rustls::ClientConfig::builder_with_provider(spire_tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| err(e.to_string()))?
            .with_root_certificates(store)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| err(format!("invalid server name: {e}")))?;
        Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
    } else {
        None
    };
    async fn exchange<S>(mut s: S, request: &str) -> std::io::Result<Vec<u8>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        s.write_all(request.as_bytes()).await?;
        s.flush().await?;
        let mut buf = Vec::new();
        (&mut s)
            .take(MAX_BUNDLE_DOWNLOAD as u64 + 1)
            .read_to_end(&mut buf)
            .await?;
        Ok(buf)
    }
    let fetch = async {
        match (unix_socket, connector) {
            (Some(sock), None) => {
                exchange(tokio::net::UnixStream::connect(sock).await?, &request).await
            }
            (Some(sock), Some((c, name))) => {
                let s = tokio::net::UnixStream::connect(sock).await?;
                exchange(c.connect(name, s).await?, &request).await
            }
            (None, None) => {
                let s = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                exchange(s, &request).await
            }
            (None, Some((c, name))) => {
                let s = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                exchange(c.connect(name, s).await?, &request).await
            }
        }
    };
    let buf = tokio::time::timeout(client::RPC_TIMEOUT, fetch)
        .await
        .map_err(|_| err("timed out".into()))?
        .map_err(|e| err(e.to_string()))?;
    if buf.len() > MAX_BUNDLE_DOWNLOAD {
        return Err(err(format!(
            "answer larger than {MAX_BUNDLE_DOWNLOAD} bytes"
        )));
    }
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| err("malformed HTTP answer".into()))?;
    let head = String::from_utf8_lossy(&buf[..split]);
    let status = head.lines().next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(err(format!("server answered {status:?}, expected 200")));
    }
    Ok(buf[split + 4..].to_vec())
}

/// The stored agent SVID, if it can be reused: present, unexpired, in the trust domain, and its
/// key still in the key store.
fn reusable_svid(
    stored: &AgentData,
    keys: &AgentKeyStore,
    td: &TrustDomain,
    clock: &dyn Clock,
    availability_target: Option<std::time::Duration>,
) -> Option<AgentSvid> {
    let svid = match IssuedSvid::from_chain(stored.svid_chain.clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "Stored agent SVID is unusable; attesting again");
            return None;
        }
    };
    if svid.spiffe_id.trust_domain() != td {
        tracing::warn!(spiffe_id = %svid.spiffe_id, "Stored agent SVID is for another trust domain; attesting again");
        return None;
    }
    if clock.now() >= svid.not_after {
        tracing::info!(spiffe_id = %svid.spiffe_id, "Stored agent SVID has expired; attesting again");
        return None;
    }
    let Some(key) = keys.current() else {
        tracing::info!(spiffe_id = %svid.spiffe_id, "Agent key not found in the KeyManager; attesting again");
        return None;
    };
    if svid.public_key_spki() != Some(key.public_key().spki_der()) {
        tracing::warn!(spiffe_id = %svid.spiffe_id, "Stored agent SVID does not match the agent key; attesting again");
        return None;
    }
    Some(AgentSvid::new(
        svid,
        key,
        stored.reattestable,
        availability_target,
    ))
}

/// Runs the agent until SIGINT/SIGTERM (→ `Ok`) or a fatal error.
pub async fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    let clock: Arc<dyn Clock> = Arc::new(spire_spiffe::SystemClock);
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("Received shutdown signal; stopping");
            shutdown.cancel();
        });
    }
    run_with(cfg, clock, shutdown).await
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}

/// [`run`] with an explicit clock and shutdown token.
pub async fn run_with(
    cfg: AgentConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    let td = cfg.trust_domain.clone();
    let mcfg = ManagerConfig {
        trust_domain: td.clone(),
        server_address: server_address(&cfg),
        data_dir: cfg.data_dir.clone(),
        sync_interval: cfg.experimental.sync_interval,
        x509_svid_cache_max_size: cfg.x509_svid_cache_max_size,
        workload_key_type: key_type(cfg.workload_x509_svid_key_type),
        availability_target: cfg.availability_target,
    };
    tracing::info!(
        trust_domain = %td,
        server_address = %mcfg.server_address,
        socket_path = %cfg.socket_path.display(),
        admin_socket_path = %cfg
            .admin_socket_path
            .as_ref()
            .map_or_else(|| "none".to_owned(), |p| p.display().to_string()),
        data_dir = %cfg.data_dir.display(),
        version = env!("CARGO_PKG_VERSION"),
        "Starting agent"
    );
    let keys = Arc::new(AgentKeyStore::from_plugin(
        cfg.plugins.single("KeyManager"),
        &cfg.data_dir,
    )?);
    let attestor: Result<Arc<dyn NodeAttestor>, node::NodeAttestorError> =
        node::from_config(&cfg).map(Arc::from);

    let stored = match storage::load(&cfg.data_dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "Ignoring unreadable agent data");
            None
        }
    };
    let reused = stored
        .as_ref()
        .and_then(|s| reusable_svid(s, &keys, &td, clock.as_ref(), cfg.availability_target));

    let (agent, bundle) = match (reused, stored) {
        (Some(agent), Some(stored)) => {
            tracing::info!(
                spiffe_id = %agent.svid.spiffe_id,
                expires_at = spire_spiffe::to_unix_secs(agent.svid.not_after),
                "Reusing the stored agent SVID"
            );
            (agent, stored.bundle)
        }
        (_, stored) => {
            if !keys.is_persistent() {
                tracing::debug!("Memory KeyManager: the agent attests at every start");
            }
            let attestor = attestor
                .as_ref()
                .map_err(|e| AgentError::Manager(ManagerError::NoAttestor(e.to_string())))?;
            // A bundle received earlier wins over the bootstrap source.
            let initial = match stored {
                Some(s) => Some(s.bundle),
                None => bootstrap_bundle(&cfg).await?,
            };
            let bundles = match &initial {
                Some(b) => Some(BundleSet::new()).map(|set| {
                    set.set_bundle(b)
                        .map(|()| set)
                        .map_err(|e| AgentError::Bootstrap(e.to_string()))
                }),
                None => {
                    tracing::warn!("insecure_bootstrap is set: the server's certificate is not verified for this first connection");
                    None
                }
            }
            .transpose()?;
            let (att, key, channel) = manager::attest_agent(
                &mcfg,
                bundles.as_ref(),
                attestor.as_ref(),
                &keys,
                clock.clone(),
            )
            .await?;
            let bundle = client::get_bundle_on(channel)
                .await
                .map_err(ManagerError::from)?;
            if bundle.trust_domain != td {
                return Err(AgentError::Bootstrap(format!(
                    "server sent the bundle of {} instead of {td}",
                    bundle.trust_domain
                )));
            }
            keys.commit(key.clone())?;
            storage::save(
                &cfg.data_dir,
                &AgentData {
                    svid_chain: att.svid.cert_chain.clone(),
                    bundle: bundle.clone(),
                    reattestable: att.reattestable,
                },
            )?;
            (
                AgentSvid::new(att.svid, key, att.reattestable, cfg.availability_target),
                bundle,
            )
        }
    };

    let tls_bundles = BundleSet::new();
    tls_bundles
        .set_bundle(&bundle)
        .map_err(|e| AgentError::Bootstrap(format!("bundle unusable for TLS: {e}")))?;
    let identity = SharedIdentity::new(agent.tls_identity()?);
    let tls = client::tls_config(&td, Some(&tls_bundles), identity.clone(), clock.clone())
        .map_err(ManagerError::from)?;
    let server = Arc::new(
        ServerClient::new(
            mcfg.server_address.clone(),
            tls,
            cfg.experimental.use_sync_authorized_entries,
        )
        .map_err(ManagerError::from)?,
    );
    {
        // Best effort, in the background: a server that is down must not delay the start.
        let server = server.clone();
        let serial = bundle.sequence_number;
        tokio::spawn(async move {
            if let Err(e) = server.post_status(serial).await {
                tracing::warn!(error = %e, "PostStatus failed");
            }
        });
    }

    let health_identity = identity.clone();
    let admin_identity = identity.clone();
    // Workloads subscribed through the endpoints; the manager signs what they match.
    let subscribers = SubscriberRegistry::new();
    let (manager, snapshots) = Manager::new(ManagerParts {
        cfg: mcfg,
        clock: clock.clone(),
        client: server as Arc<dyn client::ServerApi>,
        identity,
        tls_bundles,
        keys,
        attestor: attestor.ok(),
        agent,
        bundle,
        subscribers: subscribers.clone(),
    });
    let jwt: Arc<dyn JwtSvidSource> = Arc::new(manager.jwt_source(cfg.jwt_svid_cache_max_size));
    let admin = crate::endpoints::admin::AdminParts {
        authorized_delegates: cfg.authorized_delegates.clone(),
        agent_identity: Some(admin_identity),
        status: manager.status(),
    };
    let _health = start_health(
        &cfg.health_checks,
        health_identity,
        manager.status(),
        clock.clone(),
        cfg.experimental.sync_interval,
    )
    .await?;
    let mut manager_task = tokio::spawn(manager.run(shutdown.clone()));

    let endpoints = if cfg.disable_workload_api {
        tracing::info!("Workload API disabled");
        None
    } else {
        let ecfg = crate::endpoints::EndpointsConfig::from_agent_config(&cfg)
            .map_err(|e| AgentError::Endpoints(e.to_string()))?;
        Some(tokio::spawn(crate::endpoints::serve_with_admin(
            ecfg,
            snapshots,
            jwt,
            subscribers,
            admin,
            shutdown.clone(),
        )))
    };

    let result = match endpoints {
        Some(mut ep) => {
            tokio::select! {
                r = &mut manager_task => {
                    shutdown.cancel();
                    let _ = ep.await;
                    flatten_manager(r)
                }
                r = &mut ep => {
                    shutdown.cancel();
                    let m = manager_task.await;
                    match r {
                        Ok(Ok(())) => flatten_manager(m),
                        Ok(Err(e)) => Err(AgentError::Endpoints(e.to_string())),
                        Err(e) => Err(AgentError::Endpoints(e.to_string())),
                    }
                }
            }
        }
        None => {
            let r = manager_task.await;
            shutdown.cancel();
            flatten_manager(r)
        }
    };
    tracing::info!("Agent stopped");
    result
}

/// How many sync intervals may pass without a successful sync before the agent stops being
/// ready.
const READY_SYNC_INTERVALS: u32 = 3;

/// Whether the last successful sync (`last`) is recent enough for the agent to be ready: at
/// most [`READY_SYNC_INTERVALS`] × `sync_interval` ago, plus a second because sync times are
/// kept in whole seconds.
fn synced_recently(
    last: Option<std::time::SystemTime>,
    now: std::time::SystemTime,
    sync_interval: std::time::Duration,
) -> bool {
    let window =
        sync_interval.saturating_mul(READY_SYNC_INTERVALS) + std::time::Duration::from_secs(1);
    last.is_some_and(|t| now.duration_since(t).map_or(true, |age| age <= window))
}

/// The `health_checks` listener: live while the agent holds an SVID; ready while it also
/// synced with the server recently (see [`synced_recently`]): an agent that cannot reach the
/// server serves what it has, but is not ready.
async fn start_health(
    h: &spire_config::HealthChecks,
    identity: SharedIdentity,
    status: Arc<crate::identity::AgentStatus>,
    clock: Arc<dyn Clock>,
    sync_interval: std::time::Duration,
) -> Result<Option<spire_telemetry::health::HealthServer>, AgentError> {
    if !h.listener_enabled {
        return Ok(None);
    }
    let state = move || {
        let svid = identity.load().is_some();
        let synced = synced_recently(status.last_sync_success(), clock.now(), sync_interval);
        (svid, synced)
    };
    let ready_state = state.clone();
    let config = spire_telemetry::health::HealthListenerConfig {
        bind_address: h.bind_address.clone(),
        bind_port: h.bind_port,
        live_path: h.live_path.clone(),
        ready_path: h.ready_path.clone(),
    };
    let server = spire_telemetry::health::start(
        &config,
        move || {
            let (svid, synced) = state();
            async move {
                (
                    svid,
                    serde_json::json!({ "agent_svid": svid, "synced": synced }),
                )
            }
        },
        move || {
            let (svid, synced) = ready_state();
            async move {
                (
                    svid && synced,
                    serde_json::json!({ "agent_svid": svid, "synced": synced }),
                )
            }
        },
    )
    .await
    .map_err(AgentError::Telemetry)?;
    Ok(Some(server))
}

fn flatten_manager(
    r: Result<Result<(), ManagerError>, tokio::task::JoinError>,
) -> Result<(), AgentError> {
    match r {
        Ok(r) => r.map_err(AgentError::from),
        Err(e) => Err(AgentError::Manager(ManagerError::Crypto(format!(
            "manager task failed: {e}"
        )))),
    }
}

fn key_type(k: spire_config::KeyType) -> spire_crypto::KeyType {
    match k {
        spire_config::KeyType::Rsa2048 => spire_crypto::KeyType::Rsa2048,
        spire_config::KeyType::Rsa4096 => spire_crypto::KeyType::Rsa4096,
        spire_config::KeyType::EcP384 => spire_crypto::KeyType::EcP384,
        _ => spire_crypto::KeyType::EcP256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_a_sync_within_three_intervals() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let secs = std::time::Duration::from_secs;
        assert!(!synced_recently(None, now, secs(5)));
        assert!(synced_recently(Some(now), now, secs(5)));
        assert!(synced_recently(Some(now - secs(16)), now, secs(5)));
        assert!(!synced_recently(Some(now - secs(17)), now, secs(5)));
        assert!(!synced_recently(Some(now - secs(5)), now, secs(1)));
        // A sync stamped in the future (clock step) counts as recent.
        assert!(synced_recently(Some(now + secs(60)), now, secs(1)));
    }

    #[tokio::test]
    async fn http_get_reads_a_200_body_and_rejects_others() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for answer in [
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello",
                "HTTP/1.0 404 Not Found\r\n\r\nnope",
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                assert!(
                    std::str::from_utf8(&buf[..n])
                        .unwrap()
                        .starts_with("GET /b?x=1 HTTP/1.0")
                );
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let url = format!("http://{addr}/b?x=1");
        assert_eq!(http_get(&url, None).await.unwrap(), b"hello");
        let err = http_get(&url, None).await.unwrap_err();
        assert!(err.to_string().contains("404"), "{err}");
        server.await.unwrap();
        assert!(http_get("ftp://example.org/", None).await.is_err());
    }

    #[tokio::test]
    async fn https_get_verifies_the_server_against_the_roots() {
        let ca = spire_testkit::TestCa::new("web root");
        let leaf = ca.issue(&spire_testkit::LeafSpec::new("localhost").dns("localhost"));
        let chain = spire_spiffe::parse_pem_certificates(leaf.chain_pem.as_bytes()).unwrap();
        let key = spire_crypto::PrivateKey::from_pem(&leaf.key_pem).unwrap();
        let pkcs8 = key.to_pkcs8_der().unwrap().to_vec();
        let config = rustls::ServerConfig::builder_with_provider(spire_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                chain
                    .into_iter()
                    .map(rustls::pki_types::CertificateDer::from)
                    .collect(),
                rustls::pki_types::PrivateKeyDer::Pkcs8(pkcs8.into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nbundle").await;
                    let _ = s.shutdown().await;
                });
            }
        });
        let url = format!("https://localhost:{port}/b");
        let root = ca.cert_der().to_vec();
        let body = http_get_with_roots(&url, None, Some(vec![root]))
            .await
            .unwrap();
        assert_eq!(body, b"bundle");
        let other = spire_testkit::TestCa::new("other root").cert_der().to_vec();
        let err = http_get_with_roots(&url, None, Some(vec![other]))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("trust_bundle_url"), "{err}");
    }

    #[test]
    fn ipv6_server_address_is_bracketed() {
        let text = r#"agent {
            trust_domain = "example.org"
            server_address = "::1"
            server_port = 8081
            insecure_bootstrap = true
        }
        plugins {
            KeyManager "memory" {
                plugin_data {}
            }
            NodeAttestor "join_token" {
                plugin_data {}
            }
            WorkloadAttestor "unix" {
                plugin_data {}
            }
        }"#;
        let cfg = AgentConfig::parse(text, "t", &Default::default()).unwrap();
        assert_eq!(server_address(&cfg), "[::1]:8081");
    }
}
