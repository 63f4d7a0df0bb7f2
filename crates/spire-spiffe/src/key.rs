//! Public keys as they appear in SPIFFE bundles: conversion between SubjectPublicKeyInfo DER
//! and the JWK members (`kty`, `crv`, `x`, `y`, `n`, `e`).
//!
//! Only structure is checked here (lengths, encodings); whether an EC point lies on its curve is
//! left to the cryptographic library that uses the key.

use base64::Engine as _;

use crate::der::{self, DerError, Reader};

/// id-ecPublicKey, 1.2.840.10045.2.1
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// rsaEncryption, 1.2.840.113549.1.1.1
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// id-Ed25519, 1.3.101.112
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
/// prime256v1, 1.2.840.10045.3.1.7
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// secp384r1, 1.3.132.0.34
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
/// secp521r1, 1.3.132.0.35
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];

/// base64url without padding (RFC 7515); padding is tolerated on input.
pub(crate) const B64URL: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Standard base64 with padding (used by `x5c`); missing padding is tolerated on input.
pub(crate) const B64STD: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Why a public key could not be read or converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The SubjectPublicKeyInfo or certificate is not well-formed DER.
    #[error("public key is not valid der: {0}")]
    Der(#[from] DerError),
    /// The SPKI algorithm is not EC, RSA or Ed25519.
    #[error("public key algorithm {0} is not supported (expected EC, RSA or Ed25519)")]
    UnsupportedAlgorithm(String),
    /// The EC curve is not P-256, P-384 or P-521.
    #[error("elliptic curve {0} is not supported (expected P-256, P-384 or P-521)")]
    UnsupportedCurve(String),
    /// The JWK `kty` is not EC, RSA or OKP.
    #[error("jwk kty {0:?} is not supported (expected \"EC\", \"RSA\" or \"OKP\")")]
    UnsupportedKty(String),
    /// An EC point that is not in uncompressed form `04 || X || Y`.
    #[error("ec point is not an uncompressed point of the curve's size")]
    BadEcPoint,
    /// An EC coordinate of the wrong size.
    #[error("ec coordinate {field} is {len} bytes (expected {expected} bytes for {curve})")]
    BadCoordinateLength {
        /// `x` or `y`.
        field: &'static str,
        /// The decoded length.
        len: usize,
        /// The curve's coordinate size.
        expected: usize,
        /// The curve name.
        curve: &'static str,
    },
    /// An Ed25519 key that is not 32 bytes.
    #[error("ed25519 public key is {0} bytes (expected 32)")]
    BadEd25519Length(usize),
    /// An RSA modulus or exponent that is zero or empty.
    #[error("rsa {0} is zero (expected a positive integer)")]
    ZeroRsaInteger(&'static str),
    /// A required JWK member is absent.
    #[error("jwk is missing the {0:?} member")]
    MissingMember(&'static str),
    /// A JWK member is not valid base64url.
    #[error("jwk member {field:?} is not valid base64url: {source}")]
    Base64 {
        /// The member name.
        field: &'static str,
        /// The decoder's error.
        #[source]
        source: base64::DecodeError,
    },
}

/// A NIST curve usable in JWT-SVIDs and SVIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcCurve {
    /// P-256 (secp256r1).
    P256,
    /// P-384 (secp384r1).
    P384,
    /// P-521 (secp521r1).
    P521,
}

impl EcCurve {
    /// The JWK `crv` name.
    pub fn jwk_name(self) -> &'static str {
        match self {
            EcCurve::P256 => "P-256",
            EcCurve::P384 => "P-384",
            EcCurve::P521 => "P-521",
        }
    }

    /// Size of one coordinate in bytes.
    pub fn coordinate_len(self) -> usize {
        match self {
            EcCurve::P256 => 32,
            EcCurve::P384 => 48,
            EcCurve::P521 => 66,
        }
    }

    fn oid(self) -> &'static [u8] {
        match self {
            EcCurve::P256 => OID_P256,
            EcCurve::P384 => OID_P384,
            EcCurve::P521 => OID_P521,
        }
    }

    fn from_oid(oid: &[u8]) -> Option<Self> {
        [EcCurve::P256, EcCurve::P384, EcCurve::P521]
            .into_iter()
            .find(|c| c.oid() == oid)
    }

    /// Looks up a JWK `crv` name.
    pub fn from_jwk_name(name: &str) -> Option<Self> {
        [EcCurve::P256, EcCurve::P384, EcCurve::P521]
            .into_iter()
            .find(|c| c.jwk_name() == name)
    }
}

/// A public key in a form that converts both to SPKI DER and to JWK members.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PublicKey {
    /// An EC key: uncompressed affine coordinates, each exactly the curve's coordinate size.
    Ec {
        /// The curve.
        curve: EcCurve,
        /// X coordinate, big-endian, fixed size.
        x: Vec<u8>,
        /// Y coordinate, big-endian, fixed size.
        y: Vec<u8>,
    },
    /// An RSA key: modulus and public exponent as big-endian magnitudes without leading zeros.
    Rsa {
        /// The modulus.
        n: Vec<u8>,
        /// The public exponent.
        e: Vec<u8>,
    },
    /// An Ed25519 key (JWK kty `OKP`, crv `Ed25519`).
    Ed25519 {
        /// The 32-byte public key.
        x: Vec<u8>,
    },
}

/// The JWK members that describe a public key, as base64url strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwkKeyMembers {
    /// `kty`
    pub kty: String,
    /// `crv` (EC, OKP)
    pub crv: Option<String>,
    /// `x` (EC, OKP)
    pub x: Option<String>,
    /// `y` (EC)
    pub y: Option<String>,
    /// `n` (RSA)
    pub n: Option<String>,
    /// `e` (RSA)
    pub e: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_member(field: &'static str, value: Option<&str>) -> Result<Vec<u8>, KeyError> {
    let value = value.ok_or(KeyError::MissingMember(field))?;
    B64URL
        .decode(value)
        .map_err(|source| KeyError::Base64 { field, source })
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[start..]
}

impl PublicKey {
    /// Reads a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(spki: &[u8]) -> Result<Self, KeyError> {
        let mut outer = Reader::new(spki);
        let mut info = outer.read_sequence()?;
        outer.finish()?;
        let mut alg = info.read_sequence()?;
        let oid = alg.read(der::TAG_OID)?.content;
        let key = if oid == OID_EC_PUBLIC_KEY {
            let curve_oid = alg.read(der::TAG_OID)?.content;
            alg.finish()?;
            let curve = EcCurve::from_oid(curve_oid)
                .ok_or_else(|| KeyError::UnsupportedCurve(format!("oid {}", hex(curve_oid))))?;
            let point = info.read_bit_string_bytes()?;
            let n = curve.coordinate_len();
            match point.split_first() {
                Some((4, xy)) if xy.len() == 2 * n => {
                    let (x, y) = xy.split_at(n);
                    PublicKey::Ec {
                        curve,
                        x: x.to_vec(),
                        y: y.to_vec(),
                    }
                }
                _ => return Err(KeyError::BadEcPoint),
            }
        } else if oid == OID_RSA_ENCRYPTION {
            // Parameters must be NULL; tolerate their absence.
            if !alg.is_empty() {
                let null = alg.read(der::TAG_NULL)?;
                if !null.content.is_empty() {
                    return Err(DerError::BadNull.into());
                }
            }
            alg.finish()?;
            let bits = info.read_bit_string_bytes()?;
            let mut outer_key = Reader::new(bits);
            let mut rsa = outer_key.read_sequence()?;
            outer_key.finish()?;
            let n = rsa.read_positive_integer()?;
            let e = rsa.read_positive_integer()?;
            rsa.finish()?;
            PublicKey::Rsa {
                n: n.to_vec(),
                e: e.to_vec(),
            }
        } else if oid == OID_ED25519 {
            alg.finish()?;
            let x = info.read_bit_string_bytes()?;
            if x.len() != 32 {
                return Err(KeyError::BadEd25519Length(x.len()));
            }
            PublicKey::Ed25519 { x: x.to_vec() }
        } else {
            return Err(KeyError::UnsupportedAlgorithm(format!("oid {}", hex(oid))));
        };
        info.finish()?;
        Ok(key)
    }

    /// Encodes as a DER SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Vec<u8> {
        match self {
            PublicKey::Ec { curve, x, y } => {
                let alg = der::sequence(&[
                    &der::tlv(der::TAG_OID, OID_EC_PUBLIC_KEY),
                    &der::tlv(der::TAG_OID, curve.oid()),
                ]);
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(4);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                der::sequence(&[&alg, &der::bit_string(&point)])
            }
            PublicKey::Rsa { n, e } => {
                let alg = der::sequence(&[
                    &der::tlv(der::TAG_OID, OID_RSA_ENCRYPTION),
                    &der::tlv(der::TAG_NULL, &[]),
                ]);
                let key = der::sequence(&[&der::unsigned_integer(n), &der::unsigned_integer(e)]);
                der::sequence(&[&alg, &der::bit_string(&key)])
            }
            PublicKey::Ed25519 { x } => {
                let alg = der::sequence(&[&der::tlv(der::TAG_OID, OID_ED25519)]);
                der::sequence(&[&alg, &der::bit_string(x)])
            }
        }
    }

    /// Builds a key from JWK members.
    pub fn from_jwk(m: &JwkKeyMembers) -> Result<Self, KeyError> {
        match m.kty.as_str() {
            "EC" => {
                let crv = m.crv.as_deref().ok_or(KeyError::MissingMember("crv"))?;
                let curve = EcCurve::from_jwk_name(crv)
                    .ok_or_else(|| KeyError::UnsupportedCurve(format!("{crv:?}")))?;
                let x = decode_member("x", m.x.as_deref())?;
                let y = decode_member("y", m.y.as_deref())?;
                let expected = curve.coordinate_len();
                for (field, v) in [("x", &x), ("y", &y)] {
                    if v.len() != expected {
                        return Err(KeyError::BadCoordinateLength {
                            field,
                            len: v.len(),
                            expected,
                            curve: curve.jwk_name(),
                        });
                    }
                }
                Ok(PublicKey::Ec { curve, x, y })
            }
            "RSA" => {
                let n = decode_member("n", m.n.as_deref())?;
                let e = decode_member("e", m.e.as_deref())?;
                let n = strip_leading_zeros(&n);
                let e = strip_leading_zeros(&e);
                if n.is_empty() {
                    return Err(KeyError::ZeroRsaInteger("n"));
                }
                if e.is_empty() {
                    return Err(KeyError::ZeroRsaInteger("e"));
                }
                Ok(PublicKey::Rsa {
                    n: n.to_vec(),
                    e: e.to_vec(),
                })
            }
            "OKP" => {
                let crv = m.crv.as_deref().ok_or(KeyError::MissingMember("crv"))?;
                if crv != "Ed25519" {
                    return Err(KeyError::UnsupportedCurve(format!("{crv:?}")));
                }
                let x = decode_member("x", m.x.as_deref())?;
                if x.len() != 32 {
                    return Err(KeyError::BadEd25519Length(x.len()));
                }
                Ok(PublicKey::Ed25519 { x })
            }
            other => Err(KeyError::UnsupportedKty(other.to_owned())),
        }
    }

    /// The JWK members for this key.
    pub fn to_jwk(&self) -> JwkKeyMembers {
        match self {
            PublicKey::Ec { curve, x, y } => JwkKeyMembers {
                kty: "EC".into(),
                crv: Some(curve.jwk_name().into()),
                x: Some(B64URL.encode(x)),
                y: Some(B64URL.encode(y)),
                ..Default::default()
            },
            PublicKey::Rsa { n, e } => JwkKeyMembers {
                kty: "RSA".into(),
                n: Some(B64URL.encode(strip_leading_zeros(n))),
                e: Some(B64URL.encode(strip_leading_zeros(e))),
                ..Default::default()
            },
            PublicKey::Ed25519 { x } => JwkKeyMembers {
                kty: "OKP".into(),
                crv: Some("Ed25519".into()),
                x: Some(B64URL.encode(x)),
                ..Default::default()
            },
        }
    }
}

/// Converts SubjectPublicKeyInfo DER to JWK members.
pub fn spki_to_jwk(spki: &[u8]) -> Result<JwkKeyMembers, KeyError> {
    PublicKey::from_spki_der(spki).map(|k| k.to_jwk())
}

/// Converts JWK members to SubjectPublicKeyInfo DER.
pub fn jwk_to_spki(members: &JwkKeyMembers) -> Result<Vec<u8>, KeyError> {
    PublicKey::from_jwk(members).map(|k| k.to_spki_der())
}

/// Returns the SubjectPublicKeyInfo (whole DER element) of an X.509 certificate. Checks only
/// the certificate's outer structure, not its signature or contents.
pub fn certificate_spki(cert_der: &[u8]) -> Result<&[u8], KeyError> {
    let mut outer = Reader::new(cert_der);
    let mut cert = outer.read_sequence()?;
    outer.finish()?;
    let mut tbs = cert.read_sequence()?;
    let _signature_algorithm = cert.read_sequence()?;
    let _signature = cert.read(der::TAG_BIT_STRING)?;
    cert.finish()?;
    if tbs.peek_tag() == Some(der::TAG_CONTEXT_0) {
        tbs.read_any()?; // version
    }
    tbs.read(der::TAG_INTEGER)?; // serialNumber
    tbs.read_sequence()?; // signature
    tbs.read_sequence()?; // issuer
    tbs.read_sequence()?; // validity
    tbs.read_sequence()?; // subject
    Ok(tbs.read(der::TAG_SEQUENCE)?.raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 6] = ["p256", "p384", "p521", "rsa", "rsa4096", "ed"];

    fn spki(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/spki-{name}.der", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap()
    }

    fn expected(name: &str) -> JwkKeyMembers {
        let all: serde_json::Value =
            serde_json::from_str(include_str!("../testdata/expected-jwks.json")).unwrap();
        let j = &all[name];
        let s = |k: &str| j.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        JwkKeyMembers {
            kty: s("kty").unwrap(),
            crv: s("crv"),
            x: s("x"),
            y: s("y"),
            n: s("n"),
            e: s("e"),
        }
    }

    /// SPKI from openssl -> JWK matches an independent conversion (python cryptography),
    /// and JWK -> SPKI gives back openssl's exact bytes.
    #[test]
    fn spki_jwk_conversions_match_reference() {
        for name in NAMES {
            let der = spki(name);
            let jwk = spki_to_jwk(&der).unwrap();
            assert_eq!(jwk, expected(name), "{name}");
            assert_eq!(jwk_to_spki(&jwk).unwrap(), der, "{name}");
        }
    }

    #[test]
    fn rsa_integers_with_high_bit_and_leading_zeros() {
        // A modulus with the high bit set needs a 0x00 in DER but none in the JWK.
        let k = PublicKey::Rsa {
            n: vec![0x80, 0, 1],
            e: vec![1, 0, 1],
        };
        let der = k.to_spki_der();
        assert_eq!(PublicKey::from_spki_der(&der).unwrap(), k);
        let jwk = k.to_jwk();
        assert_eq!(jwk.n.as_deref(), Some("gAAB"));
        assert_eq!(jwk.e.as_deref(), Some("AQAB"));
        // Leading zeros in a JWK value are tolerated and removed.
        let padded = JwkKeyMembers {
            n: Some(B64URL.encode([0, 0, 0x80, 0, 1])),
            ..jwk.clone()
        };
        assert_eq!(PublicKey::from_jwk(&padded).unwrap(), k);
        let zero = JwkKeyMembers {
            n: Some("AA".into()),
            ..jwk.clone()
        };
        assert_eq!(
            PublicKey::from_jwk(&zero).unwrap_err(),
            KeyError::ZeroRsaInteger("n")
        );
        let zero_e = JwkKeyMembers {
            e: Some(String::new()),
            ..jwk
        };
        assert_eq!(
            PublicKey::from_jwk(&zero_e).unwrap_err(),
            KeyError::ZeroRsaInteger("e")
        );
    }

    #[test]
    fn jwk_rejections() {
        let p256 = expected("p256");
        let cases: Vec<(JwkKeyMembers, KeyError)> = vec![
            (
                JwkKeyMembers {
                    x: None,
                    ..p256.clone()
                },
                KeyError::MissingMember("x"),
            ),
            (
                JwkKeyMembers {
                    crv: None,
                    ..p256.clone()
                },
                KeyError::MissingMember("crv"),
            ),
            (
                JwkKeyMembers {
                    crv: Some("P-192".into()),
                    ..p256.clone()
                },
                KeyError::UnsupportedCurve("\"P-192\"".into()),
            ),
            (
                JwkKeyMembers {
                    crv: Some("P-384".into()),
                    ..p256.clone()
                },
                KeyError::BadCoordinateLength {
                    field: "x",
                    len: 32,
                    expected: 48,
                    curve: "P-384",
                },
            ),
            (
                JwkKeyMembers {
                    kty: "oct".into(),
                    ..p256.clone()
                },
                KeyError::UnsupportedKty("oct".into()),
            ),
            (
                JwkKeyMembers {
                    kty: "OKP".into(),
                    crv: Some("X25519".into()),
                    ..p256.clone()
                },
                KeyError::UnsupportedCurve("\"X25519\"".into()),
            ),
            (
                JwkKeyMembers {
                    kty: "OKP".into(),
                    crv: Some("Ed25519".into()),
                    x: Some("AAAA".into()),
                    ..Default::default()
                },
                KeyError::BadEd25519Length(3),
            ),
        ];
        for (jwk, want) in cases {
            assert_eq!(PublicKey::from_jwk(&jwk).unwrap_err(), want);
        }
        let bad_b64 = JwkKeyMembers {
            y: Some("not base64!".into()),
            ..p256
        };
        let err = PublicKey::from_jwk(&bad_b64).unwrap_err();
        assert!(matches!(err, KeyError::Base64 { field: "y", .. }), "{err}");
        assert!(err.to_string().contains("not valid base64url"));
    }

    #[test]
    fn spki_rejections() {
        let der = spki("p256");
        // Truncated.
        assert!(matches!(
            PublicKey::from_spki_der(&der[..der.len() - 1]).unwrap_err(),
            KeyError::Der(_)
        ));
        // Trailing data.
        let mut extra = der.clone();
        extra.push(0);
        assert_eq!(
            PublicKey::from_spki_der(&extra).unwrap_err(),
            KeyError::Der(DerError::TrailingData)
        );
        // Compressed point.
        let compressed = {
            let alg = der::sequence(&[
                &der::tlv(der::TAG_OID, OID_EC_PUBLIC_KEY),
                &der::tlv(der::TAG_OID, OID_P256),
            ]);
            let mut point = vec![2u8];
            point.extend_from_slice(&[1; 32]);
            der::sequence(&[&alg, &der::bit_string(&point)])
        };
        assert_eq!(
            PublicKey::from_spki_der(&compressed).unwrap_err(),
            KeyError::BadEcPoint
        );
        // Unknown algorithm (DSA 1.2.840.10040.4.1).
        let dsa = der::sequence(&[
            &der::sequence(&[&der::tlv(
                der::TAG_OID,
                &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01],
            )]),
            &der::bit_string(&[1, 2, 3]),
        ]);
        assert_eq!(
            PublicKey::from_spki_der(&dsa).unwrap_err(),
            KeyError::UnsupportedAlgorithm("oid 2a8648ce380401".into())
        );
        // Unknown curve (secp256k1 1.3.132.0.10).
        let k1 = der::sequence(&[
            &der::sequence(&[
                &der::tlv(der::TAG_OID, OID_EC_PUBLIC_KEY),
                &der::tlv(der::TAG_OID, &[0x2b, 0x81, 0x04, 0x00, 0x0a]),
            ]),
            &der::bit_string(&[4; 65]),
        ]);
        assert!(matches!(
            PublicKey::from_spki_der(&k1).unwrap_err(),
            KeyError::UnsupportedCurve(_)
        ));
        // RSA without NULL parameters is accepted.
        let rsa = PublicKey::Rsa {
            n: vec![0xc5; 8],
            e: vec![3],
        };
        let no_null = der::sequence(&[
            &der::sequence(&[&der::tlv(der::TAG_OID, OID_RSA_ENCRYPTION)]),
            &der::bit_string(&der::sequence(&[
                &der::unsigned_integer(&[0xc5; 8]),
                &der::unsigned_integer(&[3]),
            ])),
        ]);
        assert_eq!(PublicKey::from_spki_der(&no_null).unwrap(), rsa);
    }

    #[test]
    fn certificate_spki_matches_openssl_pubkey() {
        for (cert, key) in [
            ("ca-p256.pem", "p256"),
            ("ca-p384.pem", "p384"),
            ("ca-rsa2048.pem", "rsa"),
            ("ca-ed25519.pem", "ed"),
        ] {
            let path = format!("{}/testdata/{cert}", env!("CARGO_MANIFEST_DIR"));
            let pem = pem::parse(std::fs::read(path).unwrap()).unwrap();
            assert_eq!(
                certificate_spki(pem.contents()).unwrap(),
                spki(key),
                "{cert}"
            );
        }
        assert!(certificate_spki(&spki("p256")).is_err());
        assert!(certificate_spki(&[]).is_err());
    }
}
