//! Our own X509-SVID and key, and the hot-swappable slot that holds them.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spire_spiffe::SpiffeId;

use crate::error::TlsError;
use crate::svid;

/// An X509-SVID with its private key, ready to present in a TLS handshake.
///
/// Built once (parsing the leaf and loading the key), then shared; presenting it costs nothing
/// per handshake. The private key is held by the crypto provider and never printed.
#[derive(Clone)]
pub struct Identity {
    spiffe_id: SpiffeId,
    certified: Arc<CertifiedKey>,
}

impl Identity {
    /// Builds an identity from the certificate chain (leaf first, then any intermediates, all
    /// DER) and the leaf's PKCS#8 private key (DER).
    ///
    /// Fails if the chain is empty, the leaf is not an X509-SVID (exactly one SPIFFE ID URI SAN,
    /// not a CA), the key cannot be loaded, or the key does not match the leaf.
    pub fn from_der<C>(
        cert_chain: impl IntoIterator<Item = C>,
        pkcs8_key: impl Into<PrivatePkcs8KeyDer<'static>>,
    ) -> Result<Self, TlsError>
    where
        C: Into<CertificateDer<'static>>,
    {
        let chain: Vec<CertificateDer<'static>> = cert_chain.into_iter().map(Into::into).collect();
        let leaf = chain.first().ok_or(TlsError::EmptyChain)?;
        let spiffe_id = svid::leaf_spiffe_id(leaf).map_err(TlsError::InvalidSvid)?;
        let key = crate::provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(pkcs8_key.into()))
            .map_err(TlsError::InvalidKey)?;
        let certified = CertifiedKey::new(chain, key);
        certified.keys_match().map_err(TlsError::KeyMismatch)?;
        Ok(Identity {
            spiffe_id,
            certified: Arc::new(certified),
        })
    }

    /// The SPIFFE ID named by the leaf certificate.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// The certificate chain, leaf first.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.certified.cert
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        // Invariant: `from_der` rejects an empty chain.
        &self.certified.cert[0]
    }

    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("spiffe_id", &self.spiffe_id)
            .field("chain_len", &self.certified.cert.len())
            .finish_non_exhaustive()
    }
}

/// A hot-swappable slot for an [`Identity`], shared between the code that rotates the SVID and
/// the TLS configs that present it.
///
/// Clones share the slot. [`store`](Self::store) takes effect on the next handshake;
/// established connections keep the certificate they were opened with. The slot may be empty:
/// a client then presents no certificate (as an agent does before node attestation), and a
/// server fails the handshake.
#[derive(Clone, Default)]
pub struct SharedIdentity {
    slot: Arc<ArcSwapOption<Identity>>,
}

impl SharedIdentity {
    /// A slot holding `identity`.
    pub fn new(identity: Identity) -> Self {
        SharedIdentity {
            slot: Arc::new(ArcSwapOption::from_pointee(identity)),
        }
    }

    /// An empty slot.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Replaces the identity; the next handshake presents it.
    pub fn store(&self, identity: Identity) {
        tracing::debug!(spiffe_id = %identity.spiffe_id(), "TLS identity replaced");
        self.slot.store(Some(Arc::new(identity)));
    }

    /// Empties the slot.
    pub fn clear(&self) {
        self.slot.store(None);
    }

    /// The current identity, if any.
    pub fn load(&self) -> Option<Arc<Identity>> {
        self.slot.load_full()
    }

    pub(crate) fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        self.slot.load().as_ref().map(|id| id.certified_key())
    }
}

impl fmt::Debug for SharedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.slot.load();
        f.debug_struct("SharedIdentity")
            .field(
                "spiffe_id",
                &current.as_ref().map(|id| id.spiffe_id().clone()),
            )
            .finish()
    }
}

/// Presents the current identity of a [`SharedIdentity`] in each handshake, on either side.
#[derive(Debug)]
pub(crate) struct IdentityResolver(pub(crate) SharedIdentity);

impl rustls::server::ResolvesServerCert for IdentityResolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let key = self.0.certified_key();
        if key.is_none() {
            tracing::warn!("TLS handshake refused: no server identity loaded");
        }
        key
    }
}

impl rustls::client::ResolvesClientCert for IdentityResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.certified_key()
    }

    fn has_certs(&self) -> bool {
        self.0.slot.load().is_some()
    }
}
