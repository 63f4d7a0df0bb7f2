//! Small HTTP helpers shared by the health and metrics listeners.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::TelemetryError;

/// Binds a TCP listener on `host:port` (`host` may be a name such as `localhost`).
pub(crate) async fn bind_tcp(
    host: &str,
    port: u16,
) -> Result<(TcpListener, SocketAddr), TelemetryError> {
    let address = format!("{host}:{port}");
    let bind_error = |source| TelemetryError::Bind {
        address: address.clone(),
        source,
    };
    let listener = TcpListener::bind((host, port)).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, addr))
}

/// A minimal HTTP/1.1 GET for unit tests: returns the status code and the body.
#[cfg(test)]
pub(crate) async fn test_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

#[cfg(test)]
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}
