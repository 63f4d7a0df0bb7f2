//! A fake Kubernetes API server and kubelet on one HTTPS listener, speaking the real JSON:
//! `authentication.k8s.io/v1` TokenReview (ES256 projected tokens signed by the fake
//! cluster's key, audiences checked as the API server does), core/v1 Pod and Node GETs,
//! ConfigMap GET/PATCH (merge patch with `resourceVersion` preconditions)/PUT, and the
//! kubelet's `/pods` PodList. API calls need the admin bearer token, `/pods` the kubelet one.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use spire_plugin_k8s::api::{ConfigMap, Node, ObjectMeta, Pod, PodList, TokenReview};
use spire_testkit::{LeafSpec, TestCa};

pub const ADMIN_TOKEN: &str = "fake-apiserver-admin-token";
pub const KUBELET_TOKEN: &str = "fake-kubelet-reader-token";

#[derive(Debug, Default)]
pub struct State {
    pub pods: Vec<Pod>,
    pub nodes: Vec<Node>,
    pub config_maps: BTreeMap<(String, String), ConfigMap>,
    pub resource_version: u64,
    pub kubelet_fetches: usize,
    pub config_map_writes: usize,
    pub token_reviews: usize,
}

pub struct FakeK8s {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    pub ca_path: PathBuf,
    cluster_key: rcgen::KeyPair,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeK8s {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct PodRef {
    name: String,
    uid: String,
}
#[derive(Debug, Serialize, Deserialize)]
struct SaRef {
    name: String,
    uid: String,
}
#[derive(Debug, Serialize, Deserialize)]
struct K8sClaims {
    namespace: String,
    pod: PodRef,
    serviceaccount: SaRef,
}
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Vec<String>,
    exp: u64,
    iat: u64,
    #[serde(rename = "kubernetes.io")]
    k8s: K8sClaims,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A projected service-account token signed by `key`.
pub fn mint_token(
    key: &rcgen::KeyPair,
    ns: &str,
    sa: &str,
    pod: &str,
    pod_uid: &str,
    aud: &[&str],
) -> String {
    let claims = Claims {
        iss: "https://kubernetes.default.svc.cluster.local".into(),
        sub: format!("system:serviceaccount:{ns}:{sa}"),
        aud: aud.iter().map(|s| s.to_string()).collect(),
        exp: now() + 3600,
        iat: now(),
        k8s: K8sClaims {
            namespace: ns.into(),
            pod: PodRef {
                name: pod.into(),
                uid: pod_uid.into(),
            },
            serviceaccount: SaRef {
                name: sa.into(),
                uid: "sa-uid".into(),
            },
        },
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap()
}

impl FakeK8s {
    pub async fn start(dir: &Path) -> FakeK8s {
        let ca = TestCa::new("fake-k8s-ca");
        let leaf = ca.issue(&LeafSpec::new("fake-apiserver").dns("localhost"));
        let ca_path = dir.join("k8s-ca.pem");
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(leaf.chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cluster_key = rcgen::KeyPair::generate().unwrap();
        let public_pem = cluster_key.public_key_pem();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let st = st.clone();
                let public_pem = public_pem.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        let public_pem = public_pem.clone();
                        async move { Ok::<_, Infallible>(handle(req, &st, &public_pem).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        FakeK8s {
            addr,
            state,
            ca_path,
            cluster_key,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A token signed by this cluster's key.
    pub fn token(&self, ns: &str, sa: &str, pod: &str, pod_uid: &str, aud: &[&str]) -> String {
        mint_token(&self.cluster_key, ns, sa, pod, pod_uid, aud)
    }

    /// A kubeconfig naming this server as `https://localhost:<port>` with `token`.
    pub fn kubeconfig(&self, dir: &Path, token: &str) -> PathBuf {
        let path = dir.join(format!("kubeconfig-{}", token.len()));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: https://localhost:{}\n    certificate-authority: {}\nusers:\n- name: spire\n  user:\n    token: {token}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: spire\ncurrent-context: fake\n",
                self.port(),
                self.ca_path.display()
            ),
        )
        .unwrap();
        path
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }
}

fn respond(code: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn k8s_status(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    respond(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

fn check_review(review: &TokenReview, public_pem: &str) -> Value {
    let audiences = if review.spec.audiences.is_empty() {
        vec!["https://kubernetes.default.svc.cluster.local".to_owned()]
    } else {
        review.spec.audiences.clone()
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&audiences);
    let key = jsonwebtoken::DecodingKey::from_ec_pem(public_pem.as_bytes()).unwrap();
    match jsonwebtoken::decode::<Claims>(&review.spec.token, &key, &validation) {
        Ok(data) => {
            let c = data.claims;
            let matched: Vec<&String> = audiences.iter().filter(|a| c.aud.contains(a)).collect();
            json!({
                "authenticated": true,
                "user": {
                    "username": c.sub,
                    "uid": c.k8s.serviceaccount.uid,
                    "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{}", c.k8s.namespace), "system:authenticated"],
                    "extra": {
                        "authentication.kubernetes.io/pod-name": [c.k8s.pod.name],
                        "authentication.kubernetes.io/pod-uid": [c.k8s.pod.uid],
                    },
                },
                "audiences": matched,
            })
        }
        Err(e) => {
            json!({"authenticated": false, "user": {}, "error": format!("[invalid bearer token, {e}]")})
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    st: &Mutex<State>,
    public_pem: &str,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return k8s_status(StatusCode::BAD_REQUEST, "BadRequest", "unreadable body"),
    };
    if path == "/pods" {
        if auth != format!("Bearer {KUBELET_TOKEN}") {
            return Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .body(Full::new(Bytes::from("Unauthorized")))
                .unwrap();
        }
        let mut s = st.lock().unwrap();
        s.kubelet_fetches += 1;
        let list = PodList {
            items: s.pods.clone(),
        };
        return respond(
            StatusCode::OK,
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": list.items}),
        );
    }
    if auth != format!("Bearer {ADMIN_TOKEN}") {
        return k8s_status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        (Method::POST, ["apis", "authentication.k8s.io", "v1", "tokenreviews"]) => {
            let Ok(mut review) = serde_json::from_slice::<TokenReview>(&body) else {
                return k8s_status(StatusCode::BAD_REQUEST, "BadRequest", "not a TokenReview");
            };
            if review.api_version != "authentication.k8s.io/v1" || review.kind != "TokenReview" {
                return k8s_status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "wrong apiVersion/kind",
                );
            }
            st.lock().unwrap().token_reviews += 1;
            let status = check_review(&review, public_pem);
            review.status = serde_json::from_value(status).unwrap();
            review.spec.token.clear();
            respond(StatusCode::CREATED, serde_json::to_value(&review).unwrap())
        }
        (Method::GET, ["api", "v1", "namespaces", ns, "pods", name]) => {
            let s = st.lock().unwrap();
            match s
                .pods
                .iter()
                .find(|p| p.metadata.namespace == *ns && p.metadata.name == *name)
            {
                Some(p) => respond(StatusCode::OK, serde_json::to_value(p).unwrap()),
                None => k8s_status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("pods \"{name}\" not found"),
                ),
            }
        }
        (Method::GET, ["api", "v1", "nodes", name]) => {
            let s = st.lock().unwrap();
            match s.nodes.iter().find(|n| n.metadata.name == *name) {
                Some(n) => respond(StatusCode::OK, serde_json::to_value(n).unwrap()),
                None => k8s_status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("nodes \"{name}\" not found"),
                ),
            }
        }
        (m, ["api", "v1", "namespaces", ns, "configmaps", name]) => {
            let mut s = st.lock().unwrap();
            let key = (ns.to_string(), name.to_string());
            let Some(current) = s.config_maps.get(&key).cloned() else {
                return k8s_status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("configmaps \"{name}\" not found"),
                );
            };
            let Ok(patch) = serde_json::from_slice::<Value>(&body).or_else(|e| {
                if m == Method::GET {
                    Ok(Value::Null)
                } else {
                    Err(e)
                }
            }) else {
                return k8s_status(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
            };
            let wanted_rv = patch
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            if m != Method::GET
                && !wanted_rv.is_empty()
                && wanted_rv != current.metadata.resource_version
            {
                return k8s_status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "the object has been modified",
                );
            }
            let mut next = current.clone();
            match m {
                Method::GET => {
                    return respond(StatusCode::OK, serde_json::to_value(&current).unwrap());
                }
                Method::PATCH => {
                    if let Some(data) = patch.get("data").and_then(Value::as_object) {
                        for (k, v) in data {
                            match v.as_str() {
                                Some(v) => {
                                    next.data.insert(k.clone(), v.to_owned());
                                }
                                None => {
                                    next.data.remove(k);
                                }
                            }
                        }
                    }
                }
                Method::PUT => {
                    let Ok(cm) = serde_json::from_value::<ConfigMap>(patch) else {
                        return k8s_status(
                            StatusCode::BAD_REQUEST,
                            "BadRequest",
                            "not a ConfigMap",
                        );
                    };
                    next.data = cm.data;
                }
                _ => {
                    return k8s_status(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "MethodNotAllowed",
                        "method not allowed",
                    );
                }
            }
            s.resource_version += 1;
            next.metadata.resource_version = s.resource_version.to_string();
            s.config_map_writes += 1;
            s.config_maps.insert(key, next.clone());
            respond(StatusCode::OK, serde_json::to_value(&next).unwrap())
        }
        _ => k8s_status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

/// An empty ConfigMap `ns/name`.
pub fn config_map(ns: &str, name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: name.into(),
            namespace: ns.into(),
            uid: "cm-uid".into(),
            resource_version: "1".into(),
            ..Default::default()
        },
        data: BTreeMap::new(),
    }
}
