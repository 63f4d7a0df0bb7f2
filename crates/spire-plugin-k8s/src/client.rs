//! A small HTTPS client for the Kubernetes API server and the kubelet: reqwest over a rustls
//! configuration of our own (aws-lc-rs provider), bearer-token or client-certificate
//! authentication, and connection settings from a kubeconfig file or the in-cluster
//! service-account mount.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// In-cluster service-account token.
pub const IN_CLUSTER_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// In-cluster CA bundle.
pub const IN_CLUSTER_CA_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a Kubernetes request failed or a client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A file (kubeconfig, CA, token, key) could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The connection settings are wrong.
    #[error("invalid kubernetes client configuration: {0}")]
    Config(String),
    /// The request could not be sent or its answer not read.
    #[error("request to {url} failed: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with a non-success status.
    #[error("{url} answered {status}: {body}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body (Kubernetes `Status` message).
        body: String,
    },
    /// The answer is not the expected JSON.
    #[error("{url} answered malformed JSON: {source}")]
    Json {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The HTTP status, when the server answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses every certificate of a PEM bundle.
pub fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| ClientError::Config(format!("{what}: not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(ClientError::Config(format!(
            "{what}: no PEM certificate found"
        )));
    }
    Ok(certs)
}

/// How the peer's certificate is checked.
#[derive(Clone)]
pub enum ServerTrust {
    /// Chain to these roots and match the host name (the normal case).
    Roots(Vec<CertificateDer<'static>>),
    /// Chain to these roots, any name: the kubelet on 127.0.0.1 presents a certificate naming
    /// its node, so SPIRE checks the chain alone when no node name is configured.
    RootsAnyName(Vec<CertificateDer<'static>>),
    /// No verification at all (`skip_kubelet_verification`, `insecure-skip-tls-verify`).
    Insecure,
}

impl std::fmt::Debug for ServerTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerTrust::Roots(r) => write!(f, "Roots({} certs)", r.len()),
            ServerTrust::RootsAnyName(r) => write!(f, "RootsAnyName({} certs)", r.len()),
            ServerTrust::Insecure => f.write_str("Insecure"),
        }
    }
}

/// A client certificate and key, PEM.
#[derive(Clone)]
pub struct ClientIdentity {
    certs: Vec<CertificateDer<'static>>,
    key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certs", &self.certs.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ClientIdentity {
    /// From PEM certificate chain and PEM private key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, ClientError> {
        let certs = parse_certs(cert_pem, "client certificate")?;
        PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| ClientError::Config(format!("client key: not a PEM private key: {e}")))?;
        Ok(Self {
            certs,
            key_pem: key_pem.to_vec(),
        })
    }
}

/// Where the bearer token comes from.
#[derive(Clone, Default)]
pub enum BearerToken {
    /// No token.
    #[default]
    None,
    /// A fixed token.
    Static(String),
    /// Read from this file for each request (projected tokens rotate).
    File(PathBuf),
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BearerToken::None => f.write_str("None"),
            BearerToken::Static(_) => f.write_str("Static(<redacted>)"),
            BearerToken::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl BearerToken {
    fn current(&self) -> Result<Option<String>, ClientError> {
        match self {
            BearerToken::None => Ok(None),
            BearerToken::Static(t) => Ok(Some(t.clone())),
            BearerToken::File(p) => {
                let raw = read(p)?;
                Ok(Some(String::from_utf8_lossy(&raw).trim().to_owned()))
            }
        }
    }
}

/// Everything needed to talk to one API server or kubelet.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Base URL, e.g. `https://10.0.0.1:6443` (no trailing slash).
    pub base_url: String,
    /// Server certificate check (ignored for `http://`).
    pub trust: ServerTrust,
    /// Client certificate, if any.
    pub identity: Option<ClientIdentity>,
    /// Bearer token, if any.
    pub token: BearerToken,
}

/// A client bound to one [`Endpoint`].
#[derive(Debug, Clone)]
pub struct KubeClient {
    base_url: String,
    token: BearerToken,
    http: reqwest::Client,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn roots(certs: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, ClientError> {
    let mut store = RootCertStore::empty();
    for c in certs {
        store
            .add(c.clone())
            .map_err(|e| ClientError::Config(format!("CA certificate is not usable: {e}")))?;
    }
    Ok(Arc::new(store))
}

/// Accepts a chain that verifies to the roots whatever name it carries. rustls's WebPKI
/// verifier checks the chain before the name, so a name mismatch means the chain was good.
#[derive(Debug)]
struct AnyNameVerifier(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyNameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Accepts any certificate (still checks handshake signatures).
#[derive(Debug)]
struct NoVerifier(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerifier {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config(endpoint: &Endpoint) -> Result<rustls::ClientConfig, ClientError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Config(format!("TLS setup failed: {e}")))?;
    let builder = match &endpoint.trust {
        ServerTrust::Roots(certs) => builder.with_root_certificates(roots(certs)?),
        ServerTrust::RootsAnyName(certs) => {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots(certs)?,
                provider,
            )
            .build()
            .map_err(|e| ClientError::Config(format!("TLS verifier setup failed: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyNameVerifier(inner)))
        }
        ServerTrust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerifier(provider))),
    };
    match &endpoint.identity {
        Some(id) => {
            let key = PrivateKeyDer::from_pem_slice(&id.key_pem).map_err(|e| {
                ClientError::Config(format!("client key: not a PEM private key: {e}"))
            })?;
            builder
                .with_client_auth_cert(id.certs.clone(), key)
                .map_err(|e| ClientError::Config(format!("client certificate unusable: {e}")))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

impl KubeClient {
    /// A client for `endpoint`.
    pub fn new(endpoint: Endpoint) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .use_preconfigured_tls(tls_config(&endpoint)?);
        if endpoint.base_url.starts_with("http://") {
            builder = builder.http1_only();
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Config(format!("HTTP client setup failed: {e}")))?;
        Ok(Self {
            base_url: endpoint.base_url.trim_end_matches('/').to_owned(),
            token: endpoint.token,
            http,
        })
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends a request to `path` and returns the raw body of a 2xx answer.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}{}", self.base_url, path);
        let mut req = self
            .http
            .request(method, &url)
            .header("Accept", "application/json");
        if let Some(token) = self.token.current()? {
            req = req.bearer_auth(token);
        }
        if let Some((content_type, body)) = body {
            req = req.header("Content-Type", content_type).body(body);
        }
        let http_err = |source| ClientError::Http {
            url: url.clone(),
            source,
        };
        let resp = req.send().await.map_err(http_err)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(http_err)?;
        if !status.is_success() {
            let end = bytes.len().min(512);
            return Err(ClientError::Status {
                url,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes[..end]).into_owned(),
            });
        }
        Ok(bytes.to_vec())
    }

    /// GET `path` as JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.request(reqwest::Method::GET, path, None).await?;
        self.decode(path, &body)
    }

    /// Sends `body` as JSON (`content_type`) with `method` and decodes the JSON answer.
    pub async fn send_json<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: &serde_json::Value,
    ) -> Result<T, ClientError> {
        let raw = serde_json::to_vec(body).map_err(|source| ClientError::Json {
            url: format!("{}{}", self.base_url, path),
            source,
        })?;
        let answer = self
            .request(method, path, Some((content_type, raw)))
            .await?;
        self.decode(path, &answer)
    }

    fn decode<T: DeserializeOwned>(&self, path: &str, body: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(body).map_err(|source| ClientError::Json {
            url: format!("{}{}", self.base_url, path),
            source,
        })
    }

    /// A client for the API server named by a kubeconfig file, or the in-cluster one
    /// (`KUBERNETES_SERVICE_HOST`/`_PORT` and the service-account mount) when `path` is `None`.
    pub fn from_kubeconfig_or_in_cluster(path: Option<&Path>) -> Result<Self, ClientError> {
        let endpoint = match path {
            Some(p) => endpoint_from_kubeconfig(p)?,
            None => in_cluster_endpoint()?,
        };
        Self::new(endpoint)
    }
}

/// The in-cluster API server endpoint.
pub fn in_cluster_endpoint() -> Result<Endpoint, ClientError> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
        ClientError::Config(
            "not running in a cluster (KUBERNETES_SERVICE_HOST unset): set kube_config_file".into(),
        )
    })?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Ok(Endpoint {
        base_url: format!("https://{host}:{port}"),
        trust: ServerTrust::Roots(parse_certs(
            &read(Path::new(IN_CLUSTER_CA_PATH))?,
            IN_CLUSTER_CA_PATH,
        )?),
        identity: None,
        token: BearerToken::File(IN_CLUSTER_TOKEN_PATH.into()),
    })
}

#[derive(Debug, Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct KubeConfig {
    clusters: Vec<Named<KcCluster>>,
    users: Vec<Named<KcUser>>,
    contexts: Vec<Named<KcContext>>,
    current_context: String,
}

#[derive(Debug, Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    value: T,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct KcCluster {
    server: String,
    certificate_authority: Option<PathBuf>,
    certificate_authority_data: Option<String>,
    insecure_skip_tls_verify: bool,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct KcUser {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<PathBuf>,
    client_certificate: Option<PathBuf>,
    client_certificate_data: Option<String>,
    client_key: Option<PathBuf>,
    client_key_data: Option<String>,
}

impl std::fmt::Debug for KcUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KcUser(<redacted>)")
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct KcContext {
    cluster: String,
    user: String,
}

fn data_or_file(
    data: Option<&String>,
    file: Option<&PathBuf>,
    base: &Path,
    what: &str,
) -> Result<Option<Vec<u8>>, ClientError> {
    if let Some(d) = data {
        return base64::engine::general_purpose::STANDARD
            .decode(d.trim())
            .map(Some)
            .map_err(|e| ClientError::Config(format!("{what}-data is not base64: {e}")));
    }
    match file {
        Some(f) => Ok(Some(read(&base.join(f))?)),
        None => Ok(None),
    }
}

/// The endpoint named by the current context of a kubeconfig file. Supports `server`,
/// `certificate-authority(-data)`, `insecure-skip-tls-verify`, `token`, `tokenFile` and
/// `client-certificate(-data)` / `client-key(-data)`; relative paths are relative to the file.
pub fn endpoint_from_kubeconfig(path: &Path) -> Result<Endpoint, ClientError> {
    let raw = read(path)?;
    let kc: KubeConfig = serde_yaml::from_slice(&raw).map_err(|e| {
        ClientError::Config(format!("{} is not a kubeconfig file: {e}", path.display()))
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let ctx = if kc.current_context.is_empty() {
        kc.contexts.first()
    } else {
        kc.contexts.iter().find(|c| c.name == kc.current_context)
    };
    let (cluster_name, user_name) = match ctx {
        Some(c) => (c.value.cluster.clone(), c.value.user.clone()),
        None => (
            kc.clusters
                .first()
                .map(|c| c.name.clone())
                .unwrap_or_default(),
            kc.users.first().map(|u| u.name.clone()).unwrap_or_default(),
        ),
    };
    let cluster = kc
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .map(|c| &c.value)
        .ok_or_else(|| {
            ClientError::Config(format!(
                "{}: no cluster {cluster_name:?} for the current context",
                path.display()
            ))
        })?;
    if !cluster.server.starts_with("https://") && !cluster.server.starts_with("http://") {
        return Err(ClientError::Config(format!(
            "{}: cluster server {:?} is not an http(s) URL",
            path.display(),
            cluster.server
        )));
    }
    let trust = if cluster.insecure_skip_tls_verify {
        ServerTrust::Insecure
    } else {
        match data_or_file(
            cluster.certificate_authority_data.as_ref(),
            cluster.certificate_authority.as_ref(),
            base,
            "certificate-authority",
        )? {
            Some(pem) => ServerTrust::Roots(parse_certs(&pem, "certificate-authority")?),
            None => {
                return Err(ClientError::Config(format!(
                    "{}: cluster {cluster_name:?} has no certificate-authority(-data); set one or insecure-skip-tls-verify",
                    path.display()
                )));
            }
        }
    };
    let user = kc
        .users
        .iter()
        .find(|u| u.name == user_name)
        .map(|u| &u.value);
    let mut identity = None;
    let mut token = BearerToken::None;
    if let Some(u) = user {
        let cert = data_or_file(
            u.client_certificate_data.as_ref(),
            u.client_certificate.as_ref(),
            base,
            "client-certificate",
        )?;
        let key = data_or_file(
            u.client_key_data.as_ref(),
            u.client_key.as_ref(),
            base,
            "client-key",
        )?;
        match (cert, key) {
            (Some(c), Some(k)) => identity = Some(ClientIdentity::from_pem(&c, &k)?),
            (None, None) => {}
            _ => {
                return Err(ClientError::Config(format!(
                    "{}: user {user_name:?} needs both client-certificate and client-key",
                    path.display()
                )));
            }
        }
        if let Some(t) = &u.token {
            token = BearerToken::Static(t.clone());
        } else if let Some(f) = &u.token_file {
            token = BearerToken::File(base.join(f));
        }
    }
    Ok(Endpoint {
        base_url: cluster.server.trim_end_matches('/').to_owned(),
        trust,
        identity,
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_current_context_token_and_inline_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let ca_b64 = base64::engine::general_purpose::STANDARD.encode(ca.cert.pem());
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: b\nclusters:\n- name: a\n  cluster:\n    server: https://a.invalid\n    insecure-skip-tls-verify: true\n- name: cb\n  cluster:\n    server: https://127.0.0.1:6443/\n    certificate-authority-data: {ca_b64}\ncontexts:\n- name: a\n  context: {{cluster: a, user: ua}}\n- name: b\n  context: {{cluster: cb, user: ub}}\nusers:\n- name: ua\n  user: {{token: wrong}}\n- name: ub\n  user:\n    tokenFile: tok\n"
            ),
        )
        .unwrap();
        let ep = endpoint_from_kubeconfig(&path).unwrap();
        assert_eq!(ep.base_url, "https://127.0.0.1:6443");
        assert!(matches!(ep.trust, ServerTrust::Roots(ref r) if r.len() == 1));
        assert!(matches!(ep.token, BearerToken::File(ref p) if p == &dir.path().join("tok")));
        assert!(ep.identity.is_none());
    }

    #[test]
    fn kubeconfig_without_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kc");
        std::fs::write(
            &path,
            "clusters:\n- name: c\n  cluster: {server: 'https://x'}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
        )
        .unwrap();
        let err = endpoint_from_kubeconfig(&path).unwrap_err().to_string();
        assert!(err.contains("certificate-authority"), "{err}");
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = BearerToken::Static("s3cr3t".into());
        assert!(!format!("{t:?}").contains("s3cr3t"));
    }
}
