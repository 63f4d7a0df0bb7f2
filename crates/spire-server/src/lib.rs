//! The SPIRE server: signing authorities, datastore-backed registration, the server APIs on
//! the local socket (and, mounted by the agent-facing listener, over mTLS), and the
//! `spire-server` command line.
//!
//! Invariants: every RPC authorizes its caller explicitly ([`api::authorize`]) and maps its
//! errors to `tonic::Status` in one place per API module; all expiry and rotation decisions go
//! through the [`spire_spiffe::Clock`] held by [`server::ServerState`]; private keys stay in the
//! KeyManager or in memory and never appear in logs.

pub mod api;
pub mod authorized_entries;
pub mod authz;
pub mod ca;
pub mod cli;
pub mod csr;
pub mod endpoints;
pub mod federation;
pub mod housekeeping;
pub mod node_attestor;
pub mod notifier;
pub mod pb;
pub mod plugin;
pub mod server;

pub use server::{ServerError, ServerState};
