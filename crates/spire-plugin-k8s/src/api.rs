//! The few Kubernetes objects the plugins read and write, with the JSON field names of the
//! Kubernetes API (`core/v1` Pod, PodList, Node, ConfigMap; `authentication.k8s.io/v1`
//! TokenReview). Unknown fields are ignored; absent ones take their zero value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `metadata` of any object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    /// `name`.
    pub name: String,
    /// `namespace`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// `uid`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// `resourceVersion`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// `labels`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `ownerReferences`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
}

/// One `metadata.ownerReferences` item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OwnerReference {
    /// `kind` (`ReplicaSet`, `DaemonSet`, ...).
    pub kind: String,
    /// `name`.
    pub name: String,
    /// `uid`.
    pub uid: String,
}

/// `core/v1` Pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Pod {
    /// `metadata`.
    pub metadata: ObjectMeta,
    /// `spec`.
    pub spec: PodSpec,
    /// `status`.
    pub status: PodStatus,
}

/// `spec` of a Pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    /// `serviceAccountName`.
    pub service_account_name: String,
    /// `nodeName`.
    pub node_name: String,
    /// `containers`.
    pub containers: Vec<Container>,
    /// `initContainers`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
}

/// One container of a Pod spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    /// `name`.
    pub name: String,
    /// `image`.
    pub image: String,
}

/// `status` of a Pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStatus {
    /// `phase`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// `hostIP`: the IP of the node the pod runs on.
    #[serde(rename = "hostIP", skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
    /// `containerStatuses`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerStatus>,
    /// `initContainerStatuses`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub init_container_statuses: Vec<ContainerStatus>,
}

/// One item of `containerStatuses` / `initContainerStatuses`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerStatus {
    /// `name`.
    pub name: String,
    /// `image` (as written in the spec, e.g. `ghcr.io/acme/backend:1.4`).
    pub image: String,
    /// `imageID` (the resolved digest form).
    #[serde(rename = "imageID")]
    pub image_id: String,
    /// `containerID`: `<runtime>://<id>`, empty while the container is not created yet.
    #[serde(rename = "containerID", skip_serializing_if = "String::is_empty")]
    pub container_id: String,
}

impl ContainerStatus {
    /// The bare container ID (`<id>` of `containerd://<id>`), `None` while not created.
    pub fn bare_id(&self) -> Option<&str> {
        let id = self
            .container_id
            .split_once("://")
            .map_or(self.container_id.as_str(), |(_, id)| id);
        (!id.is_empty()).then_some(id)
    }
}

/// `core/v1` PodList, as the kubelet's `/pods` answers it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PodList {
    /// `items`.
    pub items: Vec<Pod>,
}

/// `core/v1` Node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Node {
    /// `metadata`.
    pub metadata: ObjectMeta,
}

/// `core/v1` ConfigMap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfigMap {
    /// `metadata`.
    pub metadata: ObjectMeta,
    /// `data`.
    pub data: BTreeMap<String, String>,
}

/// `authentication.k8s.io/v1` TokenReview (request and answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TokenReview {
    /// `apiVersion`: `authentication.k8s.io/v1`.
    pub api_version: String,
    /// `kind`: `TokenReview`.
    pub kind: String,
    /// `spec`.
    pub spec: TokenReviewSpec,
    /// `status` (set by the API server).
    pub status: TokenReviewStatus,
}

/// `spec` of a TokenReview.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenReviewSpec {
    /// `token`: the bearer token under review (secret: never logged).
    pub token: String,
    /// `audiences`.
    pub audiences: Vec<String>,
}

impl std::fmt::Debug for TokenReviewSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewSpec")
            .field("token", &"<redacted>")
            .field("audiences", &self.audiences)
            .finish()
    }
}

/// `status` of a TokenReview.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenReviewStatus {
    /// `authenticated`.
    pub authenticated: bool,
    /// `user`.
    pub user: UserInfo,
    /// `audiences`: those of the requested audiences the token is valid for.
    pub audiences: Vec<String>,
    /// `error`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// `status.user` of a TokenReview.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserInfo {
    /// `username`: `system:serviceaccount:<namespace>:<name>` for service accounts.
    pub username: String,
    /// `uid`.
    pub uid: String,
    /// `extra`: for projected tokens, `authentication.kubernetes.io/pod-name` and `pod-uid`.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// `extra` key naming the pod a projected token was issued for.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// `extra` key carrying the UID of that pod.
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
