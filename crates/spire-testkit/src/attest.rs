//! An agent's side of a SPIRE server's TCP API, driven by the test: an mTLS channel that
//! verifies the server's SVID, and `AttestAgent` run step by step as SPIRE's agent runs it
//! (parameters with a CSR, then one answer per challenge, then the result).
//!
//! The server is a fixture: a channel that cannot be built, or a response that breaks the
//! protocol (a step missing, a result without an SVID), is a panic; the server's refusals come
//! back as a [`tonic::Status`] for the test to check.

use std::sync::Arc;

use spire_crypto::{KeyType, PrivateKey};
use spire_proto::server::agent as apb;
use spire_proto::types;
use spire_spiffe::{SpiffeId, SystemClock, TrustDomain};
use spire_tls::{BundleSet, ClientOptions, Identity, PeerMatcher, ServerAuth, SharedIdentity};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::Channel;

/// An mTLS channel to the SPIRE server at `addr` of trust domain `td`, whose SVID is verified
/// against `bundles`; `identity` is the client certificate (none: anonymous TLS, as for
/// attestation). Panics when `td` is not a trust domain or the server cannot be reached.
pub async fn tls_channel(
    addr: &str,
    td: &str,
    bundles: BundleSet,
    identity: Option<Identity>,
) -> Channel {
    let td: TrustDomain = td
        .parse()
        .unwrap_or_else(|e| panic!("trust domain {td:?}: {e}"));
    let cfg = spire_tls::client_config(
        ServerAuth::Verify {
            bundles,
            expected: PeerMatcher::SpireServer(td),
        },
        ClientOptions {
            identity: identity.map_or_else(SharedIdentity::empty, SharedIdentity::new),
            clock: Arc::new(SystemClock),
        },
    )
    .unwrap_or_else(|e| panic!("TLS client config: {e}"));
    spire_tls::connect(addr, cfg)
        .await
        .unwrap_or_else(|e| panic!("TLS channel to {addr}: {e}"))
}

/// An agent attested by [`attest`]: its key, its SVID chain (leaf first) and whether the
/// server lets it re-attest.
pub struct AttestedAgent {
    pub key: PrivateKey,
    pub chain: Vec<Vec<u8>>,
    pub reattestable: bool,
}

impl AttestedAgent {
    /// The SPIFFE ID of the agent's SVID (panics on a leaf without one).
    pub fn id(&self) -> SpiffeId {
        spire_crypto::spiffe_id_from_cert(&self.chain[0])
            .unwrap_or_else(|e| panic!("agent SVID without a SPIFFE ID: {e}"))
    }

    /// The SVID and key as a TLS client identity.
    pub fn identity(&self) -> Identity {
        let key = self
            .key
            .to_pkcs8_der()
            .unwrap_or_else(|e| panic!("agent key as PKCS#8: {e}"));
        Identity::from_der(self.chain.clone(), key.to_vec())
            .unwrap_or_else(|e| panic!("agent identity: {e}"))
    }

    /// The serial number of the agent's SVID, in decimal.
    pub fn serial(&self) -> String {
        let (_, cert) = x509_parser::parse_x509_certificate(&self.chain[0])
            .unwrap_or_else(|e| panic!("agent SVID: {e}"));
        cert.tbs_certificate.serial.to_string()
    }
}

/// Runs `AttestAgent` over `channel` with attestation data of type `kind` and a CSR for a
/// fresh P-256 key; `answer` computes the response to each challenge (an error ends the
/// attestation with it).
pub async fn attest(
    channel: Channel,
    kind: &str,
    payload: Vec<u8>,
    answer: impl Fn(&[u8]) -> Result<Vec<u8>, Status>,
) -> Result<AttestedAgent, Status> {
    let key = PrivateKey::generate(KeyType::EcP256)
        .unwrap_or_else(|e| panic!("agent key generation: {e}"));
    let csr = spire_crypto::create_csr(&key, None).unwrap_or_else(|e| panic!("agent CSR: {e}"));
    attest_with_csr(channel, kind, payload, (csr, key), answer).await
}

/// Like [`attest`], with a CSR the caller made (`csr_and_key`: the CSR and the key the agent
/// keeps).
pub async fn attest_with_csr(
    channel: Channel,
    kind: &str,
    payload: Vec<u8>,
    csr_and_key: (Vec<u8>, PrivateKey),
    answer: impl Fn(&[u8]) -> Result<Vec<u8>, Status>,
) -> Result<AttestedAgent, Status> {
    let (csr, key) = csr_and_key;
    let mut client = apb::agent_client::AgentClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    let params = apb::AttestAgentRequest {
        step: Some(apb::attest_agent_request::Step::Params(
            apb::attest_agent_request::Params {
                data: Some(types::AttestationData {
                    r#type: kind.into(),
                    payload,
                }),
                params: Some(apb::AgentX509svidParams { csr }),
            },
        )),
    };
    // The receiver is alive until the call below takes it: the first send cannot fail.
    let _ = tx.send(params).await;
    let mut stream = client
        .attest_agent(ReceiverStream::new(rx))
        .await?
        .into_inner();
    loop {
        let msg = stream
            .message()
            .await?
            .ok_or_else(|| Status::internal("stream ended early"))?;
        match msg.step {
            Some(apb::attest_agent_response::Step::Challenge(c)) => {
                let response = apb::AttestAgentRequest {
                    step: Some(apb::attest_agent_request::Step::ChallengeResponse(answer(
                        &c,
                    )?)),
                };
                tx.send(response)
                    .await
                    .unwrap_or_else(|_| panic!("the attestation stream closed before a response"));
            }
            Some(apb::attest_agent_response::Step::Result(r)) => {
                let svid = r
                    .svid
                    .unwrap_or_else(|| panic!("attestation result without an SVID"));
                return Ok(AttestedAgent {
                    key,
                    chain: svid.cert_chain,
                    reattestable: r.reattestable,
                });
            }
            None => panic!("attestation response without a step"),
        }
    }
}
