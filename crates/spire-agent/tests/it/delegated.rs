//! The admin socket of the real `spire-agent` binary (attested to the real `spire-server`):
//! SPIRE's Delegated Identity API called with the `spire-api` 0.11 crate (a client nobody in
//! this project wrote), `spire-agent debug getinfo` and `spire-agent logger get|set|reset`.
//!
//! The test process is the delegate: the unix attestor (with path discovery) gives it
//! `unix:path:<test binary>`, and the entries registered for that selector decide what it may
//! do. The workload it acts for is a `sleep` process. `x509_svid_cache_max_size = 1` makes the
//! workload's SVID one the agent signs only because a delegated subscription asks for it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt as _;
use spiffe::transport::{GrpcStatusCode, TransportError};
use spire_api::selectors::Selector as ApiSelector;
use spire_api::{DelegateAttestationRequest, DelegatedIdentityClient, DelegatedIdentityError};
use spire_proto::agent::delegatedidentity as pb;
use spire_testkit::{Process, wait_until};

use super::common::{Env, TD, WAIT};

const DELEGATE: &str = "spiffe://example.org/delegate";
const NOT_A_DELEGATE: &str = "spiffe://example.org/not-a-delegate";
const WORKLOAD: &str = "spiffe://example.org/workload";

/// [`Env`] whose agent authorizes [`DELEGATE`] and caches one X.509-SVID.
fn start() -> Env {
    Env::start_with(|cfg| {
        cfg.setting("authorized_delegates", &format!("[\"{DELEGATE}\"]"))
            .setting("x509_svid_cache_max_size", "1")
    })
}

async fn client(env: &Env) -> DelegatedIdentityClient {
    DelegatedIdentityClient::connect_to(format!("unix://{}", env.admin.display()))
        .await
        .unwrap()
}

type RawClient = pb::delegated_identity_client::DelegatedIdentityClient<tonic::transport::Channel>;

async fn raw_client(env: &Env) -> RawClient {
    let ch = spire_agent::cli::uds_channel(&env.admin).await.unwrap();
    pb::delegated_identity_client::DelegatedIdentityClient::new(ch)
}

/// SubscribeToX509SVIDs on the raw wire for `selectors` (type, value) or `pid`.
async fn raw_x509_svids(
    raw: &mut RawClient,
    selectors: &[(&str, &str)],
    pid: i32,
) -> Result<tonic::Streaming<pb::SubscribeToX509sviDsResponse>, tonic::Status> {
    let selectors = selectors
        .iter()
        .map(|(t, v)| spire_proto::types::Selector {
            r#type: (*t).to_owned(),
            value: (*v).to_owned(),
        })
        .collect();
    raw.subscribe_to_x509svi_ds(pb::SubscribeToX509sviDsRequest { selectors, pid })
        .await
        .map(tonic::Response::into_inner)
}

/// The status `stream` ends with (items before it are skipped).
async fn end_status<T>(
    stream: &mut (impl futures::Stream<Item = Result<T, DelegatedIdentityError>> + Unpin),
) -> (GrpcStatusCode, String) {
    loop {
        match stream.next().await.expect("the stream ends with a status") {
            Ok(_) => continue,
            Err(e) => return status_of(&e),
        }
    }
}

/// The executable of `pid` as the unix attestor reports it.
fn exe_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap()
        .display()
        .to_string()
}

fn status_of(e: &DelegatedIdentityError) -> (GrpcStatusCode, String) {
    match e {
        DelegatedIdentityError::Transport(TransportError::Status(s)) => {
            (s.code(), s.message().to_owned())
        }
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

fn selectors_of(workload_exe: &str) -> DelegateAttestationRequest {
    DelegateAttestationRequest::for_selectors(vec![ApiSelector::Generic((
        "unix".to_owned(),
        format!("path:{workload_exe}"),
    ))])
    .unwrap()
}

/// Every Delegated Identity RPC, each answering with a status (or `None` when it succeeded).
async fn all_rpcs(
    c: &DelegatedIdentityClient,
    workload_exe: &str,
) -> Vec<(&'static str, Option<(GrpcStatusCode, String)>)> {
    let x509 = c.fetch_x509_svid(selectors_of(workload_exe)).await;
    let x509_bundles = c.fetch_x509_bundles().await;
    let jwt = c
        .fetch_jwt_svids(&["aud"], selectors_of(workload_exe))
        .await;
    let jwt_bundles = c.fetch_jwt_bundles().await;
    vec![
        ("SubscribeToX509SVIDs", x509.err().map(|e| status_of(&e))),
        (
            "SubscribeToX509Bundles",
            x509_bundles.err().map(|e| status_of(&e)),
        ),
        ("FetchJWTSVIDs", jwt.err().map(|e| status_of(&e))),
        (
            "SubscribeToJWTBundles",
            jwt_bundles.err().map(|e| status_of(&e)),
        ),
    ]
}

async fn assert_all_denied(c: &DelegatedIdentityClient, workload_exe: &str, message: &str) {
    for (rpc, got) in all_rpcs(c, workload_exe).await {
        assert_eq!(
            got,
            Some((GrpcStatusCode::PermissionDenied, message.to_owned())),
            "{rpc}"
        );
    }
}

fn verify_chain(chain: &[Vec<u8>], authorities: Vec<Vec<u8>>) -> String {
    let td: spire_spiffe::TrustDomain = TD.parse().unwrap();
    let mut bundle = spire_spiffe::Bundle::new(td);
    bundle.x509_authorities = authorities;
    spire_crypto::validate_x509_svid(chain, &bundle, std::time::SystemTime::now())
        .unwrap()
        .to_string()
}

#[test]
fn delegated_identity_api_serves_authorized_delegates_only() {
    let env = start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(delegated_flow(&env));
}

async fn delegated_flow(env: &Env) {
    let mut workload = Process::start("sleep", ["600"]).unwrap();
    let workload_pid = workload.pid();
    let workload_exe = exe_of(workload_pid);
    let me = exe_of(std::process::id());
    let c = client(env).await;

    // 1. The caller matches no entry at all.
    assert_all_denied(&c, &workload_exe, "no identity issued").await;

    // 2. The caller has an identity, but not one listed in authorized_delegates.
    env.entry(NOT_A_DELEGATE, &[&format!("unix:path:{me}")], &[]);
    wait_until(WAIT, "the caller has an identity", async || {
        c.fetch_x509_bundles()
            .await
            .err()
            .is_some_and(|e| status_of(&e).1 != "no identity issued")
    })
    .await
    .unwrap();
    assert_all_denied(
        &c,
        &workload_exe,
        "caller not configured as an authorized delegate",
    )
    .await;

    // 3. An authorized delegate.
    let delegate_entry = env.entry(DELEGATE, &[&format!("unix:path:{me}")], &[]);
    wait_until(WAIT, "the caller is an authorized delegate", async || {
        c.fetch_x509_bundles().await.is_ok()
    })
    .await
    .unwrap();
    // The workload's entry is the newest of three: beyond x509_svid_cache_max_size = 1.
    env.entry(WORKLOAD, &[&format!("unix:path:{workload_exe}")], &[]);

    // X.509 bundles: the local trust domain's CAs, keyed by trust-domain ID.
    let bundles = c.fetch_x509_bundles().await.unwrap();
    let td = spiffe::TrustDomain::new(TD).unwrap();
    let authorities: Vec<Vec<u8>> = bundles
        .get(&td)
        .expect("local bundle")
        .authorities()
        .iter()
        .map(|a| a.as_bytes().to_vec())
        .collect();
    assert!(!authorities.is_empty());
    // The raw wire: keys are trust-domain IDs, as SPIRE sends them.
    let mut raw = raw_client(env).await;
    let first = raw
        .subscribe_to_x509_bundles(pb::SubscribeToX509BundlesRequest {})
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.ca_certificates.keys().collect::<Vec<_>>(),
        vec!["spiffe://example.org"]
    );

    // X.509-SVID by selectors (the workload entry may take a moment to reach the agent).
    let mut by_selectors = None;
    wait_until(
        WAIT,
        "the workload's SVID reaches the delegate",
        async || match c.fetch_x509_svid(selectors_of(&workload_exe)).await {
            Ok(svid) => {
                by_selectors = Some(svid);
                true
            }
            Err(_) => false,
        },
    )
    .await
    .unwrap();
    let svid = by_selectors.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), WORKLOAD);
    let chain: Vec<Vec<u8>> = svid
        .cert_chain()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    assert_eq!(verify_chain(&chain, authorities.clone()), WORKLOAD);

    // X.509-SVID by pid: the agent attests the workload process itself.
    let pid = spire_api::DelegatePid::try_from(workload_pid).unwrap();
    let by_pid = c
        .fetch_x509_svid(DelegateAttestationRequest::Pid(pid))
        .await
        .unwrap();
    assert_eq!(by_pid.spiffe_id().to_string(), WORKLOAD);
    assert_eq!(by_pid.leaf().as_bytes(), svid.leaf().as_bytes());

    // JWT-SVIDs by selectors and by pid; they validate against the delegated JWT bundles.
    let jwt_bundles = c.fetch_jwt_bundles().await.unwrap();
    for req in [
        selectors_of(&workload_exe),
        DelegateAttestationRequest::Pid(pid),
    ] {
        let svids = c.fetch_jwt_svids(&["the-audience"], req).await.unwrap();
        assert_eq!(svids.len(), 1);
        let validated =
            spiffe::JwtSvid::parse_and_validate(svids[0].token(), &jwt_bundles, &["the-audience"])
                .unwrap();
        assert_eq!(validated.spiffe_id().to_string(), WORKLOAD);
    }
    // The raw wire carries the SPIFFE ID as trust domain name and path, and iat.
    let raw_jwt = raw
        .fetch_jwtsvi_ds(pb::FetchJwtsviDsRequest {
            audience: vec!["a".to_owned()],
            selectors: Vec::new(),
            pid: i32::try_from(workload_pid).unwrap(),
        })
        .await
        .unwrap()
        .into_inner();
    let id = raw_jwt.svids[0].id.clone().unwrap();
    assert_eq!(
        (id.trust_domain.as_str(), id.path.as_str()),
        (TD, "/workload")
    );
    assert!(raw_jwt.svids[0].issued_at > 0);
    assert!(raw_jwt.svids[0].expires_at > raw_jwt.svids[0].issued_at);

    // A workload without entries gets an empty SVID list, and FetchJWTSVIDs "no identity".
    let nobody = DelegateAttestationRequest::for_selectors(vec![ApiSelector::Generic((
        "unix".to_owned(),
        "path:/nonexistent".to_owned(),
    ))])
    .unwrap();
    let empty = raw_x509_svids(&mut raw, &[("unix", "path:/nonexistent")], 0)
        .await
        .unwrap()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert!(empty.x509_svids.is_empty());
    let err = c.fetch_jwt_svids(&["a"], nobody).await.unwrap_err();
    assert_eq!(
        status_of(&err),
        (
            GrpcStatusCode::PermissionDenied,
            "no identity issued".to_owned()
        )
    );

    // Invalid requests, one by one (the spire-api client cannot express them).
    let both = raw_x509_svids(&mut raw, &[("unix", "uid:0")], 1)
        .await
        .unwrap_err();
    let neither = raw_x509_svids(&mut raw, &[], 0).await.unwrap_err();
    let neither_jwt = raw
        .fetch_jwtsvi_ds(pb::FetchJwtsviDsRequest {
            audience: vec!["a".to_owned()],
            selectors: Vec::new(),
            pid: 0,
        })
        .await
        .unwrap_err();
    for s in [&both, &neither, &neither_jwt] {
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "must provide either selectors or non-zero PID, but not both"
        );
    }
    let bad_selector = raw_x509_svids(&mut raw, &[("", "x")], 0).await.unwrap_err();
    assert_eq!(bad_selector.code(), tonic::Code::InvalidArgument);
    assert_eq!(bad_selector.message(), "could not parse provided selectors");
    let no_audience = raw
        .fetch_jwtsvi_ds(pb::FetchJwtsviDsRequest {
            audience: Vec::new(),
            selectors: Vec::new(),
            pid: i32::try_from(workload_pid).unwrap(),
        })
        .await
        .unwrap_err();
    assert_eq!(no_audience.code(), tonic::Code::InvalidArgument);
    assert_eq!(no_audience.message(), "audience must be specified");

    // A pid that is not a running process cannot be attested.
    workload.terminate(Duration::from_secs(30));
    let gone = raw_x509_svids(&mut raw, &[], i32::try_from(workload_pid).unwrap())
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::Unavailable);
    assert_eq!(gone.message(), "workload attestation failed");

    // Open streams end when the delegate loses its authorization.
    let mut svids = c
        .stream_x509_svids(selectors_of(&workload_exe))
        .await
        .unwrap();
    let mut bundle_stream = c.stream_jwt_bundles().await.unwrap();
    assert_eq!(
        svids.next().await.unwrap().unwrap().spiffe_id().to_string(),
        WORKLOAD
    );
    assert!(bundle_stream.next().await.unwrap().is_ok());
    env.server.delete_entry(&delegate_entry);
    let denied = (
        GrpcStatusCode::PermissionDenied,
        "caller not configured as an authorized delegate".to_owned(),
    );
    assert_eq!(end_status(&mut svids).await, denied);
    assert_eq!(end_status(&mut bundle_stream).await, denied);
    assert_all_denied(
        &c,
        &workload_exe,
        "caller not configured as an authorized delegate",
    )
    .await;

    debug_and_logger(env);
}

/// `spire-agent debug getinfo` and `spire-agent logger` against the same agent.
fn debug_and_logger(env: &Env) {
    let out = env.admin_cli(&["debug", "getinfo", "-output", "json"]);
    out.assert_success();
    let info = out.stdout_json().unwrap();
    let chain = info["svid_chain"].as_array().unwrap();
    assert!(chain.len() >= 2, "{info}");
    assert_eq!(chain[0]["id"]["trust_domain"], TD);
    assert!(
        chain[0]["id"]["path"]
            .as_str()
            .unwrap()
            .starts_with("/spire/agent/join_token/"),
        "{info}"
    );
    // The chain ends with the root CA of the trust domain (ID without a path).
    assert_eq!(chain.last().unwrap()["id"]["path"], "", "{info}");
    assert!(
        info["last_sync_success"]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
            > 0
    );
    assert!(
        info["cached_x509_svids_count"].as_i64().unwrap() >= 1,
        "{info}"
    );
    assert!(
        info["cached_jwt_svids_count"].as_i64().unwrap() >= 1,
        "{info}"
    );
    assert!(info["uptime"].as_i64().unwrap() >= 0);
    let pretty = env.admin_cli(&["debug", "getinfo"]);
    pretty.assert_success();
    assert!(
        pretty.stdout.starts_with("Agent Debug Info:\n"),
        "{}",
        pretty.stdout
    );
    assert!(
        pretty.stdout.contains("  SVID Chain:\n"),
        "{}",
        pretty.stdout
    );

    let get = env.admin_cli(&["logger", "get"]);
    get.assert_success();
    assert_eq!(get.stdout, "Logger Level : debug\nLaunch Level : debug\n\n");
    let set = env.admin_cli(&["logger", "set", "-level", "warn", "-output", "json"]);
    set.assert_success();
    let v = set.stdout_json().unwrap();
    assert_eq!(v["current_level"], "WARN");
    assert_eq!(v["launch_level"], "DEBUG");
    let bad = env.admin_cli(&["logger", "set", "-level", "loud"]);
    assert!(!bad.success());
    assert!(
        bad.stderr.contains("is not a valid setting"),
        "{}",
        bad.stderr
    );
    let reset = env.admin_cli(&["logger", "reset"]);
    reset.assert_success();
    assert_eq!(
        reset.stdout,
        "Logger Level : debug\nLaunch Level : debug\n\n"
    );
}
