//! `x509pop` (agent side): proof of possession of a node key whose certificate chains to a CA
//! the server trusts. Wire-compatible with SPIRE's x509pop:
//!
//! * payload: JSON `{"certificates": [<base64 DER>, ...]}`, leaf first, then intermediates;
//! * challenge: JSON `{"ecdsa_signature": {"nonce": <base64 32 bytes>}}` (or `rsa_signature`);
//! * response: the agent draws its own 32-byte nonce, computes
//!   `SHA-256(challenge nonce || own nonce)` and signs that digest directly with the node key:
//!   ECDSA → `{"ecdsa_signature": {"nonce", "r", "s"}}` (big-endian integers), RSA → RSA-PSS
//!   with SHA-256 → `{"rsa_signature": {"nonce", "signature"}}`.
//!
//! Configuration: `private_key_path`, `certificate_path`, `intermediates_path` (PEM files).

use std::fmt;
use std::path::PathBuf;

use aws_lc_rs::digest::{self, Digest};
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use spire_config::PluginConfig;
use spire_crypto::{KeyType, PrivateKey};

use super::{NodeAttestor, NodeAttestorError};

/// Length of both nonces.
pub const NONCE_LEN: usize = 32;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    private_key_path: Option<PathBuf>,
    certificate_path: Option<PathBuf>,
    intermediates_path: Option<PathBuf>,
}

enum NodeKey {
    Ecdsa {
        key: EcdsaKeyPair,
        /// Digest algorithm matching the curve (the SHA-256 value is left-padded to its size).
        digest: &'static digest::Algorithm,
    },
    Rsa(RsaKeyPair),
}

/// The agent side of `x509pop`.
pub struct X509PopAttestor {
    chain: Vec<Vec<u8>>,
    key: NodeKey,
}

impl fmt::Debug for X509PopAttestor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509PopAttestor")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

fn cfg_err(reason: impl Into<String>) -> NodeAttestorError {
    NodeAttestorError::Config {
        name: "x509pop".into(),
        reason: reason.into(),
    }
}

fn challenge_err(reason: impl Into<String>) -> NodeAttestorError {
    NodeAttestorError::Challenge {
        name: "x509pop".into(),
        reason: reason.into(),
    }
}

mod b64 {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s {
            None => Ok(Vec::new()),
            Some(s) => STANDARD
                .decode(s.as_bytes())
                .map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct AttestationData {
    certificates: Vec<B64>,
}

#[derive(Serialize, Deserialize)]
struct B64(#[serde(with = "b64")] Vec<u8>);

#[derive(Serialize, Deserialize, Default)]
struct NonceChallenge {
    #[serde(with = "b64", default)]
    nonce: Vec<u8>,
}

#[derive(Serialize, Deserialize, Default)]
struct Challenge {
    #[serde(default)]
    rsa_signature: Option<NonceChallenge>,
    #[serde(default)]
    ecdsa_signature: Option<NonceChallenge>,
}

#[derive(Serialize, Deserialize)]
struct RsaResponse {
    #[serde(with = "b64")]
    nonce: Vec<u8>,
    #[serde(with = "b64")]
    signature: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct EcdsaResponse {
    #[serde(with = "b64")]
    nonce: Vec<u8>,
    #[serde(with = "b64")]
    r: Vec<u8>,
    #[serde(with = "b64")]
    s: Vec<u8>,
}

#[derive(Serialize, Deserialize, Default)]
struct Response {
    rsa_signature: Option<RsaResponse>,
    ecdsa_signature: Option<EcdsaResponse>,
}

impl X509PopAttestor {
    /// Reads the key and certificates named by the plugin block.
    pub fn from_plugin(plugin: &PluginConfig) -> Result<Self, NodeAttestorError> {
        let cfg: Config = plugin.plugin_data().map_err(|e| cfg_err(e.to_string()))?;
        let key_path = cfg
            .private_key_path
            .ok_or_else(|| cfg_err("private_key_path is required"))?;
        let cert_path = cfg
            .certificate_path
            .ok_or_else(|| cfg_err("certificate_path is required"))?;
        let read = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| cfg_err(format!("cannot read {}: {e}", p.display())))
        };
        let key_pem = zeroize::Zeroizing::new(read(&key_path)?);
        let key_text = std::str::from_utf8(&key_pem)
            .map_err(|_| cfg_err(format!("{} is not PEM text", key_path.display())))?;
        let key = PrivateKey::from_pem(key_text)
            .map_err(|e| cfg_err(format!("private key {}: {e}", key_path.display())))?;
        let mut chain = spire_spiffe::parse_pem_certificates(&read(&cert_path)?)
            .map_err(|e| cfg_err(format!("certificate {}: {e}", cert_path.display())))?;
        if let Some(p) = &cfg.intermediates_path {
            let more = spire_spiffe::parse_pem_certificates(&read(p)?)
                .map_err(|e| cfg_err(format!("intermediates {}: {e}", p.display())))?;
            chain.extend(more);
        }
        Self::new(chain, &key)
    }

    /// An attestor for `chain` (leaf first, DER) and the leaf's private key.
    pub fn new(chain: Vec<Vec<u8>>, key: &PrivateKey) -> Result<Self, NodeAttestorError> {
        let leaf = chain
            .first()
            .ok_or_else(|| cfg_err("certificate file holds no certificate"))?;
        let spki = spire_spiffe::certificate_spki(leaf)
            .map_err(|e| cfg_err(format!("leaf certificate: {e}")))?;
        if spki != key.public_key().spki_der() {
            return Err(cfg_err(
                "private key does not match the leaf certificate's public key",
            ));
        }
        let pkcs8 = key.to_pkcs8_der().map_err(|e| cfg_err(e.to_string()))?;
        let key = match key.key_type() {
            KeyType::EcP256 => NodeKey::Ecdsa {
                key: EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
                    .map_err(|e| cfg_err(e.to_string()))?,
                digest: &digest::SHA256,
            },
            KeyType::EcP384 => NodeKey::Ecdsa {
                key: EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P384_SHA384_FIXED_SIGNING, &pkcs8)
                    .map_err(|e| cfg_err(e.to_string()))?,
                digest: &digest::SHA384,
            },
            KeyType::Rsa2048 | KeyType::Rsa4096 => {
                NodeKey::Rsa(RsaKeyPair::from_pkcs8(&pkcs8).map_err(|e| cfg_err(e.to_string()))?)
            }
        };
        Ok(X509PopAttestor { chain, key })
    }
}

/// `SHA-256(challenge || response)`; both nonces must be 32 bytes.
fn combine_nonces(challenge: &[u8], response: &[u8]) -> Result<[u8; 32], NodeAttestorError> {
    if challenge.len() != NONCE_LEN {
        return Err(challenge_err(format!(
            "challenge nonce is {} bytes, expected {NONCE_LEN}",
            challenge.len()
        )));
    }
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(challenge);
    ctx.update(response);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

/// A digest value of `alg`'s size holding `hash` right-aligned (same integer for ECDSA).
fn padded_digest(
    hash: &[u8; 32],
    alg: &'static digest::Algorithm,
) -> Result<Digest, NodeAttestorError> {
    let mut buf = vec![0u8; alg.output_len()];
    let start = buf.len().saturating_sub(hash.len());
    buf[start..].copy_from_slice(hash);
    Digest::import_less_safe(&buf, alg).map_err(|_| challenge_err("cannot prepare digest"))
}

fn trim_leading_zeros(b: &[u8]) -> Vec<u8> {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b[first..].to_vec()
}

impl NodeAttestor for X509PopAttestor {
    fn attestation_type(&self) -> &str {
        "x509pop"
    }

    fn payload(&self) -> Result<Vec<u8>, NodeAttestorError> {
        let data = AttestationData {
            certificates: self.chain.iter().map(|c| B64(c.clone())).collect(),
        };
        serde_json::to_vec(&data).map_err(|e| cfg_err(e.to_string()))
    }

    fn respond(&self, challenge: &[u8]) -> Result<Vec<u8>, NodeAttestorError> {
        let challenge: Challenge = serde_json::from_slice(challenge)
            .map_err(|e| challenge_err(format!("not x509pop challenge JSON: {e}")))?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| challenge_err("no randomness"))?;
        let response = match &self.key {
            NodeKey::Ecdsa { key, digest } => {
                let c = challenge
                    .ecdsa_signature
                    .ok_or_else(|| challenge_err("expecting ECDSA challenge"))?;
                let combined = combine_nonces(&c.nonce, &nonce)?;
                let d = padded_digest(&combined, digest)?;
                let signature = key
                    .sign_digest(&d)
                    .map_err(|_| challenge_err("ECDSA signing failed"))?;
                let rs = signature.as_ref();
                let half = rs.len() / 2;
                Response {
                    ecdsa_signature: Some(EcdsaResponse {
                        nonce: nonce.to_vec(),
                        r: trim_leading_zeros(&rs[..half]),
                        s: trim_leading_zeros(&rs[half..]),
                    }),
                    ..Response::default()
                }
            }
            NodeKey::Rsa(key) => {
                let c = challenge
                    .rsa_signature
                    .ok_or_else(|| challenge_err("expecting RSA challenge"))?;
                let combined = combine_nonces(&c.nonce, &nonce)?;
                let d = padded_digest(&combined, &digest::SHA256)?;
                let mut signature = vec![0u8; key.public_modulus_len()];
                key.sign_digest(&sig::RSA_PSS_SHA256, &d, &mut signature)
                    .map_err(|_| challenge_err("RSA signing failed"))?;
                Response {
                    rsa_signature: Some(RsaResponse {
                        nonce: nonce.to_vec(),
                        signature,
                    }),
                    ..Response::default()
                }
            }
        };
        serde_json::to_vec(&response).map_err(|e| challenge_err(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::UnparsedPublicKey;

    fn challenge_json(kind: &str, nonce: &[u8]) -> Vec<u8> {
        format!(r#"{{"{kind}":{{"nonce":"{}"}}}}"#, STANDARD.encode(nonce)).into_bytes()
    }

    fn attestor(key_type: KeyType) -> (X509PopAttestor, PrivateKey) {
        let key = PrivateKey::generate(key_type).unwrap();
        let pkcs8 = key.to_pkcs8_der().unwrap();
        let node_key = match key_type {
            KeyType::EcP256 => NodeKey::Ecdsa {
                key: EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
                    .unwrap(),
                digest: &digest::SHA256,
            },
            KeyType::EcP384 => NodeKey::Ecdsa {
                key: EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P384_SHA384_FIXED_SIGNING, &pkcs8)
                    .unwrap(),
                digest: &digest::SHA384,
            },
            _ => NodeKey::Rsa(RsaKeyPair::from_pkcs8(&pkcs8).unwrap()),
        };
        (
            X509PopAttestor {
                chain: vec![vec![1, 2, 3]],
                key: node_key,
            },
            key,
        )
    }

    fn pad32(b: &[u8], len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len - b.len()];
        v.extend_from_slice(b);
        v
    }

    #[test]
    fn ecdsa_response_verifies_against_combined_nonces() {
        for (kt, valg, dalg, width) in [
            (
                KeyType::EcP256,
                &sig::ECDSA_P256_SHA256_FIXED,
                &digest::SHA256,
                32,
            ),
            (
                KeyType::EcP384,
                &sig::ECDSA_P384_SHA384_FIXED,
                &digest::SHA384,
                48,
            ),
        ] {
            let (a, key) = attestor(kt);
            let nonce = [7u8; 32];
            let out = a
                .respond(&challenge_json("ecdsa_signature", &nonce))
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            let e = &v["ecdsa_signature"];
            let dec = |k: &str| STANDARD.decode(e[k].as_str().unwrap()).unwrap();
            let mine = dec("nonce");
            assert_eq!(mine.len(), 32);
            let combined = combine_nonces(&nonce, &mine).unwrap();
            let mut rs = pad32(&dec("r"), width);
            rs.extend(pad32(&dec("s"), width));
            let d = padded_digest(&combined, dalg).unwrap();
            UnparsedPublicKey::new(valg, key.public_key().key_bits())
                .verify_digest(&d, &rs)
                .unwrap();
            // A different challenge nonce does not verify.
            let other = combine_nonces(&[8u8; 32], &mine).unwrap();
            let d = padded_digest(&other, dalg).unwrap();
            assert!(
                UnparsedPublicKey::new(valg, key.public_key().key_bits())
                    .verify_digest(&d, &rs)
                    .is_err()
            );
        }
    }

    #[test]
    fn rsa_response_is_pss_over_combined_nonces() {
        let (a, key) = attestor(KeyType::Rsa2048);
        let nonce = [3u8; 32];
        let out = a.respond(&challenge_json("rsa_signature", &nonce)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let e = &v["rsa_signature"];
        let mine = STANDARD.decode(e["nonce"].as_str().unwrap()).unwrap();
        let signature = STANDARD.decode(e["signature"].as_str().unwrap()).unwrap();
        let combined = combine_nonces(&nonce, &mine).unwrap();
        let d = padded_digest(&combined, &digest::SHA256).unwrap();
        UnparsedPublicKey::new(&sig::RSA_PSS_2048_8192_SHA256, key.public_key().key_bits())
            .verify_digest(&d, &signature)
            .unwrap();
    }

    #[test]
    fn wrong_challenge_kind_or_nonce_is_rejected() {
        let (a, _) = attestor(KeyType::EcP256);
        assert!(
            a.respond(&challenge_json("rsa_signature", &[1; 32]))
                .is_err()
        );
        assert!(
            a.respond(&challenge_json("ecdsa_signature", &[1; 5]))
                .is_err()
        );
        assert!(a.respond(b"not json").is_err());
    }

    #[test]
    fn payload_lists_the_chain_in_base64() {
        let (a, _) = attestor(KeyType::EcP256);
        let v: serde_json::Value = serde_json::from_slice(&a.payload().unwrap()).unwrap();
        assert_eq!(v["certificates"][0], STANDARD.encode([1u8, 2, 3]));
    }

    #[test]
    fn key_must_match_leaf() {
        let ca = spire_testkit::TestCa::new("node ca");
        let leaf = ca.issue_leaf("node-1");
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = leaf.write(dir.path(), "node").unwrap();
        let key = PrivateKey::from_pem(&std::fs::read_to_string(&key_path).unwrap()).unwrap();
        let chain =
            spire_spiffe::parse_pem_certificates(&std::fs::read(&cert_path).unwrap()).unwrap();
        let a = X509PopAttestor::new(chain.clone(), &key).unwrap();
        assert_eq!(a.attestation_type(), "x509pop");
        let other = PrivateKey::generate(KeyType::EcP256).unwrap();
        let err = X509PopAttestor::new(chain, &other).unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
