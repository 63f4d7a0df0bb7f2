//! JWT-SVID minting with a JWT authority's signer (header `alg`, `kid`, `typ: JWT`; claims
//! `sub`, `aud` as an array, `exp`, `iat`, optional `iss` and `jti`).

use base64::Engine as _;
use serde_json::json;
use spire_crypto::{JwsAlgorithm, Signer};
use spire_spiffe::SpiffeId;

/// What goes into one JWT-SVID.
#[derive(Debug, Clone)]
pub struct JwtClaims<'a> {
    /// `sub`.
    pub subject: &'a SpiffeId,
    /// `aud` (at least one).
    pub audience: &'a [String],
    /// `iat` (Unix seconds).
    pub issued_at: i64,
    /// `exp` (Unix seconds).
    pub expires_at: i64,
    /// `iss`, when `jwt_issuer` is configured.
    pub issuer: Option<&'a str>,
    /// `jti`, when the entry asks for one.
    pub jti: Option<String>,
}

/// Signs `claims` with `signer` under key ID `kid`.
pub fn sign(
    signer: &dyn Signer,
    kid: &str,
    claims: &JwtClaims<'_>,
) -> Result<String, spire_crypto::KeyError> {
    let alg: JwsAlgorithm = signer.public_key().key_type().default_jws_algorithm();
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = json!({"alg": alg.as_str(), "kid": kid, "typ": "JWT"});
    let mut body = serde_json::Map::new();
    body.insert("aud".into(), json!(claims.audience));
    body.insert("exp".into(), json!(claims.expires_at));
    body.insert("iat".into(), json!(claims.issued_at));
    if let Some(iss) = claims.issuer {
        body.insert("iss".into(), json!(iss));
    }
    if let Some(jti) = &claims.jti {
        body.insert("jti".into(), json!(jti));
    }
    body.insert("sub".into(), json!(claims.subject.as_str()));
    let signing_input = format!(
        "{}.{}",
        url.encode(header.to_string()),
        url.encode(serde_json::Value::Object(body).to_string())
    );
    let sig = signer.sign_jws(alg, signing_input.as_bytes())?;
    Ok(format!("{signing_input}.{}", url.encode(sig)))
}
