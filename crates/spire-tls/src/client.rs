//! Client-side TLS: authenticate the server by SPIFFE ID, optionally present our SVID, and
//! build tonic channels over it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use spire_spiffe::{Clock, SpiffeId, SystemClock, TrustDomain};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::bundle::BundleSet;
use crate::error::{SvidError, TlsError};
use crate::identity::{IdentityResolver, SharedIdentity};
use crate::server::ErrorChain;
use crate::svid::{self, PeerMatcher};
use crate::time::ClockTime;

/// How the client authenticates the server.
#[derive(Clone, Debug)]
pub enum ServerAuth {
    /// Validate the server's chain against the bundle of its trust domain, then require its
    /// SPIFFE ID to match `expected` (normally [`PeerMatcher::SpireServer`]).
    Verify {
        /// The trusted roots, read at each handshake.
        bundles: BundleSet,
        /// The acceptable server IDs.
        expected: PeerMatcher,
    },
    /// SPIRE's `insecure_bootstrap`: accept any chain, but the server's leaf must still be an
    /// X509-SVID whose SPIFFE ID is in `trust_domain`, and the handshake signature must verify.
    /// Only for fetching the first bundle; never for regular traffic.
    InsecureBootstrap {
        /// The trust domain the server must belong to.
        trust_domain: TrustDomain,
    },
}

/// Options for [`client_config`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Our SVID, presented when the server asks for a client certificate and the slot is not
    /// empty. Rotating it affects the next handshake.
    pub identity: SharedIdentity,
    /// The time source for certificate validity.
    pub clock: Arc<dyn Clock>,
}

impl Default for ClientOptions {
    /// No client certificate, the system clock.
    fn default() -> Self {
        ClientOptions {
            identity: SharedIdentity::empty(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Builds the client's rustls config: authenticates the server per `server_auth`, presents the
/// identity in `options.identity` if any, negotiates ALPN `h2`, and disables session
/// resumption and early data.
pub fn client_config(
    server_auth: ServerAuth,
    options: ClientOptions,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = crate::provider();
    let verifier = SpiffeServerCertVerifier::new(server_auth);
    let mut config =
        ClientConfig::builder_with_details(provider, ClockTime::provider(options.clock))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(IdentityResolver(options.identity)));
    config.alpn_protocols = vec![crate::ALPN_H2.to_vec()];
    config.resumption = Resumption::disabled();
    config.enable_early_data = false;
    Ok(Arc::new(config))
}

/// A rustls server-certificate verifier that authenticates the server by SPIFFE ID. The DNS
/// name the client dialed is ignored.
pub struct SpiffeServerCertVerifier {
    auth: ServerAuth,
    algs: WebPkiSupportedAlgorithms,
}

impl SpiffeServerCertVerifier {
    /// A verifier applying `auth`.
    pub fn new(auth: ServerAuth) -> Self {
        SpiffeServerCertVerifier {
            auth,
            algs: crate::provider().signature_verification_algorithms,
        }
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<SpiffeId, SvidError> {
        match &self.auth {
            ServerAuth::Verify { bundles, expected } => {
                let id = svid::verify_chain(
                    bundles,
                    end_entity,
                    intermediates,
                    now,
                    webpki::KeyUsage::server_auth(),
                    self.algs.all,
                )?;
                expected.check(id)
            }
            ServerAuth::InsecureBootstrap { trust_domain } => {
                let id = svid::leaf_spiffe_id(end_entity)?;
                PeerMatcher::MemberOf(trust_domain.clone()).check(id)
            }
        }
    }
}

impl ServerCertVerifier for SpiffeServerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.verify(end_entity, intermediates, now) {
            Ok(id) => {
                if matches!(self.auth, ServerAuth::InsecureBootstrap { .. }) {
                    tracing::warn!(spiffe_id = %id, "Server certificate accepted without chain validation (insecure bootstrap)");
                } else {
                    tracing::debug!(spiffe_id = %id, "Server X509-SVID verified");
                }
                Ok(ServerCertVerified::assertion())
            }
            Err(e) => {
                tracing::warn!(error = %ErrorChain(&e), "Server X509-SVID rejected");
                Err(svid::to_rustls_error(e))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl fmt::Debug for SpiffeServerCertVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerCertVerifier")
            .field("auth", &self.auth)
            .finish()
    }
}

/// The time [`connect`] and [`connect_lazy`] allow for TCP connect plus TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects a tonic [`Channel`] to `address` (`host:port`) over TLS with `config` (from
/// [`client_config`]). The channel reconnects on its own, running a fresh handshake (with the
/// then-current identity and bundle) each time.
pub async fn connect(address: &str, config: Arc<ClientConfig>) -> Result<Channel, TlsError> {
    endpoint(address)?
        .connect_with_connector(SpiffeConnector::new(config))
        .await
        .map_err(|source| TlsError::Connect {
            address: address.to_owned(),
            source,
        })
}

/// Like [`connect`], but connects on first use instead of now.
pub fn connect_lazy(address: &str, config: Arc<ClientConfig>) -> Result<Channel, TlsError> {
    Ok(endpoint(address)?.connect_with_connector_lazy(SpiffeConnector::new(config)))
}

fn endpoint(address: &str) -> Result<Endpoint, TlsError> {
    // The scheme is http because TLS is done by our connector, not by tonic.
    Endpoint::from_shared(format!("http://{address}"))
        .map(|e| e.connect_timeout(CONNECT_TIMEOUT))
        .map_err(|source| TlsError::InvalidAddress {
            address: address.to_owned(),
            source,
        })
}

/// A tower connector for `Endpoint::connect_with_connector`: dials TCP to the URI's host and
/// port and runs the TLS handshake with the given config.
#[derive(Clone)]
pub struct SpiffeConnector {
    tls: TlsConnector,
}

impl SpiffeConnector {
    /// A connector using `config` (from [`client_config`]).
    pub fn new(config: Arc<ClientConfig>) -> Self {
        SpiffeConnector {
            tls: TlsConnector::from(config),
        }
    }
}

impl fmt::Debug for SpiffeConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeConnector").finish_non_exhaustive()
    }
}

/// The connection type produced by [`SpiffeConnector`].
pub type ClientTlsStream = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower::Service<Uri> for SpiffeConnector {
    type Response = ClientTlsStream;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let invalid = |what: &str| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("server uri {uri} has no {what}"),
                )
            };
            let host = uri
                .host()
                .ok_or_else(|| invalid("host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().ok_or_else(|| invalid("port"))?;
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            // The server is authenticated by SPIFFE ID; the name only feeds SNI.
            let name = ServerName::try_from(host).unwrap_or_else(|_| {
                // Not a valid TLS server name: a placeholder IP, for which no SNI is sent.
                ServerName::from(std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST))
            });
            let stream = tls.connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        })
    }
}
