//! Attestors: node attestation (the agent proving its node to the server) and workload
//! attestation (the agent learning who calls the Workload API).

pub mod node;
pub mod workload;
