//! Shared by the agent's client commands: the default socket paths, `-timeout` values and a
//! gRPC channel over a Unix socket.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// SPIRE's default Workload API socket.
pub const DEFAULT_PUBLIC_SOCKET: &str = "/tmp/spire-agent/public/api.sock";

/// A `-timeout` flag value in Go's duration syntax (`1s`, `500ms`, `1m30s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl FromStr for GoDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        spire_config::parse_go_duration(s)
            .map(GoDuration)
            .map_err(|e| e.to_string())
    }
}

/// A lazy-free gRPC channel to the Unix socket at `path` (connects now).
pub async fn uds_channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = path.to_owned();
    // The URI is required by tonic but unused: the connector dials the socket.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
}

/// Writes `text` to stdout, ignoring a closed pipe (`... | head` must not panic).
pub fn write_stdout(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}
