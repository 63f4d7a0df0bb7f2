//! Fuzz the server half of `k8s_psat` (`spire_plugin_k8s::PsatServer::attest`, which
//! spire-server's `node_attestor::k8s_psat` wraps): the agent's payload
//! (`{"cluster", "token"}`) and the API server's answers it acts on (TokenReview, pod, node),
//! through selector derivation.
//!
//! Input: four parts separated by 0xff bytes: the payload, then the bodies a fake API server
//! (HTTP/1.1 on loopback, in this process) returns for the TokenReview, the pod and the node.
//! An empty body is answered with 404.
#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use spire_plugin_k8s::psat::{ClusterConfig, PsatServer, PsatServerConfig};
use spire_spiffe::TrustDomain;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

type Answers = Arc<Mutex<[Vec<u8>; 3]>>;

struct Setup {
    rt: tokio::runtime::Runtime,
    server: PsatServer,
    answers: Answers,
    td: TrustDomain,
}

/// Serves one keep-alive connection: each request gets the current answer for its path.
async fn serve(mut conn: tokio::net::TcpStream, answers: Answers) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + len);
        let path = head.split_whitespace().nth(1).unwrap_or("");
        let which = if path.contains("tokenreviews") {
            0
        } else if path.contains("/pods/") {
            1
        } else {
            2
        };
        let body = answers.lock().expect("answers lock")[which].clone();
        let status = if body.is_empty() {
            "404 Not Found"
        } else if which == 0 {
            "201 Created"
        } else {
            "200 OK"
        };
        let mut out = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        if conn.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let answers: Answers = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let port = listener.local_addr().expect("local address").port();
        let served = Arc::clone(&answers);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                while let Ok((conn, _)) = listener.accept().await {
                    tokio::spawn(serve(conn, Arc::clone(&served)));
                }
            });
        });
        let kubeconfig = std::env::temp_dir().join(format!(
            "spire-rs-fuzz-k8s-psat-{}.yaml",
            std::process::id()
        ));
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: fuzz\n"
            ),
        )
        .expect("write the kubeconfig");
        let mut clusters = BTreeMap::new();
        clusters.insert(
            "c".to_owned(),
            ClusterConfig {
                service_account_allow_list: vec!["spire:spire-agent".into()],
                audience: None,
                kube_config_file: Some(kubeconfig.clone()),
                allowed_node_label_keys: vec!["zone".into()],
                allowed_pod_label_keys: vec!["app".into()],
            },
        );
        let server = PsatServer::new(PsatServerConfig { clusters }).expect("a valid config");
        let _ = std::fs::remove_file(&kubeconfig);
        Setup {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("client runtime"),
            server,
            answers,
            td: "example.org".parse().expect("a valid trust domain"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = setup();
    let mut parts = data.split(|b| *b == 0xff);
    let payload = parts.next().unwrap_or_default();
    *s.answers.lock().expect("answers lock") = [
        parts.next().unwrap_or_default().to_vec(),
        parts.next().unwrap_or_default().to_vec(),
        parts.next().unwrap_or_default().to_vec(),
    ];
    let result = s.rt.block_on(s.server.attest(&s.td, payload));
    if std::env::var_os("SPIRE_FUZZ_DEBUG").is_some() {
        eprintln!("attest: {result:?}");
    }
    let Ok(a) = result else {
        return;
    };
    // Accepted: only for the configured cluster and allowed service account, with an agent
    // ID under the cluster, and label selectors only for the allowed keys.
    let id = a.agent_id.as_str();
    assert!(
        id.starts_with("spiffe://example.org/spire/agent/k8s_psat/c/"),
        "{id}"
    );
    let values: Vec<String> = a
        .selectors
        .iter()
        .map(|sel| {
            assert_eq!(sel.kind(), "k8s_psat");
            sel.value().to_owned()
        })
        .collect();
    for want in ["cluster:c", "agent_ns:spire", "agent_sa:spire-agent"] {
        assert!(values.iter().any(|v| v == want), "{want} in {values:?}");
    }
    for v in &values {
        if let Some(rest) = v.strip_prefix("agent_node_label:") {
            assert!(rest.starts_with("zone:"), "{v}");
        }
        if let Some(rest) = v.strip_prefix("agent_pod_label:") {
            assert!(rest.starts_with("app:"), "{v}");
        }
    }
});
