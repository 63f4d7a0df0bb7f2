//! End-to-end tests of the `oidc-discovery-provider` binary against a real `spire-server`.

// Test helpers outside #[test] functions unwrap freely too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod operations;
mod server_api;
mod tls;
