//! Workload API mode (`-workloadSocket`): many concurrent workload clients against a real
//! spire-agent's Workload API, measuring the time from `FetchX509SVID` to its first message
//! (P6). Every client first connects (all of them at once), then, each round, every client
//! sends the request — all at the same moment (a burst), or spread evenly over `spread` —
//! and keeps its stream open until every client of the round has its first message, so the
//! agent serves each request with all the other clients' streams open. Each client's
//! latency is request sent → first response received. The
//! report counts requests, first messages, SVIDs received and failures, so a run that did
//! not get what it asked for shows it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use serde::Serialize;
use spire_proto::workload::X509svidRequest;
use spire_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tokio::net::UnixStream;
use tokio::sync::Barrier;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::stats::{Counter, Percentiles, Samples};

/// The security header every Workload API request must carry.
const SECURITY_HEADER: &str = "workload.spiffe.io";

/// What the Workload API run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkloadReport {
    /// The socket driven.
    pub socket: String,
    /// Concurrent clients.
    pub clients: u64,
    /// Rounds (each client fetches once per round).
    pub rounds: u64,
    /// Over how long each round's requests were spread (0 = all at once).
    pub spread_seconds: f64,
    /// Connections that failed.
    pub connect_failed: u64,
    /// FetchX509SVID calls sent.
    pub requests: u64,
    /// First messages received.
    pub first_messages: u64,
    /// Calls that failed or ended without a message.
    pub failed: u64,
    /// X509-SVIDs in the first messages (summed).
    pub svids: u64,
    /// Connection set-up latency.
    pub connect_latency: Percentiles,
    /// FetchX509SVID sent → first message received.
    pub first_message_latency: Percentiles,
    /// The empirical distribution of `first_message_latency`: the latency (ms) at each
    /// percentile 0, 1, ..., 100 (for plots).
    pub first_message_cdf_ms: Vec<f64>,
}

impl WorkloadReport {
    /// Human-readable summary.
    pub fn pretty(&self) -> String {
        let p = &self.first_message_latency;
        format!(
            "workload API {}: {} clients x {} rounds\n  requests {}  first messages {}  failed {}  connect failures {}  svids {}\n  first message  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms\n",
            self.socket,
            self.clients,
            self.rounds,
            self.requests,
            self.first_messages,
            self.failed,
            self.connect_failed,
            self.svids,
            p.p50_ms,
            p.p90_ms,
            p.p99_ms,
            p.max_ms,
        )
    }
}

/// Why the run could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// No client count.
    #[error("-workloadClients must be at least 1")]
    NoClients,
}

#[derive(Default)]
struct Tally {
    connect_failed: Counter,
    requests: Counter,
    first: Counter,
    failed: Counter,
    svids: Counter,
    connect: Samples,
    latency: Samples,
}

async fn channel(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path: PathBuf = path.to_owned();
    // The URI is required by tonic but unused: the connector dials the socket.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
}

/// Runs `clients` concurrent clients for `rounds` rounds against the Workload API at `socket`.
pub async fn run(
    socket: &Path,
    clients: usize,
    rounds: usize,
    timeout: Duration,
    spread: Duration,
) -> Result<WorkloadReport, WorkloadError> {
    if clients == 0 {
        return Err(WorkloadError::NoClients);
    }
    let rounds = rounds.max(1);
    let tally = Arc::new(Tally::default());
    let barrier = Arc::new(Barrier::new(clients));
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let offset = spread.mul_f64(i as f64 / clients as f64);
        let tally = Arc::clone(&tally);
        let barrier = Arc::clone(&barrier);
        let socket = socket.to_owned();
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let ch = channel(&socket).await;
            let mut client = match ch {
                Ok(ch) => {
                    tally.connect.record(t0.elapsed());
                    Some(SpiffeWorkloadApiClient::new(ch))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "Workload API connect failed");
                    tally.connect_failed.inc();
                    None
                }
            };
            for _ in 0..rounds {
                // Every client waits here, connected or not, so the barrier always fills.
                barrier.wait().await;
                let mut open = None;
                if let Some(c) = client.as_mut() {
                    tokio::time::sleep(offset).await;
                    open = one_fetch(c, &tally, timeout).await;
                }
                // Streams stay open until every client of the round is answered.
                barrier.wait().await;
                drop(open);
            }
        }));
    }
    for t in tasks {
        if t.await.is_err() {
            tally.failed.inc();
        }
    }
    Ok(WorkloadReport {
        socket: socket.display().to_string(),
        clients: clients as u64,
        rounds: rounds as u64,
        spread_seconds: spread.as_secs_f64(),
        connect_failed: tally.connect_failed.get(),
        requests: tally.requests.get(),
        first_messages: tally.first.get(),
        failed: tally.failed.get(),
        svids: tally.svids.get(),
        connect_latency: tally.connect.summary(),
        first_message_latency: tally.latency.summary(),
        first_message_cdf_ms: tally.latency.cdf_ms(),
    })
}

async fn one_fetch(
    c: &mut SpiffeWorkloadApiClient<Channel>,
    tally: &Tally,
    timeout: Duration,
) -> Option<tonic::Streaming<spire_proto::workload::X509svidResponse>> {
    let mut req = tonic::Request::new(X509svidRequest {});
    req.metadata_mut().insert(
        SECURITY_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    tally.requests.inc();
    let t0 = Instant::now();
    let first = tokio::time::timeout(timeout, async {
        let mut stream = c.fetch_x509svid(req).await?.into_inner();
        let first = stream.message().await?;
        Ok::<_, tonic::Status>(first.map(|m| (m, stream)))
    })
    .await;
    match first {
        Ok(Ok(Some((resp, stream)))) => {
            tally.latency.record(t0.elapsed());
            tally.first.inc();
            tally.svids.add(resp.svids.len() as u64);
            return Some(stream);
        }
        Ok(Ok(None)) => {
            tracing::debug!("Workload API stream ended without a message");
            tally.failed.inc();
        }
        Ok(Err(status)) => {
            tracing::debug!(code = ?status.code(), message = status.message(), "FetchX509SVID failed");
            tally.failed.inc();
        }
        Err(_) => {
            tracing::debug!("FetchX509SVID timed out");
            tally.failed.inc();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use futures::Stream;
    use spire_proto::workload::spiffe_workload_api_server::{
        SpiffeWorkloadApi, SpiffeWorkloadApiServer,
    };
    use spire_proto::workload::*;
    use tokio::net::UnixListener;
    use tokio_stream::wrappers::UnixListenerStream;
    use tonic::{Request, Response, Status};

    use super::*;

    type S<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

    /// Answers FetchX509SVID with two SVIDs when the security header is present.
    struct Fake;

    fn nope<T>() -> Result<T, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    #[tonic::async_trait]
    impl SpiffeWorkloadApi for Fake {
        type FetchX509SVIDStream = S<X509svidResponse>;
        async fn fetch_x509svid(
            &self,
            request: Request<X509svidRequest>,
        ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
            if request.metadata().get(SECURITY_HEADER).is_none() {
                return Err(Status::invalid_argument("security header missing"));
            }
            let svid = |id: &str| X509svid {
                spiffe_id: id.into(),
                ..Default::default()
            };
            let resp = X509svidResponse {
                svids: vec![svid("spiffe://td/a"), svid("spiffe://td/b")],
                ..Default::default()
            };
            // The stream stays open after the first message, as the agent's does.
            let s = futures::stream::iter([Ok(resp)]).chain(futures::stream::pending());
            Ok(Response::new(Box::pin(s)))
        }
        type FetchX509BundlesStream = S<X509BundlesResponse>;
        async fn fetch_x509_bundles(
            &self,
            _: Request<X509BundlesRequest>,
        ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
            nope()
        }
        async fn fetch_jwtsvid(
            &self,
            _: Request<JwtsvidRequest>,
        ) -> Result<Response<JwtsvidResponse>, Status> {
            nope()
        }
        type FetchJWTBundlesStream = S<JwtBundlesResponse>;
        async fn fetch_jwt_bundles(
            &self,
            _: Request<JwtBundlesRequest>,
        ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
            nope()
        }
        async fn validate_jwtsvid(
            &self,
            _: Request<ValidateJwtsvidRequest>,
        ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
            nope()
        }
        type FetchWITSVIDStream = S<WitsvidResponse>;
        async fn fetch_witsvid(
            &self,
            _: Request<WitsvidRequest>,
        ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
            nope()
        }
        type FetchWITBundlesStream = S<WitBundlesResponse>;
        async fn fetch_wit_bundles(
            &self,
            _: Request<WitBundlesRequest>,
        ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
            nope()
        }
    }

    use futures::StreamExt as _;

    #[tokio::test]
    async fn counts_every_request_first_message_and_svid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SpiffeWorkloadApiServer::new(Fake))
                .serve_with_incoming(UnixListenerStream::new(listener)),
        );
        let r = run(&path, 20, 3, Duration::from_secs(30), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(r.requests, 60);
        let r = run(
            &path,
            20,
            3,
            Duration::from_secs(30),
            Duration::from_millis(20),
        )
        .await
        .unwrap();
        assert_eq!(r.clients, 20);
        assert_eq!(r.connect_failed, 0);
        assert_eq!(r.requests, 60);
        assert_eq!(r.first_messages, 60);
        assert_eq!(r.failed, 0);
        assert_eq!(r.svids, 120);
        assert_eq!(r.first_message_latency.count, 60);
        assert_eq!(r.first_message_cdf_ms.len(), 101);
        assert!(r.first_message_cdf_ms.windows(2).all(|w| w[0] <= w[1]));
    }

    #[tokio::test]
    async fn a_missing_socket_is_counted_not_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let r = run(
            &dir.path().join("none.sock"),
            4,
            2,
            Duration::from_secs(5),
            Duration::ZERO,
        )
        .await
        .unwrap();
        assert_eq!(r.connect_failed, 4);
        assert_eq!(r.requests, 0);
        assert_eq!(r.first_messages, 0);
        assert!(r.first_message_cdf_ms.is_empty());
        assert!(matches!(
            run(
                &dir.path().join("none.sock"),
                0,
                1,
                Duration::from_secs(1),
                Duration::ZERO
            )
            .await,
            Err(WorkloadError::NoClients)
        ));
    }
}
