//! Conversions between the wire types (`spire.api.types`) and the datastore's domain types,
//! with SPIRE's validation (mirrors `pkg/server/api/{entry,bundle,agent}.go`).

use spire_datastore as ds;
use spire_spiffe::{Selector, Selectors, SpiffeId, TrustDomain};

use crate::pb::types;

/// Why a wire value was rejected; the message names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidArgument(pub String);

fn invalid(msg: impl Into<String>) -> InvalidArgument {
    InvalidArgument(msg.into())
}

// === SPIFFE IDs ===

/// Parses a wire SPIFFE ID (`trust_domain` + `path`).
pub fn id_from_proto(id: Option<&types::Spiffeid>) -> Result<SpiffeId, String> {
    let Some(id) = id else {
        return Err("request must specify SPIFFE ID".to_string());
    };
    let td: TrustDomain = id.trust_domain.parse().map_err(|e| format!("{e}"))?;
    if !id.path.is_empty() && !id.path.starts_with('/') {
        return Err(format!("path {:?} must start with '/'", id.path));
    }
    SpiffeId::new(&td, &id.path).map_err(|e| format!("{e}"))
}

/// Parses a wire SPIFFE ID that must belong to `td`.
pub fn member_id_from_proto(
    id: Option<&types::Spiffeid>,
    td: &TrustDomain,
) -> Result<SpiffeId, String> {
    let parsed = id_from_proto(id)?;
    if !parsed.is_member_of(td) {
        return Err(format!(
            "\"{parsed}\" is not a member of trust domain \"{td}\""
        ));
    }
    Ok(parsed)
}

/// The wire form of a SPIFFE ID.
pub fn id_to_proto(id: &SpiffeId) -> types::Spiffeid {
    types::Spiffeid {
        trust_domain: id.trust_domain().as_str().to_string(),
        path: id.path().to_string(),
    }
}

// === selectors ===

/// Parses wire selectors; at least one is required.
pub fn selectors_from_proto(sels: &[types::Selector]) -> Result<Selectors, String> {
    if sels.is_empty() {
        return Err("selector list is empty".to_string());
    }
    let mut out = Selectors::new();
    for s in sels {
        out.insert(selector_from_proto(s)?);
    }
    Ok(out)
}

/// The longest selector type accepted, in bytes (the SQL schemas' column width).
pub const MAX_SELECTOR_TYPE_LEN: usize = 255;
/// The longest selector value accepted, in bytes (the SQL schemas' column width: a longer
/// value would be stored by SQLite but refused by MySQL).
pub const MAX_SELECTOR_VALUE_LEN: usize = 2048;

/// Parses one wire selector (`type` without `:`, non-empty value, both within the length
/// limits above).
pub fn selector_from_proto(s: &types::Selector) -> Result<Selector, String> {
    if s.r#type.is_empty() {
        return Err("missing selector type".to_string());
    }
    if s.r#type.contains(':') {
        return Err("selector type contains ':'".to_string());
    }
    if s.r#type.len() > MAX_SELECTOR_TYPE_LEN {
        return Err(format!(
            "selector type is {} bytes: the limit is {MAX_SELECTOR_TYPE_LEN}",
            s.r#type.len()
        ));
    }
    if s.value.is_empty() {
        return Err("missing selector value".to_string());
    }
    if s.value.len() > MAX_SELECTOR_VALUE_LEN {
        return Err(format!(
            "selector value is {} bytes: the limit is {MAX_SELECTOR_VALUE_LEN}",
            s.value.len()
        ));
    }
    Selector::new(s.r#type.clone(), s.value.clone()).map_err(|e| format!("{e}"))
}

/// Wire selectors.
pub fn selectors_to_proto(sels: &Selectors) -> Vec<types::Selector> {
    sels.iter()
        .map(|s| types::Selector {
            r#type: s.kind().to_string(),
            value: s.value().to_string(),
        })
        .collect()
}

/// Match mode from the wire enum value (same numbers for selectors and federates-with).
pub fn match_mode(v: i32) -> Result<ds::MatchMode, String> {
    Ok(match v {
        0 => ds::MatchMode::Exact,
        1 => ds::MatchMode::Subset,
        2 => ds::MatchMode::Superset,
        3 => ds::MatchMode::Any,
        other => return Err(format!("unsupported match behavior {other}")),
    })
}

// === entries ===

/// Converts and validates a wire entry for the server of trust domain `td`.
pub fn entry_from_proto(e: &types::Entry, td: &TrustDomain) -> Result<ds::Entry, InvalidArgument> {
    let parent_id = member_id_from_proto(e.parent_id.as_ref(), td)
        .map_err(|m| invalid(format!("invalid parent ID: {m}")))?;
    let spiffe_id = member_id_from_proto(e.spiffe_id.as_ref(), td)
        .map_err(|m| invalid(format!("invalid spiffe ID: {m}")))?;
    if is_reserved(&spiffe_id) {
        return Err(invalid(format!(
            "invalid spiffe ID: \"{spiffe_id}\" is reserved: paths under /spire/ are for SPIRE's own identities"
        )));
    }
    let selectors = selectors_from_proto(&e.selectors)
        .map_err(|m| invalid(format!("invalid selector: {m}")))?;
    let mut entry = ds::Entry::new(spiffe_id, parent_id, selectors);
    entry.id = validate_entry_id(&e.id)?;
    apply_scalars(&mut entry, e)?;
    Ok(entry)
}

/// Builds an update from a wire entry, validating only the fields in `mask`.
pub fn entry_update_from_proto(
    e: &types::Entry,
    mask: &ds::EntryMask,
    td: &TrustDomain,
    base: &ds::Entry,
) -> Result<ds::Entry, InvalidArgument> {
    let mut entry = base.clone();
    if mask.parent_id {
        entry.parent_id = member_id_from_proto(e.parent_id.as_ref(), td)
            .map_err(|m| invalid(format!("invalid parent ID: {m}")))?;
    }
    if mask.spiffe_id {
        let id = member_id_from_proto(e.spiffe_id.as_ref(), td)
            .map_err(|m| invalid(format!("invalid spiffe ID: {m}")))?;
        if is_reserved(&id) {
            return Err(invalid(format!("invalid spiffe ID: \"{id}\" is reserved")));
        }
        entry.spiffe_id = id;
    }
    if mask.selectors {
        entry.selectors = selectors_from_proto(&e.selectors)
            .map_err(|m| invalid(format!("invalid selector: {m}")))?;
    }
    let mut scratch = base.clone();
    apply_scalars(&mut scratch, e)?;
    // The other fields the mask selects, from the converted copy.
    macro_rules! take_masked {
        ($($field:ident),+) => {
            $(if mask.$field {
                entry.$field = scratch.$field;
            })+
        };
    }
    take_masked!(
        x509_svid_ttl,
        jwt_svid_ttl,
        federates_with,
        admin,
        downstream,
        expires_at,
        dns_names,
        store_svid,
        hint,
        jwt_svid_include_jti,
        disable_x509_svid_prefetch
    );
    Ok(entry)
}

fn apply_scalars(entry: &mut ds::Entry, e: &types::Entry) -> Result<(), InvalidArgument> {
    if e.x509_svid_ttl < 0 {
        return Err(invalid(format!(
            "invalid x509_svid_ttl {}: the TTL must not be negative",
            e.x509_svid_ttl
        )));
    }
    if e.jwt_svid_ttl < 0 {
        return Err(invalid(format!(
            "invalid jwt_svid_ttl {}: the TTL must not be negative",
            e.jwt_svid_ttl
        )));
    }
    let mut feds = Vec::with_capacity(e.federates_with.len());
    for f in &e.federates_with {
        let name = f.strip_prefix("spiffe://").unwrap_or(f);
        let td: TrustDomain = name
            .parse()
            .map_err(|err| invalid(format!("invalid federated trust domain {f:?}: {err}")))?;
        feds.push(td);
    }
    for d in &e.dns_names {
        validate_dns_name(d).map_err(|m| invalid(format!("invalid DNS name {d:?}: {m}")))?;
    }
    if e.hint.len() > 1024 {
        return Err(invalid("invalid hint: longer than 1024 bytes"));
    }
    entry.x509_svid_ttl = e.x509_svid_ttl;
    entry.jwt_svid_ttl = e.jwt_svid_ttl;
    entry.federates_with = feds;
    entry.admin = e.admin;
    entry.downstream = e.downstream;
    entry.expires_at = e.expires_at;
    entry.dns_names = e.dns_names.clone();
    entry.store_svid = e.store_svid;
    entry.hint = e.hint.clone();
    if let Some(attrs) = &e.additional_attributes {
        entry.jwt_svid_include_jti = attrs.jwt_svid_include_jti;
        entry.disable_x509_svid_prefetch = attrs.disable_x509_svid_prefetch;
    }
    Ok(())
}

/// SPIRE reserves `/spire/*` for its own identities (agents, server).
fn is_reserved(id: &SpiffeId) -> bool {
    id.path() == "/spire" || id.path().starts_with("/spire/")
}

/// A caller-chosen entry ID: 1..=255 printable ASCII characters, no spaces.
fn validate_entry_id(id: &str) -> Result<String, InvalidArgument> {
    if id.is_empty() {
        return Ok(String::new());
    }
    if id.len() > 255 {
        return Err(invalid("invalid entry ID: longer than 255 characters"));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(format!(
            "invalid entry ID {id:?}: only printable ASCII characters without spaces are allowed"
        )));
    }
    Ok(id.to_string())
}

/// DNS name rules of SPIRE's `x509util.ValidateLabel`: labels of letters, digits and hyphens
/// (not at either end), a leading `*.` wildcard allowed, at most 253 characters.
pub fn validate_dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty DNS name".to_string());
    }
    if name.len() > 253 {
        return Err("longer than 253 characters".to_string());
    }
    let body = name.strip_prefix("*.").unwrap_or(name);
    for label in body.split('.') {
        if label.is_empty() {
            return Err("empty label".to_string());
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} is longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "label {label:?} has characters other than letters, digits and hyphens"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with a hyphen"));
        }
    }
    Ok(())
}

/// The wire form of an entry, honoring an output mask (`None` = every field).
pub fn entry_to_proto(e: &ds::Entry, mask: Option<&types::EntryMask>) -> types::Entry {
    let all = types::EntryMask {
        spiffe_id: true,
        parent_id: true,
        selectors: true,
        x509_svid_ttl: true,
        federates_with: true,
        admin: true,
        downstream: true,
        expires_at: true,
        dns_names: true,
        revision_number: true,
        store_svid: true,
        jwt_svid_ttl: true,
        hint: true,
        created_at: true,
        additional_attributes: true,
    };
    let m = mask.unwrap_or(&all);
    types::Entry {
        id: e.id.clone(),
        spiffe_id: m.spiffe_id.then(|| id_to_proto(&e.spiffe_id)),
        parent_id: m.parent_id.then(|| id_to_proto(&e.parent_id)),
        selectors: if m.selectors {
            selectors_to_proto(&e.selectors)
        } else {
            Vec::new()
        },
        x509_svid_ttl: if m.x509_svid_ttl { e.x509_svid_ttl } else { 0 },
        federates_with: if m.federates_with {
            e.federates_with
                .iter()
                .map(|t| t.as_str().to_string())
                .collect()
        } else {
            Vec::new()
        },
        admin: m.admin && e.admin,
        downstream: m.downstream && e.downstream,
        expires_at: if m.expires_at { e.expires_at } else { 0 },
        dns_names: if m.dns_names {
            e.dns_names.clone()
        } else {
            Vec::new()
        },
        revision_number: if m.revision_number {
            e.revision_number
        } else {
            0
        },
        store_svid: m.store_svid && e.store_svid,
        jwt_svid_ttl: if m.jwt_svid_ttl { e.jwt_svid_ttl } else { 0 },
        hint: if m.hint {
            e.hint.clone()
        } else {
            String::new()
        },
        created_at: if m.created_at { e.created_at } else { 0 },
        additional_attributes: m.additional_attributes.then_some(
            types::entry::AdditionalAttributes {
                disable_x509_svid_prefetch: e.disable_x509_svid_prefetch,
                jwt_svid_include_jti: e.jwt_svid_include_jti,
            },
        ),
    }
}

/// The datastore mask of a wire input mask (`None` = every field).
pub fn entry_mask_from_proto(m: Option<&types::EntryMask>) -> ds::EntryMask {
    match m {
        None => ds::EntryMask::all(),
        Some(m) => ds::EntryMask {
            spiffe_id: m.spiffe_id,
            parent_id: m.parent_id,
            selectors: m.selectors,
            x509_svid_ttl: m.x509_svid_ttl,
            jwt_svid_ttl: m.jwt_svid_ttl,
            federates_with: m.federates_with,
            admin: m.admin,
            downstream: m.downstream,
            expires_at: m.expires_at,
            dns_names: m.dns_names,
            store_svid: m.store_svid,
            hint: m.hint,
            jwt_svid_include_jti: m.additional_attributes,
            disable_x509_svid_prefetch: m.additional_attributes,
        },
    }
}

// === agents ===

/// The wire form of an attested node.
pub fn agent_to_proto(n: &ds::AttestedNode, mask: Option<&types::AgentMask>) -> types::Agent {
    let all = types::AgentMask {
        attestation_type: true,
        x509svid_serial_number: true,
        x509svid_expires_at: true,
        selectors: true,
        banned: true,
        can_reattest: true,
        agent_version: true,
    };
    let m = mask.unwrap_or(&all);
    types::Agent {
        id: Some(id_to_proto(&n.spiffe_id)),
        attestation_type: if m.attestation_type {
            n.attestation_type.clone()
        } else {
            String::new()
        },
        x509svid_serial_number: if m.x509svid_serial_number {
            n.cert_serial_number.clone()
        } else {
            String::new()
        },
        x509svid_expires_at: if m.x509svid_expires_at {
            n.cert_not_after
        } else {
            0
        },
        selectors: if m.selectors {
            selectors_to_proto(&n.selectors)
        } else {
            Vec::new()
        },
        banned: m.banned && n.is_banned(),
        can_reattest: m.can_reattest && n.can_reattest,
        agent_version: if m.agent_version {
            n.agent_version.clone()
        } else {
            String::new()
        },
    }
}

// === bundles ===

/// The wire form of a bundle, honoring an output mask.
pub fn bundle_to_proto(b: &ds::Bundle, mask: Option<&types::BundleMask>) -> types::Bundle {
    let x509 = mask.is_none_or(|m| m.x509_authorities);
    let jwt = mask.is_none_or(|m| m.jwt_authorities);
    let hint = mask.is_none_or(|m| m.refresh_hint);
    let seq = mask.is_none_or(|m| m.sequence_number);
    types::Bundle {
        trust_domain: b.trust_domain.as_str().to_string(),
        x509_authorities: if x509 {
            b.x509_authorities
                .iter()
                .map(|a| types::X509Certificate {
                    asn1: a.der.clone(),
                    tainted: a.tainted,
                })
                .collect()
        } else {
            Vec::new()
        },
        jwt_authorities: if jwt {
            b.jwt_authorities
                .iter()
                .map(|k| types::JwtKey {
                    public_key: k.public_key.clone(),
                    key_id: k.key_id.clone(),
                    expires_at: k.expires_at,
                    tainted: k.tainted,
                })
                .collect()
        } else {
            Vec::new()
        },
        refresh_hint: if hint { b.refresh_hint } else { 0 },
        sequence_number: if seq { b.sequence_number } else { 0 },
        wit_authorities: Vec::new(),
    }
}

/// Parses a wire bundle: a valid trust domain, parseable certificates and keys with a `kid`.
pub fn bundle_from_proto(b: &types::Bundle) -> Result<ds::Bundle, InvalidArgument> {
    let name = b
        .trust_domain
        .strip_prefix("spiffe://")
        .unwrap_or(&b.trust_domain);
    let td: TrustDomain = name
        .parse()
        .map_err(|e| invalid(format!("invalid trust domain {:?}: {e}", b.trust_domain)))?;
    let mut out = ds::Bundle::new(td);
    out.x509_authorities = x509_authorities_from_proto(&b.x509_authorities)?;
    out.jwt_authorities = jwt_authorities_from_proto(&b.jwt_authorities)?;
    out.refresh_hint = b.refresh_hint;
    out.sequence_number = b.sequence_number;
    Ok(out)
}

/// Parses wire X.509 authorities (each must be one DER certificate).
pub fn x509_authorities_from_proto(
    certs: &[types::X509Certificate],
) -> Result<Vec<ds::X509Authority>, InvalidArgument> {
    let mut out = Vec::with_capacity(certs.len());
    for c in certs {
        match x509_parser::parse_x509_certificate(&c.asn1) {
            Ok((&[], _)) => {}
            _ => {
                return Err(invalid(
                    "invalid X.509 authority: not a single DER certificate",
                ));
            }
        }
        out.push(ds::X509Authority {
            der: c.asn1.clone(),
            tainted: c.tainted,
        });
    }
    Ok(out)
}

/// Parses wire JWT authorities (a `kid` and a PKIX public key each).
pub fn jwt_authorities_from_proto(
    keys: &[types::JwtKey],
) -> Result<Vec<ds::JwtAuthority>, InvalidArgument> {
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        if k.key_id.is_empty() {
            return Err(invalid("invalid JWT authority: missing key ID"));
        }
        if spire_crypto::PublicKey::from_spki_der(&k.public_key).is_err() {
            return Err(invalid(format!(
                "invalid JWT authority {:?}: public key is not a PKIX key",
                k.key_id
            )));
        }
        out.push(ds::JwtAuthority {
            key_id: k.key_id.clone(),
            public_key: k.public_key.clone(),
            expires_at: k.expires_at,
            tainted: k.tainted,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_lengths_are_bounded() {
        let sel = |t: &str, v: &str| types::Selector {
            r#type: t.into(),
            value: v.into(),
        };
        let at_limit = "v".repeat(MAX_SELECTOR_VALUE_LEN);
        assert!(selector_from_proto(&sel("unix", &at_limit)).is_ok());
        let e = selector_from_proto(&sel("unix", &format!("{at_limit}v"))).unwrap_err();
        assert!(e.contains("selector value is 2049 bytes"), "{e}");
        let long_type = "t".repeat(MAX_SELECTOR_TYPE_LEN + 1);
        let e = selector_from_proto(&sel(&long_type, "v")).unwrap_err();
        assert!(e.contains("selector type is 256 bytes"), "{e}");
    }

    fn td() -> TrustDomain {
        "example.org".parse().unwrap()
    }

    fn wire_entry() -> types::Entry {
        types::Entry {
            spiffe_id: Some(types::Spiffeid {
                trust_domain: "example.org".into(),
                path: "/workload".into(),
            }),
            parent_id: Some(types::Spiffeid {
                trust_domain: "example.org".into(),
                path: "/spire/agent/x".into(),
            }),
            selectors: vec![types::Selector {
                r#type: "unix".into(),
                value: "uid:1000".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn valid_entry_converts_and_round_trips() {
        let mut w = wire_entry();
        w.dns_names = vec!["a.example.org".into(), "*.b.example".into()];
        w.x509_svid_ttl = 60;
        let e = entry_from_proto(&w, &td()).unwrap();
        let back = entry_to_proto(&e, None);
        assert_eq!(back.spiffe_id, w.spiffe_id);
        assert_eq!(back.dns_names, w.dns_names);
        assert_eq!(back.x509_svid_ttl, 60);
    }

    #[test]
    fn rejections_name_the_rule() {
        type Mutation = Box<dyn Fn(&mut types::Entry)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|e| e.x509_svid_ttl = -1), "x509_svid_ttl"),
            (Box::new(|e| e.jwt_svid_ttl = -5), "jwt_svid_ttl"),
            (Box::new(|e| e.selectors.clear()), "selector list is empty"),
            (
                Box::new(|e| e.selectors[0].value.clear()),
                "missing selector value",
            ),
            (
                Box::new(|e| e.selectors[0].r#type = "a:b".into()),
                "contains ':'",
            ),
            (
                Box::new(|e| e.dns_names = vec!["bad_name".into()]),
                "invalid DNS name",
            ),
            (
                Box::new(|e| e.spiffe_id.as_mut().unwrap().trust_domain = "other.org".into()),
                "not a member",
            ),
            (
                Box::new(|e| e.spiffe_id.as_mut().unwrap().trust_domain = "Example.org".into()),
                "invalid spiffe ID",
            ),
            (
                Box::new(|e| e.spiffe_id.as_mut().unwrap().path = "/spire/x".into()),
                "reserved",
            ),
            (
                Box::new(|e| e.federates_with = vec!["Bad TD".into()]),
                "federated trust domain",
            ),
        ];
        for (mutate, want) in cases {
            let mut w = wire_entry();
            mutate(&mut w);
            let err = entry_from_proto(&w, &td()).unwrap_err();
            assert!(
                err.0.contains(want),
                "{:?} does not mention {want:?}",
                err.0
            );
        }
    }

    #[test]
    fn dns_names() {
        assert!(validate_dns_name("example.org").is_ok());
        assert!(validate_dns_name("*.example.org").is_ok());
        assert!(validate_dns_name("-a.org").is_err());
        assert!(validate_dns_name("a..org").is_err());
        assert!(validate_dns_name("").is_err());
    }
}
