//! Fuzzes SPIFFE ID and trust domain parsing: never panics, and whatever parses is valid and
//! prints back to the same string.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spire_spiffe::{SpiffeId, TrustDomain};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = s.parse::<SpiffeId>() {
        assert_eq!(id.to_string(), s);
        assert!(s.len() <= 2048);
        let td = id.trust_domain();
        assert!(td.as_str().len() <= 255);
        assert_eq!(td.as_str().parse::<TrustDomain>().as_ref(), Ok(td));
        let rebuilt = SpiffeId::new(td, id.path()).expect("parts of a valid id rebuild it");
        assert_eq!(rebuilt, id);
        let reparsed: SpiffeId = id.to_string().parse().expect("display re-parses");
        assert_eq!(reparsed, id);
    }
    if let Ok(td) = s.parse::<TrustDomain>() {
        let id: SpiffeId = td.id_string().parse().expect("trust domain id parses");
        assert_eq!(id.trust_domain(), &td);
        assert!(id.path().is_empty());
    }
});
