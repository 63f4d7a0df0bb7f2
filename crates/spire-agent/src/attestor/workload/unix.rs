//! The `unix` workload attestor: selectors from the caller's process credentials.
//!
//! As SPIRE's plugin: `unix:uid:<euid>`, `unix:user:<name>`, `unix:gid:<egid>`,
//! `unix:group:<name>`, one `unix:supplementary_gid:<gid>` and `unix:supplementary_group:<name>`
//! per supplementary group, and with `discover_workload_path` also `unix:path:<exe>` and
//! `unix:sha256:<hex>`. Ids are the *effective* ids (second column of `Uid:`/`Gid:` in
//! `/proc/<pid>/status`); a name selector is left out when the id has no name. The hash is taken
//! of `/proc/<pid>/exe` (the file the process really executes, even if its path was replaced
//! since) and bounded by `workload_size_limit` (0 = no limit, negative = never hash).

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Group, Uid, User};
use serde::Deserialize;
use spire_spiffe::{Selector, Selectors};

use super::{AttestError, WorkloadAttestor};

/// `plugin_data` of `WorkloadAttestor "unix"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct UnixAttestorConfig {
    /// Adds `unix:path` and `unix:sha256` selectors.
    #[serde(default)]
    pub discover_workload_path: bool,
    /// Largest binary hashed for `unix:sha256`, in bytes (0 = no limit, negative = never hash).
    #[serde(default)]
    pub workload_size_limit: i64,
}

/// The `unix` attestor.
#[derive(Debug, Clone)]
pub struct UnixAttestor {
    config: UnixAttestorConfig,
    proc_root: PathBuf,
    /// User and group names come from local files only (see [`names_are_local`]).
    local_names: bool,
}

impl UnixAttestor {
    /// An attestor reading `/proc` (or `$HOST_PROC`, as SPIRE's plugin honors it when the agent
    /// runs in a container with the host's proc mounted elsewhere).
    pub fn new(config: UnixAttestorConfig) -> Self {
        let proc_root = std::env::var_os("HOST_PROC")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from("/proc"), PathBuf::from);
        let nsswitch = std::fs::read_to_string("/etc/nsswitch.conf").ok();
        Self {
            config,
            proc_root,
            local_names: names_are_local(nsswitch.as_deref()),
        }
    }

    fn proc_path(&self, pid: i32, file: &str) -> PathBuf {
        self.proc_root.join(pid.to_string()).join(file)
    }
}

/// True when `nsswitch.conf` (its text; `None` when absent, glibc then reads local files)
/// looks `passwd` and `group` up in local sources only, so a name lookup cannot wait on a
/// network service (LDAP, SSSD, NIS, ...).
fn names_are_local(nsswitch: Option<&str>) -> bool {
    let Some(text) = nsswitch else {
        return true;
    };
    text.lines().all(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let Some((db, sources)) = line.split_once(':') else {
            return true;
        };
        !matches!(db.trim(), "passwd" | "group")
            || sources
                .split_ascii_whitespace()
                .filter(|s| !s.starts_with('['))
                .all(|s| matches!(s, "files" | "systemd" | "altfiles"))
    })
}

/// The ids of one process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProcIds {
    euid: u32,
    egid: u32,
    groups: Vec<u32>,
}

fn parse_status(text: &str, path: &str) -> Result<ProcIds, AttestError> {
    let malformed = |what| AttestError::Malformed {
        path: path.to_owned(),
        what,
    };
    let mut euid = None;
    let mut egid = None;
    let mut groups = Vec::new();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        match key {
            // real, effective, saved, filesystem
            "Uid" => {
                euid = rest
                    .split_ascii_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
            }
            "Gid" => {
                egid = rest
                    .split_ascii_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
            }
            "Groups" => {
                groups = rest
                    .split_ascii_whitespace()
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|_| malformed("Groups is not a list of numbers"))?;
            }
            _ => {}
        }
    }
    Ok(ProcIds {
        euid: euid.ok_or_else(|| malformed("no effective uid in Uid line"))?,
        egid: egid.ok_or_else(|| malformed("no effective gid in Gid line"))?,
        groups,
    })
}

fn selector(value: String) -> Option<Selector> {
    Selector::new("unix", value).ok()
}

fn user_name(uid: u32) -> Option<String> {
    User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

fn group_name(gid: u32) -> Option<String> {
    Group::from_gid(Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
}

/// SHA-256 of the file at `path`, refused when larger than `limit` (0 = no limit).
fn sha256_file(path: &Path, display: &str, limit: u64) -> Result<String, AttestError> {
    let io_err = |source| AttestError::Proc {
        path: display.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let size = file.metadata().map_err(io_err)?.len();
    if limit > 0 && size > limit {
        return Err(AttestError::TooLarge {
            path: display.to_owned(),
            size,
            limit,
        });
    }
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        total = total.saturating_add(n as u64);
        // The file may grow while it is read: the limit holds for what is hashed.
        if limit > 0 && total > limit {
            return Err(AttestError::TooLarge {
                path: display.to_owned(),
                size: total,
                limit,
            });
        }
        ctx.update(&buf[..n]);
    }
    Ok(hex::encode(ctx.finish().as_ref()))
}

impl WorkloadAttestor for UnixAttestor {
    fn name(&self) -> &'static str {
        "unix"
    }

    fn is_quick(&self) -> bool {
        // Hashing reads the whole binary.
        let hashes = self.config.discover_workload_path && self.config.workload_size_limit >= 0;
        self.local_names && !hashes
    }

    fn attest(&self, pid: i32) -> Result<Selectors, AttestError> {
        let status_path = self.proc_path(pid, "status");
        let display = status_path.display().to_string();
        let text = std::fs::read_to_string(&status_path).map_err(|source| AttestError::Proc {
            path: display.clone(),
            source,
        })?;
        let ids = parse_status(&text, &display)?;

        let mut out = Vec::new();
        out.extend(selector(format!("uid:{}", ids.euid)));
        if let Some(name) = user_name(ids.euid) {
            out.extend(selector(format!("user:{name}")));
        }
        out.extend(selector(format!("gid:{}", ids.egid)));
        if let Some(name) = group_name(ids.egid) {
            out.extend(selector(format!("group:{name}")));
        }
        for gid in &ids.groups {
            out.extend(selector(format!("supplementary_gid:{gid}")));
            if let Some(name) = group_name(*gid) {
                out.extend(selector(format!("supplementary_group:{name}")));
            }
        }

        if self.config.discover_workload_path {
            let exe = self.proc_path(pid, "exe");
            let exe_display = exe.display().to_string();
            let path = std::fs::read_link(&exe).map_err(|source| AttestError::Proc {
                path: exe_display.clone(),
                source,
            })?;
            out.extend(selector(format!("path:{}", path.display())));
            if self.config.workload_size_limit >= 0 {
                let limit = u64::try_from(self.config.workload_size_limit).unwrap_or(0);
                let digest = sha256_file(&exe, &path.display().to_string(), limit)?;
                out.extend(selector(format!("sha256:{digest}")));
            }
        }
        Ok(out.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> i32 {
        i32::try_from(std::process::id()).unwrap()
    }

    #[test]
    fn status_takes_effective_ids_and_groups() {
        let text = "Name:\tx\nUid:\t1000\t1001\t1002\t1003\nGid:\t2000\t2001\t2002\t2003\nGroups:\t4 24 27 \n";
        let ids = parse_status(text, "status").unwrap();
        assert_eq!(
            ids,
            ProcIds {
                euid: 1001,
                egid: 2001,
                groups: vec![4, 24, 27]
            }
        );
        let empty_groups =
            parse_status("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n", "s").unwrap();
        assert!(empty_groups.groups.is_empty());
        assert!(parse_status("Uid:\t1\n", "s").is_err());
        assert!(parse_status("Uid:\t1\t1\nGid:\t1\t1\nGroups:\tx\n", "s").is_err());
    }

    #[test]
    fn attests_this_process_with_names() {
        let a = UnixAttestor::new(UnixAttestorConfig::default());
        let sels = a.attest(me()).unwrap();
        let strs: Vec<String> = sels.iter().map(ToString::to_string).collect();
        let euid = nix::unistd::geteuid().as_raw();
        let egid = nix::unistd::getegid().as_raw();
        assert!(strs.contains(&format!("unix:uid:{euid}")), "{strs:?}");
        assert!(strs.contains(&format!("unix:gid:{egid}")), "{strs:?}");
        if let Some(name) = user_name(euid) {
            assert!(strs.contains(&format!("unix:user:{name}")), "{strs:?}");
        }
        assert!(!strs.iter().any(|s| s.starts_with("unix:path:")));
        assert!(!strs.iter().any(|s| s.starts_with("unix:sha256:")));
    }

    #[test]
    fn path_discovery_hashes_the_executable() {
        let a = UnixAttestor::new(UnixAttestorConfig {
            discover_workload_path: true,
            workload_size_limit: 0,
        });
        let sels = a.attest(me()).unwrap();
        let exe = std::env::current_exe().unwrap();
        let bytes = std::fs::read(&exe).unwrap();
        let want = hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &bytes,
        ));
        let strs: Vec<String> = sels.iter().map(ToString::to_string).collect();
        assert!(
            strs.contains(&format!("unix:path:{}", exe.display())),
            "{strs:?}"
        );
        assert!(strs.contains(&format!("unix:sha256:{want}")), "{strs:?}");
    }

    #[test]
    fn size_limit_refuses_or_skips_the_hash() {
        let small = UnixAttestor::new(UnixAttestorConfig {
            discover_workload_path: true,
            workload_size_limit: 16,
        });
        assert!(matches!(
            small.attest(me()),
            Err(AttestError::TooLarge { limit: 16, .. })
        ));
        let never = UnixAttestor::new(UnixAttestorConfig {
            discover_workload_path: true,
            workload_size_limit: -1,
        });
        let sels = never.attest(me()).unwrap();
        assert!(sels.iter().any(|s| s.value().starts_with("path:")));
        assert!(!sels.iter().any(|s| s.value().starts_with("sha256:")));
    }

    #[test]
    fn quick_unless_hashing_or_names_from_the_network() {
        assert!(names_are_local(None));
        assert!(names_are_local(Some(
            "# comment: passwd: ldap\npasswd:  files systemd\ngroup: files [SUCCESS=merge] systemd\nhosts: files dns\n"
        )));
        assert!(!names_are_local(Some("passwd: files\ngroup: files sss\n")));
        assert!(!names_are_local(Some("passwd: compat\n")));
        let quick = |discover_workload_path, workload_size_limit, local_names| {
            UnixAttestor {
                config: UnixAttestorConfig {
                    discover_workload_path,
                    workload_size_limit,
                },
                proc_root: PathBuf::from("/proc"),
                local_names,
            }
            .is_quick()
        };
        assert!(quick(false, 0, true));
        assert!(quick(true, -1, true));
        assert!(!quick(true, 0, true));
        assert!(!quick(false, 0, false));
    }

    #[test]
    fn a_missing_process_fails_attestation() {
        let a = UnixAttestor {
            config: UnixAttestorConfig::default(),
            proc_root: PathBuf::from("/nonexistent-proc"),
            local_names: true,
        };
        assert!(matches!(a.attest(1), Err(AttestError::Proc { .. })));
    }
}
