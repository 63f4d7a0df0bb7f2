//! The SPIRE agent: proves its node to the server, keeps the identities of the workloads on the
//! node in sync, and serves them over the SPIFFE Workload API.
//!
//! Invariants: the agent never hands a workload an identity whose entry selectors are not a
//! subset of the selectors the workload attestors produced for that caller; the Workload API
//! reads identities only through [`identity::IdentitySnapshot`], which the manager publishes
//! whole (a reader never sees half an update); the agent never depends on `spire-server`.

pub mod agent;
pub mod attestor;
pub mod cli;
pub mod client;
pub mod endpoints;
pub mod identity;
pub mod manager;
pub mod peertracker;
pub mod storage;
