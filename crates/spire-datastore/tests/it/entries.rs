use spire_datastore::{
    Bundle, ChangeKind, ChangeOp, EntryFilter, EntryMask, Error, FederatesWithFilter, MatchMode,
    Pagination, SelectorFilter,
};

use crate::harness::{START, TestDb, entry, id, sels, td};

crate::backend_tests!(
    entry_crud,
    entry_duplicates,
    entry_filters_and_count,
    entry_paging,
    entry_federates_with,
    batch_create_atomicity,
    prune_expired_entries,
    concurrent_duplicate_creates,
);

async fn entry_crud(db: &TestDb) {
    let ds = &db.ds;
    let mut e = entry("/web", "/agent", &["unix:uid:1000", "k8s:ns:prod"]);
    e.x509_svid_ttl = 3600;
    e.jwt_svid_ttl = 300;
    e.admin = true;
    e.dns_names = vec!["b.example".into(), "a.example".into(), "b.example".into()];
    e.hint = "web".into();
    e.expires_at = START + 1000;
    e.store_svid = true;
    e.jwt_svid_include_jti = true;
    e.disable_x509_svid_prefetch = true;
    let created = ds.create_entry(&e).await.unwrap();
    assert!(!created.id.is_empty());
    assert_eq!(created.created_at, START);
    assert_eq!(created.revision_number, 0);
    // Duplicate DNS names are dropped, order kept.
    assert_eq!(created.dns_names, vec!["b.example", "a.example"]);

    let got = ds.get_entry(&created.id).await.unwrap().unwrap();
    assert_eq!(got, created, "{}", db.kind);
    assert_eq!(got.selectors, sels(&["k8s:ns:prod", "unix:uid:1000"]));

    // Update only the masked fields.
    let mut change = got.clone();
    change.hint = "changed".into();
    change.x509_svid_ttl = 60;
    change.admin = false;
    change.selectors = sels(&["unix:uid:0"]);
    let mask = EntryMask {
        hint: true,
        selectors: true,
        ..EntryMask::default()
    };
    let updated = ds.update_entry(&change, &mask).await.unwrap();
    assert_eq!(updated.hint, "changed");
    assert_eq!(updated.selectors, sels(&["unix:uid:0"]));
    assert_eq!(
        updated.x509_svid_ttl, 3600,
        "unmasked field must not change"
    );
    assert!(updated.admin);
    assert_eq!(updated.revision_number, 1);
    assert_eq!(ds.get_entry(&created.id).await.unwrap().unwrap(), updated);

    let updated = ds.update_entry(&change, &EntryMask::all()).await.unwrap();
    assert_eq!(updated.revision_number, 2);
    assert_eq!(updated.x509_svid_ttl, 60);
    assert!(!updated.admin);
    assert_eq!(updated.created_at, START);

    // Explicit IDs are kept.
    let mut e2 = entry("/db", "/agent", &["unix:uid:2"]);
    e2.id = "my-entry-id".into();
    assert_eq!(ds.create_entry(&e2).await.unwrap().id, "my-entry-id");

    let deleted = ds.delete_entry(&created.id).await.unwrap();
    assert_eq!(deleted, updated);
    assert!(ds.get_entry(&created.id).await.unwrap().is_none());
    assert!(matches!(
        ds.delete_entry(&created.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        ds.update_entry(&change, &EntryMask::all()).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(ds.count_entries(&EntryFilter::default()).await.unwrap(), 1);
    let many = ds
        .get_entries(&["my-entry-id".into(), "missing".into()])
        .await
        .unwrap();
    assert_eq!(many.len(), 1);
}

async fn entry_duplicates(db: &TestDb) {
    let ds = &db.ds;
    let first = ds
        .create_entry(&entry("/w", "/a", &["unix:uid:1", "unix:gid:1"]))
        .await
        .unwrap();
    // Same identity, selectors given in another order.
    match ds
        .create_entry(&entry("/w", "/a", &["unix:gid:1", "unix:uid:1"]))
        .await
    {
        Err(Error::EntryAlreadyExists(existing)) => assert_eq!(*existing, first),
        other => panic!("expected EntryAlreadyExists, got {other:?}"),
    }
    // A different selector set, parent or SPIFFE ID is a different entry.
    let other_sel = ds
        .create_entry(&entry("/w", "/a", &["unix:uid:1"]))
        .await
        .unwrap();
    ds.create_entry(&entry("/w", "/b", &["unix:uid:1", "unix:gid:1"]))
        .await
        .unwrap();
    ds.create_entry(&entry("/x", "/a", &["unix:uid:1", "unix:gid:1"]))
        .await
        .unwrap();
    // Same explicit ID.
    let mut same_id = entry("/y", "/a", &["unix:uid:9"]);
    same_id.id = first.id.clone();
    assert!(matches!(
        ds.create_entry(&same_id).await,
        Err(Error::EntryAlreadyExists(e)) if e.id == first.id
    ));
    // Updating into a duplicate is refused and changes nothing.
    let mut dup = other_sel.clone();
    dup.selectors = sels(&["unix:uid:1", "unix:gid:1"]);
    match ds.update_entry(&dup, &EntryMask::all()).await {
        Err(Error::EntryAlreadyExists(existing)) => assert_eq!(existing.id, first.id),
        other => panic!("expected EntryAlreadyExists, got {other:?}"),
    }
    assert_eq!(
        ds.get_entry(&other_sel.id).await.unwrap().unwrap(),
        other_sel
    );
    assert_eq!(ds.count_entries(&EntryFilter::default()).await.unwrap(), 4);
}

async fn entry_filters_and_count(db: &TestDb) {
    let ds = &db.ds;
    // e1 {a}, e2 {a,b}, e3 {a,b,c}, e4 {c}; parents and hints vary.
    let mut e1 = entry("/e1", "/p1", &["t:a"]);
    e1.hint = "h1".into();
    let mut e2 = entry("/e2", "/p1", &["t:a", "t:b"]);
    e2.downstream = true;
    let e3 = entry("/e3", "/p2", &["t:a", "t:b", "t:c"]);
    let mut e4 = entry("/e4", "/p2", &["t:c"]);
    e4.hint = "h1".into();
    for e in [&e1, &e2, &e3, &e4] {
        ds.create_entry(e).await.unwrap();
    }
    let names = |f: EntryFilter| async move {
        let page = ds.list_entries(&f, &Pagination::default()).await.unwrap();
        let count = ds.count_entries(&f).await.unwrap();
        assert_eq!(count as usize, page.items.len(), "count and list disagree");
        let mut v: Vec<String> = page
            .items
            .iter()
            .map(|e| e.spiffe_id.path().to_owned())
            .collect();
        v.sort();
        v
    };
    let by_sel = |s: &[&str], mode| EntryFilter {
        by_selectors: Some(SelectorFilter {
            selectors: sels(s),
            mode,
        }),
        ..EntryFilter::default()
    };
    assert_eq!(
        names(EntryFilter::default()).await,
        ["/e1", "/e2", "/e3", "/e4"]
    );
    assert_eq!(
        names(by_sel(&["t:a", "t:b"], MatchMode::Exact)).await,
        ["/e2"]
    );
    assert_eq!(
        names(by_sel(&["t:a", "t:b"], MatchMode::Subset)).await,
        ["/e1", "/e2"]
    );
    assert_eq!(
        names(by_sel(&["t:a", "t:b"], MatchMode::Superset)).await,
        ["/e2", "/e3"]
    );
    assert_eq!(
        names(by_sel(&["t:b", "t:c"], MatchMode::Any)).await,
        ["/e2", "/e3", "/e4"]
    );
    assert!(names(by_sel(&["t:z"], MatchMode::Any)).await.is_empty());
    assert!(names(by_sel(&["t:z"], MatchMode::Exact)).await.is_empty());
    assert_eq!(
        names(EntryFilter {
            by_spiffe_id: Some(id("spiffe://example.org/e3")),
            ..EntryFilter::default()
        })
        .await,
        ["/e3"]
    );
    assert_eq!(
        names(EntryFilter {
            by_parent_id: Some(id("spiffe://example.org/p1")),
            ..EntryFilter::default()
        })
        .await,
        ["/e1", "/e2"]
    );
    assert_eq!(
        names(EntryFilter {
            by_hint: Some("h1".into()),
            ..EntryFilter::default()
        })
        .await,
        ["/e1", "/e4"]
    );
    assert_eq!(
        names(EntryFilter {
            by_downstream: Some(true),
            ..EntryFilter::default()
        })
        .await,
        ["/e2"]
    );
    assert_eq!(
        names(EntryFilter {
            by_downstream: Some(false),
            ..EntryFilter::default()
        })
        .await,
        ["/e1", "/e3", "/e4"]
    );
    // Filters combine with AND.
    assert_eq!(
        names(EntryFilter {
            by_parent_id: Some(id("spiffe://example.org/p2")),
            by_hint: Some("h1".into()),
            by_selectors: Some(SelectorFilter {
                selectors: sels(&["t:c"]),
                mode: MatchMode::Superset,
            }),
            ..EntryFilter::default()
        })
        .await,
        ["/e4"]
    );
}

async fn entry_paging(db: &TestDb) {
    let ds = &db.ds;
    for i in 0..25 {
        ds.create_entry(&entry(&format!("/w{i:02}"), "/a", &["unix:uid:1"]))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut page = Pagination::first(10);
    let mut sizes = Vec::new();
    loop {
        let p = ds
            .list_entries(&EntryFilter::default(), &page)
            .await
            .unwrap();
        sizes.push(p.items.len());
        seen.extend(p.items.into_iter().map(|e| e.id));
        if p.next_page_token.is_empty() {
            break;
        }
        page.token = p.next_page_token;
    }
    assert_eq!(sizes, [10, 10, 5]);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "pages are ordered and disjoint");
    assert_eq!(seen.len(), 25);
    // Exactly one full page: no token for an empty next page.
    let p = ds
        .list_entries(&EntryFilter::default(), &Pagination::first(25))
        .await
        .unwrap();
    assert_eq!(p.items.len(), 25);
    assert!(p.next_page_token.is_empty());
    assert_eq!(ds.list_all_entries().await.unwrap().len(), 25);
}

async fn entry_federates_with(db: &TestDb) {
    let ds = &db.ds;
    let mut e = entry("/w", "/a", &["unix:uid:1"]);
    e.federates_with = vec![td("other.org")];
    assert!(matches!(
        ds.create_entry(&e).await,
        Err(Error::FederatedBundleNotFound(t)) if t == "other.org"
    ));
    assert_eq!(ds.count_entries(&EntryFilter::default()).await.unwrap(), 0);
    ds.create_bundle(&Bundle::new(td("other.org")))
        .await
        .unwrap();
    ds.create_bundle(&Bundle::new(td("third.org")))
        .await
        .unwrap();
    let e1 = ds.create_entry(&e).await.unwrap();
    assert_eq!(e1.federates_with, vec![td("other.org")]);
    let mut e2 = entry("/w2", "/a", &["unix:uid:1"]);
    e2.federates_with = vec![td("third.org"), td("other.org")];
    let e2 = ds.create_entry(&e2).await.unwrap();
    assert_eq!(e2.federates_with, vec![td("other.org"), td("third.org")]);
    ds.create_entry(&entry("/w3", "/a", &["unix:uid:1"]))
        .await
        .unwrap();

    let fw = |tds: &[&str], mode| EntryFilter {
        by_federates_with: Some(FederatesWithFilter {
            trust_domains: tds.iter().map(|t| td(t)).collect(),
            mode,
        }),
        ..EntryFilter::default()
    };
    let list = |f: EntryFilter| async move {
        let mut v: Vec<String> = ds
            .list_entries(&f, &Pagination::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| e.spiffe_id.path().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(list(fw(&["other.org"], MatchMode::Exact)).await, ["/w"]);
    assert_eq!(
        list(fw(&["other.org"], MatchMode::Superset)).await,
        ["/w", "/w2"]
    );
    assert_eq!(list(fw(&["other.org"], MatchMode::Subset)).await, ["/w"]);
    assert_eq!(list(fw(&["third.org"], MatchMode::Any)).await, ["/w2"]);

    // Updating federates_with checks bundles too.
    let mut bad = e1.clone();
    bad.federates_with = vec![td("nope.org")];
    let mask = EntryMask {
        federates_with: true,
        ..EntryMask::default()
    };
    assert!(matches!(
        ds.update_entry(&bad, &mask).await,
        Err(Error::FederatedBundleNotFound(_))
    ));
    bad.federates_with = vec![];
    assert!(
        ds.update_entry(&bad, &mask)
            .await
            .unwrap()
            .federates_with
            .is_empty()
    );
}

async fn batch_create_atomicity(db: &TestDb) {
    let ds = &db.ds;
    let existing = ds
        .create_entry(&entry("/dup", "/a", &["unix:uid:1"]))
        .await
        .unwrap();
    let before_changes = ds.latest_change_id().await.unwrap();
    let batch = vec![
        entry("/b1", "/a", &["unix:uid:1"]),
        entry("/dup", "/a", &["unix:uid:1"]),
        entry("/b3", "/a", &["unix:uid:1"]),
    ];
    // All-or-nothing: the duplicate aborts the whole batch, leaving no rows of b1.
    assert!(matches!(
        ds.create_entries_atomic(&batch).await,
        Err(Error::EntryAlreadyExists(e)) if e.id == existing.id
    ));
    assert_eq!(ds.count_entries(&EntryFilter::default()).await.unwrap(), 1);
    assert_eq!(ds.latest_change_id().await.unwrap(), before_changes);

    // Per item: each item commits on its own.
    let results = ds.create_entries(&batch).await;
    assert!(results[0].is_ok());
    assert!(matches!(results[1], Err(Error::EntryAlreadyExists(_))));
    assert!(results[2].is_ok());
    assert_eq!(ds.count_entries(&EntryFilter::default()).await.unwrap(), 3);
    let changes = ds.changes_since(before_changes, 100).await.unwrap();
    assert_eq!(changes.len(), 2);
    assert!(
        changes
            .iter()
            .all(|c| c.kind == ChangeKind::Entry && c.op == ChangeOp::Create)
    );

    // A failure in the middle of an entry's own writes leaves no half-written entry: the
    // selector insert fails after the entry row was written.
    let mut bad = entry("/bad", "/a", &["unix:uid:1"]);
    bad.federates_with = vec![td("missing.org")];
    assert!(ds.create_entry(&bad).await.is_err());
    assert_eq!(ds.count_entries(&EntryFilter::default()).await.unwrap(), 3);

    let ok = ds
        .create_entries_atomic(&[entry("/c1", "/a", &["t:x"]), entry("/c2", "/a", &["t:x"])])
        .await
        .unwrap();
    assert_eq!(ok.len(), 2);
    assert_eq!(ds.count_entries(&EntryFilter::default()).await.unwrap(), 5);
}

async fn prune_expired_entries(db: &TestDb) {
    let ds = &db.ds;
    let mut old = entry("/old", "/a", &["t:1"]);
    old.expires_at = START - 10;
    let mut fresh = entry("/fresh", "/a", &["t:1"]);
    fresh.expires_at = START + 10;
    let never = entry("/never", "/a", &["t:1"]);
    for e in [&old, &fresh, &never] {
        ds.create_entry(e).await.unwrap();
    }
    assert_eq!(ds.prune_entries(START).await.unwrap(), 1);
    let left: Vec<String> = ds
        .list_all_entries()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.spiffe_id.path().to_owned())
        .collect();
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&"/old".to_owned()));
}

async fn concurrent_duplicate_creates(db: &TestDb) {
    let ds = &db.ds;
    let e = entry("/race", "/a", &["unix:uid:7"]);
    let results = futures::future::join_all((0..8).map(|_| ds.create_entry(&e))).await;
    let ok: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(ok.len(), 1, "{results:?}");
    for r in &results {
        match r {
            Ok(_) => {}
            Err(Error::EntryAlreadyExists(existing)) => assert_eq!(existing.id, ok[0].id),
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(ds.count_entries(&EntryFilter::default()).await.unwrap(), 1);
}
