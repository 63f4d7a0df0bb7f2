//! Federation with other trust domains: the bundle endpoint we serve ([`endpoint`]) and the
//! client that keeps each federated trust domain's bundle current ([`client`], [`run`]).
//!
//! Relationships come from two places: the config's `federates_with` blocks (static) and the
//! datastore (created through the TrustDomain API). A static relationship overrides a stored
//! one for the same trust domain. Each relationship is polled at its bundle's refresh hint
//! (a quarter of it, so a missed poll is retried well within the hint; 5 minutes when the
//! bundle has none); a failed fetch is retried after at most 10 seconds. A rejected answer is
//! logged with its reason and the stored bundle is left as it was. The relationship set is
//! re-read every second, so created, updated and deleted relationships take effect without a
//! restart (a deleted relationship's bundle stays until `bundle delete`).
//!
//! Mirrors `pkg/server/bundle/client`.

pub mod client;
pub mod endpoint;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use spire_datastore::{self as ds, FederationRelationship};
use spire_spiffe::TrustDomain;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use client::FetchError;

use crate::server::ServerState;

/// Refresh hint assumed when a bundle carries none.
pub const DEFAULT_REFRESH_HINT: Duration = Duration::from_secs(300);

/// Longest wait before retrying a failed fetch (an endpoint that was down at start-up is
/// picked up quickly even with the default 5-minute hint).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// How often the set of relationships is re-read when nothing signals a change: a safety net.
/// Relationship changes reach the refresher through the change log (`ServerState::
/// federation_changed`, woken by the authorized-entry index within its poll interval), so the
/// database is not polled every second (issue 9, P4).
const RECONCILE_INTERVAL: Duration = Duration::from_secs(30);

/// The relationships from the config's `federates_with` blocks.
pub fn static_relationships(state: &ServerState) -> Vec<FederationRelationship> {
    state
        .config
        .federation
        .federates_with
        .iter()
        .map(|fw| FederationRelationship {
            trust_domain: fw.trust_domain.clone(),
            bundle_endpoint_url: fw.bundle_endpoint_url.clone(),
            profile: match &fw.profile {
                spire_config::BundleEndpointProfile::HttpsWeb => {
                    ds::BundleEndpointProfile::HttpsWeb
                }
                spire_config::BundleEndpointProfile::HttpsSpiffe { endpoint_spiffe_id } => {
                    ds::BundleEndpointProfile::HttpsSpiffe {
                        endpoint_spiffe_id: endpoint_spiffe_id.clone(),
                    }
                }
            },
            trust_domain_bundle: None,
        })
        .collect()
}

/// Every relationship in effect: stored ones, overridden by static ones.
pub async fn relationships(
    state: &ServerState,
) -> Result<BTreeMap<TrustDomain, FederationRelationship>, ds::Error> {
    let mut out = BTreeMap::new();
    let mut page = ds::Pagination::first(1000);
    loop {
        let p = state.datastore.list_federation_relationships(&page).await?;
        for mut rel in p.items {
            rel.trust_domain_bundle = None;
            out.insert(rel.trust_domain.clone(), rel);
        }
        if p.next_page_token.is_empty() {
            break;
        }
        page.token = p.next_page_token;
    }
    for rel in static_relationships(state) {
        out.insert(rel.trust_domain.clone(), rel);
    }
    Ok(out)
}

/// The relationship in effect for `td`, if any.
pub async fn relationship(
    state: &ServerState,
    td: &TrustDomain,
) -> Result<Option<FederationRelationship>, ds::Error> {
    if let Some(rel) = static_relationships(state)
        .into_iter()
        .find(|r| &r.trust_domain == td)
    {
        return Ok(Some(rel));
    }
    Ok(state
        .datastore
        .get_federation_relationship(td)
        .await?
        .map(|mut r| {
            r.trust_domain_bundle = None;
            r
        }))
}

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RefreshError {
    /// Fetching or checking the bundle failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Storing the bundle failed.
    #[error("cannot store the bundle")]
    Store(#[source] ds::Error),
}

/// Fetches the bundle of `rel` once and stores it if it changed. Returns the fetched bundle's
/// refresh hint.
pub async fn refresh_once(
    state: &ServerState,
    rel: &FederationRelationship,
) -> Result<Option<Duration>, RefreshError> {
    let fetched = client::fetch_bundle(&state.datastore, rel, &state.clock).await?;
    let hint = fetched.refresh_hint;
    let stored = state
        .datastore
        .get_bundle(&rel.trust_domain)
        .await
        .map_err(RefreshError::Store)?;
    let new = ds::Bundle::from(fetched);
    let unchanged = stored.as_ref().is_some_and(|s| {
        s.x509_authorities
            .iter()
            .map(|a| &a.der)
            .eq(new.x509_authorities.iter().map(|a| &a.der))
            && s.jwt_authorities
                .iter()
                .map(|k| (&k.key_id, &k.public_key, k.expires_at))
                .eq(new
                    .jwt_authorities
                    .iter()
                    .map(|k| (&k.key_id, &k.public_key, k.expires_at)))
            && s.refresh_hint == new.refresh_hint
            && s.sequence_number == new.sequence_number
    });
    if !unchanged {
        state
            .datastore
            .set_bundle(&new)
            .await
            .map_err(RefreshError::Store)?;
        tracing::info!(
            trust_domain = %rel.trust_domain,
            sequence_number = new.sequence_number,
            x509_authorities = new.x509_authorities.len(),
            jwt_authorities = new.jwt_authorities.len(),
            "Bundle refreshed"
        );
    }
    Ok(hint)
}

/// The delay before the next poll of a relationship.
fn next_poll(hint: Option<Duration>) -> Duration {
    (hint.unwrap_or(DEFAULT_REFRESH_HINT) / 4).max(Duration::from_millis(500))
}

async fn poll(state: Arc<ServerState>, rel: FederationRelationship, stop: CancellationToken) {
    let mut hint = None;
    loop {
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            r = refresh_once(&state, &rel) => r,
        };
        let delay = match outcome {
            Ok(h) => {
                hint = h.or(Some(DEFAULT_REFRESH_HINT));
                next_poll(hint)
            }
            Err(e) => {
                tracing::warn!(
                trust_domain = %rel.trust_domain,
                bundle_endpoint_url = %rel.bundle_endpoint_url,
                error = %e,
                cause = ?std::error::Error::source(&e).map(error_chain),
                    "Error updating bundle; the stored bundle is kept"
                );
                next_poll(hint).min(MAX_RETRY_DELAY)
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// An error and its sources joined with `: `.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Keeps one poller per relationship in effect until `state.shutdown`: starts pollers for new
/// relationships, restarts them when a relationship changes, stops them when it goes away.
pub async fn run(state: Arc<ServerState>) {
    let mut running: BTreeMap<
        TrustDomain,
        (FederationRelationship, CancellationToken, JoinHandle<()>),
    > = BTreeMap::new();
    loop {
        match relationships(&state).await {
            Ok(wanted) => {
                running.retain(|td, (rel, stop, _)| {
                    let keep = wanted.get(td) == Some(rel);
                    if !keep {
                        stop.cancel();
                        tracing::info!(trust_domain = %td, "Trust domain no longer managed");
                    }
                    keep
                });
                for (td, rel) in wanted {
                    if running.contains_key(&td) {
                        continue;
                    }
                    tracing::info!(
                        trust_domain = %td,
                        bundle_endpoint_url = %rel.bundle_endpoint_url,
                        "Trust domain is now managed"
                    );
                    let stop = state.shutdown.child_token();
                    let task = tokio::spawn(poll(Arc::clone(&state), rel.clone(), stop.clone()));
                    running.insert(td, (rel, stop, task));
                }
            }
            Err(e) => tracing::warn!(error = %e, "Cannot list federation relationships"),
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            _ = tokio::time::sleep(RECONCILE_INTERVAL) => {}
            () = state.federation_changed.notified() => {}
        }
    }
    for (_, (_, stop, task)) in running {
        stop.cancel();
        let _ = task.await;
    }
}

/// Starts the bundle endpoint (when configured) and the federation client.
pub fn spawn(state: &Arc<ServerState>) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(run(Arc::clone(state)))];
    if let Some(config) = state.config.federation.bundle_endpoint.clone() {
        let state = Arc::clone(state);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = endpoint::serve(Arc::clone(&state), config).await {
                tracing::error!(error = %e, cause = ?std::error::Error::source(&e).map(error_chain), "Bundle endpoint failed");
                state.shutdown.cancel();
            }
        }));
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_four_times_per_hint() {
        assert_eq!(next_poll(None), Duration::from_secs(75));
        assert_eq!(
            next_poll(Some(Duration::from_secs(40))),
            Duration::from_secs(10)
        );
        assert_eq!(
            next_poll(Some(Duration::from_secs(1))),
            Duration::from_millis(500)
        );
    }
}
