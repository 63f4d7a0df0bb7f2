//! Fuzz the JWT-SVID validator: raw token text, and tokens whose header and payload are the
//! fuzzer's bytes (so JSON and claim handling is reached past base64).
#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use spire_crypto::jwt::{JwtValidationOptions, validate_jwt_svid};
use spire_crypto::{KeyType, PrivateKey};
use spire_spiffe::{TrustDomain, from_unix_secs};

type Bundles = HashMap<TrustDomain, BTreeMap<String, Vec<u8>>>;

fn bundles() -> &'static Bundles {
    static B: OnceLock<Bundles> = OnceLock::new();
    B.get_or_init(|| {
        let mut out = HashMap::new();
        if let (Ok(key), Ok(td)) = (PrivateKey::generate(KeyType::EcP256), "example.org".parse()) {
            let mut keys = BTreeMap::new();
            keys.insert("kid-1".to_owned(), key.public_key().spki_der().to_vec());
            out.insert(td, keys);
        }
        out
    })
}

fuzz_target!(|data: &[u8]| {
    let opts = JwtValidationOptions::default();
    let now = from_unix_secs(1_800_000_000);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = validate_jwt_svid(text, bundles(), "aud", now, &opts);
    }
    let (header, rest) = match data.iter().position(|b| *b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"{\"alg\":\"ES256\",\"kid\":\"kid-1\"}"[..], data),
    };
    let token = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(rest),
        URL_SAFE_NO_PAD.encode([0u8; 64])
    );
    let _ = validate_jwt_svid(&token, bundles(), "aud", now, &opts);
});
