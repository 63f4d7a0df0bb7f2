//! Connection to the server's local API socket.

use std::path::Path;

use anyhow::Context;
use tonic::transport::{Channel, Endpoint};

/// Opens a gRPC channel over the Unix socket at `path`.
pub(crate) async fn connect(path: &Path) -> anyhow::Result<Channel> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .context("cannot resolve the socket path")?
            .join(path)
    };
    let uri = format!("unix://{}", abs.display());
    let endpoint = Endpoint::from_shared(uri.clone())
        .with_context(|| format!("invalid socket path {}", path.display()))?;
    endpoint
        .connect()
        .await
        .with_context(|| format!("cannot connect to the server API socket {}", path.display()))
}

/// Formats a gRPC error SPIRE's way: `rpc error: code = X desc = msg`.
pub(crate) fn rpc_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "rpc error: code = {:?} desc = {}",
        status.code(),
        status.message()
    )
}
