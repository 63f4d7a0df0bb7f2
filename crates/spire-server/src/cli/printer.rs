//! Output of the management commands: SPIRE's pretty layout and protojson-style JSON.
//!
//! Pretty layouts mirror `cmd/spire-server/cli/entry/util.go` (`Entry ID         : …` blocks)
//! and its siblings for agents and bundles. JSON follows protojson with proto field names, as
//! SPIRE's `cliprinter` emits it (64-bit integers as strings, bytes as base64).

use std::fmt::Write as _;

use base64::Engine as _;
use clap::ValueEnum;
use serde_json::{Value, json};

use crate::pb::types;

/// `-output` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human readable, SPIRE's layout
    Pretty,
    /// protojson
    Json,
}

/// `spiffe://td/path` from the wire form.
pub(crate) fn id_string(id: Option<&types::Spiffeid>) -> String {
    match id {
        Some(id) => format!("spiffe://{}{}", id.trust_domain, id.path),
        None => String::new(),
    }
}

/// Formats a Unix time as Go's `time.Unix(t,0).UTC().String()` does.
pub(crate) fn go_time(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} +0000 UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => unix.to_string(),
    }
}

/// One `Entry ID : …` block, ending with a blank line.
pub(crate) fn entry_pretty(e: &types::Entry) -> String {
    let mut s = String::new();
    let id = if e.id.is_empty() {
        "(none)"
    } else {
        e.id.as_str()
    };
    let _ = writeln!(s, "Entry ID         : {id}");
    let _ = writeln!(s, "SPIFFE ID        : {}", id_string(e.spiffe_id.as_ref()));
    let _ = writeln!(s, "Parent ID        : {}", id_string(e.parent_id.as_ref()));
    let _ = writeln!(s, "Revision         : {}", e.revision_number);
    if e.downstream {
        let _ = writeln!(s, "Downstream       : true");
    }
    if e.x509_svid_ttl == 0 {
        let _ = writeln!(s, "X509-SVID TTL    : default");
    } else {
        let _ = writeln!(s, "X509-SVID TTL    : {}", e.x509_svid_ttl);
    }
    if e.jwt_svid_ttl == 0 {
        let _ = writeln!(s, "JWT-SVID TTL     : default");
    } else {
        let _ = writeln!(s, "JWT-SVID TTL     : {}", e.jwt_svid_ttl);
    }
    if e.expires_at != 0 {
        let _ = writeln!(s, "Expiration time  : {}", go_time(e.expires_at));
    }
    for sel in &e.selectors {
        let _ = writeln!(s, "Selector         : {}:{}", sel.r#type, sel.value);
    }
    for td in &e.federates_with {
        let _ = writeln!(s, "FederatesWith    : {td}");
    }
    for dns in &e.dns_names {
        let _ = writeln!(s, "DNS name         : {dns}");
    }
    if e.admin {
        let _ = writeln!(s, "Admin            : true");
    }
    if e.store_svid {
        let _ = writeln!(s, "StoreSvid        : true");
    }
    if !e.hint.is_empty() {
        let _ = writeln!(s, "Hint             : {}", e.hint);
    }
    if let Some(attrs) = &e.additional_attributes {
        if attrs.disable_x509_svid_prefetch {
            let _ = writeln!(s, "Disable X509-SVID Prefetch : true");
        }
        if attrs.jwt_svid_include_jti {
            let _ = writeln!(s, "JWT-SVID Include JTI : true");
        }
    }
    s.push('\n');
    s
}

/// One agent block as `agent list` / `agent show` print it.
pub(crate) fn agent_pretty(a: &types::Agent) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "SPIFFE ID         : {}", id_string(a.id.as_ref()));
    let _ = writeln!(s, "Attestation type  : {}", a.attestation_type);
    let _ = writeln!(s, "Expiration time   : {}", go_time(a.x509svid_expires_at));
    let _ = writeln!(s, "Serial number     : {}", a.x509svid_serial_number);
    let _ = writeln!(s, "Can re-attest     : {}", a.can_reattest);
    if a.banned {
        let _ = writeln!(s, "Banned            : true");
    }
    for sel in &a.selectors {
        let _ = writeln!(s, "Selectors         : {}:{}", sel.r#type, sel.value);
    }
    s.push('\n');
    s
}

/// Concatenated PEM blocks of a bundle's X.509 authorities.
pub(crate) fn bundle_pem(b: &types::Bundle) -> String {
    let mut s = String::new();
    for a in &b.x509_authorities {
        s.push_str(&pem_cert(&a.asn1));
    }
    s
}

/// One PEM `CERTIFICATE` block with `\n` line endings, as Go writes it.
pub(crate) fn pem_cert(der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new("CERTIFICATE", der.to_vec()), config)
}

// === protojson ===

fn id_json(id: Option<&types::Spiffeid>) -> Value {
    match id {
        Some(id) => json!({"trust_domain": id.trust_domain, "path": id.path}),
        None => Value::Null,
    }
}

fn selectors_json(sels: &[types::Selector]) -> Value {
    Value::Array(
        sels.iter()
            .map(|s| json!({"type": s.r#type, "value": s.value}))
            .collect(),
    )
}

/// protojson of an entry (proto names, int64 as strings).
pub(crate) fn entry_json(e: &types::Entry) -> Value {
    let mut v = json!({
        "id": e.id,
        "spiffe_id": id_json(e.spiffe_id.as_ref()),
        "parent_id": id_json(e.parent_id.as_ref()),
        "selectors": selectors_json(&e.selectors),
        "x509_svid_ttl": e.x509_svid_ttl,
        "federates_with": e.federates_with,
        "admin": e.admin,
        "downstream": e.downstream,
        "expires_at": e.expires_at.to_string(),
        "dns_names": e.dns_names,
        "revision_number": e.revision_number.to_string(),
        "store_svid": e.store_svid,
        "jwt_svid_ttl": e.jwt_svid_ttl,
        "hint": e.hint,
        "created_at": e.created_at.to_string(),
    });
    if let (Some(attrs), Some(obj)) = (&e.additional_attributes, v.as_object_mut()) {
        obj.insert(
            "additional_attributes".into(),
            json!({
                "disable_x509_svid_prefetch": attrs.disable_x509_svid_prefetch,
                "jwt_svid_include_jti": attrs.jwt_svid_include_jti,
            }),
        );
    }
    v
}

/// protojson of an agent.
pub(crate) fn agent_json(a: &types::Agent) -> Value {
    json!({
        "id": id_json(a.id.as_ref()),
        "attestation_type": a.attestation_type,
        "x509svid_serial_number": a.x509svid_serial_number,
        "x509svid_expires_at": a.x509svid_expires_at.to_string(),
        "selectors": selectors_json(&a.selectors),
        "banned": a.banned,
        "can_reattest": a.can_reattest,
        "agent_version": a.agent_version,
    })
}

/// protojson of a bundle.
pub(crate) fn bundle_json(b: &types::Bundle) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    json!({
        "trust_domain": b.trust_domain,
        "x509_authorities": b.x509_authorities.iter().map(|a| json!({
            "asn1": b64.encode(&a.asn1), "tainted": a.tainted
        })).collect::<Vec<_>>(),
        "jwt_authorities": b.jwt_authorities.iter().map(|k| json!({
            "public_key": b64.encode(&k.public_key),
            "key_id": k.key_id,
            "expires_at": k.expires_at.to_string(),
            "tainted": k.tainted,
        })).collect::<Vec<_>>(),
        "refresh_hint": b.refresh_hint.to_string(),
        "sequence_number": b.sequence_number.to_string(),
    })
}

/// protojson of a status.
pub(crate) fn status_json(s: Option<&types::Status>) -> Value {
    match s {
        Some(s) => json!({"code": s.code, "message": s.message}),
        None => json!({"code": 0, "message": ""}),
    }
}

/// Name of a gRPC code number as Go prints it (`AlreadyExists`).
pub(crate) fn code_name(code: i32) -> String {
    format!("{:?}", tonic::Code::from_i32(code))
}

/// Prints JSON on stdout, pretty-indented like SPIRE's printer.
pub(crate) fn print_json(v: &Value) {
    match serde_json::to_string(v) {
        Ok(s) => println!("{s}"),
        Err(_) => println!("{{}}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_block_layout_matches_spire() {
        let e = types::Entry {
            id: "abc".into(),
            spiffe_id: Some(types::Spiffeid {
                trust_domain: "example.org".into(),
                path: "/w".into(),
            }),
            parent_id: Some(types::Spiffeid {
                trust_domain: "example.org".into(),
                path: "/a".into(),
            }),
            selectors: vec![types::Selector {
                r#type: "unix".into(),
                value: "uid:1".into(),
            }],
            x509_svid_ttl: 60,
            dns_names: vec!["d.example".into()],
            admin: true,
            expires_at: 0,
            ..Default::default()
        };
        let got = entry_pretty(&e);
        assert_eq!(
            got,
            "Entry ID         : abc\n\
             SPIFFE ID        : spiffe://example.org/w\n\
             Parent ID        : spiffe://example.org/a\n\
             Revision         : 0\n\
             X509-SVID TTL    : 60\n\
             JWT-SVID TTL     : default\n\
             Selector         : unix:uid:1\n\
             DNS name         : d.example\n\
             Admin            : true\n\n"
        );
    }

    #[test]
    fn go_time_format() {
        assert_eq!(go_time(0), "1970-01-01 00:00:00 +0000 UTC");
    }
}
