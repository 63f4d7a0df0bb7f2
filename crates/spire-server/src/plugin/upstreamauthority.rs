//! UpstreamAuthority plugins: the server CA becomes an intermediate signed by an upstream CA,
//! and the upstream roots go into the bundle.
//!
//! - `disk` ([`DiskUpstreamAuthority`]): the upstream CA's certificate and key are files,
//!   re-read on every mint. Mirrors `pkg/server/plugin/upstreamauthority/disk`.
//! - `spire` ([`spire::SpireUpstreamAuthority`]): nested SPIRE; the upstream is another SPIRE
//!   server of the same trust domain. Mirrors `pkg/server/plugin/upstreamauthority/spire`.
//!
//! An upstream may also take the server's JWT keys ([`UpstreamAuthority::publish_jwt_key`]) and
//! publish its bundle for the server to follow ([`UpstreamAuthority::fetch_bundle`]).

pub mod spire;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use spire_crypto::x509::{CaTemplate, X509Authority};
use spire_crypto::{PrivateKey, Signer};
use spire_datastore as ds;
use spire_spiffe::TrustDomain;

/// A server CA minted by an upstream authority.
#[derive(Debug, Clone)]
pub struct MintedCa {
    /// The new server CA certificate (DER).
    pub ca_cert: Vec<u8>,
    /// Certificates after it up to (excluding) the root, DER.
    pub upstream_chain: Vec<Vec<u8>>,
    /// Upstream X.509 roots for the bundle, DER.
    pub roots: Vec<Vec<u8>>,
    /// Subject key ID (hex) of the upstream certificate that signed the CA.
    pub upstream_authority_id: String,
}

/// Errors of an upstream authority.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file's contents are unusable.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Signing failed.
    #[error("signing the server CA failed")]
    Sign(#[from] spire_crypto::x509::X509Error),
    /// The upstream SPIRE server or the Workload API could not be reached or refused a call.
    #[error("{what}: {reason}")]
    Unavailable {
        /// What was attempted.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// The upstream answered with something unusable.
    #[error("{what}: {reason}")]
    BadResponse {
        /// Which answer.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// The upstream signing authority, the chain after it (no roots) and the roots.
type LoadedUpstream = (X509Authority, Vec<Vec<u8>>, Vec<Vec<u8>>);

/// An UpstreamAuthority plugin.
#[tonic::async_trait]
pub trait UpstreamAuthority: Send + Sync + fmt::Debug {
    /// Signs a server CA for the key of `signer` (which may be used to sign a CSR).
    async fn mint_x509_ca(
        &self,
        signer: &Arc<dyn Signer>,
        template: &CaTemplate,
        now: SystemTime,
    ) -> Result<MintedCa, UpstreamError>;

    /// Publishes a JWT signing key upstream before the server uses it. Returns the upstream's
    /// JWT authorities after the publication (they include `key`), or `None` when this upstream
    /// does not take JWT keys (the key then goes into the local bundle only).
    async fn publish_jwt_key(
        &self,
        _key: &ds::JwtAuthority,
    ) -> Result<Option<Vec<ds::JwtAuthority>>, UpstreamError> {
        Ok(None)
    }

    /// Whether [`UpstreamAuthority::fetch_bundle`] is worth polling.
    fn follows_bundle(&self) -> bool {
        false
    }

    /// The upstream's current bundle (X.509 roots and JWT authorities), when it has one.
    async fn fetch_bundle(&self) -> Result<Option<ds::Bundle>, UpstreamError> {
        Ok(None)
    }
}

/// Builds the built-in UpstreamAuthority `name` from its `plugin_data` (no network I/O: a
/// `spire` upstream connects on first use).
pub fn build(
    name: &str,
    data: &serde_json::Value,
    trust_domain: &TrustDomain,
) -> Result<Arc<dyn UpstreamAuthority>, String> {
    match name {
        "disk" => Ok(Arc::new(DiskUpstreamAuthority::from_plugin_data(data)?)),
        "spire" => Ok(Arc::new(spire::SpireUpstreamAuthority::from_plugin_data(
            data,
            trust_domain.clone(),
        )?)),
        other => Err(format!(
            "unknown UpstreamAuthority plugin {other:?}: the built-ins are \"disk\" and \"spire\""
        )),
    }
}

/// The `disk` upstream authority.
#[derive(Debug, Clone)]
pub struct DiskUpstreamAuthority {
    cert_file_path: PathBuf,
    key_file_path: PathBuf,
    bundle_file_path: Option<PathBuf>,
}

impl DiskUpstreamAuthority {
    /// Builds the plugin from its `plugin_data` and checks the files once.
    pub fn from_plugin_data(data: &serde_json::Value) -> Result<Self, String> {
        let obj = data.as_object().ok_or("plugin_data must be a block")?;
        let mut cert = None;
        let mut key = None;
        let mut bundle = None;
        for (k, v) in obj {
            let s = v.as_str().ok_or_else(|| format!("{k} must be a string"))?;
            match k.as_str() {
                "cert_file_path" => cert = Some(PathBuf::from(s)),
                "key_file_path" => key = Some(PathBuf::from(s)),
                "bundle_file_path" => bundle = Some(PathBuf::from(s)),
                other => {
                    return Err(format!(
                        "unknown configuration key {other:?} (expected cert_file_path, key_file_path, bundle_file_path)"
                    ));
                }
            }
        }
        let plugin = DiskUpstreamAuthority {
            cert_file_path: cert.ok_or("cert_file_path is required")?,
            key_file_path: key.ok_or("key_file_path is required")?,
            bundle_file_path: bundle,
        };
        plugin.load().map_err(|e| e.to_string())?;
        Ok(plugin)
    }

    /// The upstream signing authority, the chain after it (no roots) and the roots.
    fn load(&self) -> Result<LoadedUpstream, UpstreamError> {
        let certs = read_certs(&self.cert_file_path)?;
        let key_pem = read(&self.key_file_path)?;
        let key = PrivateKey::from_pem(&String::from_utf8_lossy(&key_pem)).map_err(|e| {
            UpstreamError::Invalid {
                path: self.key_file_path.clone(),
                reason: e.to_string(),
            }
        })?;
        let signer: Arc<dyn Signer> = Arc::new(key);
        let mut iter = certs.into_iter();
        let first = iter.next().ok_or_else(|| UpstreamError::Invalid {
            path: self.cert_file_path.clone(),
            reason: "no certificate found".into(),
        })?;
        let intermediates: Vec<Vec<u8>> = iter.collect();
        let self_signed = is_self_signed(&first);
        let roots = match &self.bundle_file_path {
            Some(p) => read_certs(p)?,
            None if self_signed => vec![first.clone()],
            None => {
                return Err(UpstreamError::Invalid {
                    path: self.cert_file_path.clone(),
                    reason: "the upstream CA is not self-signed: bundle_file_path is required"
                        .into(),
                });
            }
        };
        // The chain after the server CA: the upstream signing cert unless it is a root, then
        // its intermediates that are not roots.
        let mut chain = Vec::new();
        if !roots.contains(&first) {
            chain.push(first.clone());
        }
        chain.extend(intermediates.into_iter().filter(|c| !roots.contains(c)));
        let authority = X509Authority::new(first, signer).map_err(|e| UpstreamError::Invalid {
            path: self.key_file_path.clone(),
            reason: format!("key does not fit the certificate: {e}"),
        })?;
        Ok((authority, chain, roots))
    }
}

#[tonic::async_trait]
impl UpstreamAuthority for DiskUpstreamAuthority {
    async fn mint_x509_ca(
        &self,
        signer: &Arc<dyn Signer>,
        template: &CaTemplate,
        now: SystemTime,
    ) -> Result<MintedCa, UpstreamError> {
        let (authority, chain, roots) = self.load()?;
        let ca_cert = authority.sign_intermediate_ca(signer.public_key(), template, now)?;
        Ok(MintedCa {
            ca_cert,
            upstream_chain: chain,
            roots,
            upstream_authority_id: hex::encode(authority.subject_key_id()),
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, UpstreamError> {
    std::fs::read(path).map_err(|source| UpstreamError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, UpstreamError> {
    let data = read(path)?;
    let blocks = pem::parse_many(&data).map_err(|e| UpstreamError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect();
    if certs.is_empty() {
        return Err(UpstreamError::Invalid {
            path: path.to_path_buf(),
            reason: "no PEM CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

fn is_self_signed(der: &[u8]) -> bool {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c.subject() == c.issuer() && c.verify_signature(None).is_ok())
        .unwrap_or(false)
}
