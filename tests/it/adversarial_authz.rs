//! Issue 12 §1 (impersonation) against the real `spire-server` binary over mTLS on loopback,
//! driven by a hand-built tonic client that behaves like a hostile agent.
//!
//! Covered elsewhere (not repeated here):
//! - agent A asking for agent B's entries (BatchNewX509SVID, NewJWTSVID, GetAuthorizedEntries),
//!   an attested agent calling CountAgents, an anonymous TLS caller:
//!   crates/spire-server/tests/it/agent_protocol.rs `agents_only_get_svids_for_their_entries`
//! - a banned agent, an evicted agent: agent_protocol.rs `banned_agent_is_refused_on_its_next_call`,
//!   crates/spire-agent/tests/it/manager_e2e.rs `banned_join_token_agent_stops`
//! - a non-admin SVID calling admin RPCs, an unattested `/spire/agent/...` SVID, a
//!   non-downstream SVID calling NewDownstreamX509CA:
//!   agent_protocol.rs `admin_and_downstream_callers_over_tcp`
//! - join-token reuse and expiry: agent_protocol.rs `join_token_attests_once_and_not_after_expiry`
//! - a workload of another uid, another binary under a `sha256` selector, an unregistered uid:
//!   crates/spire-agent/tests/it/workload_e2e.rs `callers_get_only_their_own_identities`
//!
//! Here: an expired agent SVID, a client certificate from a foreign CA, a forged agent SVID
//! chaining to the trusted root (wrong serial), the remaining admin RPCs and
//! NewDownstreamX509CA called with an agent SVID, reserved IDs at entry create/update, and
//! CSRs asking for extra SANs or a CA flag (ignored).

use std::time::{Duration, SystemTime};

use spire_crypto::{KeyType, PrivateKey};
use spire_proto::server::{agent as apb, entry as epb, svid as spb};
use spire_proto::types;
use spire_testkit::{LeafSpec, TestCa};
use spire_tls::Identity;
use tonic::Code;

use crate::common::{Agent, Server, TD, WAIT, attest_token, attest_with_csr, parse_cert};

async fn authorized(server: &Server, identity: Identity) -> Result<Vec<String>, tonic::Status> {
    let mut c = epb::entry_client::EntryClient::new(server.channel(Some(identity)).await);
    let r = c
        .get_authorized_entries(epb::GetAuthorizedEntriesRequest { output_mask: None })
        .await?;
    Ok(r.into_inner().entries.into_iter().map(|e| e.id).collect())
}

/// A TLS-level refusal of the client certificate surfaces as a failed call (the server's
/// handshake alert closes the connection, which tonic reports as Cancelled "connection closed"
/// or Unavailable "transport error"): never as an answer.
fn assert_tls_refusal(r: Result<Vec<String>, tonic::Status>, what: &str) {
    let e = r.expect_err(what);
    assert!(
        matches!(
            e.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
        ),
        "{what}: expected a transport failure, got {e:?}"
    );
}

fn not_after(der: &[u8]) -> SystemTime {
    let ts = parse_cert(der).validity().not_after.timestamp();
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(ts).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_agent_svid_is_refused() {
    // A short agent TTL so the agent's own SVID expires during the test.
    let server = Server::start(|c| c.string_setting("agent_ttl", "8s"));
    let agent = attest_token(&server, &server.token()).await.unwrap();
    // While valid, the SVID is accepted.
    authorized(&server, agent.identity()).await.unwrap();
    let expiry = not_after(&agent.chain[0]);
    let remaining = expiry.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(remaining <= Duration::from_secs(9), "agent_ttl not applied");
    tokio::time::sleep(remaining + Duration::from_secs(2)).await;
    assert_tls_refusal(
        authorized(&server, agent.identity()).await,
        "an expired agent SVID must be refused",
    );
    // Renewing with the expired SVID is refused too.
    let mut c = apb::agent_client::AgentClient::new(server.channel(Some(agent.identity())).await);
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let e = c
        .renew_agent(apb::RenewAgentRequest {
            params: Some(apb::AgentX509svidParams {
                csr: spire_crypto::create_csr(&key, None).unwrap(),
            }),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
        ),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_and_forged_client_certificates_are_refused() {
    let server = Server::start_with_upstream(|c| c);
    let agent = attest_token(&server, &server.token()).await.unwrap();
    authorized(&server, agent.identity()).await.unwrap();

    // A certificate for the agent's ID from a CA the server does not trust.
    let foreign = TestCa::new("foreign CA");
    let forged = foreign.issue(&LeafSpec::new("impostor").uri(&agent.id()).validity(
        time::OffsetDateTime::now_utc() - time::Duration::hours(1),
        time::OffsetDateTime::now_utc() + time::Duration::hours(1),
    ));
    let id = identity_of(&forged.cert_der, &forged.key_pem);
    assert_tls_refusal(
        authorized(&server, id).await,
        "a client certificate from a foreign CA must be refused",
    );

    // A certificate for the agent's ID that does chain to the trusted root (the test holds
    // the upstream key) but is not the SVID the server issued: the serial does not match the
    // attested node's, so it is refused after the handshake.
    let upstream = server.upstream.as_ref().unwrap();
    assert!(
        server.roots().iter().any(|r| r == upstream.cert_der()),
        "the upstream root is in the bundle"
    );
    let forged = upstream.issue(&LeafSpec::new("impostor").uri(&agent.id()));
    let e = authorized(&server, identity_of(&forged.cert_der, &forged.key_pem))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // The genuine SVID still works afterwards.
    authorized(&server, agent.identity()).await.unwrap();
}

fn identity_of(cert_der: &[u8], key_pem: &str) -> Identity {
    let key = pem::parse(key_pem).unwrap().into_contents();
    Identity::from_der(vec![cert_der.to_vec()], key).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_svids_cannot_call_admin_or_downstream_rpcs() {
    let server = Server::start(|c| c);
    let agent = attest_token(&server, &server.token()).await.unwrap();
    let ch = server.channel(Some(agent.identity())).await;
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let csr = spire_crypto::create_csr(&key, None).unwrap();
    let mut agents = apb::agent_client::AgentClient::new(ch.clone());
    let mut entries = epb::entry_client::EntryClient::new(ch.clone());
    let mut svids = spb::svid_client::SvidClient::new(ch);
    let td_id = |path: &str| types::Spiffeid {
        trust_domain: TD.into(),
        path: path.into(),
    };

    let denied = [
        (
            "CreateJoinToken",
            agents
                .create_join_token(apb::CreateJoinTokenRequest {
                    ttl: 600,
                    ..Default::default()
                })
                .await
                .map(drop),
        ),
        (
            "BanAgent",
            agents
                .ban_agent(apb::BanAgentRequest {
                    id: Some(td_id("/spire/agent/join_token/other")),
                })
                .await
                .map(drop),
        ),
        (
            "ListAgents",
            agents
                .list_agents(apb::ListAgentsRequest::default())
                .await
                .map(drop),
        ),
        (
            "BatchCreateEntry",
            entries
                .batch_create_entry(epb::BatchCreateEntryRequest {
                    entries: vec![types::Entry {
                        spiffe_id: Some(td_id("/mine")),
                        parent_id: Some(td_id(&agent_path(&agent))),
                        selectors: vec![types::Selector {
                            r#type: "unix".into(),
                            value: "uid:0".into(),
                        }],
                        ..Default::default()
                    }],
                    output_mask: None,
                })
                .await
                .map(drop),
        ),
        (
            "ListEntries",
            entries
                .list_entries(epb::ListEntriesRequest::default())
                .await
                .map(drop),
        ),
        (
            "MintX509SVID",
            svids
                .mint_x509svid(spb::MintX509svidRequest {
                    csr: spire_crypto::create_csr(
                        &key,
                        Some(&"spiffe://example.org/minted".parse().unwrap()),
                    )
                    .unwrap(),
                    ttl: 0,
                })
                .await
                .map(drop),
        ),
        (
            "MintJWTSVID",
            svids
                .mint_jwtsvid(spb::MintJwtsvidRequest {
                    id: Some(td_id("/minted")),
                    audience: vec!["aud".into()],
                    ttl: 0,
                })
                .await
                .map(drop),
        ),
        (
            "NewDownstreamX509CA",
            svids
                .new_downstream_x509ca(spb::NewDownstreamX509caRequest {
                    csr: csr.clone(),
                    preferred_ttl: 0,
                })
                .await
                .map(drop),
        ),
    ];
    for (rpc, r) in denied {
        let e = r.expect_err(rpc);
        assert_eq!(e.code(), Code::PermissionDenied, "{rpc}: {e:?}");
    }
    // Nothing was created on the agent's behalf.
    let listed = server.ok(&["entry", "show"]);
    assert!(!listed.contains("/mine"), "{listed}");
    let tokens = server.ok(&["agent", "list"]);
    assert!(!tokens.contains("/other"), "{tokens}");
}

fn agent_path(agent: &Agent) -> String {
    agent
        .id()
        .strip_prefix("spiffe://example.org")
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn reserved_ids_are_refused_for_workload_entries() {
    let server = Server::start(|c| c);
    let parent = "spiffe://example.org/node";
    for reserved in [
        "spiffe://example.org/spire/server",
        "spiffe://example.org/spire/agent/join_token/abc",
        "spiffe://example.org/spire/agent/x509pop/whatever",
        "spiffe://example.org/spire",
    ] {
        let out = server.cli(&[
            "entry",
            "create",
            "-spiffeID",
            reserved,
            "-parentID",
            parent,
            "-selector",
            "unix:uid:0",
        ]);
        out.assert_failure();
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(text.contains("is reserved"), "{reserved}: {text}");
    }
    // An ordinary entry cannot be renamed into the reserved space either.
    let created = server.ok(&[
        "entry",
        "create",
        "-spiffeID",
        "spiffe://example.org/ok",
        "-parentID",
        parent,
        "-selector",
        "unix:uid:0",
    ]);
    let entry_id = created
        .lines()
        .find_map(|l| {
            l.strip_prefix("Entry ID")
                .map(|v| v.trim_start_matches([' ', ':']))
        })
        .unwrap()
        .trim()
        .to_owned();
    let out = server.cli(&[
        "entry",
        "update",
        "-entryID",
        &entry_id,
        "-spiffeID",
        "spiffe://example.org/spire/server",
        "-parentID",
        parent,
        "-selector",
        "unix:uid:0",
    ]);
    out.assert_failure();
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("is reserved"),
        "{out:?}"
    );
    let shown = server.ok(&["entry", "show"]);
    assert!(!shown.contains("/spire/"), "{shown}");
}

/// A CSR for a fresh P-256 key with extra URI and DNS SANs and a critical basicConstraints
/// extension claiming cA=TRUE.
fn greedy_csr() -> Vec<u8> {
    let kp = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![
        rcgen::SanType::URI("spiffe://example.org/spire/server".try_into().unwrap()),
        rcgen::SanType::URI("spiffe://example.org/evil".try_into().unwrap()),
        rcgen::SanType::DnsName("evil.example".try_into().unwrap()),
    ];
    // basicConstraints ::= SEQUENCE { cA BOOLEAN TRUE }
    let mut bc = rcgen::CustomExtension::from_oid_content(
        &[2, 5, 29, 19],
        vec![0x30, 0x03, 0x01, 0x01, 0xff],
    );
    bc.set_criticality(true);
    params.custom_extensions = vec![bc];
    params.serialize_request(&kp).unwrap().der().to_vec()
}

fn assert_only_id_and_not_ca(der: &[u8], want_id: &str) {
    let cert = parse_cert(der);
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        names,
        vec![format!("URI({want_id})")],
        "SANs of the issued cert"
    );
    let bc = cert.basic_constraints().unwrap();
    assert!(
        bc.is_none_or(|b| !b.value.ca),
        "issued cert must not be a CA"
    );
    if let Some(ku) = cert.key_usage().unwrap() {
        assert!(!ku.value.key_cert_sign(), "issued cert must not sign certs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn csr_extra_sans_and_ca_flag_are_ignored() {
    let server = Server::start(|c| c);
    // Attestation with a greedy CSR: the agent SVID carries only the agent ID.
    let token = server.token();
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let agent = match attest_with_csr(&server, &token, Some((greedy_csr(), key))).await {
        Ok(a) => {
            assert_only_id_and_not_ca(
                &a.chain[0],
                &format!("spiffe://example.org/spire/agent/join_token/{token}"),
            );
            // The key in the SVID is the CSR's key, not ours: a fresh attestation follows.
            attest_token(&server, &server.token()).await.unwrap()
        }
        Err(e) => {
            // Refusing the CSR outright would be acceptable too; it must not be accepted as is.
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            attest_token(&server, &server.token()).await.unwrap()
        }
    };
    let wanted = "spiffe://example.org/workload";
    let entry = crate::common::register_me(&server, wanted, &agent.id(), &[]);
    spire_testkit::wait_until(WAIT, "the entry to be authorized", async || {
        authorized(&server, agent.identity())
            .await
            .is_ok_and(|ids| ids.contains(&entry))
    })
    .await
    .unwrap();
    let mut svids = spb::svid_client::SvidClient::new(server.channel(Some(agent.identity())).await);
    let resp = svids
        .batch_new_x509svid(spb::BatchNewX509svidRequest {
            params: vec![spb::NewX509svidParams {
                entry_id: entry,
                csr: greedy_csr(),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let r = &resp.results[0];
    assert_eq!(r.status.as_ref().unwrap().code, 0, "{r:?}");
    assert_only_id_and_not_ca(&r.svid.as_ref().unwrap().cert_chain[0], wanted);
}
