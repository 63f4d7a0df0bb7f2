//! `k8s_psat` node attestation with projected service-account tokens.
//!
//! Agent side ([`PsatAgent`]): sends `{"cluster": <name>, "token": <projected token>}`, the
//! token read afresh from `token_path` for every attestation (kubelet rotates it).
//!
//! Server side ([`PsatServer`]): for the named cluster, asks that cluster's API server to
//! review the token (TokenReview, with the configured audiences), requires the service
//! account `<ns>:<name>` in `service_account_allow_list`, reads the agent's pod (named by the
//! token's `authentication.kubernetes.io/pod-name` extra) and its node, and issues
//! `spiffe://<td>/spire/agent/k8s_psat/<cluster>/<node-uid>` with `k8s_psat:` selectors.
//! Agents re-attest (the token is short-lived and proves presence).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use spire_spiffe::{Selector, Selectors, SpiffeId, TrustDomain};

use crate::api::{self, Node, Pod, TokenReview, TokenReviewSpec};
use crate::client::{ClientError, KubeClient};

/// The plugin name and selector type.
pub const NAME: &str = "k8s_psat";
/// Default agent token path.
pub const DEFAULT_TOKEN_PATH: &str = "/var/run/secrets/tokens/spire-agent";
/// Default audience.
pub const DEFAULT_AUDIENCE: &str = "spire-server";

/// The attestation payload.
#[derive(Serialize, Deserialize)]
pub struct AttestationData {
    /// The cluster name.
    pub cluster: String,
    /// The projected token (secret).
    pub token: String,
}

impl std::fmt::Debug for AttestationData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestationData")
            .field("cluster", &self.cluster)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// How the server should answer a failed attestation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The agent sent malformed or unexpected data (gRPC `InvalidArgument`).
    InvalidArgument,
    /// The evidence does not prove an allowed agent (gRPC `PermissionDenied`).
    PermissionDenied,
    /// The server could not complete the check (gRPC `Internal`).
    Internal,
}

/// Why `k8s_psat` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PsatError {
    /// The plugin configuration is wrong.
    #[error("k8s_psat: invalid configuration: {0}")]
    Config(String),
    /// The agent's token file could not be read.
    #[error("k8s_psat: cannot read token {path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The payload is not `{"cluster","token"}` JSON.
    #[error("k8s_psat: malformed attestation data: {0}")]
    Payload(String),
    /// The cluster is not configured on the server.
    #[error("k8s_psat: not configured for cluster {0:?}")]
    UnknownCluster(String),
    /// The API server rejected the token.
    #[error("k8s_psat: token not authenticated according to TokenReview API{}", if .0.is_empty() { String::new() } else { format!(": {}", .0) })]
    NotAuthenticated(String),
    /// The token is not for any of the configured audiences.
    #[error("k8s_psat: token audiences {got:?} do not include any of {want:?}")]
    Audience {
        /// Audiences the API server reported.
        got: Vec<String>,
        /// Configured audiences.
        want: Vec<String>,
    },
    /// The token is not a service-account token with pod binding.
    #[error("k8s_psat: {0}")]
    NotPodBound(String),
    /// The service account is not allow-listed.
    #[error("k8s_psat: {0:?} is not an allowed service account")]
    NotAllowed(String),
    /// The agent's pod or node does not exist.
    #[error("k8s_psat: {what} {name:?} not found")]
    NotFound {
        /// `pod` or `node`.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// The API server could not be asked.
    #[error("k8s_psat: {what}: {source}")]
    Api {
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: ClientError,
    },
    /// The pod or node lacks a field the agent ID needs.
    #[error("k8s_psat: {0}")]
    Incomplete(String),
}

impl PsatError {
    /// The gRPC answer this failure deserves.
    pub fn kind(&self) -> FailureKind {
        match self {
            PsatError::Payload(_) | PsatError::UnknownCluster(_) => FailureKind::InvalidArgument,
            PsatError::NotAuthenticated(_)
            | PsatError::Audience { .. }
            | PsatError::NotPodBound(_)
            | PsatError::NotAllowed(_)
            | PsatError::NotFound { .. } => FailureKind::PermissionDenied,
            PsatError::Config(_)
            | PsatError::Token { .. }
            | PsatError::Api { .. }
            | PsatError::Incomplete(_) => FailureKind::Internal,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Agent side

/// `plugin_data` of the agent's `NodeAttestor "k8s_psat"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsatAgentConfig {
    /// The cluster name (required; must match a server `clusters` key).
    #[serde(default)]
    pub cluster: String,
    /// The projected token (default [`DEFAULT_TOKEN_PATH`]).
    #[serde(default)]
    pub token_path: Option<PathBuf>,
}

/// The agent side of `k8s_psat`.
#[derive(Debug, Clone)]
pub struct PsatAgent {
    cluster: String,
    token_path: PathBuf,
}

impl PsatAgent {
    /// Checks the configuration.
    pub fn new(config: PsatAgentConfig) -> Result<Self, PsatError> {
        if config.cluster.is_empty() {
            return Err(PsatError::Config(
                "cluster is required: set it to the name the server's clusters block uses".into(),
            ));
        }
        Ok(Self {
            cluster: config.cluster,
            token_path: config
                .token_path
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| DEFAULT_TOKEN_PATH.into()),
        })
    }

    /// The attestation payload, with the token as it is on disk now.
    pub fn payload(&self) -> Result<Vec<u8>, PsatError> {
        let raw = std::fs::read_to_string(&self.token_path).map_err(|source| PsatError::Token {
            path: self.token_path.clone(),
            source,
        })?;
        let data = AttestationData {
            cluster: self.cluster.clone(),
            token: raw.trim().to_owned(),
        };
        serde_json::to_vec(&data).map_err(|e| PsatError::Payload(e.to_string()))
    }
}

// ---------------------------------------------------------------------------------------
// Server side

/// One entry of the server's `clusters` map.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `<namespace>:<name>` of the service accounts agents may run as (required).
    pub service_account_allow_list: Vec<String>,
    /// Audiences the token must be for (default `["spire-server"]`).
    pub audience: Option<Vec<String>>,
    /// kubeconfig of the cluster's API server (default: in-cluster).
    pub kube_config_file: Option<PathBuf>,
    /// Node label keys that become `agent_node_label` selectors.
    pub allowed_node_label_keys: Vec<String>,
    /// Pod label keys that become `agent_pod_label` selectors.
    pub allowed_pod_label_keys: Vec<String>,
}

/// `plugin_data` of the server's `NodeAttestor "k8s_psat"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PsatServerConfig {
    /// Per-cluster settings.
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterConfig>,
}

#[derive(Debug)]
struct Cluster {
    allow: BTreeSet<String>,
    audience: Vec<String>,
    node_label_keys: BTreeSet<String>,
    pod_label_keys: BTreeSet<String>,
    client: KubeClient,
}

/// The server side of `k8s_psat`.
#[derive(Debug)]
pub struct PsatServer {
    clusters: BTreeMap<String, Cluster>,
}

/// A successful attestation.
#[derive(Debug, Clone)]
pub struct PsatAttested {
    /// `spiffe://<td>/spire/agent/k8s_psat/<cluster>/<node-uid>`.
    pub agent_id: SpiffeId,
    /// The `k8s_psat:` selectors.
    pub selectors: Selectors,
}

impl PsatServer {
    /// Builds the per-cluster API clients. Fails on an empty `clusters` map, an empty allow
    /// list or an unreadable kubeconfig.
    pub fn new(config: PsatServerConfig) -> Result<Self, PsatError> {
        if config.clusters.is_empty() {
            return Err(PsatError::Config(
                "clusters is empty: configure at least one cluster".into(),
            ));
        }
        let mut clusters = BTreeMap::new();
        for (name, c) in config.clusters {
            if c.service_account_allow_list.is_empty() {
                return Err(PsatError::Config(format!(
                    "cluster {name:?}: service_account_allow_list is empty: list the agents' service accounts as \"<namespace>:<name>\""
                )));
            }
            if let Some(bad) = c
                .service_account_allow_list
                .iter()
                .find(|s| s.split(':').count() != 2)
            {
                return Err(PsatError::Config(format!(
                    "cluster {name:?}: service account {bad:?} is not \"<namespace>:<name>\""
                )));
            }
            let client = KubeClient::from_kubeconfig_or_in_cluster(
                c.kube_config_file
                    .as_deref()
                    .filter(|p| !p.as_os_str().is_empty()),
            )
            .map_err(|e| PsatError::Config(format!("cluster {name:?}: {e}")))?;
            let audience = c
                .audience
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| vec![DEFAULT_AUDIENCE.to_owned()]);
            clusters.insert(
                name,
                Cluster {
                    allow: c.service_account_allow_list.into_iter().collect(),
                    audience,
                    node_label_keys: c.allowed_node_label_keys.into_iter().collect(),
                    pod_label_keys: c.allowed_pod_label_keys.into_iter().collect(),
                    client,
                },
            );
        }
        Ok(Self { clusters })
    }

    /// Attests an agent from its payload.
    pub async fn attest(
        &self,
        trust_domain: &TrustDomain,
        payload: &[u8],
    ) -> Result<PsatAttested, PsatError> {
        let data: AttestationData =
            serde_json::from_slice(payload).map_err(|e| PsatError::Payload(e.to_string()))?;
        if data.cluster.is_empty() {
            return Err(PsatError::Payload("missing cluster".into()));
        }
        if data.token.is_empty() {
            return Err(PsatError::Payload("missing token".into()));
        }
        let cluster = self
            .clusters
            .get(&data.cluster)
            .ok_or_else(|| PsatError::UnknownCluster(data.cluster.clone()))?;

        let review = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": TokenReviewSpec { token: data.token.clone(), audiences: cluster.audience.clone() },
        });
        let answer: TokenReview = cluster
            .client
            .send_json(
                reqwest::Method::POST,
                "/apis/authentication.k8s.io/v1/tokenreviews",
                "application/json",
                &review,
            )
            .await
            .map_err(|source| PsatError::Api {
                what: "unable to validate token with TokenReview API",
                source,
            })?;
        let status = answer.status;
        if !status.authenticated {
            return Err(PsatError::NotAuthenticated(status.error));
        }
        if !status.audiences.is_empty()
            && !status
                .audiences
                .iter()
                .any(|a| cluster.audience.contains(a))
        {
            return Err(PsatError::Audience {
                got: status.audiences,
                want: cluster.audience.clone(),
            });
        }
        let (namespace, sa) = status
            .user
            .username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .ok_or_else(|| {
                PsatError::NotPodBound(format!(
                    "{:?} is not a service account",
                    status.user.username
                ))
            })?;
        let account = format!("{namespace}:{sa}");
        if !cluster.allow.contains(&account) {
            return Err(PsatError::NotAllowed(account));
        }
        let extra = |key: &str| {
            status
                .user
                .extra
                .get(key)
                .and_then(|v| v.first())
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| {
                    PsatError::NotPodBound(format!(
                        "token is not bound to a pod (no {key} in the TokenReview user extra): use a projected service-account token"
                    ))
                })
        };
        let pod_name = extra(api::EXTRA_POD_NAME)?;
        let pod_uid = extra(api::EXTRA_POD_UID)?;

        let pod: Pod = get_object(
            &cluster.client,
            "pod",
            &format!("/api/v1/namespaces/{namespace}/pods/{pod_name}"),
            &pod_name,
        )
        .await?;
        if !pod.metadata.uid.is_empty() && pod.metadata.uid != pod_uid {
            return Err(PsatError::NotFound {
                what: "pod",
                name: format!("{pod_name} (uid {pod_uid})"),
            });
        }
        let node_name = pod.spec.node_name.clone();
        if node_name.is_empty() {
            return Err(PsatError::Incomplete(format!(
                "pod {pod_name:?} is not scheduled on a node"
            )));
        }
        let node: Node = get_object(
            &cluster.client,
            "node",
            &format!("/api/v1/nodes/{node_name}"),
            &node_name,
        )
        .await?;
        let node_uid = node.metadata.uid.clone();
        if node_uid.is_empty() {
            return Err(PsatError::Incomplete(format!(
                "node {node_name:?} has no UID"
            )));
        }
        let agent_id = SpiffeId::from_segments(
            trust_domain,
            &["spire", "agent", NAME, &data.cluster, &node_uid],
        )
        .map_err(|e| PsatError::Incomplete(format!("cannot form the agent ID: {e}")))?;

        let mut values = vec![
            format!("cluster:{}", data.cluster),
            format!("agent_ns:{namespace}"),
            format!("agent_sa:{sa}"),
            format!("agent_pod_name:{pod_name}"),
            format!("agent_pod_uid:{pod_uid}"),
            format!("agent_node_ip:{}", pod.status.host_ip),
            format!("agent_node_name:{node_name}"),
            format!("agent_node_uid:{node_uid}"),
        ];
        for (k, v) in &node.metadata.labels {
            if cluster.node_label_keys.contains(k) {
                values.push(format!("agent_node_label:{k}:{v}"));
            }
        }
        for (k, v) in &pod.metadata.labels {
            if cluster.pod_label_keys.contains(k) {
                values.push(format!("agent_pod_label:{k}:{v}"));
            }
        }
        let selectors = values
            .into_iter()
            .filter_map(|v| Selector::new(NAME, v).ok())
            .collect();
        Ok(PsatAttested {
            agent_id,
            selectors,
        })
    }
}

async fn get_object<T: serde::de::DeserializeOwned>(
    client: &KubeClient,
    what: &'static str,
    path: &str,
    name: &str,
) -> Result<T, PsatError> {
    client.get(path).await.map_err(|source| {
        if source.status() == Some(404) {
            PsatError::NotFound {
                what,
                name: name.to_owned(),
            }
        } else {
            PsatError::Api {
                what: if what == "pod" {
                    "unable to get agent pod"
                } else {
                    "unable to get agent node"
                },
                source,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_payload_reads_token_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "tok1\n").unwrap();
        let a = PsatAgent::new(PsatAgentConfig {
            cluster: "prod".into(),
            token_path: Some(path.clone()),
        })
        .unwrap();
        let p: serde_json::Value = serde_json::from_slice(&a.payload().unwrap()).unwrap();
        assert_eq!(p, serde_json::json!({"cluster": "prod", "token": "tok1"}));
        std::fs::write(&path, "tok2").unwrap();
        let p: serde_json::Value = serde_json::from_slice(&a.payload().unwrap()).unwrap();
        assert_eq!(p["token"], "tok2");
    }

    #[test]
    fn agent_requires_cluster_and_readable_token() {
        assert!(PsatAgent::new(PsatAgentConfig::default()).is_err());
        let a = PsatAgent::new(PsatAgentConfig {
            cluster: "c".into(),
            token_path: None,
        })
        .unwrap();
        assert_eq!(a.token_path, PathBuf::from(DEFAULT_TOKEN_PATH));
        let a = PsatAgent::new(PsatAgentConfig {
            cluster: "c".into(),
            token_path: Some("/nonexistent/token".into()),
        })
        .unwrap();
        assert!(matches!(a.payload(), Err(PsatError::Token { .. })));
    }

    #[test]
    fn server_config_is_checked() {
        assert!(PsatServer::new(PsatServerConfig::default()).is_err());
        let mut clusters = BTreeMap::new();
        clusters.insert("c".to_owned(), ClusterConfig::default());
        let err = PsatServer::new(PsatServerConfig { clusters }).unwrap_err();
        assert!(
            err.to_string().contains("service_account_allow_list"),
            "{err}"
        );
        let mut clusters = BTreeMap::new();
        clusters.insert(
            "c".to_owned(),
            ClusterConfig {
                service_account_allow_list: vec!["no-colon".into()],
                ..Default::default()
            },
        );
        let err = PsatServer::new(PsatServerConfig { clusters }).unwrap_err();
        assert!(err.to_string().contains("no-colon"), "{err}");
    }

    #[test]
    fn payload_debug_redacts_token() {
        let d = AttestationData {
            cluster: "c".into(),
            token: "secret-token".into(),
        };
        assert!(!format!("{d:?}").contains("secret-token"));
    }
}
