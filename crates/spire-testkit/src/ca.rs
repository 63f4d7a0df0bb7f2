//! A throwaway X.509 CA for tests (x509pop node certificates, TLS peers,
//! upstream authorities), built with rcgen. Keys are ECDSA P-256.

use std::fmt;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// What to put in a leaf certificate. [`LeafSpec::new`] gives a certificate
/// valid from an hour ago for a day, usable for TLS client and server auth.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// Subject common name.
    pub common_name: String,
    /// URI SANs (e.g. SPIFFE IDs).
    pub uri_sans: Vec<String>,
    /// DNS SANs.
    pub dns_sans: Vec<String>,
    /// Serial number (random when `None`).
    pub serial: Option<u64>,
    /// Start of validity (default: an hour ago).
    pub not_before: Option<OffsetDateTime>,
    /// End of validity (default: a day from now).
    pub not_after: Option<OffsetDateTime>,
    /// Adds the serverAuth EKU.
    pub server_auth: bool,
    /// Adds the clientAuth EKU.
    pub client_auth: bool,
}

impl LeafSpec {
    /// A client+server leaf named `common_name` with no SANs.
    pub fn new(common_name: &str) -> Self {
        Self {
            common_name: common_name.to_owned(),
            uri_sans: Vec::new(),
            dns_sans: Vec::new(),
            serial: None,
            not_before: None,
            not_after: None,
            server_auth: true,
            client_auth: true,
        }
    }

    /// Adds a URI SAN.
    pub fn uri(mut self, uri: &str) -> Self {
        self.uri_sans.push(uri.to_owned());
        self
    }

    /// Adds a DNS SAN.
    pub fn dns(mut self, name: &str) -> Self {
        self.dns_sans.push(name.to_owned());
        self
    }

    /// Sets the serial number.
    pub fn serial(mut self, serial: u64) -> Self {
        self.serial = Some(serial);
        self
    }

    /// Sets the validity window.
    pub fn validity(mut self, not_before: OffsetDateTime, not_after: OffsetDateTime) -> Self {
        self.not_before = Some(not_before);
        self.not_after = Some(not_after);
        self
    }
}

/// A certificate issued by a [`TestCa`], with its private key.
#[derive(Clone)]
pub struct IssuedCert {
    /// The leaf certificate, PEM.
    pub cert_pem: String,
    /// The leaf certificate, DER.
    pub cert_der: Vec<u8>,
    /// The leaf followed by the issuing intermediates (not the root), PEM.
    pub chain_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("fingerprint", &self.sha1_fingerprint())
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl IssuedCert {
    /// Lower-case hex SHA-1 of the DER certificate (as x509pop agent IDs use).
    pub fn sha1_fingerprint(&self) -> String {
        sha1_hex(&self.cert_der)
    }

    /// Lower-case hex SHA-256 of the DER certificate.
    pub fn sha256_fingerprint(&self) -> String {
        hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &self.cert_der,
        ))
    }

    /// Writes `<dir>/<name>.pem` (the chain: leaf + intermediates) and
    /// `<dir>/<name>.key` (mode 0600); returns (cert path, key path).
    pub fn write(&self, dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        write_public(&cert, &self.chain_pem)?;
        write_secret(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

/// A test certificate authority: a self-signed root, or an intermediate made
/// by [`TestCa::intermediate`].
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
    /// This CA's certificate followed by its parents' intermediates (no root).
    chain_pem: String,
    root_pem: String,
}

impl fmt::Debug for TestCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCa")
            .field("fingerprint", &sha1_hex(&self.cert_der))
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl TestCa {
    /// A new self-signed root CA named `common_name`, valid from an hour ago
    /// for ten years.
    ///
    /// # Panics
    /// When key generation or signing fails (never expected).
    pub fn new(common_name: &str) -> Self {
        match Self::try_new(common_name) {
            Ok(ca) => ca,
            Err(e) => panic!("cannot create test CA {common_name}: {e:#}"),
        }
    }

    fn try_new(common_name: &str) -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let params = ca_params(common_name)?;
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_der: cert.der().to_vec(),
            chain_pem: cert_pem.clone(),
            root_pem: cert_pem.clone(),
            cert_pem,
            key_pem,
        })
    }

    /// An intermediate CA signed by this one.
    ///
    /// # Panics
    /// When key generation or signing fails (never expected).
    pub fn intermediate(&self, common_name: &str) -> TestCa {
        let inner = || -> anyhow::Result<TestCa> {
            let key = KeyPair::generate()?;
            let params = ca_params(common_name)?;
            let cert = params.signed_by(&key, &self.issuer)?;
            let cert_pem = cert.pem();
            let key_pem = key.serialize_pem();
            let parent_chain = if self.cert_pem == self.root_pem {
                String::new()
            } else {
                self.chain_pem.clone()
            };
            Ok(TestCa {
                issuer: Issuer::new(params, key),
                cert_der: cert.der().to_vec(),
                chain_pem: cert_pem.clone() + &parent_chain,
                root_pem: self.root_pem.clone(),
                cert_pem,
                key_pem,
            })
        };
        match inner() {
            Ok(ca) => ca,
            Err(e) => panic!("cannot create intermediate CA {common_name}: {e:#}"),
        }
    }

    /// Issues a leaf certificate.
    ///
    /// # Panics
    /// When a SAN is malformed or signing fails.
    pub fn issue(&self, spec: &LeafSpec) -> IssuedCert {
        match self.try_issue(spec) {
            Ok(c) => c,
            Err(e) => panic!("cannot issue test certificate {spec:?}: {e:#}"),
        }
    }

    /// A client+server leaf named `common_name`.
    pub fn issue_leaf(&self, common_name: &str) -> IssuedCert {
        self.issue(&LeafSpec::new(common_name))
    }

    fn try_issue(&self, spec: &LeafSpec) -> anyhow::Result<IssuedCert> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&spec.common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if spec.server_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        for uri in &spec.uri_sans {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
        for dns in &spec.dns_sans {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.as_str().try_into()?));
        }
        let now = OffsetDateTime::now_utc();
        params.not_before = spec.not_before.unwrap_or(now - Duration::hours(1));
        params.not_after = spec.not_after.unwrap_or(now + Duration::days(1));
        params.serial_number = Some(match spec.serial {
            Some(s) => SerialNumber::from_slice(&s.to_be_bytes()),
            None => random_serial()?,
        });
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_pem = cert.pem();
        let intermediates = if self.cert_pem == self.root_pem {
            String::new()
        } else {
            self.chain_pem.clone()
        };
        Ok(IssuedCert {
            chain_pem: cert_pem.clone() + &intermediates,
            cert_der: cert.der().to_vec(),
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// This CA's certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// This CA's certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// This CA's private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The root certificate (trust anchor) of this CA's hierarchy, PEM.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// Lower-case hex SHA-1 of this CA's DER certificate.
    pub fn sha1_fingerprint(&self) -> String {
        sha1_hex(&self.cert_der)
    }

    /// Writes `<dir>/<name>.pem` (this CA's certificate), `<dir>/<name>.key`
    /// (mode 0600) and `<dir>/<name>-root.pem` (the trust anchor); returns
    /// (cert path, key path).
    pub fn write(&self, dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        write_public(&cert, &self.cert_pem)?;
        write_public(&dir.join(format!("{name}-root.pem")), &self.root_pem)?;
        write_secret(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "spire-rs test");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn ca_params(common_name: &str) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(3650);
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn random_serial() -> anyhow::Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("random generator failed"))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn sha1_hex(der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        der,
    ))
}

fn write_public(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut f = std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn openssl(args: &[&str]) -> crate::CliOutput {
        crate::run_cli("openssl", args)
    }

    #[test]
    fn leaf_verifies_against_root_through_intermediate() {
        let dir = crate::temp_dir();
        let root = TestCa::new("root");
        let inter = root.intermediate("inter");
        let leaf = inter.issue(
            &LeafSpec::new("node-1")
                .uri("spiffe://example.org/node")
                .dns("node.test")
                .serial(42),
        );
        let (cert, key) = leaf.write(dir.path(), "leaf").unwrap();
        let (_, ca_key) = root.write(dir.path(), "root").unwrap();
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(&ca_key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // The chain file holds the leaf and the intermediate.
        assert_eq!(leaf.chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
        std::fs::write(dir.path().join("leaf-only.pem"), &leaf.cert_pem).unwrap();
        std::fs::write(dir.path().join("inter.pem"), inter.cert_pem()).unwrap();
        let d = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        openssl(&[
            "verify",
            "-CAfile",
            &d("root-root.pem"),
            "-untrusted",
            &d("inter.pem"),
            &d("leaf-only.pem"),
        ])
        .assert_success();
        // Without the intermediate it does not verify.
        openssl(&[
            "verify",
            "-CAfile",
            &d("root-root.pem"),
            &d("leaf-only.pem"),
        ])
        .assert_failure();
        let text = openssl(&[
            "x509",
            "-in",
            &cert.to_string_lossy(),
            "-noout",
            "-text",
            "-serial",
        ]);
        text.assert_success()
            .assert_output_contains("URI:spiffe://example.org/node")
            .assert_output_contains("DNS:node.test")
            .assert_output_contains("serial=2A")
            .assert_output_contains("CA:FALSE");
        let fp = openssl(&[
            "x509",
            "-in",
            &cert.to_string_lossy(),
            "-noout",
            "-fingerprint",
            "-sha1",
        ]);
        let expected = fp
            .stdout
            .trim()
            .rsplit('=')
            .next()
            .unwrap()
            .replace(':', "")
            .to_lowercase();
        assert_eq!(leaf.sha1_fingerprint(), expected);
    }

    #[test]
    fn debug_output_hides_keys() {
        let ca = TestCa::new("root");
        let leaf = ca.issue_leaf("x");
        assert!(!format!("{ca:?}{leaf:?}").contains("PRIVATE KEY"));
        assert!(leaf.key_pem.contains("PRIVATE KEY"));
    }
}
