//! The `SpiffeWorkloadAPI` service.
//!
//! Each call: security header (`workload.spiffe.io: true`, else `InvalidArgument`), caller from
//! the connection's peer credentials, workload attestation (failure → `Unavailable`), PID-reuse
//! check, then the caller's view of the current [`IdentitySnapshot`]. No matching entry →
//! `PermissionDenied` "no identity issued" (and one explain line in the agent log). Streams send
//! the whole view at once and again whenever it changes; identical messages are suppressed.
//!
//! The socket itself is watched ([`watched_incoming`]): removed while the agent runs (the file,
//! or its whole directory), it is created again within about a second.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use prost_types::value::Kind;
use spire_crypto::jwt::{JwtBundleSource, JwtKeyLookup, JwtValidationOptions, validate_jwt_svid};
use spire_proto::workload as pb;
use spire_proto::workload::spiffe_workload_api_server::{
    SpiffeWorkloadApi, SpiffeWorkloadApiServer,
};
use spire_spiffe::{Clock, Selectors, SpiffeId, TrustDomain};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::explain::{DEFAULT_NEAREST, explain};
use crate::attestor::workload::Attestors;
use crate::identity::{
    BundleView, Identity, IdentitySnapshot, JwtSvidSource, SubscriberRegistry, SubscriptionGuard,
};
use crate::peertracker::{PeerConnectInfo, PeerStream};

/// The metadata key every Workload API call must carry with the value `true`.
pub const SECURITY_HEADER: &str = "workload.spiffe.io";

/// Registered JWT claims ValidateJWTSVID always returns, also for foreign trust domains.
const REGISTERED_CLAIMS: &[&str] = &["aud", "exp", "iat", "iss", "jti", "nbf", "sub"];

/// How often the Workload API socket's path is checked (see [`watched_incoming`]).
pub const SOCKET_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The connections accepted on `listener` (bound at `path` with `mode` by
/// [`super::bind_socket`]), as a stream for the gRPC server. Every [`SOCKET_CHECK_INTERVAL`]
/// the path is checked: when the socket file or its directory was removed, both are created
/// again as at startup and the new socket is served (connections already open carry on).
/// Something else found at the path is left alone. Ends when `stop` is cancelled or the
/// server drops the stream.
pub fn watched_incoming(
    listener: UnixListener,
    path: PathBuf,
    mode: u32,
    stop: CancellationToken,
) -> impl Stream<Item = Result<PeerStream, std::io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut listener = listener;
        let mut tick = tokio::time::interval(SOCKET_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rebind_failures: u32 = 0;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tx.closed() => return,
                accepted = listener.accept() => {
                    let item = accepted.map(|(stream, _)| PeerStream::new(stream));
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
                _ = tick.tick() => {
                    let missing = matches!(
                        std::fs::symlink_metadata(&path),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound
                    );
                    if !missing || stop.is_cancelled() {
                        continue;
                    }
                    if rebind_failures == 0 {
                        tracing::warn!(
                            path = %path.display(),
                            "workload api socket was removed; re-creating it"
                        );
                    }
                    match super::bind_socket(&path, mode) {
                        Ok(l) => {
                            listener = l;
                            rebind_failures = 0;
                            tracing::info!(path = %path.display(), "workload api socket re-created");
                        }
                        Err(error) => {
                            rebind_failures = rebind_failures.saturating_add(1);
                            if rebind_failures == 1 {
                                tracing::warn!(path = %path.display(), %error, "cannot re-create the workload api socket; retrying");
                            } else {
                                tracing::debug!(path = %path.display(), %error, failures = rebind_failures, "cannot re-create the workload api socket");
                            }
                        }
                    }
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Shared state of the Workload API (and the admin service).
pub struct WorkloadState {
    /// The manager's snapshots.
    pub snapshots: watch::Receiver<Arc<IdentitySnapshot>>,
    /// Mints JWT-SVIDs.
    pub jwt: Arc<dyn JwtSvidSource>,
    /// The workload attestors.
    pub attestors: Attestors,
    /// Bundle streams without an identity.
    pub allow_unauthenticated_verifiers: bool,
    /// Extra claims returned for foreign JWT-SVIDs.
    pub allowed_foreign_jwt_claims: Vec<String>,
    /// Time source for JWT validation.
    pub clock: Arc<dyn Clock>,
    /// How long a caller with matching but unsigned entries waits for its SVIDs.
    pub svid_wait: Duration,
    /// The workloads subscribed to X.509-SVIDs: every X.509 stream (and SDS stream) registers
    /// its caller's selectors for its lifetime, so that the manager signs the entries it
    /// matches even beyond `x509_svid_cache_max_size`.
    pub subscribers: Arc<SubscriberRegistry>,
}

/// A caller that passed the header check and attestation.
struct Caller {
    pid: i32,
    selectors: Selectors,
}

/// The `SpiffeWorkloadAPI` implementation.
#[derive(Clone)]
pub struct WorkloadService {
    state: Arc<WorkloadState>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn no_identity() -> Status {
    Status::permission_denied("no identity issued")
}

/// Checks the security header: exactly one value, `true`.
pub fn check_security_header(md: &tonic::metadata::MetadataMap) -> Result<(), Status> {
    let values: Vec<_> = md.get_all(SECURITY_HEADER).iter().collect();
    match values.as_slice() {
        [v] if v.as_bytes() == b"true" => Ok(()),
        _ => Err(Status::invalid_argument(
            "security header missing from request",
        )),
    }
}

/// DER certificates concatenated, as the Workload API carries chains and bundles.
fn concat_der(certs: &[Vec<u8>]) -> Vec<u8> {
    certs.concat()
}

/// The JWKS of a bundle's JWT authorities only (no X.509 keys, no SPIFFE members, no `use`).
pub(crate) fn jwks(bundle: &BundleView) -> Result<Vec<u8>, Status> {
    let mut b = bundle.bundle.clone();
    b.x509_authorities.clear();
    let text = b
        .to_json()
        .map_err(|e| Status::internal(format!("cannot encode JWT bundle: {e}")))?;
    let mut v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Status::internal(format!("cannot encode JWT bundle: {e}")))?;
    // A standard JWKS, as SPIRE sends it: no SPIFFE members, no `use`.
    if let Some(obj) = v.as_object_mut() {
        obj.remove("spiffe_sequence");
        obj.remove("spiffe_refresh_hint");
        if let Some(keys) = obj.get_mut("keys").and_then(|k| k.as_array_mut()) {
            for key in keys {
                if let Some(k) = key.as_object_mut() {
                    k.remove("use");
                }
            }
        }
    }
    serde_json::to_vec(&v).map_err(|e| Status::internal(format!("cannot encode JWT bundle: {e}")))
}

/// The bundles a caller sees: local first, then federated ones from its entries.
fn caller_bundles(snap: &IdentitySnapshot, selectors: &Selectors) -> Vec<Arc<BundleView>> {
    let mut out: Vec<Arc<BundleView>> = snap.bundle.iter().cloned().collect();
    out.extend(snap.federated_bundles_for(selectors));
    out
}

fn x509_response(
    snap: &IdentitySnapshot,
    ids: &[&Identity],
    selectors: &Selectors,
) -> pb::X509svidResponse {
    let bundle = snap
        .bundle
        .as_ref()
        .map(|b| concat_der(&b.x509_authorities))
        .unwrap_or_default();
    let svids = ids
        .iter()
        .filter_map(|id| {
            let svid = id.svid.as_ref()?;
            Some(pb::X509svid {
                spiffe_id: svid.spiffe_id.to_string(),
                x509_svid: concat_der(&svid.cert_chain),
                x509_svid_key: svid.private_key_pkcs8.to_vec(),
                bundle: bundle.clone(),
                hint: id.entry.hint.clone(),
            })
        })
        .collect();
    let federated_bundles = snap
        .federated_bundles_for(selectors)
        .iter()
        .map(|b| (b.trust_domain.id_string(), concat_der(&b.x509_authorities)))
        .collect();
    pb::X509svidResponse {
        svids,
        crl: Vec::new(),
        federated_bundles,
    }
}

/// Several JWT bundles keyed by trust domain, as a [`JwtBundleSource`].
struct JwtKeys(HashMap<TrustDomain, Arc<BundleView>>);

impl JwtBundleSource for JwtKeys {
    fn jwt_key(&self, td: &TrustDomain, kid: &str) -> JwtKeyLookup<'_> {
        match self.0.get(td) {
            None => JwtKeyLookup::NoBundle,
            Some(b) => b
                .bundle
                .jwt_authority(kid)
                .map_or(JwtKeyLookup::UnknownKid, |a| {
                    JwtKeyLookup::Found(a.public_key.as_slice())
                }),
        }
    }
}

/// A JSON value as a protobuf `Value`.
fn to_proto_value(v: serde_json::Value) -> prost_types::Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(to_proto_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(to_proto_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn to_proto_struct(m: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m.into_iter().map(|(k, v)| (k, to_proto_value(v))).collect(),
    }
}

impl WorkloadService {
    /// A service over `state`.
    pub fn new(state: Arc<WorkloadState>) -> Self {
        Self { state }
    }

    /// Wraps it for tonic.
    pub fn into_server(self) -> SpiffeWorkloadApiServer<Self> {
        SpiffeWorkloadApiServer::new(self)
    }

    /// Header check, caller identification and attestation.
    async fn attest<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        check_security_header(req.metadata())?;
        let Some(caller) = req
            .extensions()
            .get::<PeerConnectInfo>()
            .and_then(|i| i.caller.clone())
        else {
            tracing::warn!("workload api caller has no peer credentials");
            return Err(Status::unavailable("workload attestation failed"));
        };
        let selectors = match self.state.attestors.attest(caller.pid).await {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(pid = caller.pid, %error, "workload attestation failed");
                return Err(Status::unavailable("workload attestation failed"));
            }
        };
        if let Err(error) = caller.check_alive() {
            tracing::warn!(pid = caller.pid, %error, "workload attestation failed");
            return Err(Status::unavailable("workload attestation failed"));
        }
        Ok(Caller {
            pid: caller.pid,
            selectors,
        })
    }

    fn explain_denial(&self, snap: &IdentitySnapshot, caller: &Caller, method: &'static str) {
        let ex = explain(snap, caller.pid, &caller.selectors, DEFAULT_NEAREST);
        tracing::warn!(
            method,
            pid = caller.pid,
            selectors = %ex.selectors_text(),
            nearest = %ex.nearest_text(),
            "no identity issued"
        );
    }

    /// The stream of a streaming call: `build` turns a snapshot into the next message,
    /// `Ok(None)` meaning "nothing to send for this snapshot yet", `Err` ending the stream.
    /// `subscription` is held until the stream ends.
    ///
    /// No task of its own: the stream is polled by the task that serves the call, so the
    /// first message is built and written without a hand-over to another task (each costs a
    /// wake-up, under load a context switch). When the caller goes away the call's task
    /// drops the stream, and with it the subscription.
    fn snapshot_stream<T, F>(
        &self,
        caller: Caller,
        method: &'static str,
        subscription: Option<SubscriptionGuard>,
        build: F,
    ) -> BoxStream<T>
    where
        T: PartialEq + Clone + Send + 'static,
        F: Fn(&IdentitySnapshot, &Selectors, Phase) -> Result<Option<T>, StreamEnd>
            + Send
            + 'static,
    {
        let state = StreamState {
            service: self.clone(),
            caller,
            method,
            _subscription: subscription,
            snaps: self.state.snapshots.clone(),
            build,
            last: None,
            started: tokio::time::Instant::now(),
            wait_deadline: None,
            wait_first: false,
            done: false,
        };
        Box::pin(futures::stream::unfold(state, StreamState::next))
    }
}

/// What a stream of [`WorkloadService::snapshot_stream`] carries between messages.
struct StreamState<T, F> {
    service: WorkloadService,
    caller: Caller,
    method: &'static str,
    _subscription: Option<SubscriptionGuard>,
    snaps: watch::Receiver<Arc<IdentitySnapshot>>,
    build: F,
    /// The last message sent (an identical one is not sent again).
    last: Option<T>,
    started: tokio::time::Instant,
    /// Before the first message: when the bounded wait for unsigned SVIDs runs out.
    wait_deadline: Option<tokio::time::Instant>,
    /// The current snapshot was handled: wait for the next one (or the deadline) first.
    wait_first: bool,
    /// An error was sent: the stream ends.
    done: bool,
}

impl<T, F> StreamState<T, F>
where
    T: PartialEq + Clone,
    F: Fn(&IdentitySnapshot, &Selectors, Phase) -> Result<Option<T>, StreamEnd>,
{
    /// The next item, and the state after it; `None` ends the stream.
    async fn next(mut self) -> Option<(Result<T, Status>, Self)> {
        if self.done {
            return None;
        }
        loop {
            if self.wait_first {
                // Wake for a new snapshot or (before the first message) the end of the SVID
                // wait.
                let deadline = self.wait_deadline;
                tokio::select! {
                    changed = self.snaps.changed() => {
                        if changed.is_err() {
                            self.done = true;
                            return Some((Err(Status::unavailable("agent is shutting down")), self));
                        }
                    }
                    () = async {
                        match deadline {
                            Some(d) => tokio::time::sleep_until(d).await,
                            None => std::future::pending().await,
                        }
                    } => {}
                }
            }
            self.wait_first = true;
            let snap = self.snaps.borrow_and_update().clone();
            let svid_wait = self.service.state.svid_wait;
            let waited_out = self.started.elapsed() >= svid_wait;
            let phase = Phase {
                may_wait: self.last.is_none() && !waited_out,
                sent_any: self.last.is_some(),
            };
            let built = (self.build)(&snap, &self.caller.selectors, phase);
            self.wait_deadline =
                (self.last.is_none() && !waited_out).then(|| self.started + svid_wait);
            match built {
                Ok(Some(msg)) => {
                    if self.last.as_ref() != Some(&msg) {
                        self.last = Some(msg.clone());
                        self.wait_deadline = None;
                        return Some((Ok(msg), self));
                    }
                }
                Ok(None) => {}
                Err(StreamEnd::NoIdentity) => {
                    self.service
                        .explain_denial(&snap, &self.caller, self.method);
                    self.done = true;
                    return Some((Err(no_identity()), self));
                }
                Err(StreamEnd::Status(s)) => {
                    self.done = true;
                    return Some((Err(s), self));
                }
            }
        }
    }
}

/// Where a stream is, for the message builder.
#[derive(Debug, Clone, Copy)]
struct Phase {
    /// Nothing was sent yet and the bounded wait for unsigned SVIDs has not run out.
    may_wait: bool,
    /// A message was sent already.
    sent_any: bool,
}

/// Why a stream ends.
enum StreamEnd {
    NoIdentity,
    Status(Status),
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadService {
    type FetchX509SVIDStream = BoxStream<pb::X509svidResponse>;
    type FetchX509BundlesStream = BoxStream<pb::X509BundlesResponse>;
    type FetchJWTBundlesStream = BoxStream<pb::JwtBundlesResponse>;
    type FetchWITSVIDStream = BoxStream<pb::WitsvidResponse>;
    type FetchWITBundlesStream = BoxStream<pb::WitBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        request: Request<pb::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let caller = self.attest(&request).await?;
        // Registered before the first snapshot is read: an entry beyond the cache limit gets
        // signed now, and the first answer waits (bounded) for it.
        let subscription = self.state.subscribers.register(caller.selectors.clone());
        Ok(Response::new(self.snapshot_stream(
            caller,
            "FetchX509SVID",
            Some(subscription),
            |snap, selectors, phase| {
                let ids = snap.entries_for(selectors);
                if ids.is_empty() {
                    return Err(StreamEnd::NoIdentity);
                }
                let unsigned = ids.iter().filter(|id| id.svid.is_none()).count();
                // Entries match but SVIDs are not all signed yet: the first answer waits for
                // the manager (bounded), so that the default SVID (lowest entry ID) does not
                // change right after it was given.
                if unsigned > 0 && phase.may_wait {
                    return Ok(None);
                }
                if unsigned == ids.len() {
                    // Still nothing signed: keep the last answer, or refuse the first.
                    return if phase.sent_any {
                        Ok(None)
                    } else {
                        Err(StreamEnd::NoIdentity)
                    };
                }
                Ok(Some(x509_response(snap, &ids, selectors)))
            },
        )))
    }

    async fn fetch_x509_bundles(
        &self,
        request: Request<pb::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        let caller = self.attest(&request).await?;
        let allow = self.state.allow_unauthenticated_verifiers;
        Ok(Response::new(self.snapshot_stream(
            caller,
            "FetchX509Bundles",
            None,
            move |snap, selectors, _| {
                if !allow && snap.entries_for(selectors).is_empty() {
                    return Err(StreamEnd::NoIdentity);
                }
                let bundles = caller_bundles(snap, selectors)
                    .iter()
                    .map(|b| (b.trust_domain.id_string(), concat_der(&b.x509_authorities)))
                    .collect();
                Ok(Some(pb::X509BundlesResponse {
                    crl: Vec::new(),
                    bundles,
                }))
            },
        )))
    }

    async fn fetch_jwtsvid(
        &self,
        request: Request<pb::JwtsvidRequest>,
    ) -> Result<Response<pb::JwtsvidResponse>, Status> {
        check_security_header(request.metadata())?;
        let req = request.get_ref();
        if req.audience.is_empty() || req.audience.iter().any(String::is_empty) {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let wanted: Option<SpiffeId> = if req.spiffe_id.is_empty() {
            None
        } else {
            Some(req.spiffe_id.parse().map_err(|e| {
                Status::invalid_argument(format!("invalid requested SPIFFE ID: {e}"))
            })?)
        };
        let audiences = req.audience.clone();
        let caller = self.attest(&request).await?;
        let snap = self.state.snapshots.borrow().clone();
        let entries: Vec<_> = snap
            .entries_for(&caller.selectors)
            .into_iter()
            .filter(|id| wanted.as_ref().is_none_or(|w| *w == id.entry.spiffe_id))
            .map(|id| id.entry.clone())
            .collect();
        if entries.is_empty() {
            self.explain_denial(&snap, &caller, "FetchJWTSVID");
            return Err(no_identity());
        }
        let mut svids = Vec::with_capacity(entries.len());
        for entry in entries {
            let hint = entry.hint.clone();
            match self
                .state
                .jwt
                .fetch_jwt_svid(entry, audiences.clone())
                .await
            {
                Ok(svid) => svids.push(pb::Jwtsvid {
                    spiffe_id: svid.spiffe_id.to_string(),
                    svid: svid.token,
                    hint,
                }),
                Err(error) => {
                    tracing::error!(pid = caller.pid, %error, "could not fetch jwt-svid");
                    return Err(Status::unavailable(format!(
                        "could not fetch JWT-SVID: {error}"
                    )));
                }
            }
        }
        Ok(Response::new(pb::JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        request: Request<pb::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        let caller = self.attest(&request).await?;
        let allow = self.state.allow_unauthenticated_verifiers;
        Ok(Response::new(self.snapshot_stream(
            caller,
            "FetchJWTBundles",
            None,
            move |snap, selectors, _| {
                if !allow && snap.entries_for(selectors).is_empty() {
                    return Err(StreamEnd::NoIdentity);
                }
                let mut bundles = HashMap::new();
                for b in caller_bundles(snap, selectors) {
                    bundles.insert(
                        b.trust_domain.id_string(),
                        jwks(&b).map_err(StreamEnd::Status)?,
                    );
                }
                Ok(Some(pb::JwtBundlesResponse { bundles }))
            },
        )))
    }

    async fn validate_jwtsvid(
        &self,
        request: Request<pb::ValidateJwtsvidRequest>,
    ) -> Result<Response<pb::ValidateJwtsvidResponse>, Status> {
        check_security_header(request.metadata())?;
        let req = request.get_ref();
        if req.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if req.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let caller = self.attest(&request).await?;
        let snap = self.state.snapshots.borrow().clone();
        let keys = JwtKeys(
            caller_bundles(&snap, &caller.selectors)
                .into_iter()
                .map(|b| (b.trust_domain.clone(), b))
                .collect(),
        );
        let validated = validate_jwt_svid(
            &req.svid,
            &keys,
            &req.audience,
            self.state.clock.now(),
            &JwtValidationOptions::default(),
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut claims = validated.claims;
        // `aud` is always an array, whatever form the token used.
        claims.insert(
            "aud".to_owned(),
            serde_json::Value::from(validated.audience.clone()),
        );
        if validated.spiffe_id.trust_domain() != &snap.trust_domain {
            claims.retain(|k, _| {
                REGISTERED_CLAIMS.contains(&k.as_str())
                    || self.state.allowed_foreign_jwt_claims.iter().any(|a| a == k)
            });
        }
        Ok(Response::new(pb::ValidateJwtsvidResponse {
            spiffe_id: validated.spiffe_id.to_string(),
            claims: Some(to_proto_struct(claims)),
        }))
    }

    async fn fetch_witsvid(
        &self,
        _request: Request<pb::WitsvidRequest>,
    ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        Err(Status::unimplemented("WIT-SVIDs are not supported"))
    }

    async fn fetch_wit_bundles(
        &self,
        _request: Request<pb::WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        Err(Status::unimplemented("WIT-SVIDs are not supported"))
    }
}

#[cfg(test)]
mod socket_tests {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};

    use futures::StreamExt as _;

    use super::*;

    #[tokio::test]
    async fn removed_socket_directory_is_recreated_and_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("api.sock");
        let listener = crate::endpoints::bind_socket(&path, 0o777).unwrap();
        let stop = CancellationToken::new();
        let mut incoming = Box::pin(watched_incoming(
            listener,
            path.clone(),
            0o777,
            stop.clone(),
        ));

        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
        let recreated = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Ok(m) = std::fs::symlink_metadata(&path)
                    && m.file_type().is_socket()
                {
                    return m;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("socket re-created");
        assert_eq!(recreated.permissions().mode() & 0o777, 0o777);

        // The new socket is the one served.
        let _client = tokio::net::UnixStream::connect(&path).await.unwrap();
        let accepted = tokio::time::timeout(Duration::from_secs(30), incoming.next())
            .await
            .expect("connection accepted")
            .expect("stream open");
        assert!(accepted.is_ok());

        stop.cancel();
        let end = tokio::time::timeout(Duration::from_secs(30), incoming.next())
            .await
            .expect("stream ends");
        assert!(end.is_none());
    }
}
