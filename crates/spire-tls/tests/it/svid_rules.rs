//! X509-SVID leaf rules and identity construction.

use rcgen::{IsCa, KeyUsagePurpose};
use spire_tls::{Identity, PeerMatcher, SvidError, TlsError, leaf_spiffe_id};

use crate::support::*;

#[test]
fn leaf_with_one_spiffe_uri_yields_its_id() {
    let ca = TestCa::new("example.org");
    let (cert, _) = ca.sign(ca.leaf_params(&["spiffe://example.org/agent/x"]));
    assert_eq!(
        leaf_spiffe_id(&cert).unwrap(),
        id("spiffe://example.org/agent/x")
    );
}

#[test]
fn leaf_rules_are_enforced() {
    let ca = TestCa::new("example.org");
    let check = |params| leaf_spiffe_id(&ca.sign(params).0).unwrap_err();

    assert!(matches!(check(ca.leaf_params(&[])), SvidError::NoUriSan));
    assert!(matches!(
        check(ca.leaf_params(&["spiffe://example.org/a", "spiffe://example.org/b"])),
        SvidError::MultipleUriSans(2)
    ));
    assert!(matches!(
        check(ca.leaf_params(&["https://example.org/a"])),
        SvidError::InvalidSpiffeId(_)
    ));

    let mut ca_leaf = ca.leaf_params(&["spiffe://example.org/a"]);
    ca_leaf.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    assert!(matches!(check(ca_leaf), SvidError::LeafIsCa));

    let mut signer = ca.leaf_params(&["spiffe://example.org/a"]);
    signer.key_usages.push(KeyUsagePurpose::KeyCertSign);
    assert!(matches!(check(signer), SvidError::LeafCanSign));

    assert!(matches!(
        leaf_spiffe_id(&vec![0x30, 0x03, 1, 2, 3].into()).unwrap_err(),
        SvidError::Malformed(_)
    ));
}

#[test]
fn identity_checks_chain_and_key() {
    let ca = TestCa::new("example.org");
    let (cert, key) = ca.sign(ca.leaf_params(&["spiffe://example.org/spire/server"]));
    let (_, other_key) = ca.sign(ca.leaf_params(&["spiffe://example.org/x"]));

    let identity = Identity::from_der([cert.clone(), ca.root()], key.clone()).unwrap();
    assert_eq!(
        identity.spiffe_id(),
        &id("spiffe://example.org/spire/server")
    );
    assert_eq!(identity.cert_chain().len(), 2);
    assert_eq!(identity.leaf(), &cert);
    // The key never shows in Debug output.
    let debug = format!("{identity:?}");
    assert!(
        debug.contains("spire/server") && !debug.contains("key:"),
        "{debug}"
    );

    assert!(matches!(
        Identity::from_der(Vec::<Vec<u8>>::new(), key.clone()).unwrap_err(),
        TlsError::EmptyChain
    ));
    assert!(matches!(
        Identity::from_der([cert.clone()], other_key).unwrap_err(),
        TlsError::KeyMismatch(_)
    ));
    assert!(matches!(
        Identity::from_der([cert], vec![1u8, 2, 3]).unwrap_err(),
        TlsError::InvalidKey(_)
    ));
    assert!(matches!(
        Identity::from_der([ca.root()], key).unwrap_err(),
        TlsError::InvalidSvid(SvidError::LeafIsCa)
    ));
}

#[test]
fn peer_matchers() {
    let server = id("spiffe://example.org/spire/server");
    let agent = id("spiffe://example.org/agent/x");
    let foreign = id("spiffe://other.org/spire/server");

    let spire_server = PeerMatcher::SpireServer(td("example.org"));
    assert!(spire_server.matches(&server));
    assert!(!spire_server.matches(&agent));
    assert!(!spire_server.matches(&foreign));
    assert_eq!(
        spire_server.to_string(),
        "spiffe://example.org/spire/server"
    );

    let member = PeerMatcher::MemberOf(td("example.org"));
    assert!(member.matches(&agent) && !member.matches(&foreign));

    let one_of = PeerMatcher::OneOf(vec![agent.clone(), foreign.clone()]);
    assert!(one_of.matches(&foreign) && !one_of.matches(&server));

    let pred = PeerMatcher::predicate(|id| id.path().starts_with("/agent/"));
    assert!(pred.matches(&agent) && !pred.matches(&server));
    assert!(PeerMatcher::Any.matches(&foreign));
}
