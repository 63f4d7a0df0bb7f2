//! The listeners: a Unix socket, plain HTTP, or HTTPS with a certificate reloaded from files.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use spire_config::{OidcConfig, OidcListen};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;

use crate::OidcError;
use crate::handler::{HandlerOptions, router};
use crate::source::KeyState;

/// Go's `:443` means every interface.
fn tcp_address(addr: &str) -> String {
    if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_owned()
    }
}

async fn bind_tcp(addr: &str) -> Result<TcpListener, OidcError> {
    let address = tcp_address(addr);
    TcpListener::bind(&address)
        .await
        .map_err(|source| OidcError::Listen { address, source })
}

fn serve_connection<IO>(io: IO, app: Router)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = TowerToHyperService::new(app);
        if let Err(error) = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), service)
            .await
        {
            tracing::debug!(%error, "HTTP connection ended with an error");
        }
    });
}

/// Serves until `shutdown` completes.
pub(crate) async fn serve(
    config: &OidcConfig,
    options: HandlerOptions,
    state: Arc<KeyState>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), OidcError> {
    tokio::pin!(shutdown);
    match &config.listen {
        OidcListen::UnixSocket(path) => {
            let listener = bind_unix(path)?;
            tracing::info!(path = %path.display(), domains = ?config.domains, "Serving OIDC discovery on a Unix socket");
            let app = router(options, state, false);
            loop {
                tokio::select! {
                    () = &mut shutdown => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => serve_connection(stream, app.clone()),
                        Err(error) => tracing::warn!(%error, "Failed to accept a connection"),
                    },
                }
            }
            let _ = std::fs::remove_file(path);
        }
        OidcListen::Insecure(addr) => {
            let listener = bind_tcp(addr).await?;
            let local = listener.local_addr().ok();
            tracing::info!(address = ?local, domains = ?config.domains, "Serving OIDC discovery over plain HTTP");
            let app = router(options, state, false);
            loop {
                tokio::select! {
                    () = &mut shutdown => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => serve_connection(stream, app.clone()),
                        Err(error) => tracing::warn!(%error, "Failed to accept a connection"),
                    },
                }
            }
        }
        OidcListen::ServingCertFile {
            cert_file_path,
            key_file_path,
            addr,
            file_sync_interval,
        } => {
            let resolver = Arc::new(FileCertResolver::load(cert_file_path, key_file_path)?);
            let reloader = tokio::spawn(reload_loop(Arc::clone(&resolver), *file_sync_interval));
            let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| OidcError::ServingCert {
                path: cert_file_path.display().to_string(),
                reason: e.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            let acceptor = TlsAcceptor::from(Arc::new(tls));
            let listener = bind_tcp(addr).await?;
            let local = listener.local_addr().ok();
            tracing::info!(address = ?local, domains = ?config.domains, "Serving OIDC discovery over HTTPS");
            let app = router(options, state, true);
            loop {
                tokio::select! {
                    () = &mut shutdown => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            let acceptor = acceptor.clone();
                            let app = app.clone();
                            tokio::spawn(async move {
                                match acceptor.accept(stream).await {
                                    Ok(tls) => serve_connection(tls, app),
                                    Err(error) => tracing::debug!(%error, "TLS handshake failed"),
                                }
                            });
                        }
                        Err(error) => tracing::warn!(%error, "Failed to accept a connection"),
                    },
                }
            }
            reloader.abort();
        }
    }
    Ok(())
}

fn bind_unix(path: &Path) -> Result<UnixListener, OidcError> {
    let listen_error = |source| OidcError::Listen {
        address: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(listen_error)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(listen_error(e)),
    }
    UnixListener::bind(path).map_err(listen_error)
}

/// Serves the certificate and key read from files, reloaded when either file changes.
#[derive(Debug)]
struct FileCertResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>)>,
}

fn modified(cert: &Path, key: &Path) -> Option<SystemTime> {
    let c = std::fs::metadata(cert).and_then(|m| m.modified()).ok()?;
    let k = std::fs::metadata(key).and_then(|m| m.modified()).ok()?;
    Some(c.max(k))
}

fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, OidcError> {
    let cert_error = |path: &Path, reason: String| OidcError::ServingCert {
        path: path.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| cert_error(cert_path, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(cert_path, e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_error(
            cert_path,
            "no CERTIFICATE block found".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| cert_error(key_path, format!("no usable private key: {e}")))?;
    let signing = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .map_err(|e| cert_error(key_path, e.to_string()))?;
    let certified = CertifiedKey::new(certs, signing);
    // A reload between the writes of the two files must not pair a new key with an old cert.
    certified.keys_match().map_err(|e| {
        cert_error(
            key_path,
            format!("the key does not match the certificate: {e}"),
        )
    })?;
    Ok(certified)
}

impl FileCertResolver {
    fn load(cert_path: &Path, key_path: &Path) -> Result<Self, OidcError> {
        let key = load_certified_key(cert_path, key_path)?;
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new((Arc::new(key), modified(cert_path, key_path))),
        })
    }

    fn reload_if_changed(&self) {
        let stamp = modified(&self.cert_path, &self.key_path);
        let known = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1;
        if stamp.is_none() || stamp == known {
            return;
        }
        match load_certified_key(&self.cert_path, &self.key_path) {
            Ok(key) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) =
                    (Arc::new(key), stamp);
                tracing::info!(path = %self.cert_path.display(), "Reloaded the serving certificate");
            }
            Err(error) => tracing::warn!(%error, "Failed to reload the serving certificate"),
        }
    }
}

impl ResolvesServerCert for FileCertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .0,
        ))
    }
}

async fn reload_loop(resolver: Arc<FileCertResolver>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        resolver.reload_if_changed();
    }
}
