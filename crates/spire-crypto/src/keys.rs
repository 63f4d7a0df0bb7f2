//! Private and public keys: generation, PKCS#8 import/export, signing.
//!
//! Every private key is held by aws-lc-rs. X.509 signatures are ASN.1 DER (ECDSA) or PKCS#1 v1.5
//! (RSA); JWS signatures are the fixed-width `r || s` form for ECDSA.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self as sig, EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair as _, RsaKeyPair,
};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey as ParsedPublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;
use zeroize::Zeroizing;

/// Errors from key generation, import, export and signing.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key type name is not one SPIRE knows.
    #[error("unknown key type {0:?}: expected ec-p256, ec-p384, rsa-2048 or rsa-4096")]
    UnknownKeyType(String),
    /// Key generation failed inside the crypto library.
    #[error("could not generate a {0} key")]
    Generate(KeyType),
    /// The bytes are not a supported private key.
    #[error("invalid private key: {0}")]
    InvalidPrivateKey(String),
    /// The bytes are not a supported public key.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(String),
    /// A PEM document could not be read.
    #[error("invalid PEM: {0}")]
    Pem(#[from] pem::PemError),
    /// The PEM label is not one of the supported private key labels.
    #[error("unsupported PEM label {0:?}: expected PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY")]
    UnsupportedPemLabel(String),
    /// The JWS algorithm does not fit the key.
    #[error("algorithm {alg} cannot be used with a {key_type} key")]
    AlgorithmMismatch {
        /// Requested algorithm.
        alg: JwsAlgorithm,
        /// Type of the key.
        key_type: KeyType,
    },
    /// The signing operation failed inside the crypto library.
    #[error("signing with a {0} key failed")]
    Sign(KeyType),
    /// Exporting the key failed inside the crypto library.
    #[error("could not encode the {0} key")]
    Encode(KeyType),
}

/// Key types SPIRE supports, with SPIRE's configuration names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyType {
    /// ECDSA over NIST P-256 (`ec-p256`), the default.
    #[default]
    #[serde(rename = "ec-p256")]
    EcP256,
    /// ECDSA over NIST P-384 (`ec-p384`).
    #[serde(rename = "ec-p384")]
    EcP384,
    /// RSA 2048 bits (`rsa-2048`).
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    /// RSA 4096 bits (`rsa-4096`).
    #[serde(rename = "rsa-4096")]
    Rsa4096,
}

impl KeyType {
    /// All key types, in SPIRE's order.
    pub const ALL: [KeyType; 4] = [
        KeyType::EcP256,
        KeyType::EcP384,
        KeyType::Rsa2048,
        KeyType::Rsa4096,
    ];

    /// SPIRE's configuration name (`ec-p256`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcP256 => "ec-p256",
            KeyType::EcP384 => "ec-p384",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa4096 => "rsa-4096",
        }
    }

    /// The JWS algorithm SPIRE uses when signing JWT-SVIDs with this key type.
    pub fn default_jws_algorithm(self) -> JwsAlgorithm {
        match self {
            KeyType::EcP256 => JwsAlgorithm::ES256,
            KeyType::EcP384 => JwsAlgorithm::ES384,
            KeyType::Rsa2048 | KeyType::Rsa4096 => JwsAlgorithm::RS256,
        }
    }

    /// True for the RSA key types.
    pub fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa2048 | KeyType::Rsa4096)
    }

    pub(crate) fn rcgen_algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyType::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Rsa2048 | KeyType::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| KeyError::UnknownKeyType(s.to_owned()))
    }
}

/// JWS signature algorithms (RFC 7518) that JWT-SVIDs may use.
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JwsAlgorithm {
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// ECDSA P-521 with SHA-512 (validation only).
    ES512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
}

impl JwsAlgorithm {
    /// All algorithms the JWT-SVID standard allows.
    pub const ALL: [JwsAlgorithm; 9] = [
        JwsAlgorithm::ES256,
        JwsAlgorithm::ES384,
        JwsAlgorithm::ES512,
        JwsAlgorithm::RS256,
        JwsAlgorithm::RS384,
        JwsAlgorithm::RS512,
        JwsAlgorithm::PS256,
        JwsAlgorithm::PS384,
        JwsAlgorithm::PS512,
    ];

    /// The `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            JwsAlgorithm::ES256 => "ES256",
            JwsAlgorithm::ES384 => "ES384",
            JwsAlgorithm::ES512 => "ES512",
            JwsAlgorithm::RS256 => "RS256",
            JwsAlgorithm::RS384 => "RS384",
            JwsAlgorithm::RS512 => "RS512",
            JwsAlgorithm::PS256 => "PS256",
            JwsAlgorithm::PS384 => "PS384",
            JwsAlgorithm::PS512 => "PS512",
        }
    }

    /// Parses an `alg` header value; `None` for anything outside the allow-list.
    pub fn from_name(s: &str) -> Option<Self> {
        JwsAlgorithm::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub(crate) fn verification_algorithm(self) -> &'static dyn sig::VerificationAlgorithm {
        match self {
            JwsAlgorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
            JwsAlgorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
            JwsAlgorithm::ES512 => &sig::ECDSA_P521_SHA512_FIXED,
            JwsAlgorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
            JwsAlgorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
            JwsAlgorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
            JwsAlgorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
            JwsAlgorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
            JwsAlgorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        }
    }
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A public key: its type, SubjectPublicKeyInfo DER and the raw key bits inside it.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key_type: KeyType,
    spki_der: Vec<u8>,
    key_bits: Vec<u8>,
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo holding a P-256, P-384, RSA-2048 or RSA-4096 key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
            .map_err(|e| KeyError::InvalidPublicKey(e.to_string()))?;
        if !rest.is_empty() {
            return Err(KeyError::InvalidPublicKey(
                "trailing bytes after SubjectPublicKeyInfo".into(),
            ));
        }
        Self::from_parsed_spki(&spki)
    }

    pub(crate) fn from_parsed_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, KeyError> {
        let key_type = match spki.parsed() {
            Ok(ParsedPublicKey::EC(point)) => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok());
                match (curve.map(|c| c.to_id_string()).as_deref(), point.key_size()) {
                    (Some("1.2.840.10045.3.1.7"), 256) => KeyType::EcP256,
                    (Some("1.3.132.0.34"), 384) => KeyType::EcP384,
                    _ => {
                        return Err(KeyError::InvalidPublicKey(
                            "unsupported elliptic curve: expected P-256 or P-384".into(),
                        ));
                    }
                }
            }
            Ok(ParsedPublicKey::RSA(rsa)) => match rsa.key_size() {
                2048 => KeyType::Rsa2048,
                4096 => KeyType::Rsa4096,
                n => {
                    return Err(KeyError::InvalidPublicKey(format!(
                        "unsupported RSA key size {n}: expected 2048 or 4096 bits"
                    )));
                }
            },
            Ok(_) => {
                return Err(KeyError::InvalidPublicKey(
                    "unsupported key algorithm: expected EC P-256/P-384 or RSA".into(),
                ));
            }
            Err(e) => return Err(KeyError::InvalidPublicKey(e.to_string())),
        };
        Ok(PublicKey {
            key_type,
            spki_der: spki.raw.to_vec(),
            key_bits: spki.subject_public_key.data.to_vec(),
        })
    }

    /// The key type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The subjectPublicKey bit string contents (EC point or PKCS#1 RSAPublicKey).
    pub fn key_bits(&self) -> &[u8] {
        &self.key_bits
    }

    /// PEM `PUBLIC KEY` encoding of the SubjectPublicKeyInfo.
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PUBLIC KEY", self.spki_der.clone()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("key_type", &self.key_type)
            .field("spki_len", &self.spki_der.len())
            .finish()
    }
}

impl rcgen::PublicKeyData for PublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.key_bits
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.key_type.rcgen_algorithm()
    }
}

enum Inner {
    Ec {
        /// Signs with ASN.1 DER signatures (X.509).
        der: EcdsaKeyPair,
        /// Signs with fixed-width r||s signatures (JWS).
        fixed: EcdsaKeyPair,
    },
    Rsa(RsaKeyPair),
}

/// A private key held in memory. `Debug` never shows key material.
pub struct PrivateKey {
    key_type: KeyType,
    inner: Inner,
    public: PublicKey,
}

fn ec_algs(
    key_type: KeyType,
) -> (
    &'static EcdsaSigningAlgorithm,
    &'static EcdsaSigningAlgorithm,
) {
    match key_type {
        KeyType::EcP384 => (
            &sig::ECDSA_P384_SHA384_ASN1_SIGNING,
            &sig::ECDSA_P384_SHA384_FIXED_SIGNING,
        ),
        _ => (
            &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
        ),
    }
}

impl PrivateKey {
    /// Generates a new key of the given type.
    pub fn generate(key_type: KeyType) -> Result<Self, KeyError> {
        match key_type {
            KeyType::EcP256 | KeyType::EcP384 => {
                let (der_alg, _) = ec_algs(key_type);
                let kp =
                    EcdsaKeyPair::generate(der_alg).map_err(|_| KeyError::Generate(key_type))?;
                let pkcs8 = kp.to_pkcs8v1().map_err(|_| KeyError::Generate(key_type))?;
                Self::from_ec_pkcs8(key_type, pkcs8.as_ref())
            }
            KeyType::Rsa2048 | KeyType::Rsa4096 => {
                let size = if key_type == KeyType::Rsa2048 {
                    KeySize::Rsa2048
                } else {
                    KeySize::Rsa4096
                };
                let kp = RsaKeyPair::generate(size).map_err(|_| KeyError::Generate(key_type))?;
                Self::from_rsa(kp)
            }
        }
    }

    fn from_ec_pkcs8(key_type: KeyType, pkcs8: &[u8]) -> Result<Self, KeyError> {
        let (der_alg, fixed_alg) = ec_algs(key_type);
        let der = EcdsaKeyPair::from_pkcs8(der_alg, pkcs8)
            .map_err(|e| KeyError::InvalidPrivateKey(e.to_string()))?;
        let fixed = EcdsaKeyPair::from_pkcs8(fixed_alg, pkcs8)
            .map_err(|e| KeyError::InvalidPrivateKey(e.to_string()))?;
        let spki = der
            .public_key()
            .as_der()
            .map_err(|_| KeyError::Encode(key_type))?;
        let public = PublicKey::from_spki_der(spki.as_ref())?;
        Ok(PrivateKey {
            key_type,
            inner: Inner::Ec { der, fixed },
            public,
        })
    }

    fn from_rsa(kp: RsaKeyPair) -> Result<Self, KeyError> {
        let spki: PublicKeyX509Der<'static> = kp
            .public_key()
            .as_der()
            .map_err(|_| KeyError::InvalidPrivateKey("cannot encode RSA public key".into()))?;
        let public = PublicKey::from_spki_der(spki.as_ref())?;
        Ok(PrivateKey {
            key_type: public.key_type,
            inner: Inner::Rsa(kp),
            public,
        })
    }

    /// Imports a PKCS#8 (v1 or v2) DER private key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        for key_type in [KeyType::EcP256, KeyType::EcP384] {
            if let Ok(k) = Self::from_ec_pkcs8(key_type, der) {
                return Ok(k);
            }
        }
        match RsaKeyPair::from_pkcs8(der) {
            Ok(kp) => Self::from_rsa(kp),
            Err(e) => Err(KeyError::InvalidPrivateKey(format!(
                "not a PKCS#8 P-256, P-384 or RSA key ({e})"
            ))),
        }
    }

    /// Imports a PEM private key: `PRIVATE KEY` (PKCS#8), `EC PRIVATE KEY` (SEC1) or
    /// `RSA PRIVATE KEY` (PKCS#1). The first private key block found is used.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let blocks = pem::parse_many(text)?;
        let block = blocks
            .iter()
            .find(|b| b.tag().ends_with("PRIVATE KEY"))
            .ok_or_else(|| KeyError::InvalidPrivateKey("no PRIVATE KEY block in PEM".into()))?;
        match block.tag() {
            "PRIVATE KEY" => Self::from_pkcs8_der(block.contents()),
            "EC PRIVATE KEY" => {
                for key_type in [KeyType::EcP256, KeyType::EcP384] {
                    let (der_alg, _) = ec_algs(key_type);
                    if let Ok(kp) = EcdsaKeyPair::from_private_key_der(der_alg, block.contents()) {
                        let pkcs8 = kp.to_pkcs8v1().map_err(|_| KeyError::Encode(key_type))?;
                        return Self::from_ec_pkcs8(key_type, pkcs8.as_ref());
                    }
                }
                Err(KeyError::InvalidPrivateKey(
                    "not a SEC1 P-256 or P-384 key".into(),
                ))
            }
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(block.contents())
                .map_err(|e| KeyError::InvalidPrivateKey(e.to_string()))
                .and_then(Self::from_rsa),
            other => Err(KeyError::UnsupportedPemLabel(other.to_owned())),
        }
    }

    /// The key type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// PKCS#8 DER encoding (zeroized on drop).
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        match &self.inner {
            Inner::Ec { der, .. } => der
                .to_pkcs8v1()
                .map(|d| Zeroizing::new(d.as_ref().to_vec()))
                .map_err(|_| KeyError::Encode(self.key_type)),
            Inner::Rsa(kp) => AsDer::<Pkcs8V1Der<'static>>::as_der(kp)
                .map(|d| Zeroizing::new(d.as_ref().to_vec()))
                .map_err(|_| KeyError::Encode(self.key_type)),
        }
    }

    /// PKCS#8 PEM (`PRIVATE KEY`) encoding (zeroized on drop).
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        let der = self.to_pkcs8_der()?;
        let block = pem::Pem::new("PRIVATE KEY", der.to_vec());
        let out = Zeroizing::new(pem::encode(&block));
        let mut contents = block.into_contents();
        zeroize::Zeroize::zeroize(&mut contents);
        Ok(out)
    }

    /// Signs `msg` for an X.509 structure: ECDSA with ASN.1 DER signature (SHA-256 for P-256,
    /// SHA-384 for P-384) or RSA PKCS#1 v1.5 SHA-256.
    pub fn sign_x509(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match &self.inner {
            Inner::Ec { der, .. } => der
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Sign(self.key_type)),
            Inner::Rsa(kp) => {
                let mut out = vec![0u8; kp.public_modulus_len()];
                kp.sign(&sig::RSA_PKCS1_SHA256, &rng, msg, &mut out)
                    .map_err(|_| KeyError::Sign(self.key_type))?;
                Ok(out)
            }
        }
    }

    /// Signs `msg` for a JWS with `alg` (ECDSA signatures fixed-width `r || s`).
    pub fn sign_jws(&self, alg: JwsAlgorithm, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        let mismatch = || KeyError::AlgorithmMismatch {
            alg,
            key_type: self.key_type,
        };
        match &self.inner {
            Inner::Ec { fixed, .. } => {
                let ok = matches!(
                    (self.key_type, alg),
                    (KeyType::EcP256, JwsAlgorithm::ES256) | (KeyType::EcP384, JwsAlgorithm::ES384)
                );
                if !ok {
                    return Err(mismatch());
                }
                fixed
                    .sign(&rng, msg)
                    .map(|s| s.as_ref().to_vec())
                    .map_err(|_| KeyError::Sign(self.key_type))
            }
            Inner::Rsa(kp) => {
                let padding: &'static dyn sig::RsaEncoding = match alg {
                    JwsAlgorithm::RS256 => &sig::RSA_PKCS1_SHA256,
                    JwsAlgorithm::RS384 => &sig::RSA_PKCS1_SHA384,
                    JwsAlgorithm::RS512 => &sig::RSA_PKCS1_SHA512,
                    JwsAlgorithm::PS256 => &sig::RSA_PSS_SHA256,
                    JwsAlgorithm::PS384 => &sig::RSA_PSS_SHA384,
                    JwsAlgorithm::PS512 => &sig::RSA_PSS_SHA512,
                    _ => return Err(mismatch()),
                };
                let mut out = vec![0u8; kp.public_modulus_len()];
                kp.sign(padding, &rng, msg, &mut out)
                    .map_err(|_| KeyError::Sign(self.key_type))?;
                Ok(out)
            }
        }
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

/// Something that holds a private key and signs with it (an in-memory key, a KeyManager slot, an
/// HSM). Object safe; `Debug` must never print key material.
pub trait Signer: Send + Sync + fmt::Debug {
    /// The public half of the key.
    fn public_key(&self) -> &PublicKey;
    /// Signature for an X.509 structure (see [`PrivateKey::sign_x509`]).
    fn sign_x509(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError>;
    /// Signature for a JWS (see [`PrivateKey::sign_jws`]).
    fn sign_jws(&self, alg: JwsAlgorithm, msg: &[u8]) -> Result<Vec<u8>, KeyError>;
}

impl Signer for PrivateKey {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign_x509(&self, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        PrivateKey::sign_x509(self, msg)
    }

    fn sign_jws(&self, alg: JwsAlgorithm, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        PrivateKey::sign_jws(self, alg, msg)
    }
}

/// Adapter letting any [`Signer`] sign through rcgen.
pub(crate) struct RcgenSigner<'a>(pub(crate) &'a dyn Signer);

impl rcgen::PublicKeyData for RcgenSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key().key_bits()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.0.public_key().key_type().rcgen_algorithm()
    }
}

impl rcgen::SigningKey for RcgenSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0
            .sign_x509(msg)
            .map_err(|_| rcgen::Error::RingUnspecified)
    }
}

/// Verifies a JWS signature over `msg` with a SubjectPublicKeyInfo DER key.
pub(crate) fn verify_jws(alg: JwsAlgorithm, spki_der: &[u8], msg: &[u8], signature: &[u8]) -> bool {
    sig::UnparsedPublicKey::new(alg.verification_algorithm(), spki_der)
        .verify(msg, signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_type_names_round_trip() {
        for t in KeyType::ALL {
            assert_eq!(t.as_str().parse::<KeyType>().unwrap(), t);
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert_eq!(KeyType::default(), KeyType::EcP256);
        let err = "EC-P256".parse::<KeyType>().unwrap_err();
        assert!(err.to_string().contains("ec-p256"), "{err}");
    }

    #[test]
    fn generate_export_import_every_type() {
        for t in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
            let k = PrivateKey::generate(t).unwrap();
            assert_eq!(k.key_type(), t);
            assert_eq!(k.public_key().key_type(), t);
            let der = k.to_pkcs8_der().unwrap();
            let k2 = PrivateKey::from_pkcs8_der(&der).unwrap();
            assert_eq!(k2.public_key(), k.public_key());
            let pem = k.to_pkcs8_pem().unwrap();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            let k3 = PrivateKey::from_pem(&pem).unwrap();
            assert_eq!(k3.public_key(), k.public_key());
            let spki = PublicKey::from_spki_der(k.public_key().spki_der()).unwrap();
            assert_eq!(&spki, k.public_key());
        }
    }

    #[test]
    fn rsa4096_generates() {
        let k = PrivateKey::generate(KeyType::Rsa4096).unwrap();
        assert_eq!(k.public_key().key_type(), KeyType::Rsa4096);
    }

    #[test]
    fn sec1_and_pkcs1_pem_import() {
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pkcs8 = ec.serialize_der();
        let k = PrivateKey::from_pkcs8_der(&pkcs8).unwrap();
        assert_eq!(
            k.public_key().spki_der(),
            rcgen::PublicKeyData::subject_public_key_info(&ec).as_slice()
        );
        // SEC1 from aws-lc directly.
        let kp = EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8).unwrap();
        let sec1: aws_lc_rs::encoding::EcPrivateKeyRfc5915Der<'_> =
            kp.private_key().as_der().unwrap();
        let pem_text = pem::encode(&pem::Pem::new("EC PRIVATE KEY", sec1.as_ref().to_vec()));
        let k2 = PrivateKey::from_pem(&pem_text).unwrap();
        assert_eq!(k2.public_key(), k.public_key());
        let bad = pem::encode(&pem::Pem::new("CERTIFICATE", vec![1, 2, 3]));
        assert!(PrivateKey::from_pem(&bad).is_err());
    }

    #[test]
    fn debug_hides_key_material() {
        let k = PrivateKey::generate(KeyType::EcP256).unwrap();
        let der = k.to_pkcs8_der().unwrap();
        let dbg = format!("{k:?}");
        assert!(dbg.contains("EcP256"));
        assert!(!dbg.contains(&hex::encode(&der[der.len() - 8..])));
        assert!(dbg.len() < 64, "{dbg}");
    }

    #[test]
    fn jws_signatures_verify_and_are_fixed_width() {
        let msg = b"header.payload";
        let p256 = PrivateKey::generate(KeyType::EcP256).unwrap();
        let s = p256.sign_jws(JwsAlgorithm::ES256, msg).unwrap();
        assert_eq!(s.len(), 64);
        assert!(verify_jws(
            JwsAlgorithm::ES256,
            p256.public_key().spki_der(),
            msg,
            &s
        ));
        assert!(!verify_jws(
            JwsAlgorithm::ES256,
            p256.public_key().spki_der(),
            b"x",
            &s
        ));
        assert!(p256.sign_jws(JwsAlgorithm::RS256, msg).is_err());
        let p384 = PrivateKey::generate(KeyType::EcP384).unwrap();
        let s = p384.sign_jws(JwsAlgorithm::ES384, msg).unwrap();
        assert_eq!(s.len(), 96);
        assert!(verify_jws(
            JwsAlgorithm::ES384,
            p384.public_key().spki_der(),
            msg,
            &s
        ));
        // A P-384 key must not verify as ES256.
        assert!(!verify_jws(
            JwsAlgorithm::ES256,
            p384.public_key().spki_der(),
            msg,
            &s
        ));
        let rsa = PrivateKey::generate(KeyType::Rsa2048).unwrap();
        for alg in [
            JwsAlgorithm::RS256,
            JwsAlgorithm::PS256,
            JwsAlgorithm::PS512,
        ] {
            let s = rsa.sign_jws(alg, msg).unwrap();
            assert!(verify_jws(alg, rsa.public_key().spki_der(), msg, &s));
        }
        assert!(rsa.sign_jws(JwsAlgorithm::ES256, msg).is_err());
    }

    #[test]
    fn x509_signature_is_der() {
        let k = PrivateKey::generate(KeyType::EcP256).unwrap();
        let s = k.sign_x509(b"tbs").unwrap();
        assert_eq!(s[0], 0x30, "DER SEQUENCE");
        assert!(
            sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_ASN1, k.public_key().key_bits())
                .verify(b"tbs", &s)
                .is_ok()
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(PrivateKey::from_pkcs8_der(b"nope").is_err());
        assert!(PublicKey::from_spki_der(b"nope").is_err());
    }
}
