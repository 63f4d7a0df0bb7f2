//! The OIDC Discovery Provider's config file (`oidc-discovery-provider.conf`), with SPIRE's keys.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::common::{LogFormat, LogLevel, LogSettings, parse_setting};
use crate::de::from_value;
use crate::duration::GoDuration;
use crate::{ConfigError, EnvLookup, HealthChecks, parse_tree, read_config_text};

/// SPIRE's default `poll_interval` for both key sources.
pub const DEFAULT_OIDC_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// SPIRE's default health listener port for the provider.
pub const DEFAULT_OIDC_HEALTH_PORT: u16 = 8008;

/// A validated OIDC Discovery Provider config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// `domains`: the host names requests may be addressed to (at least one).
    pub domains: Vec<String>,
    /// `jwt_issuer`: the issuer in the discovery document; derived from the request when unset.
    pub jwt_issuer: Option<String>,
    /// `jwks_uri`: the JWKS URI in the discovery document; derived from the request when unset.
    pub jwks_uri: Option<String>,
    /// How the provider listens.
    pub listen: OidcListen,
    /// `allow_insecure_scheme`: advertise `http://` URLs for plain-HTTP requests.
    pub allow_insecure_scheme: bool,
    /// Where the JWT signing keys come from.
    pub source: OidcKeySource,
    /// `log_level`, `log_format`, `log_path`.
    pub log: LogSettings,
    /// `log_requests`: log every HTTP request at debug level.
    pub log_requests: bool,
    /// `set_key_use`: set `"use": "sig"` on every JWK.
    pub set_key_use: bool,
    /// `server_path_prefix`: the path the documents are served under (default `/`).
    pub server_path_prefix: Option<String>,
    /// `health_checks {}`: present means enabled (bind `localhost:8008` by default).
    pub health_checks: Option<HealthChecks>,
}

/// How the provider accepts requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OidcListen {
    /// `listen_socket_path`: plain HTTP on a Unix socket (behind a reverse proxy).
    UnixSocket(PathBuf),
    /// `insecure_addr`: plain HTTP on a TCP address (`host:port` or `:port`).
    Insecure(String),
    /// `serving_cert_file {}`: HTTPS with a certificate and key from files.
    ServingCertFile {
        /// `cert_file_path`.
        cert_file_path: PathBuf,
        /// `key_file_path`.
        key_file_path: PathBuf,
        /// `addr`, default `:443`.
        addr: String,
        /// `file_sync_interval`, default 1 minute.
        file_sync_interval: Duration,
    },
}

/// Where the JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OidcKeySource {
    /// `server_api { address = "unix:///path" }`: the server's Bundle API on its local socket.
    ServerApi {
        /// The socket path from `address`.
        socket_path: PathBuf,
        /// `poll_interval`, default 10s.
        poll_interval: Duration,
    },
    /// `workload_api { socket_path, trust_domain }`: the agent's Workload API.
    WorkloadApi {
        /// `socket_path`.
        socket_path: PathBuf,
        /// `trust_domain`: which bundle of the response to serve.
        trust_domain: String,
        /// `poll_interval`, default 10s.
        poll_interval: Duration,
    },
}

impl OidcConfig {
    /// Reads, parses and validates a provider config file; `expand` is the `-expandEnv` lookup.
    pub fn load(path: &Path, expand: Option<EnvLookup<'_>>) -> Result<Self, ConfigError> {
        let text = read_config_text(path, expand)?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let tree = parse_tree(text, file)?;
        let raw: RawOidcFile = from_value(&tree).map_err(|e| ConfigError::from_de(file, "", e))?;
        raw.validate(file)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOidcFile {
    acme: Option<serde_json::Value>,
    serving_cert_file: Option<RawServingCertFile>,
    allow_insecure_scheme: Option<bool>,
    domains: Option<Vec<String>>,
    experimental: Option<serde_json::Value>,
    insecure_addr: Option<String>,
    set_key_use: Option<bool>,
    listen_socket_path: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
    log_path: Option<String>,
    log_requests: Option<bool>,
    server_api: Option<RawServerApi>,
    workload_api: Option<RawWorkloadApi>,
    health_checks: Option<RawOidcHealth>,
    jwt_issuer: Option<String>,
    jwks_uri: Option<String>,
    server_path_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServingCertFile {
    cert_file_path: Option<String>,
    key_file_path: Option<String>,
    file_sync_interval: Option<GoDuration>,
    addr: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerApi {
    address: Option<String>,
    poll_interval: Option<GoDuration>,
    experimental: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkloadApi {
    socket_path: Option<String>,
    trust_domain: Option<String>,
    poll_interval: Option<GoDuration>,
    experimental: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOidcHealth {
    bind_address: Option<String>,
    bind_port: Option<u16>,
    live_path: Option<String>,
    ready_path: Option<String>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

fn positive(
    file: &str,
    key: &str,
    v: Option<GoDuration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(GoDuration(d)) if d.is_zero() => Err(ConfigError::invalid(
            file,
            key,
            "must be a positive duration such as \"10s\"".to_owned(),
        )),
        Some(GoDuration(d)) => Ok(d),
    }
}

fn check_url(file: &str, key: &str, value: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(v) = non_empty(value) else {
        return Ok(None);
    };
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => Ok(Some(v)),
        _ => Err(ConfigError::invalid(
            file,
            key,
            format!(
                "{v:?} is not a URL with a scheme and host, such as \"https://oidc.example.org\""
            ),
        )),
    }
}

impl RawOidcFile {
    fn validate(self, file: &str) -> Result<OidcConfig, ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::invalid(file, key, reason.to_owned());

        let domains: Vec<String> = self
            .domains
            .unwrap_or_default()
            .into_iter()
            .filter(|d| !d.trim().is_empty())
            .collect();
        if domains.is_empty() {
            return Err(invalid("domains", "at least one domain is required"));
        }

        if self.acme.is_some() {
            return Err(invalid(
                "acme",
                "ACME is not supported by spire-rs; use serving_cert_file, listen_socket_path or insecure_addr",
            ));
        }
        if self.experimental.is_some() {
            return Err(invalid(
                "experimental",
                "named pipes are Windows-only and not supported",
            ));
        }
        let mut listens = Vec::new();
        if let Some(p) = non_empty(self.listen_socket_path) {
            listens.push(OidcListen::UnixSocket(PathBuf::from(p)));
        }
        if let Some(a) = non_empty(self.insecure_addr) {
            listens.push(OidcListen::Insecure(a));
        }
        if let Some(s) = self.serving_cert_file {
            let key = "serving_cert_file";
            let cert = non_empty(s.cert_file_path)
                .ok_or_else(|| invalid(&format!("{key}.cert_file_path"), "is required"))?;
            let pkey = non_empty(s.key_file_path)
                .ok_or_else(|| invalid(&format!("{key}.key_file_path"), "is required"))?;
            listens.push(OidcListen::ServingCertFile {
                cert_file_path: PathBuf::from(cert),
                key_file_path: PathBuf::from(pkey),
                addr: non_empty(s.addr).unwrap_or_else(|| ":443".to_owned()),
                file_sync_interval: positive(
                    file,
                    &format!("{key}.file_sync_interval"),
                    s.file_sync_interval,
                    Duration::from_secs(60),
                )?,
            });
        }
        if listens.len() != 1 {
            return Err(invalid(
                "(top level)",
                "exactly one of serving_cert_file, listen_socket_path or insecure_addr must be configured",
            ));
        }
        let listen = listens.remove(0);
        let allow_insecure_scheme = self.allow_insecure_scheme.unwrap_or(false);
        if allow_insecure_scheme && matches!(listen, OidcListen::ServingCertFile { .. }) {
            return Err(invalid(
                "allow_insecure_scheme",
                "only works with insecure_addr or listen_socket_path",
            ));
        }

        let source = match (self.server_api, self.workload_api) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(invalid(
                    "(top level)",
                    "exactly one of server_api or workload_api must be configured",
                ));
            }
            (Some(s), None) => {
                if s.experimental.is_some() {
                    return Err(invalid(
                        "server_api.experimental",
                        "named pipes are Windows-only and not supported",
                    ));
                }
                let address = non_empty(s.address)
                    .ok_or_else(|| invalid("server_api.address", "is required"))?;
                let path = address
                    .strip_prefix("unix://")
                    .or_else(|| address.strip_prefix("unix:"))
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| {
                        ConfigError::invalid(
                            file,
                            "server_api.address",
                            format!(
                                "{address:?} is not a unix socket target; expected \"unix:///path/to/api.sock\""
                            ),
                        )
                    })?;
                OidcKeySource::ServerApi {
                    socket_path: PathBuf::from(path),
                    poll_interval: positive(
                        file,
                        "server_api.poll_interval",
                        s.poll_interval,
                        DEFAULT_OIDC_POLL_INTERVAL,
                    )?,
                }
            }
            (None, Some(w)) => {
                if w.experimental.is_some() {
                    return Err(invalid(
                        "workload_api.experimental",
                        "named pipes are Windows-only and not supported",
                    ));
                }
                OidcKeySource::WorkloadApi {
                    socket_path: PathBuf::from(
                        non_empty(w.socket_path)
                            .ok_or_else(|| invalid("workload_api.socket_path", "is required"))?,
                    ),
                    trust_domain: non_empty(w.trust_domain)
                        .ok_or_else(|| invalid("workload_api.trust_domain", "is required"))?,
                    poll_interval: positive(
                        file,
                        "workload_api.poll_interval",
                        w.poll_interval,
                        DEFAULT_OIDC_POLL_INTERVAL,
                    )?,
                }
            }
        };

        let log = LogSettings {
            level: match non_empty(self.log_level) {
                Some(l) => parse_setting::<LogLevel>(file, "log_level", &l)?,
                None => LogLevel::Info,
            },
            format: match non_empty(self.log_format) {
                Some(f) => parse_setting::<LogFormat>(file, "log_format", &f)?,
                None => LogFormat::Text,
            },
            file: non_empty(self.log_path).map(PathBuf::from),
            source_location: false,
        };

        let health_checks = self.health_checks.map(|h| HealthChecks {
            listener_enabled: true,
            bind_address: non_empty(h.bind_address).unwrap_or_else(|| "localhost".to_owned()),
            bind_port: h.bind_port.unwrap_or(DEFAULT_OIDC_HEALTH_PORT),
            live_path: non_empty(h.live_path).unwrap_or_else(|| "/live".to_owned()),
            ready_path: non_empty(h.ready_path).unwrap_or_else(|| "/ready".to_owned()),
        });

        Ok(OidcConfig {
            domains,
            jwt_issuer: check_url(file, "jwt_issuer", self.jwt_issuer)?,
            jwks_uri: check_url(file, "jwks_uri", self.jwks_uri)?,
            listen,
            allow_insecure_scheme,
            source,
            log,
            log_requests: self.log_requests.unwrap_or(false),
            set_key_use: self.set_key_use.unwrap_or(false),
            server_path_prefix: non_empty(self.server_path_prefix),
            health_checks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OidcConfig, ConfigError> {
        OidcConfig::parse(text, "oidc.conf")
    }

    #[test]
    fn full_server_api_config() {
        let c = parse(
            r#"
log_level = "debug"
domains = ["localhost", "oidc.example.org"]
jwt_issuer = "https://oidc.example.org"
set_key_use = true
insecure_addr = "127.0.0.1:8080"
allow_insecure_scheme = true
server_path_prefix = "/oidc"
server_api {
    address = "unix:///tmp/spire-server/private/api.sock"
    poll_interval = "5s"
}
health_checks {
    bind_port = "8081"
}
"#,
        )
        .unwrap();
        assert_eq!(c.domains, ["localhost", "oidc.example.org"]);
        assert_eq!(c.jwt_issuer.as_deref(), Some("https://oidc.example.org"));
        assert_eq!(c.listen, OidcListen::Insecure("127.0.0.1:8080".to_owned()));
        assert!(c.allow_insecure_scheme && c.set_key_use);
        assert_eq!(c.log.level, LogLevel::Debug);
        assert_eq!(c.server_path_prefix.as_deref(), Some("/oidc"));
        assert_eq!(
            c.source,
            OidcKeySource::ServerApi {
                socket_path: PathBuf::from("/tmp/spire-server/private/api.sock"),
                poll_interval: Duration::from_secs(5),
            }
        );
        let h = c.health_checks.unwrap();
        assert_eq!((h.bind_address.as_str(), h.bind_port), ("localhost", 8081));
        assert_eq!(
            (h.live_path.as_str(), h.ready_path.as_str()),
            ("/live", "/ready")
        );
    }

    #[test]
    fn workload_api_with_serving_cert_and_defaults() {
        let c = parse(
            r#"
domains = ["mypublicdomain.test"]
serving_cert_file {
    cert_file_path = "/c.pem"
    key_file_path = "/k.pem"
}
workload_api {
    socket_path = "/tmp/spire-agent/public/api.sock"
    trust_domain = "domain.test"
}
"#,
        )
        .unwrap();
        assert_eq!(
            c.listen,
            OidcListen::ServingCertFile {
                cert_file_path: "/c.pem".into(),
                key_file_path: "/k.pem".into(),
                addr: ":443".to_owned(),
                file_sync_interval: Duration::from_secs(60),
            }
        );
        assert_eq!(
            c.source,
            OidcKeySource::WorkloadApi {
                socket_path: "/tmp/spire-agent/public/api.sock".into(),
                trust_domain: "domain.test".to_owned(),
                poll_interval: DEFAULT_OIDC_POLL_INTERVAL,
            }
        );
        assert_eq!(c.log.level, LogLevel::Info);
        assert!(c.health_checks.is_none() && !c.set_key_use);
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let src = "server_api {\n address = \"unix:///s.sock\"\n}\n";
        let cases = [
            (
                format!("listen_socket_path = \"/l.sock\"\n{src}"),
                "oidc.conf: domains: at least one domain is required",
            ),
            (
                format!("domains = [\"a\"]\n{src}"),
                "oidc.conf: (top level): exactly one of serving_cert_file, listen_socket_path or insecure_addr must be configured",
            ),
            (
                "domains = [\"a\"]\nlisten_socket_path = \"/l\"\n".to_owned(),
                "oidc.conf: (top level): exactly one of server_api or workload_api must be configured",
            ),
            (
                "domains = [\"a\"]\nlisten_socket_path = \"/l\"\nserver_api {\naddress = \"127.0.0.1:8081\"\n}\n".to_owned(),
                "oidc.conf: server_api.address: \"127.0.0.1:8081\" is not a unix socket target; expected \"unix:///path/to/api.sock\"",
            ),
            (
                format!("domains = [\"a\"]\nlisten_socket_path = \"/l\"\njwt_issuer = \"issuer\"\n{src}"),
                "oidc.conf: jwt_issuer: \"issuer\" is not a URL with a scheme and host, such as \"https://oidc.example.org\"",
            ),
            (
                format!("domains = [\"a\"]\nlisten_socket_path = \"/l\"\nbogus = 1\n{src}"),
                "oidc.conf: bogus",
            ),
            (
                format!("domains = [\"a\"]\nlisten_socket_path = \"/l\"\nacme {{\nemail = \"e\"\n}}\n{src}"),
                "oidc.conf: acme: ACME is not supported by spire-rs",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(
                err.starts_with(want),
                "{err:?} does not start with {want:?}"
            );
        }
    }
}
