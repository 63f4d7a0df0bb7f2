//! The hot-swappable set of trusted X.509 roots, per trust domain.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls_pki_types::{CertificateDer, TrustAnchor};
use spire_spiffe::{Bundle, TrustDomain};

use crate::error::TlsError;

/// Trusted X.509 authorities for each trust domain (our own and federated ones), shared between
/// the code that refreshes bundles and every TLS verifier.
///
/// Clones share the set. A change takes effect on the next handshake. Roots are parsed into
/// trust anchors when set, not per handshake. A peer is validated only against the roots of
/// the trust domain its SPIFFE ID names (X509-SVID standard, "Validation").
#[derive(Clone, Default)]
pub struct BundleSet {
    map: Arc<ArcSwap<HashMap<TrustDomain, Arc<Roots>>>>,
}

/// The roots of one trust domain, in DER and as parsed anchors.
pub(crate) struct Roots {
    pub(crate) certs: Vec<CertificateDer<'static>>,
    pub(crate) anchors: Vec<TrustAnchor<'static>>,
}

impl BundleSet {
    /// An empty set: nothing is trusted.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set holding one trust domain's roots.
    pub fn with_roots<C>(
        trust_domain: TrustDomain,
        roots: impl IntoIterator<Item = C>,
    ) -> Result<Self, TlsError>
    where
        C: Into<CertificateDer<'static>>,
    {
        let set = Self::new();
        set.set_roots(trust_domain, roots)?;
        Ok(set)
    }

    /// Replaces the X.509 authorities of one trust domain (DER certificates). On error nothing
    /// changes. An empty list leaves the trust domain present but trusting nothing.
    pub fn set_roots<C>(
        &self,
        trust_domain: TrustDomain,
        roots: impl IntoIterator<Item = C>,
    ) -> Result<(), TlsError>
    where
        C: Into<CertificateDer<'static>>,
    {
        let roots = Arc::new(Roots::parse(&trust_domain, roots)?);
        tracing::debug!(trust_domain = %trust_domain, roots = roots.certs.len(), "TLS bundle replaced");
        self.map.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.insert(trust_domain.clone(), roots.clone());
            next
        });
        Ok(())
    }

    /// Replaces the X.509 authorities of `bundle`'s trust domain with the bundle's. JWT
    /// authorities are ignored. On error nothing changes.
    pub fn set_bundle(&self, bundle: &Bundle) -> Result<(), TlsError> {
        self.set_roots(
            bundle.trust_domain.clone(),
            bundle.x509_authorities.iter().cloned(),
        )
    }

    /// Replaces the whole set atomically with the X.509 authorities of `bundles`. On error
    /// nothing changes.
    pub fn replace_bundles<'a>(
        &self,
        bundles: impl IntoIterator<Item = &'a Bundle>,
    ) -> Result<(), TlsError> {
        self.replace_all(
            bundles
                .into_iter()
                .map(|b| (b.trust_domain.clone(), b.x509_authorities.iter().cloned())),
        )
    }

    /// Replaces the whole set atomically. On error nothing changes.
    pub fn replace_all<C, R>(
        &self,
        bundles: impl IntoIterator<Item = (TrustDomain, R)>,
    ) -> Result<(), TlsError>
    where
        R: IntoIterator<Item = C>,
        C: Into<CertificateDer<'static>>,
    {
        let mut next = HashMap::new();
        for (td, roots) in bundles {
            let parsed = Roots::parse(&td, roots)?;
            next.insert(td, Arc::new(parsed));
        }
        self.map.store(Arc::new(next));
        Ok(())
    }

    /// Forgets a trust domain. Returns whether it was present.
    pub fn remove(&self, trust_domain: &TrustDomain) -> bool {
        let mut removed = false;
        self.map.rcu(|current| {
            let mut next = HashMap::clone(current);
            removed = next.remove(trust_domain).is_some();
            next
        });
        removed
    }

    /// The roots currently trusted for `trust_domain` (DER).
    pub fn roots(&self, trust_domain: &TrustDomain) -> Option<Vec<CertificateDer<'static>>> {
        self.map.load().get(trust_domain).map(|r| r.certs.clone())
    }

    /// The trust domains currently present, sorted.
    pub fn trust_domains(&self) -> Vec<TrustDomain> {
        let mut tds: Vec<TrustDomain> = self.map.load().keys().cloned().collect();
        tds.sort();
        tds
    }

    pub(crate) fn anchors_for(&self, trust_domain: &TrustDomain) -> Option<Arc<Roots>> {
        self.map.load().get(trust_domain).cloned()
    }
}

impl Roots {
    fn parse<C>(td: &TrustDomain, roots: impl IntoIterator<Item = C>) -> Result<Roots, TlsError>
    where
        C: Into<CertificateDer<'static>>,
    {
        let certs: Vec<CertificateDer<'static>> = roots.into_iter().map(Into::into).collect();
        let anchors = certs
            .iter()
            .enumerate()
            .map(|(index, cert)| {
                webpki::anchor_from_trusted_cert(cert)
                    .map(|a| a.to_owned())
                    .map_err(|source| TlsError::InvalidRoot {
                        trust_domain: td.clone(),
                        index,
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Roots { certs, anchors })
    }
}

impl fmt::Debug for BundleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map = self.map.load();
        let mut tds: Vec<(&TrustDomain, usize)> =
            map.iter().map(|(td, r)| (td, r.certs.len())).collect();
        tds.sort();
        f.debug_struct("BundleSet").field("roots", &tds).finish()
    }
}
