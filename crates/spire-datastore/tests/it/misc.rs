use std::sync::Arc;

use spire_datastore::{
    Backend, BundleEndpointProfile, DataStore, DataStoreConfig, Error, FederationRelationship,
    FederationRelationshipMask, Pagination,
};
use spire_spiffe::FakeClock;
use sqlx::Connection;

use crate::harness::{TestDb, entry, id, td};

crate::backend_tests!(ca_journal, federation_relationships);

async fn ca_journal(db: &TestDb) {
    let ds = &db.ds;
    assert!(ds.ca_journal("server-a").await.unwrap().is_none());
    ds.set_ca_journal("server-a", b"one").await.unwrap();
    ds.set_ca_journal("server-b", b"\x00\xffbinary")
        .await
        .unwrap();
    ds.set_ca_journal("server-a", b"two").await.unwrap();
    assert_eq!(ds.ca_journal("server-a").await.unwrap().unwrap(), b"two");
    assert_eq!(
        ds.ca_journal("server-b").await.unwrap().unwrap(),
        b"\x00\xffbinary"
    );
}

async fn federation_relationships(db: &TestDb) {
    let ds = &db.ds;
    let rel = FederationRelationship {
        trust_domain: td("a.org"),
        bundle_endpoint_url: "https://a.org:8443".into(),
        profile: BundleEndpointProfile::HttpsSpiffe {
            endpoint_spiffe_id: id("spiffe://a.org/spire/server"),
        },
        trust_domain_bundle: None,
    };
    let created = ds.create_federation_relationship(&rel).await.unwrap();
    assert_eq!(created, rel);
    assert!(matches!(
        ds.create_federation_relationship(&rel).await,
        Err(Error::AlreadyExists { .. })
    ));
    let mut web = rel.clone();
    web.trust_domain = td("b.org");
    web.profile = BundleEndpointProfile::HttpsWeb;
    ds.create_federation_relationship(&web).await.unwrap();
    assert_eq!(
        ds.get_federation_relationship(&td("b.org"))
            .await
            .unwrap()
            .unwrap(),
        web
    );
    let mut changed = rel.clone();
    changed.bundle_endpoint_url = "https://a.org:9443".into();
    changed.profile = BundleEndpointProfile::HttpsWeb;
    let mask = FederationRelationshipMask {
        bundle_endpoint_url: true,
        ..FederationRelationshipMask::default()
    };
    let updated = ds
        .update_federation_relationship(&changed, &mask)
        .await
        .unwrap();
    assert_eq!(updated.bundle_endpoint_url, "https://a.org:9443");
    assert_eq!(updated.profile, rel.profile, "profile not in the mask");
    let page = ds
        .list_federation_relationships(&Pagination::first(1))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].trust_domain, td("a.org"));
    let page2 = ds
        .list_federation_relationships(&Pagination {
            token: page.next_page_token,
            page_size: 1,
        })
        .await
        .unwrap();
    assert_eq!(page2.items[0].trust_domain, td("b.org"));
    ds.delete_federation_relationship(&td("a.org"))
        .await
        .unwrap();
    assert!(
        ds.get_federation_relationship(&td("a.org"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        ds.delete_federation_relationship(&td("a.org")).await,
        Err(Error::NotFound { .. })
    ));
    let missing = FederationRelationship {
        trust_domain: td("zzz.org"),
        ..rel
    };
    assert!(matches!(
        ds.update_federation_relationship(&missing, &FederationRelationshipMask::all())
            .await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn unsupported_database_type_is_rejected() {
    let err = DataStore::open(
        &DataStoreConfig::new("oracle", "root@/spire"),
        Arc::new(FakeClock::default()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Config(ref m) if m.contains("mysql") && m.contains("sqlite3")));
    let err = DataStore::open(
        &DataStoreConfig::new("mysql", "root@tcp(127.0.0.1:notaport)/spire"),
        Arc::new(FakeClock::default()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Config(ref m) if m.contains("port")));
}

#[tokio::test]
async fn sqlite_file_survives_reopen_and_in_memory_works() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ds.sqlite3");
    let clock = Arc::new(FakeClock::default());
    let ds = DataStore::open_sqlite_file(&path, clock.clone())
        .await
        .unwrap();
    assert_eq!(ds.backend(), Backend::Sqlite);
    let e = ds.create_entry(&entry("/w", "/a", &["t:1"])).await.unwrap();
    ds.set_ca_journal("s", b"j").await.unwrap();
    ds.close().await;
    drop(ds);
    // Re-open: migrations are idempotent, data is there, WAL is on.
    let ds = DataStore::open_sqlite_file(&path, clock.clone())
        .await
        .unwrap();
    assert_eq!(ds.get_entry(&e.id).await.unwrap().unwrap(), e);
    assert_eq!(ds.ca_journal("s").await.unwrap().unwrap(), b"j");
    ds.close().await;
    // WAL is a persistent property of the file: a plain connection sees it.
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(mode, "wal");

    let mem = DataStore::open_in_memory(clock).await.unwrap();
    let e = mem
        .create_entry(&entry("/w", "/a", &["t:1"]))
        .await
        .unwrap();
    assert_eq!(mem.get_entry(&e.id).await.unwrap().unwrap(), e);
}

#[tokio::test]
async fn unreachable_postgres_is_reported_without_password() {
    let err = DataStore::open(
        &DataStoreConfig::new(
            "postgres",
            "host=127.0.0.1 port=1 user=spire password=hunter2 dbname=spire connect_timeout=2",
        ),
        Arc::new(FakeClock::default()),
    )
    .await
    .unwrap_err();
    let msg = format!("{err} {err:?}");
    assert!(msg.contains("127.0.0.1:1/spire"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[tokio::test]
async fn bad_sqlite_path_names_the_problem() {
    let err = DataStore::open(
        &DataStoreConfig::new("sqlite3", "/nonexistent-dir/sub/ds.sqlite3"),
        Arc::new(FakeClock::default()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::Open { database_type: "sqlite3", ref target, .. } if target == "/nonexistent-dir/sub/ds.sqlite3"),
        "{err:?}"
    );
    assert!(err.to_string().contains("/nonexistent-dir/sub/ds.sqlite3"));
}

/// Servers starting at once on an empty shared database: every store opens (the schema
/// migrations run one after the other) and they all see one schema.
async fn concurrent_open_of_an_empty_database(kind: &str) {
    let Some((config, admin, name)) = crate::harness::empty_database(kind).await else {
        return;
    };
    let clock = Arc::new(FakeClock::default());
    let opens = (0..3).map(|_| DataStore::open(&config, clock.clone()));
    let stores: Vec<DataStore> = futures::future::join_all(opens)
        .await
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{kind}: concurrent open failed: {e:?}")))
        .collect();
    stores[0].create_join_token("t", 10).await.unwrap();
    assert!(stores[2].join_token_exists("t", 0).await.unwrap());
    for s in &stores {
        s.close().await;
    }
    crate::harness::drop_database(kind, &admin, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn concurrent_open_of_an_empty_postgres_database() {
    concurrent_open_of_an_empty_database("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn concurrent_open_of_an_empty_mysql_database() {
    concurrent_open_of_an_empty_database("mysql").await;
}
