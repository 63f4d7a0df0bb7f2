//! Fuzz CSR parsing and proof-of-possession verification.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = spire_crypto::parse_and_verify_csr(data);
});
