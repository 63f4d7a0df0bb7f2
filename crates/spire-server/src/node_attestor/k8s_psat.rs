//! Server side of `k8s_psat`: wraps [`spire_plugin_k8s::PsatServer`] (TokenReview, service
//! account allow list, pod and node lookup) and maps its refusals to gRPC statuses.

use spire_plugin_k8s::{FailureKind, PsatServer, PsatServerConfig};
use spire_spiffe::TrustDomain;

use super::AttestResult;

/// The attestation type.
pub const NAME: &str = spire_plugin_k8s::psat::NAME;

/// The configured `NodeAttestor "k8s_psat"`.
#[derive(Debug)]
pub struct K8sPsat(PsatServer);

impl K8sPsat {
    /// Builds the attestor from its decoded `plugin_data`.
    pub fn new(config: PsatServerConfig) -> Result<Self, String> {
        PsatServer::new(config).map(Self).map_err(|e| e.to_string())
    }

    /// Attests an agent from its `AttestAgent` payload. Agents may re-attest.
    pub async fn attest(
        &self,
        td: &TrustDomain,
        payload: &[u8],
    ) -> Result<AttestResult, tonic::Status> {
        match self.0.attest(td, payload).await {
            Ok(a) => Ok(AttestResult {
                agent_id: a.agent_id,
                selectors: a.selectors,
                can_reattest: true,
            }),
            Err(e) => {
                let msg = format!("failed to attest: {e}");
                tracing::warn!(error = %e, "k8s_psat attestation refused");
                Err(match e.kind() {
                    FailureKind::InvalidArgument => tonic::Status::invalid_argument(msg),
                    FailureKind::PermissionDenied => tonic::Status::permission_denied(msg),
                    FailureKind::Internal => tonic::Status::internal(msg),
                })
            }
        }
    }
}
