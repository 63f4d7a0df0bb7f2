//! X509-SVID validation (SPIFFE X509-SVID standard, §5).
//!
//! The leaf must carry exactly one URI SAN holding a valid SPIFFE ID with a path, `cA=false`
//! (an absent basicConstraints counts as false), a KeyUsage with `digitalSignature` and without
//! `keyCertSign`/`cRLSign`. Every other certificate in the presented chain must be a CA with
//! `keyCertSign`. The path is then verified by rustls-webpki to the X.509 authorities of the
//! **ID's own trust domain**, at the given time. Any extended key usage is accepted, as go-spiffe
//! does.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, UnixTime};
use spire_spiffe::{Bundle, SpiffeId, SpiffeIdError, TrustDomain};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::jwt::{JwtBundleSource, JwtKeyLookup};

/// Why an X509-SVID was rejected.
#[derive(Debug, thiserror::Error)]
pub enum X509SvidError {
    /// No certificate was presented.
    #[error("no certificates presented: expected the leaf first, then intermediates")]
    EmptyChain,
    /// A certificate is not valid DER X.509.
    #[error("certificate {index} of the chain is not valid DER X.509: {reason}")]
    Malformed {
        /// Position in the chain (0 = leaf).
        index: usize,
        /// Parser message.
        reason: String,
    },
    /// The leaf has no URI SAN.
    #[error("leaf certificate has no URI SAN: an X509-SVID needs exactly one (its SPIFFE ID)")]
    NoUriSan,
    /// The leaf has more than one URI SAN.
    #[error("leaf certificate has {0} URI SANs: an X509-SVID must have exactly one")]
    MultipleUriSans(usize),
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("leaf URI SAN is not a valid SPIFFE ID: {0}")]
    NotSpiffeId(#[source] SpiffeIdError),
    /// The leaf's SPIFFE ID has no path (it names a trust domain, which only CAs may).
    #[error("leaf SPIFFE ID {0} has no path: a workload SVID needs a non-root path")]
    LeafIdHasNoPath(String),
    /// The leaf is a CA.
    #[error("leaf certificate has basicConstraints cA=true: an X509-SVID leaf must not be a CA")]
    LeafIsCa,
    /// The leaf has no KeyUsage extension.
    #[error("leaf certificate has no key usage extension: digitalSignature is required")]
    LeafMissingKeyUsage,
    /// The leaf lacks digitalSignature.
    #[error("leaf certificate key usage lacks digitalSignature")]
    LeafMissingDigitalSignature,
    /// The leaf has keyCertSign.
    #[error("leaf certificate key usage has keyCertSign, which only CAs may have")]
    LeafHasKeyCertSign,
    /// The leaf has cRLSign.
    #[error("leaf certificate key usage has cRLSign, which only CAs may have")]
    LeafHasCrlSign,
    /// A signing certificate is not a CA.
    #[error("signing certificate {0} of the chain is not a CA (basicConstraints cA=true required)")]
    SignerNotCa(usize),
    /// A signing certificate lacks keyCertSign.
    #[error("signing certificate {0} of the chain lacks keyCertSign")]
    SignerMissingKeyCertSign(usize),
    /// No bundle for the ID's trust domain.
    #[error("no X.509 bundle for trust domain {0:?}")]
    NoBundle(String),
    /// The leaf has expired.
    #[error("leaf certificate expired at {not_after} (unix), checked at {now}")]
    Expired {
        /// NotAfter (Unix seconds).
        not_after: i64,
        /// Check time.
        now: i64,
    },
    /// The leaf is not yet valid.
    #[error("leaf certificate is not valid before {not_before} (unix), checked at {now}")]
    NotYetValid {
        /// NotBefore (Unix seconds).
        not_before: i64,
        /// Check time.
        now: i64,
    },
    /// No path to an authority of the trust domain's bundle (unknown issuer, or a signature
    /// that no authority of the bundle made).
    #[error(
        "certificate chain does not lead to an authority of trust domain {0:?} (unknown issuer)"
    )]
    UnknownIssuer(String),
    /// Other path validation failure.
    #[error("certificate chain verification failed: {0}")]
    Chain(webpki::Error),
}

/// X.509 authorities (DER CA certificates) by trust domain.
pub trait X509BundleSource {
    /// The authorities of `td`, or `None` when there is no bundle for it.
    fn x509_authorities(&self, td: &TrustDomain) -> Option<&[Vec<u8>]>;
}

impl X509BundleSource for Bundle {
    fn x509_authorities(&self, td: &TrustDomain) -> Option<&[Vec<u8>]> {
        (&self.trust_domain == td).then_some(self.x509_authorities.as_slice())
    }
}

impl X509BundleSource for [Bundle] {
    fn x509_authorities(&self, td: &TrustDomain) -> Option<&[Vec<u8>]> {
        self.iter()
            .find(|b| &b.trust_domain == td)
            .map(|b| b.x509_authorities.as_slice())
    }
}

impl X509BundleSource for Vec<Bundle> {
    fn x509_authorities(&self, td: &TrustDomain) -> Option<&[Vec<u8>]> {
        self.as_slice().x509_authorities(td)
    }
}

impl X509BundleSource for HashMap<TrustDomain, Bundle> {
    fn x509_authorities(&self, td: &TrustDomain) -> Option<&[Vec<u8>]> {
        self.get(td).map(|b| b.x509_authorities.as_slice())
    }
}

impl X509BundleSource for BTreeMap<TrustDomain, Bundle> {
    fn x509_authorities(&self, td: &TrustDomain) -> Option<&[Vec<u8>]> {
        self.get(td).map(|b| b.x509_authorities.as_slice())
    }
}

fn bundle_jwt_key<'a>(b: Option<&'a Bundle>, kid: &str) -> JwtKeyLookup<'a> {
    match b {
        None => JwtKeyLookup::NoBundle,
        Some(b) => b.jwt_authority(kid).map_or(JwtKeyLookup::UnknownKid, |a| {
            JwtKeyLookup::Found(&a.public_key)
        }),
    }
}

impl JwtBundleSource for Bundle {
    fn jwt_key(&self, td: &TrustDomain, kid: &str) -> JwtKeyLookup<'_> {
        bundle_jwt_key((&self.trust_domain == td).then_some(self), kid)
    }
}

impl JwtBundleSource for [Bundle] {
    fn jwt_key(&self, td: &TrustDomain, kid: &str) -> JwtKeyLookup<'_> {
        bundle_jwt_key(self.iter().find(|b| &b.trust_domain == td), kid)
    }
}

impl JwtBundleSource for Vec<Bundle> {
    fn jwt_key(&self, td: &TrustDomain, kid: &str) -> JwtKeyLookup<'_> {
        self.as_slice().jwt_key(td, kid)
    }
}

impl JwtBundleSource for HashMap<TrustDomain, Bundle> {
    fn jwt_key(&self, td: &TrustDomain, kid: &str) -> JwtKeyLookup<'_> {
        bundle_jwt_key(self.get(td), kid)
    }
}

impl JwtBundleSource for BTreeMap<TrustDomain, Bundle> {
    fn jwt_key(&self, td: &TrustDomain, kid: &str) -> JwtKeyLookup<'_> {
        bundle_jwt_key(self.get(td), kid)
    }
}

/// Accepts any (or no) extended key usage, as go-spiffe's X509-SVID verification does.
struct AnyEku;

impl webpki::ExtendedKeyUsageValidator for AnyEku {
    fn validate(&self, iter: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for purpose in iter {
            purpose?;
        }
        Ok(())
    }
}

fn parse(index: usize, der: &[u8]) -> Result<X509Certificate<'_>, X509SvidError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(X509SvidError::Malformed {
            index,
            reason: "trailing bytes after certificate".into(),
        }),
        Err(e) => Err(X509SvidError::Malformed {
            index,
            reason: e.to_string(),
        }),
    }
}

fn malformed(index: usize) -> impl Fn(x509_parser::error::X509Error) -> X509SvidError {
    move |e| X509SvidError::Malformed {
        index,
        reason: e.to_string(),
    }
}

/// Extracts the SPIFFE ID of a leaf certificate (exactly one URI SAN, a valid SPIFFE ID)
/// without any other check.
pub fn spiffe_id_from_cert(der: &[u8]) -> Result<SpiffeId, X509SvidError> {
    let cert = parse(0, der)?;
    leaf_spiffe_id(&cert)
}

fn leaf_spiffe_id(cert: &X509Certificate<'_>) -> Result<SpiffeId, X509SvidError> {
    let san = cert.subject_alternative_name().map_err(malformed(0))?;
    let uris: Vec<&str> = san
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    match uris.as_slice() {
        [] => Err(X509SvidError::NoUriSan),
        [one] => one.parse().map_err(X509SvidError::NotSpiffeId),
        many => Err(X509SvidError::MultipleUriSans(many.len())),
    }
}

/// Validates an X509-SVID chain (leaf first, then intermediates) at `now` against the bundle of
/// the leaf's trust domain, and returns its SPIFFE ID.
pub fn validate_x509_svid<C: AsRef<[u8]>>(
    chain: &[C],
    bundles: &dyn X509BundleSource,
    now: SystemTime,
) -> Result<SpiffeId, X509SvidError> {
    let Some(leaf_der) = chain.first() else {
        return Err(X509SvidError::EmptyChain);
    };
    let leaf = parse(0, leaf_der.as_ref())?;
    let id = leaf_spiffe_id(&leaf)?;
    if id.path().is_empty() {
        return Err(X509SvidError::LeafIdHasNoPath(id.to_string()));
    }
    if leaf
        .basic_constraints()
        .map_err(malformed(0))?
        .is_some_and(|bc| bc.value.ca)
    {
        return Err(X509SvidError::LeafIsCa);
    }
    let ku = leaf
        .key_usage()
        .map_err(malformed(0))?
        .ok_or(X509SvidError::LeafMissingKeyUsage)?
        .value;
    if !ku.digital_signature() {
        return Err(X509SvidError::LeafMissingDigitalSignature);
    }
    if ku.key_cert_sign() {
        return Err(X509SvidError::LeafHasKeyCertSign);
    }
    if ku.crl_sign() {
        return Err(X509SvidError::LeafHasCrlSign);
    }
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let not_before = leaf.validity().not_before.timestamp();
    let not_after = leaf.validity().not_after.timestamp();
    if now_s < not_before {
        return Err(X509SvidError::NotYetValid {
            not_before,
            now: now_s,
        });
    }
    if now_s > not_after {
        return Err(X509SvidError::Expired {
            not_after,
            now: now_s,
        });
    }
    for (i, der) in chain.iter().enumerate().skip(1) {
        let cert = parse(i, der.as_ref())?;
        if !cert
            .basic_constraints()
            .map_err(malformed(i))?
            .is_some_and(|bc| bc.value.ca)
        {
            return Err(X509SvidError::SignerNotCa(i));
        }
        let ok = cert
            .key_usage()
            .map_err(malformed(i))?
            .is_some_and(|k| k.value.key_cert_sign());
        if !ok {
            return Err(X509SvidError::SignerMissingKeyCertSign(i));
        }
    }
    let td = id.trust_domain();
    let roots = bundles
        .x509_authorities(td)
        .ok_or_else(|| X509SvidError::NoBundle(td.to_string()))?;
    let root_ders: Vec<CertificateDer<'_>> = roots
        .iter()
        .map(|r| CertificateDer::from(r.as_slice()))
        .collect();
    let anchors: Vec<_> = root_ders
        .iter()
        .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
        .collect();
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.as_ref()))
        .collect();
    let leaf_der = CertificateDer::from(leaf_der.as_ref());
    let ee = webpki::EndEntityCert::try_from(&leaf_der).map_err(X509SvidError::Chain)?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now_s).unwrap_or(0),
    ));
    match ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        time,
        AnyEku,
        None,
        None,
    ) {
        Ok(_) => Ok(id),
        Err(webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey) => {
            Err(X509SvidError::UnknownIssuer(td.to_string()))
        }
        Err(e) => Err(X509SvidError::Chain(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyType, PrivateKey, Signer};
    use crate::x509::{CaSubject, CaTemplate, SvidTemplate, X509Authority, self_signed_ca};
    use rcgen::{
        CertificateParams, DistinguishedName, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };
    use spire_spiffe::from_unix_secs;
    use std::sync::Arc;
    use std::time::Duration;

    const NOW: i64 = 1_800_000_000;

    fn td(s: &str) -> TrustDomain {
        s.parse().unwrap()
    }

    struct Ca {
        key: KeyPair,
        params: CertificateParams,
        der: Vec<u8>,
    }

    fn ca(td_name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{td_name} CA"));
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{td_name}").try_into().unwrap(),
        )];
        params.not_before = time::OffsetDateTime::from_unix_timestamp(NOW - 1000).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(NOW + 100_000).unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Ca { key, params, der }
    }

    fn leaf_params(uris: &[&str]) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().unwrap()))
            .collect();
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_before = time::OffsetDateTime::from_unix_timestamp(NOW - 100).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(NOW + 3600).unwrap();
        p.use_authority_key_identifier_extension = true;
        p
    }

    fn sign(ca: &Ca, p: &CertificateParams) -> Vec<u8> {
        let leaf_key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&ca.params, &ca.key);
        p.signed_by(&leaf_key, &issuer).unwrap().der().to_vec()
    }

    fn bundles(cas: &[(&str, &Ca)]) -> Vec<Bundle> {
        cas.iter()
            .map(|(name, ca)| {
                let mut b = Bundle::new(td(name));
                b.x509_authorities.push(ca.der.clone());
                b
            })
            .collect()
    }

    fn check(chain: &[Vec<u8>], b: &[Bundle]) -> Result<SpiffeId, X509SvidError> {
        validate_x509_svid(chain, &b.to_vec(), from_unix_secs(NOW))
    }

    #[test]
    fn valid_leaf_passes() {
        let ca = ca("example.org");
        let b = bundles(&[("example.org", &ca)]);
        let leaf = sign(&ca, &leaf_params(&["spiffe://example.org/web"]));
        assert_eq!(
            check(&[leaf], &b).unwrap().as_str(),
            "spiffe://example.org/web"
        );
    }

    #[test]
    fn rejects_no_uri_san() {
        let ca = ca("example.org");
        let b = bundles(&[("example.org", &ca)]);
        let mut p = leaf_params(&[]);
        p.subject_alt_names = vec![SanType::DnsName("web".try_into().unwrap())];
        assert!(matches!(
            check(&[sign(&ca, &p)], &b),
            Err(X509SvidError::NoUriSan)
        ));
    }

    #[test]
    fn rejects_two_uri_sans() {
        let ca = ca("example.org");
        let b = bundles(&[("example.org", &ca)]);
        let p = leaf_params(&["spiffe://example.org/a", "spiffe://example.org/b"]);
        assert!(matches!(
            check(&[sign(&ca, &p)], &b),
            Err(X509SvidError::MultipleUriSans(2))
        ));
    }

    #[test]
    fn rejects_non_spiffe_uri() {
        let ca = ca("example.org");
        let b = bundles(&[("example.org", &ca)]);
        let p = leaf_params(&["https://example.org/web"]);
        assert!(matches!(
            check(&[sign(&ca, &p)], &b),
            Err(X509SvidError::NotSpiffeId(_))
        ));
        let p = leaf_params(&["spiffe://example.org"]);
        assert!(matches!(
            check(&[sign(&ca, &p)], &b),
            Err(X509SvidError::LeafIdHasNoPath(_))
        ));
    }

    #[test]
    fn rejects_leaf_that_is_ca() {
        let ca = ca("example.org");
        let b = bundles(&[("example.org", &ca)]);
        let mut p = leaf_params(&["spiffe://example.org/web"]);
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        assert!(matches!(
            check(&[sign(&ca, &p)], &b),
            Err(X509SvidError::LeafIsCa)
        ));
    }

    #[test]
    fn rejects_leaf_without_digital_signature() {
        let ca = ca("example.org");
        let b = bundles(&[("example.org", &ca)]);
        let mut p = leaf_params(&["spiffe://example.org/web"]);
        p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
        assert!(matches!(
            check(&[sign(&ca, &p)], &b),
            Err(X509SvidError::LeafMissingDigitalSignature)
        ));
        p.key_usages = vec![];
        assert!(matches!(
            check(&[sign(&ca, &p)], &b),
            Err(X509SvidError::LeafMissingKeyUsage)
        ));
    }

    #[test]
    fn rejects_leaf_with_key_cert_sign_or_crl_sign() {
        let ca = ca("example.org");
        let b = bundles(&[("example.org", &ca)]);
        let mut p = leaf_params(&["spiffe://example.org/web"]);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ];
        assert!(matches!(
            check(&[sign(&ca, &p)], &b),
            Err(X509SvidError::LeafHasKeyCertSign)
        ));
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
        assert!(matches!(
            check(&[sign(&ca, &p)], &b),
            Err(X509SvidError::LeafHasCrlSign)
        ));
    }

    #[test]
    fn rejects_expired_and_not_yet_valid() {
        let ca = ca("example.org");
        let b = bundles(&[("example.org", &ca)]);
        let leaf = sign(&ca, &leaf_params(&["spiffe://example.org/web"]));
        assert!(matches!(
            validate_x509_svid(&[&leaf], &b, from_unix_secs(NOW + 3601)),
            Err(X509SvidError::Expired { .. })
        ));
        assert!(matches!(
            validate_x509_svid(&[&leaf], &b, from_unix_secs(NOW - 101)),
            Err(X509SvidError::NotYetValid { .. })
        ));
    }

    #[test]
    fn rejects_expired_intermediate() {
        let root = ca("example.org");
        let b = bundles(&[("example.org", &root)]);
        let mut inter = ca("example.org");
        inter.params.distinguished_name = DistinguishedName::new();
        inter
            .params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "intermediate");
        inter.params.not_after = time::OffsetDateTime::from_unix_timestamp(NOW - 1).unwrap();
        let issuer = Issuer::from_params(&root.params, &root.key);
        inter.params.use_authority_key_identifier_extension = true;
        let inter_der = inter
            .params
            .signed_by(&inter.key, &issuer)
            .unwrap()
            .der()
            .to_vec();
        let leaf = sign(&inter, &leaf_params(&["spiffe://example.org/web"]));
        assert!(matches!(
            check(&[leaf, inter_der], &b),
            Err(X509SvidError::Chain(webpki::Error::CertExpired { .. }))
        ));
    }

    #[test]
    fn rejects_foreign_ca() {
        let ca1 = ca("example.org");
        let foreign = ca("example.org");
        let b = bundles(&[("example.org", &ca1)]);
        let leaf = sign(&foreign, &leaf_params(&["spiffe://example.org/web"]));
        assert!(matches!(
            check(&[leaf], &b),
            Err(X509SvidError::UnknownIssuer(_))
        ));
    }

    #[test]
    fn rejects_id_in_other_trust_domain() {
        let ca1 = ca("example.org");
        let ca2 = ca("other.org");
        // Signed by example.org's CA but naming other.org: other.org's bundle must be used.
        let leaf = sign(&ca1, &leaf_params(&["spiffe://other.org/web"]));
        let only_example = bundles(&[("example.org", &ca1)]);
        assert!(matches!(
            check(std::slice::from_ref(&leaf), &only_example),
            Err(X509SvidError::NoBundle(td)) if td == "other.org"
        ));
        let both = bundles(&[("example.org", &ca1), ("other.org", &ca2)]);
        assert!(matches!(
            check(&[leaf], &both),
            Err(X509SvidError::UnknownIssuer(_))
        ));
    }

    #[test]
    fn intermediate_chain_passes_and_non_ca_signer_fails() {
        // Built with this crate's own templates: root -> intermediate -> SVID.
        let root_key: Arc<dyn Signer> = Arc::new(PrivateKey::generate(KeyType::EcP256).unwrap());
        let t = CaTemplate {
            trust_domain: td("example.org"),
            subject: CaSubject::default(),
            ttl: Duration::from_secs(86400),
        };
        let root = self_signed_ca(root_key, &t, from_unix_secs(NOW - 60)).unwrap();
        let inter_key: Arc<dyn Signer> = Arc::new(PrivateKey::generate(KeyType::EcP384).unwrap());
        let inter_der = root
            .sign_intermediate_ca(inter_key.public_key(), &t, from_unix_secs(NOW - 60))
            .unwrap();
        let inter = X509Authority::new(inter_der.clone(), inter_key).unwrap();
        let leaf_key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let csr = crate::csr::create_csr(&leaf_key, None).unwrap();
        let leaf = inter
            .sign_svid_from_csr(
                &csr,
                &SvidTemplate {
                    spiffe_id: "spiffe://example.org/web".parse().unwrap(),
                    dns_names: vec!["web.example.org".into()],
                    ttl: Duration::from_secs(3600),
                },
                from_unix_secs(NOW - 60),
            )
            .unwrap();
        let mut b = Bundle::new(td("example.org"));
        b.x509_authorities.push(root.cert_der().to_vec());
        let id = validate_x509_svid(&[leaf.clone(), inter_der.clone()], &b, from_unix_secs(NOW))
            .unwrap();
        assert_eq!(id.as_str(), "spiffe://example.org/web");
        // Without the intermediate there is no path.
        assert!(matches!(
            validate_x509_svid(std::slice::from_ref(&leaf), &b, from_unix_secs(NOW)),
            Err(X509SvidError::UnknownIssuer(_))
        ));
        // A leaf presented as a signing certificate is refused.
        let other_leaf = sign(
            &ca("example.org"),
            &leaf_params(&["spiffe://example.org/x"]),
        );
        assert!(matches!(
            validate_x509_svid(&[leaf, other_leaf], &b, from_unix_secs(NOW)),
            Err(X509SvidError::SignerNotCa(1))
        ));
    }

    #[test]
    fn bundle_is_a_jwt_bundle_source() {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let mut b = Bundle::new(td("example.org"));
        b.jwt_authorities.push(spire_spiffe::JwtAuthority {
            key_id: "k1".into(),
            public_key: key.public_key().spki_der().to_vec(),
            expires_at: None,
        });
        let claims = crate::jwt::JwtSvidClaims {
            spiffe_id: "spiffe://example.org/w".parse().unwrap(),
            audience: vec!["a".into()],
            issued_at: from_unix_secs(NOW),
            expires_at: from_unix_secs(NOW + 60),
            issuer: None,
            jwt_id: None,
        };
        let tok = crate::jwt::sign_jwt_svid(&key, "k1", None, &claims).unwrap();
        let opts = crate::jwt::JwtValidationOptions::default();
        let v = crate::jwt::validate_jwt_svid(&tok, &b, "a", from_unix_secs(NOW), &opts).unwrap();
        assert_eq!(v.spiffe_id.as_str(), "spiffe://example.org/w");
        let map: HashMap<TrustDomain, Bundle> = [(td("example.org"), b.clone())].into();
        assert!(crate::jwt::validate_jwt_svid(&tok, &map, "a", from_unix_secs(NOW), &opts).is_ok());
        let other = vec![Bundle::new(td("other.org"))];
        assert!(matches!(
            crate::jwt::validate_jwt_svid(&tok, &other, "a", from_unix_secs(NOW), &opts),
            Err(crate::jwt::JwtError::NoBundle(_))
        ));
        fn send_sync<T: Send + Sync>() {}
        send_sync::<X509Authority>();
        send_sync::<crate::DiskKeyManager>();
    }

    /// An upstream CA made by `openssl req -x509` (C, O, OU, CN as PrintableString/UTF8String):
    /// the intermediate's issuer must match the root's subject byte for byte.
    #[test]
    fn openssl_upstream_root_chains() {
        let crt = include_str!("../testdata/openssl-upstream-ca.crt");
        let key = include_str!("../testdata/openssl-upstream-ca.key");
        let root_der = spire_spiffe::parse_pem_certificates(crt.as_bytes())
            .unwrap()
            .remove(0);
        let root_key: Arc<dyn Signer> = Arc::new(PrivateKey::from_pem(key).unwrap());
        let upstream = X509Authority::new(root_der.clone(), root_key).unwrap();
        let t = CaTemplate {
            trust_domain: td("example.org"),
            subject: CaSubject::default(),
            ttl: Duration::from_secs(86400),
        };
        let inter_key: Arc<dyn Signer> = Arc::new(PrivateKey::generate(KeyType::EcP256).unwrap());
        let inter_der = upstream
            .sign_intermediate_ca(inter_key.public_key(), &t, from_unix_secs(NOW - 60))
            .unwrap();
        let (_, root) = X509Certificate::from_der(&root_der).unwrap();
        let (_, inter) = X509Certificate::from_der(&inter_der).unwrap();
        assert_eq!(inter.issuer().as_raw(), root.subject().as_raw());
        let inter_ca = X509Authority::new(inter_der.clone(), inter_key).unwrap();
        let leaf_key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let leaf = inter_ca
            .sign_svid(
                leaf_key.public_key(),
                &SvidTemplate {
                    spiffe_id: "spiffe://example.org/web".parse().unwrap(),
                    dns_names: vec![],
                    ttl: Duration::from_secs(600),
                },
                from_unix_secs(NOW - 60),
            )
            .unwrap();
        let mut b = Bundle::new(td("example.org"));
        b.x509_authorities.push(root_der);
        assert!(validate_x509_svid(&[leaf, inter_der], &b, from_unix_secs(NOW)).is_ok());
    }

    #[test]
    fn rejects_garbage_and_empty() {
        let ca = ca("example.org");
        let b = bundles(&[("example.org", &ca)]);
        assert!(matches!(check(&[], &b), Err(X509SvidError::EmptyChain)));
        assert!(matches!(
            check(&[vec![0x30, 0x03, 1, 2, 3]], &b),
            Err(X509SvidError::Malformed { index: 0, .. })
        ));
    }
}
