//! SVID.BatchNewX509SVID: workload X509-SVIDs for entries the calling agent is authorized for.
//!
//! The caller is already authorized as an agent (`Policy::Agent`). Each item gets its own
//! status: a missing entry ID or CSR, or a CSR whose signature does not verify, is
//! InvalidArgument; an entry that does not exist or is not authorized for the caller is
//! PermissionDenied ("entry not found or not authorized"), and nothing is signed for it. The
//! SVID carries the entry's SPIFFE ID, DNS names and X509-SVID TTL, never anything from the
//! CSR but its key. Rate-limited per IP by the number of CSRs (`ratelimit.signing`).
//!
//! Mirrors `pkg/server/api/svid/v1/service.go` (`BatchNewX509SVID`).

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::api::{Ctx, convert, item_status, ok_status, rate_limit};
use crate::endpoints::tcp::tcp_context;
use crate::pb::svid as pb;
use crate::pb::types;

/// BatchNewX509SVID.
pub(crate) async fn batch_new_x509_svid(
    ctx: &Ctx,
    request: Request<pb::BatchNewX509svidRequest>,
) -> Result<Response<pb::BatchNewX509svidResponse>, Status> {
    let tcp = tcp_context(&request)?;
    let req = request.into_inner();
    if req.params.is_empty() {
        let s = Status::invalid_argument("missing parameters");
        ctx.audit.emit_error(&s, &[]);
        return Err(s);
    }
    let limited = rate_limit(
        &tcp.limits.sign,
        &ctx.caller,
        req.params.len(),
        "certificate signing",
    )
    .await;
    if let Err(s) = limited {
        ctx.audit.emit_error(&s, &[]);
        return Err(s);
    }
    let agent = ctx.caller_id()?;
    let authorized = tcp.index.authorized_entries(agent);
    let by_id: HashMap<&str, _> = authorized.iter().map(|e| (e.id.as_str(), e)).collect();
    let mut results = Vec::with_capacity(req.params.len());
    for p in &req.params {
        let outcome = (|| {
            if p.entry_id.is_empty() {
                return Err(Status::invalid_argument("missing entry ID"));
            }
            if p.csr.is_empty() {
                return Err(Status::invalid_argument("missing CSR"));
            }
            let entry = by_id
                .get(p.entry_id.as_str())
                .ok_or_else(|| Status::permission_denied("entry not found or not authorized"))?;
            let csr = spire_crypto::csr::parse_and_verify_csr(&p.csr)
                .map_err(|e| Status::invalid_argument(format!("malformed CSR: {e}")))?;
            let ttl =
                (entry.x509_svid_ttl > 0).then(|| Duration::from_secs(entry.x509_svid_ttl as u64));
            let chain = ctx
                .state
                .ca
                .sign_x509_svid(&csr.public_key, &entry.spiffe_id, &entry.dns_names, ttl)
                .map_err(|e| Status::internal(format!("failed to sign X509-SVID: {e}")))?;
            let expires_at = chain.first().map(|c| super::not_after(c)).unwrap_or(0);
            Ok(types::X509svid {
                id: Some(convert::id_to_proto(&entry.spiffe_id)),
                cert_chain: chain,
                expires_at,
                hint: entry.hint.clone(),
            })
        })();
        let fields = [("entry_id", p.entry_id.clone())];
        let result = match outcome {
            Ok(svid) => {
                ctx.audit.emit_item(&ok_status(), &fields);
                pb::batch_new_x509svid_response::Result {
                    status: Some(ok_status()),
                    svid: Some(svid),
                }
            }
            Err(s) => {
                let st = item_status(&s);
                ctx.audit.emit_item(&st, &fields);
                pb::batch_new_x509svid_response::Result {
                    status: Some(st),
                    svid: None,
                }
            }
        };
        results.push(result);
    }
    Ok(Response::new(pb::BatchNewX509svidResponse { results }))
}
