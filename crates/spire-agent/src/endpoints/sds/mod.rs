//! Envoy SDS v3 (`envoy.service.secret.v3.SecretDiscoveryService`) on the Workload API socket.
//!
//! Envoy is attested like any workload, from the socket's peer credentials (no security
//! header: Envoy does not send one), and gets only the SVIDs and bundles of its own entries;
//! see [`build`] for the resource names. `StreamSecrets` follows the xDS state-of-the-world
//! protocol: each response carries a fresh nonce and a new version; a request whose nonce is
//! not the last one sent is stale and ignored; an ACK or a NACK (logged) for the same resource
//! names causes no resend; new resource names, or a change in what the caller sees (SVID
//! rotation, bundle update, entries), cause a push. `DeltaSecrets` is not implemented.

pub mod build;

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use futures::{Stream, StreamExt as _};
use spire_spiffe::Selectors;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use self::build::{CallerView, build_response};
use super::workload::WorkloadState;
use crate::peertracker::PeerConnectInfo;

/// The agent's `sds { }` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsSettings {
    /// The resource name of the caller's first SVID (`default`).
    pub default_svid_name: String,
    /// The resource name of the local bundle (`ROOTCA`).
    pub default_bundle_name: String,
    /// The resource name of all bundles in one SPIFFE validator (`ALL`).
    pub default_all_bundles_name: String,
    /// Send plain `trusted_ca` validation contexts instead of the SPIFFE validator.
    pub disable_spiffe_cert_validation: bool,
}

impl Default for SdsSettings {
    fn default() -> Self {
        Self::from(&spire_config::SdsConfig::default())
    }
}

impl From<&spire_config::SdsConfig> for SdsSettings {
    fn from(c: &spire_config::SdsConfig) -> Self {
        Self {
            default_svid_name: c.default_svid_name.clone(),
            default_bundle_name: c.default_bundle_name.clone(),
            default_all_bundles_name: c.default_all_bundles_name.clone(),
            disable_spiffe_cert_validation: c.disable_spiffe_cert_validation,
        }
    }
}

/// The SDS v3 service.
#[derive(Clone)]
pub struct SdsService {
    state: Arc<WorkloadState>,
    settings: Arc<SdsSettings>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl SdsService {
    /// A service sharing the Workload API's snapshots, attestors and SVID wait.
    pub fn new(state: Arc<WorkloadState>, settings: SdsSettings) -> Self {
        Self {
            state,
            settings: Arc::new(settings),
        }
    }

    /// Wraps it for tonic.
    pub fn into_server(self) -> SecretDiscoveryServiceServer<Self> {
        SecretDiscoveryServiceServer::new(self)
    }

    /// The caller's selectors from its peer credentials.
    async fn attest<T>(&self, req: &Request<T>) -> Result<Selectors, Status> {
        let failed = || Status::unavailable("workload attestation failed");
        let Some(caller) = req
            .extensions()
            .get::<PeerConnectInfo>()
            .and_then(|i| i.caller.clone())
        else {
            tracing::warn!("sds caller has no peer credentials");
            return Err(failed());
        };
        let selectors = self
            .state
            .attestors
            .attest(caller.pid)
            .await
            .map_err(|error| {
                tracing::warn!(pid = caller.pid, %error, "sds workload attestation failed");
                failed()
            })?;
        caller.check_alive().map_err(|error| {
            tracing::warn!(pid = caller.pid, %error, "sds workload attestation failed");
            failed()
        })?;
        Ok(selectors)
    }

    /// The caller's view once it is ready (bundle known, SVIDs signed or waited out).
    async fn ready_view(&self, selectors: &Selectors) -> CallerView {
        // Subscribed for the call: entries beyond the cache limit get signed meanwhile.
        let _subscription = self.state.subscribers.register(selectors.clone());
        let mut snaps = self.state.snapshots.clone();
        let deadline = tokio::time::Instant::now() + self.state.svid_wait;
        loop {
            let snap = snaps.borrow_and_update().clone();
            let waited_out = tokio::time::Instant::now() >= deadline;
            let view = CallerView::new(&snap, selectors);
            if view.ready(waited_out) || waited_out {
                return view;
            }
            tokio::select! {
                changed = snaps.changed() => {
                    if changed.is_err() {
                        return view;
                    }
                }
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

fn next_nonce() -> String {
    let mut b = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        // Nonces need to be distinct, not secret: fall back to the clock.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        b = (t.as_nanos() as u64).to_be_bytes();
    }
    hex::encode(b)
}

fn name_set(req: &DiscoveryRequest) -> BTreeSet<String> {
    req.resource_names.iter().cloned().collect()
}

/// One `StreamSecrets` stream.
struct SdsStream {
    svc: SdsService,
    selectors: Selectors,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    /// The last request, whose names every push answers.
    last_req: Option<DiscoveryRequest>,
    /// The nonce of the last response.
    last_nonce: Option<String>,
    /// The version of the last response.
    version: u64,
    /// What the last response was built from.
    sent_view: Option<CallerView>,
    /// The request of the last response.
    sent_names: Option<BTreeSet<String>>,
}

impl SdsStream {
    /// Sends a response to `last_req` from `view`; `false` ends the stream.
    async fn push(&mut self, view: &CallerView) -> bool {
        let Some(req) = &self.last_req else {
            return true;
        };
        self.version += 1;
        let nonce = next_nonce();
        match build_response(
            &self.svc.settings,
            view,
            req,
            self.version.to_string(),
            nonce.clone(),
        ) {
            Ok(resp) => {
                tracing::debug!(
                    version = %resp.version_info,
                    nonce = %resp.nonce,
                    count = resp.resources.len(),
                    "sending sds response"
                );
                self.last_nonce = Some(nonce);
                self.sent_view = Some(view.clone());
                self.sent_names = Some(name_set(req));
                self.tx.send(Ok(resp)).await.is_ok()
            }
            Err(status) => {
                tracing::warn!(
                    names = ?req.resource_names,
                    error = %status.message(),
                    "cannot answer sds request"
                );
                let _ = self.tx.send(Err(status)).await;
                false
            }
        }
    }

    /// Records one request: ignored when its nonce is stale, logged when it is a NACK.
    fn on_request(&mut self, req: DiscoveryRequest) {
        tracing::debug!(
            names = ?req.resource_names,
            version = %req.version_info,
            nonce = %req.response_nonce,
            "received sds request"
        );
        if let Some(detail) = &req.error_detail {
            tracing::error!(
                names = ?req.resource_names,
                error = %detail.message,
                "envoy reported errors applying secrets"
            );
        }
        if let Some(last) = &self.last_nonce {
            if *last != req.response_nonce {
                tracing::warn!(
                    nonce = %req.response_nonce,
                    expected = %last,
                    "ignoring sds request with a stale nonce"
                );
                return;
            }
            if req.version_info != self.version.to_string() {
                tracing::error!(
                    version = %req.version_info,
                    expected = self.version,
                    "envoy rejected the last sds version"
                );
            }
        }
        self.last_req = Some(req);
    }

    /// Whether `view` must be pushed: something was requested, the view is ready, and either
    /// the requested names or the content changed since the last response.
    fn needs_push(&self, view: &CallerView, waited_out: bool) -> bool {
        let Some(req) = &self.last_req else {
            return false;
        };
        view.ready(waited_out)
            && (self.sent_names.as_ref() != Some(&name_set(req))
                || self
                    .sent_view
                    .as_ref()
                    .is_none_or(|sent| !sent.same_content(view)))
    }

    async fn run(mut self, mut requests: Streaming<DiscoveryRequest>) {
        // Subscribed for the stream's lifetime: the manager keeps the caller's SVIDs signed
        // even beyond `x509_svid_cache_max_size`.
        let _subscription = self.svc.state.subscribers.register(self.selectors.clone());
        let mut snaps = self.svc.state.snapshots.clone();
        let deadline = tokio::time::Instant::now() + self.svc.state.svid_wait;
        let mut waited_out = false;
        loop {
            let snap = snaps.borrow_and_update().clone();
            let view = CallerView::new(&snap, &self.selectors);
            if self.needs_push(&view, waited_out) && !self.push(&view).await {
                return;
            }
            tokio::select! {
                req = requests.next() => match req {
                    Some(Ok(req)) => self.on_request(req),
                    Some(Err(status)) => {
                        if status.code() != tonic::Code::Cancelled {
                            tracing::debug!(error = %status, "sds stream receive failed");
                        }
                        return;
                    }
                    None => return,
                },
                changed = snaps.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep_until(deadline), if !waited_out => {
                    waited_out = true;
                }
                () = self.tx.closed() => return,
            }
        }
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for SdsService {
    type DeltaSecretsStream = BoxStream<DeltaDiscoveryResponse>;
    type StreamSecretsStream = BoxStream<DiscoveryResponse>;

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented("method is not implemented"))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let selectors = self.attest(&request).await?;
        let (tx, rx) = mpsc::channel(4);
        let stream = SdsStream {
            svc: self.clone(),
            selectors,
            tx,
            last_req: None,
            last_nonce: None,
            version: 0,
            sent_view: None,
            sent_names: None,
        };
        tokio::spawn(stream.run(request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let selectors = self.attest(&request).await?;
        let view = self.ready_view(&selectors).await;
        let resp = build_response(
            &self.settings,
            &view,
            request.get_ref(),
            String::new(),
            String::new(),
        )
        .inspect_err(|status| {
            tracing::warn!(
                names = ?request.get_ref().resource_names,
                error = %status.message(),
                "cannot answer sds fetch"
            );
        })?;
        Ok(Response::new(resp))
    }
}

#[cfg(test)]
mod tests;
