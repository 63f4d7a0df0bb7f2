//! The bundle endpoint (`federation.bundle_endpoint`): HTTPS `GET /` answers the local trust
//! domain's bundle as a SPIFFE bundle document with `spiffe_refresh_hint` and
//! `spiffe_sequence`.
//!
//! Profiles: `https_spiffe` presents the server's X509-SVID (swapped on every rotation);
//! `https_web` with `serving_cert_file` presents the certificate and key from disk, re-read
//! every `file_sync_interval` and swapped when they change (a bad pair is logged and the last
//! good one kept). No client certificate is requested.
//!
//! Mirrors `pkg/server/endpoints/bundle`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::sign::CertifiedKey;
use spire_config::{BundleEndpointConfig, BundleEndpointServing, ServingCertFile};
use tokio::net::TcpListener;

use crate::server::ServerState;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the bundle endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// ACME is not implemented.
    #[error(
        "federation.bundle_endpoint: the acme profile is not supported; use profile \"https_web\" with serving_cert_file, or \"https_spiffe\""
    )]
    AcmeUnsupported,
    /// The serving certificate files are unusable.
    #[error("federation.bundle_endpoint serving_cert_file: {0}")]
    CertFile(String),
    /// The server has no SVID to present.
    #[error("the CA manager produced no server SVID for the bundle endpoint")]
    NoServerSvid,
    /// TLS configuration failed.
    #[error("cannot build the bundle endpoint TLS configuration")]
    Tls(#[source] rustls::Error),
    /// The listener could not be bound.
    #[error("cannot listen on {addr} for the bundle endpoint")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Presents whatever key is currently in the slot.
#[derive(Debug, Default)]
struct SwapResolver(ArcSwapOption<CertifiedKey>);

impl rustls::server::ResolvesServerCert for SwapResolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load_full()
    }
}

fn certified_key(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<CertifiedKey, String> {
    if chain.is_empty() {
        return Err("no certificate".into());
    }
    let key = spire_tls::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("unusable private key: {e}"))?;
    let ck = CertifiedKey::new(chain, key);
    ck.keys_match()
        .map_err(|e| format!("the key does not match the certificate: {e}"))?;
    Ok(ck)
}

fn svid_key(svid: &crate::ca::ServerSvid) -> Result<CertifiedKey, String> {
    let key = svid
        .key
        .to_pkcs8_der()
        .map_err(|e| format!("cannot encode the server key: {e}"))?;
    certified_key(
        svid.chain
            .iter()
            .map(|c| rustls::pki_types::CertificateDer::from(c.clone()))
            .collect(),
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.to_vec().into()),
    )
}

/// Reads a PEM certificate chain and a PEM private key (PKCS#8, SEC1 or PKCS#1).
fn load_cert_files(cert: &Path, key: &Path) -> Result<(CertifiedKey, Vec<u8>), String> {
    let cert_pem = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let key_pem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let chain = spire_spiffe::parse_pem_certificates(&cert_pem)
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let blocks = pem::parse_many(&key_pem).map_err(|e| format!("{}: {e}", key.display()))?;
    let key_der = blocks
        .into_iter()
        .find_map(|b| {
            let der = b.contents().to_vec();
            match b.tag() {
                "PRIVATE KEY" => Some(rustls::pki_types::PrivateKeyDer::Pkcs8(der.into())),
                "EC PRIVATE KEY" => Some(rustls::pki_types::PrivateKeyDer::Sec1(der.into())),
                "RSA PRIVATE KEY" => Some(rustls::pki_types::PrivateKeyDer::Pkcs1(der.into())),
                _ => None,
            }
        })
        .ok_or_else(|| format!("{}: no PEM private key", key.display()))?;
    let ck = certified_key(
        chain
            .into_iter()
            .map(rustls::pki_types::CertificateDer::from)
            .collect(),
        key_der,
    )
    .map_err(|e| format!("{}: {e}", cert.display()))?;
    let mut fingerprint = cert_pem;
    fingerprint.extend_from_slice(&key_pem);
    Ok((ck, fingerprint))
}

/// Keeps `slot` filled with the server SVID.
fn follow_server_svid(
    state: &Arc<ServerState>,
    resolver: &Arc<SwapResolver>,
) -> Result<(), EndpointError> {
    let mut svids = state.ca.subscribe_server_svid();
    let current = svids.borrow_and_update().clone();
    let ck = current
        .as_deref()
        .ok_or(EndpointError::NoServerSvid)
        .and_then(|s| svid_key(s).map_err(|_| EndpointError::NoServerSvid))?;
    resolver.0.store(Some(Arc::new(ck)));
    let resolver = Arc::clone(resolver);
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = svids.changed() => if r.is_err() { return },
            }
            let svid = svids.borrow_and_update().clone();
            match svid.as_deref().map(svid_key) {
                Some(Ok(ck)) => {
                    resolver.0.store(Some(Arc::new(ck)));
                    tracing::debug!("Bundle endpoint SVID rotated");
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Cannot use the rotated SVID for the bundle endpoint")
                }
                None => {}
            }
        }
    });
    Ok(())
}

/// Keeps `slot` filled with the certificate files, re-reading them every sync interval.
fn follow_cert_files(
    state: &Arc<ServerState>,
    files: &ServingCertFile,
    resolver: &Arc<SwapResolver>,
) -> Result<(), EndpointError> {
    let (ck, mut last) = load_cert_files(&files.cert_file_path, &files.key_file_path)
        .map_err(EndpointError::CertFile)?;
    resolver.0.store(Some(Arc::new(ck)));
    let resolver = Arc::clone(resolver);
    let shutdown = state.shutdown.clone();
    let files = files.clone();
    let interval = files.file_sync_interval.max(Duration::from_millis(100));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match load_cert_files(&files.cert_file_path, &files.key_file_path) {
                Ok((_, fp)) if fp == last => {}
                Ok((ck, fp)) => {
                    resolver.0.store(Some(Arc::new(ck)));
                    last = fp;
                    tracing::info!(
                        cert_file_path = %files.cert_file_path.display(),
                        "Bundle endpoint serving certificate reloaded"
                    );
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "Cannot reload the bundle endpoint serving certificate; keeping the current one"
                ),
            }
        }
    });
    Ok(())
}

/// The body of `GET /`: the local bundle as a SPIFFE bundle document.
async fn bundle_document(state: &ServerState, refresh_hint: Duration) -> Result<String, String> {
    let stored = state
        .datastore
        .get_bundle(&state.trust_domain)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the local bundle does not exist yet")?;
    let mut bundle = spire_spiffe::Bundle::from(&stored);
    bundle.refresh_hint = Some(refresh_hint);
    bundle.to_json().map_err(|e| e.to_string())
}

async fn handle(
    state: Arc<ServerState>,
    refresh_hint: Duration,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let reply = |status: http::StatusCode, ctype: &str, body: String| {
        let mut resp = http::Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        if let Ok(v) = http::HeaderValue::from_str(ctype) {
            resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
        }
        resp
    };
    if req.method() != http::Method::GET {
        let mut resp = reply(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "405 method not allowed\n".into(),
        );
        resp.headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static("GET"));
        return Ok(resp);
    }
    if req.uri().path() != "/" {
        return Ok(reply(
            http::StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "404 page not found\n".into(),
        ));
    }
    Ok(match bundle_document(&state, refresh_hint).await {
        Ok(json) => reply(http::StatusCode::OK, "application/json", json),
        Err(e) => {
            tracing::error!(error = %e, "Unable to retrieve local bundle");
            reply(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                "500 unable to retrieve local bundle\n".into(),
            )
        }
    })
}

/// Binds the bundle endpoint and serves it until `state.shutdown`.
pub async fn serve(
    state: Arc<ServerState>,
    config: BundleEndpointConfig,
) -> Result<(), EndpointError> {
    let resolver = Arc::new(SwapResolver::default());
    match &config.serving {
        BundleEndpointServing::HttpsSpiffe => follow_server_svid(&state, &resolver)?,
        BundleEndpointServing::ServingCertFile(files) => {
            follow_cert_files(&state, files, &resolver)?
        }
        BundleEndpointServing::Acme(_) => return Err(EndpointError::AcmeUnsupported),
    }
    let mut tls = rustls::ServerConfig::builder_with_provider(spire_tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(EndpointError::Tls)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener =
        TcpListener::bind(config.address)
            .await
            .map_err(|source| EndpointError::Bind {
                addr: config.address,
                source,
            })?;
    let local = listener.local_addr().unwrap_or(config.address);
    tracing::info!(addr = %local, refresh_hint_s = config.refresh_hint.as_secs(), "Serving bundle endpoint");
    let refresh_hint = config.refresh_hint;
    loop {
        let (tcp, peer) = tokio::select! {
            _ = state.shutdown.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "Bundle endpoint accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "Bundle endpoint TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let shutdown = state.shutdown.clone();
            let svc = service_fn(move |req| handle(Arc::clone(&state), refresh_hint, req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .serve_connection(TokioIo::new(tls), svc);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = conn => if let Err(e) = r {
                    tracing::debug!(peer = %peer, error = %e, "Bundle endpoint connection failed");
                },
            }
        });
    }
}
