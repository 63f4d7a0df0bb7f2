//! End-to-end handshakes between `connect` clients and a tonic server over `TlsIncoming`.

use std::sync::Arc;
use std::time::Duration;

use rustls::HandshakeKind;
use rustls_pki_types::ServerName;
use spire_spiffe::Clock;
use spire_tls::{BundleSet, ClientAuth, PeerMatcher, ServerAuth, ServerOptions, SharedIdentity};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::support::*;

const AGENT: &str = "spiffe://example.org/agent/x";

#[tokio::test]
async fn client_with_valid_svid_is_seen_by_handler() {
    bounded(async {
        let ca = TestCa::new("example.org");
        let server = TestServer::start(ca.svid("/spire/server"), ca.bundle()).await;
        let agent = ca.svid("/agent/x");
        let agent_leaf = agent.leaf().clone();

        server
            .call(client(&ca.bundle(), Some(agent)))
            .await
            .unwrap();

        let calls = server.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].peer_spiffe_id(), Some(&id(AGENT)));
        assert_eq!(calls[0].peer_leaf(), Some(&agent_leaf));
        assert_eq!(calls[0].peer_cert_chain().len(), 1);
        assert!(calls[0].remote_addr().ip().is_loopback());
        assert_eq!(calls[0].local_addr(), Some(server.addr));
    })
    .await;
}

#[tokio::test]
async fn chains_through_an_intermediate_validate_on_both_sides() {
    bounded(async {
        let root = TestCa::new("example.org");
        let inter = root.intermediate();
        let (server_cert, server_key) =
            inter.sign(inter.leaf_params(&["spiffe://example.org/spire/server"]));
        let (agent_cert, agent_key) = inter.sign(inter.leaf_params(&[AGENT]));
        let server_id =
            spire_tls::Identity::from_der([server_cert, inter.root()], server_key).unwrap();
        let agent_id =
            spire_tls::Identity::from_der([agent_cert.clone(), inter.root()], agent_key.clone())
                .unwrap();
        // Only the root is in the bundle.
        let server = TestServer::start(server_id, root.bundle()).await;

        server
            .call(client(&root.bundle(), Some(agent_id)))
            .await
            .unwrap();
        assert_eq!(server.calls()[0].peer_spiffe_id(), Some(&id(AGENT)));
        assert_eq!(server.calls()[0].peer_cert_chain().len(), 2);

        // Without the intermediate the leaf cannot be chained to the root.
        let bare = spire_tls::Identity::from_der([agent_cert], agent_key).unwrap();
        let err = server
            .call(client(&root.bundle(), Some(bare)))
            .await
            .unwrap_err();
        assert!(err.contains("UnknownCA"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn client_without_certificate_is_anonymous() {
    bounded(async {
        let ca = TestCa::new("example.org");
        let server = TestServer::start(ca.svid("/spire/server"), ca.bundle()).await;

        server.call(client(&ca.bundle(), None)).await.unwrap();

        let calls = server.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].peer_spiffe_id(), None);
        assert!(calls[0].peer_cert_chain().is_empty());
    })
    .await;
}

#[tokio::test]
async fn client_certificate_from_foreign_ca_is_rejected_and_server_keeps_serving() {
    bounded(async {
        let ca = TestCa::new("example.org");
        // Same trust domain name, different key: an impostor CA.
        let impostor = TestCa::new("example.org");
        let server = TestServer::start(ca.svid("/spire/server"), ca.bundle()).await;

        let err = server
            .call(client(&ca.bundle(), Some(impostor.svid("/agent/x"))))
            .await
            .unwrap_err();
        // The impostor's signature does not verify under the real root.
        assert!(err.contains("DecryptError"), "{err}");
        assert!(server.calls().is_empty(), "rejected peer reached a handler");

        // A failed handshake does not stop the accept loop.
        server
            .call(client(&ca.bundle(), Some(ca.svid("/agent/x"))))
            .await
            .unwrap();
        assert_eq!(server.calls().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn client_certificate_from_unknown_trust_domain_is_rejected() {
    bounded(async {
        let ca = TestCa::new("example.org");
        let other = TestCa::new("other.org");
        let server = TestServer::start(ca.svid("/spire/server"), ca.bundle()).await;

        let err = server
            .call(client(&ca.bundle(), Some(other.svid("/agent/x"))))
            .await
            .unwrap_err();
        assert!(err.contains("UnknownCA"), "{err}");
        assert!(server.calls().is_empty());

        // Federating with other.org (a bundle update, no restart) makes it acceptable.
        server
            .bundles
            .set_roots(other.trust_domain.clone(), [other.root()])
            .unwrap();
        server
            .call(client(&ca.bundle(), Some(other.svid("/agent/x"))))
            .await
            .unwrap();
        assert_eq!(
            server.calls()[0].peer_spiffe_id(),
            Some(&id("spiffe://other.org/agent/x"))
        );
    })
    .await;
}

#[tokio::test]
async fn client_rejects_server_with_unexpected_spiffe_id() {
    bounded(async {
        let ca = TestCa::new("example.org");
        let server = TestServer::start(ca.svid("/spire/server"), ca.bundle()).await;

        let expecting_other = client_expecting(
            &ca.bundle(),
            None,
            PeerMatcher::Exact(id("spiffe://example.org/spire/other-server")),
        );
        let err = server.call(expecting_other).await.unwrap_err();
        assert!(
            err.starts_with("connect:") && err.contains("Unauthorized"),
            "{err}"
        );

        // The same server passes when the expectation matches, also as an exact ID.
        let expecting_server = client_expecting(
            &ca.bundle(),
            None,
            PeerMatcher::Exact(id("spiffe://example.org/spire/server")),
        );
        server.call(expecting_server).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn client_rejects_server_from_foreign_ca() {
    bounded(async {
        let ca = TestCa::new("example.org");
        let impostor = TestCa::new("example.org");
        let server = TestServer::start(impostor.svid("/spire/server"), impostor.bundle()).await;

        let err = server.call(client(&ca.bundle(), None)).await.unwrap_err();
        assert!(
            err.starts_with("connect:") && err.contains("BadSignature"),
            "{err}"
        );
        assert!(server.calls().is_empty());
    })
    .await;
}

#[tokio::test]
async fn insecure_bootstrap_skips_chain_but_checks_trust_domain() {
    bounded(async {
        let server_ca = TestCa::new("example.org");
        let server = TestServer::start(server_ca.svid("/spire/server"), server_ca.bundle()).await;

        let insecure = |td_name: &str| {
            spire_tls::client_config(
                ServerAuth::InsecureBootstrap {
                    trust_domain: td(td_name),
                },
                client_options(None),
            )
            .unwrap()
        };
        // No bundle at all, yet the server is accepted: it is in example.org.
        server.call(insecure("example.org")).await.unwrap();
        // A server outside the expected trust domain is still refused.
        let err = server.call(insecure("other.org")).await.unwrap_err();
        assert!(
            err.starts_with("connect:") && err.contains("other.org"),
            "{err}"
        );
    })
    .await;
}

#[tokio::test]
async fn rotated_server_identity_is_presented_on_next_connection() {
    bounded(async {
        let ca = TestCa::new("example.org");
        let first = ca.svid("/spire/server");
        let second = ca.svid("/spire/server");
        assert_ne!(first.leaf(), second.leaf());
        let server = TestServer::start(first.clone(), ca.bundle()).await;
        let config = client(&ca.bundle(), None);

        let (leaf, kind) = raw_handshake(&server, config.clone()).await;
        assert_eq!(&leaf, first.leaf());
        assert_eq!(kind, HandshakeKind::Full);

        server.identity.store(second.clone());

        let (leaf, kind) = raw_handshake(&server, config.clone()).await;
        assert_eq!(&leaf, second.leaf());
        // No resumption: the second connection with the same client config is a full handshake.
        assert_eq!(kind, HandshakeKind::Full);
        server.call(config).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn rotated_bundle_takes_effect_without_restart() {
    bounded(async {
        let old_ca = TestCa::new("example.org");
        let new_ca = TestCa::new("example.org");
        let server = TestServer::start(old_ca.svid("/spire/server"), old_ca.bundle()).await;
        let new_agent = new_ca.svid("/agent/x");

        server
            .call(client(&old_ca.bundle(), Some(new_agent.clone())))
            .await
            .unwrap_err();

        // Bundle rotation: both authorities trusted.
        server
            .bundles
            .set_roots(old_ca.trust_domain.clone(), [old_ca.root(), new_ca.root()])
            .unwrap();
        server
            .call(client(&old_ca.bundle(), Some(new_agent.clone())))
            .await
            .unwrap();

        // The old authority removed: the server's own old SVID still works for clients that
        // trust it, but an agent signed by the old CA is now refused.
        server
            .bundles
            .set_roots(new_ca.trust_domain.clone(), [new_ca.root()])
            .unwrap();
        server
            .call(client(&old_ca.bundle(), Some(old_ca.svid("/agent/x"))))
            .await
            .unwrap_err();
        assert_eq!(server.calls().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn expired_client_certificate_is_rejected_at_the_clock_time() {
    bounded(async {
        let ca = TestCa::new("example.org");
        let server = TestServer::start(ca.svid("/spire/server"), ca.bundle()).await;
        // Valid from 3h to 1h before the server clock's "now".
        let expired = ca.svid_valid("/agent/x", at(-hours(3)), at(-hours(1)));

        let err = server
            .call(client(&ca.bundle(), Some(expired.clone())))
            .await
            .unwrap_err();
        assert!(err.contains("CertificateExpired"), "{err}");
        assert!(server.calls().is_empty());

        // Validity is judged by the configured clock, not the wall clock: move it back 2h.
        server
            .clock
            .set(server.clock.now() - Duration::from_secs(2 * 3600));
        server
            .call(client(&ca.bundle(), Some(expired)))
            .await
            .unwrap();
        assert_eq!(server.calls()[0].peer_spiffe_id(), Some(&id(AGENT)));
    })
    .await;
}

#[tokio::test]
async fn client_certificate_with_two_uri_sans_is_rejected() {
    bounded(async {
        let ca = TestCa::new("example.org");
        let server = TestServer::start(ca.svid("/spire/server"), ca.bundle()).await;
        let (cert, key) = ca.sign(ca.leaf_params(&[AGENT, "spiffe://example.org/agent/y"]));
        // Identity::from_der refuses it, so present it through a plain rustls resolver.
        let provider = spire_tls::provider();
        let certified = rustls::sign::CertifiedKey::from_der(
            vec![cert],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.into()),
            &provider,
        )
        .unwrap();
        let mut config = (*client(&ca.bundle(), None)).clone();
        config.client_auth_cert_resolver = Arc::new(Fixed(Arc::new(certified)));

        let err = server.call(Arc::new(config)).await.unwrap_err();
        assert!(err.contains("CertificateUnknown"), "{err}");
        assert!(server.calls().is_empty());
    })
    .await;
}

#[tokio::test]
async fn required_client_auth_refuses_anonymous_clients() {
    bounded(async {
        let ca = TestCa::new("example.org");
        let identity = SharedIdentity::new(ca.svid("/spire/server"));
        let config = spire_tls::server_config(
            &identity,
            &ca.bundle(),
            ServerOptions {
                client_auth: ClientAuth::Required,
                authorize: PeerMatcher::MemberOf(td("example.org")),
                clock: Arc::new(spire_spiffe::FakeClock::default()),
            },
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = spire_tls::TlsIncoming::new(listener, config);
        let accepted = tokio::spawn(async move {
            use futures::StreamExt;
            incoming.next().await
        });

        // The anonymous client completes its side, but the server drops it; then a client
        // with an SVID is accepted.
        let _ = handshake_to(addr, client(&ca.bundle(), None)).await;
        let stream = handshake_to(addr, client(&ca.bundle(), Some(ca.svid("/agent/x"))))
            .await
            .unwrap();
        drop(stream);
        let conn = accepted.await.unwrap().unwrap().unwrap();
        assert_eq!(conn.peer().peer_spiffe_id(), Some(&id(AGENT)));
        assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    })
    .await;
}

#[tokio::test]
async fn stalled_handshake_times_out_without_blocking_others() {
    bounded(async {
        let ca = TestCa::new("example.org");
        let server = TestServer::start_with(ca.svid("/spire/server"), ca.bundle(), |i| {
            i.with_handshake_timeout(Duration::from_millis(200))
        })
        .await;

        // A TCP client that never starts TLS.
        let mut idle = TcpStream::connect(server.addr).await.unwrap();
        // Others are served meanwhile.
        server.call(client(&ca.bundle(), None)).await.unwrap();
        // The stalled one is eventually closed by the server.
        let mut buf = [0u8; 16];
        let n = idle.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0);
    })
    .await;
}

#[tokio::test]
async fn sessions_are_never_resumed() {
    bounded(async {
        let ca = TestCa::new("example.org");
        let identity = SharedIdentity::new(ca.svid("/spire/server"));
        let ours = spire_tls::server_config(&identity, &ca.bundle(), server_options()).unwrap();
        let mut resuming_server = (*ours).clone();
        resuming_server.session_storage = rustls::server::ServerSessionMemoryCache::new(16);
        resuming_server.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().unwrap();
        resuming_server.send_tls13_tickets = 2;
        let resuming_server = Arc::new(resuming_server);

        let our_client = client(&ca.bundle(), None);
        let mut resuming_client = (*our_client).clone();
        resuming_client.resumption = rustls::client::Resumption::in_memory_sessions(16);
        let resuming_client = Arc::new(resuming_client);

        // Control: with resumption on both sides the second handshake is resumed.
        let addr = serve_raw(resuming_server.clone()).await;
        assert_eq!(
            fetch_kind(addr, resuming_client.clone()).await,
            HandshakeKind::Full
        );
        assert_eq!(
            fetch_kind(addr, resuming_client.clone()).await,
            HandshakeKind::Resumed
        );

        // Our client never resumes, even with a server that offers it.
        assert_eq!(
            fetch_kind(addr, our_client.clone()).await,
            HandshakeKind::Full
        );
        assert_eq!(
            fetch_kind(addr, our_client.clone()).await,
            HandshakeKind::Full
        );

        // Our server never resumes, even with a client that tries.
        let addr = serve_raw(ours).await;
        assert_eq!(
            fetch_kind(addr, resuming_client.clone()).await,
            HandshakeKind::Full
        );
        assert_eq!(fetch_kind(addr, resuming_client).await, HandshakeKind::Full);
    })
    .await;
}

#[test]
fn bundle_set_from_spiffe_bundles() {
    let ca = TestCa::new("example.org");
    let other = TestCa::new("other.org");
    let mut bundle = spire_spiffe::Bundle::new(td("example.org"));
    bundle.x509_authorities = vec![ca.root().to_vec()];
    let mut other_bundle = spire_spiffe::Bundle::new(td("other.org"));
    other_bundle.x509_authorities = vec![other.root().to_vec()];

    let set = BundleSet::new();
    set.set_bundle(&bundle).unwrap();
    assert_eq!(set.roots(&td("example.org")), Some(vec![ca.root()]));
    set.replace_bundles([&other_bundle]).unwrap();
    assert_eq!(set.trust_domains(), vec![td("other.org")]);
    assert_eq!(set.roots(&td("other.org")), Some(vec![other.root()]));
}

#[test]
fn bundle_set_rejects_garbage_roots_and_keeps_old_ones() {
    let ca = TestCa::new("example.org");
    let set = ca.bundle();
    let err = set
        .set_roots(ca.trust_domain.clone(), [ca.root(), vec![1u8, 2, 3].into()])
        .unwrap_err();
    assert!(err.to_string().contains("root #1"), "{err}");
    assert_eq!(set.roots(&ca.trust_domain), Some(vec![ca.root()]));
    assert_eq!(set.trust_domains(), vec![td("example.org")]);
    assert!(set.remove(&td("example.org")));
    assert!(!set.remove(&td("example.org")));
    assert_eq!(BundleSet::new().trust_domains(), vec![]);
}

// === helpers ===

fn server_options() -> ServerOptions {
    ServerOptions {
        clock: Arc::new(spire_spiffe::FakeClock::default()),
        ..ServerOptions::default()
    }
}

/// A bare TLS server that answers every connection with "ok" and closes it.
async fn serve_raw(config: Arc<rustls::ServerConfig>) -> std::net::SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"ok").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

/// Connects, reads the whole answer (so session tickets are processed) and reports the kind of
/// handshake that was done.
async fn fetch_kind(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> HandshakeKind {
    let mut stream = handshake_to(addr, config).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"ok");
    stream.get_ref().1.handshake_kind().unwrap()
}

#[derive(Debug)]
struct Fixed(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Fixed {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

async fn handshake_to(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("spire-server").unwrap(), tcp)
        .await
}

/// A bare TLS handshake with the test server: the server's leaf and the handshake kind.
async fn raw_handshake(
    server: &TestServer,
    config: Arc<rustls::ClientConfig>,
) -> (rustls_pki_types::CertificateDer<'static>, HandshakeKind) {
    let stream = handshake_to(server.addr, config).await.unwrap();
    let conn = stream.get_ref().1;
    (
        conn.peer_certificates().unwrap()[0].clone(),
        conn.handshake_kind().unwrap(),
    )
}
