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
    let (config, admin, name) = empty_database("postgres").await?;
    let clock = FakeClock::at_unix(START);
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
    let (config, admin, name) = empty_database("mysql").await?;
    let clock = FakeClock::at_unix(START);
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

/// Drops a database made by [`empty_database`].
pub async fn drop_database(kind: &str, admin: &str, name: &str) {
    let sql = if kind == "postgres" {
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    } else {
        format!("DROP DATABASE IF EXISTS {name}")
    };
    if kind == "postgres" {
        if let Ok(mut c) = sqlx::PgConnection::connect(admin).await {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut c)
                .await;
        }
    } else if let Ok(mut c) = sqlx::MySqlConnection::connect(admin).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await;
    }
}

/// A new, empty (unmigrated) database on the `kind` ("postgres" or "mysql") test server: its
/// store config, the admin URL and the database name. `None` (skip) when the server's variable
/// is unset outside CI.
pub async fn empty_database(kind: &str) -> Option<(DataStoreConfig, String, String)> {
    let var = if kind == "postgres" {
        "SPIRE_TEST_POSTGRES_URL"
    } else {
        "SPIRE_TEST_MYSQL_URL"
    };
    let admin = match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{var} is not set: under CI=true the {kind} datastore tests must run");
            }
            eprintln!("{var} not set: {kind} variant not run");
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
    let create = sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"));
    if kind == "postgres" {
        let mut c = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {var}: {e}"));
        sqlx::raw_sql(create).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    } else {
        let mut c = sqlx::MySqlConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {var}: {e}"));
        sqlx::raw_sql(create).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    }
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&format!("/{name}"));
    Some((DataStoreConfig::new(kind, url.as_str()), admin, name))
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
