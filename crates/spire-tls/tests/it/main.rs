//! Integration tests: a tonic server over `TlsIncoming`, clients over `connect`, certificates
//! generated here with rcgen.

// Test helpers outside #[test] functions unwrap freely too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod handshake;
mod svid_rules;
