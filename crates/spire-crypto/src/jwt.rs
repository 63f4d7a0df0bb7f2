//! JWT-SVID signing and validation (JWS compact serialization, implemented on aws-lc-rs).
//!
//! Validation order: size limit, three base64url parts, header JSON; `alg` is checked against
//! the allow-list (ES256/384/512, RS256/384/512, PS256/384/512) **before** anything else, so
//! `none` and `HS*` are refused without touching a key; `typ` must be absent, `JWT` or `JOSE`;
//! `kid` is required; `crit` is refused. Then `sub` must be a SPIFFE ID, whose trust domain picks
//! the JWT bundle and `kid` the key (SubjectPublicKeyInfo DER); the signature is verified; then
//! `aud` must contain the expected audience and `exp` must not have passed (with a configurable
//! leeway, default 30 s). Tokens longer than [`MAX_TOKEN_LEN`] (16 KiB) are rejected unread.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use spire_spiffe::{SpiffeId, TrustDomain, to_unix_secs};

use crate::keys::{JwsAlgorithm, KeyError, Signer, verify_jws};

/// Longest token accepted, in bytes. A JWT-SVID with a P-256 signature and a long SPIFFE ID is
/// well under 4 KiB; an RSA-4096 signature adds about 700 bytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Default leeway for `exp` (and `nbf`).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Why a JWT-SVID was not signed or not accepted.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token is {0} bytes: the limit is 16384")]
    TooLarge(usize),
    /// Not three dot-separated parts.
    #[error("token is not a JWS compact serialization: expected three dot-separated parts")]
    Malformed,
    /// A part is not base64url without padding.
    #[error("token {0} is not valid base64url")]
    Base64(&'static str),
    /// The header or payload is not a JSON object.
    #[error("token {0} is not a JSON object")]
    Json(&'static str),
    /// The header or payload names a member twice (RFC 7515 §5.2: a JWS with duplicate
    /// header parameter names must be rejected; the same holds for claims here, so that no
    /// two JSON parsers can disagree about what the token says).
    #[error("token {0} has a duplicate member {1:?}")]
    DuplicateMember(&'static str, String),
    /// `alg` is `none`.
    #[error("token alg \"none\" is not allowed")]
    AlgNone,
    /// `alg` is an HMAC algorithm.
    #[error("token alg {0:?} (HMAC) is not allowed: expected ES*, RS* or PS*")]
    AlgHmac(String),
    /// `alg` is missing or not an allowed algorithm.
    #[error(
        "token alg {0:?} is not supported: expected ES256/384/512, RS256/384/512 or PS256/384/512"
    )]
    UnsupportedAlg(String),
    /// `typ` is present but neither `JWT` nor `JOSE`.
    #[error("token typ {0:?} is not allowed: expected JWT or JOSE")]
    BadTyp(String),
    /// `kid` is missing or empty.
    #[error("token header has no kid")]
    MissingKid,
    /// The header has a `crit` parameter.
    #[error("token header has a crit parameter, which is not supported")]
    CriticalHeader,
    /// `sub` is missing.
    #[error("token has no sub claim")]
    MissingSubject,
    /// `sub` is not a SPIFFE ID.
    #[error("token sub is not a valid SPIFFE ID: {0}")]
    SubjectNotSpiffeId(#[source] spire_spiffe::SpiffeIdError),
    /// No JWT bundle for the subject's trust domain.
    #[error("no JWT bundle for trust domain {0:?}")]
    NoBundle(String),
    /// The bundle of the subject's trust domain has no key with this `kid`.
    #[error("no JWT authority with kid {kid:?} in the bundle of trust domain {trust_domain:?}")]
    UnknownKid {
        /// The token's key id.
        kid: String,
        /// The subject's trust domain.
        trust_domain: String,
    },
    /// The signature does not verify.
    #[error("token signature does not verify with authority {0:?}")]
    BadSignature(String),
    /// `aud` missing or empty.
    #[error("token has no aud claim")]
    MissingAudience,
    /// `aud` does not contain the expected audience.
    #[error("token audience {actual:?} does not contain {expected:?}")]
    WrongAudience {
        /// The audience the validator expected.
        expected: String,
        /// The token's audiences.
        actual: Vec<String>,
    },
    /// `exp` missing or not a number.
    #[error("token has no numeric exp claim")]
    MissingExpiry,
    /// The token expired.
    #[error("token expired at {expired_at} (now {now}, leeway {leeway_secs}s)")]
    Expired {
        /// `exp`.
        expired_at: i64,
        /// Validation time.
        now: i64,
        /// Allowed leeway.
        leeway_secs: u64,
    },
    /// `nbf` is in the future.
    #[error("token is not valid before {0}")]
    NotYetValid(i64),
    /// A claim has the wrong JSON type.
    #[error("token claim {0} has the wrong type")]
    ClaimType(&'static str),
    /// Signing failed.
    #[error("cannot sign token: {0}")]
    Sign(#[from] KeyError),
    /// Nothing to sign for (no audience).
    #[error("a JWT-SVID needs at least one audience")]
    NoAudience,
}

/// Result of a trust-domain and key-id lookup in a set of JWT bundles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtKeyLookup<'a> {
    /// The key (SubjectPublicKeyInfo DER).
    Found(&'a [u8]),
    /// The trust domain's bundle has no such `kid`.
    UnknownKid,
    /// No bundle for the trust domain.
    NoBundle,
}

/// JWT authorities by trust domain and key id.
pub trait JwtBundleSource {
    /// Looks up key `kid` in the JWT bundle of `td`.
    fn jwt_key(&self, td: &TrustDomain, kid: &str) -> JwtKeyLookup<'_>;
}

fn lookup_map<'a, M>(bundle: Option<&'a M>, kid: &str) -> JwtKeyLookup<'a>
where
    M: MapLike,
{
    match bundle {
        None => JwtKeyLookup::NoBundle,
        Some(m) => m
            .get_key(kid)
            .map_or(JwtKeyLookup::UnknownKid, JwtKeyLookup::Found),
    }
}

trait MapLike {
    fn get_key(&self, kid: &str) -> Option<&[u8]>;
}

impl MapLike for BTreeMap<String, Vec<u8>> {
    fn get_key(&self, kid: &str) -> Option<&[u8]> {
        self.get(kid).map(Vec::as_slice)
    }
}

impl MapLike for HashMap<String, Vec<u8>> {
    fn get_key(&self, kid: &str) -> Option<&[u8]> {
        self.get(kid).map(Vec::as_slice)
    }
}

impl JwtBundleSource for HashMap<TrustDomain, BTreeMap<String, Vec<u8>>> {
    fn jwt_key(&self, td: &TrustDomain, kid: &str) -> JwtKeyLookup<'_> {
        lookup_map(self.get(td), kid)
    }
}

impl JwtBundleSource for BTreeMap<TrustDomain, BTreeMap<String, Vec<u8>>> {
    fn jwt_key(&self, td: &TrustDomain, kid: &str) -> JwtKeyLookup<'_> {
        lookup_map(self.get(td), kid)
    }
}

impl JwtBundleSource for HashMap<TrustDomain, HashMap<String, Vec<u8>>> {
    fn jwt_key(&self, td: &TrustDomain, kid: &str) -> JwtKeyLookup<'_> {
        lookup_map(self.get(td), kid)
    }
}

/// A single trust domain's JWT authorities.
impl JwtBundleSource for (TrustDomain, BTreeMap<String, Vec<u8>>) {
    fn jwt_key(&self, td: &TrustDomain, kid: &str) -> JwtKeyLookup<'_> {
        lookup_map((&self.0 == td).then_some(&self.1), kid)
    }
}

/// Claims of a JWT-SVID to sign.
#[derive(Clone, Debug)]
pub struct JwtSvidClaims {
    /// `sub`.
    pub spiffe_id: SpiffeId,
    /// `aud` (serialized as an array, at least one).
    pub audience: Vec<String>,
    /// `iat`.
    pub issued_at: SystemTime,
    /// `exp`.
    pub expires_at: SystemTime,
    /// `iss` (SPIRE's `jwt_issuer`), if set.
    pub issuer: Option<String>,
    /// `jti`, if set.
    pub jwt_id: Option<String>,
}

/// Signs a JWT-SVID with `signer` under key id `kid`. `alg` defaults to the key type's SPIRE
/// algorithm (ES256 for P-256, ES384 for P-384, RS256 for RSA); PS256 may be requested for RSA.
pub fn sign_jwt_svid(
    signer: &dyn Signer,
    kid: &str,
    alg: Option<JwsAlgorithm>,
    claims: &JwtSvidClaims,
) -> Result<String, JwtError> {
    if claims.audience.is_empty() {
        return Err(JwtError::NoAudience);
    }
    let alg = alg.unwrap_or_else(|| signer.public_key().key_type().default_jws_algorithm());
    let mut header = Map::new();
    header.insert("alg".into(), Value::from(alg.as_str()));
    header.insert("kid".into(), Value::from(kid));
    header.insert("typ".into(), Value::from("JWT"));
    let mut payload = Map::new();
    payload.insert("aud".into(), Value::from(claims.audience.clone()));
    payload.insert("exp".into(), Value::from(to_unix_secs(claims.expires_at)));
    payload.insert("iat".into(), Value::from(to_unix_secs(claims.issued_at)));
    if let Some(iss) = &claims.issuer {
        payload.insert("iss".into(), Value::from(iss.as_str()));
    }
    if let Some(jti) = &claims.jwt_id {
        payload.insert("jti".into(), Value::from(jti.as_str()));
    }
    payload.insert("sub".into(), Value::from(claims.spiffe_id.as_str()));
    let mut out = String::with_capacity(512);
    URL_SAFE_NO_PAD.encode_string(Value::Object(header).to_string(), &mut out);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(Value::Object(payload).to_string(), &mut out);
    let sig = signer.sign_jws(alg, out.as_bytes())?;
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(sig, &mut out);
    Ok(out)
}

/// Validation options.
#[derive(Clone, Copy, Debug)]
pub struct JwtValidationOptions {
    /// Leeway applied to `exp` and `nbf`.
    pub leeway: Duration,
}

impl Default for JwtValidationOptions {
    fn default() -> Self {
        JwtValidationOptions {
            leeway: DEFAULT_LEEWAY,
        }
    }
}

/// A validated JWT-SVID.
#[derive(Clone, Debug)]
pub struct ValidatedJwtSvid {
    /// `sub`.
    pub spiffe_id: SpiffeId,
    /// `aud`.
    pub audience: Vec<String>,
    /// `exp` (Unix seconds).
    pub expires_at: i64,
    /// `alg` used.
    pub algorithm: JwsAlgorithm,
    /// `kid` used.
    pub key_id: String,
    /// All claims, as ValidateJWTSVID returns them.
    pub claims: Map<String, Value>,
}

fn b64(part: &str, what: &'static str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part.as_bytes())
        .map_err(|_| JwtError::Base64(what))
}

fn json_object(bytes: &[u8], what: &'static str) -> Result<Map<String, Value>, JwtError> {
    match serde_json::from_slice::<UniqueObject>(bytes) {
        Ok(UniqueObject(Ok(m))) => Ok(m),
        Ok(UniqueObject(Err(name))) => Err(JwtError::DuplicateMember(what, name)),
        Err(_) => Err(JwtError::Json(what)),
    }
}

/// A top-level JSON object read member by member: `Err(name)` when `name` occurs twice
/// (serde_json's `Value` would silently keep the last one).
struct UniqueObject(Result<Map<String, Value>, String>);

impl<'de> serde::Deserialize<'de> for UniqueObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<UniqueObject, A::Error> {
                let mut map = Map::new();
                let mut duplicate = None;
                while let Some((k, v)) = access.next_entry::<String, Value>()? {
                    if map.contains_key(&k) {
                        duplicate.get_or_insert(k);
                    } else {
                        map.insert(k, v);
                    }
                }
                Ok(UniqueObject(duplicate.map_or(Ok(map), Err)))
            }
        }
        d.deserialize_map(Visit)
    }
}

fn numeric_date(v: &Value, name: &'static str) -> Result<i64, JwtError> {
    if let Some(i) = v.as_i64() {
        return Ok(i);
    }
    match v.as_f64() {
        // Truncation is intended: NumericDate may carry fractions.
        Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(f as i64),
        _ => Err(JwtError::ClaimType(name)),
    }
}

/// The header fields checked before anything else.
struct Header {
    alg: JwsAlgorithm,
    kid: String,
}

fn check_header(header: &Map<String, Value>) -> Result<Header, JwtError> {
    let alg = match header.get("alg") {
        Some(Value::String(s)) => s.as_str(),
        Some(other) => return Err(JwtError::UnsupportedAlg(other.to_string())),
        None => return Err(JwtError::UnsupportedAlg(String::new())),
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err(JwtError::AlgNone);
    }
    if alg.to_ascii_uppercase().starts_with("HS") {
        return Err(JwtError::AlgHmac(alg.to_owned()));
    }
    let alg =
        JwsAlgorithm::from_name(alg).ok_or_else(|| JwtError::UnsupportedAlg(alg.to_owned()))?;
    match header.get("typ") {
        None => {}
        Some(Value::String(t)) if t == "JWT" || t == "JOSE" => {}
        Some(Value::String(t)) => return Err(JwtError::BadTyp(t.clone())),
        Some(other) => return Err(JwtError::BadTyp(other.to_string())),
    }
    if header.contains_key("crit") {
        return Err(JwtError::CriticalHeader);
    }
    let kid = match header.get("kid") {
        Some(Value::String(k)) if !k.is_empty() => k.clone(),
        _ => return Err(JwtError::MissingKid),
    };
    Ok(Header { alg, kid })
}

/// Validates a JWT-SVID for `audience` at time `now` against `bundles`.
pub fn validate_jwt_svid(
    token: &str,
    bundles: &dyn JwtBundleSource,
    audience: &str,
    now: SystemTime,
    options: &JwtValidationOptions,
) -> Result<ValidatedJwtSvid, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLarge(token.len()));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header = json_object(&b64(h64, "header")?, "header")?;
    let Header { alg, kid } = check_header(&header)?;
    let claims = json_object(&b64(p64, "payload")?, "payload")?;
    let signature = b64(s64, "signature")?;

    let sub = match claims.get("sub") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(JwtError::ClaimType("sub")),
        None => return Err(JwtError::MissingSubject),
    };
    let spiffe_id: SpiffeId = sub.parse().map_err(JwtError::SubjectNotSpiffeId)?;
    let key = match bundles.jwt_key(spiffe_id.trust_domain(), &kid) {
        JwtKeyLookup::Found(k) => k,
        JwtKeyLookup::UnknownKid => {
            return Err(JwtError::UnknownKid {
                kid,
                trust_domain: spiffe_id.trust_domain().to_string(),
            });
        }
        JwtKeyLookup::NoBundle => {
            return Err(JwtError::NoBundle(spiffe_id.trust_domain().to_string()));
        }
    };
    let signed = &token[..h64.len() + 1 + p64.len()];
    if !verify_jws(alg, key, signed.as_bytes(), &signature) {
        return Err(JwtError::BadSignature(kid));
    }

    let aud: Vec<String> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or(JwtError::ClaimType("aud"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(JwtError::ClaimType("aud")),
        None => Vec::new(),
    };
    if aud.is_empty() {
        return Err(JwtError::MissingAudience);
    }
    if !aud.iter().any(|a| a == audience) {
        return Err(JwtError::WrongAudience {
            expected: audience.to_owned(),
            actual: aud,
        });
    }
    let now_s = to_unix_secs(now);
    let leeway = i64::try_from(options.leeway.as_secs()).unwrap_or(i64::MAX);
    let exp = match claims.get("exp") {
        Some(v) => numeric_date(v, "exp")?,
        None => return Err(JwtError::MissingExpiry),
    };
    if now_s > exp.saturating_add(leeway) {
        return Err(JwtError::Expired {
            expired_at: exp,
            now: now_s,
            leeway_secs: options.leeway.as_secs(),
        });
    }
    if let Some(v) = claims.get("nbf") {
        let nbf = numeric_date(v, "nbf")?;
        if now_s.saturating_add(leeway) < nbf {
            return Err(JwtError::NotYetValid(nbf));
        }
    }
    Ok(ValidatedJwtSvid {
        spiffe_id,
        audience: aud,
        expires_at: exp,
        algorithm: alg,
        key_id: kid,
        claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyType, PrivateKey};
    use proptest::prelude::*;
    use spire_spiffe::from_unix_secs;

    const NOW: i64 = 1_800_000_000;

    struct Fixture {
        key: PrivateKey,
        bundles: HashMap<TrustDomain, BTreeMap<String, Vec<u8>>>,
    }

    fn fixture(t: KeyType) -> Fixture {
        let key = PrivateKey::generate(t).unwrap();
        let mut keys = BTreeMap::new();
        keys.insert("kid-1".to_owned(), key.public_key().spki_der().to_vec());
        let mut bundles = HashMap::new();
        bundles.insert("example.org".parse().unwrap(), keys);
        bundles.insert("other.org".parse().unwrap(), BTreeMap::new());
        Fixture { key, bundles }
    }

    fn claims(sub: &str) -> JwtSvidClaims {
        JwtSvidClaims {
            spiffe_id: sub.parse().unwrap(),
            audience: vec!["aud-1".into(), "aud-2".into()],
            issued_at: from_unix_secs(NOW),
            expires_at: from_unix_secs(NOW + 300),
            issuer: Some("https://oidc.example.org".into()),
            jwt_id: Some("abc".into()),
        }
    }

    fn validate(f: &Fixture, token: &str) -> Result<ValidatedJwtSvid, JwtError> {
        validate_jwt_svid(
            token,
            &f.bundles,
            "aud-1",
            from_unix_secs(NOW + 10),
            &JwtValidationOptions::default(),
        )
    }

    /// Builds a token from raw header/payload JSON, signing with `sign`.
    fn raw_token(header: &str, payload: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let mut t = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let s = sign(t.as_bytes());
        t.push('.');
        t.push_str(&URL_SAFE_NO_PAD.encode(s));
        t
    }

    fn payload(sub: &str) -> String {
        format!(r#"{{"sub":"{sub}","aud":["aud-1"],"exp":{}}}"#, NOW + 300)
    }

    #[test]
    fn sign_and_validate_each_signing_algorithm() {
        for (t, alg) in [
            (KeyType::EcP256, None),
            (KeyType::EcP384, None),
            (KeyType::Rsa2048, None),
            (KeyType::Rsa2048, Some(JwsAlgorithm::PS256)),
        ] {
            let f = fixture(t);
            let tok =
                sign_jwt_svid(&f.key, "kid-1", alg, &claims("spiffe://example.org/w")).unwrap();
            let v = validate(&f, &tok).unwrap();
            assert_eq!(v.spiffe_id.as_str(), "spiffe://example.org/w");
            assert_eq!(v.audience, ["aud-1", "aud-2"]);
            assert_eq!(v.expires_at, NOW + 300);
            assert_eq!(v.key_id, "kid-1");
            assert_eq!(v.algorithm, alg.unwrap_or(t.default_jws_algorithm()));
            assert_eq!(v.claims["iss"], "https://oidc.example.org");
            assert_eq!(v.claims["jti"], "abc");
            assert_eq!(v.claims["iat"], NOW);
            let header: Value = serde_json::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(tok.split('.').next().unwrap())
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(header["typ"], "JWT");
            assert_eq!(header["kid"], "kid-1");
        }
    }

    #[test]
    fn validates_every_allowed_algorithm() {
        let rsa = fixture(KeyType::Rsa2048);
        for alg in [
            JwsAlgorithm::RS256,
            JwsAlgorithm::RS384,
            JwsAlgorithm::RS512,
            JwsAlgorithm::PS256,
            JwsAlgorithm::PS384,
            JwsAlgorithm::PS512,
        ] {
            let tok = sign_jwt_svid(
                &rsa.key,
                "kid-1",
                Some(alg),
                &claims("spiffe://example.org/w"),
            )
            .unwrap();
            assert_eq!(validate(&rsa, &tok).unwrap().algorithm, alg);
        }
        // ES512 with a P-521 key made by aws-lc directly; typ JOSE and no typ are accepted.
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::{ECDSA_P521_SHA512_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let kp = EcdsaKeyPair::generate(&ECDSA_P521_SHA512_FIXED_SIGNING).unwrap();
        let spki: aws_lc_rs::encoding::PublicKeyX509Der<'_> = kp.public_key().as_der().unwrap();
        let mut f = fixture(KeyType::EcP256);
        f.bundles
            .get_mut(&"example.org".parse::<TrustDomain>().unwrap())
            .unwrap()
            .insert("p521".into(), spki.as_ref().to_vec());
        let rng = aws_lc_rs::rand::SystemRandom::new();
        for header in [
            r#"{"alg":"ES512","kid":"p521","typ":"JOSE"}"#,
            r#"{"alg":"ES512","kid":"p521"}"#,
        ] {
            let tok = raw_token(header, &payload("spiffe://example.org/w"), |m| {
                kp.sign(&rng, m).unwrap().as_ref().to_vec()
            });
            assert_eq!(validate(&f, &tok).unwrap().algorithm, JwsAlgorithm::ES512);
        }
        let tok = raw_token(
            r#"{"alg":"ES512","kid":"p521","typ":"at+jwt"}"#,
            &payload("spiffe://example.org/w"),
            |m| kp.sign(&rng, m).unwrap().as_ref().to_vec(),
        );
        assert!(matches!(validate(&f, &tok), Err(JwtError::BadTyp(_))));
    }

    #[test]
    fn rejects_alg_none() {
        let f = fixture(KeyType::EcP256);
        let tok = raw_token(
            r#"{"alg":"none","kid":"kid-1","typ":"JWT"}"#,
            &payload("spiffe://example.org/w"),
            |_| Vec::new(),
        );
        assert!(matches!(validate(&f, &tok), Err(JwtError::AlgNone)));
        let tok = raw_token(
            r#"{"alg":"None","kid":"kid-1"}"#,
            &payload("spiffe://example.org/w"),
            |_| Vec::new(),
        );
        assert!(matches!(validate(&f, &tok), Err(JwtError::AlgNone)));
    }

    #[test]
    fn rejects_hs256_even_with_public_key_as_secret() {
        let f = fixture(KeyType::EcP256);
        let spki = f.key.public_key().spki_der().to_vec();
        let hmac = |m: &[u8]| {
            let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &spki);
            aws_lc_rs::hmac::sign(&k, m).as_ref().to_vec()
        };
        let tok = raw_token(
            r#"{"alg":"HS256","kid":"kid-1","typ":"JWT"}"#,
            &payload("spiffe://example.org/w"),
            hmac,
        );
        assert!(matches!(validate(&f, &tok), Err(JwtError::AlgHmac(a)) if a == "HS256"));
        let tok = raw_token(
            r#"{"alg":"HS512","kid":"kid-1"}"#,
            &payload("spiffe://example.org/w"),
            |_| vec![1],
        );
        assert!(matches!(validate(&f, &tok), Err(JwtError::AlgHmac(_))));
        let tok = raw_token(
            r#"{"alg":"EdDSA","kid":"kid-1"}"#,
            &payload("spiffe://example.org/w"),
            |_| vec![1],
        );
        assert!(matches!(
            validate(&f, &tok),
            Err(JwtError::UnsupportedAlg(_))
        ));
        let tok = raw_token(
            r#"{"kid":"kid-1"}"#,
            &payload("spiffe://example.org/w"),
            |_| vec![1],
        );
        assert!(matches!(
            validate(&f, &tok),
            Err(JwtError::UnsupportedAlg(_))
        ));
    }

    #[test]
    fn rejects_missing_and_unknown_kid() {
        let f = fixture(KeyType::EcP256);
        let c = claims("spiffe://example.org/w");
        let tok = sign_jwt_svid(&f.key, "kid-2", None, &c).unwrap();
        assert!(
            matches!(validate(&f, &tok), Err(JwtError::UnknownKid { kid, .. }) if kid == "kid-2")
        );
        let tok = raw_token(
            r#"{"alg":"ES256","typ":"JWT"}"#,
            &payload("spiffe://example.org/w"),
            |m| f.key.sign_jws(JwsAlgorithm::ES256, m).unwrap(),
        );
        assert!(matches!(validate(&f, &tok), Err(JwtError::MissingKid)));
        let tok = raw_token(
            r#"{"alg":"ES256","kid":"kid-1","crit":["exp"]}"#,
            &payload("spiffe://example.org/w"),
            |m| f.key.sign_jws(JwsAlgorithm::ES256, m).unwrap(),
        );
        assert!(matches!(validate(&f, &tok), Err(JwtError::CriticalHeader)));
    }

    #[test]
    fn rejects_wrong_audience_and_missing_audience() {
        let f = fixture(KeyType::EcP256);
        let mut c = claims("spiffe://example.org/w");
        c.audience = vec!["someone-else".into()];
        let tok = sign_jwt_svid(&f.key, "kid-1", None, &c).unwrap();
        assert!(matches!(
            validate(&f, &tok),
            Err(JwtError::WrongAudience { .. })
        ));
        let tok = raw_token(
            r#"{"alg":"ES256","kid":"kid-1"}"#,
            &format!(r#"{{"sub":"spiffe://example.org/w","exp":{}}}"#, NOW + 300),
            |m| f.key.sign_jws(JwsAlgorithm::ES256, m).unwrap(),
        );
        assert!(matches!(validate(&f, &tok), Err(JwtError::MissingAudience)));
        // A single string audience is accepted.
        let tok = raw_token(
            r#"{"alg":"ES256","kid":"kid-1"}"#,
            &format!(
                r#"{{"sub":"spiffe://example.org/w","aud":"aud-1","exp":{}}}"#,
                NOW + 300
            ),
            |m| f.key.sign_jws(JwsAlgorithm::ES256, m).unwrap(),
        );
        assert!(validate(&f, &tok).is_ok());
        assert!(matches!(
            sign_jwt_svid(
                &f.key,
                "kid-1",
                None,
                &JwtSvidClaims {
                    audience: vec![],
                    ..c
                }
            ),
            Err(JwtError::NoAudience)
        ));
    }

    #[test]
    fn rejects_duplicate_members() {
        let f = fixture(KeyType::EcP256);
        let sign =
            |h: &str, p: &str| raw_token(h, p, |m| f.key.sign_jws(JwsAlgorithm::ES256, m).unwrap());
        let payload = format!(
            r#"{{"sub":"spiffe://example.org/w","aud":["aud-1"],"exp":{}}}"#,
            NOW + 300
        );
        assert!(validate(&f, &sign(r#"{"alg":"ES256","kid":"kid-1"}"#, &payload)).is_ok());
        let twice_sub = format!(
            r#"{{"sub":"spiffe://example.org/w","aud":["aud-1"],"exp":{},"sub":"spiffe://example.org/admin"}}"#,
            NOW + 300
        );
        let e = validate(&f, &sign(r#"{"alg":"ES256","kid":"kid-1"}"#, &twice_sub)).unwrap_err();
        assert!(
            matches!(&e, JwtError::DuplicateMember("payload", n) if n == "sub"),
            "{e:?}"
        );
        let twice_alg = r#"{"alg":"ES256","kid":"kid-1","alg":"none"}"#;
        let e = validate(&f, &sign(twice_alg, &payload)).unwrap_err();
        assert_eq!(e.to_string(), "token header has a duplicate member \"alg\"");
    }

    #[test]
    fn rejects_expired_with_leeway() {
        let f = fixture(KeyType::EcP256);
        let tok = sign_jwt_svid(&f.key, "kid-1", None, &claims("spiffe://example.org/w")).unwrap();
        let at = |s: i64, leeway: u64| {
            validate_jwt_svid(
                &tok,
                &f.bundles,
                "aud-1",
                from_unix_secs(s),
                &JwtValidationOptions {
                    leeway: Duration::from_secs(leeway),
                },
            )
        };
        assert!(at(NOW + 300, 0).is_ok());
        assert!(matches!(at(NOW + 301, 0), Err(JwtError::Expired { .. })));
        assert!(at(NOW + 320, 30).is_ok());
        assert!(matches!(at(NOW + 331, 30), Err(JwtError::Expired { .. })));
        let tok = raw_token(
            r#"{"alg":"ES256","kid":"kid-1"}"#,
            r#"{"sub":"spiffe://example.org/w","aud":["aud-1"]}"#,
            |m| f.key.sign_jws(JwsAlgorithm::ES256, m).unwrap(),
        );
        assert!(matches!(validate(&f, &tok), Err(JwtError::MissingExpiry)));
        let tok = raw_token(
            r#"{"alg":"ES256","kid":"kid-1"}"#,
            &format!(
                r#"{{"sub":"spiffe://example.org/w","aud":["aud-1"],"exp":{},"nbf":{}}}"#,
                NOW + 300,
                NOW + 100
            ),
            |m| f.key.sign_jws(JwsAlgorithm::ES256, m).unwrap(),
        );
        assert!(matches!(validate(&f, &tok), Err(JwtError::NotYetValid(_))));
    }

    #[test]
    fn rejects_tampered_payload_and_signature() {
        let f = fixture(KeyType::EcP256);
        let tok = sign_jwt_svid(&f.key, "kid-1", None, &claims("spiffe://example.org/w")).unwrap();
        let parts: Vec<&str> = tok.split('.').collect();
        let other =
            sign_jwt_svid(&f.key, "kid-1", None, &claims("spiffe://example.org/admin")).unwrap();
        let other_payload = other.split('.').nth(1).unwrap();
        let tampered = format!("{}.{}.{}", parts[0], other_payload, parts[2]);
        assert!(matches!(
            validate(&f, &tampered),
            Err(JwtError::BadSignature(_))
        ));
        let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        sig[10] ^= 0x01;
        let tampered = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
        assert!(matches!(
            validate(&f, &tampered),
            Err(JwtError::BadSignature(_))
        ));
        // Signed by a different key under the same kid.
        let g = fixture(KeyType::EcP256);
        let forged =
            sign_jwt_svid(&g.key, "kid-1", None, &claims("spiffe://example.org/w")).unwrap();
        assert!(matches!(
            validate(&f, &forged),
            Err(JwtError::BadSignature(_))
        ));
    }

    #[test]
    fn rejects_bad_subjects() {
        let f = fixture(KeyType::EcP256);
        let sign = |m: &[u8]| f.key.sign_jws(JwsAlgorithm::ES256, m).unwrap();
        let h = r#"{"alg":"ES256","kid":"kid-1"}"#;
        let tok = raw_token(h, &payload("https://example.org/w"), sign);
        assert!(matches!(
            validate(&f, &tok),
            Err(JwtError::SubjectNotSpiffeId(_))
        ));
        let tok = raw_token(h, &payload("spiffe://Example.org/w"), sign);
        assert!(matches!(
            validate(&f, &tok),
            Err(JwtError::SubjectNotSpiffeId(_))
        ));
        // Another trust domain: its bundle has no such kid, and an unknown one has no bundle.
        let tok = sign_jwt_svid(&f.key, "kid-1", None, &claims("spiffe://other.org/w")).unwrap();
        assert!(matches!(
            validate(&f, &tok),
            Err(JwtError::UnknownKid { .. })
        ));
        let tok = sign_jwt_svid(&f.key, "kid-1", None, &claims("spiffe://third.org/w")).unwrap();
        assert!(matches!(validate(&f, &tok), Err(JwtError::NoBundle(td)) if td == "third.org"));
        let tok = raw_token(
            h,
            &format!(r#"{{"aud":["aud-1"],"exp":{}}}"#, NOW + 300),
            sign,
        );
        assert!(matches!(validate(&f, &tok), Err(JwtError::MissingSubject)));
    }

    #[test]
    fn rejects_malformed_and_oversize() {
        let f = fixture(KeyType::EcP256);
        let tok = sign_jwt_svid(&f.key, "kid-1", None, &claims("spiffe://example.org/w")).unwrap();
        let parts: Vec<&str> = tok.split('.').collect();
        for bad in [
            format!("{}.{}.{}", parts[0], parts[1], "!!!"),
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}*.{}", parts[0], parts[1], parts[2]),
        ] {
            assert!(
                matches!(validate(&f, &bad), Err(JwtError::Base64(_))),
                "{bad}"
            );
        }
        assert!(matches!(validate(&f, "a.b"), Err(JwtError::Malformed)));
        assert!(matches!(
            validate(&f, &format!("{tok}.x")),
            Err(JwtError::Malformed)
        ));
        assert!(matches!(validate(&f, ""), Err(JwtError::Malformed)));
        let not_obj = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode("[1]"),
            parts[1],
            parts[2]
        );
        assert!(matches!(
            validate(&f, &not_obj),
            Err(JwtError::Json("header"))
        ));
        let big = format!("{}.{}.{}", parts[0], "A".repeat(MAX_TOKEN_LEN), parts[2]);
        assert!(matches!(validate(&f, &big), Err(JwtError::TooLarge(_))));
    }

    #[test]
    fn error_debug_and_display_do_not_leak_token() {
        let f = fixture(KeyType::EcP256);
        let tok = sign_jwt_svid(&f.key, "kid-1", None, &claims("spiffe://example.org/w")).unwrap();
        let sig = tok.split('.').nth(2).unwrap();
        let err = validate_jwt_svid(
            &tok,
            &f.bundles,
            "nobody",
            from_unix_secs(NOW),
            &Default::default(),
        )
        .unwrap_err();
        assert!(!err.to_string().contains(sig));
        assert!(!format!("{err:?}").contains(sig));
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,600}") {
            let f = fixture(KeyType::EcP256);
            let _ = validate(&f, &s);
        }

        #[test]
        fn arbitrary_json_parts_never_panic(h in proptest::collection::vec(any::<u8>(), 0..200),
                                            p in proptest::collection::vec(any::<u8>(), 0..200),
                                            s in proptest::collection::vec(any::<u8>(), 0..100)) {
            let f = fixture(KeyType::EcP256);
            let tok = format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(h), URL_SAFE_NO_PAD.encode(p), URL_SAFE_NO_PAD.encode(s));
            let _ = validate(&f, &tok);
        }
    }
}
