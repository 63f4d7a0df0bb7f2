//! Server notifiers (`Notifier` plugin blocks): `k8sbundle` keeps the local trust bundle's
//! X.509 authorities in a Kubernetes ConfigMap. It publishes once at start and again every
//! time the CA manager changes the bundle (rotation, taint, revocation); a failed update is
//! retried every [`RETRY_INTERVAL`] until it succeeds or the bundle changes again.
//!
//! Mirrors `pkg/server/plugin/notifier/k8sbundle`.

use std::sync::Arc;
use std::time::Duration;

use spire_plugin_k8s::{K8sBundleConfig, K8sBundleNotifier};

use crate::server::{ServerError, ServerState};

/// Pause before retrying a failed update.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// Builds the configured notifiers and starts one task each. Unknown notifiers and bad
/// `plugin_data` are configuration errors.
pub fn spawn(state: &Arc<ServerState>) -> Result<Vec<tokio::task::JoinHandle<()>>, ServerError> {
    let mut tasks = Vec::new();
    for p in state.config.plugins.enabled("Notifier") {
        let err = |reason: String| ServerError::Plugin {
            plugin_type: "Notifier".into(),
            name: p.name.clone(),
            reason,
        };
        match p.name.as_str() {
            spire_plugin_k8s::bundle::NAME => {
                let cfg: K8sBundleConfig = p.plugin_data().map_err(|e| err(e.to_string()))?;
                let notifier = K8sBundleNotifier::new(cfg).map_err(|e| err(e.to_string()))?;
                tasks.push(tokio::spawn(run_k8sbundle(Arc::clone(state), notifier)));
            }
            other => {
                return Err(err(format!(
                    "unknown Notifier plugin {other:?}: the built-in Notifier is \"k8sbundle\""
                )));
            }
        }
    }
    Ok(tasks)
}

/// The PEM X.509 authorities of the stored local bundle.
async fn bundle_pem(state: &ServerState) -> Result<Option<String>, String> {
    let bundle = state.ca.bundle().await.map_err(|e| e.to_string())?;
    Ok(bundle.map(|b| {
        b.x509_authorities
            .iter()
            .map(|a| {
                pem::encode_config(
                    &pem::Pem::new("CERTIFICATE", a.der.clone()),
                    pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
                )
            })
            .collect::<String>()
    }))
}

async fn run_k8sbundle(state: Arc<ServerState>, notifier: K8sBundleNotifier) {
    let mut changes = state.ca.subscribe_bundle();
    loop {
        let ok = match bundle_pem(&state).await {
            Ok(Some(pem)) => match notifier.update(&pem).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "Failed to update bundle ConfigMap");
                    false
                }
            },
            Ok(None) => true,
            Err(e) => {
                tracing::error!(error = %e, "Failed to load bundle for notifier");
                false
            }
        };
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RETRY_INTERVAL), if !ok => {}
        }
    }
}
