//! Fuzz the server half of `x509pop`: the agent's attestation payload
//! (`{"certificates": [...]}`), the certificate chain in it (leaf and intermediate parsing,
//! key checks, chain verification, SAN and subject handling, agent ID template, selector
//! derivation) and the agent's challenge response.
//!
//! Input: byte 0 picks the setup (bits 0-1: plugin, bit 2: raw mode), then the payload up to
//! the first 0xff byte, then the challenge response (raw mode: all of it is the payload).
//! - plugin 0: `external_pki` with the committed root `data/x509pop_ca.pem`, default template;
//!   plugin 1: the same with a template using every field, `max_intermediates = 1`,
//!   `max_rsa_key_size = 2048`; plugin 2 and 3: `mode = "spiffe"`, the server's roots being
//!   that root and the last certificate of the payload (so self-made chains verify).
//! - raw mode: the rest of the input is one DER certificate (the fuzzer mutates DER directly);
//!   otherwise the payload is the JSON an agent sends.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use libfuzzer_sys::fuzz_target;
use rustls_pki_types::UnixTime;
use spire_server::node_attestor::x509pop::{AttestationData, Challenge, X509Pop};
use spire_spiffe::TrustDomain;

const CA_PEM: &str = include_str!("../data/x509pop_ca.pem");
/// 2027-12-28, inside the validity of the committed root and seed certificates.
const NOW_SECS: u64 = 1_830_000_000;

struct Setup {
    td: TrustDomain,
    plugins: [X509Pop; 3],
    ca_der: Vec<u8>,
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| {
        let path = std::env::temp_dir().join(format!(
            "spire-rs-fuzz-x509pop-ca-{}.pem",
            std::process::id()
        ));
        std::fs::write(&path, CA_PEM).expect("write the fuzz CA bundle");
        let p = path.to_str().expect("a UTF-8 temp path");
        let plugin = |v: serde_json::Value| X509Pop::from_plugin_data(&v).expect("a valid config");
        let plugins = [
            plugin(serde_json::json!({ "ca_bundle_path": p })),
            plugin(serde_json::json!({
                "ca_bundle_paths": [p],
                "agent_path_template": "/{{ .PluginName }}/{{ .TrustDomain }}/{{ .Subject.CommonName }}/{{ .SerialNumberHex }}/{{ .Fingerprint }}/{{ .URISanSelectors.datacenter }}",
                "max_intermediates": 1,
                "max_rsa_key_size": 2048,
            })),
            plugin(serde_json::json!({ "mode": "spiffe" })),
        ];
        let _ = std::fs::remove_file(&path);
        let ca_der = pem::parse(CA_PEM).expect("the fuzz CA").into_contents();
        Setup {
            td: "example.org".parse().expect("a valid trust domain"),
            plugins,
            ca_der,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let s = setup();
    let (payload, response) = if mode & 4 != 0 {
        let data = AttestationData {
            certificates: vec![B64.encode(rest)],
        };
        (
            serde_json::to_vec(&data).expect("serialize a payload"),
            &[][..],
        )
    } else {
        match rest.iter().position(|b| *b == 0xff) {
            Some(i) => (rest[..i].to_vec(), &rest[i + 1..]),
            None => (rest.to_vec(), &[][..]),
        }
    };
    let plugin = &s.plugins[usize::from(mode & 3).min(2)];
    let mut own_roots = vec![s.ca_der.clone()];
    if plugin.spiffe_mode()
        && let Ok(d) = serde_json::from_slice::<AttestationData>(&payload)
        && let Some(Ok(last)) = d.certificates.last().map(|c| B64.decode(c))
    {
        own_roots.push(last);
    }
    let now = UnixTime::since_unix_epoch(Duration::from_secs(NOW_SECS));
    let begun = plugin.begin(&s.td, &payload, &own_roots, now);
    if std::env::var_os("SPIRE_FUZZ_DEBUG").is_some() {
        eprintln!("begin: {:?}", begun.as_ref().map(|p| p.challenge().len()));
    }
    let Ok(pending) = begun else {
        return;
    };
    // A chain was accepted: the challenge names exactly one key type and a 32-byte nonce.
    let challenge: Challenge =
        serde_json::from_slice(pending.challenge()).expect("the challenge is JSON");
    let nonce = match (&challenge.rsa_signature, &challenge.ecdsa_signature) {
        (Some(n), None) | (None, Some(n)) => &n.nonce,
        other => panic!("a challenge with both or neither key type: {other:?}"),
    };
    assert_eq!(B64.decode(nonce).map(|n| n.len()).ok(), Some(32));
    // The nonce is fresh randomness the fuzzer cannot have signed: every response is refused.
    if let Ok(r) = pending.finish(response) {
        panic!("a challenge response without a valid signature was accepted: {r:?}");
    }
});
