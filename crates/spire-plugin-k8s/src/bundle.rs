//! The `k8sbundle` notifier: keeps the trust bundle (PEM X.509 authorities) in one key of a
//! ConfigMap. Each update reads the ConfigMap and merge-patches its key, guarded by the
//! `resourceVersion` read (a concurrent writer makes the patch fail with 409 and it is
//! retried). The ConfigMap must exist; it is not created, as in SPIRE.

use std::path::PathBuf;

use serde::Deserialize;

use crate::api::ConfigMap;
use crate::client::{ClientError, KubeClient};

/// The plugin name.
pub const NAME: &str = "k8sbundle";
/// Default namespace.
pub const DEFAULT_NAMESPACE: &str = "spire";
/// Default ConfigMap name.
pub const DEFAULT_CONFIG_MAP: &str = "spire-bundle";
/// Default key.
pub const DEFAULT_CONFIG_MAP_KEY: &str = "bundle.crt";
/// Attempts on write conflicts.
const CONFLICT_RETRIES: usize = 5;

/// `plugin_data` of `Notifier "k8sbundle"`. SPIRE's `webhook_label`, `api_service_label` and
/// multi-cluster `clusters` are not supported (refused as unknown keys).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct K8sBundleConfig {
    /// Namespace of the ConfigMap (default `spire`).
    pub namespace: Option<String>,
    /// ConfigMap name (default `spire-bundle`).
    pub config_map: Option<String>,
    /// Key in the ConfigMap (default `bundle.crt`).
    pub config_map_key: Option<String>,
    /// kubeconfig of the API server (default: in-cluster).
    pub kube_config_file: Option<PathBuf>,
}

/// Why the notifier failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifierError {
    /// Bad configuration.
    #[error("k8sbundle: invalid configuration: {0}")]
    Config(String),
    /// The API server request failed.
    #[error("k8sbundle: unable to update ConfigMap {namespace}/{name}: {source}")]
    Api {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The cause.
        #[source]
        source: ClientError,
    },
}

/// The `k8sbundle` notifier.
#[derive(Debug)]
pub struct K8sBundleNotifier {
    client: KubeClient,
    namespace: String,
    name: String,
    key: String,
}

fn non_empty(v: Option<String>, default: &str) -> String {
    v.filter(|s| !s.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

impl K8sBundleNotifier {
    /// Builds the notifier.
    pub fn new(config: K8sBundleConfig) -> Result<Self, NotifierError> {
        let client = KubeClient::from_kubeconfig_or_in_cluster(
            config
                .kube_config_file
                .as_deref()
                .filter(|p| !p.as_os_str().is_empty()),
        )
        .map_err(|e| NotifierError::Config(e.to_string()))?;
        Ok(Self {
            client,
            namespace: non_empty(config.namespace, DEFAULT_NAMESPACE),
            name: non_empty(config.config_map, DEFAULT_CONFIG_MAP),
            key: non_empty(config.config_map_key, DEFAULT_CONFIG_MAP_KEY),
        })
    }

    fn path(&self) -> String {
        format!(
            "/api/v1/namespaces/{}/configmaps/{}",
            self.namespace, self.name
        )
    }

    /// Writes `bundle_pem` (the PEM X.509 authorities) into the ConfigMap key. Does nothing
    /// when the key already holds exactly that.
    pub async fn update(&self, bundle_pem: &str) -> Result<(), NotifierError> {
        let api = |source| NotifierError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        };
        let path = self.path();
        let mut last = None;
        for _ in 0..CONFLICT_RETRIES {
            let current: ConfigMap = self.client.get(&path).await.map_err(api)?;
            if current.data.get(&self.key).map(String::as_str) == Some(bundle_pem) {
                return Ok(());
            }
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": current.metadata.resource_version },
                "data": { self.key.clone(): bundle_pem },
            });
            match self
                .client
                .send_json::<ConfigMap>(
                    reqwest::Method::PATCH,
                    &path,
                    "application/merge-patch+json",
                    &patch,
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(namespace = %self.namespace, config_map = %self.name, key = %self.key, "Bundle ConfigMap updated");
                    return Ok(());
                }
                Err(e) if e.status() == Some(409) => last = Some(e),
                Err(e) => return Err(api(e)),
            }
        }
        Err(api(last.unwrap_or_else(|| {
            ClientError::Config("conflict retries exhausted".into())
        })))
    }
}
