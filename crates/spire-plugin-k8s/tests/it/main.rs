//! Integration tests of the Kubernetes plugins against a fake API server and kubelet over
//! real HTTPS (see `fake.rs`), with workload processes placed in real cgroups when the
//! machine allows it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bundle;
mod deploy;
mod e2e;
mod fake;
mod psat;
mod workload;
