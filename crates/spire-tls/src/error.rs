//! Error types.

use spire_spiffe::{SpiffeId, SpiffeIdError, TrustDomain};

/// Why a peer's X.509-SVID (or one of our own) was rejected.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SvidError {
    /// The certificate is not parseable DER X.509.
    #[error("certificate is not valid DER X.509: {0}")]
    Malformed(String),
    /// The leaf has no URI SAN, so it names no SPIFFE ID.
    #[error("certificate has no URI SAN (an X509-SVID must carry exactly one spiffe:// URI SAN)")]
    NoUriSan,
    /// The leaf has several URI SANs.
    #[error("certificate has {0} URI SANs (an X509-SVID must carry exactly one)")]
    MultipleUriSans(usize),
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("URI SAN is not a valid spiffe id")]
    InvalidSpiffeId(#[source] SpiffeIdError),
    /// The leaf is a CA certificate (basicConstraints cA=true).
    #[error("leaf certificate is a CA (an X509-SVID leaf must have cA=false)")]
    LeafIsCa,
    /// The leaf's key usage allows signing certificates or CRLs.
    #[error("leaf certificate has keyCertSign or cRLSign key usage (not allowed on an X509-SVID)")]
    LeafCanSign,
    /// The peer sent more intermediates than we accept.
    #[error("certificate chain has {0} intermediates (at most {max} are accepted)", max = crate::svid::MAX_INTERMEDIATES)]
    TooManyIntermediates(usize),
    /// No roots are known for the trust domain of the peer's SPIFFE ID.
    #[error("no trust bundle for trust domain {0:?}")]
    NoBundle(TrustDomain),
    /// Path validation against the trust domain's roots failed (untrusted issuer, expired,
    /// not yet valid, bad signature, wrong extended key usage, ...).
    #[error("certificate chain does not validate against the bundle of {trust_domain:?}")]
    Chain {
        /// The trust domain whose roots were used.
        trust_domain: TrustDomain,
        /// What webpki found wrong.
        #[source]
        source: webpki::Error,
    },
    /// The peer's SPIFFE ID is valid but not the one expected.
    #[error("peer spiffe id {id} is not authorized (expected {expected})")]
    Unauthorized {
        /// The peer's SPIFFE ID.
        id: SpiffeId,
        /// A description of what was expected.
        expected: String,
    },
}

/// Errors building TLS configurations, identities, bundles or connections.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// An identity was built from an empty certificate chain.
    #[error("identity has no certificates (expected the leaf SVID first, then intermediates)")]
    EmptyChain,
    /// The identity's leaf is not a usable X509-SVID.
    #[error("identity leaf is not a valid X509-SVID")]
    InvalidSvid(#[source] SvidError),
    /// The private key could not be loaded.
    #[error("private key is not a usable PKCS#8 key (expected ECDSA P-256/P-384, RSA or Ed25519)")]
    InvalidKey(#[source] rustls::Error),
    /// The private key does not belong to the leaf certificate.
    #[error("private key does not match the leaf certificate's public key")]
    KeyMismatch(#[source] rustls::Error),
    /// A bundle root could not be used as a trust anchor.
    #[error("root #{index} of trust domain {trust_domain:?} is not a usable CA certificate")]
    InvalidRoot {
        /// The trust domain being set.
        trust_domain: TrustDomain,
        /// The position of the bad certificate in the list given.
        index: usize,
        /// What webpki found wrong.
        #[source]
        source: webpki::Error,
    },
    /// rustls refused the configuration.
    #[error("rustls rejected the configuration")]
    Config(#[source] rustls::Error),
    /// The server address could not be turned into a URI.
    #[error("invalid server address {address:?} (expected host:port)")]
    InvalidAddress {
        /// The address given.
        address: String,
        /// Why it is invalid.
        #[source]
        source: tonic::transport::Error,
    },
    /// Connecting the channel failed.
    #[error("could not connect to {address}")]
    Connect {
        /// The address dialed.
        address: String,
        /// What went wrong.
        #[source]
        source: tonic::transport::Error,
    },
}
