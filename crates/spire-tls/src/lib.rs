//! rustls setup and SPIFFE peer verification for the mutual-TLS gRPC link between the SPIRE
//! agent and server.
//!
//! The crate builds rustls [`ServerConfig`](rustls::ServerConfig)s and
//! [`ClientConfig`](rustls::ClientConfig)s whose certificates and trust anchors are read from
//! hot-swappable stores ([`SharedIdentity`], [`BundleSet`]), so a rotated SVID or bundle takes
//! effect on the next handshake without rebuilding anything. Peers are authenticated by SPIFFE
//! ID, never by DNS name. On the server side [`TlsIncoming`] turns a TCP listener into a stream
//! of TLS connections for `tonic::transport::Server::serve_with_incoming`, and handlers read the
//! caller's verified identity with [`peer_info`]; on the client side [`connect`] builds a tonic
//! `Channel` over the same verification.
//!
//! Invariants:
//! - Exactly one crypto provider, aws-lc-rs, passed explicitly ([`provider`]); the process-wide
//!   default provider is never consulted.
//! - Every handshake validates the peer's chain against the *current* bundle of the trust domain
//!   named by the peer's SPIFFE ID, at the time of the configured [`Clock`](spire_spiffe::Clock).
//!   Session resumption, tickets and early data are disabled on both sides, so no connection is
//!   ever accepted on the strength of an earlier validation.
//! - A peer certificate must carry exactly one URI SAN, a valid SPIFFE ID, and must not be a CA.
//! - The one exception, [`ServerAuth::InsecureBootstrap`], skips the chain check only (SPIRE's
//!   `insecure_bootstrap`); the server's SPIFFE ID must still be in the expected trust domain and
//!   the handshake signature must still verify.

mod bundle;
mod client;
mod error;
mod identity;
mod incoming;
mod server;
mod svid;
mod time;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub use bundle::BundleSet;
pub use client::{
    ClientOptions, ClientTlsStream, ServerAuth, SpiffeConnector, SpiffeServerCertVerifier,
    client_config, connect, connect_lazy,
};
pub use error::{SvidError, TlsError};
pub use identity::{Identity, SharedIdentity};
pub use incoming::{DEFAULT_HANDSHAKE_TIMEOUT, PeerInfo, SpiffeTlsStream, TlsIncoming, peer_info};
pub use server::{ClientAuth, ServerOptions, SpiffeClientCertVerifier, server_config};
pub use svid::{PeerMatcher, leaf_spiffe_id};

/// Re-exported so callers can name certificate types without adding `rustls-pki-types`.
pub use rustls_pki_types::CertificateDer;

/// The TLS protocol name negotiated with ALPN: gRPC runs over HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// The crypto provider every config in this crate uses: aws-lc-rs with its default cipher
/// suites and key-exchange groups.
///
/// Binaries should also install it as the process default at start-up (see
/// [`install_default_provider`]) so that third-party code using `ClientConfig::builder()` finds
/// the same provider, but nothing in this crate depends on that.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// Installs [`provider`] as the rustls process-default provider. Returns `false` if another
/// provider was installed first (the existing one is left in place).
pub fn install_default_provider() -> bool {
    CryptoProvider::install_default((*provider()).clone()).is_ok()
}
