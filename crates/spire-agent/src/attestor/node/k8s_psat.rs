//! Agent side of `k8s_psat`: sends the cluster name and the projected service-account token
//! (read afresh for every attestation). No challenge.

use spire_config::PluginConfig;
use spire_plugin_k8s::{PsatAgent, PsatAgentConfig};

use super::{NodeAttestor, NodeAttestorError};

/// The attestation type.
pub const NAME: &str = spire_plugin_k8s::psat::NAME;

/// The configured `NodeAttestor "k8s_psat"`.
#[derive(Debug)]
pub struct K8sPsatAttestor(PsatAgent);

impl K8sPsatAttestor {
    /// Builds the attestor from its plugin block (`cluster`, `token_path`).
    pub fn from_plugin(plugin: &PluginConfig) -> Result<Self, NodeAttestorError> {
        let err = |reason: String| NodeAttestorError::Config {
            name: NAME.into(),
            reason,
        };
        let cfg: PsatAgentConfig = plugin.plugin_data().map_err(|e| err(e.to_string()))?;
        PsatAgent::new(cfg)
            .map(Self)
            .map_err(|e| err(e.to_string()))
    }
}

impl NodeAttestor for K8sPsatAttestor {
    fn attestation_type(&self) -> &str {
        NAME
    }

    fn payload(&self) -> Result<Vec<u8>, NodeAttestorError> {
        self.0.payload().map_err(|e| NodeAttestorError::Config {
            name: NAME.into(),
            reason: e.to_string(),
        })
    }

    fn respond(&self, _challenge: &[u8]) -> Result<Vec<u8>, NodeAttestorError> {
        Err(NodeAttestorError::Challenge {
            name: NAME.into(),
            reason: "k8s_psat does not use challenges".into(),
        })
    }
}
