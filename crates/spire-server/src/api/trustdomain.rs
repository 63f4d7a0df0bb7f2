//! `spire.api.server.trustdomain.v1.TrustDomain`: federation relationships stored in the
//! datastore, and an immediate bundle refresh for a relationship (admin or local callers).
//!
//! Mirrors `pkg/server/api/trustdomain/v1/service.go`.

use std::sync::Arc;

use spire_datastore::{self as ds, BundleEndpointProfile, FederationRelationship};
use spire_spiffe::{SpiffeId, TrustDomain};
use tonic::{Request, Response, Status};

use super::convert;
use super::{Ctx, Policy, pagination};
use crate::pb::types;
use crate::server::ServerState;
use spire_proto::server::trustdomain as pb;
use types::federation_relationship::BundleEndpointProfile as WireProfile;

/// The TrustDomain service.
#[derive(Debug, Clone)]
pub struct TrustDomainService {
    state: Arc<ServerState>,
}

impl TrustDomainService {
    /// A service over `state`.
    pub fn new(state: Arc<ServerState>) -> Self {
        TrustDomainService { state }
    }

    /// The per-item part of a batch create or update of relationships: converts each one,
    /// stores the bundle it carries, runs `save` on it and answers each with `result` (its
    /// status and, when saved, the relationship as the output `mask` shows it), audited under
    /// its trust domain.
    async fn save_each<R, Saved>(
        &self,
        ctx: &Ctx,
        relationships: &[types::FederationRelationship],
        mask: Option<&types::FederationRelationshipMask>,
        mut save: impl FnMut(FederationRelationship) -> Saved,
        result: impl Fn(types::Status, Option<types::FederationRelationship>) -> R,
    ) -> Vec<R>
    where
        Saved: Future<Output = Result<FederationRelationship, TdError>>,
    {
        let mut results = Vec::with_capacity(relationships.len());
        for r in relationships {
            let outcome = async {
                let rel =
                    store_endpoint_bundle(&ctx.state, from_proto(r, &ctx.state.trust_domain)?)
                        .await?;
                save(rel).await
            }
            .await
            .map(|saved| to_proto(&saved, mask));
            let (status, relationship) =
                ctx.item(outcome, &[("trust_domain_id", r.trust_domain.clone())]);
            results.push(result(status, relationship));
        }
        results
    }
}

/// The tonic server of this service, ready to mount.
pub fn server(
    state: &Arc<ServerState>,
) -> pb::trust_domain_server::TrustDomainServer<TrustDomainService> {
    pb::trust_domain_server::TrustDomainServer::new(TrustDomainService::new(Arc::clone(state)))
}

/// Errors of this module, mapped to gRPC statuses in one place.
#[derive(Debug, thiserror::Error)]
enum TdError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{what}")]
    DataStore {
        what: &'static str,
        #[source]
        source: ds::Error,
    },
    #[error("failed to refresh bundle: {0}")]
    Refresh(String),
}

impl TdError {
    fn ds(what: &'static str) -> impl FnOnce(ds::Error) -> TdError {
        move |source| match source {
            ds::Error::NotFound { .. } => {
                TdError::NotFound("federation relationship does not exist".into())
            }
            ds::Error::AlreadyExists { .. } => {
                TdError::AlreadyExists("federation relationship already exists".into())
            }
            ds::Error::InvalidArgument(m) => TdError::Invalid(m),
            source => TdError::DataStore { what, source },
        }
    }
}

impl From<TdError> for Status {
    fn from(e: TdError) -> Status {
        match e {
            TdError::Invalid(m) => Status::invalid_argument(m),
            TdError::NotFound(m) => Status::not_found(m),
            TdError::AlreadyExists(m) => Status::already_exists(m),
            TdError::DataStore { what, source } => crate::api::datastore_status(what, &source),
            TdError::Refresh(m) => Status::internal(format!("failed to refresh bundle: {m}")),
        }
    }
}

fn parse_td(name: &str) -> Result<TrustDomain, TdError> {
    name.strip_prefix("spiffe://")
        .unwrap_or(name)
        .parse()
        .map_err(|e| TdError::Invalid(format!("failed to parse trust domain {name:?}: {e}")))
}

/// The datastore form of a wire relationship, checked.
fn from_proto(
    r: &types::FederationRelationship,
    own: &TrustDomain,
) -> Result<FederationRelationship, TdError> {
    let bad =
        |m: String| TdError::Invalid(format!("failed to convert federation relationship: {m}"));
    let td = parse_td(&r.trust_domain).map_err(|e| bad(e.to_string()))?;
    if &td == own {
        return Err(TdError::Invalid(
            "unable to create federation relationship for server trust domain".into(),
        ));
    }
    check_url(&r.bundle_endpoint_url).map_err(bad)?;
    let profile = match &r.bundle_endpoint_profile {
        Some(WireProfile::HttpsWeb(_)) => BundleEndpointProfile::HttpsWeb,
        Some(WireProfile::HttpsSpiffe(p)) => {
            let id: SpiffeId = p.endpoint_spiffe_id.parse().map_err(|e| {
                bad(format!(
                    "invalid endpoint SPIFFE ID {:?}: {e}",
                    p.endpoint_spiffe_id
                ))
            })?;
            BundleEndpointProfile::HttpsSpiffe {
                endpoint_spiffe_id: id,
            }
        }
        None => {
            return Err(bad(
                "bundle endpoint profile is required (https_web or https_spiffe)".into(),
            ));
        }
    };
    let trust_domain_bundle = match &r.trust_domain_bundle {
        Some(b) => {
            let parsed = convert::bundle_from_proto(b).map_err(|e| bad(e.0))?;
            // With https_spiffe the bundle authenticates the endpoint, so it belongs to the
            // endpoint ID's trust domain (the relationship's own one when self-serving).
            let expected = match &profile {
                BundleEndpointProfile::HttpsSpiffe { endpoint_spiffe_id } => {
                    endpoint_spiffe_id.trust_domain().clone()
                }
                BundleEndpointProfile::HttpsWeb => td.clone(),
            };
            if parsed.trust_domain != expected {
                return Err(bad(format!(
                    "trust domain bundle ({}) must belong to {expected}",
                    parsed.trust_domain
                )));
            }
            Some(parsed)
        }
        None => None,
    };
    Ok(FederationRelationship {
        trust_domain: td,
        bundle_endpoint_url: r.bundle_endpoint_url.clone(),
        profile,
        trust_domain_bundle,
    })
}

/// A bundle for a non-self-serving endpoint (another trust domain than the relationship's) is
/// stored on its own: the relationship's transaction stores bundles under the relationship's
/// trust domain only.
async fn store_endpoint_bundle(
    state: &ServerState,
    mut rel: FederationRelationship,
) -> Result<FederationRelationship, TdError> {
    if let Some(b) = rel
        .trust_domain_bundle
        .take_if(|b| b.trust_domain != rel.trust_domain)
    {
        if b.trust_domain == state.trust_domain {
            return Err(TdError::Invalid(
                "failed to convert federation relationship: the trust domain bundle must not be the server's own".into(),
            ));
        }
        state
            .datastore
            .set_bundle(&b)
            .await
            .map_err(TdError::ds("failed to store the trust domain bundle"))?;
    }
    Ok(rel)
}

/// A bundle endpoint URL must be `https` with a host and no user info.
fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("unable to parse bundle endpoint URL {url:?}: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!(
            "bundle endpoint URL {url:?} must use the https scheme"
        ));
    }
    match uri.authority() {
        None => Err(format!("bundle endpoint URL {url:?} has no host")),
        Some(a) if a.as_str().contains('@') => Err(format!(
            "bundle endpoint URL {url:?} must not contain user info"
        )),
        Some(_) => Ok(()),
    }
}

/// The wire form of a relationship, honoring an output mask.
pub fn to_proto(
    r: &FederationRelationship,
    mask: Option<&types::FederationRelationshipMask>,
) -> types::FederationRelationship {
    let url = mask.is_none_or(|m| m.bundle_endpoint_url);
    let profile = mask.is_none_or(|m| m.bundle_endpoint_profile);
    let bundle = mask.is_none_or(|m| m.trust_domain_bundle);
    types::FederationRelationship {
        trust_domain: r.trust_domain.as_str().to_owned(),
        bundle_endpoint_url: if url {
            r.bundle_endpoint_url.clone()
        } else {
            String::new()
        },
        bundle_endpoint_profile: profile.then(|| match &r.profile {
            BundleEndpointProfile::HttpsWeb => WireProfile::HttpsWeb(types::HttpsWebProfile {}),
            BundleEndpointProfile::HttpsSpiffe { endpoint_spiffe_id } => {
                WireProfile::HttpsSpiffe(types::HttpsspiffeProfile {
                    endpoint_spiffe_id: endpoint_spiffe_id.as_str().to_owned(),
                })
            }
        }),
        trust_domain_bundle: if bundle {
            r.trust_domain_bundle
                .as_ref()
                .map(|b| convert::bundle_to_proto(b, None))
        } else {
            None
        },
    }
}

#[tonic::async_trait]
impl pb::trust_domain_server::TrustDomain for TrustDomainService {
    async fn list_federation_relationships(
        &self,
        request: Request<pb::ListFederationRelationshipsRequest>,
    ) -> Result<Response<pb::ListFederationRelationshipsResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "ListFederationRelationships",
            Policy::AdminOrLocal,
        )?;
        let req = request.into_inner();
        let result = async {
            let page = pagination(req.page_size, &req.page_token).map_err(TdError::Invalid)?;
            let page = ctx
                .state
                .datastore
                .list_federation_relationships(&page)
                .await
                .map_err(TdError::ds("failed to list federation relationships"))?;
            Ok::<_, TdError>(pb::ListFederationRelationshipsResponse {
                federation_relationships: page
                    .items
                    .iter()
                    .map(|r| to_proto(r, req.output_mask.as_ref()))
                    .collect(),
                next_page_token: page.next_page_token,
            })
        }
        .await;
        ctx.respond(result, &[])
    }

    async fn get_federation_relationship(
        &self,
        request: Request<pb::GetFederationRelationshipRequest>,
    ) -> Result<Response<types::FederationRelationship>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "GetFederationRelationship",
            Policy::AdminOrLocal,
        )?;
        let req = request.into_inner();
        let fields = [("trust_domain_id", req.trust_domain.clone())];
        let result = async {
            let td = parse_td(&req.trust_domain)?;
            let rel = ctx
                .state
                .datastore
                .get_federation_relationship(&td)
                .await
                .map_err(TdError::ds("failed to fetch federation relationship"))?
                .ok_or_else(|| {
                    TdError::NotFound("federation relationship does not exist".into())
                })?;
            Ok::<_, TdError>(to_proto(&rel, req.output_mask.as_ref()))
        }
        .await;
        ctx.respond(result, &fields)
    }

    async fn batch_create_federation_relationship(
        &self,
        request: Request<pb::BatchCreateFederationRelationshipRequest>,
    ) -> Result<Response<pb::BatchCreateFederationRelationshipResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "BatchCreateFederationRelationship",
            Policy::AdminOrLocal,
        )?;
        let req = request.into_inner();
        let results = self
            .save_each(
                &ctx,
                &req.federation_relationships,
                req.output_mask.as_ref(),
                |rel| async move {
                    let created = self
                        .state
                        .datastore
                        .create_federation_relationship(&rel)
                        .await
                        .map_err(TdError::ds("failed to create federation relationship"))?;
                    tracing::debug!(trust_domain = %created.trust_domain, "Federation relationship created");
                    Ok(created)
                },
                |status, relationship| pb::batch_create_federation_relationship_response::Result {
                    status: Some(status),
                    federation_relationship: relationship,
                },
            )
            .await;
        Ok(Response::new(
            pb::BatchCreateFederationRelationshipResponse { results },
        ))
    }

    async fn batch_update_federation_relationship(
        &self,
        request: Request<pb::BatchUpdateFederationRelationshipRequest>,
    ) -> Result<Response<pb::BatchUpdateFederationRelationshipResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "BatchUpdateFederationRelationship",
            Policy::AdminOrLocal,
        )?;
        let req = request.into_inner();
        let mask = match &req.input_mask {
            Some(m) => ds::FederationRelationshipMask {
                bundle_endpoint_url: m.bundle_endpoint_url,
                profile: m.bundle_endpoint_profile,
                trust_domain_bundle: m.trust_domain_bundle,
            },
            None => ds::FederationRelationshipMask::all(),
        };
        let mask = &mask;
        let results = self
            .save_each(
                &ctx,
                &req.federation_relationships,
                req.output_mask.as_ref(),
                |rel| async move {
                    self.state
                        .datastore
                        .update_federation_relationship(&rel, mask)
                        .await
                        .map_err(TdError::ds("failed to update federation relationship"))
                },
                |status, relationship| pb::batch_update_federation_relationship_response::Result {
                    status: Some(status),
                    federation_relationship: relationship,
                },
            )
            .await;
        Ok(Response::new(
            pb::BatchUpdateFederationRelationshipResponse { results },
        ))
    }

    async fn batch_delete_federation_relationship(
        &self,
        request: Request<pb::BatchDeleteFederationRelationshipRequest>,
    ) -> Result<Response<pb::BatchDeleteFederationRelationshipResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "BatchDeleteFederationRelationship",
            Policy::AdminOrLocal,
        )?;
        let req = request.into_inner();
        let mut results = Vec::with_capacity(req.trust_domains.len());
        for name in &req.trust_domains {
            let outcome = async {
                let td = parse_td(name)?;
                ctx.state
                    .datastore
                    .delete_federation_relationship(&td)
                    .await
                    .map_err(TdError::ds("failed to delete federation relationship"))?;
                Ok::<_, TdError>(td)
            }
            .await;
            let (status, _) = ctx.item(outcome, &[("trust_domain_id", name.clone())]);
            results.push(pb::batch_delete_federation_relationship_response::Result {
                status: Some(status),
                trust_domain: name.clone(),
            });
        }
        Ok(Response::new(
            pb::BatchDeleteFederationRelationshipResponse { results },
        ))
    }

    async fn refresh_bundle(
        &self,
        request: Request<pb::RefreshBundleRequest>,
    ) -> Result<Response<()>, Status> {
        let ctx = Ctx::new(&self.state, &request, "RefreshBundle", Policy::AdminOrLocal)?;
        let req = request.into_inner();
        let fields = [("trust_domain_id", req.trust_domain.clone())];
        let result = async {
            let td = parse_td(&req.trust_domain)?;
            let rel = crate::federation::relationship(&ctx.state, &td)
                .await
                .map_err(TdError::ds("failed to fetch federation relationship"))?
                .ok_or_else(|| {
                    TdError::NotFound(format!(
                        "no relationship with trust domain {:?}",
                        td.as_str()
                    ))
                })?;
            crate::federation::refresh_once(&ctx.state, &rel)
                .await
                .map_err(|e| TdError::Refresh(crate::federation::error_chain(&e)))?;
            Ok::<_, TdError>(())
        }
        .await;
        ctx.respond(result, &fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own() -> TrustDomain {
        "a.test".parse().unwrap()
    }

    fn wire(td: &str, url: &str, profile: Option<WireProfile>) -> types::FederationRelationship {
        types::FederationRelationship {
            trust_domain: td.into(),
            bundle_endpoint_url: url.into(),
            bundle_endpoint_profile: profile,
            trust_domain_bundle: None,
        }
    }

    #[test]
    fn conversion_checks_every_field() {
        let web = Some(WireProfile::HttpsWeb(types::HttpsWebProfile {}));
        let ok = from_proto(&wire("b.test", "https://b.test:8443", web.clone()), &own()).unwrap();
        assert_eq!(ok.profile, BundleEndpointProfile::HttpsWeb);
        assert_eq!(
            to_proto(&ok, None),
            wire("b.test", "https://b.test:8443", web.clone())
        );

        for (r, want) in [
            (
                wire("a.test", "https://x", web.clone()),
                "server trust domain",
            ),
            (wire("b.test", "http://x", web.clone()), "https scheme"),
            (wire("b.test", "https://u@x", web.clone()), "user info"),
            (wire("b.test", "https://x", None), "profile is required"),
            (wire("Bad TD", "https://x", web.clone()), "trust domain"),
            (
                wire(
                    "b.test",
                    "https://x",
                    Some(WireProfile::HttpsSpiffe(types::HttpsspiffeProfile {
                        endpoint_spiffe_id: "not-an-id".into(),
                    })),
                ),
                "endpoint SPIFFE ID",
            ),
        ] {
            let err = from_proto(&r, &own()).unwrap_err();
            assert!(
                err.to_string().contains(want),
                "{err} should mention {want}"
            );
        }
    }

    #[test]
    fn output_mask_clears_fields() {
        let rel = FederationRelationship {
            trust_domain: "b.test".parse().unwrap(),
            bundle_endpoint_url: "https://b".into(),
            profile: BundleEndpointProfile::HttpsWeb,
            trust_domain_bundle: Some(ds::Bundle::new("b.test".parse().unwrap())),
        };
        let out = to_proto(&rel, Some(&types::FederationRelationshipMask::default()));
        assert_eq!(out.trust_domain, "b.test");
        assert!(out.bundle_endpoint_url.is_empty());
        assert!(out.bundle_endpoint_profile.is_none());
        assert!(out.trust_domain_bundle.is_none());
    }
}
