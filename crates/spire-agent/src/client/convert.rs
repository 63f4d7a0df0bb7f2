//! Conversions between the wire types of SPIRE's server API and the agent's own types.

use std::time::Duration;

use spire_proto::types;
use spire_spiffe::{Bundle, JwtAuthority, Selector, Selectors, SpiffeId, TrustDomain};

use crate::identity::EntryView;

/// `SPIFFEID{trust_domain, path}` → [`SpiffeId`].
pub fn spiffe_id(id: Option<&types::Spiffeid>) -> Result<SpiffeId, String> {
    let id = id.ok_or("missing SPIFFE ID")?;
    let td: TrustDomain = id
        .trust_domain
        .parse()
        .map_err(|e| format!("trust domain {:?}: {e}", id.trust_domain))?;
    SpiffeId::new(&td, &id.path).map_err(|e| format!("path {:?}: {e}", id.path))
}

/// A server entry → [`EntryView`].
pub fn entry(e: &types::Entry) -> Result<EntryView, String> {
    if e.id.is_empty() {
        return Err("entry without id".into());
    }
    // Exact capacity: the agent keeps one of these per entry (BENCHMARKS.md P5).
    let mut items = Vec::with_capacity(e.selectors.len());
    for s in &e.selectors {
        items.push(
            Selector::new(s.r#type.clone(), s.value.clone())
                .map_err(|err| format!("selector {}:{}: {err}", s.r#type, s.value))?,
        );
    }
    let selectors = Selectors::from(items);
    let federates_with = e
        .federates_with
        .iter()
        .map(|td| {
            td.parse::<TrustDomain>()
                .map_err(|err| format!("federates_with {td:?}: {err}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let attrs = e.additional_attributes.unwrap_or_default();
    Ok(EntryView {
        entry_id: e.id.as_str().into(),
        spiffe_id: spiffe_id(e.spiffe_id.as_ref())?.into(),
        parent_id: spiffe_id(e.parent_id.as_ref())?.into(),
        selectors,
        federates_with,
        hint: e.hint.clone(),
        created_at: e.created_at,
        revision_number: e.revision_number,
        x509_svid_ttl: e.x509_svid_ttl,
        jwt_svid_ttl: e.jwt_svid_ttl,
        jwt_svid_include_jti: attrs.jwt_svid_include_jti,
        disable_x509_svid_prefetch: attrs.disable_x509_svid_prefetch,
        admin: e.admin,
        downstream: e.downstream,
    })
}

/// A server bundle → [`Bundle`].
pub fn bundle(b: &types::Bundle) -> Result<Bundle, String> {
    let td: TrustDomain = b
        .trust_domain
        .parse()
        .map_err(|e| format!("bundle trust domain {:?}: {e}", b.trust_domain))?;
    let mut out = Bundle::new(td);
    out.x509_authorities = b.x509_authorities.iter().map(|a| a.asn1.clone()).collect();
    out.jwt_authorities = b
        .jwt_authorities
        .iter()
        .map(|k| JwtAuthority {
            key_id: k.key_id.clone(),
            public_key: k.public_key.clone(),
            expires_at: (k.expires_at != 0).then_some(k.expires_at),
        })
        .collect();
    out.refresh_hint = u64::try_from(b.refresh_hint)
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs);
    out.sequence_number = b.sequence_number;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_conversion() {
        let e = types::Entry {
            id: "e1".into(),
            spiffe_id: Some(types::Spiffeid {
                trust_domain: "example.org".into(),
                path: "/w".into(),
            }),
            parent_id: Some(types::Spiffeid {
                trust_domain: "example.org".into(),
                path: "/spire/agent/x".into(),
            }),
            selectors: vec![types::Selector {
                r#type: "unix".into(),
                value: "uid:0".into(),
            }],
            federates_with: vec!["other.org".into()],
            revision_number: 3,
            additional_attributes: Some(types::entry::AdditionalAttributes {
                disable_x509_svid_prefetch: false,
                jwt_svid_include_jti: true,
            }),
            ..Default::default()
        };
        let v = entry(&e).unwrap();
        assert_eq!(v.spiffe_id.as_str(), "spiffe://example.org/w");
        assert_eq!(v.selectors.len(), 1);
        assert!(v.jwt_svid_include_jti);
        assert_eq!(v.revision_number, 3);
        assert_eq!(v.federates_with[0].as_str(), "other.org");
        let mut bad = e.clone();
        bad.spiffe_id = None;
        assert!(entry(&bad).is_err());
    }

    #[test]
    fn bundle_conversion() {
        let b = types::Bundle {
            trust_domain: "example.org".into(),
            x509_authorities: vec![types::X509Certificate {
                asn1: vec![1, 2],
                tainted: false,
            }],
            jwt_authorities: vec![types::JwtKey {
                public_key: vec![3],
                key_id: "k".into(),
                expires_at: 0,
                tainted: false,
            }],
            refresh_hint: 60,
            sequence_number: 4,
            ..Default::default()
        };
        let out = bundle(&b).unwrap();
        assert_eq!(out.x509_authorities, vec![vec![1, 2]]);
        assert_eq!(out.jwt_authorities[0].expires_at, None);
        assert_eq!(out.refresh_hint, Some(Duration::from_secs(60)));
        assert_eq!(out.sequence_number, 4);
    }
}
