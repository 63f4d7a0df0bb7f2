//! Nested SPIRE with real binaries on loopback: root server → root agent (join token) →
//! `-downstream` entry for the nested server → nested server (`UpstreamAuthority "spire"`
//! pointing at the root agent's Workload API and the root server) → nested agent (join token
//! from the nested server) → workload.
//!
//! Shown: the workload's X509-SVID chain verifies with openssl and with go-spiffe against the
//! root bundle; a JWT-SVID minted by the nested server validates against the root's JWKS (and
//! through the root agent's Workload API with go-spiffe); root bundle changes reach the nested
//! server; a caller without a downstream entry is refused NewDownstreamX509CA and
//! PublishJWTAuthority while the downstream caller is let through.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use spire_proto::server::{bundle as bpb, svid as spb};
use spire_proto::types;
use spire_testkit::{ServerConfig, temp_dir, wait_until_sync};
use spire_tls::{BundleSet, Identity};
use tonic::Code;

use crate::common::{ServerProc, tls_channel};

const TD: &str = "example.org";
const WAIT: Duration = Duration::from_secs(90);

/// Starts a `spire-server` process named `name` with an extra plugin block.
fn start_server(name: &str, extra_plugin: Option<String>) -> ServerProc {
    let dir = temp_dir();
    let mut config = ServerConfig::new(TD, dir.path());
    if let Some(p) = extra_plugin {
        config = config.plugin(&p);
    }
    let text = config.render();
    ServerProc::start(name, dir, config, &text, |_| {})
}

fn certs(pem_text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text)
        .unwrap()
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .collect()
}

fn pem_certs(ders: &[Vec<u8>]) -> String {
    let blocks: Vec<pem::Pem> = ders
        .iter()
        .map(|d| pem::Pem::new("CERTIFICATE", d.clone()))
        .collect();
    pem::encode_many(&blocks)
}

fn ski(der: &[u8]) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                Some(hex::encode(k.0))
            }
            _ => None,
        })
        .unwrap()
}

fn skis(pem_text: &str) -> BTreeSet<String> {
    certs(pem_text).iter().map(|d| ski(d)).collect()
}

fn openssl_verify(args: &[&str]) -> std::process::Output {
    Command::new(spire_testkit::openssl())
        .arg("verify")
        .args(args)
        .output()
        .unwrap()
}

/// The kids of a JWKS document (`bundle show -format spiffe`).
fn kids(jwks: &serde_json::Value) -> BTreeSet<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_owned))
        .collect()
}

/// Calls NewDownstreamX509CA and PublishJWTAuthority on the root server with the SVID in
/// `svid_dir` and returns their status codes.
fn downstream_calls(root_addr: &str, roots: &[Vec<u8>], svid_dir: &Path) -> (Code, Code) {
    let chain = certs(&std::fs::read_to_string(svid_dir.join("svid.0.pem")).unwrap());
    let key_pem = std::fs::read_to_string(svid_dir.join("svid.0.key")).unwrap();
    let key = pem::parse(key_pem).unwrap().into_contents();
    let identity = Identity::from_der(chain, key).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let bundles = BundleSet::with_roots(TD.parse().unwrap(), roots.iter().cloned()).unwrap();
        let channel = tls_channel(root_addr, TD, bundles, Some(identity)).await;
        let ca_key = spire_crypto::PrivateKey::generate(spire_crypto::KeyType::EcP256).unwrap();
        let csr = spire_crypto::create_csr(&ca_key, None).unwrap();
        let mut svid = spb::svid_client::SvidClient::new(channel.clone());
        let ca = svid
            .new_downstream_x509ca(spb::NewDownstreamX509caRequest {
                csr,
                preferred_ttl: 0,
            })
            .await;
        let mut bundle = bpb::bundle_client::BundleClient::new(channel);
        // A key that is not a PKIX public key: refused by validation, after authorization.
        let published = bundle
            .publish_jwt_authority(bpb::PublishJwtAuthorityRequest {
                jwt_authority: Some(types::JwtKey {
                    public_key: b"not a key".to_vec(),
                    key_id: "nested-test-kid".into(),
                    expires_at: 0,
                    tainted: false,
                }),
            })
            .await;
        let code = |r: Result<(), tonic::Status>| match r {
            Ok(()) => Code::Ok,
            Err(s) => s.code(),
        };
        (code(ca.map(|_| ())), code(published.map(|_| ())))
    })
}

#[test]
fn three_levels_validate_against_the_root_bundle() {
    let root = start_server("root-server", None);
    let root_agent = root.agent("root-agent", "spiffe://example.org/root-node");
    root.register_uid(
        "spiffe://example.org/root-node",
        "spiffe://example.org/nested-server",
        &["-downstream"],
    );
    root_agent.wait_for_svid("spiffe://example.org/nested-server");

    let (host, port) = root
        .addr()
        .rsplit_once(':')
        .map(|(h, p)| (h.to_owned(), p.to_owned()))
        .unwrap();
    let nested = start_server(
        "nested-server",
        Some(format!(
            "    UpstreamAuthority \"spire\" {{\n        plugin_data {{\n            server_address = \"{host}\"\n            server_port = \"{port}\"\n            workload_api_socket = \"{}\"\n        }}\n    }}",
            root_agent.config.socket_path.display()
        )),
    );

    // The nested server's X.509 bundle is the root's: its own CA is an intermediate.
    let root_pem = root.ok(&["bundle", "show"]);
    let root_roots = certs(&root_pem);
    assert_eq!(skis(&nested.ok(&["bundle", "show"])), skis(&root_pem));
    let local: serde_json::Value =
        serde_json::from_str(&nested.ok(&["localauthority", "x509", "show", "-output", "json"]))
            .unwrap();
    let nested_ca_id = local["active"]["authority_id"].as_str().unwrap().to_owned();
    let upstream_id = local["active"]["upstream_authority_subject_key_id"]
        .as_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        skis(&root_pem).contains(&upstream_id),
        "the nested CA must be signed by a root authority: {local}"
    );
    assert!(!skis(&root_pem).contains(&nested_ca_id.to_ascii_lowercase()));

    // The nested agent and a workload under it.
    let nested_agent = nested.agent("nested-agent", "spiffe://example.org/nested-node");
    nested.register_uid(
        "spiffe://example.org/nested-node",
        "spiffe://example.org/nested-workload",
        &[],
    );
    nested_agent.wait_for_svid("spiffe://example.org/nested-workload");
    let out_dir = nested.dir.path().join("workload-svid");
    nested_agent.write_svid(&out_dir);
    let chain = certs(&std::fs::read_to_string(out_dir.join("svid.0.pem")).unwrap());
    assert_eq!(chain.len(), 2, "leaf and the nested CA");
    assert_eq!(ski(&chain[1]), nested_ca_id.to_ascii_lowercase());
    // The workload's bundle is the root bundle.
    assert_eq!(
        skis(&std::fs::read_to_string(out_dir.join("bundle.0.pem")).unwrap()),
        skis(&root_pem)
    );

    // openssl: the chain verifies against the root bundle, and only with the intermediate.
    let root_file = out_dir.join("root.pem");
    std::fs::write(&root_file, &root_pem).unwrap();
    let leaf_file = out_dir.join("leaf.pem");
    std::fs::write(&leaf_file, pem_certs(&chain[..1])).unwrap();
    let inter_file = out_dir.join("intermediates.pem");
    std::fs::write(&inter_file, pem_certs(&chain[1..])).unwrap();
    let ok = openssl_verify(&[
        "-CAfile",
        root_file.to_str().unwrap(),
        "-untrusted",
        inter_file.to_str().unwrap(),
        leaf_file.to_str().unwrap(),
    ]);
    assert!(
        ok.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    let without = openssl_verify(&[
        "-CAfile",
        root_file.to_str().unwrap(),
        leaf_file.to_str().unwrap(),
    ]);
    assert!(!without.status.success(), "the leaf alone must not verify");

    // JWT-SVID minted by the nested server: validates against the root's JWKS.
    let out = nested_agent.run(&[
        "api",
        "fetch",
        "jwt",
        "-audience",
        "nested-test",
        "-output",
        "json",
    ]);
    assert!(out.status.success(), "{}", out.stderr);
    let fetched: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let token = fetched[0]["svids"][0]["svid"].as_str().unwrap().to_owned();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    let kid = header.kid.clone().unwrap();
    let root_jwks: serde_json::Value =
        serde_json::from_str(&root.ok(&["bundle", "show", "-format", "spiffe"])).unwrap();
    let jwk = root_jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"].as_str() == Some(kid.as_str()))
        .unwrap_or_else(|| panic!("kid {kid} of the nested server missing from the root JWKS"))
        .clone();
    let key = jsonwebtoken::DecodingKey::from_ec_components(
        jwk["x"].as_str().unwrap(),
        jwk["y"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["nested-test"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap();
    assert_eq!(data.claims["sub"], "spiffe://example.org/nested-workload");
    // The root's own JWT keys are no use for it.
    let root_only: Vec<&serde_json::Value> = root_jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["kid"].as_str() != Some(kid.as_str()))
        .collect();
    assert!(!root_only.is_empty());
    for k in root_only {
        let other = jsonwebtoken::DecodingKey::from_ec_components(
            k["x"].as_str().unwrap(),
            k["y"].as_str().unwrap(),
        )
        .unwrap();
        assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &other, &validation).is_err());
    }

    // go-spiffe: a server under the root agent (root bundle) accepts the nested workload's
    // chain, and the nested workload accepts the root-issued server; the root agent's
    // Workload API validates the nested JWT-SVID.
    if let Some(go) = spire_testkit::go_client() {
        let (server, addr) = root_agent.go_mtls_server(&go, "spiffe://example.org/nested-workload");
        let client = nested_agent.go(
            &go,
            &[
                "mtls-client",
                "-addr",
                &addr,
                "-server-id",
                "spiffe://example.org/nested-server",
            ],
        );
        assert!(
            client.status.success(),
            "{}\n{}\n{}",
            client.stdout,
            client.stderr,
            server.log_report()
        );
        assert!(
            client
                .stdout
                .contains("hello spiffe://example.org/nested-workload")
        );
        wait_until_sync(WAIT, "the JWT key reaches the root agent", || {
            root_agent
                .go(
                    &go,
                    &["validate", "-audience", "nested-test", "-token", &token],
                )
                .status
                .success()
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", root_agent.process.log_report()));
        let v = root_agent.go(
            &go,
            &["validate", "-audience", "nested-test", "-token", &token],
        );
        assert!(
            v.stdout.contains("spiffe://example.org/nested-workload"),
            "{}",
            v.stdout
        );
    }

    // A caller without a downstream entry (the nested workload) is refused; the nested server's
    // identity is authorized (its bad key is then rejected as invalid).
    assert_eq!(
        downstream_calls(&root.addr(), &root_roots, &out_dir),
        (Code::PermissionDenied, Code::PermissionDenied)
    );
    let ds_dir = nested.dir.path().join("downstream-svid");
    root_agent.write_svid(&ds_dir);
    assert_eq!(
        downstream_calls(&root.addr(), &root_roots, &ds_dir),
        (Code::Ok, Code::InvalidArgument)
    );

    // Root bundle changes reach the nested server: a new root X.509 authority and JWT key.
    let before_jwt =
        kids(&serde_json::from_str(&nested.ok(&["bundle", "show", "-format", "spiffe"])).unwrap());
    root.ok(&["localauthority", "x509", "prepare"]);
    root.ok(&["localauthority", "jwt", "prepare"]);
    let root_pem = root.ok(&["bundle", "show"]);
    let root_jwks: serde_json::Value =
        serde_json::from_str(&root.ok(&["bundle", "show", "-format", "spiffe"])).unwrap();
    assert_eq!(skis(&root_pem).len(), 2);
    let root_kids = kids(&root_jwks);
    assert!(root_kids.len() > before_jwt.len());
    wait_until_sync(WAIT, "the nested server follows the root bundle", || {
        let jwks: serde_json::Value =
            serde_json::from_str(&nested.ok(&["bundle", "show", "-format", "spiffe"])).unwrap();
        skis(&nested.ok(&["bundle", "show"])) == skis(&root_pem)
            && root_kids.is_subset(&kids(&jwks))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", nested.process.log_report()));
    drop(nested_agent);
    drop(nested);
    drop(root_agent);
}
