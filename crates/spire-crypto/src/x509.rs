//! X.509 CA and SVID templates, shaped as SPIRE shapes them, and signing with a [`Signer`].
//!
//! * CA (self-signed root or intermediate): subject from `ca_subject` plus a serialNumber
//!   attribute, URI SAN `spiffe://<td>`, basicConstraints cA=true, KeyUsage
//!   keyCertSign|cRLSign|digitalSignature (critical), SKID and AKID.
//! * X509-SVID (workload, agent, server): exactly one URI SAN (the SPIFFE ID), optional DNS SANs
//!   (the first also becomes the CN), subject C=US, O=SPIRE, KeyUsage
//!   digitalSignature|keyEncipherment|keyAgreement (critical), EKU serverAuth+clientAuth,
//!   explicit basicConstraints cA=false, AKID.
//! * Serial numbers are random 128-bit positive integers; NotBefore is backdated 10 s; NotAfter
//!   never exceeds the signing CA's NotAfter.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose, SanType, SerialNumber,
    string::Ia5String,
};
use spire_spiffe::{SpiffeId, TrustDomain, to_offset_date_time};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::keys::{KeyError, PublicKey, Signer};

/// How far NotBefore is moved into the past, as SPIRE does.
pub const BACKDATE: Duration = Duration::from_secs(10);

/// Errors from building or signing certificates.
#[derive(Debug, thiserror::Error)]
pub enum X509Error {
    /// rcgen rejected the template or signing failed.
    #[error("cannot build certificate: {0}")]
    Build(#[from] rcgen::Error),
    /// The CA certificate is not valid DER X.509.
    #[error("invalid ca certificate: {0}")]
    InvalidCaCertificate(String),
    /// The key does not match the certificate.
    #[error("the signing key does not match the ca certificate's public key")]
    KeyMismatch,
    /// A key-related failure.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The CSR was rejected.
    #[error(transparent)]
    Csr(#[from] crate::csr::CsrError),
    /// A DNS name is not a valid IA5 string.
    #[error("invalid dns name {0:?}")]
    InvalidDnsName(String),
    /// The requested lifetime would end before it starts (for example the CA has expired).
    #[error("certificate would expire at or before its start: the signing ca expires at {0}")]
    CaExpired(OffsetDateTime),
}

/// The `ca_subject` config block: subject of CA certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaSubject {
    /// Country (C) values.
    pub country: Vec<String>,
    /// Organization (O) values.
    pub organization: Vec<String>,
    /// Common name (CN), if any.
    pub common_name: Option<String>,
}

impl Default for CaSubject {
    /// SPIRE's default CA subject: C=US, O=SPIFFE.
    fn default() -> Self {
        CaSubject {
            country: vec!["US".into()],
            organization: vec!["SPIFFE".into()],
            common_name: None,
        }
    }
}

impl CaSubject {
    fn to_dn(&self, serial: &[u8]) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        for c in &self.country {
            dn.push(DnType::CountryName, printable(c));
        }
        for o in &self.organization {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        if let Some(cn) = &self.common_name {
            dn.push(DnType::CommonName, cn.as_str());
        }
        // serialNumber attribute (2.5.4.5), as SPIRE adds to CA subjects.
        dn.push(
            DnType::CustomDnType(vec![2, 5, 4, 5]),
            printable(&decimal(serial)),
        );
        dn
    }
}

/// PrintableString when the text allows it (as Go encodes), UTF8String otherwise.
fn printable(s: &str) -> DnValue {
    match rcgen::string::PrintableString::try_from(s) {
        Ok(p) => DnValue::PrintableString(p),
        Err(_) => DnValue::Utf8String(s.to_owned()),
    }
}

/// Big-endian unsigned bytes to decimal.
fn decimal(bytes: &[u8]) -> String {
    let mut digits: Vec<u8> = vec![0];
    for &b in bytes {
        let mut carry = b as u32;
        for d in digits.iter_mut() {
            let v = (*d as u32) * 256 + carry;
            *d = (v % 10) as u8;
            carry = v / 10;
        }
        while carry > 0 {
            digits.push((carry % 10) as u8);
            carry /= 10;
        }
    }
    digits.iter().rev().map(|d| char::from(b'0' + d)).collect()
}

/// A random positive 128-bit serial number.
pub fn random_serial() -> Result<Vec<u8>, KeyError> {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| KeyError::Sign(crate::KeyType::EcP256))?;
    b[0] &= 0x7f;
    if b[0] == 0 {
        b[0] = 0x01;
    }
    Ok(b.to_vec())
}

/// Owned adapter from `Arc<dyn Signer>` to rcgen's `SigningKey`.
#[derive(Clone)]
struct ArcSigner(Arc<dyn Signer>);

impl rcgen::PublicKeyData for ArcSigner {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key().key_bits()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.0.public_key().key_type().rcgen_algorithm()
    }
}

impl rcgen::SigningKey for ArcSigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0
            .sign_x509(msg)
            .map_err(|_| rcgen::Error::RingUnspecified)
    }
}

/// A CA certificate with the key that signs for it: issues SVIDs and intermediate CAs.
pub struct X509Authority {
    cert_der: Vec<u8>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    subject_key_id: Vec<u8>,
    issuer: Issuer<'static, ArcSigner>,
}

impl fmt::Debug for X509Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Authority")
            .field("subject_key_id", &hex::encode(&self.subject_key_id))
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl X509Authority {
    /// Pairs an existing CA certificate (DER) with its signing key.
    pub fn new(cert_der: Vec<u8>, signer: Arc<dyn Signer>) -> Result<Self, X509Error> {
        let (rest, cert) = X509Certificate::from_der(&cert_der)
            .map_err(|e| X509Error::InvalidCaCertificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(X509Error::InvalidCaCertificate(
                "trailing bytes after certificate".into(),
            ));
        }
        if cert.public_key().raw != signer.public_key().spki_der() {
            return Err(X509Error::KeyMismatch);
        }
        let not_before = cert.validity().not_before.to_datetime();
        let not_after = cert.validity().not_after.to_datetime();
        let subject_key_id = cert
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                    Some(k.0.to_vec())
                }
                _ => None,
            })
            .unwrap_or_default();
        drop(cert);
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), ArcSigner(signer))?;
        Ok(X509Authority {
            cert_der,
            not_before,
            not_after,
            subject_key_id,
            issuer,
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA certificate's NotBefore.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// The CA certificate's NotAfter: no certificate it signs outlives it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Subject Key Identifier bytes (SPIRE's X.509 authority ID is its hex form).
    pub fn subject_key_id(&self) -> &[u8] {
        &self.subject_key_id
    }

    /// The signer.
    pub fn signer(&self) -> &Arc<dyn Signer> {
        &self.issuer.key().0
    }

    fn validity(
        &self,
        now: SystemTime,
        ttl: Duration,
    ) -> Result<(OffsetDateTime, OffsetDateTime), X509Error> {
        let now = to_offset_date_time(now);
        let not_before = now - BACKDATE;
        let not_after = (now + ttl).min(self.not_after);
        if not_after <= now {
            return Err(X509Error::CaExpired(self.not_after));
        }
        Ok((not_before, not_after))
    }

    /// Signs an X509-SVID for `public_key` (usually from a verified CSR).
    pub fn sign_svid(
        &self,
        public_key: &PublicKey,
        template: &SvidTemplate,
        now: SystemTime,
    ) -> Result<Vec<u8>, X509Error> {
        let (not_before, not_after) = self.validity(now, template.ttl)?;
        let mut params = CertificateParams::default();
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, printable("US"));
        dn.push(DnType::OrganizationName, "SPIRE");
        if let Some(first) = template.dns_names.first() {
            dn.push(DnType::CommonName, first.as_str());
        }
        params.distinguished_name = dn;
        let mut sans = Vec::with_capacity(1 + template.dns_names.len());
        sans.push(SanType::URI(Ia5String::try_from(
            template.spiffe_id.as_str(),
        )?));
        for name in &template.dns_names {
            let v = Ia5String::try_from(name.as_str())
                .map_err(|_| X509Error::InvalidDnsName(name.clone()))?;
            sans.push(SanType::DnsName(v));
        }
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        Ok(params.signed_by(public_key, &self.issuer)?.der().to_vec())
    }

    /// Verifies a DER CSR (proof of possession) and signs an X509-SVID for its key; the CSR's
    /// subject and extensions are ignored.
    pub fn sign_svid_from_csr(
        &self,
        csr_der: &[u8],
        template: &SvidTemplate,
        now: SystemTime,
    ) -> Result<Vec<u8>, X509Error> {
        let csr = crate::csr::parse_and_verify_csr(csr_der)?;
        self.sign_svid(&csr.public_key, template, now)
    }

    /// Signs an intermediate CA certificate for `public_key` (a downstream or upstream-signed
    /// server CA), with URI SAN `spiffe://<td>`.
    pub fn sign_intermediate_ca(
        &self,
        public_key: &PublicKey,
        template: &CaTemplate,
        now: SystemTime,
    ) -> Result<Vec<u8>, X509Error> {
        let (not_before, not_after) = self.validity(now, template.ttl)?;
        let params = ca_params(template, not_before, not_after)?;
        Ok(params.signed_by(public_key, &self.issuer)?.der().to_vec())
    }
}

/// What goes into an X509-SVID.
#[derive(Clone, Debug)]
pub struct SvidTemplate {
    /// The SPIFFE ID (the only URI SAN).
    pub spiffe_id: SpiffeId,
    /// DNS SANs; the first becomes the subject CN.
    pub dns_names: Vec<String>,
    /// Requested lifetime (capped at the CA's NotAfter).
    pub ttl: Duration,
}

/// What goes into a CA certificate.
#[derive(Clone, Debug)]
pub struct CaTemplate {
    /// Trust domain (URI SAN `spiffe://<td>`).
    pub trust_domain: TrustDomain,
    /// Subject.
    pub subject: CaSubject,
    /// Lifetime (`ca_ttl`), capped at the issuer's NotAfter for intermediates.
    pub ttl: Duration,
}

fn ca_params(
    template: &CaTemplate,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, X509Error> {
    let serial = random_serial()?;
    let mut params = CertificateParams::default();
    params.not_before = not_before;
    params.not_after = not_after;
    params.distinguished_name = template.subject.to_dn(&serial);
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(
        template.trust_domain.id_string(),
    )?)];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Creates a self-signed root CA for `signer` and returns it as an authority.
pub fn self_signed_ca(
    signer: Arc<dyn Signer>,
    template: &CaTemplate,
    now: SystemTime,
) -> Result<X509Authority, X509Error> {
    let now = to_offset_date_time(now);
    let params = ca_params(template, now - BACKDATE, now + template.ttl)?;
    let cert = params.self_signed(&ArcSigner(signer.clone()))?;
    X509Authority::new(cert.der().to_vec(), signer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyType, PrivateKey};
    use spire_spiffe::from_unix_secs;
    use x509_parser::extensions::GeneralName;

    fn td() -> TrustDomain {
        "example.org".parse().unwrap()
    }

    fn ca_template(ttl: u64) -> CaTemplate {
        CaTemplate {
            trust_domain: td(),
            subject: CaSubject {
                country: vec!["US".into()],
                organization: vec!["Acme".into()],
                common_name: Some("Acme CA".into()),
            },
            ttl: Duration::from_secs(ttl),
        }
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn decimal_conversion() {
        assert_eq!(decimal(&[]), "0");
        assert_eq!(decimal(&[1, 0]), "256");
        assert_eq!(decimal(&u128::MAX.to_be_bytes()), u128::MAX.to_string());
    }

    #[test]
    fn root_ca_shape() {
        let key: Arc<dyn Signer> = Arc::new(PrivateKey::generate(KeyType::EcP256).unwrap());
        let ca = self_signed_ca(key, &ca_template(86400), from_unix_secs(NOW)).unwrap();
        let (_, cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
        assert_eq!(cert.validity().not_before.timestamp(), NOW - 10);
        assert_eq!(cert.validity().not_after.timestamp(), NOW + 86400);
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.critical);
        assert!(ku.value.key_cert_sign() && ku.value.crl_sign() && ku.value.digital_signature());
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            vec![GeneralName::URI("spiffe://example.org")]
        );
        let subject = cert.subject().to_string();
        assert!(
            subject.contains("C=US")
                && subject.contains("O=Acme")
                && subject.contains("CN=Acme CA"),
            "{subject}"
        );
        assert!(!ca.subject_key_id().is_empty());
        assert!(cert.serial.bits() > 64 && cert.serial.bits() <= 127);
        // Self-signed: AKID = SKID, signature verifies with own key.
        assert!(cert.verify_signature(None).is_ok());
        assert_eq!(cert.issuer(), cert.subject());
    }

    #[test]
    fn svid_shape_and_cap() {
        let key: Arc<dyn Signer> = Arc::new(PrivateKey::generate(KeyType::EcP256).unwrap());
        let ca = self_signed_ca(key, &ca_template(3600), from_unix_secs(NOW)).unwrap();
        let leaf = PrivateKey::generate(KeyType::EcP256).unwrap();
        let t = SvidTemplate {
            spiffe_id: "spiffe://example.org/web".parse().unwrap(),
            dns_names: vec!["web.example.org".into(), "web".into()],
            ttl: Duration::from_secs(7200),
        };
        let der = ca
            .sign_svid(leaf.public_key(), &t, from_unix_secs(NOW + 60))
            .unwrap();
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        // Capped at the CA's NotAfter.
        assert_eq!(cert.validity().not_after.timestamp(), NOW + 3600);
        assert_eq!(cert.validity().not_before.timestamp(), NOW + 50);
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(!bc.value.ca);
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.critical);
        assert!(
            ku.value.digital_signature() && ku.value.key_encipherment() && ku.value.key_agreement()
        );
        assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            vec![
                GeneralName::URI("spiffe://example.org/web"),
                GeneralName::DNSName("web.example.org"),
                GeneralName::DNSName("web"),
            ]
        );
        assert!(cert.subject().to_string().contains("CN=web.example.org"));
        assert_eq!(cert.public_key().raw, leaf.public_key().spki_der());
        let (_, ca_cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
        assert!(cert.verify_signature(Some(ca_cert.public_key())).is_ok());
        assert_eq!(cert.issuer(), ca_cert.subject());
        // An expired CA cannot sign.
        assert!(matches!(
            ca.sign_svid(leaf.public_key(), &t, from_unix_secs(NOW + 4000)),
            Err(X509Error::CaExpired(_))
        ));
    }

    #[test]
    fn intermediate_and_rsa_and_mismatch() {
        let root_key: Arc<dyn Signer> = Arc::new(PrivateKey::generate(KeyType::Rsa2048).unwrap());
        let root =
            self_signed_ca(root_key.clone(), &ca_template(86400), from_unix_secs(NOW)).unwrap();
        let inter_key: Arc<dyn Signer> = Arc::new(PrivateKey::generate(KeyType::EcP384).unwrap());
        let der = root
            .sign_intermediate_ca(
                inter_key.public_key(),
                &ca_template(200_000),
                from_unix_secs(NOW),
            )
            .unwrap();
        let inter = X509Authority::new(der, inter_key).unwrap();
        assert_eq!(inter.not_after(), root.not_after());
        assert!(matches!(
            X509Authority::new(
                root.cert_der().to_vec(),
                Arc::new(PrivateKey::generate(KeyType::EcP256).unwrap())
            ),
            Err(X509Error::KeyMismatch)
        ));
        assert!(matches!(
            X509Authority::new(vec![1, 2, 3], root_key),
            Err(X509Error::InvalidCaCertificate(_))
        ));
    }
}
