//! The server config file: `server {}`, `plugins {}`, `telemetry {}`, `health_checks {}`.
//!
//! Defaults mirror SPIRE's `cmd/spire-server/cli/run/run.go`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use spire_spiffe::{SpiffeId, TrustDomain};

use crate::common::{
    HealthChecks, KeyType, LogSettings, ProfilingConfig, RawHealthChecks, RawTelemetry,
    TelemetryConfig, parse_setting,
};
use crate::de::from_value;
use crate::duration::GoDuration;
use crate::plugins::{Cardinality, Plugins, RawPlugins};
use crate::{ConfigError, EnvLookup, parse_tree, read_config_text};

/// Default `socket_path` of the server API.
pub const DEFAULT_SERVER_SOCKET_PATH: &str = "/tmp/spire-server/private/api.sock";

/// A validated server config file.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// `trust_domain` (required).
    pub trust_domain: TrustDomain,
    /// `bind_address`: an IP address or DNS name, default `0.0.0.0`.
    pub bind_address: String,
    /// `bind_port`, default 8081.
    pub bind_port: u16,
    /// `socket_path`, default `/tmp/spire-server/private/api.sock`.
    pub socket_path: PathBuf,
    /// `data_dir`, default `.`.
    pub data_dir: PathBuf,
    /// `log_level`, `log_format`, `log_file`, `log_source_location`.
    pub log: LogSettings,
    /// `ca_key_type`, default ec-p256.
    pub ca_key_type: KeyType,
    /// `jwt_key_type`, default `ca_key_type`.
    pub jwt_key_type: KeyType,
    /// `ca_ttl`, default 24h.
    pub ca_ttl: Duration,
    /// `ca_subject`, default C=US, O=SPIFFE.
    pub ca_subject: CaSubject,
    /// `default_x509_svid_ttl`, default 1h.
    pub default_x509_svid_ttl: Duration,
    /// `default_jwt_svid_ttl`, default 5m.
    pub default_jwt_svid_ttl: Duration,
    /// `agent_ttl`, default `default_x509_svid_ttl`.
    pub agent_ttl: Duration,
    /// `jwt_issuer`; the `iss` claim is omitted when unset.
    pub jwt_issuer: Option<String>,
    /// `disable_jwt_svids`, default false.
    pub disable_jwt_svids: bool,
    /// `admin_ids`.
    pub admin_ids: Vec<SpiffeId>,
    /// `audit_log_enabled`, default false.
    pub audit_log_enabled: bool,
    /// `federation {}`.
    pub federation: FederationConfig,
    /// `ratelimit {}`.
    pub ratelimit: ServerRateLimit,
    /// `prune_attested_nodes_expired_for`; pruning is off when unset.
    pub prune_attested_nodes_expired_for: Option<Duration>,
    /// `prune_attested_nodes_batch_size`, default 1000.
    pub prune_attested_nodes_batch_size: u32,
    /// `prune_tofu_nodes`, default false.
    pub prune_tofu_nodes: bool,
    /// `max_attested_node_info_staleness`, default 0.
    pub max_attested_node_info_staleness: Duration,
    /// `proxy_protocol_trusted_cidrs`.
    pub proxy_protocol_trusted_cidrs: Vec<String>,
    /// `profiling_*`.
    pub profiling: ProfilingConfig,
    /// `tls_config {}`.
    pub tls_config: TlsConfig,
    /// `experimental {}`.
    pub experimental: ServerExperimental,
    /// `plugins {}`: exactly one DataStore and KeyManager, at most one UpstreamAuthority.
    pub plugins: Plugins,
    /// `health_checks {}`.
    pub health_checks: HealthChecks,
    /// `telemetry {}`.
    pub telemetry: TelemetryConfig,
}

/// `server.tls_config { min_tls_version, cipher_suites, curve_preferences }` for the server's
/// TLS listeners; unset fields keep the built-in defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// `min_tls_version` (`VersionTLS12`, `VersionTLS13`).
    pub min_tls_version: Option<String>,
    /// `cipher_suites` (Go names).
    pub cipher_suites: Vec<String>,
    /// `curve_preferences` (`X25519MLKEM768`, `X25519`, `secp256r1`, ...).
    pub curve_preferences: Vec<String>,
}

/// `ca_subject { country, organization, common_name }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaSubject {
    /// `country`, default `["US"]`.
    pub country: Vec<String>,
    /// `organization`, default `["SPIFFE"]`.
    pub organization: Vec<String>,
    /// `common_name`, default empty.
    pub common_name: String,
}

impl Default for CaSubject {
    fn default() -> Self {
        Self {
            country: vec!["US".to_owned()],
            organization: vec!["SPIFFE".to_owned()],
            common_name: String::new(),
        }
    }
}

/// `ratelimit { attestation, signing }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerRateLimit {
    /// `attestation`, default true.
    pub attestation: bool,
    /// `signing`, default true.
    pub signing: bool,
}

/// `federation { bundle_endpoint {...} federates_with "<td>" {...} }`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FederationConfig {
    /// `bundle_endpoint`; the endpoint is off when unset.
    pub bundle_endpoint: Option<BundleEndpointConfig>,
    /// `federates_with` blocks, sorted by trust domain.
    pub federates_with: Vec<FederatesWith>,
}

/// `federation.bundle_endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEndpointConfig {
    /// `address`:`port`, default `0.0.0.0:443`.
    pub address: SocketAddr,
    /// `refresh_hint`, default 5m.
    pub refresh_hint: Duration,
    /// `profile`, default `https_spiffe`.
    pub serving: BundleEndpointServing,
}

/// How the bundle endpoint authenticates itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleEndpointServing {
    /// `profile "https_spiffe" {}`: the server's SVID.
    HttpsSpiffe,
    /// `profile "https_web" { acme {...} }`.
    Acme(AcmeConfig),
    /// `profile "https_web" { serving_cert_file {...} }`.
    ServingCertFile(ServingCertFile),
}

/// `acme { directory_url, domain_name, email, tos_accepted }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// `directory_url`, default Let's Encrypt.
    pub directory_url: String,
    /// `domain_name`.
    pub domain_name: String,
    /// `email`.
    pub email: String,
    /// `tos_accepted`.
    pub tos_accepted: bool,
}

/// `serving_cert_file { cert_file_path, key_file_path, file_sync_interval }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingCertFile {
    /// `cert_file_path`.
    pub cert_file_path: PathBuf,
    /// `key_file_path`.
    pub key_file_path: PathBuf,
    /// `file_sync_interval`, default 1m.
    pub file_sync_interval: Duration,
}

/// `federates_with "<td>" { bundle_endpoint_url, bundle_endpoint_profile ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatesWith {
    /// The block label.
    pub trust_domain: TrustDomain,
    /// `bundle_endpoint_url`.
    pub bundle_endpoint_url: String,
    /// `bundle_endpoint_profile`.
    pub profile: BundleEndpointProfile,
}

/// How to authenticate a foreign bundle endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleEndpointProfile {
    /// `"https_web" {}`: Web PKI.
    HttpsWeb,
    /// `"https_spiffe" { endpoint_spiffe_id }`.
    HttpsSpiffe {
        /// The endpoint server's SPIFFE ID.
        endpoint_spiffe_id: SpiffeId,
    },
}

/// `server.experimental {}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerExperimental {
    /// `events_based_cache`, default false.
    pub events_based_cache: bool,
    /// `cache_reload_interval`, default 5s.
    pub cache_reload_interval: Duration,
    /// `full_cache_reload_interval`, default 24h.
    pub full_cache_reload_interval: Duration,
    /// `prune_events_older_than`, default 12h.
    pub prune_events_older_than: Duration,
    /// `event_timeout`, default 15m.
    pub event_timeout: Duration,
    /// `sql_transaction_timeout`.
    pub sql_transaction_timeout: Option<Duration>,
    /// `agent_spiffe_id_as_selector`, default false.
    pub agent_spiffe_id_as_selector: bool,
    /// `auth_opa_policy_engine`, kept as written.
    pub auth_opa_policy_engine: Option<Value>,
    /// `named_pipe_name` (Windows).
    pub named_pipe_name: Option<String>,
    /// `require_pq_kem`, default false.
    pub require_pq_kem: bool,
    /// `wit_issuer`.
    pub wit_issuer: Option<String>,
    /// `wit_key_type`.
    pub wit_key_type: Option<KeyType>,
    /// `feature_flags`.
    pub feature_flags: Vec<String>,
}

/// Values from `spire-server run` flags that override the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerOverrides {
    /// `-bindAddress`.
    pub bind_address: Option<String>,
    /// `-serverPort`.
    pub server_port: Option<u16>,
    /// `-socketPath`.
    pub socket_path: Option<PathBuf>,
    /// `-trustDomain`.
    pub trust_domain: Option<String>,
    /// `-dataDir`.
    pub data_dir: Option<PathBuf>,
    /// `-logFile`.
    pub log_file: Option<PathBuf>,
    /// `-logFormat`.
    pub log_format: Option<String>,
    /// `-logLevel`.
    pub log_level: Option<String>,
}

// === impl ServerConfig ===

impl ServerConfig {
    /// Resolves `bind_address`:`bind_port` to socket addresses (a DNS name may give several).
    pub fn bind_socket_addrs(&self) -> std::io::Result<Vec<SocketAddr>> {
        use std::net::ToSocketAddrs;
        match self.bind_address.parse::<IpAddr>() {
            Ok(ip) => Ok(vec![SocketAddr::new(ip, self.bind_port)]),
            Err(_) => Ok((self.bind_address.as_str(), self.bind_port)
                .to_socket_addrs()?
                .collect()),
        }
    }

    /// Reads, parses and validates a server config file; `expand` is the `-expandEnv` lookup.
    pub fn load(
        path: &Path,
        expand: Option<EnvLookup<'_>>,
        overrides: &ServerOverrides,
    ) -> Result<Self, ConfigError> {
        let text = read_config_text(path, expand)?;
        Self::parse(&text, &path.display().to_string(), overrides)
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str, overrides: &ServerOverrides) -> Result<Self, ConfigError> {
        let tree = parse_tree(text, file)?;
        let raw: RawServerFile =
            from_value(&tree).map_err(|e| ConfigError::from_de(file, "", e))?;
        raw.validate(file, overrides)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerFile {
    server: Option<RawServer>,
    plugins: Option<RawPlugins>,
    telemetry: Option<RawTelemetry>,
    health_checks: Option<RawHealthChecks>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    trust_domain: Option<String>,
    bind_address: Option<String>,
    bind_port: Option<u16>,
    socket_path: Option<String>,
    data_dir: Option<String>,
    log_level: Option<String>,
    log_format: Option<String>,
    log_file: Option<String>,
    log_source_location: Option<bool>,
    ca_key_type: Option<String>,
    jwt_key_type: Option<String>,
    ca_ttl: Option<GoDuration>,
    ca_subject: Option<RawCaSubject>,
    default_x509_svid_ttl: Option<GoDuration>,
    default_jwt_svid_ttl: Option<GoDuration>,
    agent_ttl: Option<GoDuration>,
    jwt_issuer: Option<String>,
    disable_jwt_svids: Option<bool>,
    admin_ids: Option<Vec<String>>,
    audit_log_enabled: Option<bool>,
    federation: Option<RawFederation>,
    ratelimit: Option<RawRateLimit>,
    prune_attested_nodes_expired_for: Option<GoDuration>,
    prune_attested_nodes_batch_size: Option<u32>,
    prune_tofu_nodes: Option<bool>,
    max_attested_node_info_staleness: Option<GoDuration>,
    proxy_protocol_trusted_cidrs: Option<Vec<String>>,
    profiling_enabled: Option<bool>,
    profiling_port: Option<u16>,
    profiling_freq: Option<u64>,
    profiling_names: Option<Vec<String>>,
    tls_config: Option<RawTlsConfig>,
    experimental: Option<RawServerExperimental>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTlsConfig {
    min_tls_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaSubject {
    country: Option<Vec<String>>,
    organization: Option<Vec<String>>,
    common_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    attestation: Option<bool>,
    signing: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFederation {
    bundle_endpoint: Option<RawBundleEndpoint>,
    federates_with: Option<BTreeMap<String, RawFederatesWith>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBundleEndpoint {
    address: Option<String>,
    port: Option<u16>,
    refresh_hint: Option<GoDuration>,
    profile: Option<BTreeMap<String, RawServingProfile>>,
    /// Deprecated location of `acme`, still accepted by SPIRE.
    acme: Option<RawAcme>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServingProfile {
    acme: Option<RawAcme>,
    serving_cert_file: Option<RawServingCertFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAcme {
    directory_url: Option<String>,
    domain_name: Option<String>,
    email: Option<String>,
    tos_accepted: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServingCertFile {
    cert_file_path: Option<String>,
    key_file_path: Option<String>,
    file_sync_interval: Option<GoDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFederatesWith {
    bundle_endpoint_url: Option<String>,
    bundle_endpoint_profile: Option<BTreeMap<String, RawEndpointProfile>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpointProfile {
    endpoint_spiffe_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerExperimental {
    events_based_cache: Option<bool>,
    cache_reload_interval: Option<GoDuration>,
    full_cache_reload_interval: Option<GoDuration>,
    prune_events_older_than: Option<GoDuration>,
    event_timeout: Option<GoDuration>,
    sql_transaction_timeout: Option<GoDuration>,
    agent_spiffe_id_as_selector: Option<bool>,
    auth_opa_policy_engine: Option<Value>,
    named_pipe_name: Option<String>,
    require_pq_kem: Option<bool>,
    wit_issuer: Option<String>,
    wit_key_type: Option<String>,
    feature_flags: Option<Vec<String>>,
}

const SERVER_PLUGIN_TYPES: &[(&str, Cardinality)] = &[
    ("DataStore", Cardinality::ExactlyOne),
    ("KeyManager", Cardinality::ExactlyOne),
    ("UpstreamAuthority", Cardinality::AtMostOne),
    ("NodeAttestor", Cardinality::Any),
    ("Notifier", Cardinality::Any),
    ("BundlePublisher", Cardinality::Any),
    ("CredentialComposer", Cardinality::Any),
];

fn dur(d: Option<GoDuration>, default: Duration) -> Duration {
    d.map_or(default, |d| d.0)
}

impl RawServerFile {
    fn validate(self, file: &str, o: &ServerOverrides) -> Result<ServerConfig, ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::invalid(file, key, reason);
        let Some(s) = self.server else {
            return Err(invalid("server", "the server block is required".to_owned()));
        };

        let trust_domain_text = o
            .trust_domain
            .clone()
            .or(s.trust_domain)
            .unwrap_or_default();
        if trust_domain_text.is_empty() {
            return Err(invalid("server.trust_domain", "is required".to_owned()));
        }
        let trust_domain: TrustDomain = trust_domain_text.parse().map_err(|e| {
            invalid(
                "server.trust_domain",
                format!("invalid trust domain {trust_domain_text:?}: {e}"),
            )
        })?;

        let bind_address = o
            .bind_address
            .clone()
            .or(s.bind_address)
            .unwrap_or_else(|| "0.0.0.0".to_owned());
        if !is_host(&bind_address) {
            return Err(invalid(
                "server.bind_address",
                format!("expected an IP address or DNS name, got {bind_address:?}"),
            ));
        }
        let bind_port = o.server_port.or(s.bind_port).unwrap_or(8081);

        let log = LogSettings {
            level: parse_setting(
                file,
                "server.log_level",
                o.log_level
                    .as_deref()
                    .or(s.log_level.as_deref())
                    .unwrap_or("info"),
            )?,
            format: parse_setting(
                file,
                "server.log_format",
                o.log_format
                    .as_deref()
                    .or(s.log_format.as_deref())
                    .unwrap_or("text"),
            )?,
            file: o
                .log_file
                .clone()
                .or(s.log_file.filter(|f| !f.is_empty()).map(PathBuf::from)),
            source_location: s.log_source_location.unwrap_or(false),
        };

        let ca_key_type: KeyType = match &s.ca_key_type {
            Some(k) => parse_setting(file, "server.ca_key_type", k)?,
            None => KeyType::EcP256,
        };
        let jwt_key_type = match &s.jwt_key_type {
            Some(k) => parse_setting(file, "server.jwt_key_type", k)?,
            None => ca_key_type,
        };

        let default_x509_svid_ttl = dur(s.default_x509_svid_ttl, Duration::from_secs(3600));
        let ca_subject = match s.ca_subject {
            Some(c) => {
                let d = CaSubject::default();
                CaSubject {
                    country: c.country.unwrap_or(d.country),
                    organization: c.organization.unwrap_or(d.organization),
                    common_name: c.common_name.unwrap_or(d.common_name),
                }
            }
            None => CaSubject::default(),
        };

        let mut admin_ids = Vec::new();
        for (i, id) in s.admin_ids.unwrap_or_default().into_iter().enumerate() {
            admin_ids.push(id.parse::<SpiffeId>().map_err(|e| {
                invalid(
                    &format!("server.admin_ids[{i}]"),
                    format!("invalid SPIFFE ID {id:?}: {e}"),
                )
            })?);
        }

        let federation = match s.federation {
            Some(f) => validate_federation(f, file)?,
            None => FederationConfig::default(),
        };

        let ratelimit = ServerRateLimit {
            attestation: s
                .ratelimit
                .as_ref()
                .and_then(|r| r.attestation)
                .unwrap_or(true),
            signing: s.ratelimit.as_ref().and_then(|r| r.signing).unwrap_or(true),
        };

        let x = s.experimental.unwrap_or_default();
        let experimental = ServerExperimental {
            events_based_cache: x.events_based_cache.unwrap_or(false),
            cache_reload_interval: dur(x.cache_reload_interval, Duration::from_secs(5)),
            full_cache_reload_interval: dur(
                x.full_cache_reload_interval,
                Duration::from_secs(24 * 3600),
            ),
            prune_events_older_than: dur(x.prune_events_older_than, Duration::from_secs(12 * 3600)),
            event_timeout: dur(x.event_timeout, Duration::from_secs(15 * 60)),
            sql_transaction_timeout: x.sql_transaction_timeout.map(Duration::from),
            agent_spiffe_id_as_selector: x.agent_spiffe_id_as_selector.unwrap_or(false),
            auth_opa_policy_engine: x.auth_opa_policy_engine,
            named_pipe_name: x.named_pipe_name,
            require_pq_kem: x.require_pq_kem.unwrap_or(false),
            wit_issuer: x.wit_issuer,
            wit_key_type: match &x.wit_key_type {
                Some(k) => Some(parse_setting(file, "server.experimental.wit_key_type", k)?),
                None => None,
            },
            feature_flags: x.feature_flags.unwrap_or_default(),
        };

        let config = ServerConfig {
            trust_domain,
            bind_address,
            bind_port,
            socket_path: o
                .socket_path
                .clone()
                .or(s.socket_path.map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SERVER_SOCKET_PATH)),
            data_dir: o
                .data_dir
                .clone()
                .or(s.data_dir.map(PathBuf::from))
                .unwrap_or_else(|| PathBuf::from(".")),
            log,
            ca_key_type,
            jwt_key_type,
            ca_ttl: dur(s.ca_ttl, Duration::from_secs(24 * 3600)),
            ca_subject,
            default_x509_svid_ttl,
            default_jwt_svid_ttl: dur(s.default_jwt_svid_ttl, Duration::from_secs(300)),
            agent_ttl: dur(s.agent_ttl, default_x509_svid_ttl),
            jwt_issuer: s.jwt_issuer.filter(|i| !i.is_empty()),
            disable_jwt_svids: s.disable_jwt_svids.unwrap_or(false),
            admin_ids,
            audit_log_enabled: s.audit_log_enabled.unwrap_or(false),
            federation,
            ratelimit,
            prune_attested_nodes_expired_for: s
                .prune_attested_nodes_expired_for
                .map(Duration::from),
            prune_attested_nodes_batch_size: s.prune_attested_nodes_batch_size.unwrap_or(1000),
            prune_tofu_nodes: s.prune_tofu_nodes.unwrap_or(false),
            max_attested_node_info_staleness: dur(
                s.max_attested_node_info_staleness,
                Duration::ZERO,
            ),
            proxy_protocol_trusted_cidrs: s.proxy_protocol_trusted_cidrs.unwrap_or_default(),
            profiling: ProfilingConfig {
                enabled: s.profiling_enabled.unwrap_or(false),
                port: s.profiling_port,
                freq: s.profiling_freq,
                names: s.profiling_names.unwrap_or_default(),
            },
            tls_config: s
                .tls_config
                .map(|t| TlsConfig {
                    min_tls_version: t.min_tls_version.filter(|v| !v.is_empty()),
                    cipher_suites: t.cipher_suites.unwrap_or_default(),
                    curve_preferences: t.curve_preferences.unwrap_or_default(),
                })
                .unwrap_or_default(),
            experimental,
            plugins: Plugins::from_raw(
                self.plugins.unwrap_or_default(),
                file,
                SERVER_PLUGIN_TYPES,
            )?,
            health_checks: self.health_checks.unwrap_or_default().into(),
            telemetry: self.telemetry.unwrap_or_default().validate(file)?,
        };
        check_ttls(&config, file)?;
        Ok(config)
    }
}

fn check_ttls(c: &ServerConfig, file: &str) -> Result<(), ConfigError> {
    for (key, value) in [
        ("server.ca_ttl", c.ca_ttl),
        ("server.default_x509_svid_ttl", c.default_x509_svid_ttl),
        ("server.default_jwt_svid_ttl", c.default_jwt_svid_ttl),
    ] {
        if value.is_zero() {
            return Err(ConfigError::invalid(
                file,
                key,
                "must be greater than 0".to_owned(),
            ));
        }
    }
    Ok(())
}

/// An IP address or a plausible DNS name.
fn is_host(text: &str) -> bool {
    text.parse::<IpAddr>().is_ok()
        || (!text.is_empty()
            && text.len() <= 253
            && text.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            }))
}

/// Parses an IP address; `localhost` means the IPv4 loopback.
pub(crate) fn parse_ip(text: &str) -> Option<IpAddr> {
    if text == "localhost" {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    text.parse().ok()
}

fn validate_federation(f: RawFederation, file: &str) -> Result<FederationConfig, ConfigError> {
    let invalid = |key: &str, reason: String| ConfigError::invalid(file, key, reason);
    let bundle_endpoint = match f.bundle_endpoint {
        Some(be) => {
            let key = "server.federation.bundle_endpoint";
            let addr_text = be.address.unwrap_or_else(|| "0.0.0.0".to_owned());
            let ip = parse_ip(&addr_text).ok_or_else(|| {
                invalid(
                    &format!("{key}.address"),
                    format!("expected an IP address, got {addr_text:?}"),
                )
            })?;
            let mut profiles = be.profile.unwrap_or_default();
            if profiles.len() > 1 {
                return Err(invalid(
                    &format!("{key}.profile"),
                    "expected exactly one profile".to_owned(),
                ));
            }
            let serving = match profiles.pop_first() {
                None => match be.acme {
                    Some(acme) => BundleEndpointServing::Acme(validate_acme(
                        acme,
                        file,
                        &format!("{key}.acme"),
                    )?),
                    None => BundleEndpointServing::HttpsSpiffe,
                },
                Some((name, p)) => {
                    let pkey = format!("{key}.profile.{name}");
                    match name.as_str() {
                        "https_spiffe" => BundleEndpointServing::HttpsSpiffe,
                        "https_web" => match (p.acme, p.serving_cert_file) {
                            (Some(acme), None) => BundleEndpointServing::Acme(validate_acme(
                                acme,
                                file,
                                &format!("{pkey}.acme"),
                            )?),
                            (None, Some(sc)) => {
                                let skey = format!("{pkey}.serving_cert_file");
                                BundleEndpointServing::ServingCertFile(ServingCertFile {
                                    cert_file_path: sc
                                        .cert_file_path
                                        .map(PathBuf::from)
                                        .ok_or_else(|| {
                                            invalid(
                                                &format!("{skey}.cert_file_path"),
                                                "is required".to_owned(),
                                            )
                                        })?,
                                    key_file_path: sc.key_file_path.map(PathBuf::from).ok_or_else(
                                        || {
                                            invalid(
                                                &format!("{skey}.key_file_path"),
                                                "is required".to_owned(),
                                            )
                                        },
                                    )?,
                                    file_sync_interval: dur(
                                        sc.file_sync_interval,
                                        Duration::from_secs(60),
                                    ),
                                })
                            }
                            _ => {
                                return Err(invalid(
                                    &pkey,
                                    "expected exactly one of acme or serving_cert_file".to_owned(),
                                ));
                            }
                        },
                        other => {
                            return Err(invalid(
                                &format!("{key}.profile"),
                                format!(
                                    "unknown profile {other:?}, expected https_web or https_spiffe"
                                ),
                            ));
                        }
                    }
                }
            };
            Some(BundleEndpointConfig {
                address: SocketAddr::new(ip, be.port.unwrap_or(443)),
                refresh_hint: dur(be.refresh_hint, Duration::from_secs(300)),
                serving,
            })
        }
        None => None,
    };

    let mut federates_with = Vec::new();
    for (td_text, fw) in f.federates_with.unwrap_or_default() {
        let key = format!("server.federation.federates_with.{td_text}");
        let trust_domain: TrustDomain = td_text
            .parse()
            .map_err(|e| invalid(&key, format!("invalid trust domain {td_text:?}: {e}")))?;
        let bundle_endpoint_url = fw
            .bundle_endpoint_url
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                invalid(
                    &format!("{key}.bundle_endpoint_url"),
                    "is required".to_owned(),
                )
            })?;
        if !bundle_endpoint_url.starts_with("https://") {
            return Err(invalid(
                &format!("{key}.bundle_endpoint_url"),
                format!("expected an https:// URL, got {bundle_endpoint_url:?}"),
            ));
        }
        let mut profiles = fw.bundle_endpoint_profile.unwrap_or_default();
        let pkey = format!("{key}.bundle_endpoint_profile");
        let (Some((name, p)), true) = (profiles.pop_first(), profiles.is_empty()) else {
            return Err(invalid(
                &pkey,
                "expected exactly one profile: \"https_web\" {} or \"https_spiffe\" { endpoint_spiffe_id }"
                    .to_owned(),
            ));
        };
        let profile = match name.as_str() {
            "https_web" if p.endpoint_spiffe_id.is_some() => {
                return Err(invalid(
                    &format!("{pkey}.https_web.endpoint_spiffe_id"),
                    "only valid with the https_spiffe profile".to_owned(),
                ));
            }
            "https_web" => BundleEndpointProfile::HttpsWeb,
            "https_spiffe" => {
                let id_text = p.endpoint_spiffe_id.unwrap_or_default();
                let id_key = format!("{pkey}.https_spiffe.endpoint_spiffe_id");
                if id_text.is_empty() {
                    return Err(invalid(&id_key, "is required".to_owned()));
                }
                let endpoint_spiffe_id = id_text
                    .parse()
                    .map_err(|e| invalid(&id_key, format!("invalid SPIFFE ID {id_text:?}: {e}")))?;
                BundleEndpointProfile::HttpsSpiffe { endpoint_spiffe_id }
            }
            _ => {
                return Err(invalid(
                    &pkey,
                    format!("unknown profile {name:?}, expected https_web or https_spiffe"),
                ));
            }
        };
        federates_with.push(FederatesWith {
            trust_domain,
            bundle_endpoint_url,
            profile,
        });
    }
    Ok(FederationConfig {
        bundle_endpoint,
        federates_with,
    })
}

fn validate_acme(a: RawAcme, file: &str, key: &str) -> Result<AcmeConfig, ConfigError> {
    Ok(AcmeConfig {
        directory_url: a
            .directory_url
            .unwrap_or_else(|| "https://acme-v02.api.letsencrypt.org/directory".to_owned()),
        domain_name: a.domain_name.filter(|d| !d.is_empty()).ok_or_else(|| {
            ConfigError::invalid(file, format!("{key}.domain_name"), "is required".to_owned())
        })?,
        email: a.email.unwrap_or_default(),
        tos_accepted: a.tos_accepted.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LogFormat, LogLevel};

    const SAMPLE: &str = r#"
server {
    bind_address = "0.0.0.0"
    bind_port = "8081"
    socket_path = "/tmp/spire-server/private/api.sock"
    trust_domain = "example.org"
    data_dir = "./.data"
    log_level = "DEBUG"
    ca_ttl = "168h"
    default_x509_svid_ttl = "1h30m"
    default_jwt_svid_ttl = "90s"
    ca_key_type = "rsa-2048"
    tls_config {
        min_tls_version = "VersionTLS13"
        curve_preferences = [
            "X25519MLKEM768",
            "X25519",
        ]
    }
    ca_subject {
        country = ["US"]
        organization = ["SPIFFE"]
        common_name = ""
    }
    jwt_issuer = "https://oidc.example.org"
    admin_ids = ["spiffe://example.org/admin"]
    audit_log_enabled = "true"
    ratelimit {
        attestation = false
    }
    federation {
        bundle_endpoint {
            address = "0.0.0.0"
            port = 8443
            refresh_hint = "10m"
        }
        federates_with "domain1.test" {
            bundle_endpoint_url = "https://1.2.3.4:8443"
            bundle_endpoint_profile "https_spiffe" {
                endpoint_spiffe_id = "spiffe://domain1.test/spire/server"
            }
        }
        federates_with "domain2.test" {
            bundle_endpoint_url = "https://domain2.test/bundle"
            bundle_endpoint_profile "https_web" {}
        }
    }
    experimental {
        events_based_cache = true
        cache_reload_interval = "0"
    }
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "./.data/datastore.sqlite3"
        }
    }

    NodeAttestor "join_token" {
        plugin_data {
        }
    }

    KeyManager "memory" {
        plugin_data = {}
    }

    UpstreamAuthority "disk" {
        plugin_data {
            key_file_path = "./conf/server/dummy_upstream_ca.key"
            cert_file_path = "./conf/server/dummy_upstream_ca.crt"
        }
    }
}

health_checks {
    listener_enabled = true
    bind_address = "0.0.0.0"
    bind_port = "8080"
    live_path = "/live"
    ready_path = "/ready"
}

telemetry {
    Prometheus {
        port = 9988
    }
}
"#;

    const MINIMAL: &str = r#"
server {
    trust_domain = "example.org"
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "x.db"
        }
    }
    KeyManager "disk" {
        plugin_data {
            keys_path = "keys.json"
        }
    }
}
"#;

    fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
        ServerConfig::parse(text, "server.conf", &ServerOverrides::default())
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn sample_server_conf() {
        let c = parse(SAMPLE).unwrap();
        assert_eq!(c.trust_domain.as_str(), "example.org");
        assert_eq!((c.bind_address.as_str(), c.bind_port), ("0.0.0.0", 8081));
        assert_eq!(c.data_dir, PathBuf::from("./.data"));
        assert_eq!(c.log.level, LogLevel::Debug);
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(c.ca_ttl, Duration::from_secs(168 * 3600));
        assert_eq!(c.default_x509_svid_ttl, Duration::from_secs(5400));
        assert_eq!(c.agent_ttl, Duration::from_secs(5400));
        assert_eq!(c.default_jwt_svid_ttl, Duration::from_secs(90));
        assert_eq!(c.ca_key_type, KeyType::Rsa2048);
        assert_eq!(c.jwt_key_type, KeyType::Rsa2048);
        assert_eq!(
            c.tls_config.min_tls_version.as_deref(),
            Some("VersionTLS13")
        );
        assert_eq!(
            c.tls_config.curve_preferences,
            vec!["X25519MLKEM768", "X25519"]
        );
        assert_eq!(c.jwt_issuer.as_deref(), Some("https://oidc.example.org"));
        assert_eq!(c.admin_ids[0].as_str(), "spiffe://example.org/admin");
        assert!(c.audit_log_enabled);
        assert_eq!(
            c.ratelimit,
            ServerRateLimit {
                attestation: false,
                signing: true
            }
        );
        let be = c.federation.bundle_endpoint.as_ref().unwrap();
        assert_eq!(be.address, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(be.refresh_hint, Duration::from_secs(600));
        assert_eq!(be.serving, BundleEndpointServing::HttpsSpiffe);
        assert_eq!(c.federation.federates_with.len(), 2);
        assert_eq!(
            c.federation.federates_with[0].trust_domain.as_str(),
            "domain1.test"
        );
        assert!(matches!(
            &c.federation.federates_with[0].profile,
            BundleEndpointProfile::HttpsSpiffe { endpoint_spiffe_id } if endpoint_spiffe_id.as_str() == "spiffe://domain1.test/spire/server"
        ));
        assert_eq!(
            c.federation.federates_with[1].profile,
            BundleEndpointProfile::HttpsWeb
        );
        assert!(c.experimental.events_based_cache);
        assert_eq!(c.experimental.cache_reload_interval, Duration::ZERO);
        assert_eq!(c.plugins.single("DataStore").unwrap().name, "sql");
        assert_eq!(c.plugins.single("KeyManager").unwrap().name, "memory");
        assert_eq!(c.plugins.single("UpstreamAuthority").unwrap().name, "disk");
        assert_eq!(c.plugins.enabled("NodeAttestor").count(), 1);
        assert!(c.health_checks.listener_enabled);
        assert_eq!(c.health_checks.bind_port, 8080);
        assert_eq!(c.telemetry.prometheus.as_ref().unwrap().port, 9988);
        assert_eq!(c.telemetry.prometheus.as_ref().unwrap().host, "localhost");
    }

    #[test]
    fn defaults_match_spire() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!((c.bind_address.as_str(), c.bind_port), ("0.0.0.0", 8081));
        assert_eq!(
            c.socket_path,
            PathBuf::from("/tmp/spire-server/private/api.sock")
        );
        assert_eq!(c.ca_ttl, Duration::from_secs(24 * 3600));
        assert_eq!(c.default_x509_svid_ttl, Duration::from_secs(3600));
        assert_eq!(c.default_jwt_svid_ttl, Duration::from_secs(300));
        assert_eq!(c.agent_ttl, Duration::from_secs(3600));
        assert_eq!(c.ca_key_type, KeyType::EcP256);
        assert_eq!(c.jwt_key_type, KeyType::EcP256);
        assert_eq!(c.ca_subject, CaSubject::default());
        assert_eq!(c.ca_subject.organization, vec!["SPIFFE".to_owned()]);
        assert_eq!(c.log, LogSettings::default());
        assert_eq!(
            c.ratelimit,
            ServerRateLimit {
                attestation: true,
                signing: true
            }
        );
        assert_eq!(c.prune_attested_nodes_batch_size, 1000);
        assert!(!c.disable_jwt_svids && !c.audit_log_enabled);
        assert_eq!(c.jwt_issuer, None);
        assert_eq!(c.federation, FederationConfig::default());
        assert_eq!(
            c.experimental.full_cache_reload_interval,
            Duration::from_secs(24 * 3600)
        );
        assert_eq!(
            c.experimental.prune_events_older_than,
            Duration::from_secs(12 * 3600)
        );
        assert_eq!(c.health_checks, HealthChecks::default());
        assert!(c.telemetry.enable_hostname_label);
    }

    #[test]
    fn bind_port_accepts_number_and_string() {
        for port in ["8082", "\"8082\""] {
            let text = MINIMAL.replace(
                "trust_domain = \"example.org\"",
                &format!("trust_domain = \"example.org\"\nbind_port = {port}"),
            );
            assert_eq!(parse(&text).unwrap().bind_port, 8082);
        }
    }

    #[test]
    fn overrides_win_over_the_file() {
        let o = ServerOverrides {
            bind_address: Some("127.0.0.1".into()),
            server_port: Some(9000),
            socket_path: Some("/run/s.sock".into()),
            trust_domain: Some("other.test".into()),
            data_dir: Some("/var/lib/spire".into()),
            log_file: Some("/var/log/s.log".into()),
            log_format: Some("JSON".into()),
            log_level: Some("warn".into()),
        };
        let c = ServerConfig::parse(MINIMAL, "server.conf", &o).unwrap();
        assert_eq!(
            c.bind_socket_addrs().unwrap(),
            vec!["127.0.0.1:9000".parse().unwrap()]
        );
        assert_eq!(c.socket_path, PathBuf::from("/run/s.sock"));
        assert_eq!(c.trust_domain.as_str(), "other.test");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/spire"));
        assert_eq!(c.log.file, Some(PathBuf::from("/var/log/s.log")));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, LogLevel::Warn);
    }

    #[test]
    fn json_config_is_accepted() {
        let text = r#"{"server": {"trust_domain": "example.org", "bind_port": "8085"},
            "plugins": {"DataStore": {"sql": {"plugin_data": {}}}, "KeyManager": {"memory": {}}}}"#;
        assert_eq!(parse(text).unwrap().bind_port, 8085);
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let with = |line: &str| {
            MINIMAL.replace(
                "trust_domain = \"example.org\"",
                &format!("trust_domain = \"example.org\"\n{line}"),
            )
        };
        let cases = [
            (
                with("bind_port = \"abc\""),
                "server.conf: server.bind_port: expected a non-negative integer, got \"abc\"",
            ),
            (
                with("bind_port = 70000"),
                "server.conf: server.bind_port: value 70000 is out of range for u16",
            ),
            (
                with("ca_ttl = \"3d\""),
                "server.conf: server.ca_ttl: unknown unit \"d\" in duration \"3d\", expected one of ns, us, ms, s, m, h",
            ),
            (
                with("ca_ttl = \"0\""),
                "server.conf: server.ca_ttl: must be greater than 0",
            ),
            (
                with("audit_log_enabled = \"yes\""),
                "server.conf: server.audit_log_enabled: expected a boolean, got \"yes\"",
            ),
            (
                with("log_level = \"loud\""),
                "server.conf: server.log_level: unknown log level \"loud\", expected one of panic, fatal, error, warn, info, debug, trace",
            ),
            (
                with("log_format = \"xml\""),
                "server.conf: server.log_format: unknown log format \"xml\", expected text or json",
            ),
            (
                with("ca_key_type = \"ed25519\""),
                "server.conf: server.ca_key_type: unknown key type \"ed25519\", expected one of rsa-2048, rsa-4096, ec-p256, ec-p384",
            ),
            (
                with("bind_address = \"not an ip\""),
                "server.conf: server.bind_address: expected an IP address or DNS name, got \"not an ip\"",
            ),
            (
                with("admin_ids = [\"spiffe://example.org/a\", \"bad\"]"),
                "server.conf: server.admin_ids[1]: invalid SPIFFE ID \"bad\": ",
            ),
            (
                with("ca_subject {\ncountry = \"US\"\nbogus = 1\n}"),
                "server.conf: server.ca_subject.bogus: unknown field `bogus`",
            ),
            (
                with("experimental {\nnope = true\n}"),
                "server.conf: server.experimental.nope: unknown field `nope`",
            ),
            (
                with(
                    "federation {\nfederates_with \"td.test\" {\nbundle_endpoint_url = \"https://x\"\n}\n}",
                ),
                "server.conf: server.federation.federates_with.td.test.bundle_endpoint_profile: expected exactly one profile",
            ),
            (
                MINIMAL.replace(
                    "trust_domain = \"example.org\"",
                    "trust_domain = \"Example.org\"",
                ),
                "server.conf: server.trust_domain: invalid trust domain \"Example.org\"",
            ),
            (
                MINIMAL.replace("trust_domain = \"example.org\"", ""),
                "server.conf: server.trust_domain: is required",
            ),
            (
                format!("{MINIMAL}\nbogus {{}}"),
                "server.conf: bogus: unknown field `bogus`",
            ),
            (
                MINIMAL.replace(
                    "KeyManager \"disk\"",
                    "NotAType \"x\" {}\nKeyManager \"disk\"",
                ),
                "server.conf: plugins.NotAType: unknown plugin type",
            ),
            (
                MINIMAL.replace("KeyManager", "NodeAttestor"),
                "server.conf: plugins.KeyManager: expected exactly one enabled plugin, found 0",
            ),
            ("server {".to_owned(), "server.conf: invalid HCL: "),
            (
                format!(
                    "{MINIMAL}\ntelemetry {{\nPrometheus {{\nport = 9\ntls {{\ncert_file = \"c.pem\"\n}}\n}}\n}}"
                ),
                "server.conf: telemetry.Prometheus.tls: cert_file and key_file are required unless use_spire_svid is true",
            ),
            (
                format!("{MINIMAL}\ntelemetry {{\nPrometheus {{\nhost = \"0.0.0.0\"\n}}\n}}"),
                "server.conf: telemetry.Prometheus.port: is required",
            ),
            (
                with("tls_config {\nmin_version = \"x\"\n}"),
                "server.conf: server.tls_config.min_version: unknown field `min_version`",
            ),
        ];
        for (text, want) in cases {
            let got = err(&text);
            assert!(got.starts_with(want), "got:  {got}\nwant: {want}");
        }
    }

    #[test]
    fn expand_env_happens_before_parsing() {
        let dir = std::env::temp_dir().join(format!("spire-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.conf");
        std::fs::write(
            &path,
            MINIMAL
                .replace("\"example.org\"", "\"${TD}\"")
                .replace("trust_domain", "bind_port = \"$PORT\"\ntrust_domain"),
        )
        .unwrap();
        let lookup = |k: &str| match k {
            "TD" => Some("env.test".to_owned()),
            "PORT" => Some("7000".to_owned()),
            _ => None,
        };
        let c = ServerConfig::load(&path, Some(&lookup), &ServerOverrides::default()).unwrap();
        assert_eq!(c.trust_domain.as_str(), "env.test");
        assert_eq!(c.bind_port, 7000);
        // Without -expandEnv the text is taken literally.
        let e = ServerConfig::load(&path, None, &ServerOverrides::default()).unwrap_err();
        assert_eq!(e.key(), Some("server.bind_port"));
        std::fs::remove_dir_all(&dir).unwrap();

        let missing = ServerConfig::load(
            Path::new("/nonexistent/server.conf"),
            None,
            &ServerOverrides::default(),
        )
        .unwrap_err();
        assert_eq!(
            missing.to_string(),
            "could not read config file /nonexistent/server.conf"
        );
    }
}
