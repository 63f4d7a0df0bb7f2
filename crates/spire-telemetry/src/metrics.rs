//! Prometheus metrics: the process-wide recorder, the `/metrics` listener, SPIRE-like metric
//! names, recording helpers and [`GrpcMetricsLayer`] for tonic servers.
//!
//! Every metric name is defined once, in [`names`], and starts with the process's prefix
//! (`telemetry { MetricPrefix }`, else `spire_server` / `spire_agent`), set by
//! [`set_prefix`] or [`start_prometheus`] before the first metric is recorded. Recording without
//! an installed recorder is a no-op, so code records unconditionally.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::task::JoinHandle;

use crate::TelemetryError;

static PREFIX: OnceLock<String> = OnceLock::new();

/// Sets the metric name prefix (`spire_server`, `spire_agent`, or `MetricPrefix`). Only the
/// first call counts; until then names use the prefix `spire` (and are not cached).
pub fn set_prefix(prefix: &str) {
    let _ = PREFIX.set(sanitize(prefix));
}

/// Prometheus names allow `[a-zA-Z0-9_:]`; SPIRE prefixes may contain `.` or `-`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

macro_rules! metric_names {
    ($( $(#[$doc:meta])* $name:ident => $suffix:literal; )*) => {
        $(
            $(#[$doc])*
            pub fn $name() -> &'static str {
                static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
                match super::PREFIX.get() {
                    Some(prefix) => NAME.get_or_init(|| format!("{prefix}_{}", $suffix)),
                    // Not cached: the prefix may still be set.
                    None => concat!("spire_", $suffix),
                }
            }
        )*

        /// Every name, for documentation and tests.
        pub fn all() -> Vec<&'static str> {
            vec![$($name()),*]
        }
    };
}

/// The metric names, each `<prefix>_<suffix>`.
pub mod names {
    metric_names! {
        /// Counter: gRPC calls served, labels `service`, `method`, `code` (gRPC status name).
        /// Workload API calls are these with `service="SpiffeWorkloadAPI"`.
        rpc_calls => "rpc_calls_total";
        /// Histogram: gRPC call latency until the response headers, labels `service`, `method`.
        rpc_duration => "rpc_call_duration_seconds";
        /// Counter: X509-SVIDs signed by the server CA.
        ca_sign_x509_svid => "server_ca_sign_x509_svid_total";
        /// Counter: JWT-SVIDs signed by the server CA.
        ca_sign_jwt_svid => "server_ca_sign_jwt_svid_total";
        /// Counter: downstream X.509 CA certificates signed by the server CA.
        ca_sign_x509_ca => "server_ca_sign_x509_ca_svid_total";
        /// Counter: datastore operations, labels `operation`, `status` (`ok` / `error`).
        datastore_operations => "datastore_operations_total";
        /// Histogram: datastore operation latency, label `operation`.
        datastore_duration => "datastore_operation_duration_seconds";
        /// Gauge: registration entries in the server's authorized-entries index.
        entry_index_entries => "entry_index_entries";
        /// Gauge: agents in the server's authorized-entries index.
        entry_index_agents => "entry_index_agents";
        /// Counter: agent syncs with the server, label `status` (`ok` / `error`).
        agent_syncs => "manager_sync_total";
        /// Counter: SVID rotations, label `kind` (`agent` / `workload`).
        svid_rotations => "svid_rotations_total";
        /// Gauge: X509-SVIDs in the agent's cache.
        cached_x509_svids => "cache_x509_svids";
        /// Gauge: JWT-SVIDs in the agent's cache.
        cached_jwt_svids => "cache_jwt_svids";
    }
}

/// Status label value for an outcome.
fn status(ok: bool) -> &'static str {
    if ok { "ok" } else { "error" }
}

/// Counts one X509-SVID signed by the server CA.
pub fn ca_x509_svid_signed() {
    metrics::counter!(names::ca_sign_x509_svid()).increment(1);
}

/// Counts one JWT-SVID signed by the server CA.
pub fn ca_jwt_svid_signed() {
    metrics::counter!(names::ca_sign_jwt_svid()).increment(1);
}

/// Counts one downstream CA signed by the server CA.
pub fn ca_x509_ca_signed() {
    metrics::counter!(names::ca_sign_x509_ca()).increment(1);
}

/// Records one datastore operation (`operation` is SPIRE's operation name in snake case, such
/// as `"create_registration_entry"`; spire-datastore calls this for every operation).
pub fn datastore_operation(operation: &'static str, ok: bool, elapsed: Duration) {
    metrics::counter!(names::datastore_operations(), "operation" => operation, "status" => status(ok))
        .increment(1);
    metrics::histogram!(names::datastore_duration(), "operation" => operation)
        .record(elapsed.as_secs_f64());
}

/// Sets the sizes of the server's authorized-entries index.
pub fn entry_index_size(entries: usize, agents: usize) {
    metrics::gauge!(names::entry_index_entries()).set(entries as f64);
    metrics::gauge!(names::entry_index_agents()).set(agents as f64);
}

/// Counts one agent sync with the server.
pub fn agent_sync(ok: bool) {
    metrics::counter!(names::agent_syncs(), "status" => status(ok)).increment(1);
}

/// Counts one SVID rotation (`kind` is `"agent"` or `"workload"`).
pub fn svid_rotation(kind: &'static str) {
    metrics::counter!(names::svid_rotations(), "kind" => kind).increment(1);
}

/// Sets the number of X509-SVIDs in the agent's cache.
pub fn cached_x509_svids(count: usize) {
    metrics::gauge!(names::cached_x509_svids()).set(count as f64);
}

/// Sets the number of JWT-SVIDs in the agent's cache.
pub fn cached_jwt_svids(count: usize) {
    metrics::gauge!(names::cached_jwt_svids()).set(count as f64);
}

/// Latency buckets in seconds, from 1 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Where the Prometheus listener binds (`telemetry { Prometheus { host, port } }`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusListenerConfig {
    /// `host`, default `localhost`.
    pub host: String,
    /// `port`.
    pub port: u16,
}

/// A running `/metrics` listener. Dropping it stops the listener (the recorder stays).
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl MetricsServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the listener.
    pub fn shutdown(self) {}
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Installs the process-wide Prometheus recorder with `prefix` and serves `GET /metrics` on
/// `config.host:config.port`.
pub async fn start_prometheus(
    config: &PrometheusListenerConfig,
    prefix: &str,
) -> Result<MetricsServer, TelemetryError> {
    set_prefix(prefix);
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
        .map_err(|e| TelemetryError::Metrics(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    let (listener, addr) = crate::http::bind_tcp(&config.host, config.port).await?;
    metrics::set_global_recorder(recorder)
        .map_err(|e| TelemetryError::Metrics(format!("could not install the recorder: {e}")))?;
    Ok(MetricsServer {
        addr,
        tasks: serve(listener, handle),
    })
}

fn serve(listener: tokio::net::TcpListener, handle: PrometheusHandle) -> Vec<JoinHandle<()>> {
    let upkeep_handle = handle.clone();
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    let server = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "Metrics listener failed");
        }
    });
    let upkeep = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep_handle.run_upkeep();
        }
    });
    vec![server, upkeep]
}

/// Splits a gRPC path `/package.Service/Method` into service and method.
fn split_grpc_path(path: &str) -> (String, String) {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    match trimmed.rsplit_once('/') {
        Some((service, method)) => (service.to_owned(), method.to_owned()),
        None => (trimmed.to_owned(), String::new()),
    }
}

/// The gRPC status name for a numeric `grpc-status` value.
fn grpc_code_name(code: &str) -> &'static str {
    match code {
        "0" => "OK",
        "1" => "Canceled",
        "2" => "Unknown",
        "3" => "InvalidArgument",
        "4" => "DeadlineExceeded",
        "5" => "NotFound",
        "6" => "AlreadyExists",
        "7" => "PermissionDenied",
        "8" => "ResourceExhausted",
        "9" => "FailedPrecondition",
        "10" => "Aborted",
        "11" => "OutOfRange",
        "12" => "Unimplemented",
        "13" => "Internal",
        "14" => "Unavailable",
        "15" => "DataLoss",
        "16" => "Unauthenticated",
        _ => "Unknown",
    }
}

/// A tower layer for tonic servers that counts calls and records their latency per gRPC path
/// and status code: `Server::builder().layer(GrpcMetricsLayer::new())`.
///
/// The status is read from the response headers: tonic sends handler errors as trailers-only
/// responses, so `grpc-status` is there; a response without it (a successful unary call or a
/// stream, whose status follows in trailers) counts as `OK`, and its latency is the time to the
/// response headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl GrpcMetricsLayer {
    /// A new layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

/// The service made by [`GrpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = split_grpc_path(request.uri().path());
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .map_or("OK", grpc_code_name),
                Err(_) => "Unavailable",
            };
            metrics::counter!(
                names::rpc_calls(),
                "service" => service.clone(),
                "method" => method.clone(),
                "code" => code
            )
            .increment(1);
            metrics::histogram!(names::rpc_duration(), "service" => service, "method" => method)
                .record(started.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer, Service, ServiceExt};

    use super::*;
    use crate::http::test_get;

    #[test]
    fn grpc_paths_split_into_service_and_method() {
        assert_eq!(
            split_grpc_path("/spire.api.server.svid.v1.SVID/MintX509SVID"),
            (
                "spire.api.server.svid.v1.SVID".to_owned(),
                "MintX509SVID".to_owned()
            )
        );
        assert_eq!(split_grpc_path("/odd"), ("odd".to_owned(), String::new()));
        assert_eq!(grpc_code_name("7"), "PermissionDenied");
        assert_eq!(grpc_code_name("99"), "Unknown");
        assert_eq!(sanitize("spire-server.x"), "spire_server_x");
    }

    /// The only test that installs the global recorder (one per process).
    #[tokio::test]
    async fn prometheus_endpoint_counts_grpc_calls() {
        let config = PrometheusListenerConfig {
            host: "127.0.0.1".to_owned(),
            port: 0,
        };
        assert_eq!(names::rpc_calls(), "spire_rpc_calls_total");
        let server = start_prometheus(&config, "spire_test").await.unwrap();
        assert!(names::all().iter().all(|n| n.starts_with("spire_test_")));

        let mut svc =
            GrpcMetricsLayer::new().layer(tower::service_fn(|req: http::Request<()>| async move {
                let mut response = http::Response::new(());
                if req.uri().path().ends_with("/Deny") {
                    response
                        .headers_mut()
                        .insert("grpc-status", http::HeaderValue::from_static("7"));
                }
                Ok::<_, Infallible>(response)
            }));
        for path in ["/pkg.Svc/Allow", "/pkg.Svc/Allow", "/pkg.Svc/Deny"] {
            let req = http::Request::builder().uri(path).body(()).unwrap();
            svc.ready().await.unwrap().call(req).await.unwrap();
        }
        ca_x509_svid_signed();
        entry_index_size(3, 1);

        let (status, body) = test_get(server.local_addr(), "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            body.contains(
                r#"spire_test_rpc_calls_total{service="pkg.Svc",method="Allow",code="OK"} 2"#
            ),
            "{body}"
        );
        assert!(
            body.contains(
                r#"spire_test_rpc_calls_total{service="pkg.Svc",method="Deny",code="PermissionDenied"} 1"#
            ),
            "{body}"
        );
        assert!(
            body.contains(
                r#"spire_test_rpc_call_duration_seconds_count{service="pkg.Svc",method="Allow"} 2"#
            ),
            "{body}"
        );
        assert!(
            body.contains("spire_test_server_ca_sign_x509_svid_total 1"),
            "{body}"
        );
        assert!(body.contains("spire_test_entry_index_entries 3"), "{body}");

        let (status, _) = test_get(server.local_addr(), "/other").await;
        assert_eq!(status, 404);
        // A second recorder cannot be installed.
        let config = PrometheusListenerConfig {
            host: "127.0.0.1".to_owned(),
            port: 0,
        };
        assert!(start_prometheus(&config, "x").await.is_err());
    }
}
