//! `join_token`: the payload is the token itself; the server answers without a challenge.

use std::fmt;

use spire_config::AgentConfig;
use zeroize::Zeroizing;

use super::{NodeAttestor, NodeAttestorError};

/// The agent side of `join_token`.
pub struct JoinTokenAttestor {
    token: Zeroizing<String>,
}

impl JoinTokenAttestor {
    /// An attestor presenting `token`.
    pub fn new(token: String) -> Self {
        JoinTokenAttestor {
            token: Zeroizing::new(token),
        }
    }
}

impl fmt::Debug for JoinTokenAttestor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinTokenAttestor").finish_non_exhaustive()
    }
}

impl NodeAttestor for JoinTokenAttestor {
    fn attestation_type(&self) -> &str {
        "join_token"
    }

    fn payload(&self) -> Result<Vec<u8>, NodeAttestorError> {
        Ok(self.token.as_bytes().to_vec())
    }

    fn respond(&self, _challenge: &[u8]) -> Result<Vec<u8>, NodeAttestorError> {
        Err(NodeAttestorError::Challenge {
            name: "join_token".into(),
            reason: "join_token attestation has no challenge".into(),
        })
    }
}

/// The join token from `join_token` (or `-joinToken`) or `join_token_file`, trimmed.
pub fn token_from_config(config: &AgentConfig) -> Result<Option<String>, NodeAttestorError> {
    if let Some(t) = &config.join_token {
        let t = t.expose().trim();
        if !t.is_empty() {
            return Ok(Some(t.to_owned()));
        }
    }
    if let Some(path) = &config.join_token_file {
        let text = std::fs::read_to_string(path).map_err(|e| NodeAttestorError::Config {
            name: "join_token".into(),
            reason: format!("cannot read join_token_file {}: {e}", path.display()),
        })?;
        let t = text.trim();
        if t.is_empty() {
            return Err(NodeAttestorError::Config {
                name: "join_token".into(),
                reason: format!("join_token_file {} is empty", path.display()),
            });
        }
        return Ok(Some(t.to_owned()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_the_token_and_debug_hides_it() {
        let a = JoinTokenAttestor::new("s3cret-token".into());
        assert_eq!(a.attestation_type(), "join_token");
        assert_eq!(a.payload().unwrap(), b"s3cret-token");
        assert!(!format!("{a:?}").contains("s3cret"));
        assert!(a.respond(b"x").is_err());
    }
}
