//! The agent's own private key (the key of its X509-SVID), as SPIRE's agent KeyManager plugins
//! keep it: `memory` (lost on restart, so the agent must re-attest) or `disk` (`directory`,
//! survives restarts). Workload keys never come here; they are generated in-process.
//!
//! A rotation generates the next key without touching the stored one, and only
//! [`AgentKeyStore::commit`] (after the server signed the new SVID) replaces it, so a failed
//! rotation leaves the working key in place.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use spire_config::PluginConfig;
use spire_crypto::{KeyType, PrivateKey};

/// File name of the agent key inside the disk KeyManager's `directory`.
pub const AGENT_KEY_FILE: &str = "agent-svid.key";

/// Why the agent key could not be loaded, generated or stored.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The KeyManager configuration is not usable.
    #[error("KeyManager {name:?}: {reason}")]
    Config {
        /// The plugin name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The key file could not be read or written.
    #[error("agent key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key could not be generated, parsed or encoded.
    #[error("agent key: {0}")]
    Key(#[from] spire_crypto::KeyError),
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DiskConfig {
    directory: Option<PathBuf>,
}

/// Where the agent's key lives.
#[derive(Debug)]
pub struct AgentKeyStore {
    /// `None` for the memory KeyManager.
    path: Option<PathBuf>,
    current: Mutex<Option<Arc<PrivateKey>>>,
}

impl AgentKeyStore {
    /// A key store that forgets the key on restart.
    pub fn memory() -> Self {
        AgentKeyStore {
            path: None,
            current: Mutex::new(None),
        }
    }

    /// A key store persisting the key as `<directory>/agent-svid.key` (PKCS#8 PEM, mode 0600).
    /// Loads the key already there, if any.
    pub fn disk(directory: PathBuf) -> Result<Self, KeyStoreError> {
        let path = directory.join(AGENT_KEY_FILE);
        let current = match std::fs::read_to_string(&path) {
            Ok(text) => Some(Arc::new(PrivateKey::from_pem(&text)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(KeyStoreError::Io { path, source }),
        };
        Ok(AgentKeyStore {
            path: Some(path),
            current: Mutex::new(current),
        })
    }

    /// The store described by the agent's `KeyManager` plugin block (`disk` or `memory`).
    /// `data_dir` is the default directory of the disk KeyManager.
    pub fn from_plugin(
        plugin: Option<&PluginConfig>,
        data_dir: &std::path::Path,
    ) -> Result<Self, KeyStoreError> {
        let Some(plugin) = plugin else {
            return Ok(Self::memory());
        };
        match plugin.name.as_str() {
            "memory" => Ok(Self::memory()),
            "disk" => {
                let cfg: DiskConfig = if plugin.data.is_null() && plugin.data_file.is_none() {
                    DiskConfig::default()
                } else {
                    plugin.plugin_data().map_err(|e| KeyStoreError::Config {
                        name: plugin.name.clone(),
                        reason: e.to_string(),
                    })?
                };
                Self::disk(cfg.directory.unwrap_or_else(|| data_dir.to_owned()))
            }
            other => Err(KeyStoreError::Config {
                name: other.to_owned(),
                reason: "unknown agent KeyManager, expected disk or memory".into(),
            }),
        }
    }

    /// Whether the key survives a restart.
    pub fn is_persistent(&self) -> bool {
        self.path.is_some()
    }

    /// The current key, if any.
    pub fn current(&self) -> Option<Arc<PrivateKey>> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A fresh EC P-256 key, not stored yet.
    pub fn generate(&self) -> Result<Arc<PrivateKey>, KeyStoreError> {
        Ok(Arc::new(PrivateKey::generate(KeyType::EcP256)?))
    }

    /// Makes `key` the current key (and writes it to disk for the disk KeyManager).
    pub fn commit(&self, key: Arc<PrivateKey>) -> Result<(), KeyStoreError> {
        if let Some(path) = &self.path {
            let pem = key.to_pkcs8_pem()?;
            let dir = path
                .parent()
                .map(ToOwned::to_owned)
                .unwrap_or_else(|| PathBuf::from("."));
            crate::storage::write_atomic(&dir, path, pem.as_bytes()).map_err(|source| {
                KeyStoreError::Io {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_store_survives_reopen_and_memory_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = AgentKeyStore::disk(dir.path().to_owned()).unwrap();
        assert!(store.current().is_none());
        let key = store.generate().unwrap();
        assert!(
            store.current().is_none(),
            "generate must not replace the key"
        );
        store.commit(key.clone()).unwrap();
        let reopened = AgentKeyStore::disk(dir.path().to_owned()).unwrap();
        assert_eq!(
            reopened.current().unwrap().public_key(),
            key.public_key(),
            "same key after reopen"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(AGENT_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let mem = AgentKeyStore::memory();
        mem.commit(key).unwrap();
        assert!(mem.current().is_some());
        assert!(!mem.is_persistent());
        assert!(AgentKeyStore::memory().current().is_none());
    }
}
