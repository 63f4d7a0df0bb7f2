//! SPIRE's HCL configuration files for the server and the agent, parsed with hcl-rs.
//!
//! Files are read as SPIRE users write them (HCL1 style, or JSON) and decoded with SPIRE's loose
//! typing: `bind_port = "8081"` and `bind_port = 8081` are both integers, `"true"` is a boolean,
//! durations are Go strings (`"168h"`, `"1h30m"`, `"0"`). Decoding goes through `Raw*` structs that
//! reject unknown keys, then converts once into validated types ([`ServerConfig`],
//! [`AgentConfig`]) that downstream code uses without re-checking. Every error names the file, the
//! key path (`server.bind_port`) and the reason.
//!
//! Invariant: this is the only crate that parses HCL. It never reads the process environment:
//! `-expandEnv` takes a lookup closure.

mod agent;
mod common;
mod de;
mod duration;
mod env;
mod oidc;
mod plugins;
mod server;

use std::path::{Path, PathBuf};

pub use agent::{
    AgentConfig, AgentExperimental, AgentOverrides, AgentRateLimits, DEFAULT_AGENT_SOCKET_PATH,
    RebootstrapMode, SdsConfig, TrustBundleFormat, TrustBundleSource,
};
pub use common::{
    HealthChecks, KeyType, LogFormat, LogLevel, LogSettings, M3Config, ProfilingConfig,
    PrometheusConfig, PrometheusTls, Secret, TelemetryConfig,
};
pub use duration::{DurationError, GoDuration, format_go_duration, parse_go_duration};
pub use env::expand_env;
pub use oidc::{
    DEFAULT_OIDC_HEALTH_PORT, DEFAULT_OIDC_POLL_INTERVAL, OidcConfig, OidcKeySource, OidcListen,
};
pub use plugins::{PluginConfig, Plugins};
pub use server::{
    AcmeConfig, BundleEndpointConfig, BundleEndpointProfile, BundleEndpointServing, CaSubject,
    DEFAULT_SERVER_SOCKET_PATH, FederatesWith, FederationConfig, ServerConfig, ServerExperimental,
    ServerOverrides, ServerRateLimit, ServingCertFile, TlsConfig,
};

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("could not read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid HCL (or JSON).
    #[error("{file}: {reason}")]
    Syntax {
        /// The file name.
        file: String,
        /// The parser's message, with line and column.
        reason: String,
    },
    /// A key is unknown, or its value is wrong.
    #[error("{file}: {key}: {reason}")]
    Invalid {
        /// The file name.
        file: String,
        /// The dotted key path, e.g. `server.bind_port`.
        key: String,
        /// What is wrong and what would be right.
        reason: String,
    },
}

impl ConfigError {
    /// The dotted key path of an [`ConfigError::Invalid`] error.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }

    pub(crate) fn invalid(file: &str, key: impl Into<String>, reason: String) -> Self {
        ConfigError::Invalid {
            file: file.to_owned(),
            key: key.into(),
            reason,
        }
    }

    /// Turns a decode error under `prefix` (may be empty) into a [`ConfigError::Invalid`].
    pub(crate) fn from_de(file: &str, prefix: &str, e: de::DeError) -> Self {
        let inner = e.dotted_path();
        let key = match (prefix.is_empty(), inner.is_empty()) {
            (true, true) => "(top level)".to_owned(),
            (true, false) => inner,
            (false, true) => prefix.to_owned(),
            (false, false) => format!("{prefix}.{inner}"),
        };
        ConfigError::invalid(file, key, e.reason)
    }
}

/// The `-expandEnv` variable lookup: a name to its value, `None` when unset.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Reads a config file, expanding `$VAR`/`${VAR}` with `expand` when given (`-expandEnv`).
pub fn read_config_text(path: &Path, expand: Option<EnvLookup<'_>>) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(match expand {
        Some(lookup) => expand_env(&text, lookup),
        None => text,
    })
}

/// Parses HCL (or JSON, when the text starts with `{`) into a generic tree.
pub(crate) fn parse_tree(text: &str, file: &str) -> Result<serde_json::Value, ConfigError> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_owned(),
            reason: format!("invalid JSON: {e}"),
        });
    }
    let value: hcl::Value = hcl::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.to_owned(),
        reason: format!("invalid HCL: {e}"),
    })?;
    serde_json::to_value(value).map_err(|e| ConfigError::Syntax {
        file: file.to_owned(),
        reason: format!("unsupported value: {e}"),
    })
}
