//! Workload attestation: turning the pid of a Workload API caller into selectors.
//!
//! All configured attestors run for each call and their selectors are unioned (SPIRE runs them
//! concurrently; with the single built-in `unix` attestor that is one call). Attestors read
//! `/proc` and may hash files, so they run on the blocking pool with a time limit — unless every
//! configured attestor is quick (only small `/proc` and local files: the `unix` attestor without
//! binary hashing), then on the calling task, sparing two thread hand-overs per call.

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
    /// The selectors of process `pid`. Blocking: called on the blocking pool, unless
    /// [`Self::is_quick`].
    fn attest(&self, pid: i32) -> Result<Selectors, AttestError>;
    /// True when `attest` only reads a few small `/proc` files and local account files: cheap
    /// enough to run on the calling task, which saves the two thread hand-overs of the
    /// blocking pool per Workload API call. Default false.
    fn is_quick(&self) -> bool {
        false
    }
}

/// Runs every attestor for `pid` in turn and unions their selectors.
fn attest_all(attestors: &[Arc<dyn WorkloadAttestor>], pid: i32) -> Result<Selectors, AttestError> {
    let mut all = Selectors::new();
    for a in attestors {
        all.extend(a.attest(pid)?);
    }
    Ok(all)
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

    /// Runs every attestor for `pid` and unions their selectors: on the calling task when
    /// every attestor is quick, else on the blocking pool with a time limit.
    pub async fn attest(&self, pid: i32) -> Result<Selectors, AttestError> {
        if self.attestors.iter().all(|a| a.is_quick()) {
            return attest_all(&self.attestors, pid);
        }
        let attestors = self.attestors.clone();
        let task = tokio::task::spawn_blocking(move || attest_all(&attestors, pid));
        match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => Err(AttestError::Task(e.to_string())),
            Err(_) => Err(AttestError::Timeout(self.timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::thread::ThreadId;

    use super::*;

    /// Records the thread it ran on.
    struct Probe {
        quick: bool,
        ran_on: Mutex<Option<ThreadId>>,
    }

    impl WorkloadAttestor for Probe {
        fn name(&self) -> &'static str {
            "probe"
        }
        fn attest(&self, _pid: i32) -> Result<Selectors, AttestError> {
            *self.ran_on.lock().unwrap() = Some(std::thread::current().id());
            Ok(Selectors::new())
        }
        fn is_quick(&self) -> bool {
            self.quick
        }
    }

    #[tokio::test]
    async fn quick_attestors_run_on_the_calling_task_others_on_the_blocking_pool() {
        let here = std::thread::current().id();
        let quick = Arc::new(Probe {
            quick: true,
            ran_on: Mutex::new(None),
        });
        let slow = Arc::new(Probe {
            quick: false,
            ran_on: Mutex::new(None),
        });
        Attestors::new(vec![quick.clone()]).attest(1).await.unwrap();
        assert_eq!(*quick.ran_on.lock().unwrap(), Some(here));
        // One attestor that is not quick sends them all to the blocking pool.
        Attestors::new(vec![quick.clone(), slow.clone()])
            .attest(1)
            .await
            .unwrap();
        assert_ne!(*quick.ran_on.lock().unwrap(), Some(here));
        assert_ne!(*slow.ran_on.lock().unwrap(), Some(here));
    }
}
