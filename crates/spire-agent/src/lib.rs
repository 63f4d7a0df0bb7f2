//! SPIRE agent: node attestation, cache, Workload API, CLI
