use spire_plugin_k8s::{K8sBundleConfig, K8sBundleNotifier};

use crate::fake::{ADMIN_TOKEN, FakeK8s, config_map};

#[tokio::test]
async fn k8sbundle_patches_config_map() {
    let dir = tempfile::tempdir().unwrap();
    let k8s = FakeK8s::start(dir.path()).await;
    k8s.with(|s| {
        s.config_maps.insert(
            ("spire".into(), "spire-bundle".into()),
            config_map("spire", "spire-bundle"),
        );
    });
    let notifier = K8sBundleNotifier::new(K8sBundleConfig {
        kube_config_file: Some(k8s.kubeconfig(dir.path(), ADMIN_TOKEN)),
        ..Default::default()
    })
    .unwrap();
    let first = spire_testkit::TestCa::new("ca-1").cert_pem().to_owned();
    notifier.update(&first).await.unwrap();
    let data = |k8s: &FakeK8s| {
        k8s.with(|s| {
            s.config_maps[&("spire".to_owned(), "spire-bundle".to_owned())]
                .data
                .clone()
        })
    };
    assert_eq!(data(&k8s).get("bundle.crt"), Some(&first));

    // Rotation: the new bundle holds both CAs.
    let rotated = format!("{first}{}", spire_testkit::TestCa::new("ca-2").cert_pem());
    notifier.update(&rotated).await.unwrap();
    assert_eq!(data(&k8s).get("bundle.crt"), Some(&rotated));
    assert_eq!(k8s.with(|s| s.config_map_writes), 2);

    // Unchanged bundle: no write.
    notifier.update(&rotated).await.unwrap();
    assert_eq!(k8s.with(|s| s.config_map_writes), 2);

    // Custom key in a missing ConfigMap: a clear error.
    let missing = K8sBundleNotifier::new(K8sBundleConfig {
        namespace: Some("other".into()),
        config_map: Some("absent".into()),
        config_map_key: Some("ca.pem".into()),
        kube_config_file: Some(k8s.kubeconfig(dir.path(), ADMIN_TOKEN)),
    })
    .unwrap();
    let err = missing.update(&first).await.unwrap_err().to_string();
    assert!(err.contains("other/absent") && err.contains("404"), "{err}");
}
