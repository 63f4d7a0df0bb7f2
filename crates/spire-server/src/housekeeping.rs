//! Periodic cleanup: expired join tokens and expired registration entries.
//!
//! Mirrors the pruning tasks of `pkg/server/server.go`.

use std::sync::Arc;
use std::time::Duration;

use crate::server::ServerState;

/// How often expired join tokens and entries are pruned.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Prunes until the server shuts down.
pub async fn run(state: Arc<ServerState>) {
    let mut ticker = tokio::time::interval(PRUNE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = ticker.tick() => prune_once(&state).await,
        }
    }
}

/// One pruning pass.
pub async fn prune_once(state: &ServerState) {
    let now = state.clock.now_unix();
    match state.datastore.prune_join_tokens(now).await {
        Ok(n) if n > 0 => tracing::info!(count = n, "Pruned expired join tokens"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "Failed to prune join tokens"),
    }
    match state.datastore.prune_entries(now).await {
        Ok(n) if n > 0 => tracing::info!(count = n, "Pruned expired registration entries"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "Failed to prune registration entries"),
    }
}
