//! X509-SVID checks shared by the client and server verifiers.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::SignatureVerificationAlgorithm;
use rustls::{CertificateError, OtherError};
use rustls_pki_types::{CertificateDer, UnixTime};
use spire_spiffe::{SpiffeId, TrustDomain};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::bundle::BundleSet;
use crate::error::SvidError;

/// The most intermediates a peer may send. SPIRE chains are leaf + signing CA (+ upstream
/// intermediates); this bound stops path building from doing unbounded work.
pub(crate) const MAX_INTERMEDIATES: usize = 8;

/// Reads the SPIFFE ID of an X509-SVID leaf and checks the leaf rules that do not need a trust
/// bundle: exactly one URI SAN holding a valid SPIFFE ID, not a CA, no keyCertSign or cRLSign.
pub fn leaf_spiffe_id(leaf: &CertificateDer<'_>) -> Result<SpiffeId, SvidError> {
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| SvidError::Malformed(e.to_string()))?;

    let san = cert
        .subject_alternative_name()
        .map_err(|e| SvidError::Malformed(e.to_string()))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    let uri = match uris.as_slice() {
        [] => return Err(SvidError::NoUriSan),
        [one] => *one,
        many => return Err(SvidError::MultipleUriSans(many.len())),
    };
    let id: SpiffeId = uri.parse().map_err(SvidError::InvalidSpiffeId)?;

    let bc = cert
        .basic_constraints()
        .map_err(|e| SvidError::Malformed(e.to_string()))?;
    if bc.is_some_and(|bc| bc.value.ca) {
        return Err(SvidError::LeafIsCa);
    }
    let ku = cert
        .key_usage()
        .map_err(|e| SvidError::Malformed(e.to_string()))?;
    if ku.is_some_and(|ku| ku.value.key_cert_sign() || ku.value.crl_sign()) {
        return Err(SvidError::LeafCanSign);
    }
    Ok(id)
}

/// Validates a peer's chain against the roots of the trust domain its SPIFFE ID names, at
/// `now`, for `usage`, and returns the SPIFFE ID.
pub(crate) fn verify_chain(
    bundles: &BundleSet,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: webpki::KeyUsage,
    algs: &[&dyn SignatureVerificationAlgorithm],
) -> Result<SpiffeId, SvidError> {
    if intermediates.len() > MAX_INTERMEDIATES {
        return Err(SvidError::TooManyIntermediates(intermediates.len()));
    }
    let id = leaf_spiffe_id(end_entity)?;
    let td = id.trust_domain();
    let roots = bundles
        .anchors_for(td)
        .ok_or_else(|| SvidError::NoBundle(td.clone()))?;
    let ee = webpki::EndEntityCert::try_from(end_entity).map_err(|e| SvidError::Chain {
        trust_domain: td.clone(),
        source: e,
    })?;
    ee.verify_for_usage(algs, &roots.anchors, intermediates, now, usage, None, None)
        .map_err(|source| SvidError::Chain {
            trust_domain: td.clone(),
            source,
        })?;
    Ok(id)
}

/// Turns a rejection into the rustls error that produces the matching TLS alert.
pub(crate) fn to_rustls_error(err: SvidError) -> rustls::Error {
    let cert_err = match &err {
        SvidError::Chain { source, .. } => match source {
            webpki::Error::CertExpired { .. } => Some(CertificateError::Expired),
            webpki::Error::CertNotValidYet { .. } => Some(CertificateError::NotValidYet),
            webpki::Error::UnknownIssuer => Some(CertificateError::UnknownIssuer),
            webpki::Error::InvalidSignatureForPublicKey => Some(CertificateError::BadSignature),
            _ => None,
        },
        SvidError::NoBundle(_) => Some(CertificateError::UnknownIssuer),
        SvidError::Malformed(_) => Some(CertificateError::BadEncoding),
        _ => None,
    };
    rustls::Error::InvalidCertificate(
        cert_err.unwrap_or_else(|| CertificateError::Other(OtherError(Arc::new(err)))),
    )
}

/// Which SPIFFE IDs a peer may have.
#[derive(Clone)]
#[non_exhaustive]
pub enum PeerMatcher {
    /// Any SPIFFE ID whose chain validates (authorization happens later, per request).
    Any,
    /// Exactly this ID.
    Exact(SpiffeId),
    /// One of these IDs.
    OneOf(Vec<SpiffeId>),
    /// Any ID in this trust domain.
    MemberOf(TrustDomain),
    /// The SPIRE server of this trust domain: `spiffe://<td>/spire/server`.
    SpireServer(TrustDomain),
    /// Any ID accepted by the function.
    Predicate(Arc<dyn Fn(&SpiffeId) -> bool + Send + Sync>),
}

impl PeerMatcher {
    /// A matcher from a function.
    pub fn predicate(f: impl Fn(&SpiffeId) -> bool + Send + Sync + 'static) -> Self {
        PeerMatcher::Predicate(Arc::new(f))
    }

    /// Whether `id` is acceptable.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            PeerMatcher::Any => true,
            PeerMatcher::Exact(want) => id == want,
            PeerMatcher::OneOf(ids) => ids.contains(id),
            PeerMatcher::MemberOf(td) => id.trust_domain() == td,
            PeerMatcher::SpireServer(td) => id.trust_domain() == td && id.path() == "/spire/server",
            PeerMatcher::Predicate(f) => f(id),
        }
    }

    pub(crate) fn check(&self, id: SpiffeId) -> Result<SpiffeId, SvidError> {
        if self.matches(&id) {
            Ok(id)
        } else {
            Err(SvidError::Unauthorized {
                id,
                expected: self.to_string(),
            })
        }
    }
}

impl fmt::Display for PeerMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerMatcher::Any => f.write_str("any spiffe id"),
            PeerMatcher::Exact(id) => write!(f, "{id}"),
            PeerMatcher::OneOf(ids) => {
                f.write_str("one of [")?;
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{id}")?;
                }
                f.write_str("]")
            }
            PeerMatcher::MemberOf(td) => write!(f, "a member of trust domain {td}"),
            PeerMatcher::SpireServer(td) => write!(f, "spiffe://{td}/spire/server"),
            PeerMatcher::Predicate(_) => f.write_str("an id accepted by the configured predicate"),
        }
    }
}

impl fmt::Debug for PeerMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerMatcher({self})")
    }
}
