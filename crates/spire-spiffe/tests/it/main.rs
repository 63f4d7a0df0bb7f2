//! Property tests for the spire-spiffe parsers, through the public API only.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use spire_spiffe::{
    Bundle, EcCurve, JwtAuthority, PublicKey, Selector, Selectors, SpiffeId, TrustDomain,
    parse_pem_certificates,
};

fn td_name() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{1,40}"
}

fn segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,16}".prop_filter("dot segment", |s| s != "." && s != "..")
}

fn valid_id() -> impl Strategy<Value = (String, String, String)> {
    (td_name(), vec(segment(), 0..6)).prop_map(|(td, segs)| {
        let path: String = segs.iter().map(|s| format!("/{s}")).collect();
        (format!("spiffe://{td}{path}"), td, path)
    })
}

/// Checks the invariants every successfully parsed ID must satisfy.
fn assert_valid(id: &SpiffeId) {
    let s = id.as_str();
    assert!(s.len() <= 2048);
    let td = id.trust_domain().as_str();
    assert!(!td.is_empty() && td.len() <= 255);
    assert!(
        td.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    );
    assert_eq!(s, format!("spiffe://{td}{}", id.path()));
    if !id.path().is_empty() {
        for seg in id.path()[1..].split('/') {
            assert!(!seg.is_empty() && seg != "." && seg != "..");
            assert!(
                seg.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_ids_round_trip((s, td, path) in valid_id()) {
        let id: SpiffeId = s.parse().unwrap();
        prop_assert_eq!(id.to_string(), s.clone());
        prop_assert_eq!(id.trust_domain().as_str(), td.as_str());
        prop_assert_eq!(id.path(), path.as_str());
        let tdv: TrustDomain = td.parse().unwrap();
        prop_assert!(id.is_member_of(&tdv));
        prop_assert_eq!(&SpiffeId::new(&tdv, &path).unwrap(), &id);
        let json = serde_json::to_string(&id).unwrap();
        prop_assert_eq!(serde_json::from_str::<SpiffeId>(&json).unwrap(), id);
        prop_assert_eq!(s.parse::<TrustDomain>().unwrap(), tdv);
    }

    #[test]
    fn arbitrary_strings_never_panic(s in "\\PC*") {
        match s.parse::<SpiffeId>() {
            Ok(id) => {
                assert_valid(&id);
                prop_assert_eq!(id.as_str(), s.as_str());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        let _ = s.parse::<TrustDomain>();
    }

    #[test]
    fn prefixed_arbitrary_strings_never_panic(rest in "[a-zA-Z0-9./:@?#%_ -]{0,60}") {
        let s = format!("spiffe://{rest}");
        if let Ok(id) = s.parse::<SpiffeId>() {
            assert_valid(&id);
        }
        if let Ok(td) = rest.parse::<TrustDomain>() {
            prop_assert_eq!(td.as_str(), rest.as_str());
        }
    }

    #[test]
    fn mutated_valid_ids((s, _, _) in valid_id(), pos in any::<prop::sample::Index>(), c in any::<char>()) {
        let mut chars: Vec<char> = s.chars().collect();
        let i = pos.index(chars.len() + 1);
        chars.insert(i, c);
        let mutated: String = chars.into_iter().collect();
        if let Ok(id) = mutated.parse::<SpiffeId>() {
            assert_valid(&id);
        }
    }

    #[test]
    fn selectors_round_trip(kind in "[^:]{1,20}", value in ".{1,40}") {
        let s = format!("{kind}:{value}");
        let sel: Selector = s.parse().unwrap();
        prop_assert_eq!(sel.kind(), kind.as_str());
        prop_assert_eq!(sel.value(), value.as_str());
        prop_assert_eq!(sel.to_string(), s);
        prop_assert_eq!(&Selector::new(kind, value).unwrap(), &sel);
        let json = serde_json::to_string(&sel).unwrap();
        prop_assert_eq!(serde_json::from_str::<Selector>(&json).unwrap(), sel);
    }

    #[test]
    fn arbitrary_selector_strings(s in "\\PC*") {
        let ok = matches!(s.split_once(':'), Some((k, v)) if !k.is_empty() && !v.is_empty());
        let parsed = s.parse::<Selector>();
        prop_assert_eq!(parsed.is_ok(), ok);
        if let Ok(sel) = parsed {
            prop_assert_eq!(sel.to_string(), s);
        }
    }

    #[test]
    fn selector_sets(a in vec("[a-c]:[a-c]", 0..8), b in vec("[a-c]:[a-c]", 0..8)) {
        let parse = |v: &[String]| -> Selectors { v.iter().map(|s| s.parse::<Selector>().unwrap()).collect() };
        let (sa, sb) = (parse(&a), parse(&b));
        let union: Selectors = sa.iter().chain(sb.iter()).cloned().collect();
        prop_assert!(sa.is_subset_of(&union));
        prop_assert!(sb.is_subset_of(&union));
        // Sorted and distinct.
        prop_assert!(sa.as_slice().windows(2).all(|w| w[0] < w[1]));
        // Subset agrees with a naive check.
        let naive = sa.iter().all(|s| sb.contains(s));
        prop_assert_eq!(sa.is_subset_of(&sb), naive);
        let naive_intersects = sa.iter().any(|s| sb.contains(s));
        prop_assert_eq!(sa.intersects(&sb), naive_intersects);
    }
}

fn testdata(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn test_certs() -> Vec<Vec<u8>> {
    [
        "ca-p256.pem",
        "ca-p384.pem",
        "ca-rsa2048.pem",
        "ca-ed25519.pem",
    ]
    .iter()
    .map(|f| parse_pem_certificates(&testdata(f)).unwrap().remove(0))
    .collect()
}

fn public_key() -> impl Strategy<Value = PublicKey> {
    prop_oneof![
        (
            prop_oneof![
                Just(EcCurve::P256),
                Just(EcCurve::P384),
                Just(EcCurve::P521)
            ],
            any::<u64>()
        )
            .prop_map(|(curve, seed)| {
                let n = curve.coordinate_len();
                let bytes: Vec<u8> = (0..2 * n)
                    .map(|i| (seed.rotate_left(i as u32) as u8) ^ (i as u8))
                    .collect();
                PublicKey::Ec {
                    curve,
                    x: bytes[..n].to_vec(),
                    y: bytes[n..].to_vec(),
                }
            }),
        (vec(any::<u8>(), 1..300), vec(any::<u8>(), 1..5)).prop_map(|(mut n, mut e)| {
            n[0] |= 1;
            e[0] |= 1;
            PublicKey::Rsa { n, e }
        }),
        vec(any::<u8>(), 32).prop_map(|x| PublicKey::Ed25519 { x }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn bundle_json_round_trip(
        td in td_name(),
        cert_picks in vec(0usize..4, 0..5),
        keys in vec((public_key(), "[ -~]{0,12}"), 0..6),
        hint in proptest::option::of(0u64..1_000_000),
        seq in any::<u64>(),
    ) {
        let certs = test_certs();
        let bundle = Bundle {
            trust_domain: td.parse().unwrap(),
            x509_authorities: cert_picks.iter().map(|i| certs[*i].clone()).collect(),
            jwt_authorities: keys
                .into_iter()
                .enumerate()
                .map(|(i, (k, suffix))| JwtAuthority {
                    key_id: format!("{i}{suffix}"),
                    public_key: k.to_spki_der(),
                    expires_at: None,
                })
                .collect(),
            refresh_hint: hint.map(Duration::from_secs),
            sequence_number: seq,
        };
        let json = bundle.to_json().unwrap();
        let back = Bundle::from_json(bundle.trust_domain.clone(), json.as_bytes()).unwrap();
        prop_assert_eq!(&back, &bundle);
        let pem = bundle.to_pem();
        if !bundle.x509_authorities.is_empty() {
            let from_pem = Bundle::from_pem(bundle.trust_domain.clone(), pem.as_bytes()).unwrap();
            prop_assert_eq!(from_pem.x509_authorities, bundle.x509_authorities);
        }
    }

    #[test]
    fn arbitrary_bundle_bytes_never_panic(data in vec(any::<u8>(), 0..512)) {
        let td: TrustDomain = "example.org".parse().unwrap();
        let _ = Bundle::from_json(td.clone(), &data);
        let _ = Bundle::from_pem(td, &data);
    }

    #[test]
    fn mutated_bundle_json_never_panics(pos in any::<prop::sample::Index>(), len in 0usize..8, junk in "[\\[\\]{}\":,0-9a-zA-Z+/=_ -]{0,8}") {
        let td: TrustDomain = "example.org".parse().unwrap();
        let mut b = Bundle::new(td.clone());
        b.x509_authorities = test_certs();
        b.jwt_authorities.push(JwtAuthority {
            key_id: "k".into(),
            public_key: testdata("spki-p256.der"),
            expires_at: None,
        });
        let json = b.to_json().unwrap();
        let start = pos.index(json.len());
        let end = (start + len).min(json.len());
        if json.is_char_boundary(start) && json.is_char_boundary(end) {
            let mutated = format!("{}{}{}", &json[..start], junk, &json[end..]);
            if let Ok(parsed) = Bundle::from_json(td, mutated.as_bytes()) {
                // Whatever parses must serialize again.
                prop_assert!(parsed.to_json().is_ok());
            }
        }
    }
}
