//! Integration tests of the `spire-agent` binary against the real `spire-server` binary.

mod agent_cache;
mod common;
mod delegated;
mod manager_e2e;
mod sds;
mod workload_e2e;
