//! End-to-end tests with the real `spire-server` / `spire-agent` binaries. Modules are named
//! after SPIRE test/integration suites; issue 12's adversarial and fault-injection suite is:
//! - `adversarial_authz`: impersonation (expired, foreign, forged agent SVIDs; agent-class
//!   callers of admin and downstream RPCs; reserved IDs; greedy CSRs);
//! - `adversarial_protocol`: malformed CSRs, oversized messages, garbage and stalled TCP
//!   connections, huge selectors, a 10,000-entry batch;
//! - `adversarial_jwt`: forged JWTs through the agent's ValidateJWTSVID;
//! - `adversarial_workload`: callers gone before attestation, many streams from one caller;
//! - `survival`: kill -9 loops, a read-only data_dir, the agent's socket directory removed;
//! - `soak`: churn for `SPIRE_SOAK_SECS` (default 100 s; the one-hour run is documented there).
//! - `operations` (issue 8): JSON log files, SIGUSR2 rotation, startup lines, healthcheck
//!   flags, graceful SIGTERM, agent readiness following its syncs.
//!
//! Each module's header lists the issue-12 cases covered by other crates' tests instead.
//! Run with `cargo build --workspace --bins && cargo test -p spire-e2e` (`scripts/test.sh`).

// Test helpers outside #[test] functions unwrap freely too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod adversarial_authz;
mod adversarial_jwt;
mod adversarial_protocol;
mod adversarial_workload;
mod common;
mod operations;
mod soak;
mod survival;
