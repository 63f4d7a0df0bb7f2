//! Issue 12 §3 (JWT) through the real agent's Workload API `ValidateJWTSVID`, with tokens
//! forged by the test: alg `none`, HS256 keyed with the public key (alg confusion), a kid of a
//! federated bundle for a local `sub`, expired, `nbf` in the future, duplicate claims, tampered
//! payload, oversized. The federated trust domain `other.org` has a JWT authority whose key the
//! test holds, so validly signed tokens with bad claims can be made.
//!
//! Covered elsewhere: the same refusals in the library (spire-crypto `jwt::tests`:
//! `rejects_alg_none`, `rejects_hs256_even_with_public_key_as_secret`,
//! `rejects_missing_and_unknown_kid`, `rejects_wrong_audience_and_missing_audience`,
//! `rejects_expired_with_leeway` (also nbf), `rejects_tampered_payload_and_signature`,
//! `rejects_malformed_and_oversize`, `rejects_duplicate_members`).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use spire_proto::workload as wl;
use spire_testkit::TestCa;
use tonic::Code;

use crate::common::{AgentProc, Server, WAIT, register_me, uds_channel, workload_request};

const FED: &str = "spiffe://other.org";
const FED_KID: &str = "fed-kid";

fn b64u(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// ES256 JWS over `header.payload` with `key`.
fn es256(key: &EcdsaKeyPair, header: &str, payload: &str) -> String {
    let signed = format!("{}.{}", b64u(header.as_bytes()), b64u(payload.as_bytes()));
    let sig = key.sign(&SystemRandom::new(), signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64u(sig.as_ref()))
}

/// HS256 JWS keyed with `secret`.
fn hs256(secret: &[u8], header: &str, payload: &str) -> String {
    let signed = format!("{}.{}", b64u(header.as_bytes()), b64u(payload.as_bytes()));
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let tag = aws_lc_rs::hmac::sign(&k, signed.as_bytes());
    format!("{signed}.{}", b64u(tag.as_ref()))
}

/// A JWK for an uncompressed P-256 point.
fn ec_jwk(point: &[u8], use_: &str, kid: Option<&str>, x5c: Option<&[u8]>) -> serde_json::Value {
    assert_eq!(point.len(), 65);
    let mut j = serde_json::json!({
        "use": use_, "kty": "EC", "crv": "P-256",
        "x": b64u(&point[1..33]), "y": b64u(&point[33..]),
    });
    if let Some(k) = kid {
        j["kid"] = k.into();
    }
    if let Some(c) = x5c {
        j["x5c"] = serde_json::json!([STANDARD.encode(c)]);
    }
    j
}

struct Env {
    _agent: AgentProc,
    socket: std::path::PathBuf,
    fed_key: EcdsaKeyPair,
    local_kid: String,
    genuine: String,
    _server: Server,
}

impl Env {
    async fn validate(&self, token: &str) -> Result<wl::ValidateJwtsvidResponse, tonic::Status> {
        let mut c = wl::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(
            uds_channel(&self.socket).await,
        )
        .max_encoding_message_size(usize::MAX);
        c.validate_jwtsvid(workload_request(wl::ValidateJwtsvidRequest {
            audience: "aud".into(),
            svid: token.into(),
        }))
        .await
        .map(tonic::Response::into_inner)
    }

    async fn refused(&self, what: &str, token: &str, fragment: &str) {
        let e = self.validate(token).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert!(
            e.message().contains(fragment),
            "{what}: {:?} should contain {fragment:?}",
            e.message()
        );
    }

    fn fed(&self, payload: &str) -> String {
        es256(
            &self.fed_key,
            &format!(r#"{{"alg":"ES256","kid":"{FED_KID}","typ":"JWT"}}"#),
            payload,
        )
    }
}

async fn setup() -> Env {
    let server = Server::start(|c| c);
    // The federated trust domain: an X.509 root (required) and a JWT key the test holds.
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let fed_key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let root = TestCa::new("other.org root");
    let root_cert = crate::common::parse_cert(root.cert_der());
    let root_point = root_cert.public_key().subject_public_key.data.to_vec();
    let bundle = serde_json::json!({
        "keys": [
            ec_jwk(&root_point, "x509-svid", None, Some(root.cert_der())),
            ec_jwk(fed_key.public_key().as_ref(), "jwt-svid", Some(FED_KID), None),
        ],
        "spiffe_refresh_hint": 300,
    });
    let path = server.dir.path().join("other.json");
    std::fs::write(&path, bundle.to_string()).unwrap();
    server.ok(&[
        "bundle",
        "set",
        "-format",
        "spiffe",
        "-id",
        FED,
        "-path",
        path.to_str().unwrap(),
    ]);

    let agent = AgentProc::start(&server, &server.dir.path().join("agent"));
    let agent_id = AgentProc::id(&server);
    register_me(
        &server,
        "spiffe://example.org/workload",
        &agent_id,
        &["-federatesWith", FED],
    );
    let socket = agent.cfg.socket_path.clone();
    // A genuine JWT-SVID, once the entry reached the agent.
    let mut genuine = None;
    spire_testkit::wait_until(WAIT, "a JWT-SVID for the workload", async || {
        let mut c = wl::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(
            uds_channel(&socket).await,
        );
        genuine = c
            .fetch_jwtsvid(workload_request(wl::JwtsvidRequest {
                audience: vec!["aud".into()],
                spiffe_id: String::new(),
            }))
            .await
            .ok()
            .and_then(|r| r.into_inner().svids.into_iter().next())
            .map(|s| s.svid);
        genuine.is_some()
    })
    .await
    .unwrap();
    let genuine = genuine.unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(genuine.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    let env = Env {
        _agent: agent,
        socket,
        fed_key,
        local_kid: header["kid"].as_str().unwrap().to_owned(),
        genuine,
        _server: server,
    };
    // The federated bundle reached the agent once a token of other.org validates.
    spire_testkit::wait_until(WAIT, "the federated bundle at the agent", async || {
        let claims = format!(
            r#"{{"sub":"{FED}/fed","aud":["aud"],"exp":{}}}"#,
            now() + 300
        );
        env.validate(&env.fed(&claims)).await.is_ok()
    })
    .await
    .unwrap();
    env
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_jwts_are_refused_by_validate_jwtsvid() {
    let env = setup().await;
    // Controls: the genuine token and a well-formed federated one are accepted.
    let ok = env.validate(&env.genuine).await.unwrap();
    assert_eq!(ok.spiffe_id, "spiffe://example.org/workload");
    let exp = now() + 300;
    let fed_ok = env
        .validate(&env.fed(&format!(
            r#"{{"sub":"{FED}/fed","aud":["aud"],"exp":{exp}}}"#
        )))
        .await
        .unwrap();
    assert_eq!(fed_ok.spiffe_id, "spiffe://other.org/fed");

    let local_claims =
        format!(r#"{{"sub":"spiffe://example.org/workload","aud":["aud"],"exp":{exp}}}"#);
    let kid = &env.local_kid;
    // alg none with the local kid and no signature.
    let none = format!(
        "{}.{}.",
        b64u(format!(r#"{{"alg":"none","kid":"{kid}"}}"#).as_bytes()),
        b64u(local_claims.as_bytes())
    );
    env.refused("alg none", &none, "alg \"none\" is not allowed")
        .await;
    // HS256 keyed with the local authority's public key (as JWKS text and as the raw point).
    let mut c = wl::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(
        uds_channel(&env.socket).await,
    );
    let bundles = c
        .fetch_jwt_bundles(workload_request(wl::JwtBundlesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap()
        .bundles;
    let jwks = bundles.get("spiffe://example.org").unwrap();
    let header = format!(r#"{{"alg":"HS256","kid":"{kid}","typ":"JWT"}}"#);
    env.refused(
        "HS256 with the JWKS as secret",
        &hs256(jwks, &header, &local_claims),
        "(HMAC) is not allowed",
    )
    .await;
    // A kid that exists only in the federated bundle, for a local subject.
    env.refused(
        "federated kid, local sub",
        &env.fed(&local_claims),
        &format!(
            "no JWT authority with kid \"{FED_KID}\" in the bundle of trust domain \"example.org\""
        ),
    )
    .await;
    // Validly signed (federated key) but expired beyond the leeway.
    env.refused(
        "expired",
        &env.fed(&format!(
            r#"{{"sub":"{FED}/fed","aud":["aud"],"exp":{}}}"#,
            now() - 3600
        )),
        "token expired at",
    )
    .await;
    // nbf in the future.
    env.refused(
        "nbf in the future",
        &env.fed(&format!(
            r#"{{"sub":"{FED}/fed","aud":["aud"],"exp":{exp},"nbf":{}}}"#,
            now() + 3600
        )),
        "token is not valid before",
    )
    .await;
    // Duplicate claims: two parsers could read two different subjects.
    env.refused(
        "duplicate sub",
        &env.fed(&format!(
            r#"{{"sub":"{FED}/fed","aud":["aud"],"exp":{exp},"sub":"{FED}/admin"}}"#
        )),
        "token payload has a duplicate member \"sub\"",
    )
    .await;
    // Wrong audience.
    env.refused(
        "wrong audience",
        &env.fed(&format!(
            r#"{{"sub":"{FED}/fed","aud":["other"],"exp":{exp}}}"#
        )),
        "does not contain \"aud\"",
    )
    .await;
    // The genuine token with its payload swapped for another subject.
    let parts: Vec<&str> = env.genuine.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64u(local_claims.replace("/workload", "/admin").as_bytes()),
        parts[2]
    );
    env.refused("tampered payload", &tampered, "signature does not verify")
        .await;
    // Oversized: 1 MiB of claims.
    let huge = env.fed(&format!(
        r#"{{"sub":"{FED}/fed","aud":["aud"],"exp":{exp},"pad":"{}"}}"#,
        "A".repeat(1 << 20)
    ));
    env.refused("oversized", &huge, "the limit is 16384").await;
    // Still serving afterwards.
    env.validate(&env.genuine).await.unwrap();
}
