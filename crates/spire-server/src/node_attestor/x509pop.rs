//! `x509pop`: proof that the node holds the private key of an X.509 certificate issued by a
//! trusted CA.
//!
//! The agent sends `{"certificates": [leaf, intermediates...]}` (DER, base64 in JSON). The
//! server checks the chain against `ca_bundle_path(s)` (or, in `mode = "spiffe"`, against its
//! own bundle with a leaf SPIFFE ID under `spiffe_prefix`), then sends a challenge
//! `{"rsa_signature": {"nonce"}}` or `{"ecdsa_signature": {"nonce"}}` (32 random bytes). The
//! agent answers with its own 32-byte nonce and a signature over
//! `SHA-256(challenge nonce || response nonce)`: RSA-PSS with SHA-256, or ECDSA with `r` and `s`
//! as big-endian integers. The JSON shapes match SPIRE's `pkg/common/plugin/x509pop`, so SPIRE
//! agents can attest here and spire-rs agents to SPIRE servers.
//!
//! Agent ID: `spiffe://<td>/spire/agent` + `agent_path_template` (default
//! `/{{ .PluginName }}/{{ .Fingerprint }}`, the leaf's SHA-1 fingerprint in hex). Selectors
//! (type `x509pop`): `subject:cn:<cn>`, `ca:fingerprint:<sha1>` for every CA in the verified
//! chain, `serialnumber:<hex>`, `san:<key>:<value>` from `x509pop://<td>/<key>/<value>` URI
//! SANs. The agent may re-attest.

use std::collections::BTreeMap;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SecureRandom as _;
use aws_lc_rs::signature::{self, RsaPssSaltLength, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::{Deserialize, Serialize};
use spire_spiffe::{Selector, Selectors, TrustDomain};
use tonic::Status;
use x509_parser::prelude::FromDer as _;

use super::AttestResult;

/// The attestation type.
pub const NAME: &str = "x509pop";

const NONCE_LEN: usize = 32;

static PSS_SALT_DIGEST: signature::RsaParameters =
    signature::RSA_PSS_2048_8192_SHA256.with_pss_salt_length(RsaPssSaltLength::Digest);
static PSS_SALT_MAX: signature::RsaParameters =
    signature::RSA_PSS_2048_8192_SHA256.with_pss_salt_length(RsaPssSaltLength::Max);
const DEFAULT_MAX_INTERMEDIATES: usize = 4;
const DEFAULT_MAX_RSA_KEY_SIZE: usize = 8192;
const DEFAULT_SPIFFE_PREFIX: &str = "/spire-exchange/";
const DEFAULT_TEMPLATE_CN: &str = "/{{ .PluginName }}/{{ .Fingerprint }}";
const DEFAULT_TEMPLATE_SVID: &str = "/{{ .PluginName }}/{{ .SVIDPathTrimmed }}";

/// Where trusted CAs come from.
#[derive(Debug, Clone)]
pub enum Mode {
    /// `mode = "external_pki"` (default): the CAs in `ca_bundle_path(s)`.
    ExternalPki(Vec<Vec<u8>>),
    /// `mode = "spiffe"`: the server's own bundle; leaf SPIFFE IDs must start with the prefix.
    Spiffe {
        /// `spiffe_prefix`, with a trailing `/`.
        prefix: String,
    },
}

/// The configured plugin.
#[derive(Debug, Clone)]
pub struct X509Pop {
    mode: Mode,
    template: String,
    max_intermediates: usize,
    max_rsa_key_size: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    mode: Option<String>,
    spiffe_prefix: Option<String>,
    ca_bundle_path: Option<String>,
    ca_bundle_paths: Option<Vec<String>>,
    agent_path_template: Option<String>,
    max_intermediates: Option<i64>,
    max_rsa_key_size: Option<i64>,
    verify_client_ip: Option<bool>,
}

impl X509Pop {
    /// Reads the `plugin_data` block.
    pub fn from_plugin_data(data: &serde_json::Value) -> Result<Self, String> {
        let data = if data.is_null() {
            serde_json::json!({})
        } else {
            data.clone()
        };
        let raw: RawConfig = serde_json::from_value(data).map_err(|e| {
            format!("{e} (expected keys mode, ca_bundle_path, ca_bundle_paths, spiffe_prefix, agent_path_template, max_intermediates, max_rsa_key_size)")
        })?;
        if raw.verify_client_ip == Some(true) {
            return Err("verify_client_ip is not supported".into());
        }
        let mode_name = raw.mode.as_deref().unwrap_or("external_pki");
        let mode = match mode_name {
            "external_pki" => {
                let paths = match (&raw.ca_bundle_path, &raw.ca_bundle_paths) {
                    (Some(_), Some(p)) if !p.is_empty() => {
                        return Err("only one of ca_bundle_path or ca_bundle_paths can be configured, not both".into());
                    }
                    (Some(p), _) if !p.is_empty() => vec![p.clone()],
                    (_, Some(p)) if !p.is_empty() => p.clone(),
                    _ => {
                        return Err(
                            "one of ca_bundle_path or ca_bundle_paths must be configured".into(),
                        );
                    }
                };
                let mut roots = Vec::new();
                for p in &paths {
                    let text = std::fs::read(p)
                        .map_err(|e| format!("unable to load trust bundle {p:?}: {e}"))?;
                    let blocks = pem::parse_many(&text)
                        .map_err(|e| format!("unable to load trust bundle {p:?}: {e}"))?;
                    let certs: Vec<Vec<u8>> = blocks
                        .into_iter()
                        .filter(|b| b.tag() == "CERTIFICATE")
                        .map(|b| b.into_contents())
                        .collect();
                    if certs.is_empty() {
                        return Err(format!(
                            "unable to load trust bundle {p:?}: no PEM certificates found"
                        ));
                    }
                    roots.extend(certs);
                }
                Mode::ExternalPki(roots)
            }
            "spiffe" => {
                if raw.ca_bundle_path.is_some()
                    || raw.ca_bundle_paths.as_ref().is_some_and(|p| !p.is_empty())
                {
                    return Err(
                        "you can not use ca_bundle_path or ca_bundle_paths in spiffe mode".into(),
                    );
                }
                let mut prefix = raw
                    .spiffe_prefix
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SPIFFE_PREFIX.into());
                if !prefix.ends_with('/') {
                    prefix.push('/');
                }
                Mode::Spiffe { prefix }
            }
            other => {
                return Err(format!(
                    "mode can only be either spiffe or external_pki, not {other:?}"
                ));
            }
        };
        let template = match raw.agent_path_template {
            Some(t) if !t.is_empty() => t,
            _ if matches!(mode, Mode::Spiffe { .. }) => DEFAULT_TEMPLATE_SVID.into(),
            _ => DEFAULT_TEMPLATE_CN.into(),
        };
        check_template(&template)?;
        let positive = |v: Option<i64>, name: &str, default: usize| -> Result<usize, String> {
            match v {
                None => Ok(default),
                Some(n) if n > 0 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
                Some(_) => Err(format!("{name} must be greater than 0")),
            }
        };
        Ok(X509Pop {
            mode,
            template,
            max_intermediates: positive(
                raw.max_intermediates,
                "max_intermediates",
                DEFAULT_MAX_INTERMEDIATES,
            )?,
            max_rsa_key_size: positive(
                raw.max_rsa_key_size,
                "max_rsa_key_size",
                DEFAULT_MAX_RSA_KEY_SIZE,
            )?,
        })
    }

    /// Whether the trusted CAs are the server's own bundle.
    pub fn spiffe_mode(&self) -> bool {
        matches!(self.mode, Mode::Spiffe { .. })
    }

    /// Checks the attestation payload and prepares the challenge. `own_roots` is the server's
    /// bundle (used in SPIFFE mode), `now` the current time.
    pub fn begin(
        &self,
        td: &TrustDomain,
        payload: &[u8],
        own_roots: &[Vec<u8>],
        now: UnixTime,
    ) -> Result<Pending, Status> {
        let data: AttestationData = serde_json::from_slice(payload).map_err(|e| {
            Status::invalid_argument(format!("x509pop: failed to unmarshal data: {e}"))
        })?;
        let certs: Vec<Vec<u8>> = data
            .certificates
            .iter()
            .map(|c| B64.decode(c))
            .collect::<Result<_, _>>()
            .map_err(|e| {
                Status::invalid_argument(format!("x509pop: failed to unmarshal data: {e}"))
            })?;
        let Some((leaf_der, intermediates)) = certs.split_first() else {
            return Err(Status::invalid_argument(
                "x509pop: no certificate to attest",
            ));
        };
        if intermediates.len() > self.max_intermediates {
            return Err(Status::invalid_argument(
                "x509pop: too many intermediate certificates",
            ));
        }
        let (_, leaf) =
            x509_parser::certificate::X509Certificate::from_der(leaf_der).map_err(|e| {
                Status::invalid_argument(format!("x509pop: unable to parse leaf certificate: {e}"))
            })?;
        let key = LeafKey::from_spki(leaf.public_key(), self.max_rsa_key_size)?;
        for (i, der) in intermediates.iter().enumerate() {
            let (_, c) = x509_parser::certificate::X509Certificate::from_der(der).map_err(|e| {
                Status::invalid_argument(format!(
                    "x509pop: unable to parse intermediate certificate {i}: {e}"
                ))
            })?;
            LeafKey::from_spki(c.public_key(), self.max_rsa_key_size).map_err(|_| {
                Status::invalid_argument(format!(
                    "x509pop: intermediate certificate {i} key is unsupported or too large"
                ))
            })?;
        }
        let roots: &[Vec<u8>] = match &self.mode {
            Mode::ExternalPki(r) => r,
            Mode::Spiffe { .. } => own_roots,
        };
        let ca_fingerprints = verify_chain(leaf_der, intermediates, roots, now)?;
        match leaf.key_usage() {
            Ok(Some(ku)) if ku.value.digital_signature() => {}
            _ => {
                return Err(Status::permission_denied(
                    "x509pop: certificate not intended for digital signature use",
                ));
            }
        }

        let mut svid_path = String::new();
        let mut san: BTreeMap<String, String> = BTreeMap::new();
        let san_prefix = format!("x509pop://{}/", td.as_str());
        let mut spiffe_uris = Vec::new();
        if let Ok(Some(ext)) = leaf.subject_alternative_name() {
            for name in &ext.value.general_names {
                if let x509_parser::extensions::GeneralName::URI(u) = name {
                    if u.starts_with("spiffe://") {
                        spiffe_uris.push((*u).to_string());
                    }
                    if let Some(rest) = u.strip_prefix(&san_prefix) {
                        let rest = rest.trim_matches('/');
                        if let Some((k, v)) = rest.split_once('/') {
                            san.insert(k.to_string(), v.to_string());
                        }
                    }
                }
            }
        }
        if let Mode::Spiffe { prefix } = &self.mode {
            let Some(uri) = spiffe_uris.first() else {
                return Err(Status::permission_denied(
                    "x509pop: valid SVID x509 cert not found",
                ));
            };
            let path = uri
                .strip_prefix("spiffe://")
                .and_then(|r| r.find('/').map(|i| &r[i..]))
                .unwrap_or("");
            let Some(trimmed) = path.strip_prefix(prefix.as_str()) else {
                return Err(Status::permission_denied(
                    "x509pop: x509 cert doesnt match SVID prefix",
                ));
            };
            svid_path = trimmed.to_string();
        }

        let fingerprint = sha1_hex(leaf_der);
        let serial_hex = serial_hex(leaf.raw_serial());
        let cn = leaf
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or("")
            .to_string();
        let vars = TemplateVars {
            fingerprint: &fingerprint,
            serial_hex: &serial_hex,
            trust_domain: td.as_str(),
            svid_path: &svid_path,
            common_name: &cn,
            san: &san,
        };
        let path = render_template(&self.template, &vars)
            .map_err(|e| Status::internal(format!("x509pop: failed to make spiffe id: {e}")))?;
        let agent_id = td
            .spiffe_id(&format!(
                "/spire/agent{}",
                if path.starts_with('/') {
                    path.clone()
                } else {
                    format!("/{path}")
                }
            ))
            .map_err(|e| Status::internal(format!("x509pop: failed to make spiffe id: {e}")))?;

        let mut values = Vec::new();
        if !cn.is_empty() {
            values.push(format!("subject:cn:{cn}"));
        }
        for fp in &ca_fingerprints {
            values.push(format!("ca:fingerprint:{fp}"));
        }
        values.push(format!("serialnumber:{serial_hex}"));
        for (k, v) in &san {
            values.push(format!("san:{k}:{v}"));
        }
        let selectors: Selectors = values
            .into_iter()
            .filter_map(|v| Selector::new(NAME, v).ok())
            .collect();

        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| Status::internal("x509pop: unable to generate challenge"))?;
        let challenge = match key {
            LeafKey::Rsa(_) => Challenge {
                rsa_signature: Some(NonceJson {
                    nonce: B64.encode(nonce),
                }),
                ecdsa_signature: None,
            },
            LeafKey::Ec { .. } => Challenge {
                rsa_signature: None,
                ecdsa_signature: Some(NonceJson {
                    nonce: B64.encode(nonce),
                }),
            },
        };
        let challenge = serde_json::to_vec(&challenge)
            .map_err(|e| Status::internal(format!("x509pop: unable to marshal challenge: {e}")))?;
        Ok(Pending {
            key,
            nonce,
            challenge,
            result: AttestResult {
                agent_id,
                selectors,
                can_reattest: true,
            },
        })
    }
}

/// An attestation waiting for the agent's challenge response.
#[derive(Debug)]
pub struct Pending {
    key: LeafKey,
    nonce: [u8; NONCE_LEN],
    challenge: Vec<u8>,
    result: AttestResult,
}

impl Pending {
    /// The challenge to send to the agent.
    pub fn challenge(&self) -> &[u8] {
        &self.challenge
    }

    /// Checks the agent's response; on success, the attestation result.
    pub fn finish(self, response: &[u8]) -> Result<AttestResult, Status> {
        let resp: Response = serde_json::from_slice(response).map_err(|e| {
            Status::invalid_argument(format!(
                "x509pop: unable to unmarshal challenge response: {e}"
            ))
        })?;
        let denied = |m: &str| {
            Status::permission_denied(format!(
                "x509pop: challenge response verification failed: {m}"
            ))
        };
        let decode = |s: &str| B64.decode(s).map_err(|_| denied("invalid base64"));
        match (&self.key, resp) {
            (
                LeafKey::Rsa(key),
                Response {
                    rsa_signature: Some(r),
                    ..
                },
            ) => {
                let msg = combined(&self.nonce, &decode(&r.nonce)?)
                    .ok_or_else(|| denied("invalid response nonce"))?;
                let sig = decode(&r.signature)?;
                // Go's rsa.SignPSS without options uses the longest salt; accept both that
                // and the digest-length salt.
                let ok = [&PSS_SALT_DIGEST, &PSS_SALT_MAX]
                    .into_iter()
                    .any(|alg| UnparsedPublicKey::new(alg, key).verify(&msg, &sig).is_ok());
                if !ok {
                    return Err(denied("RSA signature verify failed"));
                }
            }
            (
                LeafKey::Ec { p384, point },
                Response {
                    ecdsa_signature: Some(r),
                    ..
                },
            ) => {
                let msg = combined(&self.nonce, &decode(&r.nonce)?)
                    .ok_or_else(|| denied("invalid response nonce"))?;
                let sig = der_signature(&decode(&r.r)?, &decode(&r.s)?);
                let alg = if *p384 {
                    &signature::ECDSA_P384_SHA256_ASN1
                } else {
                    &signature::ECDSA_P256_SHA256_ASN1
                };
                UnparsedPublicKey::new(alg, point)
                    .verify(&msg, &sig)
                    .map_err(|_| denied("ECDSA signature verify failed"))?;
            }
            (LeafKey::Rsa(_), _) => return Err(denied("expecting RSA response")),
            (LeafKey::Ec { .. }, _) => return Err(denied("expecting ECDSA response")),
        }
        Ok(self.result)
    }
}

/// The signed message: both nonces, concatenated (the verifier hashes them with SHA-256,
/// giving SPIRE's `SHA-256(challenge || response)` digest).
fn combined(challenge: &[u8; NONCE_LEN], response: &[u8]) -> Option<Vec<u8>> {
    if response.len() != NONCE_LEN {
        return None;
    }
    let mut v = challenge.to_vec();
    v.extend_from_slice(response);
    Some(v)
}

/// ASN.1 `Ecdsa-Sig-Value` from big-endian `r` and `s`.
fn der_signature(r: &[u8], s: &[u8]) -> Vec<u8> {
    fn int(v: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = v.iter().copied().skip_while(|b| *b == 0).collect();
        if v.is_empty() || v[0] & 0x80 != 0 {
            v.insert(0, 0);
        }
        let mut out = vec![0x02];
        push_len(&mut out, v.len());
        out.extend(v);
        out
    }
    let body: Vec<u8> = [int(r), int(s)].concat();
    let mut out = vec![0x30];
    push_len(&mut out, body.len());
    out.extend(body);
    out
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
}

#[derive(Debug)]
enum LeafKey {
    /// `RSAPublicKey` DER.
    Rsa(Vec<u8>),
    /// Uncompressed point.
    Ec { p384: bool, point: Vec<u8> },
}

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

impl LeafKey {
    fn from_spki(
        spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
        max_rsa: usize,
    ) -> Result<Self, Status> {
        let alg = spki.algorithm.algorithm.to_id_string();
        let bits = spki.subject_public_key.data.to_vec();
        match alg.as_str() {
            OID_RSA => {
                if let Ok(x509_parser::public_key::PublicKey::RSA(k)) = spki.parsed()
                    && k.key_size() > max_rsa
                {
                    return Err(Status::invalid_argument(
                        "x509pop: leaf certificate key size too large",
                    ));
                }
                Ok(LeafKey::Rsa(bits))
            }
            OID_EC => {
                let curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|o| o.to_id_string())
                    .unwrap_or_default();
                match curve.as_str() {
                    OID_P256 => Ok(LeafKey::Ec {
                        p384: false,
                        point: bits,
                    }),
                    OID_P384 => Ok(LeafKey::Ec {
                        p384: true,
                        point: bits,
                    }),
                    _ => Err(Status::invalid_argument(format!(
                        "x509pop: unsupported EC curve {curve}"
                    ))),
                }
            }
            _ => Err(Status::invalid_argument(format!(
                "x509pop: unsupported public key type {alg}"
            ))),
        }
    }
}

/// Validates the chain and returns the SHA-1 fingerprints of its CAs (intermediates, then
/// the root).
fn verify_chain(
    leaf: &[u8],
    intermediates: &[Vec<u8>],
    roots: &[Vec<u8>],
    now: UnixTime,
) -> Result<Vec<String>, Status> {
    let fail = |m: String| {
        Status::permission_denied(format!("x509pop: certificate verification failed: {m}"))
    };
    let root_ders: Vec<CertificateDer<'_>> = roots
        .iter()
        .map(|r| CertificateDer::from(r.as_slice()))
        .collect();
    let anchors: Vec<_> = root_ders
        .iter()
        .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
        .collect();
    if anchors.is_empty() {
        return Err(fail("no trusted CA certificates".into()));
    }
    let leaf_der = CertificateDer::from(leaf);
    let ee = webpki::EndEntityCert::try_from(&leaf_der).map_err(|e| fail(e.to_string()))?;
    let inter: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let path = ee
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &inter,
            now,
            AnyEku,
            None,
            None,
        )
        .map_err(|e| fail(e.to_string()))?;
    let mut fps = Vec::new();
    for c in path.intermediate_certificates() {
        let fp = sha1_hex(c.der().as_ref());
        if !fps.contains(&fp) {
            fps.push(fp);
        }
    }
    let anchor = path.anchor();
    if let Some(root) = root_ders.iter().zip(&anchors).find(|(_, a)| {
        a.subject.as_ref() == anchor.subject.as_ref()
            && a.subject_public_key_info.as_ref() == anchor.subject_public_key_info.as_ref()
    }) {
        let fp = sha1_hex(root.0.as_ref());
        if !fps.contains(&fp) {
            fps.push(fp);
        }
    }
    Ok(fps)
}

/// Go's `ExtKeyUsageAny`: any (or no) extended key usage is fine.
struct AnyEku;

impl webpki::ExtendedKeyUsageValidator for AnyEku {
    fn validate(&self, _iter: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// Lower-case hex SHA-1 of a DER certificate (SPIRE's `x509pop.Fingerprint`).
pub fn sha1_hex(der: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref())
}

/// Lower-case hex of a serial number with an even number of digits (SPIRE's
/// `SerialNumberHex`).
fn serial_hex(raw: &[u8]) -> String {
    let trimmed: Vec<u8> = raw.iter().copied().skip_while(|b| *b == 0).collect();
    if trimmed.is_empty() {
        "00".into()
    } else {
        hex::encode(trimmed)
    }
}

struct TemplateVars<'a> {
    fingerprint: &'a str,
    serial_hex: &'a str,
    trust_domain: &'a str,
    svid_path: &'a str,
    common_name: &'a str,
    san: &'a BTreeMap<String, String>,
}

/// Fields an `agent_path_template` may use.
const TEMPLATE_FIELDS: &[&str] = &[
    "PluginName",
    "Fingerprint",
    "SerialNumberHex",
    "TrustDomain",
    "SVIDPathTrimmed",
    "Subject.CommonName",
];

fn check_template(t: &str) -> Result<(), String> {
    let san = BTreeMap::new();
    let vars = TemplateVars {
        fingerprint: "f",
        serial_hex: "s",
        trust_domain: "t",
        svid_path: "p",
        common_name: "c",
        san: &san,
    };
    render_inner(t, &vars, true)
        .map(|_| ())
        .map_err(|e| format!("failed to parse agent svid template {t:?}: {e}"))
}

fn render_template(t: &str, vars: &TemplateVars<'_>) -> Result<String, String> {
    render_inner(t, vars, false)
}

/// A small subset of Go's text/template: `{{ .Field }}` substitutions only.
fn render_inner(t: &str, vars: &TemplateVars<'_>, lenient_san: bool) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = t;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or("unclosed action")?;
        let field = after[..end].trim().trim_start_matches('.');
        let value = match field {
            "PluginName" => NAME.to_string(),
            "Fingerprint" => vars.fingerprint.to_string(),
            "SerialNumberHex" => vars.serial_hex.to_string(),
            "TrustDomain" => vars.trust_domain.to_string(),
            "SVIDPathTrimmed" => vars.svid_path.to_string(),
            "Subject.CommonName" => vars.common_name.to_string(),
            f if f.starts_with("URISanSelectors.") => {
                let key = &f["URISanSelectors.".len()..];
                match vars.san.get(key) {
                    Some(v) => v.clone(),
                    None if lenient_san => String::new(),
                    None => return Err(format!("no x509pop SAN selector {key:?}")),
                }
            }
            other => {
                return Err(format!(
                    "unsupported field {other:?} (supported: {}, URISanSelectors.<key>)",
                    TEMPLATE_FIELDS.join(", ")
                ));
            }
        };
        out.push_str(&value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `{"certificates": [base64 DER, ...]}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AttestationData {
    /// Leaf first, then intermediates (base64 of DER, as Go encodes `[]byte`).
    pub certificates: Vec<String>,
}

/// `{"nonce": base64}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct NonceJson {
    /// 32 random bytes, base64.
    pub nonce: String,
}

/// The challenge sent to the agent.
#[derive(Debug, Serialize, Deserialize)]
pub struct Challenge {
    /// For RSA keys.
    pub rsa_signature: Option<NonceJson>,
    /// For ECDSA keys.
    pub ecdsa_signature: Option<NonceJson>,
}

/// RSA response.
#[derive(Debug, Serialize, Deserialize)]
pub struct RsaResponse {
    /// The agent's nonce (base64).
    pub nonce: String,
    /// RSA-PSS SHA-256 signature (base64).
    pub signature: String,
}

/// ECDSA response.
#[derive(Debug, Serialize, Deserialize)]
pub struct EcdsaResponse {
    /// The agent's nonce (base64).
    pub nonce: String,
    /// `r`, big-endian (base64).
    pub r: String,
    /// `s`, big-endian (base64).
    pub s: String,
}

/// The agent's answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    /// For RSA keys.
    #[serde(default)]
    pub rsa_signature: Option<RsaResponse>,
    /// For ECDSA keys.
    #[serde(default)]
    pub ecdsa_signature: Option<EcdsaResponse>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_serials() {
        let san = BTreeMap::from([("datacenter".to_string(), "eu1".to_string())]);
        let vars = TemplateVars {
            fingerprint: "abcd",
            serial_hex: "0a",
            trust_domain: "td",
            svid_path: "x",
            common_name: "node1",
            san: &san,
        };
        assert_eq!(
            render_template(DEFAULT_TEMPLATE_CN, &vars).unwrap(),
            "/x509pop/abcd"
        );
        assert_eq!(
            render_template(
                "/{{.Subject.CommonName}}/{{ .URISanSelectors.datacenter }}",
                &vars
            )
            .unwrap(),
            "/node1/eu1"
        );
        assert!(check_template("/{{ .Nope }}").is_err());
        assert!(check_template("/{{ .Fingerprint").is_err());
        assert_eq!(serial_hex(&[0x00, 0x0a]), "0a");
        assert_eq!(serial_hex(&[0x01, 0x02]), "0102");
    }

    fn pending(key: LeafKey) -> Pending {
        Pending {
            key,
            nonce: [7u8; NONCE_LEN],
            challenge: Vec::new(),
            result: AttestResult {
                agent_id: "spiffe://td/spire/agent/x509pop/x".parse().unwrap(),
                selectors: Selectors::new(),
                can_reattest: true,
            },
        }
    }

    fn rsa_answer(
        kp: &aws_lc_rs::rsa::KeyPair,
        salt: RsaPssSaltLength,
        msg_nonce: [u8; 32],
    ) -> Vec<u8> {
        static DIGEST: signature::RsaSignatureEncoding =
            signature::RSA_PSS_SHA256.with_pss_salt_length(RsaPssSaltLength::Digest);
        static MAX: signature::RsaSignatureEncoding =
            signature::RSA_PSS_SHA256.with_pss_salt_length(RsaPssSaltLength::Max);
        let alg = if salt == RsaPssSaltLength::Max {
            &MAX
        } else {
            &DIGEST
        };
        let msg = [[7u8; 32], msg_nonce].concat();
        let mut sig = vec![0u8; kp.public_modulus_len()];
        kp.sign(alg, &aws_lc_rs::rand::SystemRandom::new(), &msg, &mut sig)
            .unwrap();
        serde_json::to_vec(&serde_json::json!({
            "rsa_signature": { "nonce": B64.encode([9u8; 32]), "signature": B64.encode(&sig) },
            "ecdsa_signature": null
        }))
        .unwrap()
    }

    #[test]
    fn rsa_pss_responses_with_digest_or_maximal_salt() {
        use aws_lc_rs::signature::KeyPair as _;
        let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let public = kp.public_key().as_ref().to_vec();
        // Go's rsa.SignPSS(nil options) uses the maximal salt; other signers the digest length.
        for salt in [RsaPssSaltLength::Digest, RsaPssSaltLength::Max] {
            let answer = rsa_answer(&kp, salt, [9u8; 32]);
            pending(LeafKey::Rsa(public.clone()))
                .finish(&answer)
                .unwrap();
        }
        // Signed over the wrong nonce.
        let bad = rsa_answer(&kp, RsaPssSaltLength::Digest, [8u8; 32]);
        let e = pending(LeafKey::Rsa(public.clone()))
            .finish(&bad)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        // An ECDSA answer to an RSA challenge.
        let wrong = br#"{"ecdsa_signature": {"nonce": "", "r": "", "s": ""}}"#;
        let e = pending(LeafKey::Rsa(public)).finish(wrong).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn der_signature_encoding() {
        assert_eq!(
            der_signature(&[0x01], &[0x80]),
            vec![0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x02, 0x00, 0x80]
        );
    }

    #[test]
    fn config_errors() {
        assert!(X509Pop::from_plugin_data(&serde_json::json!({})).is_err());
        assert!(X509Pop::from_plugin_data(&serde_json::json!({"mode": "weird"})).is_err());
        assert!(
            X509Pop::from_plugin_data(
                &serde_json::json!({"mode": "spiffe", "ca_bundle_path": "/x"})
            )
            .is_err()
        );
        let p = X509Pop::from_plugin_data(&serde_json::json!({"mode": "spiffe"})).unwrap();
        assert!(p.spiffe_mode());
    }
}
