//! SPIRE-style HCL config files for `spire-server` and `spire-agent`.
//!
//! The writers emit the same shape a SPIRE user writes (`server {}` / `agent
//! {}` blocks, `plugins {}` with `Kind "name" { plugin_data { ... } }`), so the
//! tests also exercise our HCL loader on realistic files. Fields are public:
//! adjust them directly, or use the chaining setters.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::net::free_port;

/// Quotes a string as an HCL string literal.
pub fn hcl_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    // `${` and `%{` start HCL template sequences; double them to stay literal.
    out.replace("${", "$${").replace("%{", "%%{")
}

fn path_str(p: &Path) -> String {
    hcl_string(&p.to_string_lossy())
}

/// `DataStore "sql"` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataStoreConfig {
    /// `database_type = "sqlite3"`, `connection_string` = the file path.
    Sqlite(PathBuf),
    /// `database_type = "postgres"` with a connection URL.
    Postgres(String),
    /// `database_type = "mysql"` with a connection string.
    Mysql(String),
}

/// `KeyManager` plugin choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyManagerConfig {
    /// `KeyManager "memory"`.
    Memory,
    /// `KeyManager "disk"`: the server writes `keys_path = <path>`, the agent
    /// `directory = <path>`.
    Disk(PathBuf),
}

/// `UpstreamAuthority "disk"` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamDisk {
    /// `cert_file_path`.
    pub cert_file_path: PathBuf,
    /// `key_file_path`.
    pub key_file_path: PathBuf,
    /// `bundle_file_path` (optional).
    pub bundle_file_path: Option<PathBuf>,
}

/// A `spire-server` config file.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `trust_domain`.
    pub trust_domain: String,
    /// `bind_address` (default 127.0.0.1).
    pub bind_address: String,
    /// `bind_port` (default: a free port).
    pub bind_port: u16,
    /// `socket_path` (default `<dir>/server.sock`).
    pub socket_path: PathBuf,
    /// `data_dir` (default `<dir>/data`).
    pub data_dir: PathBuf,
    /// `log_level` (default DEBUG).
    pub log_level: String,
    /// `log_format` (unset by default).
    pub log_format: Option<String>,
    /// `DataStore "sql"` (default SQLite at `<data_dir>/datastore.sqlite3`).
    pub datastore: DataStoreConfig,
    /// `KeyManager` (default memory).
    pub key_manager: KeyManagerConfig,
    /// Whether `NodeAttestor "join_token"` is configured (default true).
    pub join_token: bool,
    /// `NodeAttestor "x509pop"` with this `ca_bundle_path` (default none).
    pub x509pop_ca_bundle: Option<PathBuf>,
    /// `UpstreamAuthority "disk"` (default none).
    pub upstream_disk: Option<UpstreamDisk>,
    /// `health_checks` listener on 127.0.0.1 with this port (default none).
    pub health_port: Option<u16>,
    /// Extra `key = value` lines (raw HCL) inside `server {}`, e.g.
    /// `("ca_ttl", "\"1h\"")`.
    pub server_settings: Vec<(String, String)>,
    /// Extra raw HCL plugin blocks inside `plugins {}`.
    pub extra_plugins: Vec<String>,
    /// Extra raw HCL at top level (e.g. a `telemetry {}` block).
    pub extra_top_level: Vec<String>,
}

impl ServerConfig {
    /// Defaults for a server whose files all live under `dir`.
    pub fn new(trust_domain: &str, dir: &Path) -> Self {
        let data_dir = dir.join("data");
        Self {
            trust_domain: trust_domain.to_owned(),
            bind_address: "127.0.0.1".to_owned(),
            bind_port: free_port(),
            socket_path: dir.join("server.sock"),
            datastore: DataStoreConfig::Sqlite(data_dir.join("datastore.sqlite3")),
            data_dir,
            log_level: "DEBUG".to_owned(),
            log_format: None,
            key_manager: KeyManagerConfig::Memory,
            join_token: true,
            x509pop_ca_bundle: None,
            upstream_disk: None,
            health_port: None,
            server_settings: Vec::new(),
            extra_plugins: Vec::new(),
            extra_top_level: Vec::new(),
        }
    }

    /// Sets the datastore.
    pub fn datastore(mut self, ds: DataStoreConfig) -> Self {
        self.datastore = ds;
        self
    }

    /// Sets the key manager.
    pub fn key_manager(mut self, km: KeyManagerConfig) -> Self {
        self.key_manager = km;
        self
    }

    /// Adds `NodeAttestor "x509pop"` trusting this CA bundle.
    pub fn x509pop(mut self, ca_bundle_path: impl Into<PathBuf>) -> Self {
        self.x509pop_ca_bundle = Some(ca_bundle_path.into());
        self
    }

    /// Adds `UpstreamAuthority "disk"`.
    pub fn upstream_disk(mut self, upstream: UpstreamDisk) -> Self {
        self.upstream_disk = Some(upstream);
        self
    }

    /// Enables the `health_checks` listener on a free port.
    pub fn health_checks(mut self) -> Self {
        self.health_port = Some(free_port());
        self
    }

    /// Adds `key = <raw HCL value>` inside `server {}`.
    pub fn setting(mut self, key: &str, raw_value: &str) -> Self {
        self.server_settings
            .push((key.to_owned(), raw_value.to_owned()));
        self
    }

    /// Adds `key = "<value>"` inside `server {}`.
    pub fn string_setting(self, key: &str, value: &str) -> Self {
        let v = hcl_string(value);
        self.setting(key, &v)
    }

    /// Adds a raw plugin block inside `plugins {}`.
    pub fn plugin(mut self, raw_block: &str) -> Self {
        self.extra_plugins.push(raw_block.to_owned());
        self
    }

    /// `127.0.0.1:<bind_port>` (the address agents dial).
    pub fn server_address(&self) -> String {
        format!("{}:{}", self.bind_address, self.bind_port)
    }

    /// An agent config for this server, its files under `dir`.
    pub fn agent_config(&self, dir: &Path) -> AgentConfig {
        AgentConfig::new(&self.trust_domain, &self.bind_address, self.bind_port, dir)
    }

    /// The HCL text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "server {{");
        let _ = writeln!(s, "    bind_address = {}", hcl_string(&self.bind_address));
        let _ = writeln!(s, "    bind_port = {}", self.bind_port);
        let _ = writeln!(s, "    socket_path = {}", path_str(&self.socket_path));
        let _ = writeln!(s, "    trust_domain = {}", hcl_string(&self.trust_domain));
        let _ = writeln!(s, "    data_dir = {}", path_str(&self.data_dir));
        let _ = writeln!(s, "    log_level = {}", hcl_string(&self.log_level));
        if let Some(f) = &self.log_format {
            let _ = writeln!(s, "    log_format = {}", hcl_string(f));
        }
        for (k, v) in &self.server_settings {
            let _ = writeln!(s, "    {k} = {v}");
        }
        let _ = writeln!(s, "}}\n");
        let _ = writeln!(s, "plugins {{");
        let (db_type, conn) = match &self.datastore {
            DataStoreConfig::Sqlite(p) => ("sqlite3", p.to_string_lossy().into_owned()),
            DataStoreConfig::Postgres(u) => ("postgres", u.clone()),
            DataStoreConfig::Mysql(u) => ("mysql", u.clone()),
        };
        let _ = writeln!(s, "    DataStore \"sql\" {{");
        let _ = writeln!(s, "        plugin_data {{");
        let _ = writeln!(s, "            database_type = {}", hcl_string(db_type));
        let _ = writeln!(s, "            connection_string = {}", hcl_string(&conn));
        let _ = writeln!(s, "        }}");
        let _ = writeln!(s, "    }}");
        match &self.key_manager {
            KeyManagerConfig::Memory => {
                let _ = writeln!(
                    s,
                    "    KeyManager \"memory\" {{\n        plugin_data {{}}\n    }}"
                );
            }
            KeyManagerConfig::Disk(p) => {
                let _ = writeln!(
                    s,
                    "    KeyManager \"disk\" {{\n        plugin_data {{\n            keys_path = {}\n        }}\n    }}",
                    path_str(p)
                );
            }
        }
        if self.join_token {
            let _ = writeln!(
                s,
                "    NodeAttestor \"join_token\" {{\n        plugin_data {{}}\n    }}"
            );
        }
        if let Some(ca) = &self.x509pop_ca_bundle {
            let _ = writeln!(
                s,
                "    NodeAttestor \"x509pop\" {{\n        plugin_data {{\n            ca_bundle_path = {}\n        }}\n    }}",
                path_str(ca)
            );
        }
        if let Some(up) = &self.upstream_disk {
            let _ = writeln!(s, "    UpstreamAuthority \"disk\" {{");
            let _ = writeln!(s, "        plugin_data {{");
            let _ = writeln!(
                s,
                "            cert_file_path = {}",
                path_str(&up.cert_file_path)
            );
            let _ = writeln!(
                s,
                "            key_file_path = {}",
                path_str(&up.key_file_path)
            );
            if let Some(b) = &up.bundle_file_path {
                let _ = writeln!(s, "            bundle_file_path = {}", path_str(b));
            }
            let _ = writeln!(s, "        }}");
            let _ = writeln!(s, "    }}");
        }
        for p in &self.extra_plugins {
            let _ = writeln!(s, "{p}");
        }
        let _ = writeln!(s, "}}");
        write_health(&mut s, self.health_port);
        for t in &self.extra_top_level {
            let _ = writeln!(s, "\n{t}");
        }
        s
    }

    /// Writes the HCL to `path` (creating the data directory's parent too)
    /// and returns `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<PathBuf> {
        write_file(path, &self.render())
    }
}

/// The agent's node attestor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentNodeAttestor {
    /// `NodeAttestor "join_token"`; the token goes in `join_token` (or on the
    /// command line with `-joinToken`).
    JoinToken,
    /// `NodeAttestor "x509pop"` with these files.
    X509pop {
        /// `private_key_path`.
        private_key_path: PathBuf,
        /// `certificate_path`.
        certificate_path: PathBuf,
        /// `intermediates_path` (optional).
        intermediates_path: Option<PathBuf>,
    },
}

/// A `spire-agent` config file.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `trust_domain`.
    pub trust_domain: String,
    /// `server_address`.
    pub server_address: String,
    /// `server_port`.
    pub server_port: u16,
    /// `socket_path` (default `<dir>/api.sock`).
    pub socket_path: PathBuf,
    /// `data_dir` (default `<dir>/data`).
    pub data_dir: PathBuf,
    /// `log_level` (default DEBUG).
    pub log_level: String,
    /// `trust_bundle_path` (default none).
    pub trust_bundle_path: Option<PathBuf>,
    /// `trust_bundle_format` (default unset = pem).
    pub trust_bundle_format: Option<String>,
    /// `insecure_bootstrap` (default true; [`AgentConfig::trust_bundle`]
    /// turns it off).
    pub insecure_bootstrap: bool,
    /// `join_token` (default none).
    pub join_token: Option<String>,
    /// The node attestor (default join_token).
    pub node_attestor: AgentNodeAttestor,
    /// `KeyManager` (default memory).
    pub key_manager: KeyManagerConfig,
    /// `WorkloadAttestor "unix"` `discover_workload_path` (default false).
    pub discover_workload_path: bool,
    /// `admin_socket_path` (default none).
    pub admin_socket_path: Option<PathBuf>,
    /// `health_checks` listener port (default none).
    pub health_port: Option<u16>,
    /// Extra `key = <raw HCL value>` lines inside `agent {}`.
    pub agent_settings: Vec<(String, String)>,
    /// Extra raw HCL plugin blocks inside `plugins {}`.
    pub extra_plugins: Vec<String>,
    /// Extra raw HCL at top level (e.g. an `sds {}`-style block if any).
    pub extra_top_level: Vec<String>,
}

impl AgentConfig {
    /// Defaults for an agent of `trust_domain` talking to
    /// `server_address:server_port`, its files under `dir`.
    pub fn new(trust_domain: &str, server_address: &str, server_port: u16, dir: &Path) -> Self {
        Self {
            trust_domain: trust_domain.to_owned(),
            server_address: server_address.to_owned(),
            server_port,
            socket_path: dir.join("api.sock"),
            data_dir: dir.join("data"),
            log_level: "DEBUG".to_owned(),
            trust_bundle_path: None,
            trust_bundle_format: None,
            insecure_bootstrap: true,
            join_token: None,
            node_attestor: AgentNodeAttestor::JoinToken,
            key_manager: KeyManagerConfig::Memory,
            discover_workload_path: false,
            admin_socket_path: None,
            health_port: None,
            agent_settings: Vec::new(),
            extra_plugins: Vec::new(),
            extra_top_level: Vec::new(),
        }
    }

    /// Bootstraps trust from this bundle file (and turns `insecure_bootstrap`
    /// off).
    pub fn trust_bundle(mut self, path: impl Into<PathBuf>) -> Self {
        self.trust_bundle_path = Some(path.into());
        self.insecure_bootstrap = false;
        self
    }

    /// Sets `join_token`.
    pub fn join_token(mut self, token: &str) -> Self {
        self.join_token = Some(token.to_owned());
        self.node_attestor = AgentNodeAttestor::JoinToken;
        self
    }

    /// Uses `NodeAttestor "x509pop"` with these files.
    pub fn x509pop(
        mut self,
        certificate_path: impl Into<PathBuf>,
        private_key_path: impl Into<PathBuf>,
    ) -> Self {
        self.node_attestor = AgentNodeAttestor::X509pop {
            private_key_path: private_key_path.into(),
            certificate_path: certificate_path.into(),
            intermediates_path: None,
        };
        self
    }

    /// Sets the key manager.
    pub fn key_manager(mut self, km: KeyManagerConfig) -> Self {
        self.key_manager = km;
        self
    }

    /// Enables the `health_checks` listener on a free port.
    pub fn health_checks(mut self) -> Self {
        self.health_port = Some(free_port());
        self
    }

    /// Adds `key = <raw HCL value>` inside `agent {}`.
    pub fn setting(mut self, key: &str, raw_value: &str) -> Self {
        self.agent_settings
            .push((key.to_owned(), raw_value.to_owned()));
        self
    }

    /// Adds `key = "<value>"` inside `agent {}`.
    pub fn string_setting(self, key: &str, value: &str) -> Self {
        let v = hcl_string(value);
        self.setting(key, &v)
    }

    /// Adds a raw plugin block inside `plugins {}`.
    pub fn plugin(mut self, raw_block: &str) -> Self {
        self.extra_plugins.push(raw_block.to_owned());
        self
    }

    /// `unix://<socket_path>`, the value for `SPIFFE_ENDPOINT_SOCKET`.
    pub fn endpoint_socket(&self) -> String {
        format!("unix://{}", self.socket_path.display())
    }

    /// The HCL text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "agent {{");
        let _ = writeln!(s, "    data_dir = {}", path_str(&self.data_dir));
        let _ = writeln!(s, "    log_level = {}", hcl_string(&self.log_level));
        let _ = writeln!(
            s,
            "    server_address = {}",
            hcl_string(&self.server_address)
        );
        let _ = writeln!(s, "    server_port = {}", self.server_port);
        let _ = writeln!(s, "    socket_path = {}", path_str(&self.socket_path));
        let _ = writeln!(s, "    trust_domain = {}", hcl_string(&self.trust_domain));
        if let Some(p) = &self.trust_bundle_path {
            let _ = writeln!(s, "    trust_bundle_path = {}", path_str(p));
        }
        if let Some(f) = &self.trust_bundle_format {
            let _ = writeln!(s, "    trust_bundle_format = {}", hcl_string(f));
        }
        if self.insecure_bootstrap {
            let _ = writeln!(s, "    insecure_bootstrap = true");
        }
        if let Some(t) = &self.join_token {
            let _ = writeln!(s, "    join_token = {}", hcl_string(t));
        }
        if let Some(p) = &self.admin_socket_path {
            let _ = writeln!(s, "    admin_socket_path = {}", path_str(p));
        }
        for (k, v) in &self.agent_settings {
            let _ = writeln!(s, "    {k} = {v}");
        }
        let _ = writeln!(s, "}}\n");
        let _ = writeln!(s, "plugins {{");
        match &self.node_attestor {
            AgentNodeAttestor::JoinToken => {
                let _ = writeln!(
                    s,
                    "    NodeAttestor \"join_token\" {{\n        plugin_data {{}}\n    }}"
                );
            }
            AgentNodeAttestor::X509pop {
                private_key_path,
                certificate_path,
                intermediates_path,
            } => {
                let _ = writeln!(s, "    NodeAttestor \"x509pop\" {{");
                let _ = writeln!(s, "        plugin_data {{");
                let _ = writeln!(
                    s,
                    "            private_key_path = {}",
                    path_str(private_key_path)
                );
                let _ = writeln!(
                    s,
                    "            certificate_path = {}",
                    path_str(certificate_path)
                );
                if let Some(i) = intermediates_path {
                    let _ = writeln!(s, "            intermediates_path = {}", path_str(i));
                }
                let _ = writeln!(s, "        }}");
                let _ = writeln!(s, "    }}");
            }
        }
        match &self.key_manager {
            KeyManagerConfig::Memory => {
                let _ = writeln!(
                    s,
                    "    KeyManager \"memory\" {{\n        plugin_data {{}}\n    }}"
                );
            }
            KeyManagerConfig::Disk(p) => {
                let _ = writeln!(
                    s,
                    "    KeyManager \"disk\" {{\n        plugin_data {{\n            directory = {}\n        }}\n    }}",
                    path_str(p)
                );
            }
        }
        let _ = writeln!(s, "    WorkloadAttestor \"unix\" {{");
        let _ = writeln!(s, "        plugin_data {{");
        if self.discover_workload_path {
            let _ = writeln!(s, "            discover_workload_path = true");
        }
        let _ = writeln!(s, "        }}");
        let _ = writeln!(s, "    }}");
        for p in &self.extra_plugins {
            let _ = writeln!(s, "{p}");
        }
        let _ = writeln!(s, "}}");
        write_health(&mut s, self.health_port);
        for t in &self.extra_top_level {
            let _ = writeln!(s, "\n{t}");
        }
        s
    }

    /// Writes the HCL to `path` and returns `path`.
    pub fn write(&self, path: &Path) -> anyhow::Result<PathBuf> {
        write_file(path, &self.render())
    }
}

fn write_health(s: &mut String, port: Option<u16>) {
    if let Some(port) = port {
        let _ = writeln!(
            s,
            "\nhealth_checks {{\n    listener_enabled = true\n    bind_address = \"127.0.0.1\"\n    bind_port = \"{port}\"\n    live_path = \"/live\"\n    ready_path = \"/ready\"\n}}"
        );
    }
}

fn write_file(path: &Path, text: &str) -> anyhow::Result<PathBuf> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcl_strings_are_escaped() {
        assert_eq!(hcl_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(hcl_string("${X}"), r#""$${X}""#);
        assert_eq!(hcl_string("plain/path"), "\"plain/path\"");
    }

    #[test]
    fn server_config_has_spire_shape() {
        let dir = crate::temp_dir();
        let cfg = ServerConfig::new("example.org", dir.path())
            .key_manager(KeyManagerConfig::Disk(dir.path().join("keys.json")))
            .x509pop("/ca.pem")
            .string_setting("ca_ttl", "1h")
            .health_checks();
        let text = cfg.render();
        for needle in [
            "server {",
            "trust_domain = \"example.org\"",
            &format!("bind_port = {}", cfg.bind_port),
            "bind_address = \"127.0.0.1\"",
            "ca_ttl = \"1h\"",
            "DataStore \"sql\"",
            "database_type = \"sqlite3\"",
            "datastore.sqlite3\"",
            "KeyManager \"disk\"",
            "keys_path = ",
            "NodeAttestor \"join_token\"",
            "NodeAttestor \"x509pop\"",
            "ca_bundle_path = \"/ca.pem\"",
            "health_checks {",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert_eq!(
            text.matches('{').count(),
            text.matches('}').count(),
            "{text}"
        );
        let path = cfg.write(&dir.path().join("conf/server.conf")).unwrap();
        assert_eq!(std::fs::read_to_string(path).unwrap(), text);
        assert_eq!(cfg.server_address(), format!("127.0.0.1:{}", cfg.bind_port));
    }

    #[test]
    fn agent_config_has_spire_shape() {
        let dir = crate::temp_dir();
        let server = ServerConfig::new("example.org", &dir.path().join("server")).datastore(
            DataStoreConfig::Postgres("postgres://u@127.0.0.1:5432/db".into()),
        );
        assert!(server.render().contains("database_type = \"postgres\""));
        let agent = server
            .agent_config(&dir.path().join("agent"))
            .join_token("tok-123");
        let text = agent.render();
        for needle in [
            "agent {",
            &format!("server_port = {}", server.bind_port),
            "server_address = \"127.0.0.1\"",
            "insecure_bootstrap = true",
            "join_token = \"tok-123\"",
            "NodeAttestor \"join_token\"",
            "KeyManager \"memory\"",
            "WorkloadAttestor \"unix\"",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("trust_bundle_path"));
        let agent = agent.trust_bundle("/b.pem").x509pop("/c.pem", "/k.pem");
        let text = agent.render();
        assert!(text.contains("trust_bundle_path = \"/b.pem\""));
        assert!(!text.contains("insecure_bootstrap"));
        assert!(
            text.contains("certificate_path = \"/c.pem\"")
                && text.contains("private_key_path = \"/k.pem\"")
        );
        assert_eq!(
            text.matches('{').count(),
            text.matches('}').count(),
            "{text}"
        );
        assert!(agent.endpoint_socket().starts_with("unix:///"));
    }
}
