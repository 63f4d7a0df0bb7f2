//! `join_token`: a one-time token created by `spire-server token generate` (or
//! `Agent.CreateJoinToken`). The token is consumed in the transaction that stores the attested
//! node, so it can be used once; the agent ID is `spiffe://<td>/spire/agent/join_token/<token>`
//! and the agent cannot re-attest. There are no node selectors.
//!
//! Mirrors `pkg/server/api/agent/v1` (`attestJoinToken`).

use spire_spiffe::{SpiffeId, TrustDomain};

/// The attestation type.
pub const NAME: &str = "join_token";

/// Longest token accepted.
pub const MAX_TOKEN_LEN: usize = 512;

/// Checks the token's shape (never echoes it) and returns the agent ID it attests.
pub fn agent_id(td: &TrustDomain, token: &str) -> Result<SpiffeId, String> {
    if token.is_empty() {
        return Err("missing join token".into());
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(format!("join token is longer than {MAX_TOKEN_LEN} bytes"));
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    {
        return Err("join token may only contain letters, digits and \"-._~\"".into());
    }
    td.spiffe_id(&format!("/spire/agent/join_token/{token}"))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids() {
        let td: TrustDomain = "example.org".parse().unwrap();
        assert_eq!(
            agent_id(&td, "abc-123").unwrap().as_str(),
            "spiffe://example.org/spire/agent/join_token/abc-123"
        );
        assert!(agent_id(&td, "").is_err());
        assert!(agent_id(&td, "a/b").is_err());
        assert!(agent_id(&td, &"a".repeat(513)).is_err());
    }
}
