//! Free loopback ports and temporary directories.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, OnceLock};

/// Returns a TCP port on 127.0.0.1 that was free when asked.
///
/// The kernel picks the port; ports already handed out by this process are
/// never returned twice, so tests running in parallel in one test binary do
/// not collide with each other. (Another process may still take the port
/// before it is bound: keep the time between this call and the bind short.)
///
/// # Panics
/// When no loopback port can be bound at all.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..100 {
        let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, 0)) {
            Ok(l) => l,
            Err(e) => panic!("cannot bind a loopback port: {e}"),
        };
        let port = match listener.local_addr() {
            Ok(a) => a.port(),
            Err(e) => panic!("cannot read the bound loopback address: {e}"),
        };
        let mut set = given.lock().unwrap_or_else(|p| p.into_inner());
        if set.insert(port) {
            return port;
        }
    }
    panic!("no fresh loopback port after 100 attempts");
}

/// Creates a temporary directory under the system temp dir (short paths, so
/// Unix socket paths inside stay below the 108-byte limit). Removed on drop.
///
/// # Panics
/// When the directory cannot be created.
pub fn temp_dir() -> tempfile::TempDir {
    match tempfile::Builder::new().prefix("spire-rs-").tempdir() {
        Ok(d) => d,
        Err(e) => panic!("cannot create a temporary directory: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable_and_unique() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
        assert_ne!(a, 0);
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, a)).unwrap();
        assert_eq!(l.local_addr().unwrap().port(), a);
    }

    #[test]
    fn temp_dir_is_short_and_removed() {
        let d = temp_dir();
        let path = d.path().to_path_buf();
        assert!(path.is_dir());
        assert!(
            path.join("agent")
                .join("public")
                .join("api.sock")
                .as_os_str()
                .len()
                < 100
        );
        drop(d);
        assert!(!path.exists());
    }
}
