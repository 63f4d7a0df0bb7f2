//! Workload attestation: turning the pid of a Workload API caller into selectors.
//!
//! All configured attestors run for each call and their selectors are unioned (SPIRE runs them
//! concurrently; with the single built-in `unix` attestor that is one call). Attestors read
//! `/proc` and may hash files, so they run on the blocking pool with a time limit.

pub mod k8s;
pub mod unix;

use std::sync::Arc;
use std::time::Duration;

use spire_spiffe::Selectors;

pub use unix::{UnixAttestor, UnixAttestorConfig};

/// How long all attestors together may take for one caller.
pub const ATTESTATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a caller could not be attested. The Workload API answers `Unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// A `/proc` file could not be read (the process may have exited).
    #[error("cannot read {path}: {source}")]
    Proc {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A `/proc` file did not have the expected shape.
    #[error("{path} is malformed: {what}")]
    Malformed {
        /// The file.
        path: String,
        /// What was wrong.
        what: &'static str,
    },
    /// The workload binary is larger than `workload_size_limit`.
    #[error("workload {path} exceeds size limit ({size} > {limit})")]
    TooLarge {
        /// The binary.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The attestors did not finish in time.
    #[error("workload attestation did not finish within {0:?}")]
    Timeout(Duration),
    /// An attestor task failed.
    #[error("workload attestor task failed: {0}")]
    Task(String),
}

/// One workload attestor.
pub trait WorkloadAttestor: Send + Sync + 'static {
    /// The plugin name (`unix`).
    fn name(&self) -> &'static str;
    /// The selectors of process `pid`. Blocking: called on the blocking pool.
    fn attest(&self, pid: i32) -> Result<Selectors, AttestError>;
}

/// The configured workload attestors.
#[derive(Clone)]
pub struct Attestors {
    attestors: Vec<Arc<dyn WorkloadAttestor>>,
    timeout: Duration,
}

impl std::fmt::Debug for Attestors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attestors")
            .field(
                "attestors",
                &self.attestors.iter().map(|a| a.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Attestors {
    /// The given attestors.
    pub fn new(attestors: Vec<Arc<dyn WorkloadAttestor>>) -> Self {
        Self {
            attestors,
            timeout: ATTESTATION_TIMEOUT,
        }
    }

    /// Runs every attestor for `pid` and unions their selectors.
    pub async fn attest(&self, pid: i32) -> Result<Selectors, AttestError> {
        let attestors = self.attestors.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut all = Selectors::new();
            for a in &attestors {
                all.extend(a.attest(pid)?);
            }
            Ok(all)
        });
        match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => Err(AttestError::Task(e.to_string())),
            Err(_) => Err(AttestError::Timeout(self.timeout)),
        }
    }
}
