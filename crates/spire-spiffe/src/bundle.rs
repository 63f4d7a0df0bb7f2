//! SPIFFE bundles (SPIFFE Trust Domain and Bundle standard): the model, the JWKS-based JSON
//! form, and PEM for the X.509 part.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::TrustDomain;
use crate::key::{self, B64STD, JwkKeyMembers, KeyError, PublicKey};

/// JWK `use` of an X.509 authority.
pub const USE_X509_SVID: &str = "x509-svid";
/// JWK `use` of a JWT authority.
pub const USE_JWT_SVID: &str = "jwt-svid";

/// The largest bundle document accepted by the parsers, in bytes (16 MiB).
pub const MAX_BUNDLE_LEN: usize = 16 << 20;

/// Why a bundle document was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The document is not JSON of the expected shape.
    #[error("bundle is not valid json: {0}")]
    Json(#[from] serde_json::Error),
    /// The document exceeds [`MAX_BUNDLE_LEN`].
    #[error("bundle document is {0} bytes (at most 16 MiB are accepted)")]
    TooLarge(usize),
    /// A key entry is not a JSON object.
    #[error("key {index} is not a json object")]
    KeyNotObject {
        /// Position of the key in `keys`.
        index: usize,
    },
    /// A key entry has the right `use` but malformed members.
    #[error("key {index} ({use_}) is malformed: {source}")]
    KeyJson {
        /// Position of the key in `keys`.
        index: usize,
        /// The key's `use`.
        use_: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A key without `kty`.
    #[error("key {index} ({use_}) has no kty (the key type is required)")]
    MissingKty {
        /// Position of the key in `keys`.
        index: usize,
        /// The key's `use`.
        use_: &'static str,
    },
    /// An x509-svid key whose `x5c` does not hold exactly one certificate.
    #[error("x509-svid key {index} must hold exactly one certificate in x5c, found {count}")]
    X509CertificateCount {
        /// Position of the key in `keys`.
        index: usize,
        /// How many certificates `x5c` holds.
        count: usize,
    },
    /// An x5c entry that is not standard base64.
    #[error("x509-svid key {index} has an x5c entry that is not valid base64: {source}")]
    X5cBase64 {
        /// Position of the key in `keys`.
        index: usize,
        /// The decoder's error.
        #[source]
        source: base64::DecodeError,
    },
    /// An x5c entry that is not a DER certificate.
    #[error("x509-svid key {index} has an x5c entry that is not a der certificate: {source}")]
    X5cCertificate {
        /// Position of the key in `keys`.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: KeyError,
    },
    /// The key members of an x509-svid key do not describe the certificate's key.
    #[error("x509-svid key {index} has key members that do not match its x5c certificate")]
    X509KeyMismatch {
        /// Position of the key in `keys`.
        index: usize,
    },
    /// A jwt-svid key without `kid`.
    #[error("jwt-svid key {index} has no kid (a key id is required for jwt-svid keys)")]
    MissingKid {
        /// Position of the key in `keys`.
        index: usize,
    },
    /// Two jwt-svid keys with the same `kid`.
    #[error("jwt-svid key {index} repeats kid {kid:?} (key ids must be unique)")]
    DuplicateKid {
        /// Position of the key in `keys`.
        index: usize,
        /// The repeated key id.
        kid: String,
    },
    /// Key members that cannot be read.
    #[error("key {index} ({use_}) is invalid: {source}")]
    Key {
        /// Position of the key in `keys`.
        index: usize,
        /// The key's `use`.
        use_: &'static str,
        /// What is wrong with it.
        #[source]
        source: KeyError,
    },
    /// A JWT authority whose public key cannot be written as a JWK (serialization only).
    #[error("jwt authority {kid:?} cannot be written as a jwk: {source}")]
    UnencodableJwtAuthority {
        /// The authority's key id.
        kid: String,
        /// What is wrong with its key.
        #[source]
        source: KeyError,
    },
    /// An X.509 authority whose public key cannot be written as a JWK (serialization only).
    #[error("x509 authority {index} cannot be written as a jwk: {source}")]
    UnencodableX509Authority {
        /// Position in `x509_authorities`.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: KeyError,
    },
    /// `spiffe_refresh_hint` below zero.
    #[error("spiffe_refresh_hint is negative ({0}); expected a number of seconds >= 0")]
    NegativeRefreshHint(i64),
}

/// Why a PEM bundle was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PemBundleError {
    /// The PEM text is malformed.
    #[error("pem bundle is malformed: {0}")]
    Pem(#[from] pem::PemError),
    /// The text holds no PEM block.
    #[error("pem bundle has no pem blocks (expected CERTIFICATE blocks)")]
    Empty,
    /// A block other than `CERTIFICATE`.
    #[error("pem block {index} is {label:?} (expected CERTIFICATE)")]
    NotCertificate {
        /// Position of the block.
        index: usize,
        /// Its label.
        label: String,
    },
    /// A CERTIFICATE block that does not hold a DER certificate.
    #[error("pem block {index} is not a der certificate: {source}")]
    BadCertificate {
        /// Position of the block.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: KeyError,
    },
    /// The document exceeds [`MAX_BUNDLE_LEN`].
    #[error("pem bundle is {0} bytes (at most 16 MiB are accepted)")]
    TooLarge(usize),
}

/// A JWT signing authority: a public key and its key id.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JwtAuthority {
    /// The key id (`kid`), never empty.
    pub key_id: String,
    /// The public key as SubjectPublicKeyInfo DER.
    pub public_key: Vec<u8>,
    /// When the key expires (Unix seconds), if known. Not carried by the JSON form.
    pub expires_at: Option<i64>,
}

impl fmt::Debug for JwtAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthority")
            .field("key_id", &self.key_id)
            .field("public_key_len", &self.public_key.len())
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The trust bundle of one trust domain: X.509 authorities (DER CA certificates) and JWT
/// authorities, with refresh hint and sequence number.
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The trust domain the bundle belongs to (not part of the JSON document).
    pub trust_domain: TrustDomain,
    /// X.509 authorities, each one DER certificate.
    pub x509_authorities: Vec<Vec<u8>>,
    /// JWT authorities.
    pub jwt_authorities: Vec<JwtAuthority>,
    /// How often consumers should refresh the bundle (whole seconds).
    pub refresh_hint: Option<Duration>,
    /// Sequence number, increased on each change (0 when the document has none).
    pub sequence_number: u64,
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("trust_domain", &self.trust_domain)
            .field("x509_authorities", &self.x509_authorities.len())
            .field(
                "jwt_authorities",
                &self
                    .jwt_authorities
                    .iter()
                    .map(|a| a.key_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("refresh_hint", &self.refresh_hint)
            .field("sequence_number", &self.sequence_number)
            .finish()
    }
}

/// The JSON document, as read.
#[derive(Deserialize)]
struct RawBundle {
    keys: Vec<serde_json::Value>,
    #[serde(default)]
    spiffe_sequence: Option<u64>,
    #[serde(default)]
    spiffe_refresh_hint: Option<i64>,
}

/// One JWK of a known `use`, as read.
#[derive(Deserialize)]
struct RawJwk {
    #[serde(default)]
    kty: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x5c: Option<Vec<String>>,
}

/// One JWK, as written. Member order follows common practice (`use`, `kty`, `kid`, ...).
#[derive(Serialize)]
struct OutJwk<'a> {
    #[serde(rename = "use")]
    use_: &'static str,
    kty: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    kid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x5c: Option<Vec<String>>,
}

impl<'a> OutJwk<'a> {
    fn new(
        use_: &'static str,
        kid: Option<&'a str>,
        m: JwkKeyMembers,
        x5c: Option<String>,
    ) -> Self {
        OutJwk {
            use_,
            kty: m.kty,
            kid,
            crv: m.crv,
            x: m.x,
            y: m.y,
            n: m.n,
            e: m.e,
            x5c: x5c.map(|c| vec![c]),
        }
    }
}

#[derive(Serialize)]
struct OutBundle<'a> {
    keys: Vec<OutJwk<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spiffe_refresh_hint: Option<u64>,
    spiffe_sequence: u64,
}

impl RawJwk {
    fn members(&self, index: usize, use_: &'static str) -> Result<JwkKeyMembers, BundleError> {
        let kty = self
            .kty
            .clone()
            .ok_or(BundleError::MissingKty { index, use_ })?;
        Ok(JwkKeyMembers {
            kty,
            crv: self.crv.clone(),
            x: self.x.clone(),
            y: self.y.clone(),
            n: self.n.clone(),
            e: self.e.clone(),
        })
    }
}

/// Whether the JWK type is one this implementation understands; keys of other types are
/// ignored as the standard requires.
fn known_kty(kty: &str) -> bool {
    matches!(kty, "EC" | "RSA" | "OKP")
}

impl Bundle {
    /// An empty bundle for `trust_domain`.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Bundle {
            trust_domain,
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            refresh_hint: None,
            sequence_number: 0,
        }
    }

    /// Whether the bundle has no authorities at all ("trust nothing").
    pub fn is_empty(&self) -> bool {
        self.x509_authorities.is_empty() && self.jwt_authorities.is_empty()
    }

    /// The JWT authority with key id `kid`.
    pub fn jwt_authority(&self, kid: &str) -> Option<&JwtAuthority> {
        self.jwt_authorities.iter().find(|a| a.key_id == kid)
    }

    /// Parses the SPIFFE bundle JSON document (a JWK Set with `spiffe_sequence` and
    /// `spiffe_refresh_hint`) of `trust_domain`.
    ///
    /// Keys whose `use` is not `x509-svid` or `jwt-svid`, or whose `kty` is not `EC`, `RSA`
    /// or `OKP`, are ignored, as the standard says. An empty `keys` array is a valid bundle that
    /// trusts nothing. A standalone JWT bundle (JWKS of jwt-svid keys) uses the same format.
    ///
    /// Stricter than some SDKs on purpose: two jwt-svid keys with the same `kid` are rejected
    /// (rather than one silently winning), and the key members of an x509-svid key must
    /// describe the public key of its `x5c` certificate.
    pub fn from_json(trust_domain: TrustDomain, json: &[u8]) -> Result<Self, BundleError> {
        if json.len() > MAX_BUNDLE_LEN {
            return Err(BundleError::TooLarge(json.len()));
        }
        let raw: RawBundle = serde_json::from_slice(json)?;
        let refresh_hint = match raw.spiffe_refresh_hint {
            None => None,
            Some(s) if s < 0 => return Err(BundleError::NegativeRefreshHint(s)),
            Some(s) => Some(Duration::from_secs(s.unsigned_abs())),
        };
        let mut bundle = Bundle {
            trust_domain,
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            refresh_hint,
            sequence_number: raw.spiffe_sequence.unwrap_or(0),
        };
        for (index, value) in raw.keys.into_iter().enumerate() {
            let serde_json::Value::Object(map) = value else {
                return Err(BundleError::KeyNotObject { index });
            };
            let use_ = match map.get("use").and_then(|u| u.as_str()) {
                Some(USE_X509_SVID) => USE_X509_SVID,
                Some(USE_JWT_SVID) => USE_JWT_SVID,
                _ => continue,
            };
            let jwk: RawJwk =
                serde_json::from_value(serde_json::Value::Object(map)).map_err(|source| {
                    BundleError::KeyJson {
                        index,
                        use_,
                        source,
                    }
                })?;
            let members = jwk.members(index, use_)?;
            if !known_kty(&members.kty) {
                continue;
            }
            if use_ == USE_X509_SVID {
                bundle
                    .x509_authorities
                    .push(parse_x509_key(index, &jwk, &members)?);
            } else {
                let authority = parse_jwt_key(index, &jwk, &members)?;
                if bundle.jwt_authority(&authority.key_id).is_some() {
                    return Err(BundleError::DuplicateKid {
                        index,
                        kid: authority.key_id,
                    });
                }
                bundle.jwt_authorities.push(authority);
            }
        }
        Ok(bundle)
    }

    /// Writes the SPIFFE bundle JSON document (compact).
    pub fn to_json(&self) -> Result<String, BundleError> {
        Ok(serde_json::to_string(&self.out_bundle()?)?)
    }

    /// Writes the SPIFFE bundle JSON document, indented (as `spire-server bundle show`).
    pub fn to_json_pretty(&self) -> Result<String, BundleError> {
        Ok(serde_json::to_string_pretty(&self.out_bundle()?)?)
    }

    fn out_bundle(&self) -> Result<OutBundle<'_>, BundleError> {
        let mut keys = Vec::with_capacity(self.x509_authorities.len() + self.jwt_authorities.len());
        for (index, cert) in self.x509_authorities.iter().enumerate() {
            let members = key::certificate_spki(cert)
                .and_then(key::spki_to_jwk)
                .map_err(|source| BundleError::UnencodableX509Authority { index, source })?;
            keys.push(OutJwk::new(
                USE_X509_SVID,
                None,
                members,
                Some(B64STD.encode(cert)),
            ));
        }
        for a in &self.jwt_authorities {
            let members = key::spki_to_jwk(&a.public_key).map_err(|source| {
                BundleError::UnencodableJwtAuthority {
                    kid: a.key_id.clone(),
                    source,
                }
            })?;
            keys.push(OutJwk::new(USE_JWT_SVID, Some(&a.key_id), members, None));
        }
        Ok(OutBundle {
            keys,
            spiffe_refresh_hint: self.refresh_hint.map(|d| d.as_secs()),
            spiffe_sequence: self.sequence_number,
        })
    }

    /// Parses a PEM bundle: one or more `CERTIFICATE` blocks, which become the X.509
    /// authorities of an otherwise empty bundle.
    pub fn from_pem(trust_domain: TrustDomain, pem_text: &[u8]) -> Result<Self, PemBundleError> {
        let mut bundle = Bundle::new(trust_domain);
        bundle.x509_authorities = parse_pem_certificates(pem_text)?;
        Ok(bundle)
    }

    /// Writes the X.509 authorities as PEM `CERTIFICATE` blocks.
    pub fn to_pem(&self) -> String {
        certificates_to_pem(&self.x509_authorities)
    }
}

fn parse_x509_key(
    index: usize,
    jwk: &RawJwk,
    members: &JwkKeyMembers,
) -> Result<Vec<u8>, BundleError> {
    let x5c = jwk.x5c.as_deref().unwrap_or_default();
    let [cert_b64] = x5c else {
        return Err(BundleError::X509CertificateCount {
            index,
            count: x5c.len(),
        });
    };
    let cert = B64STD
        .decode(cert_b64)
        .map_err(|source| BundleError::X5cBase64 { index, source })?;
    let spki = key::certificate_spki(&cert)
        .map_err(|source| BundleError::X5cCertificate { index, source })?;
    let cert_key = PublicKey::from_spki_der(spki)
        .map_err(|source| BundleError::X5cCertificate { index, source })?;
    let jwk_key = PublicKey::from_jwk(members).map_err(|source| BundleError::Key {
        index,
        use_: USE_X509_SVID,
        source,
    })?;
    if cert_key != jwk_key {
        return Err(BundleError::X509KeyMismatch { index });
    }
    Ok(cert)
}

fn parse_jwt_key(
    index: usize,
    jwk: &RawJwk,
    members: &JwkKeyMembers,
) -> Result<JwtAuthority, BundleError> {
    let key_id = match jwk.kid.as_deref() {
        Some(k) if !k.is_empty() => k.to_owned(),
        _ => return Err(BundleError::MissingKid { index }),
    };
    let public_key = key::jwk_to_spki(members).map_err(|source| BundleError::Key {
        index,
        use_: USE_JWT_SVID,
        source,
    })?;
    Ok(JwtAuthority {
        key_id,
        public_key,
        expires_at: None,
    })
}

/// Parses PEM text holding only `CERTIFICATE` blocks into DER certificates (at least one).
pub fn parse_pem_certificates(pem_text: &[u8]) -> Result<Vec<Vec<u8>>, PemBundleError> {
    if pem_text.len() > MAX_BUNDLE_LEN {
        return Err(PemBundleError::TooLarge(pem_text.len()));
    }
    let blocks = pem::parse_many(pem_text)?;
    if blocks.is_empty() {
        return Err(PemBundleError::Empty);
    }
    let mut certs = Vec::with_capacity(blocks.len());
    for (index, block) in blocks.into_iter().enumerate() {
        if block.tag() != "CERTIFICATE" {
            return Err(PemBundleError::NotCertificate {
                index,
                label: block.tag().to_owned(),
            });
        }
        let der = block.into_contents();
        key::certificate_spki(&der)
            .map_err(|source| PemBundleError::BadCertificate { index, source })?;
        certs.push(der);
    }
    Ok(certs)
}

/// Writes DER certificates as PEM `CERTIFICATE` blocks (LF line endings).
pub fn certificates_to_pem(certs: &[Vec<u8>]) -> String {
    let blocks: Vec<pem::Pem> = certs
        .iter()
        .map(|c| pem::Pem::new("CERTIFICATE", c.clone()))
        .collect();
    pem::encode_many_config(
        &blocks,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn td() -> TrustDomain {
        "example.org".parse().unwrap()
    }

    fn testdata(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn cert(name: &str) -> Vec<u8> {
        parse_pem_certificates(&testdata(name)).unwrap().remove(0)
    }

    fn reference_jwk(name: &str) -> Value {
        let all: Value = serde_json::from_slice(&testdata("expected-jwks.json")).unwrap();
        all[name].clone()
    }

    fn x509_key(cert_file: &str, key: &str) -> Value {
        let mut k = reference_jwk(key);
        k["use"] = json!("x509-svid");
        k["x5c"] = json!([B64STD.encode(cert(cert_file))]);
        k
    }

    fn jwt_key(key: &str, kid: &str) -> Value {
        let mut k = reference_jwk(key);
        k["use"] = json!("jwt-svid");
        k["kid"] = json!(kid);
        k
    }

    fn parse(doc: &Value) -> Result<Bundle, BundleError> {
        Bundle::from_json(td(), doc.to_string().as_bytes())
    }

    fn valid_doc() -> Value {
        json!({
            "keys": [
                x509_key("ca-p256.pem", "p256"),
                jwt_key("p256", "kid-ec"),
                x509_key("ca-rsa2048.pem", "rsa"),
                jwt_key("rsa4096", "kid-rsa"),
                jwt_key("p521", "kid-521"),
                {"use": "wit-svid", "kty": "EC", "kid": "w", "crv": "P-256", "x": "??", "y": 1},
                {"use": "something-else", "kty": "EC"},
                {"kty": "EC", "kid": "no-use"},
                {"use": "jwt-svid", "kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
            ],
            "spiffe_refresh_hint": 60,
            "spiffe_sequence": 7,
        })
    }

    #[test]
    fn parses_valid_bundle_and_ignores_unknown_use_and_kty() {
        let b = parse(&valid_doc()).unwrap();
        assert_eq!(b.trust_domain, td());
        assert_eq!(
            b.x509_authorities,
            [cert("ca-p256.pem"), cert("ca-rsa2048.pem")]
        );
        let kids: Vec<&str> = b
            .jwt_authorities
            .iter()
            .map(|a| a.key_id.as_str())
            .collect();
        assert_eq!(kids, ["kid-ec", "kid-rsa", "kid-521"]);
        assert_eq!(
            b.jwt_authority("kid-ec").unwrap().public_key,
            testdata("spki-p256.der")
        );
        assert_eq!(
            b.jwt_authority("kid-rsa").unwrap().public_key,
            testdata("spki-rsa4096.der")
        );
        assert!(b.jwt_authority("w").is_none());
        assert!(b.jwt_authority("sym").is_none());
        assert_eq!(b.refresh_hint, Some(Duration::from_secs(60)));
        assert_eq!(b.sequence_number, 7);
        assert!(!b.is_empty());
    }

    #[test]
    fn json_round_trip() {
        let b = parse(&valid_doc()).unwrap();
        let json = b.to_json().unwrap();
        let back = Bundle::from_json(td(), json.as_bytes()).unwrap();
        assert_eq!(back, b);
        let pretty = b.to_json_pretty().unwrap();
        assert_eq!(Bundle::from_json(td(), pretty.as_bytes()).unwrap(), b);
        // The written keys carry the members the standard requires.
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["spiffe_sequence"], 7);
        assert_eq!(v["spiffe_refresh_hint"], 60);
        let keys = v["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 5);
        assert_eq!(keys[0]["use"], "x509-svid");
        assert_eq!(keys[0]["kty"], "EC");
        assert!(keys[0].get("kid").is_none());
        assert_eq!(keys[0]["x"], reference_jwk("p256")["x"]);
        assert_eq!(keys[1]["kty"], "RSA");
        assert_eq!(keys[2]["use"], "jwt-svid");
        assert_eq!(keys[2]["kid"], "kid-ec");
        assert_eq!(keys[2]["crv"], "P-256");
        assert_eq!(keys[3]["n"], reference_jwk("rsa4096")["n"]);
    }

    #[test]
    fn empty_keys_is_a_bundle_that_trusts_nothing() {
        let b = parse(&json!({"keys": [], "spiffe_sequence": 2})).unwrap();
        assert!(b.is_empty());
        assert_eq!(b.sequence_number, 2);
        assert_eq!(b.refresh_hint, None);
        let v: Value = serde_json::from_str(&b.to_json().unwrap()).unwrap();
        assert_eq!(v, json!({"keys": [], "spiffe_sequence": 2}));
    }

    #[test]
    fn jwt_only_bundle() {
        let b = parse(&json!({"keys": [jwt_key("p384", "a"), jwt_key("ed", "b")]})).unwrap();
        assert!(b.x509_authorities.is_empty());
        assert_eq!(b.jwt_authorities.len(), 2);
        assert_eq!(b.sequence_number, 0);
        assert_eq!(
            b.jwt_authority("b").unwrap().public_key,
            testdata("spki-ed.der")
        );
    }

    fn rejected(doc: Value) -> BundleError {
        parse(&doc).unwrap_err()
    }

    #[test]
    fn x509_key_certificate_count() {
        let mut two = x509_key("ca-p256.pem", "p256");
        two["x5c"] = json!([
            B64STD.encode(cert("ca-p256.pem")),
            B64STD.encode(cert("ca-p256.pem"))
        ]);
        let err = rejected(json!({"keys": [jwt_key("p256", "k"), two]}));
        assert!(
            matches!(
                err,
                BundleError::X509CertificateCount { index: 1, count: 2 }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "x509-svid key 1 must hold exactly one certificate in x5c, found 2"
        );
        let mut zero = x509_key("ca-p256.pem", "p256");
        zero["x5c"] = json!([]);
        assert!(matches!(
            rejected(json!({"keys": [zero]})),
            BundleError::X509CertificateCount { index: 0, count: 0 }
        ));
        let mut missing = x509_key("ca-p256.pem", "p256");
        missing.as_object_mut().unwrap().remove("x5c");
        assert!(matches!(
            rejected(json!({"keys": [missing]})),
            BundleError::X509CertificateCount { index: 0, count: 0 }
        ));
    }

    #[test]
    fn jwt_key_without_kid() {
        let mut no_kid = jwt_key("p256", "x");
        no_kid.as_object_mut().unwrap().remove("kid");
        let err = rejected(json!({"keys": [jwt_key("p384", "a"), no_kid]}));
        assert!(matches!(err, BundleError::MissingKid { index: 1 }), "{err}");
        assert!(err.to_string().contains("has no kid"));
        let empty = jwt_key("p256", "");
        assert!(matches!(
            rejected(json!({"keys": [empty]})),
            BundleError::MissingKid { index: 0 }
        ));
    }

    #[test]
    fn other_rejections() {
        // Bad JSON and wrong shapes.
        for doc in [
            &b"{"[..],
            b"",
            b"[]",
            b"{\"keys\": {}}",
            b"{\"nokeys\": []}",
            b"{\"keys\": [], \"spiffe_sequence\": -1}",
            b"{\"keys\": [], \"spiffe_sequence\": \"1\"}",
            b"{\"keys\": [], \"keys\": []}",
        ] {
            let err = Bundle::from_json(td(), doc).unwrap_err();
            assert!(matches!(err, BundleError::Json(_)), "{err}");
            assert!(err.to_string().starts_with("bundle is not valid json"));
        }
        assert!(matches!(
            rejected(json!({"keys": [1]})),
            BundleError::KeyNotObject { index: 0 }
        ));
        assert!(matches!(
            rejected(json!({"keys": [], "spiffe_refresh_hint": -5})),
            BundleError::NegativeRefreshHint(-5)
        ));
        // Bad base64 in x5c.
        let mut bad = x509_key("ca-p256.pem", "p256");
        bad["x5c"] = json!(["***"]);
        assert!(matches!(
            rejected(json!({"keys": [bad]})),
            BundleError::X5cBase64 { index: 0, .. }
        ));
        // x5c that is base64 but not a certificate.
        let mut not_cert = x509_key("ca-p256.pem", "p256");
        not_cert["x5c"] = json!([B64STD.encode(b"hello")]);
        assert!(matches!(
            rejected(json!({"keys": [not_cert]})),
            BundleError::X5cCertificate { index: 0, .. }
        ));
        // Bad base64url in a key member.
        let mut bad_x = jwt_key("p256", "k");
        bad_x["x"] = json!("a+b/");
        let err = rejected(json!({"keys": [bad_x]}));
        assert!(
            matches!(
                err,
                BundleError::Key {
                    index: 0,
                    source: KeyError::Base64 { field: "x", .. },
                    ..
                }
            ),
            "{err}"
        );
        // Malformed EC key (missing y).
        let mut no_y = jwt_key("p256", "k");
        no_y.as_object_mut().unwrap().remove("y");
        assert!(matches!(
            rejected(json!({"keys": [no_y]})),
            BundleError::Key {
                source: KeyError::MissingMember("y"),
                ..
            }
        ));
        // Member of the wrong JSON type in a known-use key.
        let mut wrong_type = jwt_key("p256", "k");
        wrong_type["kid"] = json!(5);
        assert!(matches!(
            rejected(json!({"keys": [wrong_type]})),
            BundleError::KeyJson { index: 0, .. }
        ));
        // Missing kty.
        let mut no_kty = jwt_key("p256", "k");
        no_kty.as_object_mut().unwrap().remove("kty");
        assert!(matches!(
            rejected(json!({"keys": [no_kty]})),
            BundleError::MissingKty { index: 0, .. }
        ));
        // Key members that describe another key than the certificate's.
        let mismatch = {
            let mut k = jwt_key("rsa", "unused");
            k.as_object_mut().unwrap().remove("kid");
            k["use"] = json!("x509-svid");
            k["x5c"] = json!([B64STD.encode(cert("ca-p256.pem"))]);
            k
        };
        assert!(matches!(
            rejected(json!({"keys": [mismatch]})),
            BundleError::X509KeyMismatch { index: 0 }
        ));
        // Duplicate kid.
        let err = rejected(json!({"keys": [jwt_key("p256", "k"), jwt_key("p384", "k")]}));
        assert!(
            matches!(err, BundleError::DuplicateKid { index: 1, ref kid } if kid == "k"),
            "{err}"
        );
    }

    #[test]
    fn unencodable_authorities() {
        let mut b = Bundle::new(td());
        b.jwt_authorities.push(JwtAuthority {
            key_id: "k".into(),
            public_key: vec![1, 2, 3],
            expires_at: None,
        });
        assert!(matches!(
            b.to_json().unwrap_err(),
            BundleError::UnencodableJwtAuthority { .. }
        ));
        let mut b = Bundle::new(td());
        b.x509_authorities.push(vec![0x30, 0x00]);
        assert!(matches!(
            b.to_json().unwrap_err(),
            BundleError::UnencodableX509Authority { index: 0, .. }
        ));
    }

    #[test]
    fn pem_bundles() {
        let mut text = testdata("ca-p256.pem");
        text.extend_from_slice(&testdata("ca-rsa2048.pem"));
        let b = Bundle::from_pem(td(), &text).unwrap();
        assert_eq!(
            b.x509_authorities,
            [cert("ca-p256.pem"), cert("ca-rsa2048.pem")]
        );
        let out = b.to_pem();
        assert_eq!(out.matches("-----BEGIN CERTIFICATE-----").count(), 2);
        assert_eq!(Bundle::from_pem(td(), out.as_bytes()).unwrap(), b);
        assert!(matches!(
            Bundle::from_pem(td(), b"").unwrap_err(),
            PemBundleError::Empty
        ));
        assert!(matches!(
            Bundle::from_pem(td(), b"not pem at all").unwrap_err(),
            PemBundleError::Empty
        ));
        let key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let err = Bundle::from_pem(td(), key.as_bytes()).unwrap_err();
        assert!(
            matches!(err, PemBundleError::NotCertificate { index: 0, ref label } if label == "PRIVATE KEY"),
            "{err}"
        );
        let corrupt = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            Bundle::from_pem(td(), corrupt.as_bytes()).unwrap_err(),
            PemBundleError::BadCertificate { index: 0, .. }
        ));
        let broken = "-----BEGIN CERTIFICATE-----\n*!*\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            Bundle::from_pem(td(), broken.as_bytes()).unwrap_err(),
            PemBundleError::Pem(_)
        ));
    }

    #[test]
    fn debug_is_compact() {
        let b = parse(&valid_doc()).unwrap();
        let d = format!("{b:?}");
        assert!(d.contains("x509_authorities: 2"), "{d}");
        assert!(d.contains("kid-ec"), "{d}");
    }
}
