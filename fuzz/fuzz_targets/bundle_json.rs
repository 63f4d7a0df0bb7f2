//! Fuzzes the SPIFFE bundle parsers (JSON, PEM) and the SubjectPublicKeyInfo codec: never
//! panics, and whatever parses serializes and parses back to the same value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spire_spiffe::{Bundle, PublicKey, TrustDomain, certificate_spki};

fuzz_target!(|data: &[u8]| {
    let Ok(td) = "example.org".parse::<TrustDomain>() else {
        return;
    };
    if let Ok(bundle) = Bundle::from_json(td.clone(), data) {
        let json = bundle.to_json().expect("a parsed bundle serializes");
        let back = Bundle::from_json(td.clone(), json.as_bytes()).expect("serialized bundle parses");
        assert_eq!(back, bundle);
    }
    if let Ok(bundle) = Bundle::from_pem(td.clone(), data) {
        let back = Bundle::from_pem(td, bundle.to_pem().as_bytes()).expect("written pem parses");
        assert_eq!(back.x509_authorities, bundle.x509_authorities);
    }
    if let Ok(key) = PublicKey::from_spki_der(data) {
        let der = key.to_spki_der();
        assert_eq!(PublicKey::from_spki_der(&der).as_ref(), Ok(&key));
        assert_eq!(PublicKey::from_jwk(&key.to_jwk()).as_ref(), Ok(&key));
    }
    let _ = certificate_spki(data);
});
