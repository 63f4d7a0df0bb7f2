//! SPIRE's Delegated Identity API (`spire.api.agent.delegatedidentity.v1.DelegatedIdentity`) on
//! the admin socket: a trusted delegate (a node proxy, a CNI, Envoy acting for local processes)
//! obtains the SVIDs and bundles of other workloads, which it names by selectors or by pid.
//!
//! Authorization is SPIRE's: the admin-socket caller is identified from the connection's peer
//! credentials and attested with the agent's workload attestors (failure → `Unavailable`); its
//! selectors must match at least one entry (else `PermissionDenied` "no identity issued"), and
//! one of those entries' SPIFFE IDs must be listed in `authorized_delegates` (else
//! `PermissionDenied` "caller not configured as an authorized delegate"). Streams repeat the
//! check, with the selectors attested at the start, on every change, so a delegate whose entry
//! is deleted loses its open streams.
//!
//! The workload is described either by selectors (taken as attested: the delegate vouches for
//! them) or by a non-zero pid, which the agent attests itself; giving both or neither is
//! `InvalidArgument`. An X.509 subscription is registered in the [`SubscriberRegistry`] for its
//! lifetime, so the manager signs the workload's SVIDs even beyond `x509_svid_cache_max_size`.
//! Admin and downstream entries are never handed out.

use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use spire_proto::agent::delegatedidentity as pb;
use spire_proto::agent::delegatedidentity::delegated_identity_server::{
    DelegatedIdentity, DelegatedIdentityServer,
};
use spire_proto::types;
use spire_spiffe::{Selector, Selectors, SpiffeId};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::workload::{WorkloadState, jwks};
use crate::identity::{Identity, IdentitySnapshot, SubscriberRegistry, SubscriptionGuard};
use crate::peertracker::PeerConnectInfo;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The Delegated Identity service.
#[derive(Clone)]
pub struct DelegatedIdentityService {
    state: Arc<WorkloadState>,
    delegates: Arc<BTreeSet<SpiffeId>>,
}

fn attestation_failed() -> Status {
    Status::unavailable("workload attestation failed")
}

fn no_identity() -> Status {
    Status::permission_denied("no identity issued")
}

/// The entries whose selectors are a subset of `selectors`, without hint de-duplication (the
/// delegated API hands out every matching identity, as SPIRE's cache does).
fn matching<'a>(snap: &'a IdentitySnapshot, selectors: &Selectors) -> Vec<&'a Identity> {
    snap.identities
        .values()
        .filter(|id| id.entry.selectors.is_subset_of(selectors))
        .collect()
}

/// A SPIFFE ID as `spire.api.types.SPIFFEID` (trust domain name and path).
fn spiffe_id_pb(id: &SpiffeId) -> types::Spiffeid {
    types::Spiffeid {
        trust_domain: id.trust_domain().as_str().to_owned(),
        path: id.path().to_owned(),
    }
}

/// The `iat` claim of a compact JWS, read without verification (the agent minted it); 0 when
/// absent or unreadable.
fn issued_at(token: &str) -> i64 {
    use base64::Engine as _;
    let Some(payload) = token.split('.').nth(1) else {
        return 0;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("iat").and_then(serde_json::Value::as_i64))
        .unwrap_or(0)
}

/// What the X.509-SVID stream sends for one snapshot: `None` while SVIDs of matching entries
/// are still being signed and waiting is allowed.
fn x509_update(
    snap: &IdentitySnapshot,
    selectors: &Selectors,
    may_wait: bool,
) -> Option<pb::SubscribeToX509sviDsResponse> {
    let ids: Vec<&Identity> = matching(snap, selectors)
        .into_iter()
        .filter(|id| !id.entry.admin && !id.entry.downstream)
        .collect();
    if may_wait && ids.iter().any(|id| id.svid.is_none()) {
        return None;
    }
    let mut federates_with: Vec<String> = ids
        .iter()
        .flat_map(|id| id.entry.federates_with.iter())
        .filter(|td| snap.federated_bundles.contains_key(*td))
        .map(|td| td.id_string())
        .collect();
    federates_with.sort();
    federates_with.dedup();
    let x509_svids = ids
        .iter()
        .filter_map(|id| {
            let svid = id.svid.as_ref()?;
            Some(pb::X509svidWithKey {
                x509_svid: Some(types::X509svid {
                    cert_chain: svid.cert_chain.clone(),
                    id: Some(spiffe_id_pb(&id.entry.spiffe_id)),
                    expires_at: spire_spiffe::to_unix_secs(svid.expires_at),
                    hint: id.entry.hint.clone(),
                }),
                x509_svid_key: svid.private_key_pkcs8.to_vec(),
            })
        })
        .collect();
    Some(pb::SubscribeToX509sviDsResponse {
        x509_svids,
        federates_with,
    })
}

/// Every bundle the agent holds (local and federated), keyed by trust-domain ID.
fn all_bundles(snap: &IdentitySnapshot) -> impl Iterator<Item = &crate::identity::BundleView> {
    snap.bundle
        .iter()
        .map(AsRef::as_ref)
        .chain(snap.federated_bundles.values().map(AsRef::as_ref))
}

fn x509_bundles(snap: &IdentitySnapshot) -> pb::SubscribeToX509BundlesResponse {
    pb::SubscribeToX509BundlesResponse {
        ca_certificates: all_bundles(snap)
            .map(|b| (b.trust_domain.id_string(), b.x509_authorities.concat()))
            .collect(),
    }
}

fn jwt_bundles(snap: &IdentitySnapshot) -> Result<pb::SubscribeToJwtBundlesResponse, Status> {
    let mut bundles = HashMap::new();
    for b in all_bundles(snap) {
        bundles.insert(b.trust_domain.id_string(), jwks(b)?);
    }
    Ok(pb::SubscribeToJwtBundlesResponse { bundles })
}

impl DelegatedIdentityService {
    /// A service over the Workload API's state, for the delegates in `authorized_delegates`.
    pub fn new(state: Arc<WorkloadState>, authorized_delegates: &[SpiffeId]) -> Self {
        Self {
            state,
            delegates: Arc::new(authorized_delegates.iter().cloned().collect()),
        }
    }

    /// Wraps it for tonic.
    pub fn into_server(self) -> DelegatedIdentityServer<Self> {
        DelegatedIdentityServer::new(self)
    }

    fn registry(&self) -> &Arc<SubscriberRegistry> {
        &self.state.subscribers
    }

    /// Attests the admin-socket caller and checks it is an authorized delegate; returns its
    /// selectors for the re-checks of a stream.
    async fn authorize<T>(
        &self,
        req: &Request<T>,
        method: &'static str,
    ) -> Result<Selectors, Status> {
        let Some(caller) = req
            .extensions()
            .get::<PeerConnectInfo>()
            .and_then(|i| i.caller.clone())
        else {
            tracing::error!(method, "admin api caller has no peer credentials");
            return Err(attestation_failed());
        };
        let selectors = match self.state.attestors.attest(caller.pid).await {
            Ok(s) => s,
            Err(error) => {
                tracing::error!(method, pid = caller.pid, %error, "workload attestation failed");
                return Err(attestation_failed());
            }
        };
        if let Err(error) = caller.check_alive() {
            tracing::error!(method, pid = caller.pid, %error, "workload attestation failed");
            return Err(attestation_failed());
        }
        let snap = self.state.snapshots.borrow().clone();
        self.check_delegate(&snap, &selectors, method)?;
        Ok(selectors)
    }

    /// The caller's selectors must match an entry whose SPIFFE ID is an authorized delegate.
    fn check_delegate(
        &self,
        snap: &IdentitySnapshot,
        selectors: &Selectors,
        method: &'static str,
    ) -> Result<(), Status> {
        let entries = matching(snap, selectors);
        if entries.is_empty() {
            tracing::error!(
                method,
                delegate_selectors = ?selectors,
                "no identity issued"
            );
            return Err(no_identity());
        }
        if let Some(id) = entries
            .iter()
            .find(|id| self.delegates.contains(&id.entry.spiffe_id))
        {
            tracing::debug!(method, delegate_id = %id.entry.spiffe_id, "caller authorized as delegate");
            return Ok(());
        }
        tracing::error!(
            method,
            delegate_selectors = ?selectors,
            num_registered_entries = entries.len(),
            default_id = %entries[0].entry.spiffe_id,
            "permission denied; caller not configured as an authorized delegate"
        );
        Err(Status::permission_denied(
            "caller not configured as an authorized delegate",
        ))
    }

    /// The workload the request names: its selectors as given, or those of its pid.
    async fn target(
        &self,
        pid: i32,
        selectors: &[types::Selector],
        method: &'static str,
    ) -> Result<Selectors, Status> {
        if selectors.is_empty() == (pid == 0) {
            tracing::error!(
                method,
                "invalid argument; must provide either selectors or non-zero pid, but not both"
            );
            return Err(Status::invalid_argument(
                "must provide either selectors or non-zero PID, but not both",
            ));
        }
        if !selectors.is_empty() {
            return selectors
                .iter()
                .map(|s| Selector::new(s.r#type.clone(), s.value.clone()))
                .collect::<Result<Selectors, _>>()
                .map_err(|error| {
                    tracing::error!(method, %error, "invalid argument; could not parse provided selectors");
                    Status::invalid_argument("could not parse provided selectors")
                });
        }
        self.state.attestors.attest(pid).await.map_err(|error| {
            tracing::error!(method, pid, %error, "workload attestation failed");
            attestation_failed()
        })
    }

    /// Spawns a stream that sends `build(snapshot)` now and whenever it changes, re-checking
    /// the delegate's authorization (with `delegate` selectors) on every snapshot. `build`
    /// returning `Ok(None)` means "nothing to send yet"; `Err` ends the stream.
    fn spawn_stream<T, F>(
        &self,
        delegate: Selectors,
        method: &'static str,
        subscription: Option<SubscriptionGuard>,
        build: F,
    ) -> BoxStream<T>
    where
        T: PartialEq + Clone + Send + 'static,
        F: Fn(&IdentitySnapshot, bool) -> Result<Option<T>, Status> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Result<T, Status>>(4);
        let this = self.clone();
        tokio::spawn(async move {
            let _subscription = subscription;
            let mut snaps = this.state.snapshots.clone();
            let mut last: Option<T> = None;
            let started = tokio::time::Instant::now();
            loop {
                let snap = snaps.borrow_and_update().clone();
                if let Err(status) = this.check_delegate(&snap, &delegate, method) {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                let waited_out = started.elapsed() >= this.state.svid_wait;
                let may_wait = last.is_none() && !waited_out;
                match build(&snap, may_wait) {
                    Ok(Some(msg)) => {
                        if last.as_ref() != Some(&msg) {
                            last = Some(msg.clone());
                            if tx.send(Ok(msg)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
                let wait_deadline = may_wait.then(|| started + this.state.svid_wait);
                tokio::select! {
                    changed = snaps.changed() => {
                        if changed.is_err() {
                            let _ = tx.send(Err(Status::unavailable("agent is shutting down"))).await;
                            return;
                        }
                    }
                    () = tx.closed() => return,
                    () = async {
                        match wait_deadline {
                            Some(d) => tokio::time::sleep_until(d).await,
                            None => std::future::pending().await,
                        }
                    } => {}
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

#[tonic::async_trait]
impl DelegatedIdentity for DelegatedIdentityService {
    type SubscribeToX509SVIDsStream = BoxStream<pb::SubscribeToX509sviDsResponse>;
    type SubscribeToX509BundlesStream = BoxStream<pb::SubscribeToX509BundlesResponse>;
    type SubscribeToJWTBundlesStream = BoxStream<pb::SubscribeToJwtBundlesResponse>;

    async fn subscribe_to_x509svi_ds(
        &self,
        request: Request<pb::SubscribeToX509sviDsRequest>,
    ) -> Result<Response<Self::SubscribeToX509SVIDsStream>, Status> {
        const METHOD: &str = "SubscribeToX509SVIDs";
        let delegate = self.authorize(&request, METHOD).await?;
        let req = request.get_ref();
        let target = self.target(req.pid, &req.selectors, METHOD).await?;
        tracing::debug!(
            delegate_selectors = ?delegate,
            request_selectors = ?target,
            "subscribing to cache changes"
        );
        // Registered before the first snapshot is read, so the manager starts signing the
        // workload's SVIDs (beyond the cache limit too) and the first answer waits for them.
        let subscription = self.registry().register(target.clone());
        Ok(Response::new(self.spawn_stream(
            delegate,
            METHOD,
            Some(subscription),
            move |snap, may_wait| Ok(x509_update(snap, &target, may_wait)),
        )))
    }

    async fn subscribe_to_x509_bundles(
        &self,
        request: Request<pb::SubscribeToX509BundlesRequest>,
    ) -> Result<Response<Self::SubscribeToX509BundlesStream>, Status> {
        const METHOD: &str = "SubscribeToX509Bundles";
        let delegate = self.authorize(&request, METHOD).await?;
        Ok(Response::new(self.spawn_stream(
            delegate,
            METHOD,
            None,
            |snap, _| Ok(Some(x509_bundles(snap))),
        )))
    }

    async fn fetch_jwtsvi_ds(
        &self,
        request: Request<pb::FetchJwtsviDsRequest>,
    ) -> Result<Response<pb::FetchJwtsviDsResponse>, Status> {
        const METHOD: &str = "FetchJWTSVIDs";
        if request.get_ref().audience.is_empty() {
            tracing::error!(method = METHOD, "missing required audience parameter");
            return Err(Status::invalid_argument("audience must be specified"));
        }
        self.authorize(&request, METHOD).await?;
        let req = request.into_inner();
        let target = self.target(req.pid, &req.selectors, METHOD).await?;
        let snap = self.state.snapshots.borrow().clone();
        let entries: Vec<_> = matching(&snap, &target)
            .into_iter()
            .filter(|id| !id.entry.admin && !id.entry.downstream)
            .map(|id| id.entry.clone())
            .collect();
        let mut svids = Vec::with_capacity(entries.len());
        for entry in entries {
            let hint = entry.hint.clone();
            let spiffe_id = entry.spiffe_id.clone();
            let svid = self
                .state
                .jwt
                .fetch_jwt_svid(entry, req.audience.clone())
                .await
                .map_err(|error| {
                    tracing::error!(method = METHOD, %spiffe_id, %error, "could not fetch jwt-svid");
                    Status::unavailable(format!("could not fetch JWT-SVID: {error}"))
                })?;
            svids.push(types::Jwtsvid {
                issued_at: issued_at(&svid.token),
                token: svid.token,
                id: Some(spiffe_id_pb(&spiffe_id)),
                expires_at: spire_spiffe::to_unix_secs(svid.expires_at),
                hint,
            });
        }
        if svids.is_empty() {
            tracing::error!(method = METHOD, request_selectors = ?target, "no identity issued");
            return Err(no_identity());
        }
        Ok(Response::new(pb::FetchJwtsviDsResponse { svids }))
    }

    async fn subscribe_to_jwt_bundles(
        &self,
        request: Request<pb::SubscribeToJwtBundlesRequest>,
    ) -> Result<Response<Self::SubscribeToJWTBundlesStream>, Status> {
        const METHOD: &str = "SubscribeToJWTBundles";
        let delegate = self.authorize(&request, METHOD).await?;
        Ok(Response::new(self.spawn_stream(
            delegate,
            METHOD,
            None,
            |snap, _| jwt_bundles(snap).map(Some),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_at_reads_the_iat_claim() {
        use base64::Engine as _;
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let token = format!(
            "{}.{}.sig",
            enc(r#"{"alg":"ES256"}"#),
            enc(r#"{"sub":"spiffe://example.org/w","iat":1700000000}"#)
        );
        assert_eq!(issued_at(&token), 1_700_000_000);
        assert_eq!(issued_at("not-a-token"), 0);
        assert_eq!(issued_at("a.!!!.c"), 0);
    }
}
