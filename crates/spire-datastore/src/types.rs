//! Domain types stored by the datastore.
//!
//! Times are Unix seconds (`i64`); `0` means "not set" where a field is optional (an entry's
//! `expires_at`, a JWT authority's `expires_at`).

use std::fmt;

use spire_spiffe::{Selectors, SpiffeId, TrustDomain};

/// What kind of object an error or change-log row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ObjectKind {
    /// A registration entry.
    Entry,
    /// An attested node (agent).
    Node,
    /// A join token.
    JoinToken,
    /// A trust bundle.
    Bundle,
    /// A federation relationship.
    FederationRelationship,
    /// A CA journal.
    CaJournal,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Entry => "registration entry",
            ObjectKind::Node => "attested node",
            ObjectKind::JoinToken => "join token",
            ObjectKind::Bundle => "bundle",
            ObjectKind::FederationRelationship => "federation relationship",
            ObjectKind::CaJournal => "CA journal",
        })
    }
}

// === registration entries ===

/// A registration entry (SPIRE `types.Entry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Entry ID. On create, empty means "generate a UUID".
    pub id: String,
    /// The SPIFFE ID of the workload or node alias this entry describes.
    pub spiffe_id: SpiffeId,
    /// The SPIFFE ID of the agent (or node alias) entitled to this entry.
    pub parent_id: SpiffeId,
    /// Selectors a workload or node must have (never empty for a valid entry).
    pub selectors: Selectors,
    /// X509-SVID TTL in seconds (0 = server default).
    pub x509_svid_ttl: i32,
    /// JWT-SVID TTL in seconds (0 = server default).
    pub jwt_svid_ttl: i32,
    /// Trust domains whose bundles are delivered with the SVID (each must have a stored bundle).
    pub federates_with: Vec<TrustDomain>,
    /// The workload gets admin rights on the server APIs.
    pub admin: bool,
    /// The workload is a downstream SPIRE server.
    pub downstream: bool,
    /// When the entry expires (Unix seconds, 0 = never).
    pub expires_at: i64,
    /// DNS names for the X509-SVID, in order (the first becomes the CN).
    pub dns_names: Vec<String>,
    /// Incremented by the datastore on every change of the entry (0 when created).
    pub revision_number: i64,
    /// The SVID is stored by an SVIDStore plugin instead of served.
    pub store_svid: bool,
    /// Free-form hint given to workloads.
    pub hint: String,
    /// When the entry was created (Unix seconds, set by the datastore).
    pub created_at: i64,
    /// Add a `jti` claim to JWT-SVIDs.
    pub jwt_svid_include_jti: bool,
    /// The agent does not prefetch X509-SVIDs for this entry.
    pub disable_x509_svid_prefetch: bool,
}

impl Entry {
    /// A new entry with the given identity and every other field at its default.
    pub fn new(spiffe_id: SpiffeId, parent_id: SpiffeId, selectors: Selectors) -> Self {
        Entry {
            id: String::new(),
            spiffe_id,
            parent_id,
            selectors,
            x509_svid_ttl: 0,
            jwt_svid_ttl: 0,
            federates_with: Vec::new(),
            admin: false,
            downstream: false,
            expires_at: 0,
            dns_names: Vec::new(),
            revision_number: 0,
            store_svid: false,
            hint: String::new(),
            created_at: 0,
            jwt_svid_include_jti: false,
            disable_x509_svid_prefetch: false,
        }
    }
}

/// Which fields an entry update changes (SPIRE `types.EntryMask`). `id`, `revision_number` and
/// `created_at` are never taken from the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct EntryMask {
    pub spiffe_id: bool,
    pub parent_id: bool,
    pub selectors: bool,
    pub x509_svid_ttl: bool,
    pub jwt_svid_ttl: bool,
    pub federates_with: bool,
    pub admin: bool,
    pub downstream: bool,
    pub expires_at: bool,
    pub dns_names: bool,
    pub store_svid: bool,
    pub hint: bool,
    pub jwt_svid_include_jti: bool,
    pub disable_x509_svid_prefetch: bool,
}

impl EntryMask {
    /// Every updatable field.
    pub fn all() -> Self {
        EntryMask {
            spiffe_id: true,
            parent_id: true,
            selectors: true,
            x509_svid_ttl: true,
            jwt_svid_ttl: true,
            federates_with: true,
            admin: true,
            downstream: true,
            expires_at: true,
            dns_names: true,
            store_svid: true,
            hint: true,
            jwt_svid_include_jti: true,
            disable_x509_svid_prefetch: true,
        }
    }
}

/// How a set filter compares an object's set (selectors, federated trust domains) with the
/// filter's set (SPIRE `SelectorMatch` / `FederatesWithMatch`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum MatchMode {
    /// The object's set equals the filter's set.
    #[default]
    Exact,
    /// The object's (non-empty) set is a subset of the filter's set.
    Subset,
    /// The object's set is a superset of the filter's set.
    Superset,
    /// The object's set shares at least one element with the filter's set.
    Any,
}

/// Filter on an entry's or node's selectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorFilter {
    /// The selectors to compare with.
    pub selectors: Selectors,
    /// How to compare.
    pub mode: MatchMode,
}

/// Filter on an entry's federated trust domains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatesWithFilter {
    /// The trust domains to compare with.
    pub trust_domains: Vec<TrustDomain>,
    /// How to compare.
    pub mode: MatchMode,
}

/// Filters for listing and counting entries; every set filter must hold (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFilter {
    /// Only entries with this SPIFFE ID.
    pub by_spiffe_id: Option<SpiffeId>,
    /// Only entries with this parent ID.
    pub by_parent_id: Option<SpiffeId>,
    /// Only entries whose selectors match.
    pub by_selectors: Option<SelectorFilter>,
    /// Only entries whose federated trust domains match.
    pub by_federates_with: Option<FederatesWithFilter>,
    /// Only entries with this hint.
    pub by_hint: Option<String>,
    /// Only entries with this `downstream` flag.
    pub by_downstream: Option<bool>,
}

// === paging ===

/// Which page to read. Items are ordered by their key (entry ID, node SPIFFE ID, trust domain).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pagination {
    /// The `next_page_token` of the previous page; empty for the first page.
    pub token: String,
    /// Maximum number of items; 0 means "all remaining".
    pub page_size: u32,
}

impl Pagination {
    /// The first page of `page_size` items.
    pub fn first(page_size: u32) -> Self {
        Pagination {
            token: String::new(),
            page_size,
        }
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Token for the next page; empty when this is the last page.
    pub next_page_token: String,
}

// === attested nodes ===

/// An attested node, i.e. an agent (SPIRE `types.Agent` / `AttestedNode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedNode {
    /// The agent's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The node attestor that attested it (`join_token`, `x509pop`, …).
    pub attestation_type: String,
    /// Serial number of the current agent SVID (empty together with `new_cert_serial_number`
    /// means banned).
    pub cert_serial_number: String,
    /// Expiry of the current agent SVID (Unix seconds).
    pub cert_not_after: i64,
    /// Serial number of an agent SVID issued but not yet used by the agent.
    pub new_cert_serial_number: String,
    /// Expiry of that new SVID.
    pub new_cert_not_after: i64,
    /// The agent may re-attest instead of renewing.
    pub can_reattest: bool,
    /// Version the agent last reported.
    pub agent_version: String,
    /// The node's selectors (from attestation and node resolvers).
    pub selectors: Selectors,
}

impl AttestedNode {
    /// A banned node has neither a current nor a new SVID serial number.
    pub fn is_banned(&self) -> bool {
        self.cert_serial_number.is_empty() && self.new_cert_serial_number.is_empty()
    }
}

/// Fields changed by [`crate::DataStore::update_attested_node`]; `None` keeps the stored value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NodeUpdate {
    pub cert_serial_number: Option<String>,
    pub cert_not_after: Option<i64>,
    pub new_cert_serial_number: Option<String>,
    pub new_cert_not_after: Option<i64>,
    pub can_reattest: Option<bool>,
    pub agent_version: Option<String>,
}

/// Filters for listing and counting attested nodes; every set filter must hold (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFilter {
    /// Only nodes attested with this attestor.
    pub by_attestation_type: Option<String>,
    /// Only banned (`true`) or only not banned (`false`) nodes.
    pub by_banned: Option<bool>,
    /// Only nodes with this `can_reattest` flag.
    pub by_can_reattest: Option<bool>,
    /// Only nodes whose current SVID expires before this time (Unix seconds).
    pub by_expires_before: Option<i64>,
    /// Only nodes whose selectors match.
    pub by_selectors: Option<SelectorFilter>,
}

// === join tokens ===

/// Result of consuming a join token. The token is deleted in every case where it existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinTokenStatus {
    /// The token existed and had not expired.
    Valid {
        /// Its expiry (Unix seconds).
        expires_at: i64,
    },
    /// The token existed but had expired.
    Expired {
        /// Its expiry (Unix seconds).
        expires_at: i64,
    },
    /// No such token (never created, already used, or pruned).
    NotFound,
}

// === bundles ===

/// A trust bundle as SPIRE stores it (`types.Bundle`), including taint flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The bundle's trust domain.
    pub trust_domain: TrustDomain,
    /// X.509 root authorities.
    pub x509_authorities: Vec<X509Authority>,
    /// JWT signing keys.
    pub jwt_authorities: Vec<JwtAuthority>,
    /// Refresh hint in seconds (0 = unset).
    pub refresh_hint: i64,
    /// Incremented on every change made through append/prune/taint.
    pub sequence_number: u64,
}

impl Bundle {
    /// An empty bundle for `trust_domain`.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Bundle {
            trust_domain,
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            refresh_hint: 0,
            sequence_number: 0,
        }
    }
}

impl From<spire_spiffe::Bundle> for Bundle {
    /// A SPIFFE bundle document carries no taint flags: every authority comes in untainted.
    fn from(b: spire_spiffe::Bundle) -> Self {
        Bundle {
            trust_domain: b.trust_domain,
            x509_authorities: b
                .x509_authorities
                .into_iter()
                .map(|der| X509Authority {
                    der,
                    tainted: false,
                })
                .collect(),
            jwt_authorities: b
                .jwt_authorities
                .into_iter()
                .map(|k| JwtAuthority {
                    key_id: k.key_id,
                    public_key: k.public_key,
                    expires_at: k.expires_at.unwrap_or(0),
                    tainted: false,
                })
                .collect(),
            refresh_hint: b
                .refresh_hint
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0),
            sequence_number: b.sequence_number,
        }
    }
}

impl From<&Bundle> for spire_spiffe::Bundle {
    /// The SPIFFE form (taint flags are dropped; tainted authorities stay in the bundle, as
    /// SPIRE publishes them).
    fn from(b: &Bundle) -> Self {
        let mut out = spire_spiffe::Bundle::new(b.trust_domain.clone());
        out.x509_authorities = b.x509_authorities.iter().map(|a| a.der.clone()).collect();
        out.jwt_authorities = b
            .jwt_authorities
            .iter()
            .map(|k| spire_spiffe::JwtAuthority {
                key_id: k.key_id.clone(),
                public_key: k.public_key.clone(),
                expires_at: (k.expires_at != 0).then_some(k.expires_at),
            })
            .collect();
        out.refresh_hint = (b.refresh_hint > 0)
            .then(|| std::time::Duration::from_secs(b.refresh_hint.unsigned_abs()));
        out.sequence_number = b.sequence_number;
        out
    }
}

/// An X.509 root authority.
#[derive(Clone, PartialEq, Eq)]
pub struct X509Authority {
    /// DER certificate.
    pub der: Vec<u8>,
    /// The authority's key is tainted (being rotated out).
    pub tainted: bool,
}

impl fmt::Debug for X509Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("X509Authority")
            .field("der_len", &self.der.len())
            .field("tainted", &self.tainted)
            .finish()
    }
}

/// A JWT signing (public) key.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtAuthority {
    /// The key ID (`kid`).
    pub key_id: String,
    /// PKIX (SubjectPublicKeyInfo) DER public key.
    pub public_key: Vec<u8>,
    /// When the key expires (Unix seconds, 0 = never).
    pub expires_at: i64,
    /// The key is tainted (being rotated out).
    pub tainted: bool,
}

impl fmt::Debug for JwtAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthority")
            .field("key_id", &self.key_id)
            .field("public_key_len", &self.public_key.len())
            .field("expires_at", &self.expires_at)
            .field("tainted", &self.tainted)
            .finish()
    }
}

/// What deleting a bundle does to entries that federate with it (SPIRE `DeleteBundleRequest.Mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BundleDeleteMode {
    /// Fail if any entry federates with the bundle.
    #[default]
    Restrict,
    /// Remove the trust domain from those entries' `federates_with`.
    Dissociate,
    /// Delete those entries.
    Delete,
}

// === federation relationships ===

/// How the bundle endpoint of a federated trust domain is authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleEndpointProfile {
    /// Web PKI (`https_web`).
    HttpsWeb,
    /// SPIFFE authentication (`https_spiffe`) with the endpoint's SPIFFE ID.
    HttpsSpiffe {
        /// The SPIFFE ID the endpoint's certificate must carry.
        endpoint_spiffe_id: SpiffeId,
    },
}

/// A federation relationship with another trust domain (SPIRE `types.FederationRelationship`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationRelationship {
    /// The federated trust domain.
    pub trust_domain: TrustDomain,
    /// URL of its bundle endpoint.
    pub bundle_endpoint_url: String,
    /// How the endpoint is authenticated.
    pub profile: BundleEndpointProfile,
    /// On create/update: a bundle to store for the trust domain in the same transaction. On
    /// read: the stored bundle of the trust domain, if any.
    pub trust_domain_bundle: Option<Bundle>,
}

/// Which fields a federation relationship update changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct FederationRelationshipMask {
    pub bundle_endpoint_url: bool,
    pub profile: bool,
    pub trust_domain_bundle: bool,
}

impl FederationRelationshipMask {
    /// Every updatable field.
    pub fn all() -> Self {
        FederationRelationshipMask {
            bundle_endpoint_url: true,
            profile: true,
            trust_domain_bundle: true,
        }
    }
}

// === change log ===

/// What a change-log row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A registration entry (object ID = entry ID).
    Entry,
    /// An attested node or its selectors (object ID = agent SPIFFE ID).
    Node,
    /// A bundle (object ID = trust domain name).
    Bundle,
    /// A federation relationship (object ID = trust domain name).
    Federation,
}

impl ChangeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Entry => "entry",
            ChangeKind::Node => "node",
            ChangeKind::Bundle => "bundle",
            ChangeKind::Federation => "federation",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "entry" => ChangeKind::Entry,
            "node" => ChangeKind::Node,
            "bundle" => ChangeKind::Bundle,
            "federation" => ChangeKind::Federation,
            _ => return None,
        })
    }
}

/// What happened to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeOp {
    /// It was created.
    Create,
    /// It was changed.
    Update,
    /// It was deleted.
    Delete,
}

impl ChangeOp {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Create => "create",
            ChangeOp::Update => "update",
            ChangeOp::Delete => "delete",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "create" => ChangeOp::Create,
            "update" => ChangeOp::Update,
            "delete" => ChangeOp::Delete,
            _ => return None,
        })
    }
}

/// One row of the change log. Followers re-read the object by `kind` and `object_id`; the row
/// carries no object data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Position in the log (increasing, but see the crate docs about gaps).
    pub id: i64,
    /// What kind of object changed.
    pub kind: ChangeKind,
    /// The object's key (entry ID, agent SPIFFE ID, trust domain name).
    pub object_id: String,
    /// What happened.
    pub op: ChangeOp,
    /// When the change was written (Unix seconds, from the datastore's clock).
    pub created_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_converts_both_ways() {
        let td: TrustDomain = "example.org".parse().unwrap();
        let mut b = Bundle::new(td);
        b.x509_authorities.push(X509Authority {
            der: vec![1, 2, 3],
            tainted: true,
        });
        b.jwt_authorities.push(JwtAuthority {
            key_id: "k".into(),
            public_key: vec![4],
            expires_at: 77,
            tainted: false,
        });
        b.jwt_authorities.push(JwtAuthority {
            key_id: "never".into(),
            public_key: vec![5],
            expires_at: 0,
            tainted: false,
        });
        b.refresh_hint = 300;
        b.sequence_number = 9;
        let s = spire_spiffe::Bundle::from(&b);
        assert_eq!(s.x509_authorities, vec![vec![1, 2, 3]]);
        assert_eq!(s.jwt_authorities[0].expires_at, Some(77));
        assert_eq!(s.jwt_authorities[1].expires_at, None);
        assert_eq!(s.refresh_hint, Some(std::time::Duration::from_secs(300)));
        let back = Bundle::from(s);
        let mut expected = b.clone();
        expected.x509_authorities[0].tainted = false;
        assert_eq!(back, expected);
    }
}
