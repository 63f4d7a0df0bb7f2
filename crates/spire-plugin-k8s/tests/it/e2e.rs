//! End to end with the real `spire-server` and `spire-agent` binaries and the fake cluster:
//! the agent bootstraps from the bundle the server's `k8sbundle` notifier wrote into the
//! ConfigMap, attests with `k8s_psat`, and a process in the fake pod's (real) cgroup gets the
//! SVID registered with `k8s:ns:production`, `k8s:sa:backend-service` and
//! `k8s:pod-label:app:backend`; a process outside any pod is refused; `debug explain` shows
//! the k8s selectors; a CA rotation reaches the ConfigMap.

use std::path::Path;
use std::time::Duration;

use spire_plugin_k8s::api::{Node, ObjectMeta, Pod, PodSpec, PodStatus};
use spire_testkit::{Process, ServerConfig, bin_path, hcl_string, run_cli, wait_until_sync};

use crate::fake::{ADMIN_TOKEN, FakeK8s, KUBELET_TOKEN, config_map};
use crate::workload::{PodProcess, ids, pod};

const TD: &str = "example.org";
const WAIT: Duration = Duration::from_secs(90);
const AGENT_POD_UID: &str = "5a1d6f0e-2b3c-4d5e-8f90-a1b2c3d4e5f6";
const NODE_UID: &str = "c0ffee00-1111-4222-8333-944455556666";

fn bundle_in_config_map(k8s: &FakeK8s) -> Option<String> {
    k8s.with(|s| {
        s.config_maps
            .get(&("spire".to_owned(), "spire-bundle".to_owned()))
            .and_then(|c| c.data.get("bundle.crt").cloned())
    })
}

fn cert_count(pem: &str) -> usize {
    pem.matches("BEGIN CERTIFICATE").count()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_server_and_agent_on_the_fake_cluster() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("note: not root: the e2e needs to place a process in a cgroup");
        assert!(!spire_testkit::is_ci(), "CI runs as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let k8s = FakeK8s::start(dir.path()).await;
    let (uid, cid) = ids();
    k8s.with(|st| {
        st.config_maps.insert(
            ("spire".into(), "spire-bundle".into()),
            config_map("spire", "spire-bundle"),
        );
        st.nodes.push(Node {
            metadata: ObjectMeta {
                name: "node-1".into(),
                uid: NODE_UID.into(),
                ..Default::default()
            },
        });
        st.pods.push(Pod {
            metadata: ObjectMeta {
                name: "spire-agent-q8v4z".into(),
                namespace: "spire".into(),
                uid: AGENT_POD_UID.into(),
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
        st.pods.push(pod("backend-6c9d", "production", &uid, &cid));
    });
    let agent_token = dir.path().join("psat-token");
    std::fs::write(
        &agent_token,
        k8s.token(
            "spire",
            "spire-agent",
            "spire-agent-q8v4z",
            AGENT_POD_UID,
            &["spire-server"],
        ),
    )
    .unwrap();
    let kubelet_token = dir.path().join("kubelet-token");
    std::fs::write(&kubelet_token, KUBELET_TOKEN).unwrap();
    let kubeconfig = k8s.kubeconfig(dir.path(), ADMIN_TOKEN);
    let kubelet_port = k8s.port();
    let ca_path = k8s.ca_path.clone();
    let workload = PodProcess::spawn(&uid, &cid);
    let cgroup = workload
        .cgroup_dir()
        .expect("cgroup v2 must be writable for root on this machine")
        .to_owned();

    let k8s = std::sync::Arc::new(k8s);
    let k8s2 = k8s.clone();
    let workload_pid = workload.pid();
    tokio::task::spawn_blocking(move || {
        let k8s = k8s2;
        let root = dir.path();
        let server_cfg = ServerConfig::new(TD, &root.join("server"))
            .plugin(&format!(
                "    NodeAttestor \"k8s_psat\" {{\n        plugin_data {{\n            clusters = {{\n                \"demo\" = {{\n                    service_account_allow_list = [\"spire:spire-agent\"]\n                    kube_config_file = {}\n                }}\n            }}\n        }}\n    }}",
                hcl_string(&s(&kubeconfig))
            ))
            .plugin(&format!(
                "    Notifier \"k8sbundle\" {{\n        plugin_data {{\n            namespace = \"spire\"\n            kube_config_file = {}\n        }}\n    }}",
                hcl_string(&s(&kubeconfig))
            ));
        let conf = server_cfg.write(&root.join("server.conf")).unwrap();
        let _server = Process::start(bin_path("spire-server"), ["run", "-config", conf.to_str().unwrap()]).unwrap();
        let sock = s(&server_cfg.socket_path);
        let server_cli = |args: &[&str]| {
            let mut all = args.to_vec();
            all.extend(["-socketPath", sock.as_str()]);
            run_cli(bin_path("spire-server"), all)
        };
        wait_until_sync(WAIT, "server answers", || server_cli(&["bundle", "show"]).success()).unwrap();

        // The notifier publishes the bundle; the agent bootstraps from the ConfigMap.
        let shown = server_cli(&["bundle", "show"]).stdout;
        wait_until_sync(WAIT, "bundle in the ConfigMap", || {
            bundle_in_config_map(&k8s).is_some_and(|b| b.trim() == shown.trim())
        })
        .unwrap();
        let bundle_file = root.join("bundle.crt");
        std::fs::write(&bundle_file, bundle_in_config_map(&k8s).unwrap()).unwrap();

        let agent_dir = root.join("agent");
        std::fs::create_dir_all(&agent_dir).unwrap();
        let socket = agent_dir.join("api.sock");
        let admin = agent_dir.join("admin.sock");
        let agent_conf = format!(
            "agent {{\n    data_dir = {}\n    log_level = \"DEBUG\"\n    server_address = \"127.0.0.1\"\n    server_port = {}\n    socket_path = {}\n    admin_socket_path = {}\n    trust_bundle_path = {}\n    trust_domain = \"{TD}\"\n}}\nplugins {{\n    NodeAttestor \"k8s_psat\" {{\n        plugin_data {{\n            cluster = \"demo\"\n            token_path = {}\n        }}\n    }}\n    KeyManager \"memory\" {{\n        plugin_data {{}}\n    }}\n    WorkloadAttestor \"k8s\" {{\n        plugin_data {{\n            kubelet_secure_port = {kubelet_port}\n            kubelet_ca_path = {}\n            token_path = {}\n            poll_retry_interval = \"100ms\"\n            max_poll_attempts = 5\n        }}\n    }}\n    WorkloadAttestor \"unix\" {{\n        plugin_data {{}}\n    }}\n}}\n",
            hcl_string(&s(&agent_dir.join("data"))),
            server_cfg.bind_port,
            hcl_string(&s(&socket)),
            hcl_string(&s(&admin)),
            hcl_string(&s(&bundle_file)),
            hcl_string(&s(&agent_token)),
            hcl_string(&s(&ca_path)),
            hcl_string(&s(&kubelet_token)),
        );
        let agent_conf_path = agent_dir.join("agent.conf");
        std::fs::write(&agent_conf_path, agent_conf).unwrap();
        let agent = Process::start(bin_path("spire-agent"), ["run", "-config", agent_conf_path.to_str().unwrap()]).unwrap();
        let sock_s = s(&socket);
        wait_until_sync(WAIT, "agent healthy", || {
            run_cli(bin_path("spire-agent"), ["healthcheck", "-socketPath", sock_s.as_str()]).success()
        })
        .unwrap();

        let agent_id = format!("spiffe://{TD}/spire/agent/k8s_psat/demo/{NODE_UID}");
        let agents = server_cli(&["agent", "show", "-spiffeID", agent_id.as_str()]);
        agents.assert_success();
        assert!(agents.stdout.contains("k8s_psat"), "{}", agents.stdout);

        let backend = format!("spiffe://{TD}/backend");
        server_cli(&[
            "entry", "create", "-parentID", agent_id.as_str(), "-spiffeID", backend.as_str(),
            "-selector", "k8s:ns:production", "-selector", "k8s:sa:backend-service", "-selector", "k8s:pod-label:app:backend",
        ])
        .assert_success();

        // A process in the pod container's cgroup gets the SVID.
        let fetch_in_pod = format!(
            "echo $$ > {}/cgroup.procs && exec {} api fetch x509 -socketPath {}",
            s(&cgroup),
            s(&bin_path("spire-agent")),
            sock_s
        );
        wait_until_sync(WAIT, "the pod's process gets its SVID", || {
            let out = run_cli("sh", ["-c", fetch_in_pod.as_str()]);
            out.success() && out.stdout.contains(&backend)
        })
        .unwrap();

        // This test process is in no pod: no k8s selectors, no identity.
        let out = run_cli(bin_path("spire-agent"), ["api", "fetch", "x509", "-socketPath", sock_s.as_str()]);
        out.assert_failure();
        assert!(!out.stdout.contains(&backend), "{}", out.stdout);
        assert!(
            format!("{}{}", out.stdout, out.stderr).contains("PermissionDenied") || out.stderr.contains("no identity issued"),
            "{}\n{}",
            out.stdout,
            out.stderr
        );

        // debug explain shows the k8s selectors found for the pod's process.
        let pid = workload_pid.to_string();
        let admin_s = s(&admin);
        let out = run_cli(bin_path("spire-agent"), ["debug", "explain", "-pid", pid.as_str(), "-socketPath", admin_s.as_str()]);
        out.assert_success();
        for want in ["k8s:ns:production", "k8s:sa:backend-service", "k8s:pod-label:app:backend", "k8s:container-name:backend"] {
            assert!(out.stdout.contains(want), "{want} not in:\n{}", out.stdout);
        }
        assert!(out.stdout.contains(&backend), "{}", out.stdout);

        // A CA rotation (prepare) changes the bundle: the ConfigMap follows.
        server_cli(&["localauthority", "x509", "prepare"]).assert_success();
        wait_until_sync(WAIT, "rotated bundle in the ConfigMap", || {
            bundle_in_config_map(&k8s).is_some_and(|b| cert_count(&b) == 2)
        })
        .unwrap();
        drop(agent);
    })
    .await
    .unwrap();
    drop(workload);
}
