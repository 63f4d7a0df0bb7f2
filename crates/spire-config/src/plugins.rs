//! The `plugins { <Type> "<name>" { ... } }` block.
//!
//! Each plugin keeps its `plugin_data` as a generic value; the plugin deserializes its own typed
//! configuration later with [`PluginConfig::plugin_data`], which applies the same loose typing and
//! error paths as the rest of the file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ConfigError;
use crate::de::{DeError, from_value};

/// All configured plugins, sorted by type, then name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plugins {
    entries: Vec<PluginConfig>,
}

/// One `<Type> "<name>" { ... }` plugin block.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// The plugin type (`DataStore`, `KeyManager`, `NodeAttestor`, ...).
    pub plugin_type: String,
    /// The plugin name (`sql`, `disk`, `join_token`, ...).
    pub name: String,
    /// `enabled` (default true). Disabled plugins stay listed but are skipped by
    /// [`Plugins::enabled`].
    pub enabled: bool,
    /// `plugin_data` as written; `Value::Null` when absent.
    pub data: Value,
    /// `plugin_data_file`, read when the plugin data is decoded.
    pub data_file: Option<PathBuf>,
    /// The config file the plugin came from, for error messages.
    source: String,
}

/// How many enabled plugins of one type a binary accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cardinality {
    ExactlyOne,
    AtMostOne,
    AtLeastOne,
    Any,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlugin {
    plugin_cmd: Option<String>,
    plugin_args: Option<Vec<String>>,
    plugin_checksum: Option<String>,
    plugin_data: Option<Value>,
    plugin_data_file: Option<String>,
    enabled: Option<bool>,
}

pub(crate) type RawPlugins = BTreeMap<String, BTreeMap<String, RawPlugin>>;

// === impl Plugins ===

impl Plugins {
    /// Every plugin, enabled or not.
    pub fn all(&self) -> &[PluginConfig] {
        &self.entries
    }

    /// Enabled plugins of `plugin_type`.
    pub fn enabled<'a>(
        &'a self,
        plugin_type: &'a str,
    ) -> impl Iterator<Item = &'a PluginConfig> + 'a {
        self.entries
            .iter()
            .filter(move |p| p.enabled && p.plugin_type == plugin_type)
    }

    /// The single enabled plugin of `plugin_type`, if any (cardinality was checked at load).
    pub fn single<'a>(&'a self, plugin_type: &'a str) -> Option<&'a PluginConfig> {
        self.enabled(plugin_type).next()
    }

    /// Builds and checks the plugins of one file against the allowed types and cardinalities.
    pub(crate) fn from_raw(
        raw: RawPlugins,
        file: &str,
        allowed: &[(&str, Cardinality)],
    ) -> Result<Self, ConfigError> {
        let mut entries = Vec::new();
        for (plugin_type, named) in raw {
            if !allowed.iter().any(|(t, _)| *t == plugin_type) {
                let names: Vec<&str> = allowed.iter().map(|(t, _)| *t).collect();
                return Err(ConfigError::invalid(
                    file,
                    format!("plugins.{plugin_type}"),
                    format!("unknown plugin type, expected one of {}", names.join(", ")),
                ));
            }
            for (name, p) in named {
                let key = format!("plugins.{plugin_type}.{name}");
                let enabled = p.enabled.unwrap_or(true);
                if enabled && p.plugin_cmd.as_deref().is_some_and(|c| !c.is_empty()) {
                    return Err(ConfigError::invalid(
                        file,
                        format!("{key}.plugin_cmd"),
                        "external plugins are not supported by spire-rs; remove plugin_cmd \
                         to use a built-in plugin"
                            .to_owned(),
                    ));
                }
                if p.plugin_args.is_some() || p.plugin_checksum.is_some() {
                    let which = if p.plugin_args.is_some() {
                        "plugin_args"
                    } else {
                        "plugin_checksum"
                    };
                    return Err(ConfigError::invalid(
                        file,
                        format!("{key}.{which}"),
                        "only valid for external plugins (plugin_cmd), which spire-rs does not support"
                            .to_owned(),
                    ));
                }
                if p.plugin_data.is_some() && p.plugin_data_file.is_some() {
                    return Err(ConfigError::invalid(
                        file,
                        key,
                        "plugin_data and plugin_data_file are mutually exclusive".to_owned(),
                    ));
                }
                entries.push(PluginConfig {
                    plugin_type: plugin_type.clone(),
                    name,
                    enabled,
                    data: p.plugin_data.unwrap_or(Value::Null),
                    data_file: p.plugin_data_file.map(PathBuf::from),
                    source: file.to_owned(),
                });
            }
        }
        let plugins = Self { entries };
        for (plugin_type, cardinality) in allowed {
            let n = plugins.enabled(plugin_type).count();
            let problem = match cardinality {
                Cardinality::ExactlyOne if n != 1 => Some("expected exactly one enabled plugin"),
                Cardinality::AtMostOne if n > 1 => Some("expected at most one enabled plugin"),
                Cardinality::AtLeastOne if n == 0 => Some("expected at least one enabled plugin"),
                _ => None,
            };
            if let Some(problem) = problem {
                return Err(ConfigError::invalid(
                    file,
                    format!("plugins.{plugin_type}"),
                    format!("{problem}, found {n}"),
                ));
            }
        }
        Ok(plugins)
    }
}

// === impl PluginConfig ===

impl PluginConfig {
    /// Decodes `plugin_data` (or `plugin_data_file`) into the plugin's own config type, with the
    /// same loose typing as the config file (`"8081"` fills an integer, `"true"` a boolean).
    ///
    /// Absent data decodes as an empty block. Data written as a string is parsed as HCL.
    /// Errors name the key path, e.g. `plugins.DataStore.sql.plugin_data.database_type`.
    pub fn plugin_data<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let key = format!("plugins.{}.{}.plugin_data", self.plugin_type, self.name);
        let (source, data) = match &self.data_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let value = parse_text(&text, &path.display().to_string())?;
                (path.display().to_string(), value)
            }
            None => match &self.data {
                Value::String(text) => (self.source.clone(), parse_text(text, &key)?),
                Value::Null => (self.source.clone(), Value::Object(serde_json::Map::new())),
                other => (self.source.clone(), other.clone()),
            },
        };
        from_value(&data).map_err(|e: DeError| {
            let inner = e.dotted_path();
            let full = if inner.is_empty() {
                key.clone()
            } else {
                format!("{key}.{inner}")
            };
            ConfigError::invalid(&source, full, e.reason)
        })
    }
}

fn parse_text(text: &str, name: &str) -> Result<Value, ConfigError> {
    crate::parse_tree(text, name)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn plugins(v: Value, allowed: &[(&str, Cardinality)]) -> Result<Plugins, ConfigError> {
        let raw: RawPlugins =
            from_value(&v).map_err(|e| ConfigError::from_de("f.conf", "plugins", e))?;
        Plugins::from_raw(raw, "f.conf", allowed)
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct SqlData {
        database_type: String,
        connection_string: String,
        max_open_conns: Option<u32>,
    }

    #[test]
    fn plugin_data_is_decoded_loosely_with_paths() {
        let p = plugins(
            json!({"DataStore": {"sql": {"plugin_data": {
                "database_type": "sqlite3", "connection_string": "/tmp/x.db", "max_open_conns": "10"}}}}),
            &[("DataStore", Cardinality::ExactlyOne)],
        )
        .unwrap();
        let sql = p.single("DataStore").unwrap();
        assert_eq!(sql.name, "sql");
        let data: SqlData = sql.plugin_data().unwrap();
        assert_eq!(data.max_open_conns, Some(10));

        let p = plugins(
            json!({"DataStore": {"sql": {"plugin_data": {"database_type": "x", "connection_string": "y", "bogus": 1}}}}),
            &[("DataStore", Cardinality::ExactlyOne)],
        )
        .unwrap();
        let err = p
            .single("DataStore")
            .unwrap()
            .plugin_data::<SqlData>()
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "f.conf: plugins.DataStore.sql.plugin_data.bogus: unknown field `bogus`"
            ),
            "{msg}"
        );
    }

    #[test]
    fn string_plugin_data_is_parsed_as_hcl() {
        let p = plugins(
            json!({"DataStore": {"sql": {"plugin_data": "database_type = \"sqlite3\"\nconnection_string = \"a.db\""}}}),
            &[("DataStore", Cardinality::ExactlyOne)],
        )
        .unwrap();
        let data: SqlData = p.single("DataStore").unwrap().plugin_data().unwrap();
        assert_eq!(data.connection_string, "a.db");
    }

    #[test]
    fn plugin_data_file_is_read_when_decoding() {
        let dir = std::env::temp_dir().join(format!("spire-config-pdf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sql.hcl");
        std::fs::write(&path, "database_type = \"postgres\"\nconnection_string = \"dbname=spire\"\nmax_open_conns = \"x\"\n").unwrap();
        let p = plugins(
            json!({"DataStore": {"sql": {"plugin_data_file": path.display().to_string()}}}),
            &[("DataStore", Cardinality::ExactlyOne)],
        )
        .unwrap();
        let err = p
            .single("DataStore")
            .unwrap()
            .plugin_data::<SqlData>()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: plugins.DataStore.sql.plugin_data.max_open_conns: expected a non-negative integer, got \"x\"",
                path.display()
            )
        );
        std::fs::write(
            &path,
            "database_type = \"postgres\"\nconnection_string = \"dbname=spire\"\n",
        )
        .unwrap();
        let data: SqlData = p.single("DataStore").unwrap().plugin_data().unwrap();
        assert_eq!(data.database_type, "postgres");
        std::fs::remove_dir_all(&dir).unwrap();

        let err = plugins(
            json!({"DataStore": {"sql": {"plugin_data_file": "a", "plugin_data": {}}}}),
            &[("DataStore", Cardinality::ExactlyOne)],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "f.conf: plugins.DataStore.sql: plugin_data and plugin_data_file are mutually exclusive"
        );
    }

    #[test]
    fn cardinality_and_types_are_checked() {
        let err = plugins(
            json!({"KeyManager": {"disk": {}, "memory": {}}}),
            &[("KeyManager", Cardinality::ExactlyOne)],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "f.conf: plugins.KeyManager: expected exactly one enabled plugin, found 2"
        );

        let ok = plugins(
            json!({"KeyManager": {"disk": {"enabled": "false"}, "memory": {}}}),
            &[("KeyManager", Cardinality::ExactlyOne)],
        )
        .unwrap();
        assert_eq!(ok.single("KeyManager").unwrap().name, "memory");
        assert_eq!(ok.all().len(), 2);

        let err = plugins(
            json!({"Keymanager": {"disk": {}}}),
            &[("KeyManager", Cardinality::Any)],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "f.conf: plugins.Keymanager: unknown plugin type, expected one of KeyManager"
        );

        let err = plugins(json!({}), &[("WorkloadAttestor", Cardinality::AtLeastOne)]).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("expected at least one enabled plugin, found 0")
        );
    }

    #[test]
    fn external_plugins_are_reported_unsupported() {
        let err = plugins(
            json!({"NodeAttestor": {"custom": {"plugin_cmd": "/bin/x", "plugin_checksum": "ab"}}}),
            &[("NodeAttestor", Cardinality::Any)],
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "f.conf: plugins.NodeAttestor.custom.plugin_cmd: external plugins are not supported"
            ),
            "{err}"
        );
    }
}
