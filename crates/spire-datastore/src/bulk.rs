//! Bulk reads for the cold start of caches: every entry and every attested node, handed to a
//! callback one finished value at a time, so the caller can index them as they arrive instead
//! of holding a second copy of the whole table.
//!
//! Entries are read in keyset pages of the base table (`id > last ORDER BY id LIMIT n`); each
//! page's selectors, DNS names and federated trust domains come from one range query per child
//! table (`entry_id BETWEEN first AND last ORDER BY entry_id`, served by the child tables'
//! primary keys) and are merged into the page in order. Nodes work the same way with their
//! selectors. Every key column orders byte-wise on every backend (`COLLATE "C"` on PostgreSQL,
//! `VARBINARY` on MySQL, SQLite's default `BINARY`), which is the order of Rust's `str`, so the
//! merge needs no lookup table.
//!
//! On PostgreSQL the reads go through a dedicated native connection: rows are decoded straight
//! from the wire buffers (borrowed `&str`), without the `Any` driver's per-row copy. The other
//! backends read through the `Any` pool, still with borrowed column values.
//!
//! Not a snapshot: note [`DataStore::latest_change_id`] before and follow the change log from
//! there, so writes made during the read are replayed.

use spire_spiffe::{Selector, Selectors, SpiffeId, TrustDomain};
use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Any, AssertSqlSafe, Connection, Row};

use crate::error::{Error, Result};
use crate::sql::{Arg, bind_all, rewrite_placeholders};
use crate::store::{Backend, DataStore};
use crate::types::{AttestedNode, Entry};

/// Rows per page of the bulk reads ([`DataStore::for_each_entry`],
/// [`DataStore::for_each_node`]).
pub const BULK_PAGE: u32 = 10_000;

const ENTRY_COLUMNS: &str = "e.id, e.spiffe_id, e.parent_id, e.x509_svid_ttl, e.jwt_svid_ttl, \
    e.admin, e.downstream, e.expires_at, e.store_svid, e.hint, e.created_at, e.revision_number, \
    e.jwt_svid_include_jti, e.disable_x509_svid_prefetch";

const NODE_COLUMNS: &str = "n.spiffe_id, n.attestation_type, n.cert_serial_number, \
    n.cert_not_after, n.new_cert_serial_number, n.new_cert_not_after, n.can_reattest, \
    n.agent_version";

const ENTRY_SELECTORS: &str = "SELECT entry_id, type, value FROM entry_selectors \
    WHERE entry_id >= $1 AND entry_id <= $2 ORDER BY entry_id";
const ENTRY_DNS_NAMES: &str = "SELECT entry_id, value FROM entry_dns_names \
    WHERE entry_id >= $1 AND entry_id <= $2 ORDER BY entry_id, position";
const ENTRY_FEDERATES_WITH: &str = "SELECT entry_id, trust_domain FROM entry_federates_with \
    WHERE entry_id >= $1 AND entry_id <= $2 ORDER BY entry_id, trust_domain";
const NODE_SELECTORS: &str = "SELECT spiffe_id, type, value FROM node_selectors \
    WHERE spiffe_id >= $1 AND spiffe_id <= $2 ORDER BY spiffe_id";

impl DataStore {
    /// Hands every entry (with selectors, DNS names and federated trust domains) to `f`, in ID
    /// order, reading `page_size` entries at a time (use [`BULK_PAGE`]); returns how many.
    /// Each entry equals what [`DataStore::get_entry`] returns for it. Not a snapshot: note
    /// [`DataStore::latest_change_id`] first and follow the change log from there.
    pub async fn for_each_entry(&self, page_size: u32, f: impl FnMut(Entry) + Send) -> Result<u64> {
        crate::timed::timed("list_all_registration_entries", async {
            let page_size = page_size.max(1);
            match self.bulk_conn().await? {
                BulkConn::Pg(mut c) => {
                    let n = entries_with(&mut c, page_size, f).await;
                    let _ = c.close().await;
                    n
                }
                BulkConn::Any(c) => {
                    entries_with(&mut AnyFetch(c, self.backend()), page_size, f).await
                }
            }
        })
        .await
    }

    /// Hands every attested node (with its selectors) to `f`, in SPIFFE ID order, reading
    /// `page_size` nodes at a time (use [`BULK_PAGE`]); returns how many. Not a snapshot (see
    /// [`DataStore::for_each_entry`]).
    pub async fn for_each_node(
        &self,
        page_size: u32,
        f: impl FnMut(AttestedNode) + Send,
    ) -> Result<u64> {
        crate::timed::timed("list_attested_nodes_with_selectors", async {
            let page_size = page_size.max(1);
            match self.bulk_conn().await? {
                BulkConn::Pg(mut c) => {
                    let n = nodes_with(&mut c, page_size, f).await;
                    let _ = c.close().await;
                    n
                }
                BulkConn::Any(c) => {
                    nodes_with(&mut AnyFetch(c, self.backend()), page_size, f).await
                }
            }
        })
        .await
    }

    async fn bulk_conn(&self) -> Result<BulkConn> {
        if let Some(url) = self.inner.notifications.postgres_url() {
            return Ok(BulkConn::Pg(PgConnection::connect(url).await?));
        }
        Ok(BulkConn::Any(self.inner.reader.acquire().await?))
    }
}

enum BulkConn {
    Pg(PgConnection),
    Any(PoolConnection<Any>),
}

/// A bound value of a bulk query.
#[derive(Clone, Copy)]
enum BulkArg<'a> {
    Text(&'a str),
    Int(i64),
}

/// Runs one query and returns its rows.
trait Fetch {
    type Row: BulkRow + Send;
    async fn rows(&mut self, sql: &str, args: &[BulkArg<'_>]) -> Result<Vec<Self::Row>>;
}

impl Fetch for PgConnection {
    type Row = PgRow;
    async fn rows(&mut self, sql: &str, args: &[BulkArg<'_>]) -> Result<Vec<PgRow>> {
        let mut q = sqlx::query::<sqlx::Postgres>(AssertSqlSafe(sql.to_owned()));
        for a in args {
            q = match *a {
                BulkArg::Text(s) => q.bind(s),
                BulkArg::Int(i) => q.bind(i),
            };
        }
        Ok(q.fetch_all(&mut *self).await?)
    }
}

struct AnyFetch(PoolConnection<Any>, Backend);

impl Fetch for AnyFetch {
    type Row = AnyRow;
    async fn rows(&mut self, sql: &str, args: &[BulkArg<'_>]) -> Result<Vec<AnyRow>> {
        let args: Vec<Arg> = args
            .iter()
            .map(|a| match *a {
                BulkArg::Text(s) => Arg::from(s),
                BulkArg::Int(i) => Arg::Int(i),
            })
            .collect();
        let (text, args) = if self.1 == Backend::Mysql {
            rewrite_placeholders(sql, &args)
        } else {
            (sql.to_owned(), args)
        };
        Ok(bind_all(sqlx::query::<Any>(AssertSqlSafe(text)), &args)
            .fetch_all(&mut *self.0)
            .await?)
    }
}

/// Column access by position, borrowing text from the row.
trait BulkRow {
    fn str(&self, i: usize) -> Result<&str>;
    fn int(&self, i: usize) -> Result<i64>;
    fn flag(&self, i: usize) -> Result<bool> {
        Ok(self.int(i)? != 0)
    }
}

impl BulkRow for PgRow {
    fn str(&self, i: usize) -> Result<&str> {
        Ok(self.try_get::<&str, _>(i)?)
    }
    fn int(&self, i: usize) -> Result<i64> {
        Ok(self.try_get::<i64, _>(i)?)
    }
}

impl BulkRow for AnyRow {
    /// MySQL keeps keys in `VARBINARY` columns (byte-wise comparison): those decode as UTF-8.
    fn str(&self, i: usize) -> Result<&str> {
        match self.try_get::<&str, _>(i) {
            Ok(s) => Ok(s),
            Err(e) => match self.try_get::<&[u8], _>(i) {
                Ok(b) => std::str::from_utf8(b).map_err(|e| Error::corrupt("text column", e)),
                Err(_) => Err(e.into()),
            },
        }
    }
    fn int(&self, i: usize) -> Result<i64> {
        Ok(self.try_get::<i64, _>(i)?)
    }
}

fn parse<T>(what: &'static str, s: &str) -> Result<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    s.parse::<T>().map_err(|e| Error::corrupt(what, e))
}

async fn entries_with<C: Fetch>(
    conn: &mut C,
    page_size: u32,
    mut f: impl FnMut(Entry),
) -> Result<u64> {
    let first = format!("SELECT {ENTRY_COLUMNS} FROM registered_entries e ORDER BY e.id LIMIT $1");
    let next = format!(
        "SELECT {ENTRY_COLUMNS} FROM registered_entries e WHERE e.id > $1 ORDER BY e.id LIMIT $2"
    );
    let limit = BulkArg::Int(i64::from(page_size));
    let mut after: Option<String> = None;
    let mut count = 0u64;
    loop {
        let rows = match &after {
            None => conn.rows(&first, &[limit]).await?,
            Some(a) => conn.rows(&next, &[BulkArg::Text(a), limit]).await?,
        };
        let (Some(lo), Some(hi)) = (rows.first(), rows.last()) else {
            return Ok(count);
        };
        let range = [BulkArg::Text(lo.str(0)?), BulkArg::Text(hi.str(0)?)];
        let selectors = conn.rows(ENTRY_SELECTORS, &range).await?;
        let dns = conn.rows(ENTRY_DNS_NAMES, &range).await?;
        let federates = conn.rows(ENTRY_FEDERATES_WITH, &range).await?;
        let mut sel = Merge::new(&selectors);
        let mut dns = Merge::new(&dns);
        let mut fed = Merge::new(&federates);
        let full = rows.len() >= page_size as usize;
        for r in &rows {
            let id = r.str(0)?;
            let mut e = base_entry(r, id)?;
            let mut s = Vec::new();
            while let Some(c) = sel.next_for(id)? {
                s.push(
                    Selector::new(c.str(1)?, c.str(2)?)
                        .map_err(|e| Error::corrupt("entry selector", e))?,
                );
            }
            e.selectors = Selectors::from(s);
            while let Some(c) = dns.next_for(id)? {
                e.dns_names.push(c.str(1)?.to_owned());
            }
            while let Some(c) = fed.next_for(id)? {
                e.federates_with.push(parse::<TrustDomain>(
                    "entry federated trust domain",
                    c.str(1)?,
                )?);
            }
            f(e);
            count += 1;
        }
        if !full {
            return Ok(count);
        }
        after = Some(hi.str(0)?.to_owned());
    }
}

fn base_entry(r: &impl BulkRow, id: &str) -> Result<Entry> {
    let ttl = |i: usize| -> Result<i32> {
        i32::try_from(r.int(i)?).map_err(|e| Error::corrupt("entry TTL", e))
    };
    Ok(Entry {
        id: id.to_owned(),
        spiffe_id: parse::<SpiffeId>("entry SPIFFE ID", r.str(1)?)?,
        parent_id: parse::<SpiffeId>("entry parent ID", r.str(2)?)?,
        selectors: Selectors::new(),
        x509_svid_ttl: ttl(3)?,
        jwt_svid_ttl: ttl(4)?,
        federates_with: Vec::new(),
        admin: r.flag(5)?,
        downstream: r.flag(6)?,
        expires_at: r.int(7)?,
        dns_names: Vec::new(),
        revision_number: r.int(11)?,
        store_svid: r.flag(8)?,
        hint: r.str(9)?.to_owned(),
        created_at: r.int(10)?,
        jwt_svid_include_jti: r.flag(12)?,
        disable_x509_svid_prefetch: r.flag(13)?,
    })
}

async fn nodes_with<C: Fetch>(
    conn: &mut C,
    page_size: u32,
    mut f: impl FnMut(AttestedNode),
) -> Result<u64> {
    let first =
        format!("SELECT {NODE_COLUMNS} FROM attested_nodes n ORDER BY n.spiffe_id LIMIT $1");
    let next = format!(
        "SELECT {NODE_COLUMNS} FROM attested_nodes n WHERE n.spiffe_id > $1 \
         ORDER BY n.spiffe_id LIMIT $2"
    );
    let limit = BulkArg::Int(i64::from(page_size));
    let mut after: Option<String> = None;
    let mut count = 0u64;
    loop {
        let rows = match &after {
            None => conn.rows(&first, &[limit]).await?,
            Some(a) => conn.rows(&next, &[BulkArg::Text(a), limit]).await?,
        };
        let (Some(lo), Some(hi)) = (rows.first(), rows.last()) else {
            return Ok(count);
        };
        let range = [BulkArg::Text(lo.str(0)?), BulkArg::Text(hi.str(0)?)];
        let selectors = conn.rows(NODE_SELECTORS, &range).await?;
        let mut sel = Merge::new(&selectors);
        let full = rows.len() >= page_size as usize;
        for r in &rows {
            let id = r.str(0)?;
            let mut s = Vec::new();
            while let Some(c) = sel.next_for(id)? {
                s.push(
                    Selector::new(c.str(1)?, c.str(2)?)
                        .map_err(|e| Error::corrupt("node selector", e))?,
                );
            }
            f(AttestedNode {
                spiffe_id: parse("node SPIFFE ID", id)?,
                attestation_type: r.str(1)?.to_owned(),
                cert_serial_number: r.str(2)?.to_owned(),
                cert_not_after: r.int(3)?,
                new_cert_serial_number: r.str(4)?.to_owned(),
                new_cert_not_after: r.int(5)?,
                can_reattest: r.flag(6)?,
                agent_version: r.str(7)?.to_owned(),
                selectors: Selectors::from(s),
            });
            count += 1;
        }
        if !full {
            return Ok(count);
        }
        after = Some(hi.str(0)?.to_owned());
    }
}

/// Walks child rows ordered by their owner key (column 0) alongside owners visited in the same
/// order. Child rows whose owner is not visited (e.g. selectors stored for a node whose row
/// does not exist, or an owner inserted between the two reads) are skipped.
struct Merge<'a, R> {
    rows: &'a [R],
    at: usize,
}

impl<'a, R: BulkRow> Merge<'a, R> {
    fn new(rows: &'a [R]) -> Self {
        Merge { rows, at: 0 }
    }

    /// The next child row of `owner`, skipping rows of owners ordered before it.
    fn next_for(&mut self, owner: &str) -> Result<Option<&'a R>> {
        while let Some(r) = self.rows.get(self.at) {
            let key = r.str(0)?;
            match key.cmp(owner) {
                std::cmp::Ordering::Less => self.at += 1,
                std::cmp::Ordering::Equal => {
                    self.at += 1;
                    return Ok(Some(r));
                }
                std::cmp::Ordering::Greater => return Ok(None),
            }
        }
        Ok(None)
    }
}
