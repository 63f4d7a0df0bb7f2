//! Turning a caller's view of the identity snapshot into SDS `Secret` resources.
//!
//! Resource names follow SPIRE: a SPIFFE ID names one of the caller's SVIDs (a
//! `TlsCertificate`), the configured default SVID name (`default`) names its first SVID, a
//! trust-domain ID (`spiffe://example.org`) names the local or a federated bundle (a
//! `CertificateValidationContext`), the default bundle name (`ROOTCA`) the local bundle and the
//! all-bundles name (`ALL`) every bundle the caller sees. No names means everything, under
//! canonical names only. Any name left unanswered makes the whole request `InvalidArgument`.

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine as _;
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, Node, TypedExtensionConfig, data_source, node,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, SpiffeCertValidatorConfig, TlsCertificate, secret,
    spiffe_cert_validator_config,
};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::util::pack_any;
use prost::Name as _;
use spire_spiffe::Selectors;
use tonic::Status;
use zeroize::Zeroizing;

use super::SdsSettings;
use crate::identity::{BundleView, IdentitySnapshot, WorkloadX509Svid};

/// The extension name of Envoy's SPIFFE certificate validator.
pub const SPIFFE_VALIDATOR_NAME: &str = "envoy.tls.cert_validator.spiffe";

/// The node metadata key with which one Envoy opts out of the SPIFFE validator.
pub const DISABLE_SPIFFE_VALIDATION_KEY: &str = "disable_spiffe_cert_validation";

/// The identities and bundles one caller sees in one snapshot.
#[derive(Debug, Clone)]
pub(crate) struct CallerView {
    /// The local bundle.
    pub bundle: Option<Arc<BundleView>>,
    /// Federated bundles of the caller's entries, by trust domain.
    pub federated: Vec<Arc<BundleView>>,
    /// Signed SVIDs of the caller's entries, in entry order.
    pub svids: Vec<Arc<WorkloadX509Svid>>,
    /// Whether every matching entry has a signed SVID.
    pub all_signed: bool,
}

impl CallerView {
    /// The caller's view of `snap`.
    pub fn new(snap: &IdentitySnapshot, selectors: &Selectors) -> Self {
        let entries = snap.entries_for(selectors);
        let all_signed = entries.iter().all(|id| id.svid.is_some());
        Self {
            bundle: snap.bundle.clone(),
            federated: snap.federated_bundles_for(selectors),
            svids: entries
                .into_iter()
                .filter_map(|id| id.svid.clone())
                .collect(),
            all_signed,
        }
    }

    /// Whether the view can be served: the local bundle is known and, unless the caller has
    /// waited long enough, every matching entry is signed.
    pub fn ready(&self, waited_out: bool) -> bool {
        self.bundle.is_some() && (self.all_signed || waited_out)
    }

    /// Whether anything Envoy would receive differs between the two views.
    pub fn same_content(&self, other: &Self) -> bool {
        fn bundle_eq(a: &BundleView, b: &BundleView) -> bool {
            a.trust_domain == b.trust_domain && a.x509_authorities == b.x509_authorities
        }
        let bundles = match (&self.bundle, &other.bundle) {
            (Some(a), Some(b)) => bundle_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        bundles
            && self.federated.len() == other.federated.len()
            && self
                .federated
                .iter()
                .zip(&other.federated)
                .all(|(a, b)| bundle_eq(a, b))
            && self.svids.len() == other.svids.len()
            && self.svids.iter().zip(&other.svids).all(|(a, b)| {
                a.entry_id == b.entry_id
                    && a.spiffe_id == b.spiffe_id
                    && a.cert_chain == b.cert_chain
                    && a.private_key_pkcs8 == b.private_key_pkcs8
            })
    }
}

fn pem_block(label: &str, der: &[u8], out: &mut String) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
}

/// DER certificates as concatenated PEM blocks.
pub(crate) fn certs_pem(certs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = String::new();
    for c in certs {
        pem_block("CERTIFICATE", c, &mut out);
    }
    out.into_bytes()
}

fn inline(bytes: Vec<u8>) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(bytes)),
        ..Default::default()
    })
}

fn tls_certificate(name: &str, svid: &WorkloadX509Svid) -> Secret {
    let mut key = Zeroizing::new(String::new());
    pem_block("PRIVATE KEY", &svid.private_key_pkcs8, &mut key);
    Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(certs_pem(&svid.cert_chain)),
            private_key: inline(key.as_bytes().to_vec()),
            ..Default::default()
        })),
    }
}

fn validation_context(name: &str, ctx: CertificateValidationContext) -> Secret {
    Secret {
        name: name.to_owned(),
        r#type: Some(secret::Type::ValidationContext(ctx)),
    }
}

/// A validation context with Envoy's SPIFFE validator trusting each bundle for its own trust
/// domain.
fn spiffe_validator(bundles: &[&BundleView]) -> CertificateValidationContext {
    let mut trust_domains: Vec<_> = bundles
        .iter()
        .map(|b| spiffe_cert_validator_config::TrustDomain {
            name: b.trust_domain.as_str().to_owned(),
            trust_bundle: inline(certs_pem(&b.x509_authorities)),
            ..Default::default()
        })
        .collect();
    trust_domains.sort_by(|a, b| a.name.cmp(&b.name));
    let cfg = SpiffeCertValidatorConfig {
        trust_domains,
        ..Default::default()
    };
    CertificateValidationContext {
        custom_validator_config: Some(TypedExtensionConfig {
            name: SPIFFE_VALIDATOR_NAME.to_owned(),
            typed_config: Some(pack_any(cfg)),
        }),
        ..Default::default()
    }
}

/// A plain validation context trusting the bundle's X.509 authorities.
fn trusted_ca(bundle: &BundleView) -> CertificateValidationContext {
    CertificateValidationContext {
        trusted_ca: inline(certs_pem(&bundle.x509_authorities)),
        ..Default::default()
    }
}

/// Whether the requesting Envoy is 1.18 or later (the SPIFFE validator's first release), from
/// its structured build version.
fn supports_spiffe_validator(node: Option<&Node>) -> bool {
    match node.and_then(|n| n.user_agent_version_type.as_ref()) {
        Some(node::UserAgentVersionType::UserAgentBuildVersion(b)) => b
            .version
            .as_ref()
            .is_some_and(|v| v.major_number > 1 || (v.major_number == 1 && v.minor_number > 17)),
        _ => false,
    }
}

/// A boolean as Go's `strconv.ParseBool` reads it.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The agent-wide setting, overridden by a well-formed node metadata value.
fn spiffe_validation_disabled(settings: &SdsSettings, node: Option<&Node>) -> bool {
    let value = node
        .and_then(|n| n.metadata.as_ref())
        .and_then(|m| m.fields.get(DISABLE_SPIFFE_VALIDATION_KEY))
        .and_then(|v| v.kind.as_ref());
    match value {
        Some(Kind::BoolValue(b)) => *b,
        Some(Kind::StringValue(s)) => {
            parse_bool(s).unwrap_or(settings.disable_spiffe_cert_validation)
        }
        _ => settings.disable_spiffe_cert_validation,
    }
}

/// Whether validation contexts for this request use the SPIFFE validator.
pub(crate) fn use_spiffe_validator(settings: &SdsSettings, req: &DiscoveryRequest) -> bool {
    let node = req.node.as_ref();
    !spiffe_validation_disabled(settings, node) && supports_spiffe_validator(node)
}

/// The `InvalidArgument` for names the caller gets nothing for.
fn not_authorized(names: &BTreeSet<&str>) -> Status {
    let list: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    Status::invalid_argument(format!(
        "workload is not authorized for the requested identities [{}]",
        list.join(" ")
    ))
}

/// The response to `req` from `view`. `version_info` and `nonce` are empty for FetchSecrets.
pub(crate) fn build_response(
    settings: &SdsSettings,
    view: &CallerView,
    req: &DiscoveryRequest,
    version_info: String,
    nonce: String,
) -> Result<DiscoveryResponse, Status> {
    let mut names: BTreeSet<&str> = req
        .resource_names
        .iter()
        .map(String::as_str)
        .filter(|n| !n.is_empty())
        .collect();
    let all = names.is_empty();
    let spiffe = use_spiffe_validator(settings, req);
    let one_bundle = |b: &BundleView| {
        if spiffe {
            spiffe_validator(&[b])
        } else {
            trusted_ca(b)
        }
    };

    let mut secrets = Vec::new();
    if let Some(local) = &view.bundle {
        let id = local.trust_domain.id_string();
        if all || names.remove(id.as_str()) {
            secrets.push(validation_context(&id, one_bundle(local)));
        }
        if !all && names.remove(settings.default_bundle_name.as_str()) {
            secrets.push(validation_context(
                &settings.default_bundle_name,
                one_bundle(local),
            ));
        }
        if !all && names.contains(settings.default_all_bundles_name.as_str()) {
            if !spiffe {
                return Err(Status::internal(format!(
                    "resource {:?} needs Envoy's SPIFFE certificate validator: Envoy 1.18 or \
                     later with SPIFFE certificate validation enabled",
                    settings.default_all_bundles_name
                )));
            }
            names.remove(settings.default_all_bundles_name.as_str());
            let every: Vec<&BundleView> = std::iter::once(local.as_ref())
                .chain(view.federated.iter().map(AsRef::as_ref))
                .collect();
            secrets.push(validation_context(
                &settings.default_all_bundles_name,
                spiffe_validator(&every),
            ));
        }
    }
    for fed in &view.federated {
        let id = fed.trust_domain.id_string();
        if all || names.remove(id.as_str()) {
            secrets.push(validation_context(&id, one_bundle(fed)));
        }
    }
    for (i, svid) in view.svids.iter().enumerate() {
        let id = svid.spiffe_id.as_str();
        if all || names.remove(id) {
            secrets.push(tls_certificate(id, svid));
        }
        if i == 0 && !all && names.remove(settings.default_svid_name.as_str()) {
            secrets.push(tls_certificate(&settings.default_svid_name, svid));
        }
    }
    if !names.is_empty() {
        return Err(not_authorized(&names));
    }

    let type_url = if req.type_url.is_empty() {
        Secret::type_url()
    } else {
        req.type_url.clone()
    };
    Ok(DiscoveryResponse {
        version_info,
        resources: secrets.into_iter().map(pack_any).collect(),
        type_url,
        nonce,
        ..Default::default()
    })
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn pem_wraps_at_64_columns() {
        let pem = String::from_utf8(certs_pem(&[vec![0u8; 100]])).unwrap();
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last().copied(), Some("-----END CERTIFICATE-----"));
    }

    #[test]
    fn go_bool_parsing() {
        assert_eq!(parse_bool("True"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("yes"), None);
    }

    #[test]
    fn not_authorized_lists_sorted_quoted_names() {
        let names: BTreeSet<&str> = ["spiffe://x/b", "spiffe://x/a"].into_iter().collect();
        let st = not_authorized(&names);
        assert_eq!(st.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            st.message(),
            "workload is not authorized for the requested identities [\"spiffe://x/a\" \"spiffe://x/b\"]"
        );
    }
}
