//! Key managers: private keys addressed by string ids ("x509-CA-A", "JWT-Signer-B",
//! "agent-svid-A", …), as SPIRE's KeyManager plugins hold them.
//!
//! Two built-ins: [`MemoryKeyManager`] (keys are lost on restart) and [`DiskKeyManager`] (one
//! JSON file in SPIRE's `keys.json` shape, `{"keys": {"<id>": "<base64 PKCS#8 DER>"}}`, written
//! atomically through a temporary file and a rename, mode 0600). Reading also accepts SPIRE's
//! newer per-key record form (`{"private_key": "<base64>", "created_at": …}`). SPIRE's server
//! plugin takes the file path (`keys_path`); the agent's takes a `directory` holding `keys.json`:
//! see [`DiskKeyManager::open`] and [`DiskKeyManager::in_directory`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::keys::{JwsAlgorithm, KeyError, KeyType, PrivateKey, PublicKey, Signer};

/// Longest accepted key id, in bytes.
pub const MAX_KEY_ID_LEN: usize = 256;

/// Errors from a key manager.
#[derive(Debug, thiserror::Error)]
pub enum KeyManagerError {
    /// The key id is empty, too long or holds control characters.
    #[error("invalid key id {0:?}: must be 1 to 256 bytes without control characters")]
    InvalidKeyId(String),
    /// No key has this id.
    #[error("no key with id {0:?}")]
    NotFound(String),
    /// Key generation, import or signing failed.
    #[error("key {id:?}: {source}")]
    Key {
        /// The key id.
        id: String,
        /// What went wrong.
        #[source]
        source: KeyError,
    },
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key file exists but is not a valid key file.
    #[error("key file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        reason: String,
    },
}

/// A stored key: its id and public half.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key id.
    pub id: String,
    /// The public key.
    pub public_key: PublicKey,
}

/// A store of private keys addressed by id. Object safe (`Arc<dyn KeyManager>`).
pub trait KeyManager: Send + Sync + fmt::Debug {
    /// Generates a key under `id`, replacing any key already there, and returns its signer.
    fn generate_key(&self, id: &str, key_type: KeyType)
    -> Result<Arc<dyn Signer>, KeyManagerError>;

    /// The signer for `id`, or `None` if there is no such key.
    fn get_key(&self, id: &str) -> Result<Option<Arc<dyn Signer>>, KeyManagerError>;

    /// All keys, sorted by id.
    fn get_keys(&self) -> Result<Vec<KeyInfo>, KeyManagerError>;

    /// The public key of `id`, or `None`.
    fn get_public_key(&self, id: &str) -> Result<Option<PublicKey>, KeyManagerError> {
        Ok(self.get_key(id)?.map(|s| s.public_key().clone()))
    }

    /// Signs `msg` for an X.509 structure with key `id`.
    fn sign_x509(&self, id: &str, msg: &[u8]) -> Result<Vec<u8>, KeyManagerError> {
        let key = self
            .get_key(id)?
            .ok_or_else(|| KeyManagerError::NotFound(id.to_owned()))?;
        key.sign_x509(msg).map_err(|source| KeyManagerError::Key {
            id: id.to_owned(),
            source,
        })
    }

    /// Signs `msg` as a JWS with key `id`.
    fn sign_jws(
        &self,
        id: &str,
        alg: JwsAlgorithm,
        msg: &[u8],
    ) -> Result<Vec<u8>, KeyManagerError> {
        let key = self
            .get_key(id)?
            .ok_or_else(|| KeyManagerError::NotFound(id.to_owned()))?;
        key.sign_jws(alg, msg)
            .map_err(|source| KeyManagerError::Key {
                id: id.to_owned(),
                source,
            })
    }
}

fn check_id(id: &str) -> Result<(), KeyManagerError> {
    if id.is_empty() || id.len() > MAX_KEY_ID_LEN || id.chars().any(char::is_control) {
        return Err(KeyManagerError::InvalidKeyId(id.to_owned()));
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn generate(id: &str, key_type: KeyType) -> Result<Arc<PrivateKey>, KeyManagerError> {
    check_id(id)?;
    PrivateKey::generate(key_type)
        .map(Arc::new)
        .map_err(|source| KeyManagerError::Key {
            id: id.to_owned(),
            source,
        })
}

fn infos(keys: &HashMap<String, Arc<PrivateKey>>) -> Vec<KeyInfo> {
    let mut out: Vec<KeyInfo> = keys
        .iter()
        .map(|(id, k)| KeyInfo {
            id: id.clone(),
            public_key: k.public_key().clone(),
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Keys held in memory only.
#[derive(Default)]
pub struct MemoryKeyManager {
    keys: Mutex<HashMap<String, Arc<PrivateKey>>>,
}

impl MemoryKeyManager {
    /// An empty key manager.
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Debug for MemoryKeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryKeyManager")
            .field("keys", &lock(&self.keys).len())
            .finish()
    }
}

impl KeyManager for MemoryKeyManager {
    fn generate_key(
        &self,
        id: &str,
        key_type: KeyType,
    ) -> Result<Arc<dyn Signer>, KeyManagerError> {
        let key = generate(id, key_type)?;
        lock(&self.keys).insert(id.to_owned(), key.clone());
        Ok(key)
    }

    fn get_key(&self, id: &str) -> Result<Option<Arc<dyn Signer>>, KeyManagerError> {
        Ok(lock(&self.keys)
            .get(id)
            .map(|k| k.clone() as Arc<dyn Signer>))
    }

    fn get_keys(&self) -> Result<Vec<KeyInfo>, KeyManagerError> {
        Ok(infos(&lock(&self.keys)))
    }
}

#[derive(Serialize, Default)]
struct KeysFile {
    keys: BTreeMap<String, String>,
}

/// Keys persisted in one JSON file (mode 0600), rewritten atomically on every change.
pub struct DiskKeyManager {
    path: PathBuf,
    keys: Mutex<HashMap<String, Arc<PrivateKey>>>,
}

impl DiskKeyManager {
    /// File name used by [`DiskKeyManager::in_directory`].
    pub const FILE_NAME: &'static str = "keys.json";

    /// Opens (or prepares to create) the key file at `path` and loads the keys in it.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, KeyManagerError> {
        let path = path.into();
        let keys = match fs::read(&path) {
            Ok(bytes) => load(&path, &Zeroizing::new(bytes))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(source) => return Err(KeyManagerError::Io { path, source }),
        };
        Ok(DiskKeyManager {
            path,
            keys: Mutex::new(keys),
        })
    }

    /// Opens `<dir>/keys.json`, creating `dir` (mode 0700) if needed.
    pub fn in_directory(dir: impl AsRef<Path>) -> Result<Self, KeyManagerError> {
        let dir = dir.as_ref();
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(|source| KeyManagerError::Io {
                path: dir.to_owned(),
                source,
            })?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|source| {
                KeyManagerError::Io {
                    path: dir.to_owned(),
                    source,
                }
            })?;
        }
        Self::open(dir.join(Self::FILE_NAME))
    }

    /// The key file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn persist(&self, keys: &HashMap<String, Arc<PrivateKey>>) -> Result<(), KeyManagerError> {
        let io = |source| KeyManagerError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = KeysFile::default();
        for (id, key) in keys {
            let der = key.to_pkcs8_der().map_err(|source| KeyManagerError::Key {
                id: id.clone(),
                source,
            })?;
            file.keys.insert(id.clone(), STANDARD.encode(&*der));
        }
        let json = Zeroizing::new(serde_json::to_vec_pretty(&file).map_err(|e| {
            KeyManagerError::Corrupt {
                path: self.path.clone(),
                reason: e.to_string(),
            }
        })?);
        for v in file.keys.values_mut() {
            zeroize::Zeroize::zeroize(v);
        }
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| Self::FILE_NAME.to_owned());
        let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            // The mode only applies on creation; force it on a reused temp file too.
            f.set_permissions(fs::Permissions::from_mode(0o600))?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Ok(d) = fs::File::open(&dir) {
                // Best effort: make the rename durable.
                let _ = d.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io(e)
        })
    }
}

/// On-disk entry as read: SPIRE's legacy form (base64 PKCS#8 string) or its newer record form
/// (`{"id": …, "private_key": "<base64 PKCS#8>", "created_at": …, "server_id": …}`).
#[derive(Deserialize)]
#[serde(untagged)]
enum StoredKey {
    Legacy(String),
    Record { private_key: String },
}

#[derive(Deserialize)]
struct KeysFileIn {
    keys: BTreeMap<String, StoredKey>,
}

fn load(path: &Path, bytes: &[u8]) -> Result<HashMap<String, Arc<PrivateKey>>, KeyManagerError> {
    let corrupt = |reason: String| KeyManagerError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    // serde_json's messages carry positions, never the key text.
    let file: KeysFileIn = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut keys = HashMap::with_capacity(file.keys.len());
    for (id, stored) in file.keys {
        let mut b64 = match stored {
            StoredKey::Legacy(s) | StoredKey::Record { private_key: s } => s,
        };
        let decoded = STANDARD.decode(b64.as_bytes());
        zeroize::Zeroize::zeroize(&mut b64);
        let der =
            Zeroizing::new(decoded.map_err(|e| corrupt(format!("key {id:?} is not base64: {e}")))?);
        let key =
            PrivateKey::from_pkcs8_der(&der).map_err(|e| corrupt(format!("key {id:?}: {e}")))?;
        keys.insert(id, Arc::new(key));
    }
    Ok(keys)
}

impl fmt::Debug for DiskKeyManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskKeyManager")
            .field("path", &self.path)
            .field("keys", &lock(&self.keys).len())
            .finish()
    }
}

impl KeyManager for DiskKeyManager {
    fn generate_key(
        &self,
        id: &str,
        key_type: KeyType,
    ) -> Result<Arc<dyn Signer>, KeyManagerError> {
        let key = generate(id, key_type)?;
        let mut keys = lock(&self.keys);
        let previous = keys.insert(id.to_owned(), key.clone());
        if let Err(e) = self.persist(&keys) {
            // Keep memory and disk in agreement.
            match previous {
                Some(p) => keys.insert(id.to_owned(), p),
                None => keys.remove(id),
            };
            return Err(e);
        }
        tracing::debug!(
            key_id = id,
            key_type = %key_type,
            path = %self.path.display(),
            "key generated and persisted"
        );
        Ok(key)
    }

    fn get_key(&self, id: &str) -> Result<Option<Arc<dyn Signer>>, KeyManagerError> {
        Ok(lock(&self.keys)
            .get(id)
            .map(|k| k.clone() as Arc<dyn Signer>))
    }

    fn get_keys(&self) -> Result<Vec<KeyInfo>, KeyManagerError> {
        Ok(infos(&lock(&self.keys)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::verify_jws;

    fn exercise(km: &dyn KeyManager) {
        assert!(km.get_key("x509-CA-A").unwrap().is_none());
        assert!(matches!(
            km.sign_x509("x509-CA-A", b"m"),
            Err(KeyManagerError::NotFound(_))
        ));
        let s = km.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
        let pk = km.get_public_key("x509-CA-A").unwrap().unwrap();
        assert_eq!(&pk, s.public_key());
        km.generate_key("JWT-Signer-B", KeyType::EcP384).unwrap();
        let sig = km
            .sign_jws("JWT-Signer-B", JwsAlgorithm::ES384, b"msg")
            .unwrap();
        let jpk = km.get_public_key("JWT-Signer-B").unwrap().unwrap();
        assert!(verify_jws(
            JwsAlgorithm::ES384,
            jpk.spki_der(),
            b"msg",
            &sig
        ));
        let ids: Vec<_> = km.get_keys().unwrap().into_iter().map(|k| k.id).collect();
        assert_eq!(ids, ["JWT-Signer-B", "x509-CA-A"]);
        // Regenerating replaces.
        let s2 = km.generate_key("x509-CA-A", KeyType::EcP256).unwrap();
        assert_ne!(s2.public_key(), &pk);
        assert!(matches!(
            km.generate_key("", KeyType::EcP256),
            Err(KeyManagerError::InvalidKeyId(_))
        ));
        assert!(matches!(
            km.generate_key("a\nb", KeyType::EcP256),
            Err(KeyManagerError::InvalidKeyId(_))
        ));
    }

    #[test]
    fn memory_key_manager() {
        let km = MemoryKeyManager::new();
        exercise(&km);
        assert!(format!("{km:?}").contains("keys: 2"));
    }

    #[test]
    fn disk_key_manager_persists_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let km = DiskKeyManager::in_directory(dir.path().join("km")).unwrap();
        exercise(&km);
        let mode = fs::metadata(km.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = fs::metadata(dir.path().join("km"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        let before = km.get_keys().unwrap();
        drop(km);
        // "Restart": a new manager on the same file sees the same keys.
        let km2 = DiskKeyManager::in_directory(dir.path().join("km")).unwrap();
        assert_eq!(km2.get_keys().unwrap(), before);
        let s = km2.get_key("x509-CA-A").unwrap().unwrap();
        let sig = km2.sign_x509("x509-CA-A", b"m").unwrap();
        assert!(
            aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
                s.public_key().key_bits()
            )
            .verify(b"m", &sig)
            .is_ok()
        );
        // No temp file left behind.
        let names: Vec<_> = fs::read_dir(dir.path().join("km"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("keys.json")]);
    }

    #[test]
    fn disk_key_manager_file_shape_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let km = DiskKeyManager::open(&path).unwrap();
        km.generate_key("agent-svid-A", KeyType::EcP256).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let b64 = v["keys"]["agent-svid-A"].as_str().unwrap();
        let der = STANDARD.decode(b64).unwrap();
        assert!(PrivateKey::from_pkcs8_der(&der).is_ok());
        assert!(!format!("{km:?}").contains(b64));

        // SPIRE's newer record form is read too.
        let record = format!(
            r#"{{"keys": {{"x509-CA-A": {{"id": "x509-CA-A", "private_key": "{b64}", "created_at": "2026-01-01T00:00:00Z", "server_id": "s1"}}}}}}"#
        );
        fs::write(&path, record).unwrap();
        let km2 = DiskKeyManager::open(&path).unwrap();
        assert_eq!(
            km2.get_public_key("x509-CA-A").unwrap(),
            km.get_public_key("agent-svid-A").unwrap()
        );

        fs::write(&path, b"{\"keys\": {\"a\": \"!!\"}}").unwrap();
        assert!(matches!(
            DiskKeyManager::open(&path),
            Err(KeyManagerError::Corrupt { .. })
        ));
        fs::write(&path, b"not json").unwrap();
        assert!(matches!(
            DiskKeyManager::open(&path),
            Err(KeyManagerError::Corrupt { .. })
        ));
    }

    #[test]
    fn disk_key_manager_write_failure_keeps_memory_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("keys.json");
        let km = DiskKeyManager::open(&path).unwrap();
        assert!(matches!(
            km.generate_key("x", KeyType::EcP256),
            Err(KeyManagerError::Io { .. })
        ));
        assert!(km.get_key("x").unwrap().is_none());
    }
}
