//! The `health_checks {}` HTTP listener: `GET <live_path>` and `GET <ready_path>`.
//!
//! Each path runs its check and answers 200 when it passes, 500 when it fails, with the check's
//! details as a JSON body. Any other path is 404, any other method 405. The listener binds when
//! [`start`] is called, so a bad address fails the caller's startup instead of a background task.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::task::JoinHandle;

use crate::TelemetryError;

/// Where the health listener binds and which paths it answers (SPIRE's `health_checks {}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthListenerConfig {
    /// `bind_address`, default `localhost`.
    pub bind_address: String,
    /// `bind_port`, default 80.
    pub bind_port: u16,
    /// `live_path`, default `/live`.
    pub live_path: String,
    /// `ready_path`, default `/ready`.
    pub ready_path: String,
}

impl Default for HealthListenerConfig {
    fn default() -> Self {
        Self {
            bind_address: "localhost".to_owned(),
            bind_port: 80,
            live_path: "/live".to_owned(),
            ready_path: "/ready".to_owned(),
        }
    }
}

/// The outcome of one check: whether it passes, and details shown as the response body.
pub type CheckResult = (bool, serde_json::Value);

type BoxCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = CheckResult> + Send>> + Send + Sync + 'static>;

fn boxed<F, Fut>(f: F) -> BoxCheck
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = CheckResult> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

#[derive(Clone)]
struct Checks {
    live: BoxCheck,
    ready: BoxCheck,
}

/// A running health listener. Dropping it stops the listener.
#[derive(Debug)]
pub struct HealthServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HealthServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the listener.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds the listener and serves `live` and `ready` in a background task.
///
/// Paths that do not start with `/` get one prepended (`live_path = "live"` serves `/live`).
pub async fn start<L, LF, R, RF>(
    config: &HealthListenerConfig,
    live: L,
    ready: R,
) -> Result<HealthServer, TelemetryError>
where
    L: Fn() -> LF + Send + Sync + 'static,
    LF: Future<Output = CheckResult> + Send + 'static,
    R: Fn() -> RF + Send + Sync + 'static,
    RF: Future<Output = CheckResult> + Send + 'static,
{
    let checks = Checks {
        live: boxed(live),
        ready: boxed(ready),
    };
    let live_path = normalize_path(&config.live_path);
    let ready_path = normalize_path(&config.ready_path);
    let mut router = Router::new().route(&live_path, get(serve_live));
    if ready_path != live_path {
        router = router.route(&ready_path, get(serve_ready));
    }
    let router = router.with_state(checks);
    let (listener, addr) = crate::http::bind_tcp(&config.bind_address, config.bind_port).await?;
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "Health check listener failed");
        }
    });
    tracing::info!(address = %addr, "Serving health checks");
    Ok(HealthServer { addr, task })
}

fn normalize_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

async fn serve_live(State(checks): State<Checks>) -> Response {
    respond((checks.live)().await)
}

async fn serve_ready(State(checks): State<Checks>) -> Response {
    respond((checks.ready)().await)
}

fn respond((ok, details): CheckResult) -> Response {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        details.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use serde_json::json;

    use super::*;
    use crate::http::test_get;

    #[tokio::test]
    async fn live_and_ready_follow_their_checks() {
        let ready_flag = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ready_flag);
        let config = HealthListenerConfig {
            bind_address: "127.0.0.1".to_owned(),
            bind_port: 0,
            live_path: "alive".to_owned(),
            ready_path: "/ready".to_owned(),
        };
        let server = start(
            &config,
            || async { (true, json!({"started": true})) },
            move || {
                let ok = flag.load(Ordering::SeqCst);
                async move { (ok, json!({"datastore": ok})) }
            },
        )
        .await
        .unwrap();
        let addr = server.local_addr();

        let (status, body) = test_get(addr, "/alive").await;
        assert_eq!(status, 200);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["started"],
            true
        );

        let (status, body) = test_get(addr, "/ready").await;
        assert_eq!(status, 500);
        assert_eq!(body, r#"{"datastore":false}"#);

        ready_flag.store(true, Ordering::SeqCst);
        let (status, _) = test_get(addr, "/ready").await;
        assert_eq!(status, 200);

        let (status, _) = test_get(addr, "/live").await;
        assert_eq!(status, 404);
        server.shutdown();
    }

    #[tokio::test]
    async fn bad_bind_address_is_an_error() {
        let config = HealthListenerConfig {
            bind_address: "256.0.0.1".to_owned(),
            bind_port: 0,
            ..Default::default()
        };
        let err = start(
            &config,
            || async { (true, json!({})) },
            || async { (true, json!({})) },
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("256.0.0.1:0"), "{err}");
    }
}
