//! The server's accept loop: TCP connections in, TLS connections carrying the peer's verified
//! identity out, for `tonic::transport::Server::serve_with_incoming`.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use spire_spiffe::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::error::SvidError;
use crate::server::ErrorChain;
use crate::svid;

/// How long a client gets to complete the TLS handshake after its TCP connection is accepted.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many handshakes may be in progress at once; beyond that, accepting pauses.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// The identity of the other end of a TLS connection, available to every request on it.
///
/// tonic puts it in the request extensions; read it with [`peer_info`].
#[derive(Clone, Debug)]
pub struct PeerInfo {
    remote_addr: SocketAddr,
    local_addr: Option<SocketAddr>,
    peer_spiffe_id: Option<SpiffeId>,
    peer_cert_chain: Arc<[CertificateDer<'static>]>,
}

impl PeerInfo {
    /// Connection info for a peer at `remote_addr`, authenticated as `peer` (its SPIFFE ID and
    /// certificate chain, leaf first) or anonymous. [`TlsIncoming`] builds these from verified
    /// handshakes; this constructor exists for tests and other transports, and trusts its input.
    pub fn new(
        remote_addr: SocketAddr,
        peer: Option<(SpiffeId, Vec<CertificateDer<'static>>)>,
    ) -> Self {
        let (peer_spiffe_id, chain) = match peer {
            Some((id, chain)) => (Some(id), chain),
            None => (None, Vec::new()),
        };
        PeerInfo {
            remote_addr,
            local_addr: None,
            peer_spiffe_id,
            peer_cert_chain: chain.into(),
        }
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }

    /// Our address on this connection.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The peer's SPIFFE ID, verified during the handshake; `None` if the peer presented no
    /// certificate.
    pub fn peer_spiffe_id(&self) -> Option<&SpiffeId> {
        self.peer_spiffe_id.as_ref()
    }

    /// The certificate chain the peer presented (leaf first); empty if none.
    pub fn peer_cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.peer_cert_chain
    }

    /// The peer's leaf certificate, if it presented one.
    pub fn peer_leaf(&self) -> Option<&CertificateDer<'static>> {
        self.peer_cert_chain.first()
    }
}

/// The [`PeerInfo`] of the connection a request arrived on, if it came through [`TlsIncoming`].
pub fn peer_info<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
    request.extensions().get::<PeerInfo>()
}

/// A stream of server-side TLS connections for `Server::serve_with_incoming`.
///
/// Accepts TCP connections and runs their TLS handshakes concurrently (each bounded by a
/// timeout). A connection whose handshake fails or times out is logged and dropped; the stream
/// goes on. It never ends and never yields an error. Dropping it closes the listener and
/// abandons handshakes in progress.
pub struct TlsIncoming {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    pending: FuturesUnordered<BoxFuture<'static, Result<SpiffeTlsStream, HandshakeError>>>,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl TlsIncoming {
    /// Serves TLS with `config` (from [`server_config`](crate::server_config)) on `listener`.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> Self {
        TlsIncoming {
            listener,
            acceptor: TlsAcceptor::from(config),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            pending: FuturesUnordered::new(),
            backoff: None,
        }
    }

    /// Binds a TCP listener on `addr` and serves TLS with `config` on it.
    pub async fn bind(addr: SocketAddr, config: Arc<ServerConfig>) -> io::Result<Self> {
        Ok(Self::new(TcpListener::bind(addr).await?, config))
    }

    /// Sets how long a client gets to complete its handshake.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    fn start_handshake(&mut self, tcp: TcpStream, remote_addr: SocketAddr) {
        let acceptor = self.acceptor.clone();
        let timeout = self.handshake_timeout;
        self.pending.push(Box::pin(async move {
            let local_addr = tcp.local_addr().ok();
            // Best effort: gRPC messages are small and latency-sensitive.
            let _ = tcp.set_nodelay(true);
            let result = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
            let stream = match result {
                Ok(Ok(stream)) => stream,
                Ok(Err(source)) => {
                    return Err(HandshakeError::Tls {
                        remote_addr,
                        source,
                    });
                }
                Err(_) => {
                    return Err(HandshakeError::Timeout {
                        remote_addr,
                        timeout,
                    });
                }
            };
            let info = peer_info_of(&stream, remote_addr, local_addr).map_err(|source| {
                HandshakeError::PeerId {
                    remote_addr,
                    source,
                }
            })?;
            Ok(SpiffeTlsStream {
                inner: stream,
                info,
            })
        }));
    }
}

fn peer_info_of(
    stream: &TlsStream<TcpStream>,
    remote_addr: SocketAddr,
    local_addr: Option<SocketAddr>,
) -> Result<PeerInfo, SvidError> {
    let chain: Vec<CertificateDer<'static>> = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(<[_]>::to_vec)
        .unwrap_or_default();
    // The verifier already validated this chain and its SPIFFE ID in this handshake (there is
    // no resumption); reading the ID again cannot fail, but if it did the connection is
    // refused rather than treated as anonymous.
    let peer_spiffe_id = chain.first().map(svid::leaf_spiffe_id).transpose()?;
    Ok(PeerInfo {
        remote_addr,
        local_addr,
        peer_spiffe_id,
        peer_cert_chain: chain.into(),
    })
}

impl Stream for TlsIncoming {
    type Item = Result<SpiffeTlsStream, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();

        // Accept as many connections as are waiting (up to the handshake limit).
        while this.pending.len() < MAX_PENDING_HANDSHAKES {
            if let Some(backoff) = this.backoff.as_mut() {
                if backoff.as_mut().poll(cx).is_pending() {
                    break;
                }
                this.backoff = None;
            }
            match this.listener.poll_accept(cx) {
                Poll::Ready(Ok((tcp, remote_addr))) => this.start_handshake(tcp, remote_addr),
                Poll::Ready(Err(error)) => {
                    tracing::warn!(%error, "TCP accept failed");
                    this.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_BACKOFF)));
                }
                Poll::Pending => break,
            }
        }

        // Hand out the first completed handshake; log and drop failed ones.
        loop {
            match this.pending.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(stream))) => {
                    tracing::debug!(
                        remote_addr = %stream.info.remote_addr,
                        spiffe_id = stream.info.peer_spiffe_id.as_ref().map(|id| id.as_str()),
                        "TLS connection accepted"
                    );
                    return Poll::Ready(Some(Ok(stream)));
                }
                Poll::Ready(Some(Err(error))) => {
                    tracing::info!(error = %ErrorChain(&error), "TLS handshake failed");
                }
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl fmt::Debug for TlsIncoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIncoming")
            .field("local_addr", &self.listener.local_addr().ok())
            .field("handshake_timeout", &self.handshake_timeout)
            .field("pending_handshakes", &self.pending.len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("tls handshake with {remote_addr} failed")]
    Tls {
        remote_addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("tls handshake with {remote_addr} did not finish within {timeout:?}")]
    Timeout {
        remote_addr: SocketAddr,
        timeout: Duration,
    },
    #[error("peer certificate from {remote_addr} names no usable spiffe id")]
    PeerId {
        remote_addr: SocketAddr,
        #[source]
        source: SvidError,
    },
}

/// A server-side TLS connection with the peer's verified identity attached; tonic exposes the
/// identity to handlers as [`PeerInfo`].
pub struct SpiffeTlsStream {
    inner: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl SpiffeTlsStream {
    /// Who is on the other end.
    pub fn peer(&self) -> &PeerInfo {
        &self.info
    }

    /// The ALPN protocol agreed in the handshake, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.inner.get_ref().1.alpn_protocol()
    }
}

impl fmt::Debug for SpiffeTlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeTlsStream")
            .field("peer", &self.info)
            .finish_non_exhaustive()
    }
}

impl Connected for SpiffeTlsStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for SpiffeTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SpiffeTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
