//! Unix-socket endpoint addresses: `unix:///path`, `unix:/path` or a plain path.

use std::path::PathBuf;

/// Why an endpoint address is not a usable Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The address is empty.
    #[error("socket address is empty, expected unix:///path/to/socket or a path")]
    Empty,
    /// A scheme other than `unix`.
    #[error("unsupported socket address {0:?}, expected unix:///path/to/socket or a path")]
    UnsupportedScheme(String),
    /// `unix://host/...` or a relative `unix:` path.
    #[error(
        "invalid unix socket address {0:?}, expected an absolute path such as unix:///tmp/agent.sock"
    )]
    InvalidUnix(String),
}

/// Turns `unix:///path`, `unix:/path` or a plain path into a socket path.
///
/// Plain paths may be relative; `unix:` addresses must be absolute and have no host
/// (as go-spiffe's `ParseTargetFromAddr` requires).
pub fn socket_path_from_addr(addr: &str) -> Result<PathBuf, EndpointError> {
    if addr.is_empty() {
        return Err(EndpointError::Empty);
    }
    if let Some(rest) = addr.strip_prefix("unix:") {
        let path = match rest.strip_prefix("//") {
            // `unix:///path`: empty authority, absolute path.
            Some(after) if after.starts_with('/') => after,
            Some(_) => return Err(EndpointError::InvalidUnix(addr.to_owned())),
            None => rest,
        };
        if !path.starts_with('/') || path.len() < 2 || path.contains(['?', '#']) {
            return Err(EndpointError::InvalidUnix(addr.to_owned()));
        }
        return Ok(PathBuf::from(path));
    }
    if let Some((scheme, _)) = addr.split_once("://") {
        let is_scheme = !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if is_scheme {
            return Err(EndpointError::UnsupportedScheme(addr.to_owned()));
        }
    }
    Ok(PathBuf::from(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        for (addr, want) in [
            (
                "unix:///tmp/spire-agent/public/api.sock",
                "/tmp/spire-agent/public/api.sock",
            ),
            ("unix:/tmp/api.sock", "/tmp/api.sock"),
            ("/tmp/api.sock", "/tmp/api.sock"),
            ("relative/api.sock", "relative/api.sock"),
        ] {
            assert_eq!(
                socket_path_from_addr(addr),
                Ok(PathBuf::from(want)),
                "{addr}"
            );
        }
    }

    #[test]
    fn rejected_forms() {
        assert_eq!(socket_path_from_addr(""), Err(EndpointError::Empty));
        assert_eq!(
            socket_path_from_addr("tcp://127.0.0.1:8081")
                .unwrap_err()
                .to_string(),
            "unsupported socket address \"tcp://127.0.0.1:8081\", expected unix:///path/to/socket or a path"
        );
        for addr in [
            "unix://host/tmp/api.sock",
            "unix:relative",
            "unix:///",
            "unix:///a?b",
        ] {
            assert_eq!(
                socket_path_from_addr(addr),
                Err(EndpointError::InvalidUnix(addr.to_owned())),
                "{addr}"
            );
        }
    }
}
