//! Fuzz the `join_token` attestation payload: the agent's bytes, as the server reads them
//! (UTF-8, then `node_attestor::join_token::agent_id`).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use spire_server::node_attestor::join_token::{MAX_TOKEN_LEN, agent_id};
use spire_spiffe::{SpiffeId, TrustDomain};

fn td() -> &'static TrustDomain {
    static TD: OnceLock<TrustDomain> = OnceLock::new();
    TD.get_or_init(|| "example.org".parse().expect("a valid trust domain"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(id) = agent_id(td(), token) else {
        return;
    };
    // Accepted: a non-empty token of the allowed alphabet, within the limit, that becomes the
    // last path segment of the agent ID, and the ID parses back unchanged.
    assert!(!token.is_empty() && token.len() <= MAX_TOKEN_LEN);
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    );
    assert_eq!(id.path(), format!("/spire/agent/join_token/{token}"));
    assert_eq!(id.trust_domain(), td());
    let again: SpiffeId = id.as_str().parse().expect("an issued agent ID parses");
    assert_eq!(again, id);
});
