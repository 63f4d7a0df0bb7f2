//! Every manifest under `deploy/kubernetes/` parses as Kubernetes YAML, the HCL configs in
//! its ConfigMaps parse with spire-config, and their Kubernetes plugin blocks decode into
//! this crate's configuration types; the agent DaemonSet mounts what those configs name.

use std::path::PathBuf;

use serde_yaml::Value;
use spire_plugin_k8s::{K8sBundleConfig, K8sWorkloadConfig, PsatAgentConfig, PsatServerConfig};

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

fn documents() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if v.is_null() {
                continue;
            }
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            for key in ["apiVersion", "kind"] {
                assert!(
                    v.get(key).and_then(Value::as_str).is_some(),
                    "{name}: no {key}"
                );
            }
            assert!(
                v.get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(Value::as_str)
                    .is_some(),
                "{name}: no metadata.name"
            );
            out.push((name, v));
        }
    }
    out
}

use serde::Deserialize as _;

fn find<'a>(docs: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .map(|(_, v)| v)
        .find(|v| v["kind"].as_str() == Some(kind) && v["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn manifests_parse_and_configs_are_valid() {
    let docs = documents();

    let server_conf = find(&docs, "ConfigMap", "spire-server")["data"]["server.conf"]
        .as_str()
        .unwrap();
    let server = spire_config::ServerConfig::parse(server_conf, "server.conf", &Default::default())
        .unwrap_or_else(|e| panic!("server.conf: {e}"));
    let psat: PsatServerConfig = server
        .plugins
        .single("NodeAttestor")
        .unwrap()
        .plugin_data()
        .unwrap();
    assert_eq!(
        psat.clusters["demo-cluster"].service_account_allow_list,
        ["spire:spire-agent"]
    );
    let notifier = server.plugins.single("Notifier").unwrap();
    assert_eq!(notifier.name, "k8sbundle");
    let bundle: K8sBundleConfig = notifier.plugin_data().unwrap();
    assert_eq!(bundle.config_map.as_deref(), Some("spire-bundle"));
    find(&docs, "ConfigMap", "spire-bundle");

    let agent_conf = find(&docs, "ConfigMap", "spire-agent")["data"]["agent.conf"]
        .as_str()
        .unwrap();
    let agent = spire_config::AgentConfig::parse(agent_conf, "agent.conf", &Default::default())
        .unwrap_or_else(|e| panic!("agent.conf: {e}"));
    let na: PsatAgentConfig = agent
        .plugins
        .single("NodeAttestor")
        .unwrap()
        .plugin_data()
        .unwrap();
    assert_eq!(na.cluster, "demo-cluster");
    assert!(psat.clusters.contains_key(&na.cluster));
    let k8s = agent
        .plugins
        .enabled("WorkloadAttestor")
        .find(|p| p.name == "k8s")
        .expect("k8s workload attestor");
    let _: K8sWorkloadConfig = k8s.plugin_data().unwrap();

    // The DaemonSet: host PIDs, the projected token where k8s_psat reads it, the socket
    // directory on the host, the bundle ConfigMap where trust_bundle_path points.
    let ds = find(&docs, "DaemonSet", "spire-agent");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"].as_bool(), Some(true));
    assert_eq!(pod["serviceAccountName"].as_str(), Some("spire-agent"));
    let volumes = pod["volumes"].as_sequence().unwrap();
    let token_src = volumes
        .iter()
        .find_map(|v| v["projected"]["sources"].as_sequence())
        .and_then(|s| s.iter().find(|s| s.get("serviceAccountToken").is_some()))
        .expect("projected serviceAccountToken");
    assert_eq!(
        token_src["serviceAccountToken"]["audience"].as_str(),
        Some("spire-server")
    );
    assert_eq!(
        token_src["serviceAccountToken"]["path"].as_str(),
        Some("spire-agent")
    );
    let mounts = pod["containers"][0]["volumeMounts"].as_sequence().unwrap();
    let mount_of = |vol: &str| {
        mounts
            .iter()
            .find(|m| m["name"].as_str() == Some(vol))
            .and_then(|m| m["mountPath"].as_str())
            .unwrap_or_else(|| panic!("no mount of {vol}"))
            .to_owned()
    };
    let token_vol = volumes
        .iter()
        .find(|v| v.get("projected").is_some())
        .unwrap()["name"]
        .as_str()
        .unwrap();
    assert_eq!(
        format!("{}/spire-agent", mount_of(token_vol)),
        spire_plugin_k8s::psat::DEFAULT_TOKEN_PATH
    );
    let socket_vol = volumes
        .iter()
        .find(|v| v.get("hostPath").is_some())
        .unwrap()["name"]
        .as_str()
        .unwrap();
    assert!(
        agent.socket_path.starts_with(mount_of(socket_vol)),
        "{:?}",
        agent.socket_path
    );
    let bundle_vol = volumes
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some("spire-bundle"))
        .unwrap()["name"]
        .as_str()
        .unwrap();
    let want = PathBuf::from(mount_of(bundle_vol))
        .join(bundle.config_map_key.as_deref().unwrap_or("bundle.crt"));
    assert!(
        matches!(agent.trust_bundle, spire_config::TrustBundleSource::Path(ref p) if *p == want),
        "{:?}",
        agent.trust_bundle
    );

    // The server runs as the account the RBAC grants TokenReview and ConfigMap access to.
    let sts = find(&docs, "StatefulSet", "spire-server");
    assert_eq!(
        sts["spec"]["template"]["spec"]["serviceAccountName"].as_str(),
        Some("spire-server")
    );
    let role = find(&docs, "ClusterRole", "spire-server-cluster-role");
    assert!(
        serde_yaml::to_string(role)
            .unwrap()
            .contains("tokenreviews")
    );
}
