//! The agent config file: `agent {}`, `plugins {}`, `telemetry {}`, `health_checks {}`.
//!
//! Defaults mirror SPIRE's `cmd/spire-agent/cli/run/run.go`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use spire_spiffe::{SpiffeId, TrustDomain};

use crate::common::{
    HealthChecks, KeyType, LogSettings, ProfilingConfig, RawHealthChecks, RawTelemetry, Secret,
    TelemetryConfig, parse_setting,
};
use crate::de::from_value;
use crate::duration::GoDuration;
use crate::plugins::{Cardinality, Plugins, RawPlugins};
use crate::{ConfigError, EnvLookup, parse_tree, read_config_text};

/// Default `socket_path` of the Workload API.
pub const DEFAULT_AGENT_SOCKET_PATH: &str = "/tmp/spire-agent/public/api.sock";

/// A validated agent config file.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// `trust_domain` (required).
    pub trust_domain: TrustDomain,
    /// `server_address` (required): a host name or IP (as SPIRE; a name may resolve to several
    /// addresses, all of which the agent uses), or — a spire-rs extension — a comma-separated
    /// list of `host` or `host:port` items. See [`AgentConfig::server_targets`].
    pub server_address: String,
    /// `server_port` (required).
    pub server_port: u16,
    /// `data_dir`, default `.`.
    pub data_dir: PathBuf,
    /// `socket_path`, default `/tmp/spire-agent/public/api.sock`.
    pub socket_path: PathBuf,
    /// `admin_socket_path`; the admin API is off when unset.
    pub admin_socket_path: Option<PathBuf>,
    /// Where the bootstrap trust bundle comes from.
    pub trust_bundle: TrustBundleSource,
    /// `trust_bundle_format`, default pem.
    pub trust_bundle_format: TrustBundleFormat,
    /// `rebootstrap_mode`, default never.
    pub rebootstrap_mode: RebootstrapMode,
    /// `rebootstrap_delay`, default 10m.
    pub rebootstrap_delay: Duration,
    /// `join_token` (or `-joinToken`).
    pub join_token: Option<Secret>,
    /// `join_token_file` (or `-joinTokenFile`); the binary reads it.
    pub join_token_file: Option<PathBuf>,
    /// `log_*`.
    pub log: LogSettings,
    /// `log_selectors`: selector prefixes allowed in logs.
    pub log_selectors: Vec<String>,
    /// `workload_x509_svid_key_type`, default ec-p256.
    pub workload_x509_svid_key_type: KeyType,
    /// `availability_target`.
    pub availability_target: Option<Duration>,
    /// `x509_svid_cache_max_size`, default 1000.
    pub x509_svid_cache_max_size: usize,
    /// `jwt_svid_cache_max_size`, default 1000.
    pub jwt_svid_cache_max_size: usize,
    /// `allow_unauthenticated_verifiers`, default false.
    pub allow_unauthenticated_verifiers: bool,
    /// `allowed_foreign_jwt_claims`.
    pub allowed_foreign_jwt_claims: Vec<String>,
    /// `authorized_delegates`.
    pub authorized_delegates: Vec<SpiffeId>,
    /// `disable_workload_api`, default false.
    pub disable_workload_api: bool,
    /// `disable_sds_api`, default false.
    pub disable_sds_api: bool,
    /// `sds {}`.
    pub sds: SdsConfig,
    /// `profiling_*`.
    pub profiling: ProfilingConfig,
    /// `ratelimit {}`: Workload API calls per second per caller (0 = off). SPIRE also reads
    /// these under `experimental.ratelimit`; a top-level value wins.
    pub ratelimit: AgentRateLimits,
    /// `experimental {}`.
    pub experimental: AgentExperimental,
    /// `plugins {}`: exactly one KeyManager and NodeAttestor, at least one WorkloadAttestor.
    pub plugins: Plugins,
    /// `health_checks {}`.
    pub health_checks: HealthChecks,
    /// `telemetry {}`.
    pub telemetry: TelemetryConfig,
}

/// Where the agent gets its bootstrap trust bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustBundleSource {
    /// `trust_bundle_path`.
    Path(PathBuf),
    /// `trust_bundle_url`, optionally fetched over `trust_bundle_unix_socket`.
    Url {
        /// The URL.
        url: String,
        /// `trust_bundle_unix_socket`.
        unix_socket: Option<PathBuf>,
    },
    /// `insecure_bootstrap = true`: trust the first server certificate.
    InsecureBootstrap,
}

/// `trust_bundle_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrustBundleFormat {
    /// `pem` (default).
    #[default]
    Pem,
    /// `spiffe` (SPIFFE bundle JSON).
    Spiffe,
}

/// `rebootstrap_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RebootstrapMode {
    /// `never` (default).
    #[default]
    Never,
    /// `auto`.
    Auto,
    /// `always`.
    Always,
}

/// `sds { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsConfig {
    /// `default_svid_name`, default `default`.
    pub default_svid_name: String,
    /// `default_bundle_name`, default `ROOTCA`.
    pub default_bundle_name: String,
    /// `default_all_bundles_name`, default `ALL`.
    pub default_all_bundles_name: String,
    /// `disable_spiffe_cert_validation`, default false.
    pub disable_spiffe_cert_validation: bool,
}

impl Default for SdsConfig {
    fn default() -> Self {
        Self {
            default_svid_name: "default".to_owned(),
            default_bundle_name: "ROOTCA".to_owned(),
            default_all_bundles_name: "ALL".to_owned(),
            disable_spiffe_cert_validation: false,
        }
    }
}

/// `agent.experimental {}`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentExperimental {
    /// `sync_interval`, default 5s.
    pub sync_interval: Duration,
    /// `use_sync_authorized_entries`, default true.
    pub use_sync_authorized_entries: bool,
    /// `jwt_svid_cache_hit_timeout`, default 30s.
    pub jwt_svid_cache_hit_timeout: Duration,
    /// `named_pipe_name` (Windows).
    pub named_pipe_name: Option<String>,
    /// `admin_named_pipe_name` (Windows).
    pub admin_named_pipe_name: Option<String>,
    /// `require_pq_kem`, default false.
    pub require_pq_kem: bool,
    /// `broker {}`, kept as written.
    pub broker: Option<Value>,
    /// `feature_flags`.
    pub feature_flags: Vec<String>,
}

/// `agent.ratelimit {}` (or `agent.experimental.ratelimit {}`); 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentRateLimits {
    /// `fetch_x509_svid`.
    pub fetch_x509_svid: u32,
    /// `fetch_jwt_svid`.
    pub fetch_jwt_svid: u32,
    /// `fetch_x509_bundles`.
    pub fetch_x509_bundles: u32,
    /// `fetch_jwt_bundles`.
    pub fetch_jwt_bundles: u32,
    /// `stream_secrets`.
    pub stream_secrets: u32,
    /// `fetch_secrets`.
    pub fetch_secrets: u32,
    /// `validate_jwt_svid`.
    pub validate_jwt_svid: u32,
}

/// Values from `spire-agent run` flags that override the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentOverrides {
    /// `-dataDir`.
    pub data_dir: Option<PathBuf>,
    /// `-serverAddress`.
    pub server_address: Option<String>,
    /// `-serverPort`.
    pub server_port: Option<u16>,
    /// `-socketPath`.
    pub socket_path: Option<PathBuf>,
    /// `-trustDomain`.
    pub trust_domain: Option<String>,
    /// `-trustBundle`.
    pub trust_bundle_path: Option<PathBuf>,
    /// `-trustBundleUrl`.
    pub trust_bundle_url: Option<String>,
    /// `-joinToken`.
    pub join_token: Option<String>,
    /// `-joinTokenFile`.
    pub join_token_file: Option<PathBuf>,
    /// `-allowUnauthenticatedVerifiers` (only when given).
    pub allow_unauthenticated_verifiers: Option<bool>,
    /// `-disableWorkloadAPI` (only when given).
    pub disable_workload_api: Option<bool>,
    /// `-disableSDSAPI` (only when given).
    pub disable_sds_api: Option<bool>,
    /// `-logFile`.
    pub log_file: Option<PathBuf>,
    /// `-logFormat`.
    pub log_format: Option<String>,
    /// `-logLevel`.
    pub log_level: Option<String>,
}

// === impl AgentConfig ===

impl AgentConfig {
    /// Reads, parses and validates an agent config file; `expand` is the `-expandEnv` lookup.
    pub fn load(
        path: &Path,
        expand: Option<EnvLookup<'_>>,
        overrides: &AgentOverrides,
    ) -> Result<Self, ConfigError> {
        let text = read_config_text(path, expand)?;
        Self::parse(&text, &path.display().to_string(), overrides)
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str, overrides: &AgentOverrides) -> Result<Self, ConfigError> {
        let tree = parse_tree(text, file)?;
        let raw: RawAgentFile = from_value(&tree).map_err(|e| ConfigError::from_de(file, "", e))?;
        raw.validate(file, overrides)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentFile {
    agent: Option<RawAgent>,
    plugins: Option<RawPlugins>,
    telemetry: Option<RawTelemetry>,
    health_checks: Option<RawHealthChecks>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    trust_domain: Option<String>,
    server_address: Option<String>,
    server_port: Option<u16>,
    data_dir: Option<String>,
    socket_path: Option<String>,
    admin_socket_path: Option<String>,
    trust_bundle_path: Option<String>,
    trust_bundle_url: Option<String>,
    trust_bundle_unix_socket: Option<String>,
    trust_bundle_format: Option<String>,
    insecure_bootstrap: Option<bool>,
    rebootstrap_mode: Option<String>,
    rebootstrap_delay: Option<GoDuration>,
    join_token: Option<String>,
    join_token_file: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    log_file: Option<String>,
    log_source_location: Option<bool>,
    log_selectors: Option<Vec<String>>,
    workload_x509_svid_key_type: Option<String>,
    availability_target: Option<GoDuration>,
    x509_svid_cache_max_size: Option<usize>,
    jwt_svid_cache_max_size: Option<usize>,
    allow_unauthenticated_verifiers: Option<bool>,
    allowed_foreign_jwt_claims: Option<Vec<String>>,
    authorized_delegates: Option<Vec<String>>,
    disable_workload_api: Option<bool>,
    disable_sds_api: Option<bool>,
    sds: Option<RawSds>,
    profiling_enabled: Option<bool>,
    profiling_port: Option<u16>,
    profiling_freq: Option<u64>,
    profiling_names: Option<Vec<String>>,
    ratelimit: Option<BTreeMap<String, u32>>,
    experimental: Option<RawAgentExperimental>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSds {
    default_svid_name: Option<String>,
    default_bundle_name: Option<String>,
    default_all_bundles_name: Option<String>,
    disable_spiffe_cert_validation: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentExperimental {
    sync_interval: Option<GoDuration>,
    use_sync_authorized_entries: Option<bool>,
    jwt_svid_cache_hit_timeout: Option<GoDuration>,
    named_pipe_name: Option<String>,
    admin_named_pipe_name: Option<String>,
    require_pq_kem: Option<bool>,
    ratelimit: Option<BTreeMap<String, u32>>,
    broker: Option<Value>,
    feature_flags: Option<Vec<String>>,
}

const AGENT_PLUGIN_TYPES: &[(&str, Cardinality)] = &[
    ("KeyManager", Cardinality::ExactlyOne),
    ("NodeAttestor", Cardinality::ExactlyOne),
    ("WorkloadAttestor", Cardinality::AtLeastOne),
    ("SVIDStore", Cardinality::Any),
];

fn dur(d: Option<GoDuration>, default: Duration) -> Duration {
    d.map_or(default, |d| d.0)
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl RawAgentFile {
    fn validate(self, file: &str, o: &AgentOverrides) -> Result<AgentConfig, ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::invalid(file, key, reason);
        let Some(a) = self.agent else {
            return Err(invalid("agent", "the agent block is required".to_owned()));
        };

        let td_text = non_empty(o.trust_domain.clone().or(a.trust_domain))
            .ok_or_else(|| invalid("agent.trust_domain", "is required".to_owned()))?;
        let trust_domain: TrustDomain = td_text.parse().map_err(|e| {
            invalid(
                "agent.trust_domain",
                format!("invalid trust domain {td_text:?}: {e}"),
            )
        })?;
        let server_address = non_empty(o.server_address.clone().or(a.server_address))
            .ok_or_else(|| invalid("agent.server_address", "is required".to_owned()))?;
        let server_port = o
            .server_port
            .or(a.server_port)
            .ok_or_else(|| invalid("agent.server_port", "is required".to_owned()))?;
        if server_port == 0 {
            return Err(invalid(
                "agent.server_port",
                "must be between 1 and 65535".to_owned(),
            ));
        }
        parse_server_targets(&server_address, server_port)
            .map_err(|reason| invalid("agent.server_address", reason))?;

        let path = o
            .trust_bundle_path
            .clone()
            .or(non_empty(a.trust_bundle_path).map(PathBuf::from));
        let url = non_empty(o.trust_bundle_url.clone().or(a.trust_bundle_url));
        let insecure = a.insecure_bootstrap.unwrap_or(false);
        let trust_bundle = match (path, url, insecure) {
            (Some(p), None, false) => TrustBundleSource::Path(p),
            (None, Some(url), false) => {
                if !url.starts_with("https://") && !url.starts_with("http://") {
                    return Err(invalid(
                        "agent.trust_bundle_url",
                        format!("expected an http:// or https:// URL, got {url:?}"),
                    ));
                }
                TrustBundleSource::Url {
                    url,
                    unix_socket: non_empty(a.trust_bundle_unix_socket).map(PathBuf::from),
                }
            }
            (None, None, true) => TrustBundleSource::InsecureBootstrap,
            (None, None, false) => {
                return Err(invalid(
                    "agent.trust_bundle_path",
                    "one of trust_bundle_path, trust_bundle_url or insecure_bootstrap must be set"
                        .to_owned(),
                ));
            }
            _ => {
                return Err(invalid(
                    "agent.trust_bundle_path",
                    "only one of trust_bundle_path, trust_bundle_url or insecure_bootstrap may be set".to_owned(),
                ));
            }
        };
        let trust_bundle_format = match a.trust_bundle_format.as_deref().unwrap_or("pem") {
            "pem" | "" => TrustBundleFormat::Pem,
            "spiffe" => TrustBundleFormat::Spiffe,
            other => {
                return Err(invalid(
                    "agent.trust_bundle_format",
                    format!("unknown format {other:?}, expected pem or spiffe"),
                ));
            }
        };
        let rebootstrap_mode = match a.rebootstrap_mode.as_deref().unwrap_or("never") {
            "never" | "" => RebootstrapMode::Never,
            "auto" => RebootstrapMode::Auto,
            "always" => RebootstrapMode::Always,
            other => {
                return Err(invalid(
                    "agent.rebootstrap_mode",
                    format!("unknown mode {other:?}, expected never, auto or always"),
                ));
            }
        };

        let join_token = non_empty(o.join_token.clone().or(a.join_token)).map(Secret::new);
        let join_token_file = o
            .join_token_file
            .clone()
            .or(non_empty(a.join_token_file).map(PathBuf::from));
        if join_token.is_some() && join_token_file.is_some() {
            return Err(invalid(
                "agent.join_token",
                "only one of join_token or join_token_file may be set".to_owned(),
            ));
        }

        let log = LogSettings {
            level: parse_setting(
                file,
                "agent.log_level",
                o.log_level
                    .as_deref()
                    .or(a.log_level.as_deref())
                    .unwrap_or("info"),
            )?,
            format: parse_setting(
                file,
                "agent.log_format",
                o.log_format
                    .as_deref()
                    .or(a.log_format.as_deref())
                    .unwrap_or("text"),
            )?,
            file: o
                .log_file
                .clone()
                .or(non_empty(a.log_file).map(PathBuf::from)),
            source_location: a.log_source_location.unwrap_or(false),
        };

        let workload_x509_svid_key_type: KeyType = match &a.workload_x509_svid_key_type {
            Some(k) => parse_setting(file, "agent.workload_x509_svid_key_type", k)?,
            None => KeyType::EcP256,
        };
        if workload_x509_svid_key_type == KeyType::Rsa4096 {
            return Err(invalid(
                "agent.workload_x509_svid_key_type",
                "unsupported key type \"rsa-4096\", expected one of rsa-2048, ec-p256, ec-p384"
                    .to_owned(),
            ));
        }

        let availability_target = a.availability_target.map(Duration::from);
        if let Some(t) = availability_target
            && t < Duration::from_secs(24 * 3600)
        {
            return Err(invalid(
                "agent.availability_target",
                "must be at least 24h".to_owned(),
            ));
        }

        let mut authorized_delegates = Vec::new();
        for (i, id) in a
            .authorized_delegates
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            authorized_delegates.push(id.parse::<SpiffeId>().map_err(|e| {
                invalid(
                    &format!("agent.authorized_delegates[{i}]"),
                    format!("invalid SPIFFE ID {id:?}: {e}"),
                )
            })?);
        }

        let sds = match a.sds {
            Some(s) => {
                let d = SdsConfig::default();
                SdsConfig {
                    default_svid_name: s.default_svid_name.unwrap_or(d.default_svid_name),
                    default_bundle_name: s.default_bundle_name.unwrap_or(d.default_bundle_name),
                    default_all_bundles_name: s
                        .default_all_bundles_name
                        .unwrap_or(d.default_all_bundles_name),
                    disable_spiffe_cert_validation: s
                        .disable_spiffe_cert_validation
                        .unwrap_or(false),
                }
            }
            None => SdsConfig::default(),
        };

        let x = a.experimental.unwrap_or_default();
        let mut ratelimit = AgentRateLimits::default();
        apply_ratelimits(
            &mut ratelimit,
            x.ratelimit.unwrap_or_default(),
            file,
            "agent.experimental.ratelimit",
        )?;
        apply_ratelimits(
            &mut ratelimit,
            a.ratelimit.unwrap_or_default(),
            file,
            "agent.ratelimit",
        )?;
        let experimental = AgentExperimental {
            sync_interval: dur(x.sync_interval, Duration::from_secs(5)),
            use_sync_authorized_entries: x.use_sync_authorized_entries.unwrap_or(true),
            jwt_svid_cache_hit_timeout: dur(x.jwt_svid_cache_hit_timeout, Duration::from_secs(30)),
            named_pipe_name: x.named_pipe_name,
            admin_named_pipe_name: x.admin_named_pipe_name,
            require_pq_kem: x.require_pq_kem.unwrap_or(false),
            broker: x.broker,
            feature_flags: x.feature_flags.unwrap_or_default(),
        };
        if experimental.sync_interval.is_zero() {
            return Err(invalid(
                "agent.experimental.sync_interval",
                "must be greater than 0".to_owned(),
            ));
        }

        let socket_path = o
            .socket_path
            .clone()
            .or(non_empty(a.socket_path).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_AGENT_SOCKET_PATH));
        let admin_socket_path = non_empty(a.admin_socket_path).map(PathBuf::from);
        if admin_socket_path.as_ref() == Some(&socket_path) {
            return Err(invalid(
                "agent.admin_socket_path",
                "must differ from socket_path".to_owned(),
            ));
        }

        Ok(AgentConfig {
            trust_domain,
            server_address,
            server_port,
            data_dir: o
                .data_dir
                .clone()
                .or(non_empty(a.data_dir).map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(".")),
            socket_path,
            admin_socket_path,
            trust_bundle,
            trust_bundle_format,
            rebootstrap_mode,
            rebootstrap_delay: dur(a.rebootstrap_delay, Duration::from_secs(600)),
            join_token,
            join_token_file,
            log,
            log_selectors: a.log_selectors.unwrap_or_default(),
            workload_x509_svid_key_type,
            availability_target,
            x509_svid_cache_max_size: a.x509_svid_cache_max_size.unwrap_or(1000),
            jwt_svid_cache_max_size: a.jwt_svid_cache_max_size.unwrap_or(1000),
            allow_unauthenticated_verifiers: o
                .allow_unauthenticated_verifiers
                .or(a.allow_unauthenticated_verifiers)
                .unwrap_or(false),
            allowed_foreign_jwt_claims: a.allowed_foreign_jwt_claims.unwrap_or_default(),
            authorized_delegates,
            disable_workload_api: o
                .disable_workload_api
                .or(a.disable_workload_api)
                .unwrap_or(false),
            disable_sds_api: o.disable_sds_api.or(a.disable_sds_api).unwrap_or(false),
            sds,
            ratelimit,
            profiling: ProfilingConfig {
                enabled: a.profiling_enabled.unwrap_or(false),
                port: a.profiling_port,
                freq: a.profiling_freq,
                names: a.profiling_names.unwrap_or_default(),
            },
            experimental,
            plugins: Plugins::from_raw(self.plugins.unwrap_or_default(), file, AGENT_PLUGIN_TYPES)?,
            health_checks: self.health_checks.unwrap_or_default().into(),
            telemetry: self.telemetry.unwrap_or_default().validate(file)?,
        })
    }
}

impl AgentConfig {
    /// The servers to dial, as `host:port` (IPv6 literals in brackets), in the configured
    /// order: each item of `server_address` with its own port or `server_port`. A host name
    /// may resolve to several addresses; the agent dials all of them (see the agent's client).
    pub fn server_targets(&self) -> Vec<String> {
        // Validated when the file was parsed; an unparsable value (built by hand) is kept as
        // one opaque target so that dialing reports it.
        parse_server_targets(&self.server_address, self.server_port)
            .unwrap_or_else(|_| vec![self.server_address.clone()])
    }
}

/// Splits `server_address` into `host:port` targets: items separated by commas, each a host
/// name, an IPv4 address, a bare or bracketed IPv6 address, or any of these (IPv6 bracketed)
/// followed by `:port`. Items without a port get `default_port`.
pub(crate) fn parse_server_targets(
    address: &str,
    default_port: u16,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for raw in address.split(',') {
        let item = raw.trim();
        if item.is_empty() {
            return Err(format!(
                "empty item in {address:?}: expected host names or IPs separated by commas"
            ));
        }
        let (host, port) = split_host_port(item)?;
        let port = port.unwrap_or(default_port);
        if host.contains(':') {
            out.push(format!("[{host}]:{port}"));
        } else {
            out.push(format!("{host}:{port}"));
        }
    }
    Ok(out)
}

fn split_host_port(item: &str) -> Result<(&str, Option<u16>), String> {
    let bad_port = |p: &str| {
        format!("invalid port {p:?} in {item:?}: expected an integer between 1 and 65535")
    };
    let parse_port = |p: &str| match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad_port(p)),
        Ok(n) => Ok(n),
    };
    let (host, port) = if let Some(rest) = item.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{item:?} lacks the closing ']' of an IPv6 address"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{host:?} in {item:?} is not an IPv6 address"));
        }
        match after {
            "" => (host, None),
            p => match p.strip_prefix(':') {
                Some(p) => (host, Some(parse_port(p)?)),
                None => return Err(format!("unexpected {p:?} after ']' in {item:?}")),
            },
        }
    } else if item.parse::<std::net::Ipv6Addr>().is_ok() {
        (item, None)
    } else {
        match item.rsplit_once(':') {
            Some((host, p)) => (host, Some(parse_port(p)?)),
            None => (item, None),
        }
    };
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if !valid {
        return Err(format!(
            "{host:?} is not a host name or IP address (write IPv6 with a port as [addr]:port)"
        ));
    }
    Ok((host, port))
}

fn apply_ratelimits(
    limits: &mut AgentRateLimits,
    values: BTreeMap<String, u32>,
    file: &str,
    key: &str,
) -> Result<(), ConfigError> {
    for (name, value) in values {
        let slot = match name.as_str() {
            "fetch_x509_svid" => &mut limits.fetch_x509_svid,
            "fetch_jwt_svid" => &mut limits.fetch_jwt_svid,
            "fetch_x509_bundles" => &mut limits.fetch_x509_bundles,
            "fetch_jwt_bundles" => &mut limits.fetch_jwt_bundles,
            "stream_secrets" => &mut limits.stream_secrets,
            "fetch_secrets" => &mut limits.fetch_secrets,
            "validate_jwt_svid" => &mut limits.validate_jwt_svid,
            other => {
                return Err(ConfigError::invalid(
                    file,
                    format!("{key}.{other}"),
                    "unknown key, expected one of fetch_x509_svid, fetch_jwt_svid, fetch_x509_bundles, \
                     fetch_jwt_bundles, validate_jwt_svid, stream_secrets, fetch_secrets"
                        .to_owned(),
                ));
            }
        };
        *slot = value;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::LogLevel;

    const SAMPLE: &str = r#"
# A SPIRE-style agent config.
agent {
    data_dir = "./.data"
    log_level = "DEBUG"
    server_address = "127.0.0.1"
    server_port = "8081"
    socket_path ="/tmp/spire-agent/public/api.sock"
    trust_bundle_path = "./conf/agent/dummy_root_ca.crt"
    trust_domain = "example.org"
    admin_socket_path = "/tmp/spire-agent/private/admin.sock"
    allow_unauthenticated_verifiers = "false"
    x509_svid_cache_max_size = "500"
    authorized_delegates = [
        "spiffe://example.org/authorized_client1",
    ]
    ratelimit {
        validate_jwt_svid = "3"
    }
    sds {
        default_svid_name = "my_svid"
        default_bundle_name = "ROOTCA"
    }
    experimental {
        sync_interval = "1s"
        ratelimit {
            fetch_x509_svid = 10
        }
    }
}

plugins {
    NodeAttestor "join_token" {
        plugin_data {
        }
    }
    KeyManager "disk" {
        plugin_data {
            directory = "./.data"
        }
    }
    WorkloadAttestor "unix" {
        plugin_data {
            discover_workload_path = "true"
            workload_size_limit = "-1"
        }
    }
}
"#;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(text, "agent.conf", &AgentOverrides::default())
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct UnixData {
        discover_workload_path: bool,
        workload_size_limit: i64,
    }

    #[test]
    fn sample_agent_conf() {
        let c = parse(SAMPLE).unwrap();
        assert_eq!(c.trust_domain.as_str(), "example.org");
        assert_eq!(c.server_address, "127.0.0.1");
        assert_eq!(c.server_port, 8081);
        assert_eq!(c.data_dir, PathBuf::from("./.data"));
        assert_eq!(c.log.level, LogLevel::Debug);
        assert_eq!(c.socket_path, PathBuf::from(DEFAULT_AGENT_SOCKET_PATH));
        assert_eq!(
            c.admin_socket_path,
            Some(PathBuf::from("/tmp/spire-agent/private/admin.sock"))
        );
        assert_eq!(
            c.trust_bundle,
            TrustBundleSource::Path("./conf/agent/dummy_root_ca.crt".into())
        );
        assert_eq!(c.trust_bundle_format, TrustBundleFormat::Pem);
        assert_eq!(c.x509_svid_cache_max_size, 500);
        assert_eq!(c.jwt_svid_cache_max_size, 1000);
        assert_eq!(
            c.authorized_delegates[0].as_str(),
            "spiffe://example.org/authorized_client1"
        );
        assert_eq!(c.sds.default_svid_name, "my_svid");
        assert_eq!(c.sds.default_all_bundles_name, "ALL");
        assert_eq!(c.experimental.sync_interval, Duration::from_secs(1));
        assert_eq!(c.ratelimit.fetch_x509_svid, 10);
        assert_eq!(c.ratelimit.validate_jwt_svid, 3);
        assert!(c.experimental.use_sync_authorized_entries);
        assert_eq!(c.plugins.single("NodeAttestor").unwrap().name, "join_token");
        let unix = c.plugins.single("WorkloadAttestor").unwrap();
        let data: UnixData = unix.plugin_data().unwrap();
        assert!(data.discover_workload_path);
        assert_eq!(data.workload_size_limit, -1);
        #[derive(Debug, Deserialize)]
        struct Disk {
            directory: PathBuf,
        }
        let disk: Disk = c
            .plugins
            .single("KeyManager")
            .unwrap()
            .plugin_data()
            .unwrap();
        assert_eq!(disk.directory, PathBuf::from("./.data"));
    }

    #[test]
    fn defaults_and_overrides() {
        let minimal = SAMPLE
            .lines()
            .filter(|l| {
                ![
                    "data_dir",
                    "socket_path",
                    "admin_socket_path",
                    "x509_svid_cache_max_size",
                    "log_level",
                ]
                .iter()
                .any(|k| l.trim_start().starts_with(k))
            })
            .collect::<Vec<_>>()
            .join("\n");
        let c = parse(&minimal).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("."));
        assert_eq!(
            c.socket_path,
            PathBuf::from("/tmp/spire-agent/public/api.sock")
        );
        assert_eq!(c.admin_socket_path, None);
        assert_eq!(c.x509_svid_cache_max_size, 1000);
        assert_eq!(c.log.level, LogLevel::Info);
        assert_eq!(c.rebootstrap_mode, RebootstrapMode::Never);
        assert_eq!(c.rebootstrap_delay, Duration::from_secs(600));
        assert_eq!(c.workload_x509_svid_key_type, KeyType::EcP256);
        assert_eq!(
            c.experimental.jwt_svid_cache_hit_timeout,
            Duration::from_secs(30)
        );

        let o = AgentOverrides {
            server_address: Some("spire-server".into()),
            server_port: Some(9090),
            trust_domain: Some("td.test".into()),
            join_token: Some("tok".into()),
            socket_path: Some("/run/agent.sock".into()),
            disable_sds_api: Some(true),
            ..AgentOverrides::default()
        };
        let c = AgentConfig::parse(&minimal, "agent.conf", &o).unwrap();
        assert_eq!(c.server_address, "spire-server");
        assert_eq!(c.server_port, 9090);
        assert_eq!(c.trust_domain.as_str(), "td.test");
        assert_eq!(c.join_token.as_ref().map(Secret::expose), Some("tok"));
        assert!(
            !format!("{c:?}").contains("\"tok\""),
            "join token must not appear in Debug output"
        );
        assert_eq!(c.socket_path, PathBuf::from("/run/agent.sock"));
        assert!(c.disable_sds_api);

        let o = AgentOverrides {
            trust_bundle_url: Some("https://x/bundle".into()),
            ..AgentOverrides::default()
        };
        let e = AgentConfig::parse(&minimal, "agent.conf", &o).unwrap_err();
        assert_eq!(
            e.to_string(),
            "agent.conf: agent.trust_bundle_path: only one of trust_bundle_path, trust_bundle_url or insecure_bootstrap may be set"
        );
    }

    #[test]
    fn server_address_forms() {
        let t = |a: &str| parse_server_targets(a, 8081);
        assert_eq!(t("127.0.0.1").unwrap(), ["127.0.0.1:8081"]);
        assert_eq!(t("spire-server").unwrap(), ["spire-server:8081"]);
        assert_eq!(t("::1").unwrap(), ["[::1]:8081"]);
        assert_eq!(t("[::1]").unwrap(), ["[::1]:8081"]);
        assert_eq!(t("[::1]:9000").unwrap(), ["[::1]:9000"]);
        assert_eq!(
            t("a.example.org, b.example.org:9000,10.0.0.3").unwrap(),
            ["a.example.org:8081", "b.example.org:9000", "10.0.0.3:8081"]
        );
        assert_eq!(
            t("fd00::1,[fd00::2]:9").unwrap(),
            ["[fd00::1]:8081", "[fd00::2]:9"]
        );
        for (bad, want) in [
            ("a,,b", "empty item"),
            ("a,", "empty item"),
            ("a:0", "invalid port \"0\""),
            ("a:http", "invalid port \"http\""),
            ("[::1", "lacks the closing"),
            ("[host]:1", "is not an IPv6 address"),
            ("[::1]x", "unexpected \"x\""),
            ("https://a", "invalid port"),
            ("a/b", "is not a host name"),
            ("a b", "is not a host name"),
        ] {
            let e = t(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
        let c = parse(&SAMPLE.replace(
            "server_address = \"127.0.0.1\"",
            "server_address = \"s1, s2:9000\"",
        ))
        .unwrap();
        assert_eq!(c.server_targets(), ["s1:8081", "s2:9000"]);
        let e =
            parse(&SAMPLE.replace("server_address = \"127.0.0.1\"", "server_address = \"s1,\""))
                .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("agent.conf: agent.server_address: empty item"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let cases = [
            (
                SAMPLE.replace("server_port = \"8081\"", "server_port = \"http\""),
                "agent.conf: agent.server_port: expected a non-negative integer, got \"http\"",
            ),
            (
                SAMPLE.replace("server_port = \"8081\"", ""),
                "agent.conf: agent.server_port: is required",
            ),
            (
                SAMPLE.replace("server_address = \"127.0.0.1\"", ""),
                "agent.conf: agent.server_address: is required",
            ),
            (
                SAMPLE.replace("trust_bundle_path = \"./conf/agent/dummy_root_ca.crt\"", ""),
                "agent.conf: agent.trust_bundle_path: one of trust_bundle_path, trust_bundle_url or insecure_bootstrap must be set",
            ),
            (
                SAMPLE.replace("sync_interval = \"1s\"", "sync_interval = \"soon\""),
                "agent.conf: agent.experimental.sync_interval: invalid duration \"soon\"",
            ),
            (
                SAMPLE.replace("sync_interval = \"1s\"", "sync_everything = true"),
                "agent.conf: agent.experimental.sync_everything: unknown field `sync_everything`",
            ),
            (
                SAMPLE.replace("fetch_x509_svid = 10", "fetch_everything = 10"),
                "agent.conf: agent.experimental.ratelimit.fetch_everything: unknown key",
            ),
            (
                SAMPLE.replace(
                    "trust_domain = \"example.org\"",
                    "trust_domain = \"example.org\"\ntrust_bundle_format = \"der\"",
                ),
                "agent.conf: agent.trust_bundle_format: unknown format \"der\", expected pem or spiffe",
            ),
            (
                SAMPLE.replace("\"spiffe://example.org/authorized_client1\"", "\"client1\""),
                "agent.conf: agent.authorized_delegates[0]: invalid SPIFFE ID \"client1\"",
            ),
            (
                SAMPLE.replace("WorkloadAttestor \"unix\"", "SVIDStore \"x\""),
                "agent.conf: plugins.WorkloadAttestor: expected at least one enabled plugin, found 0",
            ),
            (
                SAMPLE.replace("data_dir", "date_dir"),
                "agent.conf: agent.date_dir: unknown field `date_dir`",
            ),
        ];
        for (text, want) in cases {
            let got = parse(&text).unwrap_err().to_string();
            assert!(got.starts_with(want), "got:  {got}\nwant: {want}");
        }

        let c = parse(&SAMPLE.replace(
            "workload_size_limit = \"-1\"",
            "workload_size_limit = \"big\"",
        ))
        .unwrap();
        let e = c
            .plugins
            .single("WorkloadAttestor")
            .unwrap()
            .plugin_data::<UnixData>()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "agent.conf: plugins.WorkloadAttestor.unix.plugin_data.workload_size_limit: expected an integer, got \"big\""
        );
    }
}
