//! SPIRE's agent Debug API (`spire.agent.debug.v1.Debug/GetInfo`) on the admin socket
//! (`spire-agent debug getinfo`).
//!
//! Reports, as SPIRE fills them: the agent's X509-SVID chain verified against the local bundle
//! (leaf first, the root that anchors it last), uptime in seconds, the number of cached
//! workload X509-SVIDs (also in the deprecated `svids_count`), cached JWT-SVIDs, SVIDStore
//! SVIDs (always 0: spire-rs has no SVIDStore plugins) and the time of the last successful sync.
//! Like SPIRE, an answer is reused for 5 seconds.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use spire_proto::agent::debug as pb;
use spire_proto::agent::debug::debug_server::{Debug, DebugServer};
use spire_proto::types;
use spire_spiffe::Clock;
use spire_tls::SharedIdentity;
use tonic::{Request, Response, Status};

use super::workload::WorkloadState;
use crate::identity::AgentStatus;

/// How long one answer is reused (SPIRE's cache expiry).
const CACHE_EXPIRY: Duration = Duration::from_secs(5);

/// The Debug service.
#[derive(Clone)]
pub struct DebugService {
    state: Arc<WorkloadState>,
    identity: Option<SharedIdentity>,
    status: Arc<AgentStatus>,
    clock: Arc<dyn Clock>,
    cached: Arc<Mutex<Option<(SystemTime, pb::GetInfoResponse)>>>,
}

impl DebugService {
    /// A service reporting `identity` (the agent's SVID slot; `None` → empty chain) and
    /// `status`, with the workload state's snapshots and JWT cache.
    pub fn new(
        state: Arc<WorkloadState>,
        identity: Option<SharedIdentity>,
        status: Arc<AgentStatus>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            state,
            identity,
            status,
            clock,
            cached: Arc::new(Mutex::new(None)),
        }
    }

    /// Wraps it for tonic.
    pub fn into_server(self) -> DebugServer<Self> {
        DebugServer::new(self)
    }

    /// The agent's chain verified against the local bundle, with the anchoring root appended.
    fn svid_chain(&self, now: SystemTime) -> Result<Vec<pb::get_info_response::Cert>, Status> {
        let Some(identity) = self.identity.as_ref().and_then(SharedIdentity::load) else {
            return Ok(Vec::new());
        };
        let mut chain: Vec<Vec<u8>> = identity
            .cert_chain()
            .iter()
            .map(|c| c.as_ref().to_vec())
            .collect();
        let snap = self.state.snapshots.borrow().clone();
        if let Some(bundle) = &snap.bundle {
            spire_crypto::validate_x509_svid(&chain, &bundle.bundle, now).map_err(|e| {
                tracing::error!(error = %e, "failed to verify agent svid");
                Status::internal(format!("failed to verify agent SVID: {e}"))
            })?;
            if let Some(root) = chain
                .last()
                .and_then(|last| anchoring_root(last, &bundle.x509_authorities))
                && chain.last() != Some(&root)
            {
                chain.push(root);
            }
        }
        chain
            .iter()
            .map(|der| {
                let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| {
                    Status::internal(format!("cannot parse agent certificate: {e}"))
                })?;
                let id = spire_crypto::spiffe_id_from_cert(der).ok();
                Ok(pb::get_info_response::Cert {
                    id: id.map(|id| types::Spiffeid {
                        trust_domain: id.trust_domain().as_str().to_owned(),
                        path: id.path().to_owned(),
                    }),
                    expires_at: cert.validity().not_after.timestamp(),
                    subject: go_dn(cert.subject()),
                })
            })
            .collect()
    }

    fn compute(&self, now: SystemTime) -> Result<pb::GetInfoResponse, Status> {
        let svid_chain = self.svid_chain(now)?;
        let snap = self.state.snapshots.borrow().clone();
        let x509 = snap
            .identities
            .values()
            .filter(|id| id.svid.is_some())
            .count();
        let uptime = now
            .duration_since(self.status.started_at())
            .unwrap_or_default()
            .as_secs();
        let to_i32 = |n: u64, what: &str| {
            i32::try_from(n).map_err(|_| Status::internal(format!("out of range value for {what}")))
        };
        let x509 = to_i32(x509 as u64, "X.509 SVIDs count")?;
        #[expect(deprecated, reason = "SPIRE still fills the superseded svids_count")]
        let resp = pb::GetInfoResponse {
            svid_chain,
            uptime: to_i32(uptime, "uptime")?,
            svids_count: x509,
            last_sync_success: self
                .status
                .last_sync_success()
                .map_or(0, spire_spiffe::to_unix_secs),
            cached_x509_svids_count: x509,
            cached_jwt_svids_count: to_i32(
                self.state.jwt.cached_count() as u64,
                "JWT SVIDs count",
            )?,
            cached_svidstore_x509_svids_count: 0,
        };
        Ok(resp)
    }
}

/// The authority in `roots` that issued `cert` (same subject as its issuer, and its signature
/// checks out), if any.
fn anchoring_root(cert: &[u8], roots: &[Vec<u8>]) -> Option<Vec<u8>> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    roots
        .iter()
        .find(|r| {
            x509_parser::parse_x509_certificate(r).is_ok_and(|(_, root)| {
                root.subject().as_raw() == c.issuer().as_raw()
                    && c.verify_signature(Some(root.public_key())).is_ok()
            })
        })
        .cloned()
}

/// A distinguished name as Go's `pkix.Name.String()` prints it: RDNs in reverse order,
/// comma-separated, attributes of one RDN joined by `+`.
fn go_dn(name: &x509_parser::x509::X509Name<'_>) -> String {
    let short = |oid: &x509_parser::der_parser::oid::Oid<'_>| -> Option<&'static str> {
        Some(match oid.to_id_string().as_str() {
            "2.5.4.6" => "C",
            "2.5.4.10" => "O",
            "2.5.4.11" => "OU",
            "2.5.4.3" => "CN",
            "2.5.4.5" => "SERIALNUMBER",
            "2.5.4.7" => "L",
            "2.5.4.8" => "ST",
            "2.5.4.9" => "STREET",
            "2.5.4.17" => "POSTALCODE",
            _ => return None,
        })
    };
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let value = atv
                        .as_str()
                        .map(escape_dn)
                        .unwrap_or_else(|_| format!("#{}", hex::encode(atv.attr_value().data)));
                    match short(atv.attr_type()) {
                        Some(s) => format!("{s}={value}"),
                        None => format!("{}={value}", atv.attr_type().to_id_string()),
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// RFC 4514 escaping of an attribute value.
fn escape_dn(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, ch) in v.chars().enumerate() {
        let special = matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(ch, ' ' | '#'))
            || (i == last && ch == ' ');
        if special {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[tonic::async_trait]
impl Debug for DebugService {
    async fn get_info(
        &self,
        _request: Request<pb::GetInfoRequest>,
    ) -> Result<Response<pb::GetInfoResponse>, Status> {
        let now = self.clock.now();
        {
            let cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, resp)) = cached.as_ref()
                && now.duration_since(*at).is_ok_and(|age| age < CACHE_EXPIRY)
            {
                return Ok(Response::new(resp.clone()));
            }
        }
        let resp = self.compute(now)?;
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = Some((now, resp.clone()));
        Ok(Response::new(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinguished_names_print_as_go_does() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CountryName, "US");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "SPIRE, Inc");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "agent");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
        assert_eq!(go_dn(parsed.subject()), r"CN=agent,O=SPIRE\, Inc,C=US");
    }

    #[test]
    fn the_root_is_found_by_issuer_and_signature() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "root");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["x".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        // Another CA with the same name but another key is not the anchor.
        let other_key = rcgen::KeyPair::generate().unwrap();
        let other = ca.self_signed(&other_key).unwrap();
        let roots = vec![other.der().to_vec(), ca_cert.der().to_vec()];
        assert_eq!(
            anchoring_root(leaf.der(), &roots),
            Some(ca_cert.der().to_vec())
        );
        assert_eq!(anchoring_root(leaf.der(), &roots[..1]), None);
    }
}
