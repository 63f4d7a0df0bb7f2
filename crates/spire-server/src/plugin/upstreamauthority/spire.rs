//! `UpstreamAuthority "spire"`: nested SPIRE. The server's CA is an intermediate signed by an
//! upstream SPIRE server of the same trust domain.
//!
//! - The server's identity toward the upstream is an X509-SVID from the Workload API of a
//!   co-located agent of the upstream (`workload_api_socket`), named by an entry created
//!   upstream with `-downstream`. The SVID stream is followed, so a rotated SVID is used on the
//!   next handshake.
//! - The upstream (`server_address:server_port`) is reached over mutual TLS with that SVID; its
//!   certificate must validate against the bundle the Workload API delivers and name
//!   `spiffe://<trust domain>/spire/server`.
//! - A new CA: a CSR signed by the CA key goes to `SVID.NewDownstreamX509CA`; the answer's chain
//!   must start with a CA certificate for that key and end at one of the returned roots.
//! - A new JWT key goes to `Bundle.PublishJWTAuthority` before it signs anything.
//! - The upstream bundle is read with `Bundle.GetBundle` whenever the CA manager polls.
//!
//! Nothing connects until the first call, so building the plugin (config validation) does no
//! I/O. Mirrors `pkg/server/plugin/upstreamauthority/spire` (same `plugin_data` keys).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use spire_crypto::Signer;
use spire_crypto::x509::CaTemplate;
use spire_datastore as ds;
use spire_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use spire_spiffe::{SpiffeId, SystemClock, TrustDomain};
use spire_tls::{BundleSet, ClientOptions, Identity, PeerMatcher, ServerAuth, SharedIdentity};
use tokio::net::UnixStream;
use tokio::sync::{OnceCell, watch};
use tonic::transport::{Channel, Endpoint};

use super::{MintedCa, UpstreamAuthority, UpstreamError};
use crate::pb::{bundle as bpb, svid as spb, types};

/// How long a call waits for the first X509-SVID from the Workload API.
const SVID_WAIT: Duration = Duration::from_secs(120);
/// Deadline of each RPC to the upstream server.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest pause between two Workload API reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The metadata header the Workload API requires.
const SECURITY_HEADER: &str = "workload.spiffe.io";

/// The `spire` upstream authority.
pub struct SpireUpstreamAuthority {
    server_address: String,
    workload_api_socket: PathBuf,
    trust_domain: TrustDomain,
    session: OnceCell<Session>,
}

impl fmt::Debug for SpireUpstreamAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpireUpstreamAuthority")
            .field("server_address", &self.server_address)
            .field("workload_api_socket", &self.workload_api_socket)
            .finish_non_exhaustive()
    }
}

/// The live connection: our SVID and bundle (followed from the Workload API) and the channel to
/// the upstream server.
struct Session {
    identity: SharedIdentity,
    ready: watch::Receiver<bool>,
    channel: Channel,
    follower: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl SpireUpstreamAuthority {
    /// Builds the plugin from its `plugin_data` (`server_address`, `server_port`,
    /// `workload_api_socket`, all strings as in SPIRE; the port may also be a number).
    pub fn from_plugin_data(
        data: &serde_json::Value,
        trust_domain: TrustDomain,
    ) -> Result<Self, String> {
        let obj = data.as_object().ok_or("plugin_data must be a block")?;
        let mut address = None;
        let mut port = None;
        let mut socket = None;
        for (k, v) in obj {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) if k == "server_port" => n.to_string(),
                _ => return Err(format!("{k} must be a string")),
            };
            match k.as_str() {
                "server_address" => address = Some(text),
                "server_port" => port = Some(text),
                "workload_api_socket" => socket = Some(text),
                other => {
                    return Err(format!(
                        "unknown configuration key {other:?} (expected server_address, server_port, workload_api_socket)"
                    ));
                }
            }
        }
        let address = address
            .filter(|a| !a.is_empty())
            .ok_or("server_address is required")?;
        let port = port
            .filter(|p| !p.is_empty())
            .ok_or("server_port is required")?;
        port.parse::<u16>()
            .map_err(|_| format!("server_port {port:?} is not a port number"))?;
        let socket = socket
            .filter(|s| !s.is_empty())
            .ok_or("workload_api_socket is required")?;
        let socket = socket.strip_prefix("unix://").unwrap_or(&socket);
        // An IPv6 literal needs brackets in host:port.
        let host = if address.contains(':') && !address.starts_with('[') {
            format!("[{address}]")
        } else {
            address
        };
        Ok(SpireUpstreamAuthority {
            server_address: format!("{host}:{port}"),
            workload_api_socket: PathBuf::from(socket),
            trust_domain,
            session: OnceCell::new(),
        })
    }

    /// The upstream server's address, `host:port`.
    pub fn server_address(&self) -> &str {
        &self.server_address
    }

    async fn session(&self) -> Result<&Session, UpstreamError> {
        let session = self
            .session
            .get_or_try_init(|| async {
                let identity = SharedIdentity::empty();
                let bundles = BundleSet::new();
                let (ready_tx, ready) = watch::channel(false);
                let follower = tokio::spawn(follow_workload_api(
                    self.workload_api_socket.clone(),
                    self.trust_domain.clone(),
                    identity.clone(),
                    bundles.clone(),
                    ready_tx,
                ));
                let config = spire_tls::client_config(
                    ServerAuth::Verify {
                        bundles,
                        expected: PeerMatcher::SpireServer(self.trust_domain.clone()),
                    },
                    ClientOptions {
                        identity: identity.clone(),
                        clock: Arc::new(SystemClock),
                    },
                )
                .map_err(|e| UpstreamError::Unavailable {
                    what: "cannot build the TLS client configuration",
                    reason: e.to_string(),
                })?;
                let channel =
                    spire_tls::connect_lazy(&self.server_address, config).map_err(|e| {
                        UpstreamError::Unavailable {
                            what: "invalid upstream server address",
                            reason: e.to_string(),
                        }
                    })?;
                Ok::<_, UpstreamError>(Session {
                    identity,
                    ready,
                    channel,
                    follower,
                })
            })
            .await?;
        let mut ready = session.ready.clone();
        let waited = tokio::time::timeout(SVID_WAIT, ready.wait_for(|r| *r)).await;
        match waited {
            Ok(Ok(_)) => Ok(session),
            _ => Err(UpstreamError::Unavailable {
                what: "no X509-SVID from the Workload API",
                reason: format!(
                    "nothing received on {} within {}s: is the agent running and is there a downstream entry for this server?",
                    self.workload_api_socket.display(),
                    SVID_WAIT.as_secs()
                ),
            }),
        }
    }

    /// The SPIFFE ID this server presents upstream, once the Workload API delivered one.
    pub fn current_identity(&self) -> Option<SpiffeId> {
        self.session
            .get()
            .and_then(|s| s.identity.load())
            .map(|i| i.spiffe_id().clone())
    }
}

fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(RPC_TIMEOUT);
    r
}

fn rpc_error(what: &'static str) -> impl FnOnce(tonic::Status) -> UpstreamError {
    move |s| UpstreamError::Unavailable {
        what,
        reason: format!("{:?}: {}", s.code(), s.message()),
    }
}

#[tonic::async_trait]
impl UpstreamAuthority for SpireUpstreamAuthority {
    async fn mint_x509_ca(
        &self,
        signer: &Arc<dyn Signer>,
        template: &CaTemplate,
        _now: SystemTime,
    ) -> Result<MintedCa, UpstreamError> {
        let session = self.session().await?;
        let csr = spire_crypto::csr::create_csr(signer.as_ref(), None).map_err(|e| {
            UpstreamError::Unavailable {
                what: "cannot build the CA CSR",
                reason: e.to_string(),
            }
        })?;
        let mut client = spb::svid_client::SvidClient::new(session.channel.clone());
        let resp = client
            .new_downstream_x509ca(request(spb::NewDownstreamX509caRequest {
                csr,
                preferred_ttl: i32::try_from(template.ttl.as_secs()).unwrap_or(i32::MAX),
            }))
            .await
            .map_err(rpc_error("NewDownstreamX509CA failed"))?
            .into_inner();
        let minted = check_minted(
            resp.ca_cert_chain,
            resp.x509_authorities,
            signer.public_key().spki_der(),
        )?;
        tracing::info!(
            upstream = %self.server_address,
            upstream_authority_id = %minted.upstream_authority_id,
            "Downstream X509 CA minted by the upstream server"
        );
        Ok(minted)
    }

    async fn publish_jwt_key(
        &self,
        key: &ds::JwtAuthority,
    ) -> Result<Option<Vec<ds::JwtAuthority>>, UpstreamError> {
        let session = self.session().await?;
        let mut client = bpb::bundle_client::BundleClient::new(session.channel.clone());
        let resp = client
            .publish_jwt_authority(request(bpb::PublishJwtAuthorityRequest {
                jwt_authority: Some(types::JwtKey {
                    public_key: key.public_key.clone(),
                    key_id: key.key_id.clone(),
                    expires_at: key.expires_at,
                    tainted: false,
                }),
            }))
            .await
            .map_err(rpc_error("PublishJWTAuthority failed"))?
            .into_inner();
        let keys = crate::api::convert::jwt_authorities_from_proto(&resp.jwt_authorities).map_err(
            |e| UpstreamError::BadResponse {
                what: "PublishJWTAuthority answer",
                reason: e.0,
            },
        )?;
        if !keys.iter().any(|k| k.key_id == key.key_id) {
            return Err(UpstreamError::BadResponse {
                what: "PublishJWTAuthority answer",
                reason: format!("the published key {:?} is missing", key.key_id),
            });
        }
        tracing::info!(upstream = %self.server_address, authority_id = %key.key_id, "JWT key published upstream");
        Ok(Some(keys))
    }

    fn follows_bundle(&self) -> bool {
        true
    }

    async fn fetch_bundle(&self) -> Result<Option<ds::Bundle>, UpstreamError> {
        let session = self.session().await?;
        let mut client = bpb::bundle_client::BundleClient::new(session.channel.clone());
        let resp = client
            .get_bundle(request(bpb::GetBundleRequest { output_mask: None }))
            .await
            .map_err(rpc_error("GetBundle failed"))?
            .into_inner();
        let bundle = crate::api::convert::bundle_from_proto(&resp).map_err(|e| {
            UpstreamError::BadResponse {
                what: "upstream bundle",
                reason: e.0,
            }
        })?;
        if bundle.trust_domain != self.trust_domain {
            return Err(UpstreamError::BadResponse {
                what: "upstream bundle",
                reason: format!(
                    "it is for trust domain {}, this server is in {}",
                    bundle.trust_domain, self.trust_domain
                ),
            });
        }
        Ok(Some(bundle))
    }
}

/// Checks a NewDownstreamX509CA answer: every certificate parses, the first is a CA for our key,
/// each is signed by the next, and the last is signed by one of the roots.
fn check_minted(
    chain: Vec<Vec<u8>>,
    roots: Vec<Vec<u8>>,
    our_spki: &[u8],
) -> Result<MintedCa, UpstreamError> {
    let bad = |reason: String| UpstreamError::BadResponse {
        what: "NewDownstreamX509CA answer",
        reason,
    };
    if chain.is_empty() {
        return Err(bad("empty CA chain".into()));
    }
    if roots.is_empty() {
        return Err(bad("no X.509 authorities".into()));
    }
    fn parse<'a>(
        der: &'a [u8],
        what: String,
    ) -> Result<x509_parser::certificate::X509Certificate<'a>, String> {
        x509_parser::parse_x509_certificate(der)
            .map(|(_, c)| c)
            .map_err(|e| format!("{what} is not a certificate: {e}"))
    }
    let parsed_chain = chain
        .iter()
        .enumerate()
        .map(|(i, der)| parse(der, format!("chain certificate {i}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let parsed_roots = roots
        .iter()
        .enumerate()
        .map(|(i, der)| parse(der, format!("authority {i}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let ca = &parsed_chain[0];
    if !ca.is_ca() {
        return Err(bad("the first certificate is not a CA".into()));
    }
    if ca.public_key().raw != our_spki {
        return Err(bad(
            "the CA certificate does not carry the key of the CSR".into()
        ));
    }
    for pair in parsed_chain.windows(2) {
        if pair[0]
            .verify_signature(Some(pair[1].public_key()))
            .is_err()
        {
            return Err(bad("the chain is not in issuing order".into()));
        }
    }
    let last = &parsed_chain[parsed_chain.len() - 1];
    if !parsed_roots
        .iter()
        .any(|r| last.verify_signature(Some(r.public_key())).is_ok())
    {
        return Err(bad(
            "the chain does not end at one of the returned authorities".into(),
        ));
    }
    let upstream_authority_id = ca
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| hex::encode(k.0))
            }
            _ => None,
        })
        .unwrap_or_default();
    let mut chain = chain.into_iter();
    let ca_cert = chain.next().unwrap_or_default();
    Ok(MintedCa {
        ca_cert,
        upstream_chain: chain.collect(),
        roots,
        upstream_authority_id,
    })
}

/// Follows `FetchX509SVID` on the Workload API for as long as the session lives, reconnecting
/// with backoff: the first SVID of each answer becomes our identity, its bundle our roots.
async fn follow_workload_api(
    socket: PathBuf,
    trust_domain: TrustDomain,
    identity: SharedIdentity,
    bundles: BundleSet,
    ready: watch::Sender<bool>,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match fetch_x509_stream(&socket, &trust_domain, &identity, &bundles, &ready).await {
            Ok(()) => {
                tracing::warn!(socket = %socket.display(), "Workload API stream ended; reconnecting");
            }
            Err(e) => {
                tracing::warn!(socket = %socket.display(), error = %e, "Workload API unavailable; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn fetch_x509_stream(
    socket: &Path,
    trust_domain: &TrustDomain,
    identity: &SharedIdentity,
    bundles: &BundleSet,
    ready: &watch::Sender<bool>,
) -> Result<(), String> {
    let path = socket.to_path_buf();
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut client = SpiffeWorkloadApiClient::new(channel);
    let mut req = tonic::Request::new(spire_proto::workload::X509svidRequest {});
    req.metadata_mut().insert(
        SECURITY_HEADER,
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let mut stream = client
        .fetch_x509svid(req)
        .await
        .map_err(|s| format!("FetchX509SVID: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    while let Some(resp) = stream
        .message()
        .await
        .map_err(|s| format!("FetchX509SVID: {:?}: {}", s.code(), s.message()))?
    {
        let Some(svid) = resp.svids.first() else {
            continue;
        };
        let chain = split_der(&svid.x509_svid)?;
        let roots = split_der(&svid.bundle)?;
        let id = Identity::from_der(chain, svid.x509_svid_key.clone())
            .map_err(|e| format!("unusable X509-SVID: {e}"))?;
        if id.spiffe_id().trust_domain() != trust_domain {
            return Err(format!(
                "the Workload API issued {} outside trust domain {trust_domain}",
                id.spiffe_id()
            ));
        }
        bundles
            .set_roots(trust_domain.clone(), roots)
            .map_err(|e| format!("unusable bundle: {e}"))?;
        tracing::info!(spiffe_id = %id.spiffe_id(), "X509-SVID received from the Workload API");
        identity.store(id);
        ready.send_replace(true);
    }
    Ok(())
}

/// Splits concatenated DER certificates.
fn split_der(mut der: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !der.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("malformed certificate: {e}"))?;
        out.push(der[..der.len() - rest.len()].to_vec());
        der = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use spire_crypto::x509::CaSubject;
    use spire_crypto::{KeyType, PrivateKey};

    fn td() -> TrustDomain {
        "example.org".parse().unwrap()
    }

    #[test]
    fn plugin_data_as_spire() {
        let data = serde_json::json!({
            "server_address": "upstream.example",
            "server_port": "8081",
            "workload_api_socket": "/tmp/agent.sock",
        });
        let p = SpireUpstreamAuthority::from_plugin_data(&data, td()).unwrap();
        assert_eq!(p.server_address(), "upstream.example:8081");
        assert_eq!(p.workload_api_socket, PathBuf::from("/tmp/agent.sock"));
        let v6 = serde_json::json!({
            "server_address": "::1",
            "server_port": 8081,
            "workload_api_socket": "unix:///tmp/a.sock",
        });
        let p = SpireUpstreamAuthority::from_plugin_data(&v6, td()).unwrap();
        assert_eq!(p.server_address(), "[::1]:8081");
        assert_eq!(p.workload_api_socket, PathBuf::from("/tmp/a.sock"));
        for (bad, want) in [
            (
                serde_json::json!({"server_port": "1", "workload_api_socket": "/s"}),
                "server_address is required",
            ),
            (
                serde_json::json!({"server_address": "h", "server_port": "x", "workload_api_socket": "/s"}),
                "not a port number",
            ),
            (
                serde_json::json!({"server_address": "h", "server_port": "1"}),
                "workload_api_socket is required",
            ),
            (
                serde_json::json!({"server_address": "h", "server_port": "1", "workload_api_socket": "/s", "x": "y"}),
                "unknown configuration key",
            ),
        ] {
            let e = SpireUpstreamAuthority::from_plugin_data(&bad, td()).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    fn template() -> CaTemplate {
        CaTemplate {
            trust_domain: td(),
            subject: CaSubject::default(),
            ttl: Duration::from_secs(3600),
        }
    }

    fn new_root() -> spire_crypto::x509::X509Authority {
        let key: Arc<dyn Signer> = Arc::new(PrivateKey::generate(KeyType::EcP256).unwrap());
        spire_crypto::x509::self_signed_ca(key, &template(), SystemTime::now()).unwrap()
    }

    #[test]
    fn minted_chain_is_checked() {
        let root = new_root();
        let root_der = root.cert_der().to_vec();
        let ours = PrivateKey::generate(KeyType::EcP256).unwrap();
        let cert = root
            .sign_intermediate_ca(ours.public_key(), &template(), SystemTime::now())
            .unwrap();
        let spki = ours.public_key().spki_der();

        let m = check_minted(vec![cert.clone()], vec![root_der.clone()], spki).unwrap();
        assert_eq!(m.ca_cert, cert);
        assert!(m.upstream_chain.is_empty());
        assert_eq!(m.roots, vec![root_der.clone()]);
        assert_eq!(m.upstream_authority_id, hex::encode(root.subject_key_id()));

        // Wrong key, foreign root, empty answers.
        let other = PrivateKey::generate(KeyType::EcP256).unwrap();
        let e = check_minted(
            vec![cert.clone()],
            vec![root_der.clone()],
            other.public_key().spki_der(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("key of the CSR"), "{e}");
        let foreign = new_root().cert_der().to_vec();
        let e = check_minted(vec![cert.clone()], vec![foreign], spki).unwrap_err();
        assert!(e.to_string().contains("does not end at"), "{e}");
        assert!(check_minted(vec![], vec![root_der.clone()], spki).is_err());
        assert!(check_minted(vec![cert], vec![], spki).is_err());
    }
}
