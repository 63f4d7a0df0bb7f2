//! Pure SPIFFE value types: SPIFFE IDs, trust domains, selectors, SPIFFE bundles and the
//! [`Clock`] abstraction.
//!
//! Invariants: a [`SpiffeId`], [`TrustDomain`] or [`Selector`] value is always valid (private
//! fields, built only through parsing), so code that holds one never re-checks it. Parsers never
//! panic on any input and every error names the rule that was broken. This crate does no IO and
//! knows nothing about gRPC, SQL, HCL or async runtimes.

mod bundle;
mod clock;
mod der;
mod id;
mod key;
mod selector;

pub use bundle::{
    Bundle, BundleError, JwtAuthority, MAX_BUNDLE_LEN, PemBundleError, USE_JWT_SVID, USE_X509_SVID,
    certificates_to_pem, parse_pem_certificates,
};
pub use clock::{Clock, FakeClock, SystemClock, from_unix_secs, to_offset_date_time, to_unix_secs};
pub use der::DerError;
pub use id::{MAX_SPIFFE_ID_LEN, MAX_TRUST_DOMAIN_LEN, SpiffeId, SpiffeIdError, TrustDomain};
pub use key::{
    EcCurve, JwkKeyMembers, KeyError, PublicKey, certificate_spki, jwk_to_spki, spki_to_jwk,
};
pub use selector::{Selector, SelectorError, Selectors};
