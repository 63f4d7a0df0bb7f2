//! The agent's persisted state: `<data_dir>/agent-data.json` holds the agent's X509-SVID chain,
//! the last trust bundle it received and whether the server said it may re-attest. The agent's
//! private key is not here: it lives in the KeyManager ([`crate::manager::keys`]).
//!
//! The file is written atomically (temporary file, fsync, rename) with mode 0600, so a crash
//! leaves either the old or the new state, never half of one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use spire_spiffe::{Bundle, TrustDomain};

/// The file name inside `data_dir`.
pub const AGENT_DATA_FILE: &str = "agent-data.json";

/// Why the agent state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The file could not be read or written.
    #[error("agent data file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but does not hold valid agent data.
    #[error("agent data file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// What the agent keeps across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentData {
    /// The agent's X509-SVID, leaf first (DER).
    pub svid_chain: Vec<Vec<u8>>,
    /// The trust domain's bundle as last received from the server.
    pub bundle: Bundle,
    /// Whether the agent re-attests (instead of calling RenewAgent) to rotate its SVID.
    pub reattestable: bool,
}

#[derive(Serialize, Deserialize)]
struct RawAgentData {
    svid: Vec<String>,
    trust_domain: String,
    bundle: serde_json::Value,
    reattestable: bool,
}

/// The path of the agent data file in `data_dir`.
pub fn agent_data_path(data_dir: &Path) -> PathBuf {
    data_dir.join(AGENT_DATA_FILE)
}

/// Reads the agent data in `data_dir`; `Ok(None)` when there is none yet.
pub fn load(data_dir: &Path) -> Result<Option<AgentData>, StorageError> {
    let path = agent_data_path(data_dir);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StorageError::Io { path, source }),
    };
    let corrupt = |reason: String| StorageError::Corrupt {
        path: path.clone(),
        reason,
    };
    let raw: RawAgentData = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let svid_chain = raw
        .svid
        .iter()
        .map(|c| STANDARD.decode(c.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| corrupt(format!("svid certificate is not base64: {e}")))?;
    if svid_chain.is_empty() {
        return Err(corrupt("svid chain is empty".into()));
    }
    let td: TrustDomain = raw
        .trust_domain
        .parse()
        .map_err(|e| corrupt(format!("trust_domain: {e}")))?;
    let bundle_json =
        serde_json::to_vec(&raw.bundle).map_err(|e| corrupt(format!("bundle: {e}")))?;
    let bundle =
        Bundle::from_json(td, &bundle_json).map_err(|e| corrupt(format!("bundle: {e}")))?;
    Ok(Some(AgentData {
        svid_chain,
        bundle,
        reattestable: raw.reattestable,
    }))
}

/// Writes the agent data to `data_dir` (created with mode 0700 if missing), atomically.
pub fn save(data_dir: &Path, data: &AgentData) -> Result<(), StorageError> {
    let path = agent_data_path(data_dir);
    let io = |source| StorageError::Io {
        path: path.clone(),
        source,
    };
    let bundle_json = data.bundle.to_json().map_err(|e| StorageError::Corrupt {
        path: path.clone(),
        reason: format!("bundle cannot be encoded: {e}"),
    })?;
    let bundle: serde_json::Value =
        serde_json::from_str(&bundle_json).map_err(|e| StorageError::Corrupt {
            path: path.clone(),
            reason: format!("bundle cannot be encoded: {e}"),
        })?;
    let raw = RawAgentData {
        svid: data.svid_chain.iter().map(|c| STANDARD.encode(c)).collect(),
        trust_domain: data.bundle.trust_domain.to_string(),
        bundle,
        reattestable: data.reattestable,
    };
    let json = serde_json::to_vec_pretty(&raw).map_err(|e| StorageError::Corrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    write_atomic(data_dir, &path, &json).map_err(io)
}

/// Deletes the agent data (after the server rejected the agent for good).
pub fn remove(data_dir: &Path) -> Result<(), StorageError> {
    let path = agent_data_path(data_dir);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StorageError::Io { path, source }),
    }
}

/// Writes `bytes` to `path` through a temporary file in `dir`, with mode 0600.
pub(crate) fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".to_owned());
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = fs::File::open(dir) {
            // Best effort: make the rename durable.
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> Bundle {
        let mut b = Bundle::new("example.org".parse().unwrap());
        b.x509_authorities.push(
            spire_testkit::TestCa::new("storage test")
                .cert_der()
                .to_vec(),
        );
        b.sequence_number = 7;
        b
    }

    #[test]
    fn round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        assert!(load(&data_dir).unwrap().is_none());
        let data = AgentData {
            svid_chain: vec![vec![9, 9], vec![8]],
            bundle: bundle(),
            reattestable: true,
        };
        save(&data_dir, &data).unwrap();
        let mode = fs::metadata(agent_data_path(&data_dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = load(&data_dir).unwrap().unwrap();
        assert_eq!(back.svid_chain, data.svid_chain);
        assert!(back.reattestable);
        assert_eq!(back.bundle.x509_authorities, data.bundle.x509_authorities);
        remove(&data_dir).unwrap();
        assert!(load(&data_dir).unwrap().is_none());
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(agent_data_path(dir.path()), b"{not json").unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
        fs::write(
            agent_data_path(dir.path()),
            br#"{"svid":[],"trust_domain":"a","bundle":{"keys":[]},"reattestable":false}"#,
        )
        .unwrap();
        assert!(load(dir.path()).unwrap_err().to_string().contains("empty"));
    }
}
