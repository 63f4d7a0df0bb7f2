//! Server-side TLS: present our SVID, optionally authenticate clients by X509-SVID.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::NoServerSessionStorage;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};
use spire_spiffe::{Clock, SystemClock};

use crate::bundle::BundleSet;
use crate::error::TlsError;
use crate::identity::{IdentityResolver, SharedIdentity};
use crate::svid::{self, PeerMatcher};
use crate::time::ClockTime;

/// Whether a client must present a certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// Clients may connect without a certificate (SPIRE's server listener: node attestation
    /// is unauthenticated). A certificate that is presented must validate.
    #[default]
    Optional,
    /// Clients must present a valid X509-SVID.
    Required,
}

/// Options for [`server_config`].
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Whether client certificates are optional or required.
    pub client_auth: ClientAuth,
    /// Which client SPIFFE IDs may complete the handshake (after chain validation).
    pub authorize: PeerMatcher,
    /// The time source for certificate validity.
    pub clock: Arc<dyn Clock>,
}

impl Default for ServerOptions {
    /// Optional client certificates, any validated SPIFFE ID, the system clock.
    fn default() -> Self {
        ServerOptions {
            client_auth: ClientAuth::Optional,
            authorize: PeerMatcher::Any,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Builds the server's rustls config: presents the identity currently in `identity`, validates
/// client certificates against the roots currently in `bundles`, negotiates ALPN `h2`, and
/// disables session resumption (no session cache, no tickets, no early data).
pub fn server_config(
    identity: &SharedIdentity,
    bundles: &BundleSet,
    options: ServerOptions,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crate::provider();
    let verifier =
        SpiffeClientCertVerifier::new(bundles.clone(), options.client_auth, options.authorize);
    let mut config =
        ServerConfig::builder_with_details(provider, ClockTime::provider(options.clock))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(IdentityResolver(identity.clone())));
    config.alpn_protocols = vec![crate::ALPN_H2.to_vec()];
    // No resumption of any kind: every connection runs full chain validation.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// A rustls client-certificate verifier for X509-SVIDs.
///
/// Validates the client's chain against the bundle of the trust domain named by its SPIFFE ID
/// (read from the [`BundleSet`] at each handshake), requires exactly one SPIFFE ID URI SAN on a
/// non-CA leaf with client-auth usage, then applies the [`PeerMatcher`].
pub struct SpiffeClientCertVerifier {
    bundles: BundleSet,
    client_auth: ClientAuth,
    authorize: PeerMatcher,
    algs: WebPkiSupportedAlgorithms,
}

impl SpiffeClientCertVerifier {
    /// A verifier over `bundles`.
    pub fn new(bundles: BundleSet, client_auth: ClientAuth, authorize: PeerMatcher) -> Self {
        SpiffeClientCertVerifier {
            bundles,
            client_auth,
            authorize,
            algs: crate::provider().signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for SpiffeClientCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.client_auth == ClientAuth::Required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // SPIFFE clients pick their SVID without CA hints.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        svid::verify_chain(
            &self.bundles,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
            self.algs.all,
        )
        .and_then(|id| self.authorize.check(id))
        .map(|id| {
            tracing::debug!(spiffe_id = %id, "Client X509-SVID verified");
            ClientCertVerified::assertion()
        })
        .map_err(|e| {
            tracing::warn!(error = %ErrorChain(&e), "Client X509-SVID rejected");
            svid::to_rustls_error(e)
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl fmt::Debug for SpiffeClientCertVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeClientCertVerifier")
            .field("bundles", &self.bundles)
            .field("client_auth", &self.client_auth)
            .field("authorize", &self.authorize)
            .finish()
    }
}

/// Displays an error followed by its sources, `a: b: c`.
pub(crate) struct ErrorChain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}
