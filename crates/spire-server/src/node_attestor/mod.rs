//! Server-side node attestors (`join_token`, `x509pop`): they turn an agent's attestation
//! data (and, for challenge/response attestors, its answers) into an agent ID and node
//! selectors. AttestAgent ([`crate::api::agent::attest`]) drives them.
//!
//! Mirrors `pkg/server/plugin/nodeattestor/*`.

pub mod join_token;
pub mod k8s_psat;
pub mod x509pop;

use spire_config::ServerConfig;
use spire_spiffe::{Selectors, SpiffeId};

/// What a successful attestation yields.
#[derive(Debug, Clone)]
pub struct AttestResult {
    /// The agent's SPIFFE ID.
    pub agent_id: SpiffeId,
    /// Node selectors.
    pub selectors: Selectors,
    /// Whether the agent re-attests instead of renewing.
    pub can_reattest: bool,
}

/// A node-attestor plugin block that is wrong.
#[derive(Debug, thiserror::Error)]
#[error("plugins.NodeAttestor.{name}: {reason}")]
pub struct NodeAttestorError {
    /// The plugin name.
    pub name: String,
    /// What is wrong.
    pub reason: String,
}

/// The configured node attestors.
#[derive(Debug, Default)]
pub struct NodeAttestors {
    /// `NodeAttestor "join_token"` is configured.
    pub join_token: bool,
    /// `NodeAttestor "x509pop"`, if configured.
    pub x509pop: Option<x509pop::X509Pop>,
    /// `NodeAttestor "k8s_psat"`, if configured.
    pub k8s_psat: Option<k8s_psat::K8sPsat>,
}

impl NodeAttestors {
    /// Builds the attestors named in `config`'s `NodeAttestor` blocks.
    pub fn from_config(config: &ServerConfig) -> Result<Self, NodeAttestorError> {
        let mut out = NodeAttestors::default();
        for p in config.plugins.enabled("NodeAttestor") {
            let err = |reason: String| NodeAttestorError {
                name: p.name.clone(),
                reason,
            };
            match p.name.as_str() {
                "join_token" => out.join_token = true,
                "x509pop" => {
                    let data: serde_json::Value =
                        p.plugin_data().map_err(|e| err(e.to_string()))?;
                    out.x509pop = Some(x509pop::X509Pop::from_plugin_data(&data).map_err(err)?);
                }
                k8s_psat::NAME => {
                    let data = p.plugin_data().map_err(|e| err(e.to_string()))?;
                    out.k8s_psat = Some(k8s_psat::K8sPsat::new(data).map_err(err)?);
                }
                other => {
                    return Err(err(format!(
                        "unknown NodeAttestor plugin {other:?}: built-ins are \"join_token\", \"k8s_psat\" and \"x509pop\""
                    )));
                }
            }
        }
        Ok(out)
    }
}
