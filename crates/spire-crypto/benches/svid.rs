//! Micro-benchmarks: X509-SVID issuance (CSR verification + signing), signing alone, CSR
//! verification alone, JWT-SVID signing and validation. All with P-256 keys.

#![allow(clippy::unwrap_used)] // benchmark setup: a failure should abort the run

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use divan::Bencher;
use spire_crypto::jwt::{JwtSvidClaims, JwtValidationOptions, sign_jwt_svid, validate_jwt_svid};
use spire_crypto::x509::{CaSubject, CaTemplate, SvidTemplate, X509Authority, self_signed_ca};
use spire_crypto::{KeyType, PrivateKey, Signer, create_csr, parse_and_verify_csr};
use spire_spiffe::{TrustDomain, from_unix_secs};

const NOW: i64 = 1_800_000_000;

fn main() {
    divan::main();
}

fn ca() -> X509Authority {
    let key: Arc<dyn Signer> = Arc::new(PrivateKey::generate(KeyType::EcP256).unwrap());
    let t = CaTemplate {
        trust_domain: "example.org".parse().unwrap(),
        subject: CaSubject::default(),
        ttl: Duration::from_secs(86400),
    };
    self_signed_ca(key, &t, from_unix_secs(NOW)).unwrap()
}

fn template() -> SvidTemplate {
    SvidTemplate {
        spiffe_id: "spiffe://example.org/ns/default/sa/web".parse().unwrap(),
        dns_names: vec![],
        ttl: Duration::from_secs(3600),
    }
}

/// CSR parse + proof-of-possession check + template + sign: what the server does per SVID.
#[divan::bench]
fn x509_svid_issue_from_csr(bencher: Bencher<'_, '_>) {
    let ca = ca();
    let t = template();
    let leaf = PrivateKey::generate(KeyType::EcP256).unwrap();
    let csr = create_csr(&leaf, None).unwrap();
    bencher.bench_local(|| {
        ca.sign_svid_from_csr(divan::black_box(&csr), &t, from_unix_secs(NOW + 1))
            .unwrap()
    });
}

/// Template + sign for an already-verified public key.
#[divan::bench]
fn x509_svid_sign_only(bencher: Bencher<'_, '_>) {
    let ca = ca();
    let t = template();
    let leaf = PrivateKey::generate(KeyType::EcP256).unwrap();
    let pk = leaf.public_key().clone();
    bencher.bench_local(|| {
        ca.sign_svid(divan::black_box(&pk), &t, from_unix_secs(NOW + 1))
            .unwrap()
    });
}

/// CSR parse + signature verification only.
#[divan::bench]
fn csr_verify_only(bencher: Bencher<'_, '_>) {
    let leaf = PrivateKey::generate(KeyType::EcP256).unwrap();
    let csr = create_csr(&leaf, None).unwrap();
    bencher.bench_local(|| parse_and_verify_csr(divan::black_box(&csr)).unwrap());
}

fn claims() -> JwtSvidClaims {
    JwtSvidClaims {
        spiffe_id: "spiffe://example.org/ns/default/sa/web".parse().unwrap(),
        audience: vec!["spire-server".into()],
        issued_at: from_unix_secs(NOW),
        expires_at: from_unix_secs(NOW + 300),
        issuer: None,
        jwt_id: None,
    }
}

#[divan::bench]
fn jwt_svid_sign_es256(bencher: Bencher<'_, '_>) {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let c = claims();
    bencher.bench_local(|| sign_jwt_svid(&key, "kid-1", None, divan::black_box(&c)).unwrap());
}

#[divan::bench]
fn jwt_svid_validate_es256(bencher: Bencher<'_, '_>) {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let token = sign_jwt_svid(&key, "kid-1", None, &claims()).unwrap();
    let mut keys = BTreeMap::new();
    keys.insert("kid-1".to_owned(), key.public_key().spki_der().to_vec());
    let mut bundles: HashMap<TrustDomain, BTreeMap<String, Vec<u8>>> = HashMap::new();
    bundles.insert("example.org".parse().unwrap(), keys);
    let opts = JwtValidationOptions::default();
    bencher.bench_local(|| {
        validate_jwt_svid(
            divan::black_box(&token),
            &bundles,
            "spire-server",
            from_unix_secs(NOW + 1),
            &opts,
        )
        .unwrap()
    });
}

/// Floor: one raw aws-lc-rs ECDSA P-256 (SHA-256, DER) signature over a typical TBS size.
#[divan::bench]
fn raw_p256_sign(bencher: Bencher<'_, '_>) {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
    let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
    let rng = SystemRandom::new();
    let msg = [7u8; 400];
    bencher.bench_local(|| kp.sign(&rng, divan::black_box(&msg)).unwrap());
}

/// Floor: one raw aws-lc-rs ECDSA P-256 verification (key parsed each time, as for a CSR).
#[divan::bench]
fn raw_p256_verify(bencher: Bencher<'_, '_>) {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair,
        UnparsedPublicKey,
    };
    let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
    let msg = [7u8; 200];
    let sig = kp.sign(&SystemRandom::new(), &msg).unwrap();
    let pk = kp.public_key().as_ref().to_vec();
    bencher.bench_local(|| {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, divan::black_box(&pk))
            .verify(&msg, sig.as_ref())
            .unwrap()
    });
}
