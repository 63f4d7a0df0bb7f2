//! Keys, key managers, CSRs, X.509 and JWT SVID signing and validation.
//!
//! This crate owns every private-key operation of spire-rs. Its invariants: private keys live
//! only inside aws-lc-rs key objects (the only crypto backend; ring is never linked) and never
//! appear in `Debug` output or logs; key files are written atomically with mode 0600; CSRs from
//! the network are parsed and signature-checked with x509-parser, never by rcgen; issued SVIDs
//! are built from the server's own template (never from CSR extensions), carry exactly one URI
//! SAN and an explicit `cA=false`, and never outlive their signing CA; validation functions take
//! the time as an argument and never read the wall clock.

pub mod csr;
pub mod jwt;
pub mod keymanager;
pub mod keys;
pub mod x509;
pub mod x509svid;

pub use csr::{CsrError, MAX_CSR_LEN, VerifiedCsr, create_csr, parse_and_verify_csr};
pub use jwt::{
    JwtBundleSource, JwtError, JwtKeyLookup, JwtSvidClaims, JwtValidationOptions, MAX_TOKEN_LEN,
    ValidatedJwtSvid, sign_jwt_svid, validate_jwt_svid,
};
pub use keymanager::{DiskKeyManager, KeyInfo, KeyManager, KeyManagerError, MemoryKeyManager};
pub use keys::{JwsAlgorithm, KeyError, KeyType, PrivateKey, PublicKey, Signer};
pub use x509::{CaSubject, CaTemplate, SvidTemplate, X509Authority, X509Error, self_signed_ca};
pub use x509svid::{X509BundleSource, X509SvidError, spiffe_id_from_cert, validate_x509_svid};
