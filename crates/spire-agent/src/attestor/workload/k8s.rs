//! Workload attestor `k8s`: wraps [`spire_plugin_k8s::K8sWorkloadAttestor`] (cgroup →
//! container → kubelet pod list → `k8s:` selectors). A process outside any pod gets no
//! selectors from it.

use spire_plugin_k8s::{K8sWorkloadAttestor, K8sWorkloadConfig, WorkloadError};
use spire_spiffe::Selectors;

use super::{AttestError, WorkloadAttestor};

/// The `k8s` attestor.
#[derive(Debug)]
pub struct K8sAttestor(K8sWorkloadAttestor);

impl K8sAttestor {
    /// Builds the attestor (reads the kubelet CA; fails on a bad configuration).
    pub fn new(config: K8sWorkloadConfig) -> Result<Self, WorkloadError> {
        K8sWorkloadAttestor::new(config).map(Self)
    }
}

impl WorkloadAttestor for K8sAttestor {
    fn name(&self) -> &'static str {
        spire_plugin_k8s::workload::NAME
    }

    fn attest(&self, pid: i32) -> Result<Selectors, AttestError> {
        self.0.attest_blocking(pid).map_err(|e| match e {
            WorkloadError::Proc { source, .. } => AttestError::Proc {
                path: format!("/proc/{pid}/cgroup"),
                source,
            },
            other => AttestError::Task(other.to_string()),
        })
    }
}
