//! Test CA, SVIDs and a tonic health server that records who called it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::ClientConfig;
use spire_spiffe::{Clock, FakeClock, SpiffeId, TrustDomain};
use spire_tls::{
    BundleSet, CertificateDer, ClientOptions, Identity, PeerInfo, ServerAuth, ServerOptions,
    SharedIdentity, TlsIncoming,
};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Upper bound for any single test; never reached when the code works.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test exceeded its time bound")
}

/// The fixed "now" of the tests' clocks.
pub fn now() -> SystemTime {
    FakeClock::default().now()
}

pub fn hours(h: i64) -> time::Duration {
    time::Duration::hours(h)
}

pub fn at(offset: time::Duration) -> OffsetDateTime {
    OffsetDateTime::from(now()) + offset
}

pub fn td(name: &str) -> TrustDomain {
    name.parse().unwrap()
}

pub fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

/// A SPIFFE signing CA for one trust domain.
pub struct TestCa {
    pub trust_domain: TrustDomain,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(trust_domain: &str) -> TestCa {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "spire-tls test");
        dn.push(DnType::CommonName, format!("{trust_domain} CA"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{trust_domain}").try_into().unwrap(),
        )];
        params.not_before = at(-hours(24 * 30));
        params.not_after = at(hours(24 * 30));
        let key = KeyPair::generate().unwrap();
        TestCa {
            trust_domain: td(trust_domain),
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// An intermediate signing CA under this one; its SVIDs carry the intermediate in their
    /// chain.
    pub fn intermediate(&self) -> TestCa {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("{} intermediate", self.trust_domain),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://{}", self.trust_domain)
                .try_into()
                .unwrap(),
        )];
        params.not_before = at(-hours(24));
        params.not_after = at(hours(24));
        let key = KeyPair::generate().unwrap();
        TestCa {
            trust_domain: self.trust_domain.clone(),
            issuer: CertifiedIssuer::signed_by(params, key, &self.issuer).unwrap(),
        }
    }

    pub fn root(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Leaf params for an X509-SVID named `uris` (usually one).
    pub fn leaf_params(&self, uris: &[&str]) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyAgreement,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.subject_alt_names = uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().unwrap()))
            .collect();
        params.not_before = at(-hours(1));
        params.not_after = at(hours(1));
        params
    }

    /// Signs `params` for a fresh key; returns (leaf DER, PKCS#8 key DER).
    pub fn sign(&self, params: CertificateParams) -> (CertificateDer<'static>, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.der().clone(), key.serialize_der())
    }

    /// An X509-SVID for `path`, valid from one hour before to one hour after `now()`.
    pub fn svid(&self, path: &str) -> Identity {
        self.svid_valid(path, at(-hours(1)), at(hours(1)))
    }

    pub fn svid_valid(
        &self,
        path: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Identity {
        let mut params = self.leaf_params(&[&format!("spiffe://{}{path}", self.trust_domain)]);
        params.not_before = not_before;
        params.not_after = not_after;
        let (cert, key) = self.sign(params);
        Identity::from_der([cert], key).unwrap()
    }

    pub fn bundle(&self) -> BundleSet {
        BundleSet::with_roots(self.trust_domain.clone(), [self.root()]).unwrap()
    }
}

/// A running tonic health server over `TlsIncoming`, recording the peer of every call.
pub struct TestServer {
    pub addr: SocketAddr,
    pub identity: SharedIdentity,
    pub bundles: BundleSet,
    pub clock: FakeClock,
    calls: Arc<Mutex<Vec<PeerInfo>>>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start(identity: Identity, bundles: BundleSet) -> TestServer {
        Self::start_with(identity, bundles, |incoming| incoming).await
    }

    pub async fn start_with(
        identity: Identity,
        bundles: BundleSet,
        tweak: impl FnOnce(TlsIncoming) -> TlsIncoming,
    ) -> TestServer {
        let clock = FakeClock::default();
        let identity = SharedIdentity::new(identity);
        let config = spire_tls::server_config(
            &identity,
            &bundles,
            ServerOptions {
                clock: Arc::new(clock.clone()),
                ..ServerOptions::default()
            },
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tweak(TlsIncoming::new(listener, config));

        let calls: Arc<Mutex<Vec<PeerInfo>>> = Arc::default();
        let recorder = {
            let calls = calls.clone();
            move |req: tonic::Request<()>| {
                let peer = spire_tls::peer_info(&req)
                    .cloned()
                    .ok_or_else(|| tonic::Status::internal("no PeerInfo in request"))?;
                calls.lock().unwrap().push(peer);
                Ok(req)
            }
        };
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .layer(tonic::service::InterceptorLayer::new(recorder))
                .add_service(health)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        TestServer {
            addr,
            identity,
            bundles,
            clock,
            calls,
            shutdown: Some(tx),
        }
    }

    pub fn calls(&self) -> Vec<PeerInfo> {
        self.calls.lock().unwrap().clone()
    }

    /// Connects with `config` and makes one health check. Err describes the failure, whether
    /// at connect time or on the call (with TLS 1.3 a rejected client certificate surfaces
    /// only after the client's side of the handshake is done).
    pub async fn call(&self, config: Arc<ClientConfig>) -> Result<(), String> {
        let channel = spire_tls::connect(&self.addr.to_string(), config)
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|e| format!("call: {e:?}"))?;
        Ok(())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A client config that verifies the server as `spiffe://<td>/spire/server` against `bundles`
/// and presents `identity` (if any), with the tests' fixed clock.
pub fn client(bundles: &BundleSet, identity: Option<Identity>) -> Arc<ClientConfig> {
    client_expecting(
        bundles,
        identity,
        spire_tls::PeerMatcher::SpireServer(td("example.org")),
    )
}

pub fn client_expecting(
    bundles: &BundleSet,
    identity: Option<Identity>,
    expected: spire_tls::PeerMatcher,
) -> Arc<ClientConfig> {
    spire_tls::client_config(
        ServerAuth::Verify {
            bundles: bundles.clone(),
            expected,
        },
        client_options(identity),
    )
    .unwrap()
}

pub fn client_options(identity: Option<Identity>) -> ClientOptions {
    ClientOptions {
        identity: identity.map(SharedIdentity::new).unwrap_or_default(),
        clock: Arc::new(FakeClock::default()),
    }
}
