use std::time::Duration;

use spire_datastore::{
    AttestedNode, BundleDeleteMode, BundleEndpointProfile, Change, ChangeFollower, ChangeKind,
    ChangeOp, EntryMask, FederationRelationship, FederationRelationshipMask, NodeUpdate,
};
use spire_spiffe::Clock;

use crate::harness::{START, TestDb, entry, id, sels, td};

crate::backend_tests!(
    change_log_per_op,
    change_follower_reads_the_log,
    two_stores_share_one_database
);

fn summary(changes: &[Change]) -> Vec<(ChangeKind, String, ChangeOp)> {
    changes
        .iter()
        .map(|c| (c.kind, c.object_id.clone(), c.op))
        .collect()
}

async fn change_log_per_op(db: &TestDb) {
    let ds = &db.ds;
    assert_eq!(ds.latest_change_id().await.unwrap(), 0);
    let e = ds.create_entry(&entry("/w", "/a", &["t:1"])).await.unwrap();
    ds.update_entry(&e, &EntryMask::all()).await.unwrap();
    ds.delete_entry(&e.id).await.unwrap();

    let agent = id("spiffe://example.org/spire/agent/x");
    let node = AttestedNode {
        spiffe_id: agent.clone(),
        attestation_type: "join_token".into(),
        cert_serial_number: "1".into(),
        cert_not_after: START + 10,
        new_cert_serial_number: String::new(),
        new_cert_not_after: 0,
        can_reattest: false,
        agent_version: String::new(),
        selectors: sels(&["n:1"]),
    };
    ds.create_attested_node(&node).await.unwrap();
    ds.update_attested_node(&agent, &NodeUpdate::default())
        .await
        .unwrap();
    ds.set_node_selectors(&agent, &sels(&["n:2"]))
        .await
        .unwrap();
    ds.delete_attested_node(&agent).await.unwrap();

    ds.create_bundle(&spire_datastore::Bundle::new(td("fed.org")))
        .await
        .unwrap();
    let rel = FederationRelationship {
        trust_domain: td("fed.org"),
        bundle_endpoint_url: "https://fed.org/bundle".into(),
        profile: BundleEndpointProfile::HttpsWeb,
        trust_domain_bundle: None,
    };
    ds.create_federation_relationship(&rel).await.unwrap();
    ds.delete_federation_relationship(&td("fed.org"))
        .await
        .unwrap();
    ds.delete_bundle(&td("fed.org"), BundleDeleteMode::Restrict)
        .await
        .unwrap();

    let all = ds.changes_since(0, 1000).await.unwrap();
    let ids: Vec<i64> = all.iter().map(|c| c.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "change ids are increasing");
    assert!(all.iter().all(|c| c.created_at == START));
    let a = agent.as_str().to_owned();
    use ChangeKind::*;
    use ChangeOp::*;
    assert_eq!(
        summary(&all),
        vec![
            (Entry, e.id.clone(), Create),
            (Entry, e.id.clone(), Update),
            (Entry, e.id.clone(), Delete),
            (Node, a.clone(), Create),
            (Node, a.clone(), Update),
            (Node, a.clone(), Update),
            (Node, a.clone(), Delete),
            (Bundle, "fed.org".into(), Create),
            (Federation, "fed.org".into(), Create),
            (Federation, "fed.org".into(), Delete),
            (Bundle, "fed.org".into(), Delete),
        ]
    );
    assert_eq!(ds.latest_change_id().await.unwrap(), *ids.last().unwrap());
    // Limit and cursor.
    let first_two = ds.changes_since(0, 2).await.unwrap();
    assert_eq!(first_two, all[..2]);
    let rest = ds.changes_since(all[1].id, 1000).await.unwrap();
    assert_eq!(rest, all[2..]);

    // Federation update logs too, and its bundle is written in the same transaction.
    let mut rel2 = rel.clone();
    rel2.trust_domain_bundle = Some(spire_datastore::Bundle::new(td("fed.org")));
    let created = ds.create_federation_relationship(&rel2).await.unwrap();
    assert!(created.trust_domain_bundle.is_some());
    rel2.profile = BundleEndpointProfile::HttpsSpiffe {
        endpoint_spiffe_id: id("spiffe://fed.org/spire/server"),
    };
    let updated = ds
        .update_federation_relationship(&rel2, &FederationRelationshipMask::all())
        .await
        .unwrap();
    assert_eq!(updated.profile, rel2.profile);
    let tail = ds.changes_since(*ids.last().unwrap(), 1000).await.unwrap();
    assert_eq!(
        summary(&tail),
        vec![
            (Bundle, "fed.org".into(), Create),
            (Federation, "fed.org".into(), Create),
            (Bundle, "fed.org".into(), Update),
            (Federation, "fed.org".into(), Update),
        ]
    );

    // Pruning old rows.
    db.clock.advance(Duration::from_secs(100));
    ds.create_entry(&entry("/later", "/a", &["t:1"]))
        .await
        .unwrap();
    let pruned = ds.prune_changes(START + 50).await.unwrap();
    assert_eq!(pruned as usize, all.len() + tail.len());
    assert_eq!(ds.changes_since(0, 100).await.unwrap().len(), 1);
}

async fn change_follower_reads_the_log(db: &TestDb) {
    let ds = &db.ds;
    let start = ds.latest_change_id().await.unwrap();
    let mut f = ChangeFollower::new(start, Duration::from_secs(60));
    assert!(f.poll(ds, db.clock.now(), 100).await.unwrap().is_empty());
    let e1 = ds.create_entry(&entry("/a", "/p", &["t:1"])).await.unwrap();
    let e2 = ds.create_entry(&entry("/b", "/p", &["t:1"])).await.unwrap();
    let got = f.poll(ds, db.clock.now(), 1).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].object_id, e1.id);
    let got = f.poll(ds, db.clock.now(), 100).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].object_id, e2.id);
    assert!(f.pending_gaps().is_empty());
    assert_eq!(f.cursor(), ds.latest_change_id().await.unwrap());
}

/// PostgreSQL only: two transactions commit change ids out of order; the follower reports the
/// later id first, remembers the gap and reports the earlier id once it commits. (SQLite has a
/// single writer, so ids commit in order there.)
#[tokio::test]
async fn postgres_follower_handles_out_of_order_commits() {
    let Some(db) = crate::harness::postgres().await else {
        return;
    };
    let ds = &db.ds;
    let start = ds.latest_change_id().await.unwrap();
    let mut f = ChangeFollower::new(start, Duration::from_secs(60));

    let slow_id = id("spiffe://example.org/spire/agent/slow");
    let mut slow = ds.begin().await.unwrap();
    slow.set_node_selectors(&slow_id, &sels(&["n:slow"]))
        .await
        .unwrap();
    // The slow transaction holds id start+1; this one takes start+2 and commits first.
    let fast = ds
        .create_entry(&entry("/fast", "/a", &["t:1"]))
        .await
        .unwrap();

    let got = f.poll(ds, db.clock.now(), 100).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].object_id, fast.id);
    assert_eq!(f.pending_gaps(), vec![start + 1]);

    slow.commit().await.unwrap();
    let got = f.poll(ds, db.clock.now(), 100).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, start + 1);
    assert_eq!(got[0].object_id, slow_id.as_str());
    assert!(f.pending_gaps().is_empty());

    // A rolled-back transaction leaves a hole that times out.
    let mut rolled = ds.begin().await.unwrap();
    rolled
        .set_node_selectors(&slow_id, &sels(&["n:x"]))
        .await
        .unwrap();
    rolled.rollback().await.unwrap();
    ds.create_entry(&entry("/after", "/a", &["t:1"]))
        .await
        .unwrap();
    let got = f.poll(ds, db.clock.now(), 100).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(f.pending_gaps().len(), 1);
    db.clock.advance(Duration::from_secs(61));
    assert!(f.poll(ds, db.clock.now(), 100).await.unwrap().is_empty());
    assert!(f.pending_gaps().is_empty());
    assert_eq!(f.take_expired().len(), 1);
    db.cleanup().await;
}

/// Two stores on one database, as two servers of one trust domain: a write through one is in
/// the other's change log (and, on PostgreSQL, wakes its change notifications), and a join
/// token raced through both is consumed by exactly one attestation transaction.
async fn two_stores_share_one_database(db: &TestDb) {
    let a = &db.ds;
    let b = db.reopen().await;
    let mut wake = a.change_notifications();
    assert_eq!(wake.is_live(), db.kind == "postgres", "{}", db.kind);
    let start = a.latest_change_id().await.unwrap();
    if wake.is_live() {
        // The listener's first wake-up (LISTEN established) may come before or after the write.
        tokio::time::timeout(Duration::from_secs(30), wake.changed())
            .await
            .expect("the LISTEN connection is established");
    }
    let e = b
        .create_entry(&entry("/from-b", "/a", &["t:1"]))
        .await
        .unwrap();
    if wake.is_live() {
        tokio::time::timeout(Duration::from_secs(30), wake.changed())
            .await
            .expect("a commit through the other store wakes the listener");
    }
    let mut follower = ChangeFollower::new(start, Duration::from_secs(60));
    let got = follower.poll(a, db.clock.now(), 100).await.unwrap();
    assert_eq!(
        summary(&got),
        vec![(ChangeKind::Entry, e.id.clone(), ChangeOp::Create)],
        "{}",
        db.kind
    );
    assert_eq!(a.get_entry(&e.id).await.unwrap().unwrap(), e);

    // Join-token race across the two stores: each racer consumes the token and creates its
    // node in one transaction; exactly one commits a valid consumption.
    a.create_join_token("shared-race", START + 60)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let ds = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut tx = ds.begin().await.unwrap();
            let status = tx.consume_join_token("shared-race", START).await.unwrap();
            if !matches!(status, spire_datastore::JoinTokenStatus::Valid { .. }) {
                tx.rollback().await.unwrap();
                return false;
            }
            let node = AttestedNode {
                spiffe_id: id(&format!("spiffe://example.org/spire/agent/join_token/r{i}")),
                attestation_type: "join_token".into(),
                cert_serial_number: "1".into(),
                cert_not_after: START + 10,
                new_cert_serial_number: String::new(),
                new_cert_not_after: 0,
                can_reattest: false,
                agent_version: String::new(),
                selectors: sels(&[]),
            };
            tx.create_attested_node(&node).await.unwrap();
            tx.commit().await.unwrap();
            true
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if t.await.unwrap() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "{}", db.kind);
    assert_eq!(
        a.count_attested_nodes(&Default::default()).await.unwrap(),
        1,
        "{}",
        db.kind
    );
    b.close().await;
}
