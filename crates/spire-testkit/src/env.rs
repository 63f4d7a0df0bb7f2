//! The external tools `scripts/test.sh` prepares, found through
//! `SPIRE_TEST_*` environment variables.
//!
//! Each accessor returns `None` when its variable is unset and `CI` is not
//! true; the test then prints why and returns early. Under `CI=true` a
//! missing variable panics: CI must never skip an interop test silently.

use std::path::PathBuf;

use crate::process::workspace_root;

/// Whether `CI` is `true` (or `1`).
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

fn decide(var: &str, value: Option<String>, ci: bool) -> Option<String> {
    match value.filter(|v| !v.is_empty()) {
        Some(v) => Some(v),
        None if ci => panic!(
            "{var} is not set but CI=true: run the test suite with scripts/test.sh, \
             which prepares {var}"
        ),
        None => {
            eprintln!(
                "note: {var} is not set (run the suite with scripts/test.sh); skipping the part that needs it"
            );
            None
        }
    }
}

/// The value of `var`, `None` (with a note on stderr) when unset outside
/// CI.
///
/// # Panics
/// When `var` is unset or empty and `CI=true`.
pub fn require_tool(var: &str) -> Option<String> {
    decide(var, std::env::var(var).ok(), is_ci())
}

/// `SPIRE_TEST_PYTHON`: the venv python with py-spiffe, PyJWT, cryptography.
pub fn python() -> Option<PathBuf> {
    require_tool("SPIRE_TEST_PYTHON").map(PathBuf::from)
}

/// Path of a script under `tests/python/` (e.g. `pyspiffe_client.py`).
pub fn python_script(name: &str) -> PathBuf {
    workspace_root().join("tests").join("python").join(name)
}

/// `SPIRE_TEST_GO_BIN`: the directory holding the Go clients.
pub fn go_bin_dir() -> Option<PathBuf> {
    require_tool("SPIRE_TEST_GO_BIN").map(PathBuf::from)
}

/// The go-spiffe client binary, `$SPIRE_TEST_GO_BIN/spiffe-client`.
pub fn go_client() -> Option<PathBuf> {
    go_bin_dir().map(|d| d.join("spiffe-client"))
}

/// `SPIRE_TEST_ENVOY`: the envoy binary.
pub fn envoy() -> Option<PathBuf> {
    require_tool("SPIRE_TEST_ENVOY").map(PathBuf::from)
}

/// `SPIRE_TEST_POSTGRES_URL`: `postgres://postgres@127.0.0.1:<port>/postgres`.
pub fn postgres_url() -> Option<String> {
    require_tool("SPIRE_TEST_POSTGRES_URL")
}

/// `SPIRE_TEST_MYSQL_URL`: `mysql://root@127.0.0.1:<port>/mysql` (MariaDB).
pub fn mysql_url() -> Option<String> {
    require_tool("SPIRE_TEST_MYSQL_URL")
}

/// `SPIRE_TEST_OPENSSL` or, when unset, `openssl` from `PATH`.
pub fn openssl() -> PathBuf {
    std::env::var_os("SPIRE_TEST_OPENSSL")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("openssl"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_value_is_returned() {
        assert_eq!(decide("X", Some("v".into()), true), Some("v".into()));
        assert_eq!(decide("X", Some("v".into()), false), Some("v".into()));
    }

    #[test]
    fn absent_outside_ci_skips() {
        assert_eq!(decide("X", None, false), None);
        assert_eq!(decide("X", Some(String::new()), false), None);
    }

    #[test]
    #[should_panic(expected = "SPIRE_TEST_FOO is not set but CI=true")]
    fn absent_under_ci_fails() {
        let _ = decide("SPIRE_TEST_FOO", None, true);
    }

    #[test]
    fn scripts_are_in_the_repo() {
        assert!(python_script("pyspiffe_client.py").is_file());
        assert!(python_script("jwt_verify.py").is_file());
    }
}
