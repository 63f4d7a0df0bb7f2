//! The JWKS document served on `/keys`, built from JWT authorities (key id + SPKI DER).

use serde_json::{Map, Value, json};
use spire_spiffe::{EcCurve, JwtAuthority, PublicKey};

/// The JWS algorithm a JWT-SVID signed with `key` uses.
fn algorithm(key: &PublicKey) -> &'static str {
    match key {
        PublicKey::Ec {
            curve: EcCurve::P256,
            ..
        } => "ES256",
        PublicKey::Ec {
            curve: EcCurve::P384,
            ..
        } => "ES384",
        PublicKey::Ec {
            curve: EcCurve::P521,
            ..
        } => "ES512",
        PublicKey::Rsa { .. } => "RS256",
        PublicKey::Ed25519 { .. } => "EdDSA",
    }
}

/// The JWKS (`{"keys": [...]}`) for `authorities`, each key with `kid` and `alg`, and
/// `"use": "sig"` when `set_key_use`. Keys that cannot be parsed are left out and logged.
pub fn jwks_document(authorities: &[JwtAuthority], set_key_use: bool) -> Value {
    let mut keys = Vec::with_capacity(authorities.len());
    for authority in authorities {
        let key = match PublicKey::from_spki_der(&authority.public_key) {
            Ok(k) => k,
            Err(error) => {
                tracing::error!(kid = %authority.key_id, %error, "Failed to parse JWT authority public key");
                continue;
            }
        };
        let members = key.to_jwk();
        let mut jwk = Map::new();
        jwk.insert("kty".into(), json!(members.kty));
        jwk.insert("kid".into(), json!(authority.key_id));
        for (name, value) in [
            ("crv", members.crv),
            ("x", members.x),
            ("y", members.y),
            ("n", members.n),
            ("e", members.e),
        ] {
            if let Some(v) = value {
                jwk.insert(name.into(), json!(v));
            }
        }
        jwk.insert("alg".into(), json!(algorithm(&key)));
        if set_key_use {
            jwk.insert("use".into(), json!("sig"));
        }
        keys.push(Value::Object(jwk));
    }
    json!({ "keys": keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ec_authority(kid: &str, curve: EcCurve) -> JwtAuthority {
        let len = curve.coordinate_len();
        let key = PublicKey::Ec {
            curve,
            x: vec![1; len],
            y: vec![2; len],
        };
        JwtAuthority {
            key_id: kid.to_owned(),
            public_key: key.to_spki_der(),
            expires_at: None,
        }
    }

    #[test]
    fn keys_carry_kid_alg_and_optional_use() {
        let auths = [
            ec_authority("k1", EcCurve::P256),
            ec_authority("k2", EcCurve::P384),
            JwtAuthority {
                key_id: "bad".to_owned(),
                public_key: vec![0x30, 0x00],
                expires_at: None,
            },
        ];
        let doc = jwks_document(&auths, false);
        let keys = doc["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2, "the unparsable key is left out");
        assert_eq!(keys[0]["kid"], "k1");
        assert_eq!(keys[0]["alg"], "ES256");
        assert_eq!(keys[0]["crv"], "P-256");
        assert_eq!(keys[1]["alg"], "ES384");
        assert!(keys[0].get("use").is_none());
        let doc = jwks_document(&auths[..1], true);
        assert_eq!(doc["keys"][0]["use"], "sig");
    }
}
