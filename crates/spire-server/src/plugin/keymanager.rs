//! `KeyManager "disk"` (`keys_path`, or a `directory`) and `KeyManager "memory"`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use spire_crypto::{DiskKeyManager, KeyManager, MemoryKeyManager};

/// Why a KeyManager could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyManagerPluginError {
    /// The plugin name is not a built-in KeyManager.
    #[error("unknown KeyManager plugin {0:?}: expected \"disk\" or \"memory\"")]
    Unknown(String),
    /// A `plugin_data` key is unknown or has the wrong type.
    #[error("KeyManager {plugin:?}: {reason}")]
    Config {
        /// The plugin name.
        plugin: String,
        /// What is wrong.
        reason: String,
    },
    /// Opening the key file failed.
    #[error("KeyManager \"disk\": cannot open the key file")]
    Open(#[source] spire_crypto::KeyManagerError),
}

/// Builds the KeyManager `name` from its `plugin_data` (JSON). Relative paths resolve against
/// `data_dir`.
pub fn build(
    name: &str,
    data: &serde_json::Value,
    data_dir: &Path,
) -> Result<Arc<dyn KeyManager>, KeyManagerPluginError> {
    let obj = match data {
        serde_json::Value::Null => serde_json::Map::new(),
        serde_json::Value::Object(m) => m.clone(),
        _ => {
            return Err(KeyManagerPluginError::Config {
                plugin: name.to_string(),
                reason: "plugin_data must be a block".to_string(),
            });
        }
    };
    match name {
        "memory" => {
            if let Some(k) = obj.keys().next() {
                return Err(KeyManagerPluginError::Config {
                    plugin: name.to_string(),
                    reason: format!("unknown configuration key {k:?}"),
                });
            }
            Ok(Arc::new(MemoryKeyManager::new()))
        }
        "disk" => {
            let mut path: Option<PathBuf> = None;
            for (k, v) in &obj {
                let s = v.as_str().ok_or_else(|| KeyManagerPluginError::Config {
                    plugin: name.to_string(),
                    reason: format!("{k} must be a string"),
                })?;
                match k.as_str() {
                    "keys_path" => path = Some(PathBuf::from(s)),
                    "directory" => path = Some(PathBuf::from(s).join(DiskKeyManager::FILE_NAME)),
                    other => {
                        return Err(KeyManagerPluginError::Config {
                            plugin: name.to_string(),
                            reason: format!(
                                "unknown configuration key {other:?} (expected keys_path or directory)"
                            ),
                        });
                    }
                }
            }
            let path = path.ok_or_else(|| KeyManagerPluginError::Config {
                plugin: name.to_string(),
                reason: "keys_path is required".to_string(),
            })?;
            let path = if path.is_absolute() {
                path
            } else {
                data_dir.join(path)
            };
            let km = DiskKeyManager::open(path).map_err(KeyManagerPluginError::Open)?;
            Ok(Arc::new(km))
        }
        other => Err(KeyManagerPluginError::Unknown(other.to_string())),
    }
}
