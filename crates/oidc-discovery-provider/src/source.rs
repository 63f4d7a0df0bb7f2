//! Fetching the JWT authorities from the server API or the Workload API, and the shared state
//! the handlers and health checks read.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use serde_json::json;
use spire_config::OidcKeySource;
use spire_proto::server::bundle::GetBundleRequest;
use spire_proto::server::bundle::bundle_client::BundleClient;
use spire_proto::workload::JwtBundlesRequest;
use spire_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use spire_spiffe::{JwkKeyMembers, JwtAuthority, TrustDomain, jwk_to_spki};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

/// SPIRE keeps serving (and reporting ready) this many poll intervals after the last good fetch,
/// but at least [`MIN_THRESHOLD`].
const THRESHOLD_POLLS: u32 = 5;
const MIN_THRESHOLD: Duration = Duration::from_secs(180);

struct Fetched {
    keys: Arc<Vec<JwtAuthority>>,
    at: Instant,
}

/// The last key set fetched, shared by the poller, the handlers and the health checks.
pub struct KeyState {
    fetched: RwLock<Option<Fetched>>,
    started: Instant,
    threshold: Duration,
}

impl std::fmt::Debug for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyState")
            .field("keys", &self.keys().map(|k| k.len()))
            .finish_non_exhaustive()
    }
}

fn poll_interval(source: &OidcKeySource) -> Duration {
    match source {
        OidcKeySource::ServerApi { poll_interval, .. }
        | OidcKeySource::WorkloadApi { poll_interval, .. } => *poll_interval,
    }
}

impl KeyState {
    /// Empty state for `source` (the health threshold follows its poll interval).
    pub fn new(source: &OidcKeySource) -> Self {
        Self {
            fetched: RwLock::new(None),
            started: Instant::now(),
            threshold: (poll_interval(source) * THRESHOLD_POLLS).max(MIN_THRESHOLD),
        }
    }

    /// Replaces the key set.
    pub fn set(&self, keys: Vec<JwtAuthority>) {
        let mut guard = self.fetched.write().unwrap_or_else(PoisonError::into_inner);
        let changed = guard.as_ref().is_none_or(|f| *f.keys != keys);
        if changed {
            let kids: Vec<&str> = keys.iter().map(|k| k.key_id.as_str()).collect();
            tracing::info!(count = keys.len(), kids = ?kids, "Key set updated");
        }
        *guard = Some(Fetched {
            keys: Arc::new(keys),
            at: Instant::now(),
        });
    }

    /// The current key set, if one was ever fetched.
    pub fn keys(&self) -> Option<Arc<Vec<JwtAuthority>>> {
        self.fetched
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|f| Arc::clone(&f.keys))
    }

    fn last_fetch_age(&self) -> Option<Duration> {
        self.fetched
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|f| f.at.elapsed())
    }

    /// Ready: keys were fetched, the last time within the threshold.
    pub fn ready(&self) -> (bool, serde_json::Value) {
        let age = self.last_fetch_age();
        let ok = age.is_some_and(|a| a <= self.threshold);
        (
            ok,
            json!({ "keys_available": age.is_some(), "last_fetch_seconds_ago": age.map(|a| a.as_secs()) }),
        )
    }

    /// Live: ready, or still within the threshold after start.
    pub fn live(&self) -> (bool, serde_json::Value) {
        let (ready, details) = self.ready();
        (ready || self.started.elapsed() <= self.threshold, details)
    }
}

fn uds_endpoint(path: &Path) -> Channel {
    let path: PathBuf = path.to_owned();
    // The URI is required by tonic but unused: the connector dials the socket.
    Endpoint::from_static("http://localhost").connect_with_connector_lazy(tower::service_fn(
        move |_: http::Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        },
    ))
}

/// A connected key source.
enum Client {
    Server(BundleClient<Channel>),
    Workload {
        client: SpiffeWorkloadApiClient<Channel>,
        trust_domain: TrustDomain,
    },
}

impl Client {
    fn new(source: &OidcKeySource) -> Result<Self, String> {
        Ok(match source {
            OidcKeySource::ServerApi { socket_path, .. } => {
                Client::Server(BundleClient::new(uds_endpoint(socket_path)))
            }
            OidcKeySource::WorkloadApi {
                socket_path,
                trust_domain,
                ..
            } => {
                let name = trust_domain
                    .strip_prefix("spiffe://")
                    .unwrap_or(trust_domain);
                let trust_domain: TrustDomain = name
                    .parse()
                    .map_err(|e| format!("workload_api.trust_domain {trust_domain:?}: {e}"))?;
                Client::Workload {
                    client: SpiffeWorkloadApiClient::new(uds_endpoint(socket_path)),
                    trust_domain,
                }
            }
        })
    }

    async fn fetch(&mut self) -> Result<Vec<JwtAuthority>, String> {
        match self {
            Client::Server(client) => {
                let response = client
                    .get_bundle(GetBundleRequest::default())
                    .await
                    .map_err(|s| format!("Bundle.GetBundle failed: {}", s.message()))?;
                response
                    .into_inner()
                    .jwt_authorities
                    .into_iter()
                    .map(|k| {
                        if k.key_id.is_empty() {
                            return Err(
                                "the server returned a JWT authority without a key id".to_owned()
                            );
                        }
                        Ok(JwtAuthority {
                            key_id: k.key_id,
                            public_key: k.public_key,
                            expires_at: (k.expires_at != 0).then_some(k.expires_at),
                        })
                    })
                    .collect()
            }
            Client::Workload {
                client,
                trust_domain,
            } => {
                let mut request = tonic::Request::new(JwtBundlesRequest {});
                request.metadata_mut().insert(
                    "workload.spiffe.io",
                    tonic::metadata::MetadataValue::from_static("true"),
                );
                let mut stream = client
                    .fetch_jwt_bundles(request)
                    .await
                    .map_err(|s| format!("FetchJWTBundles failed: {}", s.message()))?
                    .into_inner();
                let message = stream
                    .message()
                    .await
                    .map_err(|s| format!("FetchJWTBundles failed: {}", s.message()))?
                    .ok_or_else(|| "FetchJWTBundles stream ended without a response".to_owned())?;
                let id = format!("spiffe://{trust_domain}");
                let bytes = message
                    .bundles
                    .get(&id)
                    .or_else(|| message.bundles.get(trust_domain.as_ref()))
                    .ok_or_else(|| {
                        format!("the Workload API returned no JWT bundle for {trust_domain}")
                    })?;
                parse_jwks(bytes).map_err(|e| format!("invalid JWT bundle for {trust_domain}: {e}"))
            }
        }
    }
}

/// Reads the JWT authorities of a Workload API JWKS: a plain JWKS whose keys carry no `use`
/// (SPIRE strips it), or a SPIFFE bundle whose JWT keys say `"use": "jwt-svid"`.
fn parse_jwks(bytes: &[u8]) -> Result<Vec<JwtAuthority>, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| "no \"keys\" array".to_owned())?;
    let member = |key: &serde_json::Value, name: &str| {
        key.get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    let mut out = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        match key.get("use").and_then(serde_json::Value::as_str) {
            None | Some("jwt-svid") => {}
            Some(_) => continue,
        }
        let kid = member(key, "kid")
            .filter(|k| !k.is_empty())
            .ok_or_else(|| format!("keys[{index}] has no kid"))?;
        let members = JwkKeyMembers {
            kty: member(key, "kty").unwrap_or_default(),
            crv: member(key, "crv"),
            x: member(key, "x"),
            y: member(key, "y"),
            n: member(key, "n"),
            e: member(key, "e"),
        };
        let public_key =
            jwk_to_spki(&members).map_err(|e| format!("keys[{index}] ({kid}): {e}"))?;
        out.push(JwtAuthority {
            key_id: kid,
            public_key,
            expires_at: None,
        });
    }
    Ok(out)
}

/// Fetches the JWT authorities once from `source`.
pub async fn fetch_keys(source: &OidcKeySource) -> Result<Vec<JwtAuthority>, String> {
    Client::new(source)?.fetch().await
}

/// Polls `source` every poll interval forever, updating `state` on success.
pub(crate) async fn poll(source: OidcKeySource, state: Arc<KeyState>) {
    let mut client = match Client::new(&source) {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "Invalid key source");
            return;
        }
    };
    let mut tick = tokio::time::interval(poll_interval(&source));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match client.fetch().await {
            Ok(keys) => state.set(keys),
            Err(error) => tracing::warn!(%error, "Failed to fetch JWT authorities"),
        }
    }
}

#[cfg(test)]
mod tests {
    use spire_spiffe::{EcCurve, PublicKey};

    use super::*;

    #[test]
    fn workload_jwks_keys_without_use_or_with_jwt_svid_use_count() {
        let key = PublicKey::Ec {
            curve: EcCurve::P256,
            x: vec![5; 32],
            y: vec![6; 32],
        };
        let jwk = key.to_jwk();
        let doc = serde_json::json!({ "keys": [
            { "kty": "EC", "kid": "a", "crv": jwk.crv, "x": jwk.x, "y": jwk.y },
            { "kty": "EC", "kid": "b", "use": "jwt-svid", "crv": jwk.crv, "x": jwk.x, "y": jwk.y },
            { "kty": "EC", "use": "x509-svid", "crv": jwk.crv, "x": jwk.x, "y": jwk.y },
        ]});
        let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
        let kids: Vec<&str> = keys.iter().map(|k| k.key_id.as_str()).collect();
        assert_eq!(kids, ["a", "b"]);
        assert_eq!(keys[0].public_key, key.to_spki_der());
        let err = parse_jwks(br#"{"keys":[{"kty":"EC"}]}"#).unwrap_err();
        assert_eq!(err, "keys[0] has no kid");
        assert!(parse_jwks(b"[]").is_err());
    }

    #[test]
    fn readiness_follows_the_last_fetch() {
        let state = KeyState::new(&OidcKeySource::ServerApi {
            socket_path: "/x".into(),
            poll_interval: Duration::from_secs(10),
        });
        assert!(!state.ready().0, "no keys yet");
        assert!(state.live().0, "live during the start threshold");
        state.set(Vec::new());
        assert!(state.ready().0);
        assert_eq!(state.ready().1["keys_available"], true);
    }
}
