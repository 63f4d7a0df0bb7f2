use spire_datastore::{
    Bundle, BundleDeleteMode, ChangeKind, EntryFilter, Error, JwtAuthority, Pagination,
    X509Authority,
};

use crate::harness::{START, TestDb, entry, td};

crate::backend_tests!(
    bundle_crud_and_append,
    bundle_delete_modes,
    bundle_prune,
    bundle_paging,
    concurrent_appends,
    concurrent_first_appends_from_two_stores,
);

fn cert(not_after: i64) -> Vec<u8> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.not_before = time::OffsetDateTime::from_unix_timestamp(START - 10_000).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

fn x509(der: &[u8]) -> X509Authority {
    X509Authority {
        der: der.to_vec(),
        tainted: false,
    }
}

fn jwt(kid: &str, expires_at: i64) -> JwtAuthority {
    JwtAuthority {
        key_id: kid.into(),
        public_key: kid.as_bytes().to_vec(),
        expires_at,
        tainted: false,
    }
}

async fn bundle_crud_and_append(db: &TestDb) {
    let ds = &db.ds;
    let c1 = cert(START + 1000);
    let c2 = cert(START + 2000);
    let mut b = Bundle::new(td("example.org"));
    b.x509_authorities.push(x509(&c1));
    b.jwt_authorities.push(jwt("k1", START + 100));
    b.refresh_hint = 300;
    ds.create_bundle(&b).await.unwrap();
    assert!(matches!(
        ds.create_bundle(&b).await,
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(ds.get_bundle(&td("example.org")).await.unwrap().unwrap(), b);

    // Appending what is there changes nothing.
    let same = ds.append_bundle(&b).await.unwrap();
    assert_eq!(same.sequence_number, 0);
    // New authorities are added once and bump the sequence number once.
    let mut add = Bundle::new(td("example.org"));
    add.x509_authorities = vec![x509(&c1), x509(&c2)];
    add.jwt_authorities = vec![jwt("k1", START + 100), jwt("k2", START + 200)];
    let merged = ds.append_bundle(&add).await.unwrap();
    assert_eq!(merged.sequence_number, 1);
    assert_eq!(merged.x509_authorities.len(), 2);
    assert_eq!(merged.jwt_authorities.len(), 2);
    assert_eq!(merged.refresh_hint, 300);
    assert_eq!(
        ds.get_bundle(&td("example.org")).await.unwrap().unwrap(),
        merged
    );
    // Append creates a missing bundle.
    let mut fresh = Bundle::new(td("new.org"));
    fresh.x509_authorities.push(x509(&c1));
    assert_eq!(ds.append_bundle(&fresh).await.unwrap(), fresh);

    // Taint through modify_bundle.
    let tainted = ds
        .modify_bundle(&td("example.org"), |b| {
            b.x509_authorities[0].tainted = true;
            Ok(true)
        })
        .await
        .unwrap();
    assert_eq!(tainted.sequence_number, 2);
    assert!(
        ds.get_bundle(&td("example.org"))
            .await
            .unwrap()
            .unwrap()
            .x509_authorities[0]
            .tainted
    );
    assert!(matches!(
        ds.modify_bundle(&td("none.org"), |_| Ok(true)).await,
        Err(Error::NotFound { .. })
    ));

    // set_bundle replaces; update_bundle requires existence.
    let mut replaced = Bundle::new(td("example.org"));
    replaced.sequence_number = 42;
    ds.set_bundle(&replaced).await.unwrap();
    assert_eq!(
        ds.get_bundle(&td("example.org")).await.unwrap().unwrap(),
        replaced
    );
    assert!(matches!(
        ds.update_bundle(&Bundle::new(td("none.org"))).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(ds.count_bundles().await.unwrap(), 2);
}

async fn bundle_delete_modes(db: &TestDb) {
    let ds = &db.ds;
    for t in ["fed.org", "fed2.org"] {
        ds.create_bundle(&Bundle::new(td(t))).await.unwrap();
    }
    let mut e1 = entry("/w1", "/a", &["t:1"]);
    e1.federates_with = vec![td("fed.org"), td("fed2.org")];
    let e1 = ds.create_entry(&e1).await.unwrap();
    let mut e2 = entry("/w2", "/a", &["t:1"]);
    e2.federates_with = vec![td("fed.org")];
    let e2 = ds.create_entry(&e2).await.unwrap();

    assert!(matches!(
        ds.delete_bundle(&td("fed.org"), BundleDeleteMode::Restrict)
            .await,
        Err(Error::BundleInUse { entries: 2, .. })
    ));
    assert!(ds.get_bundle(&td("fed.org")).await.unwrap().is_some());

    ds.delete_bundle(&td("fed.org"), BundleDeleteMode::Dissociate)
        .await
        .unwrap();
    assert!(ds.get_bundle(&td("fed.org")).await.unwrap().is_none());
    let e1b = ds.get_entry(&e1.id).await.unwrap().unwrap();
    assert_eq!(e1b.federates_with, vec![td("fed2.org")]);
    assert_eq!(e1b.revision_number, e1.revision_number + 1);
    assert!(
        ds.get_entry(&e2.id)
            .await
            .unwrap()
            .unwrap()
            .federates_with
            .is_empty()
    );

    ds.delete_bundle(&td("fed2.org"), BundleDeleteMode::Delete)
        .await
        .unwrap();
    assert!(ds.get_entry(&e1.id).await.unwrap().is_none());
    assert!(ds.get_entry(&e2.id).await.unwrap().is_some());
    assert_eq!(ds.count_entries(&EntryFilter::default()).await.unwrap(), 1);
    assert!(matches!(
        ds.delete_bundle(&td("fed2.org"), BundleDeleteMode::Delete)
            .await,
        Err(Error::NotFound { .. })
    ));
    // Unused bundle, RESTRICT is fine.
    ds.create_bundle(&Bundle::new(td("lonely.org")))
        .await
        .unwrap();
    ds.delete_bundle(&td("lonely.org"), BundleDeleteMode::Restrict)
        .await
        .unwrap();
}

async fn bundle_prune(db: &TestDb) {
    let ds = &db.ds;
    let old = cert(START - 100);
    let new = cert(START + 100);
    let mut b = Bundle::new(td("example.org"));
    b.x509_authorities = vec![x509(&old), x509(&new)];
    b.jwt_authorities = vec![
        jwt("old", START - 5),
        jwt("new", START + 5),
        jwt("forever", 0),
    ];
    ds.create_bundle(&b).await.unwrap();
    let marked = ds.last_local_write(ChangeKind::Bundle);
    assert!(ds.prune_bundle(&td("example.org"), START).await.unwrap());
    assert!(
        ds.last_local_write(ChangeKind::Bundle) > marked,
        "a prune that writes marks a local bundle write"
    );
    let got = ds.get_bundle(&td("example.org")).await.unwrap().unwrap();
    assert_eq!(got.x509_authorities, vec![x509(&new)]);
    let kids: Vec<&str> = got
        .jwt_authorities
        .iter()
        .map(|k| k.key_id.as_str())
        .collect();
    assert_eq!(kids, ["new", "forever"]);
    assert_eq!(got.sequence_number, 1);
    // Nothing more to prune: no change, no bump, and no local-write mark (the CA manager
    // runs this check periodically; a mark would send bundle reads to the database).
    let marked = ds.last_local_write(ChangeKind::Bundle);
    assert!(!ds.prune_bundle(&td("example.org"), START).await.unwrap());
    assert_eq!(ds.last_local_write(ChangeKind::Bundle), marked);
    // Never prune every X.509 authority.
    assert!(matches!(
        ds.prune_bundle(&td("example.org"), START + 1000).await,
        Err(Error::PruneWouldEmptyBundle(_))
    ));
    assert_eq!(
        ds.get_bundle(&td("example.org")).await.unwrap().unwrap(),
        got
    );
}

async fn bundle_paging(db: &TestDb) {
    let ds = &db.ds;
    for i in 0..5 {
        ds.create_bundle(&Bundle::new(td(&format!("td{i}.org"))))
            .await
            .unwrap();
    }
    let p1 = ds.list_bundles(&Pagination::first(3)).await.unwrap();
    assert_eq!(p1.items.len(), 3);
    let p2 = ds
        .list_bundles(&Pagination {
            token: p1.next_page_token,
            page_size: 3,
        })
        .await
        .unwrap();
    assert_eq!(p2.items.len(), 2);
    assert!(p2.next_page_token.is_empty());
    assert_eq!(p2.items[1].trust_domain, td("td4.org"));
}

async fn concurrent_appends(db: &TestDb) {
    let ds = &db.ds;
    ds.create_bundle(&Bundle::new(td("example.org")))
        .await
        .unwrap();
    let appends = (0..10).map(|i| {
        let mut b = Bundle::new(td("example.org"));
        b.jwt_authorities.push(jwt(&format!("k{i}"), 0));
        async move { ds.append_bundle(&b).await }
    });
    for r in futures::future::join_all(appends).await {
        r.unwrap();
    }
    let got = ds.get_bundle(&td("example.org")).await.unwrap().unwrap();
    // No lost update: every key is there and every append bumped the sequence once.
    assert_eq!(got.jwt_authorities.len(), 10);
    assert_eq!(got.sequence_number, 10);
}

/// Two servers starting at once on an empty database both append their first authorities to
/// the not-yet-existing local bundle: neither fails and neither authority is lost.
async fn concurrent_first_appends_from_two_stores(db: &TestDb) {
    let a = db.ds.clone();
    let b = db.reopen().await;
    for round in 0..3 {
        let name = format!("td{round}.org");
        let mut ba = Bundle::new(td(&name));
        ba.jwt_authorities.push(jwt("from-a", 0));
        let mut bb = Bundle::new(td(&name));
        bb.jwt_authorities.push(jwt("from-b", 0));
        let (ra, rb) = tokio::join!(a.append_bundle(&ba), b.append_bundle(&bb));
        ra.unwrap();
        rb.unwrap();
        let got = a.get_bundle(&td(&name)).await.unwrap().unwrap();
        let mut kids: Vec<&str> = got
            .jwt_authorities
            .iter()
            .map(|k| k.key_id.as_str())
            .collect();
        kids.sort();
        assert_eq!(kids, vec!["from-a", "from-b"], "{}", db.kind);
    }
    b.close().await;
}
