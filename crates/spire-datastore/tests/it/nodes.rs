use spire_datastore::{
    AttestedNode, Error, JoinTokenStatus, MatchMode, NodeFilter, NodeUpdate, Pagination,
    SelectorFilter,
};
use spire_spiffe::Selectors;

use crate::harness::{START, TestDb, id, sels};

crate::backend_tests!(
    node_crud_and_ban,
    node_filters_and_paging,
    join_tokens,
    attestation_transaction
);

fn node(path: &str, kind: &str, not_after: i64, selectors: &[&str]) -> AttestedNode {
    AttestedNode {
        spiffe_id: id(&format!("spiffe://example.org/spire/agent/{path}")),
        attestation_type: kind.into(),
        cert_serial_number: format!("serial-{path}"),
        cert_not_after: not_after,
        new_cert_serial_number: String::new(),
        new_cert_not_after: 0,
        can_reattest: false,
        agent_version: "1.0.0".into(),
        selectors: sels(selectors),
    }
}

async fn node_crud_and_ban(db: &TestDb) {
    let ds = &db.ds;
    let n = node("a", "join_token", START + 3600, &["jt:x", "pool:p1"]);
    let created = ds.create_attested_node(&n).await.unwrap();
    assert_eq!(created, n);
    assert!(matches!(
        ds.create_attested_node(&n).await,
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(
        ds.get_attested_node(&n.spiffe_id).await.unwrap().unwrap(),
        n
    );

    let updated = ds
        .update_attested_node(
            &n.spiffe_id,
            &NodeUpdate {
                new_cert_serial_number: Some("s2".into()),
                new_cert_not_after: Some(START + 7200),
                agent_version: Some("1.1.0".into()),
                ..NodeUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.cert_serial_number, n.cert_serial_number);
    assert_eq!(updated.new_cert_serial_number, "s2");
    assert_eq!(updated.new_cert_not_after, START + 7200);
    assert_eq!(updated.agent_version, "1.1.0");
    assert_eq!(
        ds.get_attested_node(&n.spiffe_id).await.unwrap().unwrap(),
        updated
    );

    ds.set_node_selectors(&n.spiffe_id, &sels(&["pool:p2"]))
        .await
        .unwrap();
    assert_eq!(
        ds.node_selectors(&n.spiffe_id).await.unwrap(),
        sels(&["pool:p2"])
    );

    let banned = ds.ban_attested_node(&n.spiffe_id).await.unwrap();
    assert!(banned.is_banned());
    assert!(
        ds.get_attested_node(&n.spiffe_id)
            .await
            .unwrap()
            .unwrap()
            .is_banned()
    );

    let deleted = ds.delete_attested_node(&n.spiffe_id).await.unwrap();
    assert!(deleted.is_banned());
    assert!(ds.get_attested_node(&n.spiffe_id).await.unwrap().is_none());
    assert!(ds.node_selectors(&n.spiffe_id).await.unwrap().is_empty());
    assert!(matches!(
        ds.delete_attested_node(&n.spiffe_id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        ds.update_attested_node(&n.spiffe_id, &NodeUpdate::default())
            .await,
        Err(Error::NotFound { .. })
    ));
}

async fn node_filters_and_paging(db: &TestDb) {
    let ds = &db.ds;
    let mut a = node("a", "join_token", START + 100, &["s:1"]);
    a.can_reattest = false;
    let mut b = node("b", "x509pop", START + 200, &["s:1", "s:2"]);
    b.can_reattest = true;
    let c = node("c", "x509pop", START + 300, &["s:3"]);
    for n in [&a, &b, &c] {
        ds.create_attested_node(n).await.unwrap();
    }
    ds.ban_attested_node(&c.spiffe_id).await.unwrap();
    let list = |f: NodeFilter| async move {
        let p = ds
            .list_attested_nodes(&f, &Pagination::default())
            .await
            .unwrap();
        assert_eq!(
            ds.count_attested_nodes(&f).await.unwrap() as usize,
            p.items.len()
        );
        p.items
            .into_iter()
            .map(|n| n.spiffe_id.path().rsplit('/').next().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(list(NodeFilter::default()).await, ["a", "b", "c"]);
    assert_eq!(
        list(NodeFilter {
            by_attestation_type: Some("x509pop".into()),
            ..NodeFilter::default()
        })
        .await,
        ["b", "c"]
    );
    assert_eq!(
        list(NodeFilter {
            by_banned: Some(true),
            ..NodeFilter::default()
        })
        .await,
        ["c"]
    );
    assert_eq!(
        list(NodeFilter {
            by_banned: Some(false),
            ..NodeFilter::default()
        })
        .await,
        ["a", "b"]
    );
    assert_eq!(
        list(NodeFilter {
            by_can_reattest: Some(true),
            ..NodeFilter::default()
        })
        .await,
        ["b"]
    );
    assert_eq!(
        list(NodeFilter {
            by_expires_before: Some(START + 250),
            ..NodeFilter::default()
        })
        .await,
        ["a", "b"]
    );
    let by_sel = |s: &[&str], mode| NodeFilter {
        by_selectors: Some(SelectorFilter {
            selectors: sels(s),
            mode,
        }),
        ..NodeFilter::default()
    };
    assert_eq!(list(by_sel(&["s:1"], MatchMode::Exact)).await, ["a"]);
    assert_eq!(
        list(by_sel(&["s:1"], MatchMode::Superset)).await,
        ["a", "b"]
    );
    assert_eq!(
        list(by_sel(&["s:1", "s:2", "s:3"], MatchMode::Subset)).await,
        ["a", "b", "c"]
    );
    assert_eq!(
        list(by_sel(&["s:2", "s:3"], MatchMode::Any)).await,
        ["b", "c"]
    );

    let p1 = ds
        .list_attested_nodes(&NodeFilter::default(), &Pagination::first(2))
        .await
        .unwrap();
    assert_eq!(p1.items.len(), 2);
    assert!(!p1.next_page_token.is_empty());
    let p2 = ds
        .list_attested_nodes(
            &NodeFilter::default(),
            &Pagination {
                token: p1.next_page_token.clone(),
                page_size: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(p2.items.len(), 1);
    assert!(p2.next_page_token.is_empty());
    assert_eq!(p2.items[0].spiffe_id, c.spiffe_id);

    let all = ds.list_all_nodes_with_selectors().await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[1].selectors, sels(&["s:1", "s:2"]));
}

async fn join_tokens(db: &TestDb) {
    let ds = &db.ds;
    ds.create_join_token("tok-1", START + 60).await.unwrap();
    ds.create_join_token("tok-2", START - 1).await.unwrap();
    assert!(matches!(
        ds.create_join_token("tok-1", START + 60).await,
        Err(Error::AlreadyExists { .. })
    ));
    assert!(ds.join_token_exists("tok-1", START).await.unwrap());
    assert!(!ds.join_token_exists("tok-2", START).await.unwrap());
    assert_eq!(
        ds.consume_join_token("tok-1", START).await.unwrap(),
        JoinTokenStatus::Valid {
            expires_at: START + 60
        }
    );
    // Single use.
    assert_eq!(
        ds.consume_join_token("tok-1", START).await.unwrap(),
        JoinTokenStatus::NotFound
    );
    assert_eq!(
        ds.consume_join_token("tok-2", START).await.unwrap(),
        JoinTokenStatus::Expired {
            expires_at: START - 1
        }
    );
    assert_eq!(
        ds.consume_join_token("never", START).await.unwrap(),
        JoinTokenStatus::NotFound
    );
    ds.create_join_token("tok-3", START - 5).await.unwrap();
    ds.create_join_token("tok-4", START + 5).await.unwrap();
    assert_eq!(ds.prune_join_tokens(START).await.unwrap(), 1);
    assert!(ds.join_token_exists("tok-4", START).await.unwrap());

    // Concurrent consumers: exactly one wins.
    ds.create_join_token("race", START + 60).await.unwrap();
    let (r1, r2) = tokio::join!(
        ds.consume_join_token("race", START),
        ds.consume_join_token("race", START)
    );
    let valid = [r1.unwrap(), r2.unwrap()]
        .iter()
        .filter(|s| matches!(s, JoinTokenStatus::Valid { .. }))
        .count();
    assert_eq!(valid, 1);
}

async fn attestation_transaction(db: &TestDb) {
    let ds = &db.ds;
    ds.create_join_token("att", START + 60).await.unwrap();
    let n = node("jt", "join_token", START + 3600, &["jt:att"]);

    // A failed attestation rolls back: the token is not burnt and no node exists.
    let mut tx = ds.begin().await.unwrap();
    assert!(matches!(
        tx.consume_join_token("att", START).await.unwrap(),
        JoinTokenStatus::Valid { .. }
    ));
    tx.create_attested_node(&n).await.unwrap();
    tx.rollback().await.unwrap();
    assert!(ds.join_token_exists("att", START).await.unwrap());
    assert!(ds.get_attested_node(&n.spiffe_id).await.unwrap().is_none());

    let mut tx = ds.begin().await.unwrap();
    assert!(matches!(
        tx.consume_join_token("att", START).await.unwrap(),
        JoinTokenStatus::Valid { .. }
    ));
    tx.create_attested_node(&n).await.unwrap();
    tx.set_node_selectors(
        &n.spiffe_id,
        &Selectors::from(vec!["jt:att".parse().unwrap()]),
    )
    .await
    .unwrap();
    assert!(tx.get_attested_node(&n.spiffe_id).await.unwrap().is_some());
    // Entries can be written in the same transaction.
    let alias = tx
        .create_entry(&crate::harness::entry(
            "/alias",
            "/spire/server",
            &["jt:att"],
        ))
        .await
        .unwrap();
    assert_eq!(tx.get_entry(&alias.id).await.unwrap().unwrap(), alias);
    tx.commit().await.unwrap();
    assert_eq!(ds.get_entry(&alias.id).await.unwrap().unwrap(), alias);
    let mut tx = ds.begin().await.unwrap();
    tx.delete_entry(&alias.id).await.unwrap();
    tx.rollback().await.unwrap();
    assert!(ds.get_entry(&alias.id).await.unwrap().is_some());
    ds.ping().await.unwrap();
    assert!(!ds.join_token_exists("att", START).await.unwrap());
    assert_eq!(
        ds.get_attested_node(&n.spiffe_id).await.unwrap().unwrap(),
        n
    );
}
