//! Agent sides of node attestation: what the agent sends in `AttestAgent` and how it answers the
//! server's challenges. Built-ins: `join_token` and `x509pop`.

pub mod join_token;
pub mod k8s_psat;
pub mod x509pop;

use spire_config::{AgentConfig, PluginConfig};

/// Why a node attestor could not be configured or could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeAttestorError {
    /// The plugin configuration is invalid.
    #[error("NodeAttestor {name:?}: {reason}")]
    Config {
        /// The plugin name.
        name: String,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// The server sent a challenge the attestor cannot answer.
    #[error("NodeAttestor {name:?}: bad challenge: {reason}")]
    Challenge {
        /// The plugin name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// The agent side of a node attestor.
pub trait NodeAttestor: Send + Sync + std::fmt::Debug {
    /// The attestation type sent to the server (`join_token`, `x509pop`).
    fn attestation_type(&self) -> &str;

    /// The payload of the first `AttestAgent` request.
    fn payload(&self) -> Result<Vec<u8>, NodeAttestorError>;

    /// The answer to one server challenge.
    fn respond(&self, challenge: &[u8]) -> Result<Vec<u8>, NodeAttestorError>;
}

/// Builds the configured node attestor. `-joinToken` / `join_token` / `join_token_file` select
/// `join_token` even without a plugin block, as SPIRE does.
pub fn from_config(config: &AgentConfig) -> Result<Box<dyn NodeAttestor>, NodeAttestorError> {
    let plugin: Option<&PluginConfig> = config.plugins.single("NodeAttestor");
    let token = join_token::token_from_config(config)?;
    match plugin.map(|p| p.name.as_str()) {
        Some("join_token") | None => match token {
            Some(t) => Ok(Box::new(join_token::JoinTokenAttestor::new(t))),
            None => Err(NodeAttestorError::Config {
                name: "join_token".into(),
                reason: "no join token: set join_token, join_token_file or -joinToken".into(),
            }),
        },
        Some("x509pop") => {
            let plugin = plugin.ok_or_else(|| NodeAttestorError::Config {
                name: "x509pop".into(),
                reason: "missing plugin block".into(),
            })?;
            Ok(Box::new(x509pop::X509PopAttestor::from_plugin(plugin)?))
        }
        Some(k8s_psat::NAME) => {
            let plugin = plugin.ok_or_else(|| NodeAttestorError::Config {
                name: k8s_psat::NAME.into(),
                reason: "missing plugin block".into(),
            })?;
            Ok(Box::new(k8s_psat::K8sPsatAttestor::from_plugin(plugin)?))
        }
        Some(other) => Err(NodeAttestorError::Config {
            name: other.to_owned(),
            reason: "not supported by spire-agent, expected join_token, k8s_psat or x509pop".into(),
        }),
    }
}
