//! Certificate signing requests: creation (agent side) and parsing with proof of possession
//! (server side).
//!
//! CSRs from the network are parsed with x509-parser and their self-signature is checked with
//! aws-lc-rs (`verify-aws`). rcgen never parses them: it rejects extensions it does not know.
//! Like SPIRE, the server uses only the CSR's public key; subject and extensions are ignored
//! (the URI SANs are reported for callers that want to log or compare them).

use spire_spiffe::SpiffeId;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::keys::{KeyError, PublicKey, RcgenSigner, Signer};

/// Largest CSR accepted, in bytes (an RSA-4096 CSR is about 1.2 KiB).
pub const MAX_CSR_LEN: usize = 16 * 1024;

/// Signature algorithms accepted on CSRs: ECDSA with SHA-256/384/512, sha256/384/512WithRSA,
/// RSASSA-PSS. SHA-1 is refused, as Go's `CheckSignature` refuses it.
const ALLOWED_SIGNATURE_ALGORITHMS: &[&str] = &[
    "1.2.840.10045.4.3.2",
    "1.2.840.10045.4.3.3",
    "1.2.840.10045.4.3.4",
    "1.2.840.113549.1.1.11",
    "1.2.840.113549.1.1.12",
    "1.2.840.113549.1.1.13",
    "1.2.840.113549.1.1.10",
];

/// Errors from CSR creation and verification.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// The CSR is larger than [`MAX_CSR_LEN`].
    #[error("csr is {0} bytes: the limit is 16384")]
    TooLarge(usize),
    /// The bytes are not a DER PKCS#10 request.
    #[error("csr is not valid DER PKCS#10: {0}")]
    Malformed(String),
    /// Bytes follow the request.
    #[error("csr has trailing bytes after the request")]
    TrailingData,
    /// The self-signature does not verify: no proof of possession.
    #[error("csr signature does not verify (no proof of possession of the key): {0}")]
    BadSignature(String),
    /// The signature algorithm is not allowed (for example SHA-1).
    #[error(
        "csr signature algorithm {0} is not allowed: expected ECDSA or RSA with SHA-256/384/512, or RSASSA-PSS"
    )]
    SignatureAlgorithm(String),
    /// The public key is of an unsupported type.
    #[error("csr public key: {0}")]
    PublicKey(#[source] KeyError),
    /// rcgen could not build the request.
    #[error("cannot build csr: {0}")]
    Build(#[from] rcgen::Error),
}

/// A CSR whose signature has been verified.
#[derive(Clone, Debug)]
pub struct VerifiedCsr {
    /// The key the requester proved to hold.
    pub public_key: PublicKey,
    /// URI SANs requested in the extension request (informational, never trusted).
    pub requested_uris: Vec<String>,
}

/// Creates a DER CSR for `signer`'s key with an empty subject, optionally carrying `spiffe_id`
/// as a URI SAN.
pub fn create_csr(signer: &dyn Signer, spiffe_id: Option<&SpiffeId>) -> Result<Vec<u8>, CsrError> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(id) = spiffe_id {
        params.subject_alt_names = vec![rcgen::SanType::URI(rcgen::string::Ia5String::try_from(
            id.as_str(),
        )?)];
    }
    let csr = params.serialize_request(&RcgenSigner(signer))?;
    Ok(csr.der().to_vec())
}

/// Parses a DER CSR, verifies its self-signature (proof of possession) and returns its key.
pub fn parse_and_verify_csr(der: &[u8]) -> Result<VerifiedCsr, CsrError> {
    if der.len() > MAX_CSR_LEN {
        return Err(CsrError::TooLarge(der.len()));
    }
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::TrailingData);
    }
    // Check the key type first: verify_signature must only see keys we support.
    let public_key = PublicKey::from_parsed_spki(&csr.certification_request_info.subject_pki)
        .map_err(CsrError::PublicKey)?;
    let alg = csr.signature_algorithm.algorithm.to_id_string();
    if !ALLOWED_SIGNATURE_ALGORITHMS.contains(&alg.as_str()) {
        return Err(CsrError::SignatureAlgorithm(alg));
    }
    csr.verify_signature()
        .map_err(|e| CsrError::BadSignature(e.to_string()))?;
    let mut requested_uris = Vec::new();
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    if let GeneralName::URI(uri) = name {
                        requested_uris.push((*uri).to_owned());
                    }
                }
            }
        }
    }
    Ok(VerifiedCsr {
        public_key,
        requested_uris,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyType, PrivateKey};
    use proptest::prelude::*;

    #[test]
    fn create_and_verify_every_key_type() {
        let id: SpiffeId = "spiffe://example.org/workload".parse().unwrap();
        for t in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
            let k = PrivateKey::generate(t).unwrap();
            let der = create_csr(&k, Some(&id)).unwrap();
            let v = parse_and_verify_csr(&der).unwrap();
            assert_eq!(&v.public_key, k.public_key());
            assert_eq!(v.requested_uris, ["spiffe://example.org/workload"]);
            let der = create_csr(&k, None).unwrap();
            assert!(
                parse_and_verify_csr(&der)
                    .unwrap()
                    .requested_uris
                    .is_empty()
            );
        }
    }

    #[test]
    fn tampered_csr_fails_proof_of_possession() {
        let k = PrivateKey::generate(KeyType::EcP256).unwrap();
        let der = create_csr(&k, None).unwrap();
        // Flip the last byte: part of the signature.
        let mut bad = der.clone();
        let n = bad.len() - 1;
        bad[n] ^= 1;
        assert!(matches!(
            parse_and_verify_csr(&bad),
            Err(CsrError::BadSignature(_) | CsrError::Malformed(_))
        ));
        // Swap the key in the request for another key of the same type: signature must fail.
        let other = PrivateKey::generate(KeyType::EcP256).unwrap();
        let mut swapped = der.clone();
        let old = k.public_key().key_bits();
        let new = other.public_key().key_bits();
        let pos = swapped.windows(old.len()).position(|w| w == old).unwrap();
        swapped[pos..pos + old.len()].copy_from_slice(new);
        assert!(matches!(
            parse_and_verify_csr(&swapped),
            Err(CsrError::BadSignature(_))
        ));
        let mut trailing = der;
        trailing.push(0);
        assert!(matches!(
            parse_and_verify_csr(&trailing),
            Err(CsrError::TrailingData)
        ));
        assert!(matches!(
            parse_and_verify_csr(&vec![0u8; MAX_CSR_LEN + 1]),
            Err(CsrError::TooLarge(_))
        ));
    }

    #[test]
    fn accepts_csr_with_unknown_extension() {
        // rcgen's own parser would reject this; ours must not.
        let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                &[1, 2, 3, 4, 5],
                vec![5, 0],
            ));
        let csr = params.serialize_request(&k).unwrap();
        assert!(parse_and_verify_csr(csr.der()).is_ok());
    }

    #[test]
    fn openssl_csrs_verify_and_sha1_is_refused() {
        let p256 = include_bytes!("../testdata/openssl-p256-uri-san.csr.der");
        let v = parse_and_verify_csr(p256).unwrap();
        assert_eq!(v.public_key.key_type(), KeyType::EcP256);
        assert_eq!(v.requested_uris, ["spiffe://example.org/w"]);
        let rsa = include_bytes!("../testdata/openssl-rsa2048.csr.der");
        assert_eq!(
            parse_and_verify_csr(rsa).unwrap().public_key.key_type(),
            KeyType::Rsa2048
        );
        let sha1 = include_bytes!("../testdata/rsa2048-sha1.csr.der");
        assert!(matches!(
            parse_and_verify_csr(sha1),
            Err(CsrError::SignatureAlgorithm(a)) if a == "1.2.840.113549.1.1.5"
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_and_verify_csr(&bytes);
        }

        #[test]
        fn mutated_csr_never_panics(idx in 0usize..400, val in any::<u8>()) {
            let k = PrivateKey::generate(KeyType::EcP256).unwrap();
            let mut der = create_csr(&k, None).unwrap();
            let i = idx % der.len();
            der[i] = val;
            let _ = parse_and_verify_csr(&der);
        }
    }
}
