//! End-to-end tests. Modules are named after SPIRE test/integration suites; the
//! `adversarial_*`, `survival` and `soak` modules are issue 12's suite (what must be refused and
//! what must be survived), each case stating the exact expected refusal.

// Test helpers outside #[test] functions unwrap freely too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod adversarial_authz;
mod adversarial_jwt;
mod adversarial_protocol;
mod adversarial_workload;
mod common;
mod soak;
mod survival;
