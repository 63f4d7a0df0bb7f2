//! Issue 12 §2 (protocol abuse) against the real `spire-server` binary: malformed and oversized
//! requests on the agent-facing TCP port and the local admin socket. After each abuse the
//! server must still answer ordinary calls.
//!
//! Covered elsewhere (not repeated here): a CSR that is not DER at all ("not a csr") in
//! BatchNewX509SVID: crates/spire-server/tests/it/agent_protocol.rs
//! `agents_only_get_svids_for_their_entries`; an x509pop proof signed by the wrong key:
//! agent_protocol.rs `x509pop_attests_with_selectors_and_rejects_bad_proofs`. CSRs asking for
//! extra SANs or a CA flag: adversarial_authz.rs `csr_extra_sans_and_ca_flag_are_ignored`.
//! Many concurrent Workload API streams from one caller: adversarial_workload.rs.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use spire_crypto::{KeyType, PrivateKey};
use spire_proto::server::{entry as epb, svid as spb};
use spire_proto::types;
use tonic::Code;

use crate::common::{Agent, Server, WAIT, attest_token, entry, register_me, uds_channel};

/// An attested agent with one authorized entry (returned with its ID).
async fn agent_with_entry(server: &Server) -> (Agent, String) {
    let agent = attest_token(server, &server.token()).await.unwrap();
    let entry = register_me(server, "spiffe://example.org/w", &agent.id(), &[]);
    spire_testkit::wait_until(WAIT, "the entry to be authorized", async || {
        let mut c =
            epb::entry_client::EntryClient::new(server.channel(Some(agent.identity())).await);
        c.get_authorized_entries(epb::GetAuthorizedEntriesRequest { output_mask: None })
            .await
            .is_ok_and(|r| r.into_inner().entries.iter().any(|e| e.id == entry))
    })
    .await
    .unwrap();
    (agent, entry)
}

/// BatchNewX509SVID with one CSR; returns the per-item status.
async fn sign(server: &Server, agent: &Agent, entry: &str, csr: Vec<u8>) -> types::Status {
    let mut c = spb::svid_client::SvidClient::new(server.channel(Some(agent.identity())).await);
    let resp = c
        .batch_new_x509svid(spb::BatchNewX509svidRequest {
            params: vec![spb::NewX509svidParams {
                entry_id: entry.to_owned(),
                csr,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.results.len(), 1);
    let r = resp.results.into_iter().next().unwrap();
    let status = r.status.unwrap();
    assert_eq!(r.svid.is_some(), status.code == 0, "{status:?}");
    status
}

/// Just over spire-server's gRPC receive limit (`endpoints::MAX_MESSAGE_SIZE`, 64 MiB).
const OVER_LIMIT: usize = 64 * 1024 * 1024 + 1024;

fn openssl(args: &[&str]) {
    let out = spire_testkit::run_cli(spire_testkit::openssl(), args);
    out.assert_success();
}

/// A DER CSR for an RSA-512 key, made by openssl.
fn rsa512_csr(dir: &std::path::Path) -> Vec<u8> {
    let key = dir.join("rsa512.pem");
    let csr = dir.join("rsa512.csr");
    openssl(&["genrsa", "-out", key.to_str().unwrap(), "512"]);
    openssl(&[
        "req",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        "/CN=weak",
        "-outform",
        "DER",
        "-out",
        csr.to_str().unwrap(),
    ]);
    std::fs::read(csr).unwrap()
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = haystack
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    let mut out = haystack.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_csrs_are_refused_per_item() {
    let server = Server::start(|c| c);
    let (agent, entry) = agent_with_entry(&server).await;
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let good = spire_crypto::create_csr(&key, None).unwrap();
    assert_eq!(sign(&server, &agent, &entry, good.clone()).await.code, 0);

    // The last byte is inside the ECDSA signature's `s`: the self-signature no longer verifies.
    let mut bad_sig = good.clone();
    *bad_sig.last_mut().unwrap() ^= 0x55;
    // namedCurve prime256v1 (1.2.840.10045.3.1.7) -> prime192v1 (1.2.840.10045.3.1.1).
    let p256 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let p192 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x01];
    let unknown_curve = replace(&good, &p256, &p192);
    let dir = spire_testkit::temp_dir();
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("wrong signature", bad_sig, "csr"),
        ("RSA-512 key", rsa512_csr(dir.path()), "csr"),
        ("unknown curve", unknown_curve, "csr"),
        ("truncated", good[..good.len() / 2].to_vec(), "csr"),
        ("empty", Vec::new(), "csr"),
    ];
    for (what, csr, fragment) in cases {
        let st = sign(&server, &agent, &entry, csr).await;
        assert_eq!(st.code, Code::InvalidArgument as i32, "{what}: {st:?}");
        assert!(
            st.message.to_lowercase().contains(fragment),
            "{what}: message {:?} should mention {fragment:?}",
            st.message
        );
    }
    // Still serving.
    assert_eq!(sign(&server, &agent, &entry, good).await.code, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_grpc_messages_are_refused_and_the_server_keeps_serving() {
    let server = Server::start(|c| c);
    let (agent, entry) = agent_with_entry(&server).await;
    let mut c = spb::svid_client::SvidClient::new(server.channel(Some(agent.identity())).await)
        .max_encoding_message_size(usize::MAX);
    // A CSR over the server's 16 KiB CSR limit inside an acceptable message: refused per item.
    let st = sign(&server, &agent, &entry, vec![0x30; 5 * 1024 * 1024]).await;
    assert_eq!(st.code, Code::InvalidArgument as i32, "{st:?}");
    assert!(st.message.contains("the limit is 16384"), "{st:?}");
    // A message over the server's 64 MiB gRPC receive limit: refused before decoding.
    let e = c
        .batch_new_x509svid(spb::BatchNewX509svidRequest {
            params: vec![spb::NewX509svidParams {
                entry_id: entry.clone(),
                csr: vec![0x30; OVER_LIMIT],
            }],
        })
        .await
        .unwrap_err();
    // tonic reports an over-limit message as OutOfRange (grpc-go says ResourceExhausted).
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(e.message().contains("message length too large"), "{e:?}");
    // The same on the local admin socket.
    let mut local = epb::entry_client::EntryClient::new(uds_channel(&server.cfg.socket_path).await)
        .max_encoding_message_size(usize::MAX);
    let e = local
        .get_entry(epb::GetEntryRequest {
            id: "x".repeat(OVER_LIMIT),
            output_mask: None,
        })
        .await
        .unwrap_err();
    // tonic reports an over-limit message as OutOfRange (grpc-go says ResourceExhausted).
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let csr = spire_crypto::create_csr(&key, None).unwrap();
    assert_eq!(sign(&server, &agent, &entry, csr).await.code, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_and_stalled_connections_do_not_stop_the_server() {
    let mut server = Server::start(|c| c);
    let addr = server.addr();
    // A connection that says nothing and stays open for the whole test (slowloris).
    let idle = std::net::TcpStream::connect(&addr).unwrap();
    // A TLS record header announcing a huge handshake, then nothing.
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0x01])
        .unwrap();
    let payloads: [&[u8]; 5] = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        &[0u8; 4096],
        &[0xff; 65536],
        // A ClientHello-looking record with a bogus length.
        &[0x16, 0x03, 0x03, 0x00, 0x05, 0x01, 0x00, 0xff, 0xff, 0xff],
    ];
    for p in payloads {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The server may close early (a reset is fine); it must never answer with data that
        // is not a TLS alert.
        let _ = s.write_all(p);
        let mut buf = [0u8; 16];
        if let Ok(n) = s.read(&mut buf)
            && n > 0
        {
            assert_eq!(
                buf[0],
                0x15,
                "expected a TLS alert record, got {:?}",
                &buf[..n]
            );
        }
    }
    // Ordinary agents are still served, while the stalled connections are open.
    attest_token(&server, &server.token()).await.unwrap();
    assert!(server.is_running());
    drop((idle, stalled));
}

fn sel(value: String) -> types::Selector {
    types::Selector {
        r#type: "unix".into(),
        value,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_selectors_and_a_10000_entry_batch_are_bounded() {
    let mut server = Server::start(|c| c);
    let mut local = epb::entry_client::EntryClient::new(uds_channel(&server.cfg.socket_path).await);
    let create = |entries: Vec<types::Entry>| epb::BatchCreateEntryRequest {
        entries,
        output_mask: None,
    };

    // One selector value of 1 MiB.
    let big_value = entry(
        "/big-value",
        vec![sel(format!("uid:{}", "9".repeat(1 << 20)))],
    );
    let r = local.batch_create_entry(create(vec![big_value])).await;
    let big_value_status = r.map(|r| r.into_inner().results[0].status.clone().unwrap());
    // 10,000 selectors on one entry.
    let many = entry(
        "/many-selectors",
        (0..10_000).map(|i| sel(format!("uid:{i}"))).collect(),
    );
    let r = local.batch_create_entry(create(vec![many])).await;
    let many_status = r.map(|r| r.into_inner().results[0].status.clone().unwrap());
    let st = big_value_status.unwrap();
    assert_eq!(st.code, Code::InvalidArgument as i32, "{st:?}");
    assert!(
        st.message
            .contains("selector value is 1048580 bytes: the limit is 2048"),
        "{st:?}"
    );
    // 10,000 small selectors are within bounds (SPIRE sets no count limit): stored whole.
    let st = many_status.unwrap();
    assert_eq!(st.code, 0, "{st:?}");
    let shown = server.ok(&[
        "entry",
        "show",
        "-spiffeID",
        "spiffe://example.org/many-selectors",
    ]);
    assert_eq!(shown.matches("Selector").count(), 10_000);

    // 10,000 entries in one batch: every item gets an answer, and the entries are all there.
    let batch: Vec<types::Entry> = (0..10_000)
        .map(|i| entry(&format!("/batch/{i}"), vec![sel(format!("uid:{i}"))]))
        .collect();
    let resp = local
        .batch_create_entry(create(batch))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.results.len(), 10_000);
    let ok = resp
        .results
        .iter()
        .filter(|r| r.status.as_ref().is_some_and(|s| s.code == 0))
        .count();
    assert_eq!(ok, 10_000);
    let count = local
        .count_entries(epb::CountEntriesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, 10_001);
    assert!(server.is_running());
}
