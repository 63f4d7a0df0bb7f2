//! Dialing a trust domain's servers with failover.
//!
//! `server_address` names one or more servers (`host:port` items separated by commas, as
//! `spire_config::AgentConfig::server_targets` produces them), and each host name may resolve
//! to several addresses. Every new connection resolves all items again (DNS changes are
//! followed) and tries the addresses in order — the address of the last good connection first,
//! then the others in configured and resolved order — each with its own time limit; the first
//! address that completes TCP and the TLS handshake wins and becomes the preferred one.
//!
//! SPIRE's agent dials `dns:///host:port` with gRPC's round-robin balancer, spreading calls over
//! all resolved servers. spire-rs keeps one connection (one server) per agent and moves to
//! another only when that server fails: all servers of a trust domain share the database and
//! the bundle, so any of them serves the agent equally (the agent SVID is valid on each) and
//! one connection keeps the agent's `Watch` push stream and its sync state on one server.
//! Fleets spread over servers through DNS answers in rotating order, or per-agent list order.
//!
//! A broken connection surfaces as one failed call; tonic then reconnects on the next call,
//! which comes back here and picks the next live server. Nothing re-attests.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use super::ClientError;

/// Longest time one address may take for TCP connect plus TLS handshake before the next one is
/// tried.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// One configured server: a host (name or IP literal, no brackets) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or IP literal.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// Parses `host:port[,host:port...]` (IPv6 in brackets).
pub fn parse_targets(address: &str) -> Result<Vec<Target>, ClientError> {
    let bad = |reason: &str| ClientError::Address {
        address: address.to_owned(),
        reason: reason.to_owned(),
    };
    let mut out = Vec::new();
    for item in address.split(',').map(str::trim) {
        let (host, port) = item
            .rsplit_once(':')
            .ok_or_else(|| bad("every item needs a port (host:port)"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("port must be an integer between 1 and 65535"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        out.push(Target {
            host: host.to_owned(),
            port,
        });
    }
    Ok(out)
}

/// Resolves a host to socket addresses (a seam for tests; [`SystemResolver`] in production).
pub trait Resolve: Send + Sync + 'static {
    /// All addresses of `host:port`, in the resolver's order.
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>>;
}

/// The system resolver (`getaddrinfo`; IP literals pass through).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let host = host.to_owned();
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect())
        })
    }
}

/// The candidates to try, in order: `preferred` first when it is among them, then the rest in
/// the given order, without duplicates.
fn order(
    resolved: Vec<(SocketAddr, String)>,
    preferred: Option<SocketAddr>,
) -> Vec<(SocketAddr, String)> {
    let mut out: Vec<(SocketAddr, String)> = Vec::with_capacity(resolved.len());
    for c in resolved {
        if !out.iter().any(|(a, _)| *a == c.0) {
            out.push(c);
        }
    }
    if let Some(p) = preferred
        && let Some(i) = out.iter().position(|(a, _)| *a == p)
    {
        let c = out.remove(i);
        out.insert(0, c);
    }
    out
}

/// Tries `candidates` in order with `attempt`, each bounded by `limit`; returns the first
/// success and its address, or an error that names every failure.
async fn first_success<T, F, Fut>(
    candidates: &[(SocketAddr, String)],
    limit: Duration,
    mut attempt: F,
) -> io::Result<(SocketAddr, T)>
where
    F: FnMut(SocketAddr, String) -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    let mut failures = Vec::new();
    for (addr, host) in candidates {
        match tokio::time::timeout(limit, attempt(*addr, host.clone())).await {
            Ok(Ok(v)) => return Ok((*addr, v)),
            Ok(Err(e)) => {
                tracing::debug!(address = %addr, error = %e, "Server address unusable; trying the next");
                failures.push(format!("{addr}: {e}"));
            }
            Err(_) => {
                tracing::debug!(address = %addr, "Server address timed out; trying the next");
                failures.push(format!("{addr}: timed out after {limit:?}"));
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::ConnectionRefused,
        if failures.is_empty() {
            "no server address resolved".to_owned()
        } else {
            format!("no server reachable: {}", failures.join("; "))
        },
    ))
}

/// A tower connector for tonic that dials the configured servers with failover. The URI tonic
/// passes in is ignored; the targets decide. Clones share the preferred address, so channels
/// made with [`FailoverConnector::channel`] after a reconnect start where the last one ended.
#[derive(Clone)]
pub struct FailoverConnector {
    endpoint: Endpoint,
    targets: Arc<[Target]>,
    tls: TlsConnector,
    resolver: Arc<dyn Resolve>,
    preferred: Arc<Mutex<Option<SocketAddr>>>,
}

impl fmt::Debug for FailoverConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailoverConnector")
            .field("targets", &self.targets)
            .field("preferred", &self.preferred())
            .finish_non_exhaustive()
    }
}

impl FailoverConnector {
    /// A connector for the servers named by `address` (see [`parse_targets`]) using the TLS
    /// settings `tls` and `resolver`.
    pub fn for_address(
        address: &str,
        tls: Arc<rustls::ClientConfig>,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Self, ClientError> {
        let targets = parse_targets(address)?;
        let first = targets.first().ok_or_else(|| ClientError::Address {
            address: address.to_owned(),
            reason: "no server".to_owned(),
        })?;
        // The URI only feeds the :authority header; the connector picks the address.
        let authority = if first.host.contains(':') {
            format!("[{}]:{}", first.host, first.port)
        } else {
            format!("{}:{}", first.host, first.port)
        };
        let endpoint = Endpoint::from_shared(format!("http://{authority}")).map_err(|e| {
            ClientError::Address {
                address: address.to_owned(),
                reason: e.to_string(),
            }
        })?;
        Ok(FailoverConnector {
            endpoint,
            targets: targets.into(),
            tls: TlsConnector::from(tls),
            resolver,
            preferred: Arc::new(Mutex::new(None)),
        })
    }

    /// A new lazy channel through this connector: connects on first use and after each broken
    /// connection.
    pub fn channel(&self) -> Channel {
        self.endpoint
            .clone()
            .connect_with_connector_lazy(self.clone())
    }

    /// The address of the last successful connection.
    pub fn preferred(&self) -> Option<SocketAddr> {
        *self
            .preferred
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves every target; failures are logged and skipped.
    async fn candidates(&self) -> Vec<(SocketAddr, String)> {
        let mut all = Vec::new();
        for t in self.targets.iter() {
            match self.resolver.resolve(&t.host, t.port).await {
                Ok(addrs) => all.extend(addrs.into_iter().map(|a| (a, t.host.clone()))),
                Err(e) => {
                    tracing::warn!(host = %t.host, port = t.port, error = %e, "Cannot resolve server address")
                }
            }
        }
        order(all, self.preferred())
    }

    /// Dials the first reachable server (TCP + TLS).
    pub async fn dial(&self) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let candidates = self.candidates().await;
        let tls = self.tls.clone();
        let (addr, stream) = first_success(&candidates, ATTEMPT_TIMEOUT, |addr, host| {
            let tls = tls.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                // The server is authenticated by SPIFFE ID; the name only feeds SNI.
                let name = ServerName::try_from(host)
                    .unwrap_or_else(|_| ServerName::from(addr.ip()))
                    .to_owned();
                tls.connect(name, tcp).await
            }
        })
        .await?;
        let previous = self
            .preferred
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(addr);
        match previous {
            Some(p) if p != addr => {
                tracing::info!(address = %addr, previous = %p, "Connected to another server")
            }
            Some(_) => tracing::debug!(address = %addr, "Reconnected to the server"),
            None => tracing::info!(address = %addr, "Connected to the server"),
        }
        Ok(stream)
    }
}

impl tower::Service<Uri> for FailoverConnector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.dial().await.map(TokioIo::new) })
    }
}

/// A lazy channel to the servers named by `address` (see [`parse_targets`]); connects on first
/// use and after each broken connection, with failover.
pub fn connect_lazy(address: &str, tls: Arc<rustls::ClientConfig>) -> Result<Channel, ClientError> {
    Ok(FailoverConnector::for_address(address, tls, Arc::new(SystemResolver))?.channel())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            parse_targets("a:1, [::1]:2,10.0.0.1:3").unwrap(),
            [
                Target {
                    host: "a".into(),
                    port: 1
                },
                Target {
                    host: "::1".into(),
                    port: 2
                },
                Target {
                    host: "10.0.0.1".into(),
                    port: 3
                },
            ]
        );
        for bad in ["a", "a:0", "a:x", ":1", "a:1,"] {
            assert!(parse_targets(bad).is_err(), "{bad}");
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn preferred_address_goes_first_without_duplicates() {
        let c = |a: &str| (sa(a), "h".to_owned());
        let got = order(
            vec![
                c("127.0.0.1:1"),
                c("127.0.0.2:2"),
                c("127.0.0.1:1"),
                c("127.0.0.3:3"),
            ],
            Some(sa("127.0.0.3:3")),
        );
        let addrs: Vec<SocketAddr> = got.into_iter().map(|(a, _)| a).collect();
        assert_eq!(
            addrs,
            [sa("127.0.0.3:3"), sa("127.0.0.1:1"), sa("127.0.0.2:2")]
        );
        // A preferred address that no longer resolves changes nothing.
        let got = order(vec![c("127.0.0.1:1")], Some(sa("127.0.0.9:9")));
        assert_eq!(got.len(), 1);
    }

    /// A resolver with a fixed table, like a DNS name with several A records.
    struct Table(BTreeMap<String, Vec<SocketAddr>>);

    impl Resolve for Table {
        fn resolve(
            &self,
            host: &str,
            _port: u16,
        ) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
            let r = self
                .0
                .get(host)
                .cloned()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"));
            Box::pin(async move { r })
        }
    }

    /// A port on which nothing listens.
    async fn closed_port() -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        drop(l);
        a
    }

    #[tokio::test]
    async fn every_resolved_address_is_tried_and_the_good_one_sticks() {
        let dead = closed_port().await;
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other_addr = other.local_addr().unwrap();
        // One name, three addresses: the first refuses connections.
        let table = Table(BTreeMap::from([(
            "spire.test".to_owned(),
            vec![dead, live_addr, other_addr],
        )]));
        let tls = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        );
        let conn = FailoverConnector::for_address("spire.test:1", tls, Arc::new(table)).unwrap();
        // TCP-level attempts (the TLS step is the same closure in `dial`).
        let tcp = |addr: SocketAddr, _host: String| async move { TcpStream::connect(addr).await };
        let cands = conn.candidates().await;
        assert_eq!(cands.len(), 3);
        let (addr, _s) = first_success(&cands, ATTEMPT_TIMEOUT, tcp).await.unwrap();
        assert_eq!(addr, live_addr);

        // With `other` preferred it goes first; once it is gone, `live` takes over.
        *conn.preferred.lock().unwrap() = Some(other_addr);
        // (Clones share it: the connector of a channel rebuilt after a reconnect.)
        let cands = conn.clone().candidates().await;
        assert_eq!(cands[0].0, other_addr);
        drop(other);
        let (addr, _s) = first_success(&cands, ATTEMPT_TIMEOUT, tcp).await.unwrap();
        assert_eq!(addr, live_addr);

        // Nothing reachable: the error names every address.
        drop(live);
        let e = first_success(&cands, ATTEMPT_TIMEOUT, tcp)
            .await
            .unwrap_err()
            .to_string();
        for a in [dead, live_addr, other_addr] {
            assert!(e.contains(&a.to_string()), "{e}");
        }

        // An unresolvable name leaves no candidates.
        let none = FailoverConnector::for_address(
            "nowhere.test:1",
            conn.tls.config().clone(),
            Arc::new(Table(BTreeMap::new())),
        )
        .unwrap();
        assert!(none.candidates().await.is_empty());
    }

    #[tokio::test]
    async fn a_hanging_address_is_abandoned_after_the_limit() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        let hang = sa("127.0.0.1:9");
        let cands = vec![(hang, "h".to_owned()), (live_addr, "h".to_owned())];
        let (addr, ()) = first_success(&cands, Duration::from_millis(50), |addr, _| async move {
            if addr == hang {
                std::future::pending::<()>().await;
            }
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(addr, live_addr);
    }
}
