//! The server's local API socket: the trust bundle, join tokens, entry creation and deletion.

use std::path::Path;

use spire_proto::server::{agent as agentpb, bundle as bundlepb, entry as entrypb};
use spire_proto::types;
use spire_spiffe::{SpiffeId, TrustDomain};
use tonic::transport::{Channel, Endpoint};

use crate::Error;

/// A client of the server's local API socket.
#[derive(Debug, Clone)]
pub struct Admin {
    channel: Channel,
}

fn rpc(op: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    move |status| Error::Rpc { op, status }
}

/// The protobuf form of a SPIFFE ID.
pub fn spiffe_id_pb(id: &SpiffeId) -> types::Spiffeid {
    types::Spiffeid {
        trust_domain: id.trust_domain().to_string(),
        path: id.path().to_owned(),
    }
}

/// The string form of a protobuf SPIFFE ID (empty when absent).
pub fn spiffe_id_string(id: Option<&types::Spiffeid>) -> String {
    id.map(|i| format!("spiffe://{}{}", i.trust_domain, i.path))
        .unwrap_or_default()
}

impl Admin {
    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self, Error> {
        let abs = std::path::absolute(path).map_err(|source| Error::Socket {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        let endpoint =
            Endpoint::from_shared(format!("unix://{}", abs.display())).map_err(|source| {
                Error::Socket {
                    path: path.to_path_buf(),
                    source: Box::new(source),
                }
            })?;
        let channel = endpoint.connect().await.map_err(|source| Error::Socket {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        Ok(Admin { channel })
    }

    /// The X.509 authorities (DER) of the server's own trust domain.
    pub async fn x509_authorities(&self) -> Result<Vec<Vec<u8>>, Error> {
        let mut c = bundlepb::bundle_client::BundleClient::new(self.channel.clone());
        let b = c
            .get_bundle(bundlepb::GetBundleRequest::default())
            .await
            .map_err(rpc("GetBundle"))?
            .into_inner();
        if b.x509_authorities.is_empty() {
            return Err(Error::Setup(
                "the server's bundle has no X.509 authorities".into(),
            ));
        }
        Ok(b.x509_authorities.into_iter().map(|a| a.asn1).collect())
    }

    /// Creates join token `token` valid for `ttl_secs`, optionally mapping the agent to
    /// `alias` (the server then creates the alias entry).
    pub async fn create_join_token(
        &self,
        token: &str,
        ttl_secs: i32,
        alias: Option<&SpiffeId>,
    ) -> Result<(), Error> {
        let mut c = agentpb::agent_client::AgentClient::new(self.channel.clone());
        c.create_join_token(agentpb::CreateJoinTokenRequest {
            ttl: ttl_secs,
            token: token.to_owned(),
            agent_id: alias.map(spiffe_id_pb),
        })
        .await
        .map_err(rpc("CreateJoinToken"))?;
        Ok(())
    }

    /// `BatchCreateEntry`; returns per entry its ID or the server's error message.
    pub async fn create_entries(
        &self,
        entries: Vec<types::Entry>,
    ) -> Result<Vec<Result<String, String>>, Error> {
        let n = entries.len();
        let mut c = entrypb::entry_client::EntryClient::new(self.channel.clone());
        let r = c
            .batch_create_entry(entrypb::BatchCreateEntryRequest {
                entries,
                output_mask: None,
            })
            .await
            .map_err(rpc("BatchCreateEntry"))?
            .into_inner();
        if r.results.len() != n {
            return Err(Error::Setup(format!(
                "BatchCreateEntry returned {} results for {n} entries",
                r.results.len()
            )));
        }
        Ok(r.results
            .into_iter()
            .map(|res| {
                let code = res.status.as_ref().map_or(0, |s| s.code);
                match (code, res.entry) {
                    (0, Some(e)) => Ok(e.id),
                    (0, None) => Err("no entry in result".to_owned()),
                    (code, _) => Err(format!(
                        "{} (code {code})",
                        res.status.map(|s| s.message).unwrap_or_default()
                    )),
                }
            })
            .collect())
    }

    /// `BatchDeleteEntry`; returns how many were deleted.
    pub async fn delete_entries(&self, ids: Vec<String>) -> Result<usize, Error> {
        let mut c = entrypb::entry_client::EntryClient::new(self.channel.clone());
        let r = c
            .batch_delete_entry(entrypb::BatchDeleteEntryRequest { ids })
            .await
            .map_err(rpc("BatchDeleteEntry"))?
            .into_inner();
        Ok(r.results
            .iter()
            .filter(|res| res.status.as_ref().is_none_or(|s| s.code == 0))
            .count())
    }
}

/// A registration entry in the shape the tool creates: `spiffe_id` under `parent`, with 2–4
/// workload selectors chosen from `seed`.
pub fn workload_entry(spiffe_id: &SpiffeId, parent: &SpiffeId, seed: usize) -> types::Entry {
    types::Entry {
        spiffe_id: Some(spiffe_id_pb(spiffe_id)),
        parent_id: Some(spiffe_id_pb(parent)),
        selectors: workload_selectors(seed),
        ..Default::default()
    }
}

/// 2, 3 or 4 selectors (by `seed % 3`) of the kinds a Kubernetes/Unix fleet registers.
pub fn workload_selectors(seed: usize) -> Vec<types::Selector> {
    let all = [
        ("k8s", format!("ns:ns-{}", seed % 7)),
        ("k8s", format!("sa:sa-{seed}")),
        ("unix", format!("uid:{}", 1000 + seed % 50_000)),
        ("docker", format!("label:app:w{seed}")),
    ];
    let n = 2 + seed % 3;
    all.into_iter()
        .take(n)
        .map(|(t, v)| types::Selector {
            r#type: t.to_owned(),
            value: v,
        })
        .collect()
}

/// The agent ID a join token attests to.
pub fn join_token_agent_id(td: &TrustDomain, token: &str) -> Result<SpiffeId, Error> {
    td.spiffe_id(&format!("/spire/agent/join_token/{token}"))
        .map_err(|e| Error::Setup(format!("invalid join token {token:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_counts_vary_from_two_to_four() {
        let counts: Vec<usize> = (0..6).map(|s| workload_selectors(s).len()).collect();
        assert_eq!(counts, [2, 3, 4, 2, 3, 4]);
        let sels = workload_selectors(4);
        assert_eq!(sels[0].r#type, "k8s");
        assert_eq!(sels[1].value, "sa:sa-4");
    }

    #[test]
    fn ids_round_trip() {
        let td: TrustDomain = "example.org".parse().unwrap();
        let id = join_token_agent_id(&td, "abc").unwrap();
        assert_eq!(
            spiffe_id_string(Some(&spiffe_id_pb(&id))),
            "spiffe://example.org/spire/agent/join_token/abc"
        );
        assert_eq!(spiffe_id_string(None), "");
    }
}
