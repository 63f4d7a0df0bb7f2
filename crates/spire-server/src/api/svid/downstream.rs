//! SVID.NewDownstreamX509CA: an intermediate CA for a downstream SPIRE server.
//!
//! The caller is already authorized as downstream (`Policy::Downstream`: its SVID is named by
//! a `downstream = true` entry). The CSR's signature must verify; the CA certificate carries
//! only the CSR's key (subject and lifetime come from the server's CA settings, capped by
//! `preferred_ttl` when given). The response holds the new CA's chain and the X.509 roots of
//! the local bundle. Rate-limited per IP (`ratelimit.signing`).
//!
//! Mirrors `pkg/server/api/svid/v1/service.go` (`NewDownstreamX509CA`).

use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::api::{Ctx, rate_limit};
use crate::endpoints::tcp::tcp_context;
use crate::pb::svid as pb;

/// NewDownstreamX509CA.
pub(crate) async fn new_downstream_x509_ca(
    ctx: &Ctx,
    request: Request<pb::NewDownstreamX509caRequest>,
) -> Result<Response<pb::NewDownstreamX509caResponse>, Status> {
    let tcp = tcp_context(&request)?;
    let req = request.into_inner();
    let result = async {
        rate_limit(&tcp.limits.sign, &ctx.caller, 1, "downstream CA signing").await?;
        if req.csr.is_empty() {
            return Err(Status::invalid_argument("missing CSR"));
        }
        if req.preferred_ttl < 0 {
            return Err(Status::invalid_argument(
                "preferred_ttl must not be negative",
            ));
        }
        let csr = spire_crypto::csr::parse_and_verify_csr(&req.csr)
            .map_err(|e| Status::invalid_argument(format!("invalid CSR: {e}")))?;
        let ttl = (req.preferred_ttl > 0).then(|| Duration::from_secs(req.preferred_ttl as u64));
        let chain = ctx
            .state
            .ca
            .sign_downstream_ca(&csr.public_key, ttl)
            .map_err(|e| Status::internal(format!("failed to sign downstream X.509 CA: {e}")))?;
        let roots = ctx
            .state
            .ca
            .bundle()
            .await
            .map_err(|e| Status::internal(format!("failed to fetch bundle: {e}")))?
            .map(|b| b.x509_authorities.into_iter().map(|a| a.der).collect())
            .unwrap_or_default();
        Ok(pb::NewDownstreamX509caResponse {
            ca_cert_chain: chain,
            x509_authorities: roots,
        })
    }
    .await;
    ctx.audit.emit(&result, &[]);
    result.map(Response::new)
}
