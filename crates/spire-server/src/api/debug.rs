//! `spire.api.server.debug.v1.Debug`: GetInfo (local only).
//!
//! Mirrors `pkg/server/api/debug/v1/service.go`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Ctx, Policy};
use crate::pb::debug as pb;
use crate::pb::types;
use crate::server::ServerState;

/// The Debug service.
#[derive(Debug, Clone)]
pub struct DebugService {
    state: Arc<ServerState>,
}

impl DebugService {
    /// A service over `state`.
    pub fn new(state: Arc<ServerState>) -> Self {
        DebugService { state }
    }
}

fn internal(what: &str, e: spire_datastore::Error) -> Status {
    crate::api::datastore_status(what, &e)
}

#[tonic::async_trait]
impl pb::debug_server::Debug for DebugService {
    async fn get_info(
        &self,
        request: Request<pb::GetInfoRequest>,
    ) -> Result<Response<pb::GetInfoResponse>, Status> {
        let ctx = Ctx::new(&self.state, &request, "GetInfo", Policy::Local)?;
        let result = async {
            let ds = &ctx.state.datastore;
            let agents = ds
                .count_attested_nodes(&Default::default())
                .await
                .map_err(|e| internal("failed to count agents", e))?;
            let entries = ds
                .count_entries(&Default::default())
                .await
                .map_err(|e| internal("failed to count entries", e))?;
            let bundles = ds
                .count_bundles()
                .await
                .map_err(|e| internal("failed to count bundles", e))?;
            let mut chain = Vec::new();
            if let Some(svid) = ctx.state.ca.server_svid() {
                for der in &svid.chain {
                    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
                        let id = cert
                            .subject_alternative_name()
                            .ok()
                            .flatten()
                            .and_then(|san| {
                                san.value.general_names.iter().find_map(|n| match n {
                                    x509_parser::extensions::GeneralName::URI(u) => {
                                        u.parse::<spire_spiffe::SpiffeId>().ok()
                                    }
                                    _ => None,
                                })
                            });
                        chain.push(pb::get_info_response::Cert {
                            id: id.map(|i| types::Spiffeid {
                                trust_domain: i.trust_domain().as_str().to_string(),
                                path: i.path().to_string(),
                            }),
                            expires_at: cert.validity().not_after.timestamp(),
                            subject: cert.subject().to_string(),
                        });
                    }
                }
            }
            Ok(pb::GetInfoResponse {
                svid_chain: chain,
                uptime: i32::try_from(ctx.state.started.elapsed().as_secs()).unwrap_or(i32::MAX),
                agents_count: i32::try_from(agents).unwrap_or(i32::MAX),
                federated_bundles_count: i32::try_from((bundles - 1).max(0)).unwrap_or(i32::MAX),
                entries_count: i32::try_from(entries).unwrap_or(i32::MAX),
            })
        }
        .await;
        ctx.audit.emit(&result, &[]);
        result.map(Response::new)
    }
}
