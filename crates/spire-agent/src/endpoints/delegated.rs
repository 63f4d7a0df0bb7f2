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
            .find(|id| self.delegates.contains(&*id.entry.spiffe_id))
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
    use std::time::{Duration, SystemTime};

    use futures::future::BoxFuture;
    use spire_spiffe::TrustDomain;

    use super::*;
    use crate::attestor::workload::Attestors;
    use crate::identity::{
        BundleView, EntryView, JwtSvid, JwtSvidError, JwtSvidSource, WorkloadX509Svid,
    };

    struct NoJwt;

    impl JwtSvidSource for NoJwt {
        fn fetch_jwt_svid(
            &self,
            _entry: Arc<EntryView>,
            _audiences: Vec<String>,
        ) -> BoxFuture<'static, Result<JwtSvid, JwtSvidError>> {
            Box::pin(async { Err(JwtSvidError::Unavailable("not in this test".to_owned())) })
        }
    }

    fn sel(s: &[&str]) -> Selectors {
        s.iter().map(|x| x.parse::<Selector>().unwrap()).collect()
    }

    fn entry(id: &str, spiffe: &str, selectors: &[&str], federates: &[&str]) -> EntryView {
        EntryView {
            entry_id: id.into(),
            spiffe_id: spiffe.parse().unwrap(),
            parent_id: "spiffe://example.org/node".parse().unwrap(),
            selectors: sel(selectors),
            federates_with: federates.iter().map(|t| t.parse().unwrap()).collect(),
            hint: String::new(),
            created_at: 0,
            revision_number: 0,
            x509_svid_ttl: 0,
            jwt_svid_ttl: 0,
            jwt_svid_include_jti: false,
            disable_x509_svid_prefetch: false,
            admin: false,
            downstream: false,
        }
    }

    fn signed(e: &EntryView) -> Option<Arc<WorkloadX509Svid>> {
        Some(Arc::new(WorkloadX509Svid {
            entry_id: e.entry_id.clone(),
            spiffe_id: e.spiffe_id.clone(),
            cert_chain: vec![vec![1, 2, 3]],
            private_key_pkcs8: Arc::new(zeroize::Zeroizing::new(vec![4, 5])),
            not_before: SystemTime::UNIX_EPOCH,
            expires_at: spire_spiffe::from_unix_secs(2_000_000_000),
        }))
    }

    fn snapshot(ids: Vec<(EntryView, bool)>) -> IdentitySnapshot {
        let td: TrustDomain = "example.org".parse().unwrap();
        let mut snap = IdentitySnapshot::empty(td);
        for (e, is_signed) in ids {
            let svid = if is_signed { signed(&e) } else { None };
            snap.identities.insert(
                e.entry_id.clone(),
                Identity {
                    entry: Arc::new(e),
                    svid,
                },
            );
        }
        let fed: TrustDomain = "fed.org".parse().unwrap();
        snap.federated_bundles.insert(
            fed.clone(),
            Arc::new(BundleView {
                trust_domain: fed.clone(),
                x509_authorities: vec![vec![9]],
                bundle: spire_spiffe::Bundle::new(fed),
            }),
        );
        snap
    }

    fn service(snap: IdentitySnapshot, delegates: &[&str]) -> DelegatedIdentityService {
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(snap));
        let state = Arc::new(WorkloadState {
            snapshots: rx,
            jwt: Arc::new(NoJwt),
            attestors: Attestors::new(Vec::new()),
            allow_unauthenticated_verifiers: false,
            allowed_foreign_jwt_claims: Vec::new(),
            clock: Arc::new(spire_spiffe::SystemClock),
            svid_wait: Duration::from_secs(1),
            subscribers: SubscriberRegistry::new(),
        });
        let delegates: Vec<SpiffeId> = delegates.iter().map(|d| d.parse().unwrap()).collect();
        DelegatedIdentityService::new(state, &delegates)
    }

    #[test]
    fn delegates_are_checked_against_every_matching_entry() {
        let snap = snapshot(vec![
            (
                entry("a", "spiffe://example.org/other", &["unix:uid:1"], &[]),
                true,
            ),
            (
                entry(
                    "b",
                    "spiffe://example.org/proxy",
                    &["unix:uid:1", "unix:gid:2"],
                    &[],
                ),
                true,
            ),
        ]);
        let svc = service(snap.clone(), &["spiffe://example.org/proxy"]);
        // Both entries match: one of them is a delegate.
        assert!(
            svc.check_delegate(&snap, &sel(&["unix:uid:1", "unix:gid:2"]), "T")
                .is_ok()
        );
        // Only the non-delegate entry matches.
        let err = svc
            .check_delegate(&snap, &sel(&["unix:uid:1"]), "T")
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            err.message(),
            "caller not configured as an authorized delegate"
        );
        // Nothing matches.
        let err = svc
            .check_delegate(&snap, &sel(&["unix:uid:3"]), "T")
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert_eq!(err.message(), "no identity issued");
    }

    #[tokio::test]
    async fn the_target_is_selectors_or_pid_never_both() {
        let svc = service(snapshot(Vec::new()), &[]);
        let s = types::Selector {
            r#type: "unix".to_owned(),
            value: "uid:1".to_owned(),
        };
        for (pid, sels) in [(5, vec![s.clone()]), (0, Vec::new())] {
            let err = svc.target(pid, &sels, "T").await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert_eq!(
                err.message(),
                "must provide either selectors or non-zero PID, but not both"
            );
        }
        assert_eq!(
            svc.target(0, &[s], "T").await.unwrap(),
            sel(&["unix:uid:1"])
        );
        let bad = types::Selector {
            r#type: "unix".to_owned(),
            value: String::new(),
        };
        let err = svc.target(0, &[bad], "T").await.unwrap_err();
        assert_eq!(err.message(), "could not parse provided selectors");
    }

    #[test]
    fn x509_updates_skip_admin_and_downstream_entries_and_wait_for_unsigned_ones() {
        let mut admin = entry("c", "spiffe://example.org/admin", &["unix:uid:1"], &[]);
        admin.admin = true;
        let mut downstream = entry("d", "spiffe://example.org/down", &["unix:uid:1"], &[]);
        downstream.downstream = true;
        let snap = snapshot(vec![
            (
                entry(
                    "a",
                    "spiffe://example.org/w",
                    &["unix:uid:1"],
                    &["fed.org", "unknown.org"],
                ),
                true,
            ),
            (
                entry("b", "spiffe://example.org/w2", &["unix:uid:1"], &[]),
                false,
            ),
            (admin, true),
            (downstream, true),
        ]);
        let target = sel(&["unix:uid:1"]);
        // An unsigned matching SVID: wait while waiting is allowed.
        assert!(x509_update(&snap, &target, true).is_none());
        // Then send what is signed; admin and downstream entries are never handed out.
        let resp = x509_update(&snap, &target, false).unwrap();
        let ids: Vec<String> = resp
            .x509_svids
            .iter()
            .map(|s| {
                s.x509_svid
                    .as_ref()
                    .unwrap()
                    .id
                    .as_ref()
                    .unwrap()
                    .path
                    .clone()
            })
            .collect();
        assert_eq!(ids, vec!["/w"]);
        // Only trust domains the agent has a bundle for, as IDs.
        assert_eq!(resp.federates_with, vec!["spiffe://fed.org"]);
        assert_eq!(resp.x509_svids[0].x509_svid_key, vec![4, 5]);
        // No match: an empty update, not an error.
        let none = x509_update(&snap, &sel(&["unix:uid:9"]), true).unwrap();
        assert!(none.x509_svids.is_empty());
    }

    #[test]
    fn bundles_are_keyed_by_trust_domain_id() {
        let snap = snapshot(Vec::new());
        let b = x509_bundles(&snap);
        assert_eq!(b.ca_certificates.get("spiffe://fed.org"), Some(&vec![9]));
        assert!(
            jwt_bundles(&snap)
                .unwrap()
                .bundles
                .contains_key("spiffe://fed.org")
        );
    }

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
