//! Per-test databases and the macro that runs one test body on every backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use spire_datastore::{DataStore, DataStoreConfig, Entry};
use spire_spiffe::{FakeClock, Selector, Selectors, SpiffeId, TrustDomain};
use sqlx::Connection;

pub const START: i64 = 1_700_000_000;

pub struct TestDb {
    pub ds: DataStore,
    pub config: DataStoreConfig,
    pub clock: FakeClock,
    pub kind: &'static str,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
    mysql: Option<(String, String)>,
}

impl TestDb {
    /// A second store on the same database (as a second server process would open it).
    pub async fn reopen(&self) -> DataStore {
        DataStore::open(&self.config, Arc::new(self.clock.clone()))
            .await
            .unwrap()
    }

    pub async fn cleanup(self) {
        self.ds.close().await;
        if let Some((admin, name)) = self.pg
            && let Ok(mut c) = sqlx::PgConnection::connect(&admin).await
        {
            {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut c)
                .await;
            }
        }
        if let Some((admin, name)) = self.mysql
            && let Ok(mut c) = sqlx::MySqlConnection::connect(&admin).await
        {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name}"
            )))
            .execute(&mut c)
            .await;
        }
    }
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::at_unix(START);
    let path = dir.path().join("datastore.sqlite3");
    let config = DataStoreConfig::new("sqlite3", path.to_str().unwrap());
    let ds = DataStore::open(&config, Arc::new(clock.clone()))
        .await
        .unwrap();
    TestDb {
        ds,
        config,
        clock,
        kind: "sqlite",
        _dir: Some(dir),
        pg: None,
        mysql: None,
    }
}

/// A fresh PostgreSQL database, or `None` (skip) when no server is configured outside CI.
pub async fn postgres() -> Option<TestDb> {
    let admin = match std::env::var("SPIRE_TEST_POSTGRES_URL") {
        Ok(v) if !v.is_empty() => v,
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "SPIRE_TEST_POSTGRES_URL is not set: under CI=true the PostgreSQL datastore tests must run"
                );
            }
            eprintln!("SPIRE_TEST_POSTGRES_URL not set: PostgreSQL variant not run");
            return None;
        }
    };
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "spire_ds_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        uuid::Uuid::new_v4().simple()
    );
    let mut c = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to SPIRE_TEST_POSTGRES_URL: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&format!("/{name}"));
    let clock = FakeClock::at_unix(START);
    let config = DataStoreConfig::new("postgres", url.as_str());
    let ds = DataStore::open(&config, Arc::new(clock.clone()))
        .await
        .unwrap();
    Some(TestDb {
        ds,
        config,
        clock,
        kind: "postgres",
        _dir: None,
        pg: Some((admin, name)),
        mysql: None,
    })
}

/// A fresh MySQL/MariaDB database, or `None` (skip) when no server is configured outside CI.
pub async fn mysql() -> Option<TestDb> {
    let admin = match std::env::var("SPIRE_TEST_MYSQL_URL") {
        Ok(v) if !v.is_empty() => v,
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "SPIRE_TEST_MYSQL_URL is not set: under CI=true the MySQL datastore tests must run"
                );
            }
            eprintln!("SPIRE_TEST_MYSQL_URL not set: MySQL variant not run");
            return None;
        }
    };
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "spire_ds_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        uuid::Uuid::new_v4().simple()
    );
    let mut c = sqlx::MySqlConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to SPIRE_TEST_MYSQL_URL: {e}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&format!("/{name}"));
    let clock = FakeClock::at_unix(START);
    let config = DataStoreConfig::new("mysql", url.as_str());
    let ds = DataStore::open(&config, Arc::new(clock.clone()))
        .await
        .unwrap();
    Some(TestDb {
        ds,
        config,
        clock,
        kind: "mysql",
        _dir: None,
        pg: None,
        mysql: Some((admin, name)),
    })
}

/// Generates `sqlite::NAME`, `postgres::NAME` and `mysql::NAME` tests for each `async fn NAME(&TestDb)` of the
/// calling module.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = $crate::harness::sqlite().await;
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(db) = $crate::harness::postgres().await {
                        super::$name(&db).await;
                        db.cleanup().await;
                    }
                }
            )*
        }
        mod mysql {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(db) = $crate::harness::mysql().await {
                        super::$name(&db).await;
                        db.cleanup().await;
                    }
                }
            )*
        }
    };
}

pub fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

pub fn td(s: &str) -> TrustDomain {
    s.parse().unwrap()
}

pub fn sels(list: &[&str]) -> Selectors {
    list.iter()
        .map(|s| s.parse::<Selector>().unwrap())
        .collect()
}

pub fn entry(spiffe: &str, parent: &str, selectors: &[&str]) -> Entry {
    Entry::new(
        id(&format!("spiffe://example.org{spiffe}")),
        id(&format!("spiffe://example.org{parent}")),
        sels(selectors),
    )
}
