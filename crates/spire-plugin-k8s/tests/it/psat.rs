use std::collections::BTreeMap;

use spire_plugin_k8s::api::{Node, ObjectMeta, Pod, PodSpec, PodStatus};
use spire_plugin_k8s::psat::ClusterConfig;
use spire_plugin_k8s::{
    FailureKind, PsatAgent, PsatAgentConfig, PsatError, PsatServer, PsatServerConfig,
};
use spire_spiffe::TrustDomain;

use crate::fake::{ADMIN_TOKEN, FakeK8s};

const POD_UID: &str = "0b8c2e4a-6f1d-4c3b-9a7e-5d2f1e0c9b8a";
const NODE_UID: &str = "7f3e9d2c-1b4a-4e6f-8c5d-9a0b1c2d3e4f";

async fn cluster() -> (tempfile::TempDir, FakeK8s) {
    let dir = tempfile::tempdir().unwrap();
    let k8s = FakeK8s::start(dir.path()).await;
    k8s.with(|s| {
        s.pods.push(Pod {
            metadata: ObjectMeta {
                name: "spire-agent-x7k2p".into(),
                namespace: "spire".into(),
                uid: POD_UID.into(),
                labels: [("app", "spire-agent"), ("secret-ish", "no")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                ..Default::default()
            },
            spec: PodSpec {
                service_account_name: "spire-agent".into(),
                node_name: "node-1".into(),
                ..Default::default()
            },
            status: PodStatus {
                host_ip: "10.0.0.7".into(),
                ..Default::default()
            },
        });
        s.pods.push(Pod {
            metadata: ObjectMeta {
                name: "rogue".into(),
                namespace: "default".into(),
                uid: "rogue-uid".into(),
                ..Default::default()
            },
            spec: PodSpec {
                service_account_name: "default".into(),
                node_name: "node-1".into(),
                ..Default::default()
            },
            ..Default::default()
        });
        s.nodes.push(Node {
            metadata: ObjectMeta {
                name: "node-1".into(),
                uid: NODE_UID.into(),
                labels: [("topology.kubernetes.io/zone", "eu-1a"), ("hidden", "x")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                ..Default::default()
            },
        });
    });
    (dir, k8s)
}

fn server(
    k8s: &FakeK8s,
    dir: &std::path::Path,
    audience: Option<Vec<String>>,
    admin_token: &str,
) -> PsatServer {
    let mut clusters = BTreeMap::new();
    clusters.insert(
        "prod".to_owned(),
        ClusterConfig {
            service_account_allow_list: vec!["spire:spire-agent".into()],
            audience,
            kube_config_file: Some(k8s.kubeconfig(dir, admin_token)),
            allowed_node_label_keys: vec!["topology.kubernetes.io/zone".into()],
            allowed_pod_label_keys: vec!["app".into()],
        },
    );
    PsatServer::new(PsatServerConfig { clusters }).unwrap()
}

fn agent(dir: &std::path::Path, cluster: &str, token: &str) -> PsatAgent {
    let path = dir.join("agent-token");
    std::fs::write(&path, token).unwrap();
    PsatAgent::new(PsatAgentConfig {
        cluster: cluster.into(),
        token_path: Some(path),
    })
    .unwrap()
}

fn td() -> TrustDomain {
    "example.org".parse().unwrap()
}

#[tokio::test]
async fn psat_attests_agent_with_projected_token() {
    let (dir, k8s) = cluster().await;
    let server = server(&k8s, dir.path(), None, ADMIN_TOKEN);
    let token = k8s.token(
        "spire",
        "spire-agent",
        "spire-agent-x7k2p",
        POD_UID,
        &["spire-server"],
    );
    let payload = agent(dir.path(), "prod", &token).payload().unwrap();
    let got = server.attest(&td(), &payload).await.unwrap();
    assert_eq!(
        got.agent_id.to_string(),
        format!("spiffe://example.org/spire/agent/k8s_psat/prod/{NODE_UID}")
    );
    let mut sel: Vec<String> = got.selectors.iter().map(|s| s.to_string()).collect();
    sel.sort();
    let mut want = vec![
        "k8s_psat:cluster:prod".to_owned(),
        "k8s_psat:agent_ns:spire".into(),
        "k8s_psat:agent_sa:spire-agent".into(),
        "k8s_psat:agent_pod_name:spire-agent-x7k2p".into(),
        format!("k8s_psat:agent_pod_uid:{POD_UID}"),
        "k8s_psat:agent_pod_label:app:spire-agent".into(),
        "k8s_psat:agent_node_ip:10.0.0.7".into(),
        "k8s_psat:agent_node_name:node-1".into(),
        format!("k8s_psat:agent_node_uid:{NODE_UID}"),
        "k8s_psat:agent_node_label:topology.kubernetes.io/zone:eu-1a".into(),
    ];
    want.sort();
    assert_eq!(sel, want);

    // Re-attestation with a rotated token yields the same agent ID.
    let token2 = k8s.token(
        "spire",
        "spire-agent",
        "spire-agent-x7k2p",
        POD_UID,
        &["spire-server", "other"],
    );
    let payload = agent(dir.path(), "prod", &token2).payload().unwrap();
    let again = server.attest(&td(), &payload).await.unwrap();
    assert_eq!(again.agent_id, got.agent_id);
    assert_eq!(k8s.with(|s| s.token_reviews), 2);
}

fn refused(r: Result<spire_plugin_k8s::PsatAttested, PsatError>) -> PsatError {
    match r {
        Ok(a) => panic!("attested {} but expected a refusal", a.agent_id),
        Err(e) => e,
    }
}

#[tokio::test]
async fn psat_refusals() {
    let (dir, k8s) = cluster().await;
    let srv = server(&k8s, dir.path(), None, ADMIN_TOKEN);

    // Signed by another key: TokenReview says unauthenticated.
    let other_key = rcgen::KeyPair::generate().unwrap();
    let forged = crate::fake::mint_token(
        &other_key,
        "spire",
        "spire-agent",
        "spire-agent-x7k2p",
        POD_UID,
        &["spire-server"],
    );
    let e = refused(
        srv.attest(
            &td(),
            &agent(dir.path(), "prod", &forged).payload().unwrap(),
        )
        .await,
    );
    assert!(matches!(e, PsatError::NotAuthenticated(_)), "{e}");
    assert_eq!(e.kind(), FailureKind::PermissionDenied);

    // Wrong audience: the token is for another audience.
    let wrong_aud = k8s.token(
        "spire",
        "spire-agent",
        "spire-agent-x7k2p",
        POD_UID,
        &["vault"],
    );
    let e = refused(
        srv.attest(
            &td(),
            &agent(dir.path(), "prod", &wrong_aud).payload().unwrap(),
        )
        .await,
    );
    assert!(matches!(e, PsatError::NotAuthenticated(_)), "{e}");
    // ... and the server configured for another audience refuses a spire-server token.
    let srv_other = server(
        &k8s,
        dir.path(),
        Some(vec!["spire-other".into()]),
        ADMIN_TOKEN,
    );
    let good = k8s.token(
        "spire",
        "spire-agent",
        "spire-agent-x7k2p",
        POD_UID,
        &["spire-server"],
    );
    let e = refused(
        srv_other
            .attest(&td(), &agent(dir.path(), "prod", &good).payload().unwrap())
            .await,
    );
    assert_eq!(e.kind(), FailureKind::PermissionDenied, "{e}");

    // Service account not allow-listed.
    let rogue = k8s.token(
        "default",
        "default",
        "rogue",
        "rogue-uid",
        &["spire-server"],
    );
    let e = refused(
        srv.attest(&td(), &agent(dir.path(), "prod", &rogue).payload().unwrap())
            .await,
    );
    assert!(
        matches!(e, PsatError::NotAllowed(ref a) if a == "default:default"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("\"default:default\" is not an allowed service account"),
        "{e}"
    );

    // Pod not found (deleted after the token was issued).
    let ghost = k8s.token(
        "spire",
        "spire-agent",
        "spire-agent-gone",
        "ghost-uid",
        &["spire-server"],
    );
    let e = refused(
        srv.attest(&td(), &agent(dir.path(), "prod", &ghost).payload().unwrap())
            .await,
    );
    assert!(matches!(e, PsatError::NotFound { what: "pod", .. }), "{e}");
    assert_eq!(e.kind(), FailureKind::PermissionDenied);

    // Unknown cluster and malformed payloads.
    let e = refused(
        srv.attest(
            &td(),
            &agent(dir.path(), "staging", &good).payload().unwrap(),
        )
        .await,
    );
    assert!(
        matches!(e, PsatError::UnknownCluster(ref c) if c == "staging"),
        "{e}"
    );
    assert_eq!(e.kind(), FailureKind::InvalidArgument);
    for bad in [
        &b"not json"[..],
        br#"{"cluster":"prod"}"#,
        br#"{"cluster":"","token":"x"}"#,
    ] {
        let e = refused(srv.attest(&td(), bad).await);
        assert_eq!(e.kind(), FailureKind::InvalidArgument, "{e}");
    }

    // The server's own API credentials are wrong: an internal failure, not a refusal.
    let srv_badcreds = server(&k8s, dir.path(), None, "wrong-admin-token");
    let e = refused(
        srv_badcreds
            .attest(&td(), &agent(dir.path(), "prod", &good).payload().unwrap())
            .await,
    );
    assert_eq!(e.kind(), FailureKind::Internal, "{e}");
    assert!(e.to_string().contains("401"), "{e}");
}
