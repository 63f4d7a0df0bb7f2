//! The bulk readers (`for_each_entry`, `for_each_node`, `list_all_*`) return exactly what the
//! paged listings return, children included, whatever the page size.

use spire_datastore::{AttestedNode, BULK_PAGE, Bundle, EntryFilter, NodeFilter, Pagination};

use crate::harness::{START, TestDb, entry, id, sels, td};

crate::backend_tests!(
    bulk_entries_match_paged_listing,
    bulk_nodes_match_paged_listing
);

async fn paged_entries(db: &TestDb) -> Vec<spire_datastore::Entry> {
    let mut out = Vec::new();
    let mut page = Pagination::first(3);
    loop {
        let p = db
            .ds
            .list_entries(&EntryFilter::default(), &page)
            .await
            .unwrap();
        out.extend(p.items);
        if p.next_page_token.is_empty() {
            return out;
        }
        page.token = p.next_page_token;
    }
}

async fn bulk_entries_match_paged_listing(db: &TestDb) {
    let ds = &db.ds;
    assert_eq!(ds.for_each_entry(2, |_| {}).await.unwrap(), 0);
    ds.create_bundle(&Bundle::new(td("a.org"))).await.unwrap();
    ds.create_bundle(&Bundle::new(td("b.org"))).await.unwrap();
    for i in 0..11 {
        let mut e = entry(
            &format!("/w{i}"),
            &format!("/p{}", i % 3),
            &["unix:uid:1", &format!("k8s:ns:n{i}"), "a:b:c"][..1 + i % 3],
        );
        // IDs of different lengths and a shared prefix exercise the byte-wise ordering.
        e.id = format!("entry-{}{i}", "x".repeat(i % 4));
        if i % 2 == 0 {
            e.dns_names = vec![format!("z{i}.example"), "a.example".into()];
        }
        if i % 3 == 1 {
            e.federates_with = vec![td("b.org"), td("a.org")];
        }
        e.admin = i == 4;
        e.downstream = i == 5;
        e.hint = format!("h{i}");
        e.x509_svid_ttl = 60 * i as i32;
        e.jwt_svid_ttl = 7;
        e.expires_at = START + i as i64;
        e.store_svid = i == 6;
        e.jwt_svid_include_jti = i == 7;
        e.disable_x509_svid_prefetch = i == 8;
        ds.create_entry(&e).await.unwrap();
    }
    // Revisions differ from 0 and survive the bulk read.
    let mut e = ds.get_entry("entry-x1").await.unwrap().unwrap();
    e.hint = "changed".into();
    ds.update_entry(
        &e,
        &spire_datastore::EntryMask {
            hint: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let paged = paged_entries(db).await;
    assert_eq!(paged.len(), 11);
    assert!(paged.iter().any(|e| !e.federates_with.is_empty()));
    assert!(paged.iter().any(|e| e.dns_names.len() == 2));
    assert!(paged.iter().any(|e| e.selectors.len() == 3));
    assert!(paged.iter().any(|e| e.revision_number == 1));
    for page in [1, 2, 3, 10, 11, BULK_PAGE] {
        let mut got = Vec::new();
        let n = ds.for_each_entry(page, |e| got.push(e)).await.unwrap();
        assert_eq!(n, 11, "page size {page}");
        assert_eq!(got, paged, "page size {page} on {}", db.kind);
    }
    assert_eq!(ds.list_all_entries().await.unwrap(), paged);
}

fn node(path: &str, selectors: &[&str]) -> AttestedNode {
    AttestedNode {
        spiffe_id: id(&format!("spiffe://example.org/spire/agent/{path}")),
        attestation_type: "join_token".into(),
        cert_serial_number: format!("serial-{path}"),
        cert_not_after: START + 60,
        new_cert_serial_number: if path.len().is_multiple_of(2) {
            format!("new-{path}")
        } else {
            String::new()
        },
        new_cert_not_after: START + path.len() as i64,
        can_reattest: path.len() % 2 == 1,
        agent_version: format!("1.{}", path.len()),
        selectors: sels(selectors),
    }
}

async fn bulk_nodes_match_paged_listing(db: &TestDb) {
    let ds = &db.ds;
    assert_eq!(ds.for_each_node(2, |_| {}).await.unwrap(), 0);
    for (i, path) in ["a", "ab", "b", "ba", "bb", "c", "cc", "d"]
        .iter()
        .enumerate()
    {
        let s = ["jt:x", "pool:p1", "region:r"];
        ds.create_attested_node(&node(path, &s[..i % 4]))
            .await
            .unwrap();
    }
    // Selectors stored for agents without a node row (between and after real ones) are
    // not nodes.
    for orphan in ["aa", "zz"] {
        ds.set_node_selectors(
            &id(&format!("spiffe://example.org/spire/agent/{orphan}")),
            &sels(&["jt:orphan"]),
        )
        .await
        .unwrap();
    }
    let mut paged = Vec::new();
    let mut page = Pagination::first(3);
    loop {
        let p = ds
            .list_attested_nodes(&NodeFilter::default(), &page)
            .await
            .unwrap();
        paged.extend(p.items);
        if p.next_page_token.is_empty() {
            break;
        }
        page.token = p.next_page_token;
    }
    assert_eq!(paged.len(), 8);
    assert!(paged.iter().any(|n| n.selectors.len() == 3));
    for page in [1, 2, 7, 8, BULK_PAGE] {
        let mut got = Vec::new();
        let n = ds.for_each_node(page, |n| got.push(n)).await.unwrap();
        assert_eq!(n, 8, "page size {page}");
        assert_eq!(got, paged, "page size {page} on {}", db.kind);
    }
    assert_eq!(ds.list_all_nodes_with_selectors().await.unwrap(), paged);
}
