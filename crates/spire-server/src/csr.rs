//! Key and CSR generation for `x509 mint` (the key never leaves the CLI process).

use spire_crypto::{KeyType, PrivateKey};
use spire_spiffe::SpiffeId;
use zeroize::Zeroizing;

/// Generates an EC P-256 key and a CSR carrying `id` as URI SAN and `dns` as DNS SANs.
/// Returns the PKCS#8 PEM key and the DER CSR.
pub fn generate_key_and_csr(
    id: &SpiffeId,
    dns: &[String],
) -> anyhow::Result<(Zeroizing<String>, Vec<u8>)> {
    let key = PrivateKey::generate(KeyType::EcP256)?;
    let csr = if dns.is_empty() {
        spire_crypto::csr::create_csr(&key, Some(id))?
    } else {
        csr_with_dns(&key, id, dns)?
    };
    Ok((key.to_pkcs8_pem()?, csr))
}

/// A CSR with URI and DNS SANs, signed through the key's rcgen adapter.
fn csr_with_dns(key: &PrivateKey, id: &SpiffeId, dns: &[String]) -> anyhow::Result<Vec<u8>> {
    let pkcs8 = key.to_pkcs8_der()?;
    let kp = rcgen::KeyPair::try_from(pkcs8.as_slice())?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let mut sans = vec![rcgen::SanType::URI(rcgen::string::Ia5String::try_from(
        id.as_str(),
    )?)];
    for d in dns {
        sans.push(rcgen::SanType::DnsName(rcgen::string::Ia5String::try_from(
            d.as_str(),
        )?));
    }
    params.subject_alt_names = sans;
    Ok(params.serialize_request(&kp)?.der().to_vec())
}
