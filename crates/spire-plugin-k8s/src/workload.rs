//! The `k8s` workload attestor: PID → container (from its cgroups) → pod (from the kubelet's
//! `/pods`) → `k8s:` selectors.
//!
//! The kubelet's pod list is fetched at most once per half poll interval (concurrent misses
//! share one fetch) and indexed by container ID and pod UID when it is fetched, so an
//! attestation is a hash lookup, not a walk over (or a re-parse of) a 250-pod list. A
//! container that is not in the list yet (still starting) is retried every
//! `poll_retry_interval` up to `max_poll_attempts` times, as SPIRE does. A process whose
//! cgroups name no pod container gets no selectors.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use spire_spiffe::{Selector, Selectors};
use tokio::time::Instant;

use crate::api::{ContainerStatus, Pod, PodList};
use crate::cgroup::{self, ContainerRef};
use crate::client::{
    BearerToken, ClientError, ClientIdentity, Endpoint, IN_CLUSTER_CA_PATH, IN_CLUSTER_TOKEN_PATH,
    KubeClient, ServerTrust, parse_certs,
};

/// The plugin name and selector type.
pub const NAME: &str = "k8s";
/// Default secure kubelet port.
pub const DEFAULT_SECURE_PORT: u16 = 10250;
/// Default number of polls for a starting container.
pub const DEFAULT_MAX_POLL_ATTEMPTS: u32 = 60;
/// Default pause between polls.
pub const DEFAULT_POLL_RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// Default environment variable holding the node name.
pub const DEFAULT_NODE_NAME_ENV: &str = "MY_NODE_NAME";

/// `plugin_data` of `WorkloadAttestor "k8s"` (SPIRE's keys; the sigstore `experimental`
/// block is not supported).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct K8sWorkloadConfig {
    /// The kubelet's read-only (plain HTTP) port; exclusive with `kubelet_secure_port`.
    pub kubelet_read_only_port: Option<u16>,
    /// The kubelet's secure port (default 10250).
    pub kubelet_secure_port: Option<u16>,
    /// Polls for a container not yet in the pod list (default 60).
    pub max_poll_attempts: Option<u32>,
    /// Pause between polls, Go duration syntax (default `500ms`).
    pub poll_retry_interval: Option<String>,
    /// CA of the kubelet's serving certificate (default: the service-account `ca.crt`).
    pub kubelet_ca_path: Option<PathBuf>,
    /// Do not verify the kubelet's certificate.
    pub skip_kubelet_verification: bool,
    /// Bearer token for the secure port (default: the service-account token).
    pub token_path: Option<PathBuf>,
    /// Client certificate for the secure port (with `private_key_path`).
    pub certificate_path: Option<PathBuf>,
    /// Client key for the secure port (with `certificate_path`).
    pub private_key_path: Option<PathBuf>,
    /// Talk to the secure port without credentials.
    pub use_anonymous_authentication: bool,
    /// Environment variable with the node name (default `MY_NODE_NAME`).
    pub node_name_env: Option<String>,
    /// The node name; the kubelet is reached at this host name and its certificate must
    /// name it. Without one, 127.0.0.1 is used and only the certificate chain is checked.
    pub node_name: Option<String>,
    /// How often credentials are reloaded (accepted for compatibility: the token is read for
    /// every pod-list fetch).
    pub reload_interval: Option<String>,
    /// Only pod selectors; a pod whose container is not ready yet still attests.
    pub disable_container_selectors: bool,
    /// Accepted for compatibility (the cgroup locator is always used).
    pub use_new_container_locator: Option<bool>,
    /// Accepted for compatibility.
    pub verbose_container_locator_logs: bool,
}

/// Why the `k8s` attestor failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// Bad configuration.
    #[error("k8s: invalid configuration: {0}")]
    Config(String),
    /// `/proc/<pid>/cgroup` could not be read.
    #[error("k8s: cannot read cgroups of pid {pid}: {source}")]
    Proc {
        /// The pid.
        pid: i32,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The kubelet could not be asked.
    #[error("k8s: unable to get pod list from kubelet: {0}")]
    Kubelet(#[source] ClientError),
    /// The container did not show up in the pod list.
    #[error(
        "k8s: no selectors found after max poll attempts: container {container_id} of pod {pod_uid} not in the kubelet pod list after {attempts} attempts"
    )]
    NotFound {
        /// The container ID.
        container_id: String,
        /// The pod UID.
        pod_uid: String,
        /// Polls made.
        attempts: u32,
    },
    /// Two pods claim the container.
    #[error("k8s: two pods found with same container Id {0}")]
    Ambiguous(String),
    /// No async runtime to run the kubelet request on.
    #[error("k8s: {0}")]
    Runtime(String),
}

/// The pod list, indexed.
#[derive(Debug, Default)]
struct PodIndex {
    pods: Vec<Pod>,
    /// container ID → (pod index, init container?, status index); `None` when ambiguous.
    by_container: HashMap<String, Option<(usize, bool, usize)>>,
    by_uid: HashMap<String, usize>,
}

impl PodIndex {
    fn build(list: PodList) -> Self {
        let mut by_container: HashMap<String, Option<(usize, bool, usize)>> = HashMap::new();
        let mut by_uid = HashMap::new();
        for (pi, pod) in list.items.iter().enumerate() {
            if !pod.metadata.uid.is_empty() {
                by_uid.insert(pod.metadata.uid.clone(), pi);
            }
            let all = pod
                .status
                .container_statuses
                .iter()
                .enumerate()
                .map(|(i, s)| (false, i, s))
                .chain(
                    pod.status
                        .init_container_statuses
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (true, i, s)),
                );
            for (init, si, status) in all {
                if let Some(id) = status.bare_id() {
                    by_container
                        .entry(id.to_owned())
                        .and_modify(|e| *e = None)
                        .or_insert(Some((pi, init, si)));
                }
            }
        }
        Self {
            pods: list.items,
            by_container,
            by_uid,
        }
    }

    fn container(&self, id: &str) -> Result<Option<(&Pod, &ContainerStatus)>, WorkloadError> {
        match self.by_container.get(id) {
            None => Ok(None),
            Some(None) => Err(WorkloadError::Ambiguous(id.to_owned())),
            Some(Some((pi, init, si))) => {
                let pod = &self.pods[*pi];
                let statuses = if *init {
                    &pod.status.init_container_statuses
                } else {
                    &pod.status.container_statuses
                };
                Ok(statuses.get(*si).map(|s| (pod, s)))
            }
        }
    }
}

fn image_identifiers<'a>(
    statuses: impl IntoIterator<Item = &'a ContainerStatus>,
) -> BTreeSet<&'a str> {
    statuses
        .into_iter()
        .flat_map(|s| [s.image.as_str(), s.image_id.as_str()])
        .collect()
}

/// The pod-level selector values of `pod` (without the `k8s:` type).
pub fn pod_selector_values(pod: &Pod) -> Vec<String> {
    let mut out = vec![
        format!("sa:{}", pod.spec.service_account_name),
        format!("ns:{}", pod.metadata.namespace),
        format!("node-name:{}", pod.spec.node_name),
        format!("pod-uid:{}", pod.metadata.uid),
        format!("pod-name:{}", pod.metadata.name),
        format!("pod-image-count:{}", pod.status.container_statuses.len()),
        format!(
            "pod-init-image-count:{}",
            pod.status.init_container_statuses.len()
        ),
    ];
    for image in image_identifiers(&pod.status.container_statuses) {
        out.push(format!("pod-image:{image}"));
    }
    for image in image_identifiers(&pod.status.init_container_statuses) {
        out.push(format!("pod-init-image:{image}"));
    }
    for (k, v) in &pod.metadata.labels {
        out.push(format!("pod-label:{k}:{v}"));
    }
    for o in &pod.metadata.owner_references {
        out.push(format!("pod-owner:{}:{}", o.kind, o.name));
        out.push(format!("pod-owner-uid:{}:{}", o.kind, o.uid));
    }
    out
}

/// The container-level selector values of the workload's container.
pub fn container_selector_values(status: &ContainerStatus) -> Vec<String> {
    let mut out = vec![format!("container-name:{}", status.name)];
    for image in image_identifiers([status]) {
        out.push(format!("container-image:{image}"));
    }
    out
}

fn to_selectors(values: Vec<String>) -> Selectors {
    values
        .into_iter()
        .filter_map(|v| Selector::new(NAME, v).ok())
        .collect()
}

/// The `k8s` workload attestor.
#[derive(Debug)]
pub struct K8sWorkloadAttestor {
    client: KubeClient,
    proc_root: PathBuf,
    max_poll_attempts: u32,
    poll_retry_interval: Duration,
    disable_container_selectors: bool,
    cache: Mutex<Option<(Instant, Arc<PodIndex>)>>,
    fetch: tokio::sync::Mutex<()>,
}

fn parse_duration(key: &str, value: Option<&String>) -> Result<Option<Duration>, WorkloadError> {
    match value.map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => humantime::parse_duration(s)
            .map(Some)
            .map_err(|e| WorkloadError::Config(format!("{key} {s:?} is not a duration: {e}"))),
    }
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, WorkloadError> {
    std::fs::read(path)
        .map_err(|e| WorkloadError::Config(format!("cannot read {}: {e}", path.display())))
}

impl K8sWorkloadAttestor {
    /// Builds the attestor; `/proc` is read for cgroups.
    pub fn new(config: K8sWorkloadConfig) -> Result<Self, WorkloadError> {
        Self::with_proc_root(config, "/proc".into())
    }

    /// Builds the attestor reading cgroups under `proc_root` instead of `/proc`.
    pub fn with_proc_root(
        config: K8sWorkloadConfig,
        proc_root: PathBuf,
    ) -> Result<Self, WorkloadError> {
        let poll_retry_interval =
            parse_duration("poll_retry_interval", config.poll_retry_interval.as_ref())?
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_POLL_RETRY_INTERVAL);
        parse_duration("reload_interval", config.reload_interval.as_ref())?;
        let read_only = config.kubelet_read_only_port.filter(|p| *p > 0);
        let secure = config.kubelet_secure_port.filter(|p| *p > 0);
        if read_only.is_some() && secure.is_some() {
            return Err(WorkloadError::Config(
                "cannot use both the read-only and secure port: set kubelet_read_only_port or kubelet_secure_port".into(),
            ));
        }
        let node_name = config
            .node_name
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| {
                let env = config
                    .node_name_env
                    .clone()
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| DEFAULT_NODE_NAME_ENV.into());
                std::env::var(env).ok().filter(|n| !n.is_empty())
            });
        let endpoint = match read_only {
            Some(port) => Endpoint {
                base_url: format!("http://127.0.0.1:{port}"),
                trust: ServerTrust::Insecure,
                identity: None,
                token: BearerToken::None,
            },
            None => {
                let port = secure.unwrap_or(DEFAULT_SECURE_PORT);
                let trust = if config.skip_kubelet_verification {
                    ServerTrust::Insecure
                } else {
                    let ca_path = config
                        .kubelet_ca_path
                        .clone()
                        .unwrap_or_else(|| IN_CLUSTER_CA_PATH.into());
                    let certs = parse_certs(&read_file(&ca_path)?, "kubelet_ca_path")
                        .map_err(|e| WorkloadError::Config(e.to_string()))?;
                    if node_name.is_some() {
                        ServerTrust::Roots(certs)
                    } else {
                        ServerTrust::RootsAnyName(certs)
                    }
                };
                let (identity, token) = match (
                    config.use_anonymous_authentication,
                    &config.certificate_path,
                    &config.private_key_path,
                ) {
                    (true, _, _) => (None, BearerToken::None),
                    (false, Some(c), Some(k)) => (
                        Some(
                            ClientIdentity::from_pem(&read_file(c)?, &read_file(k)?)
                                .map_err(|e| WorkloadError::Config(e.to_string()))?,
                        ),
                        BearerToken::None,
                    ),
                    (false, Some(_), None) => {
                        return Err(WorkloadError::Config(
                            "the private key path is required with the certificate path".into(),
                        ));
                    }
                    (false, None, Some(_)) => {
                        return Err(WorkloadError::Config(
                            "the certificate path is required with the private key path".into(),
                        ));
                    }
                    (false, None, None) => (
                        None,
                        BearerToken::File(
                            config
                                .token_path
                                .clone()
                                .unwrap_or_else(|| IN_CLUSTER_TOKEN_PATH.into()),
                        ),
                    ),
                };
                let host = node_name.clone().unwrap_or_else(|| "127.0.0.1".into());
                Endpoint {
                    base_url: format!("https://{host}:{port}"),
                    trust,
                    identity,
                    token,
                }
            }
        };
        let client = KubeClient::new(endpoint).map_err(|e| WorkloadError::Config(e.to_string()))?;
        Ok(Self {
            client,
            proc_root,
            max_poll_attempts: config
                .max_poll_attempts
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_MAX_POLL_ATTEMPTS),
            poll_retry_interval,
            disable_container_selectors: config.disable_container_selectors,
            cache: Mutex::new(None),
            fetch: tokio::sync::Mutex::new(()),
        })
    }

    fn cached(&self) -> Option<Arc<PodIndex>> {
        let guard = self.cache.lock().ok()?;
        guard
            .as_ref()
            .filter(|(until, _)| Instant::now() < *until)
            .map(|(_, idx)| idx.clone())
    }

    async fn index(&self) -> Result<Arc<PodIndex>, WorkloadError> {
        if let Some(idx) = self.cached() {
            return Ok(idx);
        }
        let _one_fetch = self.fetch.lock().await;
        if let Some(idx) = self.cached() {
            return Ok(idx);
        }
        let list: PodList = self
            .client
            .get("/pods")
            .await
            .map_err(WorkloadError::Kubelet)?;
        let idx = Arc::new(PodIndex::build(list));
        tracing::debug!(pods = idx.pods.len(), "Fetched kubelet pod list");
        if let Ok(mut guard) = self.cache.lock() {
            *guard = Some((Instant::now() + self.poll_retry_interval / 2, idx.clone()));
        }
        Ok(idx)
    }

    /// The selectors of process `pid`: empty when it is not in a pod container.
    pub async fn attest(&self, pid: i32) -> Result<Selectors, WorkloadError> {
        let located = cgroup::container_of_pid(&self.proc_root, pid)
            .map_err(|source| WorkloadError::Proc { pid, source })?;
        let Some(ContainerRef {
            pod_uid,
            container_id,
        }) = located
        else {
            return Ok(Selectors::new());
        };
        let mut attempt = 1;
        loop {
            let index = self.index().await?;
            if let Some((pod, status)) = index.container(&container_id)? {
                let mut values = pod_selector_values(pod);
                if !self.disable_container_selectors {
                    values.extend(container_selector_values(status));
                }
                return Ok(to_selectors(values));
            }
            if self.disable_container_selectors
                && let Some(pi) = index.by_uid.get(&pod_uid)
            {
                return Ok(to_selectors(pod_selector_values(&index.pods[*pi])));
            }
            if attempt >= self.max_poll_attempts {
                tracing::warn!(%container_id, %pod_uid, attempt, "Container id not found; giving up");
                return Err(WorkloadError::NotFound {
                    container_id,
                    pod_uid,
                    attempts: attempt,
                });
            }
            tracing::debug!(%container_id, %pod_uid, attempt, "Container id not found; retrying");
            tokio::time::sleep(self.poll_retry_interval).await;
            attempt += 1;
        }
    }

    /// [`Self::attest`] from synchronous code (the agent's blocking attestation pool): runs
    /// on the current tokio runtime, or a private one outside any runtime.
    pub fn attest_blocking(&self, pid: i32) -> Result<Selectors, WorkloadError> {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => handle.block_on(self.attest(pid)),
            Err(_) => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| WorkloadError::Runtime(format!("cannot start a runtime: {e}")))?
                .block_on(self.attest(pid)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ObjectMeta, OwnerReference, PodSpec, PodStatus};

    fn status(name: &str, id: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            image: format!("registry.local/{name}:1"),
            image_id: format!("registry.local/{name}@sha256:{}", "ab".repeat(32)),
            container_id: if id.is_empty() {
                String::new()
            } else {
                format!("containerd://{id}")
            },
        }
    }

    fn pod(uid: &str, statuses: Vec<ContainerStatus>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: format!("p-{uid}"),
                namespace: "production".into(),
                uid: uid.into(),
                labels: [("app".to_owned(), "backend".to_owned())].into(),
                owner_references: vec![OwnerReference {
                    kind: "ReplicaSet".into(),
                    name: "backend-5d4".into(),
                    uid: "rs-uid".into(),
                }],
                ..Default::default()
            },
            spec: PodSpec {
                service_account_name: "backend-service".into(),
                node_name: "node-1".into(),
                ..Default::default()
            },
            status: PodStatus {
                container_statuses: statuses,
                ..Default::default()
            },
        }
    }

    #[test]
    fn index_finds_containers_and_flags_duplicates() {
        let idx = PodIndex::build(PodList {
            items: vec![
                pod("u1", vec![status("a", "aaa"), status("b", "")]),
                pod("u2", vec![status("c", "ccc"), status("d", "dup")]),
                pod("u3", vec![status("e", "dup")]),
            ],
        });
        let (p, s) = idx.container("ccc").unwrap().unwrap();
        assert_eq!((p.metadata.uid.as_str(), s.name.as_str()), ("u2", "c"));
        assert!(idx.container("zzz").unwrap().is_none());
        assert!(matches!(
            idx.container("dup"),
            Err(WorkloadError::Ambiguous(_))
        ));
        assert_eq!(idx.by_uid.get("u3"), Some(&2));
    }

    #[test]
    fn selector_values_match_spire() {
        let p = pod("u1", vec![status("a", "aaa"), status("b", "bbb")]);
        let mut v = pod_selector_values(&p);
        v.extend(container_selector_values(&p.status.container_statuses[0]));
        v.sort();
        let digest = "ab".repeat(32);
        let want = [
            "container-image:registry.local/a:1".to_owned(),
            format!("container-image:registry.local/a@sha256:{digest}"),
            "container-name:a".into(),
            "node-name:node-1".into(),
            "ns:production".into(),
            "pod-image-count:2".into(),
            "pod-image:registry.local/a:1".into(),
            format!("pod-image:registry.local/a@sha256:{digest}"),
            "pod-image:registry.local/b:1".into(),
            format!("pod-image:registry.local/b@sha256:{digest}"),
            "pod-init-image-count:0".into(),
            "pod-label:app:backend".into(),
            "pod-name:p-u1".into(),
            "pod-owner-uid:ReplicaSet:rs-uid".into(),
            "pod-owner:ReplicaSet:backend-5d4".into(),
            "pod-uid:u1".into(),
            "sa:backend-service".into(),
        ];
        assert_eq!(v, want);
    }

    #[test]
    fn config_errors() {
        let both = K8sWorkloadConfig {
            kubelet_read_only_port: Some(10255),
            kubelet_secure_port: Some(10250),
            ..Default::default()
        };
        assert!(
            K8sWorkloadAttestor::new(both)
                .unwrap_err()
                .to_string()
                .contains("both")
        );
        let bad = K8sWorkloadConfig {
            kubelet_read_only_port: Some(10255),
            poll_retry_interval: Some("soon".into()),
            ..Default::default()
        };
        assert!(
            K8sWorkloadAttestor::new(bad)
                .unwrap_err()
                .to_string()
                .contains("poll_retry_interval")
        );
        let no_ca = K8sWorkloadConfig {
            kubelet_ca_path: Some("/nonexistent/ca.crt".into()),
            ..Default::default()
        };
        assert!(
            K8sWorkloadAttestor::new(no_ca)
                .unwrap_err()
                .to_string()
                .contains("/nonexistent/ca.crt")
        );
        let half = K8sWorkloadConfig {
            skip_kubelet_verification: true,
            certificate_path: Some("/x".into()),
            ..Default::default()
        };
        assert!(
            K8sWorkloadAttestor::new(half)
                .unwrap_err()
                .to_string()
                .contains("private key")
        );
    }

    #[tokio::test]
    async fn process_outside_pods_gets_nothing_without_kubelet() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("7")).unwrap();
        std::fs::write(
            dir.path().join("7/cgroup"),
            "0::/user.slice/session-1.scope\n",
        )
        .unwrap();
        let a = K8sWorkloadAttestor::with_proc_root(
            K8sWorkloadConfig {
                kubelet_read_only_port: Some(1),
                ..Default::default()
            },
            dir.path().into(),
        )
        .unwrap();
        assert!(a.attest(7).await.unwrap().is_empty());
        assert!(matches!(a.attest(8).await, Err(WorkloadError::Proc { .. })));
    }
}
