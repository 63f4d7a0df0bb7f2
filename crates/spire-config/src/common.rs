//! Types shared by the server and agent configs: logging, key types, `telemetry {}` and
//! `health_checks {}`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

use crate::ConfigError;

/// Log level names SPIRE accepts (case-insensitive), `log_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum LogLevel {
    /// `panic`.
    Panic,
    /// `fatal`.
    Fatal,
    /// `error`.
    Error,
    /// `warn` (or `warning`).
    Warn,
    /// `info` (SPIRE's default).
    #[default]
    Info,
    /// `debug`.
    Debug,
    /// `trace`.
    Trace,
}

impl LogLevel {
    /// The lower-case name (`info`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Panic => "panic",
            LogLevel::Fatal => "fatal",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "panic" => LogLevel::Panic,
            "fatal" => LogLevel::Fatal,
            "error" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => {
                return Err(format!(
                    "unknown log level {s:?}, expected one of panic, fatal, error, warn, info, debug, trace"
                ));
            }
        })
    }
}

/// `log_format`: `text` (default) or `json`, case-insensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" | "" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("unknown log format {s:?}, expected text or json")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// The logging settings of one binary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogSettings {
    /// `log_level`, default info.
    pub level: LogLevel,
    /// `log_format`, default text.
    pub format: LogFormat,
    /// `log_file`; stderr when unset.
    pub file: Option<PathBuf>,
    /// `log_source_location`, default false.
    pub source_location: bool,
}

/// Key types for `ca_key_type`, `jwt_key_type`, `workload_x509_svid_key_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyType {
    /// `rsa-2048`.
    Rsa2048,
    /// `rsa-4096`.
    Rsa4096,
    /// `ec-p256` (the default).
    #[default]
    EcP256,
    /// `ec-p384`.
    EcP384,
}

impl KeyType {
    /// SPIRE's spelling (`ec-p256`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa4096 => "rsa-4096",
            KeyType::EcP256 => "ec-p256",
            KeyType::EcP384 => "ec-p384",
        }
    }
}

impl FromStr for KeyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rsa-2048" => Ok(KeyType::Rsa2048),
            "rsa-4096" => Ok(KeyType::Rsa4096),
            "ec-p256" => Ok(KeyType::EcP256),
            "ec-p384" => Ok(KeyType::EcP384),
            _ => Err(format!(
                "unknown key type {s:?}, expected one of rsa-2048, rsa-4096, ec-p256, ec-p384"
            )),
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `profiling_enabled`, `profiling_port`, `profiling_freq`, `profiling_names`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProfilingConfig {
    /// `profiling_enabled`.
    pub enabled: bool,
    /// `profiling_port`.
    pub port: Option<u16>,
    /// `profiling_freq` (seconds).
    pub freq: Option<u64>,
    /// `profiling_names`.
    pub names: Vec<String>,
}

/// `health_checks { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChecks {
    /// `listener_enabled`, default false.
    pub listener_enabled: bool,
    /// `bind_address`, default `localhost`.
    pub bind_address: String,
    /// `bind_port`, default 80.
    pub bind_port: u16,
    /// `live_path`, default `/live`.
    pub live_path: String,
    /// `ready_path`, default `/ready`.
    pub ready_path: String,
}

impl Default for HealthChecks {
    fn default() -> Self {
        Self {
            listener_enabled: false,
            bind_address: "localhost".to_owned(),
            bind_port: 80,
            live_path: "/live".to_owned(),
            ready_path: "/ready".to_owned(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthChecks {
    listener_enabled: Option<bool>,
    bind_address: Option<String>,
    bind_port: Option<u16>,
    live_path: Option<String>,
    ready_path: Option<String>,
}

impl From<RawHealthChecks> for HealthChecks {
    fn from(raw: RawHealthChecks) -> Self {
        let d = HealthChecks::default();
        Self {
            listener_enabled: raw.listener_enabled.unwrap_or(d.listener_enabled),
            bind_address: raw.bind_address.unwrap_or(d.bind_address),
            bind_port: raw.bind_port.unwrap_or(d.bind_port),
            live_path: raw.live_path.unwrap_or(d.live_path),
            ready_path: raw.ready_path.unwrap_or(d.ready_path),
        }
    }
}

/// `telemetry { ... }`: which metric sinks to run and how to name metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TelemetryConfig {
    /// `Prometheus { host, port }`.
    pub prometheus: Option<PrometheusConfig>,
    /// `Statsd = [{ address }]`.
    pub statsd: Vec<String>,
    /// `DogStatsd = [{ address }]`.
    pub dogstatsd: Vec<String>,
    /// `M3 = [{ address, env }]`.
    pub m3: Vec<M3Config>,
    /// `InMem {}` present (and not `enabled = false`).
    pub in_mem: bool,
    /// `MetricPrefix`; `None` means the binary's default (`spire_server` / `spire_agent`).
    pub metric_prefix: Option<String>,
    /// `EnableTrustDomainLabel`, default false.
    pub enable_trust_domain_label: bool,
    /// `EnableHostnameLabel`, default true.
    pub enable_hostname_label: bool,
    /// `AllowedPrefixes`.
    pub allowed_prefixes: Vec<String>,
    /// `BlockedPrefixes`.
    pub blocked_prefixes: Vec<String>,
    /// `AllowedLabels`.
    pub allowed_labels: Vec<String>,
    /// `BlockedLabels`.
    pub blocked_labels: Vec<String>,
}

/// `telemetry { Prometheus { host, port } }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusConfig {
    /// `host`, default `localhost`.
    pub host: String,
    /// `port` (required).
    pub port: u16,
    /// `tls {}`; plain HTTP when unset.
    pub tls: Option<PrometheusTls>,
}

/// `telemetry { Prometheus { tls { ... } } }`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrometheusTls {
    /// `use_spire_svid`: serve with the process's own SVID.
    pub use_spire_svid: bool,
    /// `authorized_spiffe_ids`: clients allowed (mTLS with SPIFFE IDs).
    pub authorized_spiffe_ids: Vec<String>,
    /// `cert_file`.
    pub cert_file: Option<PathBuf>,
    /// `key_file`.
    pub key_file: Option<PathBuf>,
    /// `client_ca_file`.
    pub client_ca_file: Option<PathBuf>,
}

/// One `M3` sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct M3Config {
    /// `address`.
    pub address: String,
    /// `env`.
    pub env: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelemetry {
    #[serde(rename = "Prometheus")]
    prometheus: Option<RawPrometheus>,
    #[serde(rename = "Statsd")]
    statsd: Option<Vec<RawAddress>>,
    #[serde(rename = "DogStatsd")]
    dogstatsd: Option<Vec<RawAddress>>,
    #[serde(rename = "M3")]
    m3: Option<Vec<RawM3>>,
    #[serde(rename = "InMem")]
    in_mem: Option<RawInMem>,
    #[serde(rename = "MetricPrefix")]
    metric_prefix: Option<String>,
    #[serde(rename = "EnableTrustDomainLabel")]
    enable_trust_domain_label: Option<bool>,
    #[serde(rename = "EnableHostnameLabel")]
    enable_hostname_label: Option<bool>,
    #[serde(rename = "AllowedPrefixes")]
    allowed_prefixes: Option<Vec<String>>,
    #[serde(rename = "BlockedPrefixes")]
    blocked_prefixes: Option<Vec<String>>,
    #[serde(rename = "AllowedLabels")]
    allowed_labels: Option<Vec<String>>,
    #[serde(rename = "BlockedLabels")]
    blocked_labels: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrometheus {
    host: Option<String>,
    port: Option<u16>,
    tls: Option<RawPrometheusTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrometheusTls {
    use_spire_svid: Option<bool>,
    authorized_spiffe_ids: Option<Vec<String>>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAddress {
    address: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawM3 {
    address: String,
    env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInMem {
    enabled: Option<bool>,
}

impl RawTelemetry {
    pub(crate) fn validate(self, file: &str) -> Result<TelemetryConfig, ConfigError> {
        let prometheus = match self.prometheus {
            Some(p) => {
                let key = "telemetry.Prometheus";
                let port = p.port.ok_or_else(|| {
                    ConfigError::invalid(file, format!("{key}.port"), "is required".to_owned())
                })?;
                let tls = match p.tls {
                    Some(t) => {
                        let tls = PrometheusTls {
                            use_spire_svid: t.use_spire_svid.unwrap_or(false),
                            authorized_spiffe_ids: t.authorized_spiffe_ids.unwrap_or_default(),
                            cert_file: t.cert_file.filter(|f| !f.is_empty()).map(PathBuf::from),
                            key_file: t.key_file.filter(|f| !f.is_empty()).map(PathBuf::from),
                            client_ca_file: t
                                .client_ca_file
                                .filter(|f| !f.is_empty())
                                .map(PathBuf::from),
                        };
                        if !tls.use_spire_svid
                            && (tls.cert_file.is_none() || tls.key_file.is_none())
                        {
                            return Err(ConfigError::invalid(
                                file,
                                format!("{key}.tls"),
                                "cert_file and key_file are required unless use_spire_svid is true"
                                    .to_owned(),
                            ));
                        }
                        if !tls.authorized_spiffe_ids.is_empty() && tls.client_ca_file.is_some() {
                            return Err(ConfigError::invalid(
                                file,
                                format!("{key}.tls"),
                                "authorized_spiffe_ids and client_ca_file are mutually exclusive"
                                    .to_owned(),
                            ));
                        }
                        Some(tls)
                    }
                    None => None,
                };
                Some(PrometheusConfig {
                    host: p
                        .host
                        .filter(|h| !h.is_empty())
                        .unwrap_or_else(|| "localhost".to_owned()),
                    port,
                    tls,
                })
            }
            None => None,
        };
        let addresses = |v: Option<Vec<RawAddress>>| {
            v.unwrap_or_default()
                .into_iter()
                .map(|a| a.address)
                .collect()
        };
        Ok(TelemetryConfig {
            prometheus,
            statsd: addresses(self.statsd),
            dogstatsd: addresses(self.dogstatsd),
            m3: self
                .m3
                .unwrap_or_default()
                .into_iter()
                .map(|m| M3Config {
                    address: m.address,
                    env: m.env.unwrap_or_default(),
                })
                .collect(),
            in_mem: self.in_mem.is_some_and(|m| m.enabled.unwrap_or(true)),
            metric_prefix: self.metric_prefix,
            enable_trust_domain_label: self.enable_trust_domain_label.unwrap_or(false),
            enable_hostname_label: self.enable_hostname_label.unwrap_or(true),
            allowed_prefixes: self.allowed_prefixes.unwrap_or_default(),
            blocked_prefixes: self.blocked_prefixes.unwrap_or_default(),
            allowed_labels: self.allowed_labels.unwrap_or_default(),
            blocked_labels: self.blocked_labels.unwrap_or_default(),
        })
    }
}

/// Parses a string-valued setting with `FromStr`, naming the key on failure.
pub(crate) fn parse_setting<T: FromStr<Err = String>>(
    file: &str,
    key: &str,
    value: &str,
) -> Result<T, ConfigError> {
    value
        .parse()
        .map_err(|reason| ConfigError::invalid(file, key, reason))
}

/// A secret string (a join token) that never shows in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret value; do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
