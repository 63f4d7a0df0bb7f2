//! The agent's gRPC client to the SPIRE server: node attestation (`AttestAgent` bidi stream),
//! `RenewAgent`, `PostStatus`, entry sync (`SyncAuthorizedEntries` with SPIRE's revision diff,
//! falling back to `GetAuthorizedEntries`), `BatchNewX509SVID`, `NewJWTSVID`, `GetBundle`,
//! `GetFederatedBundle`, and the spire-rs `Watch` push stream.
//!
//! Everything goes over mTLS built by spire-tls: the server must present an X509-SVID for
//! `spiffe://<td>/spire/server` chaining to the current bundle, and the agent presents the
//! identity in its [`SharedIdentity`]. A connection keeps the client certificate it was opened
//! with, so after the agent's SVID changes the caller runs [`ServerClient::reconnect`].
//!
//! The address may name several servers (and a name may resolve to several addresses); a
//! connection goes to one of them and fails over to another when it breaks ([`failover`]).

pub mod convert;
pub mod failover;

pub use failover::connect_lazy;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use spire_proto::server::{agent as agentpb, bundle as bundlepb, entry as entrypb, svid as svidpb};
use spire_proto::spire_rs::agent as watchpb;
use spire_proto::types;
use spire_spiffe::{Bundle, Clock, SpiffeId, TrustDomain};
use spire_tls::{BundleSet, ClientOptions, PeerMatcher, ServerAuth, SharedIdentity};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::attestor::node::NodeAttestor;
use crate::identity::{EntryId, EntryView};

/// Longest time one unary call may take.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Entries requested per `SyncAuthorizedEntries` page and CSRs per `BatchNewX509SVID` call.
pub const PAGE_SIZE: usize = 500;

/// Why a call to the server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an error status.
    #[error("{op} failed: {} ({:?})", .status.message(), .status.code())]
    Rpc {
        /// The RPC.
        op: &'static str,
        /// The status.
        status: tonic::Status,
    },
    /// The server's answer does not follow the protocol.
    #[error("{op}: unexpected answer from server: {reason}")]
    Protocol {
        /// The RPC.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The TLS configuration or address is unusable.
    #[error("cannot set up the connection to the server: {0}")]
    Tls(#[from] spire_tls::TlsError),
    /// The node attestor failed.
    #[error(transparent)]
    Attestor(#[from] crate::attestor::node::NodeAttestorError),
    /// The call did not finish in time.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The server address cannot be used.
    #[error("invalid server address {address:?}: {reason}")]
    Address {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ClientError {
    /// The gRPC code, if the server answered with one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }

    /// Whether the server refused the agent itself (banned, evicted, unknown).
    pub fn is_permission_denied(&self) -> bool {
        self.code() == Some(tonic::Code::PermissionDenied)
    }
}

fn rpc(op: &'static str) -> impl FnOnce(tonic::Status) -> ClientError {
    move |status| ClientError::Rpc { op, status }
}

fn protocol(op: &'static str, reason: impl Into<String>) -> ClientError {
    ClientError::Protocol {
        op,
        reason: reason.into(),
    }
}

async fn timed<T>(
    op: &'static str,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(RPC_TIMEOUT, fut)
        .await
        .map_err(|_| ClientError::Timeout(op))?
}

/// An X509-SVID as returned by the server, with the facts the agent needs from its leaf.
#[derive(Clone)]
pub struct IssuedSvid {
    /// DER certificates, leaf first.
    pub cert_chain: Vec<Vec<u8>>,
    /// The leaf's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The leaf's NotBefore.
    pub not_before: SystemTime,
    /// The leaf's NotAfter.
    pub not_after: SystemTime,
    /// The leaf's serial number, lower-case hex.
    pub serial: String,
}

impl std::fmt::Debug for IssuedSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl IssuedSvid {
    /// Parses the leaf of `cert_chain`.
    pub fn from_chain(cert_chain: Vec<Vec<u8>>) -> Result<Self, String> {
        let leaf = cert_chain.first().ok_or("empty certificate chain")?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| format!("leaf certificate is not valid DER: {e}"))?;
        let spiffe_id = spire_crypto::spiffe_id_from_cert(leaf).map_err(|e| e.to_string())?;
        let validity = cert.validity();
        let to_time = |t: x509_parser::time::ASN1Time| spire_spiffe::from_unix_secs(t.timestamp());
        Ok(IssuedSvid {
            spiffe_id,
            not_before: to_time(validity.not_before),
            not_after: to_time(validity.not_after),
            serial: cert.tbs_certificate.raw_serial_as_string().replace(':', ""),
            cert_chain,
        })
    }

    fn from_proto(op: &'static str, svid: Option<types::X509svid>) -> Result<Self, ClientError> {
        let svid = svid.ok_or_else(|| protocol(op, "no svid in response"))?;
        Self::from_chain(svid.cert_chain).map_err(|e| protocol(op, e))
    }

    /// The SPKI DER of the leaf's public key.
    pub fn public_key_spki(&self) -> Option<&[u8]> {
        self.cert_chain
            .first()
            .and_then(|leaf| spire_spiffe::certificate_spki(leaf).ok())
    }
}

/// What an attestation produced.
#[derive(Debug, Clone)]
pub struct Attestation {
    /// The agent's new SVID.
    pub svid: IssuedSvid,
    /// Whether the agent may re-attest (and must, to rotate).
    pub reattestable: bool,
}

/// The TLS settings for talking to the server: verify against `bundles`, or (insecure
/// bootstrap, `None`) accept any chain whose leaf is in the trust domain.
pub fn tls_config(
    trust_domain: &TrustDomain,
    bundles: Option<&BundleSet>,
    identity: SharedIdentity,
    clock: Arc<dyn Clock>,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let auth = match bundles {
        Some(bundles) => ServerAuth::Verify {
            bundles: bundles.clone(),
            expected: PeerMatcher::SpireServer(trust_domain.clone()),
        },
        None => ServerAuth::InsecureBootstrap {
            trust_domain: trust_domain.clone(),
        },
    };
    Ok(spire_tls::client_config(
        auth,
        ClientOptions { identity, clock },
    )?)
}

/// Runs `AttestAgent` on `channel`: sends the attestor's payload and the CSR, answers
/// challenges until the server returns the SVID.
pub async fn attest(
    channel: Channel,
    attestor: &dyn NodeAttestor,
    csr: Vec<u8>,
) -> Result<Attestation, ClientError> {
    const OP: &str = "AttestAgent";
    use agentpb::{attest_agent_request as req, attest_agent_response as resp};
    let (tx, rx) = tokio::sync::mpsc::channel::<agentpb::AttestAgentRequest>(4);
    let first = agentpb::AttestAgentRequest {
        step: Some(req::Step::Params(req::Params {
            data: Some(types::AttestationData {
                r#type: attestor.attestation_type().to_owned(),
                payload: attestor.payload()?,
            }),
            params: Some(agentpb::AgentX509svidParams { csr }),
        })),
    };
    tx.send(first)
        .await
        .map_err(|_| protocol(OP, "request stream closed"))?;
    let mut client = agentpb::agent_client::AgentClient::new(channel);
    let mut stream = timed(OP, async {
        client
            .attest_agent(ReceiverStream::new(rx))
            .await
            .map_err(rpc(OP))
    })
    .await?
    .into_inner();
    // At most a few challenge rounds; each bounded in time.
    for _ in 0..16 {
        let msg = timed(OP, async { stream.message().await.map_err(rpc(OP)) }).await?;
        let Some(msg) = msg else {
            return Err(protocol(OP, "stream ended without a result"));
        };
        match msg.step {
            Some(resp::Step::Result(result)) => {
                let svid = IssuedSvid::from_proto(OP, result.svid)?;
                return Ok(Attestation {
                    svid,
                    reattestable: result.reattestable,
                });
            }
            Some(resp::Step::Challenge(challenge)) => {
                let answer = attestor.respond(&challenge)?;
                tx.send(agentpb::AttestAgentRequest {
                    step: Some(req::Step::ChallengeResponse(answer)),
                })
                .await
                .map_err(|_| protocol(OP, "request stream closed"))?;
            }
            None => return Err(protocol(OP, "response without step")),
        }
    }
    Err(protocol(OP, "too many challenge rounds"))
}

/// Runs `GetBundle` on `channel` (callable before the agent has an SVID).
pub async fn get_bundle_on(channel: Channel) -> Result<Bundle, ClientError> {
    const OP: &str = "GetBundle";
    let mut c = bundlepb::bundle_client::BundleClient::new(channel);
    let b = timed(OP, async {
        c.get_bundle(bundlepb::GetBundleRequest::default())
            .await
            .map_err(rpc(OP))
    })
    .await?
    .into_inner();
    convert::bundle(&b).map_err(|e| protocol(OP, e))
}

/// The outcome of one entry sync.
#[derive(Debug, Default)]
pub struct SyncedEntries {
    /// All entries authorized now, by ID (unchanged ones are the caller's own `Arc`s, keyed by
    /// their own shared ID).
    pub entries: BTreeMap<EntryId, Arc<EntryView>>,
    /// How many entries were fetched in full (new or changed).
    pub fetched: usize,
}

/// The entries the agent already holds, looked up by ID: a sync keeps these (the same `Arc`)
/// when the server's revision matches, and fetches the others.
pub type CachedEntries<'a> = &'a (dyn Fn(&str) -> Option<Arc<EntryView>> + Sync);

/// A per-item result of `BatchNewX509SVID`.
pub type SvidResult = Result<IssuedSvid, String>;

/// A connection to the server for an attested agent.
pub struct ServerClient {
    address: String,
    connector: failover::FailoverConnector,
    channel: Mutex<Channel>,
    use_sync_authorized_entries: bool,
}

impl std::fmt::Debug for ServerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerClient")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl ServerClient {
    /// A client for `address` (`host:port`, or several separated by commas) using `tls`;
    /// connects on first use, and fails over between the servers (see [`failover`]).
    pub fn new(
        address: String,
        tls: Arc<rustls::ClientConfig>,
        use_sync_authorized_entries: bool,
    ) -> Result<Self, ClientError> {
        let connector = failover::FailoverConnector::for_address(
            &address,
            tls,
            Arc::new(failover::SystemResolver),
        )?;
        Ok(ServerClient {
            address,
            channel: Mutex::new(connector.channel()),
            connector,
            use_sync_authorized_entries,
        })
    }

    /// Drops the current connection; the next call opens a new one (presenting the current
    /// identity), to the server of the last good connection first.
    pub fn reconnect(&self) {
        *self.channel.lock().unwrap_or_else(PoisonError::into_inner) = self.connector.channel();
    }

    /// The current channel.
    pub fn channel(&self) -> Channel {
        self.channel
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `RenewAgent`: a new agent SVID for the key behind `csr`.
    pub async fn renew_agent(&self, csr: Vec<u8>) -> Result<IssuedSvid, ClientError> {
        const OP: &str = "RenewAgent";
        let mut c = agentpb::agent_client::AgentClient::new(self.channel());
        let r = self
            .timed(OP, async {
                c.renew_agent(agentpb::RenewAgentRequest {
                    params: Some(agentpb::AgentX509svidParams { csr }),
                })
                .await
                .map_err(rpc(OP))
            })
            .await?
            .into_inner();
        IssuedSvid::from_proto(OP, r.svid)
    }

    /// `PostStatus` with the agent version and the bundle's sequence number.
    pub async fn post_status(&self, bundle_serial: u64) -> Result<(), ClientError> {
        const OP: &str = "PostStatus";
        let mut c = agentpb::agent_client::AgentClient::new(self.channel());
        self.timed(OP, async {
            c.post_status(agentpb::PostStatusRequest {
                current_bundle_serial: bundle_serial,
                agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .await
            .map_err(rpc(OP))
        })
        .await?;
        Ok(())
    }

    /// `GetBundle` for the agent's trust domain.
    pub async fn get_bundle(&self) -> Result<Bundle, ClientError> {
        let r = get_bundle_on(self.channel()).await;
        self.after(r)
    }

    /// [`timed`], and a call that times out drops the connection: a server that stopped
    /// answering without closing it (host down, process hung) is left for another at the next
    /// call.
    async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let r = timed(op, fut).await;
        self.after(r)
    }

    fn after<T>(&self, r: Result<T, ClientError>) -> Result<T, ClientError> {
        if let Err(ClientError::Timeout(op)) = &r {
            tracing::warn!(
                op = *op,
                preferred = ?self.connector.preferred(),
                "Server call timed out; dropping the connection"
            );
            self.reconnect();
        }
        r
    }

    /// `GetFederatedBundle`; `Ok(None)` when the server has no bundle for `td`.
    pub async fn get_federated_bundle(
        &self,
        td: &TrustDomain,
    ) -> Result<Option<Bundle>, ClientError> {
        const OP: &str = "GetFederatedBundle";
        let mut c = bundlepb::bundle_client::BundleClient::new(self.channel());
        let r = self
            .timed(OP, async {
                c.get_federated_bundle(bundlepb::GetFederatedBundleRequest {
                    trust_domain: td.to_string(),
                    output_mask: None,
                })
                .await
                .map_err(rpc(OP))
            })
            .await;
        match r {
            Ok(b) => convert::bundle(&b.into_inner())
                .map(Some)
                .map_err(|e| protocol(OP, e)),
            Err(e) if e.code() == Some(tonic::Code::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Syncs the authorized entries against `cached`: `SyncAuthorizedEntries` (only new or
    /// changed entries are fetched in full), or `GetAuthorizedEntries` when disabled or
    /// unimplemented by the server.
    pub async fn sync_entries(
        &self,
        cached: CachedEntries<'_>,
    ) -> Result<SyncedEntries, ClientError> {
        if self.use_sync_authorized_entries {
            match self
                .timed("SyncAuthorizedEntries", self.sync_authorized(cached))
                .await
            {
                Err(e) if e.code() == Some(tonic::Code::Unimplemented) => {
                    tracing::debug!(
                        "SyncAuthorizedEntries unimplemented; using GetAuthorizedEntries"
                    );
                }
                other => return other,
            }
        }
        self.get_authorized(cached).await
    }

    async fn get_authorized(
        &self,
        cached: CachedEntries<'_>,
    ) -> Result<SyncedEntries, ClientError> {
        const OP: &str = "GetAuthorizedEntries";
        let mut c = entrypb::entry_client::EntryClient::new(self.channel());
        let r = self
            .timed(OP, async {
                c.get_authorized_entries(entrypb::GetAuthorizedEntriesRequest { output_mask: None })
                    .await
                    .map_err(rpc(OP))
            })
            .await?
            .into_inner();
        let mut out = SyncedEntries::default();
        merge_full_entries(OP, &r.entries, cached, &mut out);
        Ok(out)
    }

    async fn sync_authorized(
        &self,
        cached: CachedEntries<'_>,
    ) -> Result<SyncedEntries, ClientError> {
        const OP: &str = "SyncAuthorizedEntries";
        let (tx, rx) = tokio::sync::mpsc::channel::<entrypb::SyncAuthorizedEntriesRequest>(4);
        tx.send(entrypb::SyncAuthorizedEntriesRequest {
            output_mask: None,
            ids: Vec::new(),
        })
        .await
        .map_err(|_| protocol(OP, "request stream closed"))?;
        let mut c = entrypb::entry_client::EntryClient::new(self.channel());
        let mut stream = c
            .sync_authorized_entries(ReceiverStream::new(rx))
            .await
            .map_err(rpc(OP))?
            .into_inner();
        let mut out = SyncedEntries::default();
        let first = next_sync_page(&mut stream).await?;
        if first.entry_revisions.is_empty() {
            // Everything fits in one page: the full list.
            merge_full_entries(OP, &first.entries, cached, &mut out);
            return Ok(out);
        }
        let page_size = first.entry_revisions.len();
        let mut need: BTreeSet<String> = BTreeSet::new();
        let mut process = |revs: &[entrypb::EntryRevision], out: &mut SyncedEntries| {
            for r in revs {
                if r.id.is_empty() || r.revision_number < 0 {
                    tracing::warn!(entry_id = %r.id, revision = r.revision_number, "Malformed entry revision from server");
                    continue;
                }
                match cached(&r.id) {
                    Some(e) if !is_stale(&e, r.revision_number, r.created_at) => {
                        out.entries.insert(e.entry_id.clone(), e);
                    }
                    _ => {
                        need.insert(r.id.clone());
                    }
                }
            }
        };
        process(&first.entry_revisions, &mut out);
        let mut more = first.more;
        while more {
            let page = next_sync_page(&mut stream).await?;
            if !page.entries.is_empty() {
                return Err(protocol(OP, "entries while receiving entry revisions"));
            }
            process(&page.entry_revisions, &mut out);
            more = page.more;
        }
        let need: Vec<String> = need.into_iter().collect();
        for chunk in need.chunks(page_size.max(1)) {
            tx.send(entrypb::SyncAuthorizedEntriesRequest {
                output_mask: None,
                ids: chunk.to_vec(),
            })
            .await
            .map_err(|_| protocol(OP, "request stream closed"))?;
            loop {
                let page = next_sync_page(&mut stream).await?;
                if !page.entry_revisions.is_empty() {
                    return Err(protocol(OP, "entry revisions while receiving entries"));
                }
                for e in &page.entries {
                    match convert::entry(e) {
                        Ok(v) => {
                            out.fetched += 1;
                            out.entries.insert(v.entry_id.clone(), Arc::new(v));
                        }
                        Err(reason) => {
                            tracing::warn!(entry_id = %e.id, reason = %reason, "Malformed entry from server");
                        }
                    }
                }
                if !page.more {
                    break;
                }
            }
        }
        drop(tx);
        Ok(out)
    }

    /// `BatchNewX509SVID` for `(entry_id, csr)` pairs, at most [`PAGE_SIZE`] per call. Results
    /// are in request order.
    pub async fn batch_new_x509_svid(
        &self,
        params: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<SvidResult>, ClientError> {
        const OP: &str = "BatchNewX509SVID";
        let mut results = Vec::with_capacity(params.len());
        for chunk in params.chunks(PAGE_SIZE) {
            let mut c = svidpb::svid_client::SvidClient::new(self.channel());
            let req = svidpb::BatchNewX509svidRequest {
                params: chunk
                    .iter()
                    .map(|(id, csr)| svidpb::NewX509svidParams {
                        entry_id: id.clone(),
                        csr: csr.clone(),
                    })
                    .collect(),
            };
            let r = self
                .timed(OP, async {
                    c.batch_new_x509svid(req).await.map_err(rpc(OP))
                })
                .await?
                .into_inner();
            if r.results.len() != chunk.len() {
                return Err(protocol(
                    OP,
                    format!("{} results for {} requests", r.results.len(), chunk.len()),
                ));
            }
            for res in r.results {
                let code = res.status.as_ref().map_or(0, |s| s.code);
                if code != 0 {
                    let msg = res.status.map(|s| s.message).unwrap_or_default();
                    results.push(Err(format!("{msg} (code {code})")));
                    continue;
                }
                results.push(match res.svid {
                    Some(s) => IssuedSvid::from_chain(s.cert_chain),
                    None => Err("no svid in result".into()),
                });
            }
        }
        Ok(results)
    }

    /// `NewJWTSVID` for an entry.
    pub async fn new_jwt_svid(
        &self,
        entry_id: &str,
        audience: Vec<String>,
    ) -> Result<types::Jwtsvid, ClientError> {
        const OP: &str = "NewJWTSVID";
        let mut c = svidpb::svid_client::SvidClient::new(self.channel());
        let r = self
            .timed(OP, async {
                c.new_jwtsvid(svidpb::NewJwtsvidRequest {
                    entry_id: entry_id.to_owned(),
                    audience,
                })
                .await
                .map_err(rpc(OP))
            })
            .await?
            .into_inner();
        r.svid.ok_or_else(|| protocol(OP, "no svid in response"))
    }

    /// Opens the spire-rs `Watch` stream.
    pub async fn watch(
        &self,
        known_revision: u64,
    ) -> Result<tonic::codec::Streaming<watchpb::WatchResponse>, ClientError> {
        const OP: &str = "Watch";
        let mut c = watchpb::watch_client::WatchClient::new(self.channel());
        let r = self
            .timed(OP, async {
                c.watch(watchpb::WatchRequest {
                    known_revision,
                    agent_version: env!("CARGO_PKG_VERSION").to_owned(),
                })
                .await
                .map_err(rpc(OP))
            })
            .await?;
        Ok(r.into_inner())
    }
}

/// The server calls the manager makes, as a trait so the manager can be tested against a
/// fake server. [`ServerClient`] is the real implementation.
pub trait ServerApi: Send + Sync + 'static {
    /// `RenewAgent`.
    fn renew_agent(&self, csr: Vec<u8>) -> BoxFuture<'_, Result<IssuedSvid, ClientError>>;
    /// Entry sync against `cached` (see [`ServerClient::sync_entries`]).
    fn sync_entries<'a>(
        &'a self,
        cached: CachedEntries<'a>,
    ) -> BoxFuture<'a, Result<SyncedEntries, ClientError>>;
    /// `GetBundle`.
    fn get_bundle(&self) -> BoxFuture<'_, Result<Bundle, ClientError>>;
    /// `GetFederatedBundle` (`None` when unknown to the server).
    fn get_federated_bundle<'a>(
        &'a self,
        td: &'a TrustDomain,
    ) -> BoxFuture<'a, Result<Option<Bundle>, ClientError>>;
    /// `BatchNewX509SVID`, results in request order.
    fn batch_new_x509_svid(
        &self,
        params: Vec<(String, Vec<u8>)>,
    ) -> BoxFuture<'_, Result<Vec<SvidResult>, ClientError>>;
    /// `NewJWTSVID`.
    fn new_jwt_svid(
        &self,
        entry_id: String,
        audience: Vec<String>,
    ) -> BoxFuture<'_, Result<types::Jwtsvid, ClientError>>;
    /// The spire-rs `Watch` stream.
    fn watch(&self, known_revision: u64) -> BoxFuture<'_, Result<WatchStream, ClientError>>;
    /// Drops the current connection so the next call presents the current identity.
    fn reconnect(&self);
}

/// The `Watch` stream as the manager consumes it.
pub type WatchStream = BoxStream<'static, Result<watchpb::WatchResponse, tonic::Status>>;

impl ServerApi for ServerClient {
    fn renew_agent(&self, csr: Vec<u8>) -> BoxFuture<'_, Result<IssuedSvid, ClientError>> {
        Box::pin(ServerClient::renew_agent(self, csr))
    }

    fn sync_entries<'a>(
        &'a self,
        cached: CachedEntries<'a>,
    ) -> BoxFuture<'a, Result<SyncedEntries, ClientError>> {
        Box::pin(ServerClient::sync_entries(self, cached))
    }

    fn get_bundle(&self) -> BoxFuture<'_, Result<Bundle, ClientError>> {
        Box::pin(ServerClient::get_bundle(self))
    }

    fn get_federated_bundle<'a>(
        &'a self,
        td: &'a TrustDomain,
    ) -> BoxFuture<'a, Result<Option<Bundle>, ClientError>> {
        Box::pin(ServerClient::get_federated_bundle(self, td))
    }

    fn batch_new_x509_svid(
        &self,
        params: Vec<(String, Vec<u8>)>,
    ) -> BoxFuture<'_, Result<Vec<SvidResult>, ClientError>> {
        Box::pin(ServerClient::batch_new_x509_svid(self, params))
    }

    fn new_jwt_svid(
        &self,
        entry_id: String,
        audience: Vec<String>,
    ) -> BoxFuture<'_, Result<types::Jwtsvid, ClientError>> {
        Box::pin(async move { ServerClient::new_jwt_svid(self, &entry_id, audience).await })
    }

    fn watch(&self, known_revision: u64) -> BoxFuture<'_, Result<WatchStream, ClientError>> {
        Box::pin(async move {
            let s = ServerClient::watch(self, known_revision).await?;
            Ok(Box::pin(s) as WatchStream)
        })
    }

    fn reconnect(&self) {
        ServerClient::reconnect(self);
    }
}

async fn next_sync_page(
    stream: &mut tonic::codec::Streaming<entrypb::SyncAuthorizedEntriesResponse>,
) -> Result<entrypb::SyncAuthorizedEntriesResponse, ClientError> {
    const OP: &str = "SyncAuthorizedEntries";
    stream
        .message()
        .await
        .map_err(rpc(OP))?
        .ok_or_else(|| protocol(OP, "stream ended early"))
}

/// SPIRE's staleness rule: a different revision, or (when the server sends it) a different
/// creation time, which means the entry was deleted and re-created with the same ID.
fn is_stale(e: &EntryView, revision: i64, created_at: i64) -> bool {
    e.revision_number != revision || (created_at != 0 && e.created_at != created_at)
}

fn merge_full_entries(
    op: &'static str,
    entries: &[types::Entry],
    cached: CachedEntries<'_>,
    out: &mut SyncedEntries,
) {
    for e in entries {
        match convert::entry(e) {
            Ok(v) => {
                let keep = cached(&v.entry_id).filter(|c| **c == v);
                let arc = match keep {
                    Some(c) => c,
                    None => {
                        out.fetched += 1;
                        Arc::new(v)
                    }
                };
                out.entries.insert(arc.entry_id.clone(), arc);
            }
            Err(reason) => {
                tracing::warn!(op, entry_id = %e.id, reason = %reason, "Malformed entry from server");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_follows_revision_and_creation_time() {
        let e = EntryView {
            entry_id: "a".into(),
            spiffe_id: "spiffe://td/w".parse().unwrap(),
            parent_id: "spiffe://td/p".parse().unwrap(),
            selectors: Default::default(),
            federates_with: vec![],
            hint: String::new(),
            created_at: 100,
            revision_number: 2,
            x509_svid_ttl: 0,
            jwt_svid_ttl: 0,
            jwt_svid_include_jti: false,
            disable_x509_svid_prefetch: false,
            admin: false,
            downstream: false,
        };
        assert!(!is_stale(&e, 2, 100));
        assert!(!is_stale(&e, 2, 0));
        assert!(is_stale(&e, 3, 100));
        assert!(is_stale(&e, 2, 101));
    }
}
