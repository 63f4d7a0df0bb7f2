//! Server-side node attestors (`join_token`, `x509pop`, …).
//!
//! Owned by the agent-facing work: AttestAgent (`crate::api::agent::attest`) plugs the
//! attestors in here.
