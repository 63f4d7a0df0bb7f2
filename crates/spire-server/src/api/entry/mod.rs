//! `spire.api.server.entry.v1.Entry`: registration entry management (admin/local) and the
//! agent-facing authorized-entries RPCs ([`authorized`]).
//!
//! Mirrors `pkg/server/api/entry/v1/service.go`.

pub mod authorized;

use std::sync::Arc;

use spire_datastore as ds;
use spire_spiffe::TrustDomain;
use tonic::{Request, Response, Status};

use super::convert::{self, InvalidArgument};
use super::{Ctx, Policy, item_status, ok_status, pagination};
use crate::pb::entry as pb;
use crate::pb::types;
use crate::server::ServerState;

/// The Entry service.
#[derive(Debug, Clone)]
pub struct EntryService {
    state: Arc<ServerState>,
}

impl EntryService {
    /// A service over `state`.
    pub fn new(state: Arc<ServerState>) -> Self {
        EntryService { state }
    }
}

/// Errors of this module, mapped to gRPC statuses in one place.
#[derive(Debug, thiserror::Error)]
enum EntryError {
    #[error("{0}")]
    Invalid(String),
    #[error("entry not found")]
    NotFound,
    #[error("similar entry already exists")]
    AlreadyExists(Box<ds::Entry>),
    #[error("{what}")]
    DataStore {
        what: &'static str,
        #[source]
        source: ds::Error,
    },
}

impl EntryError {
    fn ds(what: &'static str) -> impl FnOnce(ds::Error) -> EntryError {
        move |source| match source {
            ds::Error::NotFound { .. } => EntryError::NotFound,
            ds::Error::EntryAlreadyExists(e) => EntryError::AlreadyExists(e),
            ds::Error::FederatedBundleNotFound(td) => EntryError::Invalid(format!(
                "unable to find federated bundle {td:?}: create the bundle before federating with it"
            )),
            ds::Error::InvalidArgument(m) => EntryError::Invalid(m),
            source => EntryError::DataStore { what, source },
        }
    }
}

impl From<InvalidArgument> for EntryError {
    fn from(e: InvalidArgument) -> Self {
        EntryError::Invalid(e.0)
    }
}

impl From<EntryError> for Status {
    fn from(e: EntryError) -> Status {
        match &e {
            EntryError::Invalid(m) => Status::invalid_argument(m.clone()),
            EntryError::NotFound => Status::not_found("entry not found"),
            EntryError::AlreadyExists(_) => Status::already_exists("similar entry already exists"),
            EntryError::DataStore { what, source } => crate::api::datastore_status(what, source),
        }
    }
}

fn filter_from_proto(
    td: &TrustDomain,
    by_spiffe_id: Option<&types::Spiffeid>,
    by_parent_id: Option<&types::Spiffeid>,
    by_selectors: Option<&types::SelectorMatch>,
    by_federates_with: Option<&types::FederatesWithMatch>,
    by_hint: Option<&String>,
    by_downstream: Option<bool>,
) -> Result<ds::EntryFilter, EntryError> {
    let _ = td;
    let mut f = ds::EntryFilter::default();
    if let Some(id) = by_spiffe_id {
        f.by_spiffe_id = Some(
            convert::id_from_proto(Some(id))
                .map_err(|m| EntryError::Invalid(format!("malformed SPIFFE ID filter: {m}")))?,
        );
    }
    if let Some(id) = by_parent_id {
        f.by_parent_id = Some(
            convert::id_from_proto(Some(id))
                .map_err(|m| EntryError::Invalid(format!("malformed parent ID filter: {m}")))?,
        );
    }
    if let Some(m) = by_selectors {
        let selectors = convert::selectors_from_proto(&m.selectors)
            .map_err(|e| EntryError::Invalid(format!("malformed selectors filter: {e}")))?;
        let mode = convert::match_mode(m.r#match)
            .map_err(|e| EntryError::Invalid(format!("malformed selectors filter: {e}")))?;
        f.by_selectors = Some(ds::SelectorFilter { selectors, mode });
    }
    if let Some(m) = by_federates_with {
        if m.trust_domains.is_empty() {
            return Err(EntryError::Invalid(
                "malformed federates with filter: empty trust domain set".into(),
            ));
        }
        let mut tds = Vec::new();
        for t in &m.trust_domains {
            let name = t.strip_prefix("spiffe://").unwrap_or(t);
            tds.push(name.parse::<TrustDomain>().map_err(|e| {
                EntryError::Invalid(format!("malformed federates with filter: {t:?}: {e}"))
            })?);
        }
        let mode = convert::match_mode(m.r#match)
            .map_err(|e| EntryError::Invalid(format!("malformed federates with filter: {e}")))?;
        f.by_federates_with = Some(ds::FederatesWithFilter {
            trust_domains: tds,
            mode,
        });
    }
    f.by_hint = by_hint.cloned();
    f.by_downstream = by_downstream;
    Ok(f)
}

fn id_fields(e: &types::Entry) -> Vec<(&'static str, String)> {
    let mut v = vec![("id", e.id.clone())];
    if let Some(id) = &e.spiffe_id {
        v.push((
            "spiffe_id",
            format!("spiffe://{}{}", id.trust_domain, id.path),
        ));
    }
    if let Some(id) = &e.parent_id {
        v.push((
            "parent_id",
            format!("spiffe://{}{}", id.trust_domain, id.path),
        ));
    }
    v.push((
        "selectors",
        e.selectors
            .iter()
            .map(|s| format!("{}:{}", s.r#type, s.value))
            .collect::<Vec<_>>()
            .join(","),
    ));
    v
}

/// The per-item status and entry of a batch create or update (`verb`): a similar entry that
/// already exists is returned with ALREADY_EXISTS; other failures say what failed.
fn entry_item(
    outcome: Result<ds::Entry, EntryError>,
    verb: &str,
    mask: Option<&types::EntryMask>,
) -> (types::Status, Option<types::Entry>) {
    match outcome {
        Ok(e) => (ok_status(), Some(convert::entry_to_proto(&e, mask))),
        Err(EntryError::AlreadyExists(existing)) => (
            item_status(&Status::already_exists("similar entry already exists")),
            Some(convert::entry_to_proto(&existing, mask)),
        ),
        Err(e) => {
            let status = Status::from(e);
            let msg = format!("failed to {verb} entry: {}", status.message());
            (item_status(&Status::new(status.code(), msg)), None)
        }
    }
}

#[tonic::async_trait]
impl pb::entry_server::Entry for EntryService {
    async fn count_entries(
        &self,
        request: Request<pb::CountEntriesRequest>,
    ) -> Result<Response<pb::CountEntriesResponse>, Status> {
        let ctx = Ctx::new(&self.state, &request, "CountEntries", Policy::AdminOrLocal)?;
        let req = request.into_inner();
        let result = async {
            let f = match &req.filter {
                Some(f) => filter_from_proto(
                    &ctx.state.trust_domain,
                    f.by_spiffe_id.as_ref(),
                    f.by_parent_id.as_ref(),
                    f.by_selectors.as_ref(),
                    f.by_federates_with.as_ref(),
                    f.by_hint.as_ref(),
                    f.by_downstream,
                )?,
                None => ds::EntryFilter::default(),
            };
            let n = ctx
                .state
                .datastore
                .count_entries(&f)
                .await
                .map_err(EntryError::ds("failed to count entries"))?;
            Ok::<_, EntryError>(pb::CountEntriesResponse {
                count: i32::try_from(n).unwrap_or(i32::MAX),
            })
        }
        .await;
        ctx.respond(result, &[])
    }

    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let ctx = Ctx::new(&self.state, &request, "ListEntries", Policy::AdminOrLocal)?;
        let req = request.into_inner();
        let result = async {
            let page = pagination(req.page_size, &req.page_token).map_err(EntryError::Invalid)?;
            let f = match &req.filter {
                Some(f) => filter_from_proto(
                    &ctx.state.trust_domain,
                    f.by_spiffe_id.as_ref(),
                    f.by_parent_id.as_ref(),
                    f.by_selectors.as_ref(),
                    f.by_federates_with.as_ref(),
                    f.by_hint.as_ref(),
                    f.by_downstream,
                )?,
                None => ds::EntryFilter::default(),
            };
            let page = ctx
                .state
                .datastore
                .list_entries(&f, &page)
                .await
                .map_err(EntryError::ds("failed to list entries"))?;
            Ok::<_, EntryError>(pb::ListEntriesResponse {
                entries: page
                    .items
                    .iter()
                    .map(|e| convert::entry_to_proto(e, req.output_mask.as_ref()))
                    .collect(),
                next_page_token: page.next_page_token,
            })
        }
        .await;
        ctx.respond(result, &[])
    }

    async fn get_entry(
        &self,
        request: Request<pb::GetEntryRequest>,
    ) -> Result<Response<types::Entry>, Status> {
        let ctx = Ctx::new(&self.state, &request, "GetEntry", Policy::AdminOrLocal)?;
        let req = request.into_inner();
        let result = async {
            if req.id.is_empty() {
                return Err(EntryError::Invalid("missing ID".into()));
            }
            let e = ctx
                .state
                .datastore
                .get_entry(&req.id)
                .await
                .map_err(EntryError::ds("failed to fetch entry"))?
                .ok_or(EntryError::NotFound)?;
            Ok(convert::entry_to_proto(&e, req.output_mask.as_ref()))
        }
        .await;
        ctx.respond(result, &[("id", req.id.clone())])
    }

    async fn batch_create_entry(
        &self,
        request: Request<pb::BatchCreateEntryRequest>,
    ) -> Result<Response<pb::BatchCreateEntryResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "BatchCreateEntry",
            Policy::AdminOrLocal,
        )?;
        let req = request.into_inner();
        let mut results = Vec::with_capacity(req.entries.len());
        for wire in &req.entries {
            let outcome = async {
                let entry = convert::entry_from_proto(wire, &ctx.state.trust_domain)?;
                ctx.state
                    .datastore
                    .create_entry(&entry)
                    .await
                    .map_err(EntryError::ds("failed to create entry"))
            }
            .await;
            let (status, entry) = entry_item(outcome, "create", req.output_mask.as_ref());
            let result = pb::batch_create_entry_response::Result {
                status: Some(status),
                entry,
            };
            let mut fields = id_fields(wire);
            if let Some(e) = &result.entry {
                fields[0].1 = e.id.clone();
            }
            if let Some(st) = &result.status {
                ctx.audit.emit_item(st, &fields);
            }
            results.push(result);
        }
        Ok(Response::new(pb::BatchCreateEntryResponse { results }))
    }

    async fn batch_update_entry(
        &self,
        request: Request<pb::BatchUpdateEntryRequest>,
    ) -> Result<Response<pb::BatchUpdateEntryResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "BatchUpdateEntry",
            Policy::AdminOrLocal,
        )?;
        let req = request.into_inner();
        let mask = convert::entry_mask_from_proto(req.input_mask.as_ref());
        let mut results = Vec::with_capacity(req.entries.len());
        for wire in &req.entries {
            let outcome = async {
                if wire.id.is_empty() {
                    return Err(EntryError::Invalid(
                        "failed to convert entry: missing ID".into(),
                    ));
                }
                let base = ctx
                    .state
                    .datastore
                    .get_entry(&wire.id)
                    .await
                    .map_err(EntryError::ds("failed to fetch entry"))?
                    .ok_or(EntryError::NotFound)?;
                let updated =
                    convert::entry_update_from_proto(wire, &mask, &ctx.state.trust_domain, &base)?;
                ctx.state
                    .datastore
                    .update_entry(&updated, &mask)
                    .await
                    .map_err(EntryError::ds("failed to update entry"))
            }
            .await;
            let (status, entry) = entry_item(outcome, "update", req.output_mask.as_ref());
            let result = pb::batch_update_entry_response::Result {
                status: Some(status),
                entry,
            };
            if let Some(st) = &result.status {
                ctx.audit.emit_item(st, &id_fields(wire));
            }
            results.push(result);
        }
        Ok(Response::new(pb::BatchUpdateEntryResponse { results }))
    }

    async fn batch_delete_entry(
        &self,
        request: Request<pb::BatchDeleteEntryRequest>,
    ) -> Result<Response<pb::BatchDeleteEntryResponse>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "BatchDeleteEntry",
            Policy::AdminOrLocal,
        )?;
        let req = request.into_inner();
        let mut results = Vec::with_capacity(req.ids.len());
        for id in &req.ids {
            let outcome = async {
                if id.is_empty() {
                    return Err(EntryError::Invalid("missing entry ID".into()));
                }
                ctx.state
                    .datastore
                    .delete_entry(id)
                    .await
                    .map_err(EntryError::ds("failed to delete entry"))
            }
            .await;
            let status = match outcome {
                Ok(_) => ok_status(),
                Err(e) => {
                    let s = Status::from(e);
                    item_status(&Status::new(
                        s.code(),
                        format!("failed to delete entry: {}", s.message()),
                    ))
                }
            };
            ctx.audit.emit_item(&status, &[("id", id.clone())]);
            results.push(pb::batch_delete_entry_response::Result {
                status: Some(status),
                id: id.clone(),
            });
        }
        Ok(Response::new(pb::BatchDeleteEntryResponse { results }))
    }

    async fn get_authorized_entries(
        &self,
        request: Request<pb::GetAuthorizedEntriesRequest>,
    ) -> Result<Response<pb::GetAuthorizedEntriesResponse>, Status> {
        let ctx = Ctx::new(&self.state, &request, "GetAuthorizedEntries", Policy::Agent)?;
        authorized::get_authorized_entries(&ctx, request).await
    }

    type SyncAuthorizedEntriesStream = authorized::SyncAuthorizedEntriesStream;

    async fn sync_authorized_entries(
        &self,
        request: Request<tonic::Streaming<pb::SyncAuthorizedEntriesRequest>>,
    ) -> Result<Response<Self::SyncAuthorizedEntriesStream>, Status> {
        let ctx = Ctx::new(
            &self.state,
            &request,
            "SyncAuthorizedEntries",
            Policy::Agent,
        )?;
        authorized::sync_authorized_entries(&ctx, request).await
    }
}

#[cfg(test)]
mod tests;
