//! The CA journal: which X.509 CA and JWT key sit in which slot, in which state, persisted
//! through the datastore so a restart resumes with the same authorities (their private keys stay
//! in the KeyManager).
//!
//! Mirrors `pkg/server/ca/manager/journal.go` (the encoding is our own JSON).

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The journal of one server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// X.509 CA slots.
    #[serde(default)]
    pub x509: Vec<X509Record>,
    /// JWT key slots.
    #[serde(default)]
    pub jwt: Vec<JwtRecord>,
}

/// One X.509 CA slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct X509Record {
    /// `A` or `B`.
    pub slot: String,
    /// `prepared`, `active` or `old`.
    pub status: String,
    /// The CA certificate, base64 DER.
    pub cert: String,
    /// Upstream chain after the CA certificate (base64 DER each).
    #[serde(default)]
    pub chain: Vec<String>,
    /// Subject key ID (hex) of the upstream authority that signed the CA, if any.
    #[serde(default)]
    pub upstream_authority_id: String,
}

/// One JWT key slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtRecord {
    /// `A` or `B`.
    pub slot: String,
    /// `prepared`, `active` or `old`.
    pub status: String,
    /// The key ID (`kid`).
    pub kid: String,
    /// PKIX public key, base64 DER.
    pub public_key: String,
    /// Unix seconds.
    pub not_after: i64,
    /// Unix seconds.
    pub issued_at: i64,
}

impl Journal {
    /// Encodes the journal for storage.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a stored journal.
    pub fn decode(data: &[u8]) -> Result<Journal, serde_json::Error> {
        serde_json::from_slice(data)
    }
}

/// Base64 of DER bytes, as stored in the journal.
pub(crate) fn b64(der: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(der)
}

/// DER bytes from the journal's base64.
pub(crate) fn unb64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let j = Journal {
            x509: vec![X509Record {
                slot: "A".into(),
                status: "active".into(),
                cert: b64(b"der"),
                chain: vec![],
                upstream_authority_id: String::new(),
            }],
            jwt: vec![JwtRecord {
                slot: "B".into(),
                status: "prepared".into(),
                kid: "k".into(),
                public_key: b64(b"pk"),
                not_after: 5,
                issued_at: 1,
            }],
        };
        assert_eq!(Journal::decode(&j.encode()).unwrap(), j);
        assert_eq!(unb64(&j.x509[0].cert).unwrap(), b"der");
    }
}
