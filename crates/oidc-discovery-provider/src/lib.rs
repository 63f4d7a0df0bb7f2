//! SPIRE's OIDC Discovery Provider: serves `/.well-known/openid-configuration` and `/keys` (the
//! JWKS of a trust domain's JWT authorities) so that OIDC relying parties can validate JWT-SVIDs.
//!
//! Keys come from the SPIRE server's Bundle API on its local socket (`server_api`) or from an
//! agent's Workload API (`workload_api`), polled every `poll_interval`; the last good key set is
//! served until a newer one arrives. Requests for the discovery document must name one of the
//! configured `domains` (Host or X-Forwarded-Host). The provider listens on a Unix socket, a plain
//! HTTP address, or HTTPS with a certificate reloaded from files.
//!
//! Invariants: only public keys are ever handled; a failed poll never empties the key set; the
//! Unix socket is removed on shutdown.

mod handler;
mod jwks;
mod serve;
mod source;

use std::future::Future;
use std::sync::Arc;

use spire_config::OidcConfig;

pub use handler::{HandlerOptions, router};
pub use jwks::jwks_document;
pub use source::{KeyState, fetch_keys};

/// Why the provider could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// A listener could not be set up.
    #[error("could not listen on {address}")]
    Listen {
        /// The address or socket path.
        address: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The serving certificate or key could not be loaded.
    #[error("could not load the serving certificate from {path}: {reason}")]
    ServingCert {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The health listener could not start.
    #[error("could not start the health listener")]
    Health(#[source] spire_telemetry::TelemetryError),
    /// The key source is unusable.
    #[error("key source: {0}")]
    Source(String),
}

/// Runs the provider until `shutdown` completes: starts the key poller, the health listener (when
/// configured) and the HTTP listener.
pub async fn run(config: OidcConfig, shutdown: impl Future<Output = ()>) -> Result<(), OidcError> {
    let state = Arc::new(KeyState::new(&config.source));
    let poller = tokio::spawn(source::poll(config.source.clone(), Arc::clone(&state)));

    let _health = match &config.health_checks {
        Some(h) if h.listener_enabled => {
            let listener = spire_telemetry::health::HealthListenerConfig {
                bind_address: h.bind_address.clone(),
                bind_port: h.bind_port,
                live_path: h.live_path.clone(),
                ready_path: h.ready_path.clone(),
            };
            let (live_state, ready_state) = (Arc::clone(&state), Arc::clone(&state));
            Some(
                spire_telemetry::health::start(
                    &listener,
                    move || {
                        let r = live_state.live();
                        async move { r }
                    },
                    move || {
                        let r = ready_state.ready();
                        async move { r }
                    },
                )
                .await
                .map_err(OidcError::Health)?,
            )
        }
        _ => None,
    };

    let options = HandlerOptions::from_config(&config);
    let result = serve::serve(&config, options, state, shutdown).await;
    poller.abort();
    result
}
