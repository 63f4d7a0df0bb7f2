//! Integration tests of spire-server.

// Test helpers outside #[test] functions unwrap freely too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_protocol;
mod common;
mod federation;
mod ha;
mod local_api;
mod nested;
