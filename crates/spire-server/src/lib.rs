//! SPIRE server: CA, datastore, APIs, node attestation, CLI
