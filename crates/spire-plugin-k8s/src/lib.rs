//! Kubernetes plugins of spire-rs, as plain Rust that spire-server and spire-agent wrap in
//! their own plugin traits: the `k8s_psat` node attestor (agent and server halves,
//! [`psat`]), the `k8s` workload attestor ([`workload`]), the `k8sbundle` notifier
//! ([`bundle`]), cgroup container location ([`cgroup`]) and the small HTTPS client for the
//! API server and the kubelet ([`client`]) they share.
//!
//! Invariants: tokens and keys never appear in `Debug` output or logs; TLS uses rustls with
//! the aws-lc-rs provider only; every request has a timeout; bad input (payloads, cgroup
//! files, API answers) yields errors, never panics. The crate depends on neither
//! spire-server nor spire-agent.

pub mod api;
pub mod bundle;
pub mod cgroup;
pub mod client;
pub mod psat;
pub mod workload;

pub use bundle::{K8sBundleConfig, K8sBundleNotifier, NotifierError};
pub use psat::{
    FailureKind, PsatAgent, PsatAgentConfig, PsatAttested, PsatError, PsatServer, PsatServerConfig,
};
pub use workload::{K8sWorkloadAttestor, K8sWorkloadConfig, WorkloadError};
