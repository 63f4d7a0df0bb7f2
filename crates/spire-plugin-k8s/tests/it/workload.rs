use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use spire_plugin_k8s::api::{ContainerStatus, ObjectMeta, OwnerReference, Pod, PodSpec, PodStatus};
use spire_plugin_k8s::{K8sWorkloadAttestor, K8sWorkloadConfig, WorkloadError};

use crate::fake::{FakeK8s, KUBELET_TOKEN};

static COUNTER: AtomicU64 = AtomicU64::new(1);

/// A fresh (pod UID, container ID) pair.
pub fn ids() -> (String, String) {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let seed = format!("{:016x}{:08x}{:08x}", nanos as u64, std::process::id(), n);
    let uid = format!(
        "{}-{}-{}-{}-{}",
        &seed[0..8],
        &seed[8..12],
        &seed[12..16],
        &seed[16..20],
        &seed[20..32]
    );
    let cid = format!("{seed}{seed}");
    (uid, cid)
}

pub fn pod(name: &str, ns: &str, uid: &str, container_id: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: name.into(),
            namespace: ns.into(),
            uid: uid.into(),
            labels: [(
                "app".to_owned(),
                name.split('-').next().unwrap_or(name).to_owned(),
            )]
            .into(),
            owner_references: vec![OwnerReference {
                kind: "ReplicaSet".into(),
                name: format!("{name}-rs"),
                uid: format!("{uid}-rs"),
            }],
            ..Default::default()
        },
        spec: PodSpec {
            service_account_name: if ns == "production" {
                "backend-service".into()
            } else {
                "default".into()
            },
            node_name: "node-1".into(),
            ..Default::default()
        },
        status: PodStatus {
            phase: "Running".into(),
            container_statuses: vec![ContainerStatus {
                name: "backend".into(),
                image: "ghcr.io/acme/backend:1.4".into(),
                image_id: "ghcr.io/acme/backend@sha256:5e2b9c".into(),
                container_id: if container_id.is_empty() {
                    String::new()
                } else {
                    format!("containerd://{container_id}")
                },
            }],
            ..Default::default()
        },
    }
}

/// A node's worth of unrelated pods.
fn filler(n: usize) -> Vec<Pod> {
    (0..n)
        .map(|i| {
            let (uid, cid) = ids();
            pod(&format!("filler-{i}"), "default", &uid, &cid)
        })
        .collect()
}

/// The mount point of the cgroup v2 hierarchy, if any.
fn cgroup2_root() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if !post.starts_with("cgroup2 ") {
            return None;
        }
        pre.split(' ').nth(4).map(PathBuf::from)
    })
}

/// A real process in a cgroup shaped like a containerd pod container's (systemd driver), or
/// — where cgroups cannot be created here — in a fake proc root naming such a cgroup.
pub struct PodProcess {
    child: std::process::Child,
    dirs: Vec<PathBuf>,
    leaf: Option<PathBuf>,
    fake_proc: Option<tempfile::TempDir>,
}

impl PodProcess {
    pub fn spawn(pod_uid: &str, container_id: &str) -> PodProcess {
        let child = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        let pid = child.id();
        let uid_ = pod_uid.replace('-', "_");
        let rel = [
            "kubepods.slice".to_owned(),
            "kubepods-besteffort.slice".to_owned(),
            format!("kubepods-besteffort-pod{uid_}.slice"),
            format!("cri-containerd-{container_id}.scope"),
        ];
        let mut me = PodProcess {
            child,
            dirs: Vec::new(),
            leaf: None,
            fake_proc: None,
        };
        if let Some(root) = cgroup2_root() {
            let mut dir = root;
            let mut ok = true;
            for part in &rel {
                dir.push(part);
                if !dir.exists() {
                    if std::fs::create_dir(&dir).is_err() {
                        ok = false;
                        break;
                    }
                    me.dirs.push(dir.clone());
                }
            }
            if ok && std::fs::write(dir.join("cgroup.procs"), pid.to_string()).is_ok() {
                let seen = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
                assert!(
                    seen.contains(&format!("cri-containerd-{container_id}.scope")),
                    "{seen}"
                );
                me.leaf = Some(dir);
                return me;
            }
        }
        eprintln!("note: cannot create cgroups here; using a fake /proc root for pid {pid}");
        let fake = tempfile::tempdir().unwrap();
        std::fs::create_dir(fake.path().join(pid.to_string())).unwrap();
        std::fs::write(
            fake.path().join(format!("{pid}/cgroup")),
            format!("0::/{}\n", rel.join("/")),
        )
        .unwrap();
        me.fake_proc = Some(fake);
        me
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// The real pod-container cgroup, if one could be created.
    pub fn cgroup_dir(&self) -> Option<&Path> {
        self.leaf.as_deref()
    }

    fn proc_root(&self) -> PathBuf {
        self.fake_proc
            .as_ref()
            .map_or_else(|| "/proc".into(), |d| d.path().to_owned())
    }
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn config(k8s: &FakeK8s, dir: &Path, poll: &str) -> K8sWorkloadConfig {
    let token = dir.join("kubelet-token");
    std::fs::write(&token, format!("{KUBELET_TOKEN}\n")).unwrap();
    K8sWorkloadConfig {
        kubelet_secure_port: Some(k8s.port()),
        kubelet_ca_path: Some(k8s.ca_path.clone()),
        token_path: Some(token),
        poll_retry_interval: Some(poll.into()),
        max_poll_attempts: Some(100),
        ..Default::default()
    }
}

fn values(s: &spire_spiffe::Selectors) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_attests_process_in_pod_cgroup() {
    let dir = tempfile::tempdir().unwrap();
    let k8s = FakeK8s::start(dir.path()).await;
    let (uid, cid) = ids();
    k8s.with(|s| {
        s.pods = filler(250);
        s.pods
            .insert(125, pod("backend-7d9f", "production", &uid, &cid));
    });
    let proc = PodProcess::spawn(&uid, &cid);
    let a = K8sWorkloadAttestor::with_proc_root(config(&k8s, dir.path(), "2s"), proc.proc_root())
        .unwrap();
    let got = values(&a.attest(proc.pid()).await.unwrap());
    for want in [
        "k8s:ns:production",
        "k8s:sa:backend-service",
        "k8s:pod-label:app:backend",
        "k8s:container-name:backend",
        "k8s:container-image:ghcr.io/acme/backend:1.4",
        "k8s:container-image:ghcr.io/acme/backend@sha256:5e2b9c",
        "k8s:node-name:node-1",
        "k8s:pod-name:backend-7d9f",
        "k8s:pod-owner:ReplicaSet:backend-7d9f-rs",
        "k8s:pod-image-count:1",
        "k8s:pod-init-image-count:0",
    ] {
        assert!(got.iter().any(|g| g == want), "missing {want} in {got:?}");
    }
    assert!(got.contains(&format!("k8s:pod-uid:{uid}")), "{got:?}");

    // Concurrent attestations share one kubelet fetch (the list stays cached for 1s).
    let a = std::sync::Arc::new(a);
    let before = k8s.with(|s| s.kubelet_fetches);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let a = a.clone();
        let pid = proc.pid();
        tasks.push(tokio::spawn(
            async move { a.attest(pid).await.map(|s| s.len()) },
        ));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), got.len());
    }
    assert!(k8s.with(|s| s.kubelet_fetches) - before <= 1);

    // A process outside any pod (this test process) gets no k8s selectors.
    let me = i32::try_from(std::process::id()).unwrap();
    let own = K8sWorkloadAttestor::new(config(&k8s, dir.path(), "2s")).unwrap();
    assert!(own.attest(me).await.unwrap().is_empty());

    // The blocking entry point (used by the agent's attestation pool) gives the same answer.
    let a2 = a.clone();
    let pid = proc.pid();
    let blocking = tokio::task::spawn_blocking(move || a2.attest_blocking(pid))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(values(&blocking).len(), got.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_waits_for_starting_container_and_gives_up_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let k8s = FakeK8s::start(dir.path()).await;
    let (uid, cid) = ids();
    // The container is listed without an ID: still being created.
    k8s.with(|s| s.pods = vec![pod("backend-starting", "production", &uid, "")]);
    let proc = PodProcess::spawn(&uid, &cid);
    let a = K8sWorkloadAttestor::with_proc_root(config(&k8s, dir.path(), "50ms"), proc.proc_root())
        .unwrap();
    let state = k8s.state.clone();
    let cid2 = cid.clone();
    let uid2 = uid.clone();
    let fetches_then_start = tokio::spawn(async move {
        // Once the attestor has polled a few times, the container starts.
        for _ in 0..2000 {
            if state.lock().unwrap().kubelet_fetches >= 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(
            state.lock().unwrap().kubelet_fetches >= 3,
            "attestor did not poll"
        );
        state.lock().unwrap().pods = vec![pod("backend-starting", "production", &uid2, &cid2)];
    });
    let got = values(&a.attest(proc.pid()).await.unwrap());
    fetches_then_start.await.unwrap();
    assert!(
        got.contains(&"k8s:pod-name:backend-starting".to_owned()),
        "{got:?}"
    );
    assert!(k8s.with(|s| s.kubelet_fetches) >= 4);

    // A container that never appears: bounded retries, then an error.
    let (uid3, cid3) = ids();
    let lost = PodProcess::spawn(&uid3, &cid3);
    let mut cfg = config(&k8s, dir.path(), "10ms");
    cfg.max_poll_attempts = Some(3);
    let a = K8sWorkloadAttestor::with_proc_root(cfg, lost.proc_root()).unwrap();
    let err = a.attest(lost.pid()).await.unwrap_err();
    assert!(
        matches!(err, WorkloadError::NotFound { attempts: 3, .. }),
        "{err}"
    );

    // disable_container_selectors: the pod is known from the cgroup, pod selectors suffice.
    k8s.with(|s| s.pods.push(pod("backend-nocid", "production", &uid3, "")));
    let mut cfg = config(&k8s, dir.path(), "10ms");
    cfg.disable_container_selectors = true;
    let a = K8sWorkloadAttestor::with_proc_root(cfg, lost.proc_root()).unwrap();
    let got = values(&a.attest(lost.pid()).await.unwrap());
    assert!(
        got.contains(&"k8s:pod-name:backend-nocid".to_owned()),
        "{got:?}"
    );
    assert!(
        !got.iter().any(|g| g.starts_with("k8s:container-")),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k8s_kubelet_tls_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let k8s = FakeK8s::start(dir.path()).await;
    let (uid, cid) = ids();
    k8s.with(|s| s.pods = vec![pod("backend-1", "production", &uid, &cid)]);
    let proc = PodProcess::spawn(&uid, &cid);

    // node_name: the kubelet is reached by that name and its certificate must carry it.
    let mut cfg = config(&k8s, dir.path(), "10ms");
    cfg.node_name = Some("localhost".into());
    let a = K8sWorkloadAttestor::with_proc_root(cfg, proc.proc_root()).unwrap();
    assert!(!a.attest(proc.pid()).await.unwrap().is_empty());

    // Wrong token: the kubelet answers 401.
    let mut cfg = config(&k8s, dir.path(), "10ms");
    let bad = dir.path().join("bad-token");
    std::fs::write(&bad, "nope").unwrap();
    cfg.token_path = Some(bad);
    let a = K8sWorkloadAttestor::with_proc_root(cfg, proc.proc_root()).unwrap();
    let err = a.attest(proc.pid()).await.unwrap_err().to_string();
    assert!(err.contains("401"), "{err}");

    // A kubelet certificate from another CA is refused; skip_kubelet_verification accepts it.
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, spire_testkit::TestCa::new("other").cert_pem()).unwrap();
    let mut cfg = config(&k8s, dir.path(), "10ms");
    cfg.kubelet_ca_path = Some(other.clone());
    let a = K8sWorkloadAttestor::with_proc_root(cfg, proc.proc_root()).unwrap();
    assert!(matches!(
        a.attest(proc.pid()).await,
        Err(WorkloadError::Kubelet(_))
    ));
    let mut cfg = config(&k8s, dir.path(), "10ms");
    cfg.kubelet_ca_path = Some(other);
    cfg.skip_kubelet_verification = true;
    let a = K8sWorkloadAttestor::with_proc_root(cfg, proc.proc_root()).unwrap();
    assert!(!a.attest(proc.pid()).await.unwrap().is_empty());
}
