//! Opening the datastore: backends, pools, pragmas, migrations.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use spire_spiffe::Clock;
use sqlx::AnyConnection;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyPool, AssertSqlSafe, ConnectOptions, Connection, Executor, Transaction};

use crate::error::{Error, Result};
use crate::sql::Sql;
use crate::types::{ChangeKind, ChangeOp};

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");
static MYSQL_MIGRATOR: Migrator = sqlx::migrate!("./migrations/mysql");

/// The PostgreSQL channel a committing write notifies (see [`DataStore::change_notifications`]).
pub const CHANGE_LOG_CHANNEL: &str = "spire_change_log";

/// Which SQL database backs the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// Embedded SQLite (`database_type = "sqlite3"`).
    Sqlite,
    /// PostgreSQL (`database_type = "postgres"`).
    Postgres,
    /// MySQL or MariaDB (`database_type = "mysql"`).
    Mysql,
}

/// Settings of SPIRE's `DataStore "sql"` plugin that this crate uses.
#[derive(Clone, PartialEq, Eq)]
pub struct DataStoreConfig {
    /// `sqlite3`, `postgres` or `mysql`.
    pub database_type: String,
    /// SQLite: a file path (or `:memory:`). PostgreSQL: a `postgres://` URL or a libpq
    /// `key=value` connection string. MySQL: a Go driver DSN
    /// (`user:pass@tcp(host:port)/db?params`) or a `mysql://` URL.
    pub connection_string: String,
    /// A read-only replica for reads that tolerate staleness (SPIRE `ro_connection_string`;
    /// PostgreSQL and MySQL only). Used by the `count_*` operations; listing, the change log
    /// and everything inside a write read the primary (cold-start loads and paging must be
    /// consistent with the change-log position).
    pub ro_connection_string: Option<String>,
    /// Maximum open connections for PostgreSQL and MySQL (SQLite always uses one writer).
    pub max_open_conns: Option<u32>,
    /// Skip the schema migrations on open (SPIRE `disable_migration`).
    pub disable_migration: bool,
}

impl DataStoreConfig {
    /// A config for `database_type` and `connection_string` with defaults for the rest.
    pub fn new(database_type: impl Into<String>, connection_string: impl Into<String>) -> Self {
        DataStoreConfig {
            database_type: database_type.into(),
            connection_string: connection_string.into(),
            ro_connection_string: None,
            max_open_conns: None,
            disable_migration: false,
        }
    }
}

impl fmt::Debug for DataStoreConfig {
    // The connection string can carry a password: never print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataStoreConfig")
            .field("database_type", &self.database_type)
            .field("ro_connection_string", &self.ro_connection_string.is_some())
            .field("max_open_conns", &self.max_open_conns)
            .field("disable_migration", &self.disable_migration)
            .finish_non_exhaustive()
    }
}

/// The SQL datastore. Cheap to clone (shared pools).
#[derive(Clone)]
pub struct DataStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Pool for reads.
    pub(crate) reader: AnyPool,
    /// Pool for write transactions (a single connection on SQLite).
    pub(crate) writer: AnyPool,
    /// Pool for stale-tolerant reads (`ro_connection_string`), else the reader.
    pub(crate) replica: AnyPool,
    pub(crate) backend: Backend,
    pub(crate) clock: Arc<dyn Clock>,
    /// Change-log wake-ups (PostgreSQL LISTEN/NOTIFY).
    pub(crate) notifications: crate::notify::Notifications,
    /// Local node and bundle write marks (for caches that follow the change log).
    pub(crate) marks: Arc<crate::marks::WriteMarks>,
}

impl fmt::Debug for DataStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataStore")
            .field("backend", &self.inner.backend)
            .finish_non_exhaustive()
    }
}

impl DataStore {
    /// Opens (creating if needed) the database described by `config` and applies the schema
    /// migrations unless disabled.
    pub async fn open(config: &DataStoreConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        sqlx::any::install_default_drivers();
        match config.database_type.as_str() {
            "sqlite3" | "sqlite" => open_sqlite(config, clock).await,
            "postgres" | "postgresql" => open_postgres(config, clock).await,
            "mysql" | "mariadb" => open_mysql(config, clock).await,
            other => Err(Error::Config(format!(
                "unsupported database_type {other:?} (expected \"sqlite3\", \"postgres\" or \"mysql\")"
            ))),
        }
    }

    /// Opens an SQLite database file (created if missing).
    pub async fn open_sqlite_file(path: impl AsRef<Path>, clock: Arc<dyn Clock>) -> Result<Self> {
        let cs = path.as_ref().to_str().ok_or_else(|| {
            Error::Config(format!(
                "SQLite path {:?} is not valid UTF-8",
                path.as_ref().display()
            ))
        })?;
        Self::open(&DataStoreConfig::new("sqlite3", cs), clock).await
    }

    /// Opens a private in-memory SQLite database (for tests and fakes).
    pub async fn open_in_memory(clock: Arc<dyn Clock>) -> Result<Self> {
        Self::open(&DataStoreConfig::new("sqlite3", ":memory:"), clock).await
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Checks that the database answers (for health checks).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .fetch_one(&self.inner.reader)
            .await?;
        Ok(())
    }

    /// Closes every connection. Later calls fail.
    pub async fn close(&self) {
        self.inner.notifications.stop();
        self.inner.writer.close().await;
        self.inner.reader.close().await;
        self.inner.replica.close().await;
    }

    /// Starts a write transaction for operations that must commit together (e.g. consuming a
    /// join token and creating the attested node it attests).
    pub async fn begin(&self) -> Result<WriteTx> {
        Ok(WriteTx {
            tx: self.write_tx().await?,
            now: self.now(),
            backend: self.inner.backend,
            marks: Arc::clone(&self.inner.marks),
            touched: 0,
        })
    }

    pub(crate) fn now(&self) -> i64 {
        self.inner.clock.now_unix()
    }

    pub(crate) async fn write_tx(&self) -> Result<Transaction<'static, Any>> {
        if self.inner.backend == Backend::Sqlite {
            // Take the write lock up front: a deferred transaction that reads first and then
            // writes fails at once (instead of waiting) when another connection to the same
            // file holds the lock.
            return Ok(self.inner.writer.begin_with("BEGIN IMMEDIATE").await?);
        }
        Ok(self.inner.writer.begin().await?)
    }

    pub(crate) fn for_update(&self) -> &'static str {
        for_update(self.inner.backend)
    }
}

pub(crate) fn for_update(backend: Backend) -> &'static str {
    match backend {
        // SQLite has one writer connection: a write transaction is already exclusive.
        Backend::Sqlite => "",
        Backend::Postgres | Backend::Mysql => " FOR UPDATE",
    }
}

/// The backend a connection talks to.
pub(crate) fn backend_of(conn: &AnyConnection) -> Backend {
    match conn.backend_name() {
        "PostgreSQL" => Backend::Postgres,
        "MySQL" => Backend::Mysql,
        _ => Backend::Sqlite,
    }
}

/// Row lock taken on a bundle while an entry that federates with it is written, so a concurrent
/// bundle delete either sees the entry or makes the entry write fail.
pub(crate) fn for_share(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "",
        Backend::Postgres => " FOR SHARE",
        // MariaDB has no FOR SHARE; both MySQL and MariaDB accept this spelling.
        Backend::Mysql => " LOCK IN SHARE MODE",
    }
}

/// A write transaction. Dropping it without [`WriteTx::commit`] rolls everything back.
pub struct WriteTx {
    pub(crate) tx: Transaction<'static, Any>,
    pub(crate) now: i64,
    pub(crate) backend: Backend,
    pub(crate) marks: Arc<crate::marks::WriteMarks>,
    /// Kinds written so far ([`crate::marks`]), marked again after commit.
    pub(crate) touched: u8,
}

impl fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteTx").finish_non_exhaustive()
    }
}

impl WriteTx {
    /// Commits every write made through this transaction.
    pub async fn commit(self) -> Result<()> {
        let r = self.tx.commit().await;
        self.marks.mark(self.touched);
        Ok(r?)
    }

    /// Notes that this transaction writes `kinds` ([`crate::marks`]).
    pub(crate) fn touch(&mut self, kinds: u8) {
        self.touched |= kinds;
        self.marks.mark(kinds);
    }

    /// Rolls back every write made through this transaction.
    pub async fn rollback(self) -> Result<()> {
        Ok(self.tx.rollback().await?)
    }
}

/// Appends one row to the change log, on the connection of the caller's transaction.
pub(crate) async fn log_change(
    conn: &mut AnyConnection,
    kind: ChangeKind,
    object_id: &str,
    op: ChangeOp,
    now: i64,
) -> Result<()> {
    let bk = backend_of(conn);
    let mut sql = Sql::new("INSERT INTO change_log (kind, object_id, op, created_at) VALUES (");
    sql.bind(kind.as_str())
        .push(", ")
        .bind(object_id)
        .push(", ")
        .bind(op.as_str())
        .push(", ")
        .bind(now)
        .push(")");
    sql.query(bk).execute(&mut *conn).await?;
    if bk == Backend::Postgres {
        // Delivered to listeners when (and only if) the transaction commits; PostgreSQL folds
        // repeated identical notifications of one transaction into one.
        sqlx::query(AssertSqlSafe(format!(
            "SELECT pg_notify('{CHANGE_LOG_CHANNEL}', '')"
        )))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

// === opening ===

async fn open_sqlite(config: &DataStoreConfig, clock: Arc<dyn Clock>) -> Result<DataStore> {
    let cs = config.connection_string.trim();
    if cs.is_empty() {
        return Err(Error::Config(
            "connection_string is empty (expected the SQLite database file path)".into(),
        ));
    }
    let in_memory = cs == ":memory:" || cs.contains("mode=memory");
    let path = cs.strip_prefix("file:").unwrap_or(cs);
    let path = if in_memory {
        path
    } else {
        // `file:path?opts` URIs: keep the path, ignore Go-driver options.
        path.split('?').next().unwrap_or(path)
    };
    let url = if in_memory {
        "sqlite::memory:"
            .parse::<url::Url>()
            .map_err(|e| Error::Config(format!("cannot build the in-memory SQLite URL: {e}")))?
    } else {
        SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .to_url_lossy()
    };
    let url = url.to_string();
    let target = if in_memory { ":memory:" } else { path }.to_owned();
    let open_err = |source| Error::Open {
        database_type: "sqlite3",
        target: target.clone(),
        source,
    };
    if !in_memory {
        probe_sqlite(&target, &url).await?;
    }

    let writer = AnyPoolOptions::new()
        .max_connections(1)
        .min_connections(if in_memory { 1 } else { 0 })
        .idle_timeout(if in_memory {
            None
        } else {
            Some(Duration::from_secs(300))
        })
        .max_lifetime(None)
        .after_connect(|conn, _| sqlite_pragmas(conn))
        .connect(&url)
        .await
        .map_err(open_err)?;
    {
        let mut conn = writer.acquire().await.map_err(open_err)?;
        if !in_memory {
            // WAL lets readers run while a write commits; it is a persistent property of the file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .fetch_all(&mut *conn)
                .await
                .map_err(open_err)?;
        }
        if !config.disable_migration {
            SQLITE_MIGRATOR.run(&mut *conn).await?;
        }
    }
    let reader = if in_memory {
        writer.clone()
    } else {
        AnyPoolOptions::new()
            .max_connections(4)
            .idle_timeout(Some(Duration::from_secs(300)))
            .after_connect(|conn, _| sqlite_pragmas(conn))
            .connect(&url)
            .await
            .map_err(open_err)?
    };
    tracing::debug!(backend = "sqlite3", in_memory, "Datastore opened");
    Ok(DataStore {
        inner: Arc::new(Inner {
            replica: reader.clone(),
            reader,
            writer,
            backend: Backend::Sqlite,
            clock,
            notifications: crate::notify::Notifications::none(),
            marks: Arc::default(),
        }),
    })
}

/// Fails at once, naming the file and the reason, when an SQLite database cannot be opened
/// for writing (read-only or unwritable file or directory, missing directory, not a
/// database); the pool would retry such failures until its 30 s acquire timeout.
async fn probe_sqlite(path: &str, url: &str) -> Result<()> {
    let file = Path::new(path);
    let not_writable = |what: String, source| Error::NotWritable {
        path: path.to_owned(),
        what,
        source,
    };
    if file.is_file() {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(file)
            .map_err(|e| not_writable("the database file".into(), e))?;
    }
    // SQLite creates its journal files (`-wal`, `-shm`) next to the database.
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if dir.is_dir() {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let probe = dir.join(format!(".{name}.write-probe"));
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&probe)
            .map_err(|e| not_writable(format!("its directory {}", dir.display()), e))?;
        let _ = std::fs::remove_file(&probe);
    }
    let open_err = |source| Error::Open {
        database_type: "sqlite3",
        target: path.to_owned(),
        source,
    };
    let mut conn = AnyConnection::connect(url).await.map_err(open_err)?;
    sqlite_pragmas(&mut conn).await.map_err(open_err)?;
    conn.close().await.map_err(open_err)
}

fn sqlite_pragmas(conn: &mut AnyConnection) -> BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        // FULL: every commit is fsynced before it is acknowledged.
        conn.execute("PRAGMA synchronous = FULL").await?;
        conn.execute("PRAGMA foreign_keys = ON").await?;
        conn.execute("PRAGMA busy_timeout = 30000").await?;
        Ok(())
    })
}

async fn open_postgres(config: &DataStoreConfig, clock: Arc<dyn Clock>) -> Result<DataStore> {
    let url = postgres_url(&config.connection_string)?;
    let open_err = |source| Error::Open {
        database_type: "postgres",
        target: redacted_target(&url),
        source,
    };
    // One direct connection first: an unreachable server fails at once instead of after the
    // pool's acquire timeout.
    let probe = AnyConnection::connect(&url).await.map_err(open_err)?;
    probe.close().await.map_err(open_err)?;
    let pool = AnyPoolOptions::new()
        .max_connections(config.max_open_conns.unwrap_or(20).max(2))
        .idle_timeout(Some(Duration::from_secs(30)))
        .connect(&url)
        .await
        .map_err(open_err)?;
    if !config.disable_migration {
        POSTGRES_MIGRATOR.run(&pool).await?;
    }
    let replica = match &config.ro_connection_string {
        Some(ro) if !ro.trim().is_empty() => {
            let ro_url = postgres_url(ro)?;
            AnyPoolOptions::new()
                .max_connections(config.max_open_conns.unwrap_or(20).max(2))
                .idle_timeout(Some(Duration::from_secs(30)))
                .connect(&ro_url)
                .await
                .map_err(|source| Error::Open {
                    database_type: "postgres",
                    target: redacted_target(&ro_url),
                    source,
                })?
        }
        _ => pool.clone(),
    };
    tracing::debug!(backend = "postgres", "Datastore opened");
    Ok(DataStore {
        inner: Arc::new(Inner {
            reader: pool.clone(),
            writer: pool,
            replica,
            backend: Backend::Postgres,
            clock,
            notifications: crate::notify::Notifications::postgres(url),
            marks: Arc::default(),
        }),
    })
}

async fn open_mysql(config: &DataStoreConfig, clock: Arc<dyn Clock>) -> Result<DataStore> {
    let url = mysql_url(&config.connection_string)?;
    let pool = mysql_pool(config, &url).await?;
    if !config.disable_migration {
        migrate_mysql(&pool).await?;
    }
    let replica = match &config.ro_connection_string {
        Some(ro) if !ro.trim().is_empty() => mysql_pool(config, &mysql_url(ro)?).await?,
        _ => pool.clone(),
    };
    tracing::debug!(backend = "mysql", "Datastore opened");
    Ok(DataStore {
        inner: Arc::new(Inner {
            reader: pool.clone(),
            writer: pool,
            replica,
            backend: Backend::Mysql,
            clock,
            notifications: crate::notify::Notifications::none(),
            marks: Arc::default(),
        }),
    })
}

/// Runs the MySQL migrations under a named lock, so servers starting at once on an empty
/// database migrate one after the other (sqlx's own migration lock does not wait on MariaDB).
async fn migrate_mysql(pool: &AnyPool) -> Result<()> {
    const LOCK: &str =
        "SELECT GET_LOCK(CONCAT('spire_rs_migrate_', COALESCE(DATABASE(), '')), 600) AS got";
    const UNLOCK: &str =
        "SELECT RELEASE_LOCK(CONCAT('spire_rs_migrate_', COALESCE(DATABASE(), ''))) AS released";
    let mut conn = pool.acquire().await?;
    let got: Option<i64> = sqlx::query_scalar(LOCK).fetch_one(&mut *conn).await?;
    if got != Some(1) {
        return Err(Error::Config(
            "timed out waiting for another server's schema migration (MySQL lock spire_rs_migrate_<database>)"
                .into(),
        ));
    }
    let result = MYSQL_MIGRATOR.run(&mut *conn).await;
    // Released with the connection in any case; release now so the pooled connection is clean.
    let _ = sqlx::query(UNLOCK).execute(&mut *conn).await;
    Ok(result?)
}

async fn mysql_pool(config: &DataStoreConfig, url: &str) -> Result<AnyPool> {
    let open_err = |source| Error::Open {
        database_type: "mysql",
        target: redacted_target(url),
        source,
    };
    let probe = AnyConnection::connect(url).await.map_err(open_err)?;
    probe.close().await.map_err(open_err)?;
    AnyPoolOptions::new()
        .max_connections(config.max_open_conns.unwrap_or(20).max(2))
        .idle_timeout(Some(Duration::from_secs(30)))
        .after_connect(|conn, _| mysql_session(conn))
        .connect(url)
        .await
        .map_err(open_err)
}

fn mysql_session(conn: &mut AnyConnection) -> BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        // Strict: an over-long value is an error, never silently truncated. READ COMMITTED: the
        // same visibility as PostgreSQL, and no gap locks (which deadlock concurrent inserts).
        conn.execute("SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES')")
            .await?;
        conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .await?;
        Ok(())
    })
}

/// Turns a MySQL connection string into a `mysql://` URL. Accepts the Go driver's DSN
/// (`[user[:password]@][tcp[(host[:port])]|unix(path)]/dbname[?params]`, SPIRE's form) and
/// `mysql://` URLs. Go-only parameters (`parseTime`, `loc`, `charset`, …) are dropped; `tls`
/// maps to `ssl-mode`.
pub(crate) fn mysql_url(cs: &str) -> Result<String> {
    let cs = cs.trim();
    if cs.starts_with("mysql://") || cs.starts_with("mariadb://") {
        let mut u = url::Url::parse(cs).map_err(|e| {
            Error::Config(format!("connection_string is not a valid mysql URL: {e}"))
        })?;
        if u.scheme() != "mysql" {
            let rest = &cs["mariadb".len()..];
            u = url::Url::parse(&format!("mysql{rest}")).map_err(|e| {
                Error::Config(format!("connection_string is not a valid mysql URL: {e}"))
            })?;
        }
        return Ok(u.to_string());
    }
    if cs.is_empty() {
        return Err(Error::Config(
            "connection_string is empty (expected \"user:pass@tcp(host:port)/dbname\" or a mysql:// URL)"
                .into(),
        ));
    }
    let bad = |what: &str| {
        Error::Config(format!(
            "connection_string: {what} (expected \"user:pass@tcp(host:port)/dbname?params\" or a mysql:// URL)"
        ))
    };
    // The database name starts after the last '/' that precedes the parameters.
    let (main, params) = match cs.find('?') {
        Some(i) => (&cs[..i], Some(&cs[i + 1..])),
        None => (cs, None),
    };
    let slash = main.rfind('/').ok_or_else(|| bad("no \"/dbname\""))?;
    let (head, dbname) = (&main[..slash], &main[slash + 1..]);
    // Credentials end at the last '@' (a password may contain '@').
    let (creds, addr) = match head.rfind('@') {
        Some(i) => (Some(&head[..i]), &head[i + 1..]),
        None => (None, head),
    };
    let mut url = url::Url::parse("mysql://localhost")
        .map_err(|e| Error::Config(format!("cannot build a mysql URL: {e}")))?;
    if let Some(creds) = creds {
        let (user, pass) = match creds.find(':') {
            Some(i) => (&creds[..i], Some(&creds[i + 1..])),
            None => (creds, None),
        };
        url.set_username(user).map_err(|_| bad("bad user"))?;
        url.set_password(pass).map_err(|_| bad("bad password"))?;
    }
    let mut socket = None;
    if !addr.is_empty() {
        let (net, inner) = match addr.find('(') {
            Some(i) if addr.ends_with(')') => (&addr[..i], &addr[i + 1..addr.len() - 1]),
            Some(_) => return Err(bad("unbalanced parentheses in the address")),
            None => (addr, ""),
        };
        match net {
            "tcp" | "tcp6" | "tcp4" => {
                if !inner.is_empty() {
                    let (host, port) = match inner.rfind(':') {
                        Some(i) if !inner.ends_with(']') => (&inner[..i], Some(&inner[i + 1..])),
                        _ => (inner, None),
                    };
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    let host = if host.contains(':') {
                        format!("[{host}]")
                    } else {
                        host.to_owned()
                    };
                    url.set_host(Some(&host)).map_err(|_| bad("bad host"))?;
                    if let Some(p) = port {
                        let p: u16 = p.parse().map_err(|_| bad("bad port"))?;
                        url.set_port(Some(p)).map_err(|_| bad("bad port"))?;
                    }
                }
            }
            "unix" => socket = Some(inner.to_owned()),
            other => return Err(bad(&format!("unknown network {other:?}"))),
        }
    }
    url.set_path(&format!("/{dbname}"));
    {
        let mut q = url.query_pairs_mut();
        if let Some(s) = socket {
            q.append_pair("socket", &s);
        }
        for pair in params.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "tls" => {
                    let mode = match v {
                        "true" => "verify_identity",
                        "skip-verify" => "required",
                        "preferred" => "preferred",
                        "false" => "disabled",
                        // A named custom TLS config of the Go driver: require TLS at least.
                        _ => "required",
                    };
                    q.append_pair("ssl-mode", mode);
                }
                "charset" | "collation" => {}
                // Go-driver settings with no equivalent here (parseTime, loc, timeout, …).
                _ => {}
            }
        }
    }
    let mut s = url.to_string();
    if s.ends_with('?') {
        s.pop();
    }
    Ok(s)
}

/// Turns a PostgreSQL connection string (URL or libpq `key=value` form) into a URL.
pub(crate) fn postgres_url(cs: &str) -> Result<String> {
    let cs = cs.trim();
    if cs.starts_with("postgres://") || cs.starts_with("postgresql://") {
        url::Url::parse(cs).map_err(|e| {
            Error::Config(format!(
                "connection_string is not a valid postgres URL: {e}"
            ))
        })?;
        return Ok(cs.to_owned());
    }
    if cs.is_empty() {
        return Err(Error::Config(
            "connection_string is empty (expected a postgres:// URL or \"host=... dbname=...\")"
                .into(),
        ));
    }
    let pairs = parse_dsn(cs)?;
    let mut url = url::Url::parse("postgres://localhost")
        .map_err(|e| Error::Config(format!("cannot build a postgres URL: {e}")))?;
    let bad = |key: &str| Error::Config(format!("connection_string: bad value for {key:?}"));
    for (k, v) in pairs {
        match k.as_str() {
            "host" => url.set_host(Some(&v)).map_err(|_| bad("host"))?,
            "port" => {
                let port: u16 = v.parse().map_err(|_| bad("port"))?;
                url.set_port(Some(port)).map_err(|_| bad("port"))?;
            }
            "user" => url.set_username(&v).map_err(|_| bad("user"))?,
            "password" => url.set_password(Some(&v)).map_err(|_| bad("password"))?,
            "dbname" => url.set_path(&format!("/{v}")),
            _ => {
                url.query_pairs_mut().append_pair(&k, &v);
            }
        }
    }
    Ok(url.to_string())
}

/// `host:port/database` of a postgres or mysql URL, without credentials.
fn redacted_target(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}{}",
            u.host_str().unwrap_or("localhost"),
            u.port()
                .unwrap_or(if u.scheme() == "mysql" { 3306 } else { 5432 }),
            u.path()
        ),
        Err(_) => "<unparseable URL>".into(),
    }
}

/// Parses libpq `key=value key='quoted value'` pairs.
fn parse_dsn(cs: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = cs.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(Error::Config(format!(
                "connection_string: expected \"{key}=value\" (libpq key=value form) or a postgres:// URL"
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(Error::Config(format!(
                    "connection_string: unterminated quoted value for {key:?}"
                )));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_becomes_url() {
        let url = postgres_url(
            "host=127.0.0.1 port=5433 user=spire password='p w' dbname=spire sslmode=disable",
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://spire:p%20w@127.0.0.1:5433/spire?sslmode=disable"
        );
    }

    #[test]
    fn go_mysql_dsn_becomes_url() {
        assert_eq!(
            mysql_url("spire:p@ss@tcp(127.0.0.1:3306)/spire?parseTime=true&charset=utf8").unwrap(),
            "mysql://spire:p%40ss@127.0.0.1:3306/spire"
        );
        assert_eq!(
            mysql_url("root@tcp(db.example:3307)/x?tls=true").unwrap(),
            "mysql://root@db.example:3307/x?ssl-mode=verify_identity"
        );
        assert_eq!(
            mysql_url("u:pw@unix(/run/mysqld/mysqld.sock)/spire").unwrap(),
            "mysql://u:pw@localhost/spire?socket=%2Frun%2Fmysqld%2Fmysqld.sock"
        );
        assert_eq!(
            mysql_url("u@tcp([::1]:3306)/spire").unwrap(),
            "mysql://u@[::1]:3306/spire"
        );
        assert_eq!(
            mysql_url("mysql://root@127.0.0.1:3306/spire").unwrap(),
            "mysql://root@127.0.0.1:3306/spire"
        );
        assert!(mysql_url("").is_err());
        assert!(mysql_url("root@tcp(127.0.0.1:3306)").is_err());
        assert!(mysql_url("root@tcp(127.0.0.1:x)/db").is_err());
        assert!(mysql_url("root@udp(127.0.0.1:1)/db").is_err());
    }

    #[test]
    fn url_is_kept_and_garbage_rejected() {
        assert_eq!(
            postgres_url("postgres://u@h:1/db").unwrap(),
            "postgres://u@h:1/db"
        );
        assert!(postgres_url("host").is_err());
        assert!(postgres_url("password='open").is_err());
        assert!(postgres_url("").is_err());
    }
}
