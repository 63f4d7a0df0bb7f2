//! Fetching a foreign trust domain's bundle from its bundle endpoint (SPIFFE Federation, client
//! side), with either endpoint profile.
//!
//! * `https_spiffe`: the endpoint must present an X509-SVID whose SPIFFE ID is exactly the
//!   relationship's `endpoint_spiffe_id`, validated against the bundle we hold for that ID's
//!   trust domain (bootstrapped with `bundle set` or the relationship's `trust_domain_bundle`,
//!   then kept current by this client when the endpoint serves its own trust domain).
//! * `https_web`: Web PKI. The roots are read from the file named by `SSL_CERT_FILE` when set
//!   (the standard OpenSSL/Go override, which tests use to trust a test web CA), otherwise from
//!   the system CA file.
//!
//! An answer is accepted only if it is a 200 with a body of at most [`MAX_BUNDLE_SIZE`] bytes
//! that parses as a SPIFFE bundle whose X.509 authorities do not name another trust domain.
//!
//! Mirrors `pkg/server/bundle/client/client.go`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use spire_datastore::{self as ds, BundleEndpointProfile, DataStore};
use spire_spiffe::{Bundle, Clock, TrustDomain};
use spire_tls::{BundleSet, ClientOptions, PeerMatcher, ServerAuth};

/// Largest bundle document accepted from an endpoint.
pub const MAX_BUNDLE_SIZE: usize = 4 * 1024 * 1024;

/// How long one fetch (connect, handshake, request, body) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// System CA files tried in order when `SSL_CERT_FILE` is unset.
const SYSTEM_ROOTS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Why a bundle could not be fetched; the message names the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The relationship's URL is unusable.
    #[error("invalid bundle endpoint URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// `https_spiffe` without a bundle for the endpoint's trust domain.
    #[error(
        "no bundle for trust domain {0:?} to authenticate the endpoint: set one with `spire-server bundle set` or the relationship's trust domain bundle"
    )]
    NoBootstrapBundle(TrustDomain),
    /// The Web PKI roots could not be loaded.
    #[error("cannot load the Web PKI roots: {0}")]
    WebRoots(String),
    /// Reading the stored bundle failed.
    #[error("cannot read the stored bundle")]
    DataStore(#[source] ds::Error),
    /// TLS configuration failed.
    #[error("cannot build the TLS client configuration")]
    Tls(#[source] spire_tls::TlsError),
    /// Connecting or the TLS handshake failed (bad certificate, wrong SPIFFE ID, expired).
    #[error("cannot connect to the bundle endpoint")]
    Connect(#[source] std::io::Error),
    /// The HTTP exchange failed.
    #[error("HTTP exchange with the bundle endpoint failed")]
    Http(#[source] hyper::Error),
    /// The endpoint did not answer in time.
    #[error("the bundle endpoint did not answer within {}s", FETCH_TIMEOUT.as_secs())]
    Timeout,
    /// Not a 200 answer.
    #[error("the bundle endpoint answered HTTP {0}, expected 200")]
    Status(u16),
    /// The endpoint redirected too often.
    #[error("the bundle endpoint redirected more than {MAX_REDIRECTS} times")]
    TooManyRedirects,
    /// The body exceeds [`MAX_BUNDLE_SIZE`].
    #[error("the bundle endpoint answered more than {MAX_BUNDLE_SIZE} bytes")]
    TooLarge,
    /// Reading the body failed.
    #[error("cannot read the answer body: {0}")]
    Body(String),
    /// The body is not a SPIFFE bundle.
    #[error("the answer is not a valid SPIFFE bundle")]
    Parse(#[source] spire_spiffe::BundleError),
    /// An X.509 authority names another trust domain.
    #[error("the bundle holds an X.509 authority of trust domain {found:?}, expected {expected:?}")]
    WrongTrustDomain {
        /// The relationship's trust domain.
        expected: String,
        /// The trust domain named by the authority.
        found: String,
    },
}

/// Loads the Web PKI roots (`SSL_CERT_FILE`, else the system CA file).
pub fn web_roots() -> Result<rustls::RootCertStore, FetchError> {
    let path = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            SYSTEM_ROOTS
                .iter()
                .map(std::path::PathBuf::from)
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            FetchError::WebRoots("no system CA file found (set SSL_CERT_FILE)".into())
        })?;
    let pem = std::fs::read(&path)
        .map_err(|e| FetchError::WebRoots(format!("{}: {e}", path.display())))?;
    let certs = spire_spiffe::parse_pem_certificates(&pem)
        .map_err(|e| FetchError::WebRoots(format!("{}: {e}", path.display())))?;
    let mut store = rustls::RootCertStore::empty();
    for der in certs {
        // System bundles may hold certificates rustls cannot use; skip those.
        let _ = store.add(rustls::pki_types::CertificateDer::from(der));
    }
    if store.is_empty() {
        return Err(FetchError::WebRoots(format!(
            "{}: no usable certificates",
            path.display()
        )));
    }
    Ok(store)
}

/// The TLS client configuration for a relationship's profile.
async fn tls_config(
    datastore: &DataStore,
    profile: &BundleEndpointProfile,
    clock: &Arc<dyn Clock>,
) -> Result<Arc<rustls::ClientConfig>, FetchError> {
    let mut config = match profile {
        BundleEndpointProfile::HttpsSpiffe { endpoint_spiffe_id } => {
            let td = endpoint_spiffe_id.trust_domain();
            let stored = datastore
                .get_bundle(td)
                .await
                .map_err(FetchError::DataStore)?
                .filter(|b| !b.x509_authorities.is_empty())
                .ok_or_else(|| FetchError::NoBootstrapBundle(td.clone()))?;
            let bundles = BundleSet::new();
            bundles
                .set_roots(
                    td.clone(),
                    stored.x509_authorities.iter().map(|a| a.der.clone()),
                )
                .map_err(FetchError::Tls)?;
            let config = spire_tls::client_config(
                ServerAuth::Verify {
                    bundles,
                    expected: PeerMatcher::Exact(endpoint_spiffe_id.clone()),
                },
                ClientOptions {
                    identity: spire_tls::SharedIdentity::empty(),
                    clock: Arc::clone(clock),
                },
            )
            .map_err(FetchError::Tls)?;
            (*config).clone()
        }
        BundleEndpointProfile::HttpsWeb => {
            let roots = web_roots()?;
            rustls::ClientConfig::builder_with_provider(spire_tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| FetchError::Tls(spire_tls::TlsError::Config(e)))?
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Most redirects followed in one fetch.
const MAX_REDIRECTS: usize = 3;

/// What one HTTP exchange produced.
enum Exchange {
    /// A 200 body.
    Body(Bytes),
    /// A redirect to this location.
    Redirect(String),
}

/// Where a URL points: host, port, `Host` header value, path.
struct Target {
    host: String,
    port: u16,
    authority: String,
    path: String,
}

fn target(url: &str) -> Result<Target, FetchError> {
    let bad = |reason: &str| FetchError::Url {
        url: url.to_owned(),
        reason: reason.into(),
    };
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("the scheme must be https"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("user info is not allowed"));
    }
    Ok(Target {
        host: authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: authority.port_u16().unwrap_or(443),
        authority: authority.as_str().to_owned(),
        path: uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned()),
    })
}

async fn exchange(url: &str, config: Arc<rustls::ClientConfig>) -> Result<Exchange, FetchError> {
    let t = target(url)?;
    let server_name = ServerName::try_from(t.host.clone()).map_err(|_| FetchError::Url {
        url: url.to_owned(),
        reason: "the host is not a valid name".into(),
    })?;
    let tcp = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(FetchError::Connect)?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(FetchError::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(FetchError::Http)?;
    let conn = tokio::spawn(conn);
    let result = async {
        let request = http::Request::get(t.path.as_str())
            .header(http::header::HOST, t.authority.as_str())
            .header(http::header::USER_AGENT, "spire-server")
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|_| FetchError::Url {
                url: url.to_owned(),
                reason: "cannot build a request for this URL".into(),
            })?;
        let response = sender
            .send_request(request)
            .await
            .map_err(FetchError::Http)?;
        let status = response.status();
        if status.is_redirection()
            && let Some(location) = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
        {
            return Ok(Exchange::Redirect(resolve(url, location)));
        }
        if status != http::StatusCode::OK {
            return Err(FetchError::Status(status.as_u16()));
        }
        let declared = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BUNDLE_SIZE as u64) {
            return Err(FetchError::TooLarge);
        }
        let body = Limited::new(response.into_body(), MAX_BUNDLE_SIZE)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    FetchError::TooLarge
                } else {
                    FetchError::Body(e.to_string())
                }
            })?;
        Ok(Exchange::Body(body.to_bytes()))
    }
    .await;
    conn.abort();
    result
}

/// A redirect `location` relative to `base` (absolute URLs and absolute paths).
fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    match target(base) {
        Ok(t) if location.starts_with('/') => format!("https://{}{location}", t.authority),
        Ok(t) => {
            let dir = t.path.rsplit_once('/').map_or("", |(d, _)| d);
            format!("https://{}{dir}/{location}", t.authority)
        }
        Err(_) => location.to_owned(),
    }
}

/// Fetches the bundle of `rel.trust_domain` from its endpoint and checks it. Redirects are
/// followed (the same authentication applies to every hop) but never remembered: the next
/// fetch starts from the configured URL again.
pub async fn fetch_bundle(
    datastore: &DataStore,
    rel: &ds::FederationRelationship,
    clock: &Arc<dyn Clock>,
) -> Result<Bundle, FetchError> {
    target(&rel.bundle_endpoint_url)?;
    let config = tls_config(datastore, &rel.profile, clock).await?;
    let fetch = async {
        let mut url = rel.bundle_endpoint_url.clone();
        for _ in 0..=MAX_REDIRECTS {
            match exchange(&url, Arc::clone(&config)).await? {
                Exchange::Body(body) => return Ok(body),
                Exchange::Redirect(next) => url = next,
            }
        }
        Err(FetchError::TooManyRedirects)
    };
    let body = tokio::time::timeout(FETCH_TIMEOUT, fetch)
        .await
        .map_err(|_| FetchError::Timeout)??;
    parse_bundle(&rel.trust_domain, &body)
}

/// Parses an endpoint's answer as the bundle of `td`.
pub fn parse_bundle(td: &TrustDomain, body: &[u8]) -> Result<Bundle, FetchError> {
    let bundle = Bundle::from_json(td.clone(), body).map_err(FetchError::Parse)?;
    for der in &bundle.x509_authorities {
        if let Some(found) = authority_trust_domain(der)
            && found != td.as_str()
        {
            return Err(FetchError::WrongTrustDomain {
                expected: td.as_str().to_owned(),
                found,
            });
        }
    }
    Ok(bundle)
}

/// The trust domain named by a CA certificate's SPIFFE ID URI SAN, if it has one.
fn authority_trust_domain(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(uri) => {
            let rest = uri.strip_prefix("spiffe://")?;
            Some(
                rest.split('/')
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
            )
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td(s: &str) -> TrustDomain {
        s.parse().unwrap()
    }

    #[test]
    fn redirect_locations_resolve_against_the_url() {
        let base = "https://b.test:8443/bundles/current";
        assert_eq!(resolve(base, "https://c.test/x"), "https://c.test/x");
        assert_eq!(resolve(base, "/other"), "https://b.test:8443/other");
        assert_eq!(resolve(base, "next"), "https://b.test:8443/bundles/next");
    }

    #[test]
    fn only_https_urls_without_user_info() {
        assert!(target("https://b.test:8443/").is_ok());
        assert!(matches!(
            target("http://b.test/"),
            Err(FetchError::Url { .. })
        ));
        assert!(matches!(
            target("https://u:p@b.test/"),
            Err(FetchError::Url { .. })
        ));
        assert!(matches!(target("not a url"), Err(FetchError::Url { .. })));
    }

    #[test]
    fn junk_is_not_a_bundle() {
        let err = parse_bundle(&td("b.test"), b"<html>hello</html>").unwrap_err();
        assert!(matches!(err, FetchError::Parse(_)), "{err}");
    }

    #[test]
    fn empty_key_set_is_a_valid_bundle() {
        let b = parse_bundle(&td("b.test"), br#"{"keys":[],"spiffe_refresh_hint":7}"#).unwrap();
        assert!(b.x509_authorities.is_empty());
        assert_eq!(b.refresh_hint, Some(Duration::from_secs(7)));
    }

    #[test]
    fn authority_of_another_trust_domain_is_rejected() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://other.test".try_into().unwrap(),
        )];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let mut b = Bundle::new(td("other.test"));
        b.x509_authorities.push(cert.der().to_vec());
        let json = b.to_json().unwrap();
        assert!(parse_bundle(&td("other.test"), json.as_bytes()).is_ok());
        let err = parse_bundle(&td("b.test"), json.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, FetchError::WrongTrustDomain { found, .. } if found == "other.test"),
            "{err}"
        );
    }
}
