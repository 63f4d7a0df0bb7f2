//! Registration entries: create (with duplicate detection), get, update with a mask, delete,
//! count, list with filters and paging.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use spire_spiffe::{Selector, Selectors, SpiffeId, TrustDomain};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use crate::error::{Error, Result};
use crate::sets::{SetColumns, push_set_match};
use crate::sql::{self, Arg, Sql, q};
use crate::store::{Backend, DataStore, WriteTx, backend_of, for_share, for_update, log_change};
use crate::types::{
    ChangeKind, ChangeOp, Entry, EntryFilter, EntryMask, ObjectKind, Page, Pagination,
};

const ENTRY_COLUMNS: &str = "e.id, e.spiffe_id, e.parent_id, e.x509_svid_ttl, e.jwt_svid_ttl, \
    e.admin, e.downstream, e.expires_at, e.store_svid, e.hint, e.created_at, e.revision_number, \
    e.jwt_svid_include_jti, e.disable_x509_svid_prefetch";

/// How many IDs one child-table query asks for (keeps well under every backend's bind limit).
const CHUNK: usize = 500;

impl DataStore {
    /// Creates an entry in its own transaction. An empty `id` gets a fresh UUID. If an entry with
    /// the same SPIFFE ID, parent ID and selector set (or the same ID) exists, returns
    /// [`Error::EntryAlreadyExists`] carrying it. Every `federates_with` trust domain must have a
    /// stored bundle.
    pub async fn create_entry(&self, entry: &Entry) -> Result<Entry> {
        crate::timed::timed("create_registration_entry", async {
            let now = self.now();
            let mut tx = self.write_tx().await?;
            match insert_entry(&mut tx, self.backend(), entry, now).await {
                Ok(created) => {
                    tx.commit().await?;
                    Ok(created)
                }
                Err(e) if e.is_unique_violation() => {
                    // A concurrent writer created the same entry between our check and insert.
                    drop(tx);
                    match self.find_duplicate(entry).await? {
                        Some(existing) => Err(Error::EntryAlreadyExists(Box::new(existing))),
                        None => Err(e),
                    }
                }
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Creates many entries, **one transaction per item** (as SPIRE does): each result says
    /// whether that item was committed. An acknowledged (`Ok`) entry is durable; a failed item
    /// leaves no row behind and does not affect the others.
    pub async fn create_entries(&self, entries: &[Entry]) -> Vec<Result<Entry>> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            out.push(self.create_entry(e).await);
        }
        out
    }

    /// Creates every entry in **one** transaction: either all are committed or none.
    pub async fn create_entries_atomic(&self, entries: &[Entry]) -> Result<Vec<Entry>> {
        crate::timed::timed("create_registration_entries", async {
            let now = self.now();
            let mut tx = self.write_tx().await?;
            let mut out = Vec::with_capacity(entries.len());
            for e in entries {
                out.push(insert_entry(&mut tx, self.backend(), e, now).await?);
            }
            tx.commit().await?;
            Ok(out)
        })
        .await
    }

    /// The entry with this ID, if any.
    pub async fn get_entry(&self, id: &str) -> Result<Option<Entry>> {
        crate::timed::timed("fetch_registration_entry", async {
            let mut conn = self.inner.reader.acquire().await?;
            load_entry(&mut conn, id, "").await
        })
        .await
    }

    /// Several entries by ID (missing IDs are skipped), in ID order.
    pub async fn get_entries(&self, ids: &[String]) -> Result<Vec<Entry>> {
        crate::timed::timed("fetch_registration_entries", async {
            let bk = self.backend();
            let mut conn = self.inner.reader.acquire().await?;
            let mut out = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(CHUNK) {
                let mut sql = Sql::new("SELECT ");
                sql.push(ENTRY_COLUMNS)
                    .push(" FROM registered_entries e WHERE e.id IN (");
                push_list(&mut sql, chunk.iter().map(|s| Arg::from(s.as_str())));
                sql.push(") ORDER BY e.id");
                let rows = sql.query(bk).fetch_all(&mut *conn).await?;
                out.extend(hydrate(&mut conn, &rows).await?);
            }
            out.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(out)
        })
        .await
    }

    /// Updates the fields of entry `entry.id` selected by `mask` and increments its revision.
    /// Fails with [`Error::NotFound`] if it does not exist and [`Error::EntryAlreadyExists`] if
    /// the change would duplicate another entry.
    pub async fn update_entry(&self, entry: &Entry, mask: &EntryMask) -> Result<Entry> {
        crate::timed::timed("update_registration_entry", async {
            let now = self.now();
            let mut tx = self.write_tx().await?;
            let updated = update_entry_tx(&mut tx, self.backend(), entry, mask, now).await;
            match updated {
                Ok(updated) => {
                    tx.commit().await?;
                    Ok(updated)
                }
                Err(e) if e.is_unique_violation() => {
                    drop(tx);
                    match self.find_duplicate(entry).await? {
                        Some(existing) => Err(Error::EntryAlreadyExists(Box::new(existing))),
                        None => Err(e),
                    }
                }
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Deletes an entry and returns it; [`Error::NotFound`] if it does not exist.
    pub async fn delete_entry(&self, id: &str) -> Result<Entry> {
        crate::timed::timed("delete_registration_entry", async {
            let now = self.now();
            let mut tx = self.write_tx().await?;
            let entry = load_entry(&mut tx, id, self.for_update())
                .await?
                .ok_or_else(|| Error::not_found(ObjectKind::Entry, id))?;
            delete_entry_rows(&mut tx, id, now).await?;
            tx.commit().await?;
            Ok(entry)
        })
        .await
    }

    /// Number of entries matching `filter`.
    pub async fn count_entries(&self, filter: &EntryFilter) -> Result<i64> {
        crate::timed::timed("count_registration_entries", async {
            let bk = self.backend();
            let mut sql = Sql::new("SELECT COUNT(*) AS n FROM registered_entries e WHERE 1 = 1");
            push_entry_filter(&mut sql, filter);
            let row = sql.query(bk).fetch_one(&self.inner.replica).await?;
            sql::int(&row, "n")
        })
        .await
    }

    /// One page of entries matching `filter`, ordered by entry ID.
    pub async fn list_entries(
        &self,
        filter: &EntryFilter,
        page: &Pagination,
    ) -> Result<Page<Entry>> {
        crate::timed::timed("list_registration_entries", async {
            let bk = self.backend();
            let mut conn = self.inner.reader.acquire().await?;
            let mut sql = Sql::new("SELECT ");
            sql.push(ENTRY_COLUMNS)
                .push(" FROM registered_entries e WHERE 1 = 1");
            push_entry_filter(&mut sql, filter);
            if !page.token.is_empty() {
                sql.push(" AND e.id > ").bind(page.token.as_str());
            }
            sql.push(" ORDER BY e.id");
            if page.page_size > 0 {
                sql.push(" LIMIT ").bind(i64::from(page.page_size) + 1);
            }
            let mut rows = sql.query(bk).fetch_all(&mut *conn).await?;
            let more = page.page_size > 0 && rows.len() > page.page_size as usize;
            if more {
                rows.truncate(page.page_size as usize);
            }
            let items = hydrate(&mut conn, &rows).await?;
            let next_page_token = match (more, items.last()) {
                (true, Some(last)) => last.id.clone(),
                _ => String::new(),
            };
            Ok(Page {
                items,
                next_page_token,
            })
        })
        .await
    }

    /// Every entry, in ID order (cold start of caches; [`DataStore::for_each_entry`] hands
    /// them over one at a time instead). Not a snapshot: read
    /// [`DataStore::latest_change_id`] **before** calling this and then follow the change log
    /// from that ID, so changes made during the read are replayed.
    pub async fn list_all_entries(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        self.for_each_entry(crate::bulk::BULK_PAGE, |e| out.push(e))
            .await?;
        Ok(out)
    }

    /// Deletes every entry that expired before `before` (Unix seconds; entries with
    /// `expires_at = 0` never expire), in one transaction. Returns how many were deleted.
    pub async fn prune_entries(&self, before: i64) -> Result<u64> {
        crate::timed::timed("prune_registration_entries", async {
            let bk = self.backend();
            let now = self.now();
            let mut tx = self.write_tx().await?;
            let rows = q(
                bk,
                "SELECT id FROM registered_entries WHERE expires_at > 0 AND expires_at < $1",
                &[Arg::Int(before)],
            )
            .fetch_all(&mut *tx)
            .await?;
            let mut n = 0;
            for r in rows {
                let id = sql::text(&r, "id")?;
                delete_entry_rows(&mut tx, &id, now).await?;
                n += 1;
            }
            tx.commit().await?;
            Ok(n)
        })
        .await
    }

    async fn find_duplicate(&self, entry: &Entry) -> Result<Option<Entry>> {
        let mut conn = self.inner.reader.acquire().await?;
        if let Some(e) = load_by_identity(&mut conn, entry).await? {
            return Ok(Some(e));
        }
        if entry.id.is_empty() {
            return Ok(None);
        }
        load_entry(&mut conn, &entry.id, "").await
    }
}

impl WriteTx {
    /// Creates an entry inside this transaction (see [`DataStore::create_entry`]). On
    /// PostgreSQL a failed statement aborts the transaction: after an error, roll back.
    pub async fn create_entry(&mut self, entry: &Entry) -> Result<Entry> {
        crate::timed::timed("create_registration_entry", async {
            insert_entry(&mut self.tx, self.backend, entry, self.now).await
        })
        .await
    }

    /// Updates an entry inside this transaction (see [`DataStore::update_entry`]).
    pub async fn update_entry(&mut self, entry: &Entry, mask: &EntryMask) -> Result<Entry> {
        crate::timed::timed("update_registration_entry", async {
            update_entry_tx(&mut self.tx, self.backend, entry, mask, self.now).await
        })
        .await
    }

    /// Deletes an entry inside this transaction (see [`DataStore::delete_entry`]).
    pub async fn delete_entry(&mut self, id: &str) -> Result<Entry> {
        crate::timed::timed("delete_registration_entry", async {
            let entry = load_entry(&mut self.tx, id, for_update(self.backend))
                .await?
                .ok_or_else(|| Error::not_found(ObjectKind::Entry, id))?;
            delete_entry_rows(&mut self.tx, id, self.now).await?;
            Ok(entry)
        })
        .await
    }

    /// The entry with this ID as seen inside this transaction.
    pub async fn get_entry(&mut self, id: &str) -> Result<Option<Entry>> {
        crate::timed::timed("fetch_registration_entry", async {
            load_entry(&mut self.tx, id, "").await
        })
        .await
    }
}

// === transactional building blocks ===

/// Inserts an entry (and its children and change-log row) on `conn`.
pub(crate) async fn insert_entry(
    conn: &mut AnyConnection,
    backend: Backend,
    entry: &Entry,
    now: i64,
) -> Result<Entry> {
    let bk = backend_of(conn);
    check_bundles_exist(conn, backend, &entry.federates_with).await?;
    if let Some(existing) = load_by_identity(conn, entry).await? {
        return Err(Error::EntryAlreadyExists(Box::new(existing)));
    }
    if !entry.id.is_empty()
        && let Some(existing) = load_entry(conn, &entry.id, "").await?
    {
        return Err(Error::EntryAlreadyExists(Box::new(existing)));
    }
    let mut e = entry.clone();
    if e.id.is_empty() {
        e.id = uuid::Uuid::new_v4().to_string();
    }
    e.created_at = now;
    e.revision_number = 0;
    dedup_children(&mut e);

    let mut sql = Sql::new(
        "INSERT INTO registered_entries (id, spiffe_id, parent_id, identity_key, x509_svid_ttl, \
         jwt_svid_ttl, admin, downstream, expires_at, store_svid, hint, created_at, \
         revision_number, jwt_svid_include_jti, disable_x509_svid_prefetch) VALUES (",
    );
    push_list(
        &mut sql,
        [
            Arg::from(e.id.as_str()),
            Arg::from(e.spiffe_id.as_str()),
            Arg::from(e.parent_id.as_str()),
            Arg::from(identity_key(&e)),
            Arg::from(e.x509_svid_ttl),
            Arg::from(e.jwt_svid_ttl),
            Arg::from(e.admin),
            Arg::from(e.downstream),
            Arg::from(e.expires_at),
            Arg::from(e.store_svid),
            Arg::from(e.hint.as_str()),
            Arg::from(e.created_at),
            Arg::from(e.revision_number),
            Arg::from(e.jwt_svid_include_jti),
            Arg::from(e.disable_x509_svid_prefetch),
        ],
    );
    sql.push(")");
    sql.query(bk).execute(&mut *conn).await?;
    insert_children(conn, &e, true, true, true).await?;
    log_change(conn, ChangeKind::Entry, &e.id, ChangeOp::Create, now).await?;
    Ok(e)
}

pub(crate) async fn update_entry_tx(
    conn: &mut AnyConnection,
    backend: Backend,
    entry: &Entry,
    mask: &EntryMask,
    now: i64,
) -> Result<Entry> {
    let bk = backend_of(conn);
    let mut cur = load_entry(conn, &entry.id, for_update(backend))
        .await?
        .ok_or_else(|| Error::not_found(ObjectKind::Entry, &entry.id))?;
    let m = mask;
    if m.spiffe_id {
        cur.spiffe_id = entry.spiffe_id.clone();
    }
    if m.parent_id {
        cur.parent_id = entry.parent_id.clone();
    }
    if m.selectors {
        cur.selectors = entry.selectors.clone();
    }
    if m.x509_svid_ttl {
        cur.x509_svid_ttl = entry.x509_svid_ttl;
    }
    if m.jwt_svid_ttl {
        cur.jwt_svid_ttl = entry.jwt_svid_ttl;
    }
    if m.federates_with {
        check_bundles_exist(conn, backend, &entry.federates_with).await?;
        cur.federates_with = entry.federates_with.clone();
    }
    if m.admin {
        cur.admin = entry.admin;
    }
    if m.downstream {
        cur.downstream = entry.downstream;
    }
    if m.expires_at {
        cur.expires_at = entry.expires_at;
    }
    if m.dns_names {
        cur.dns_names = entry.dns_names.clone();
    }
    if m.store_svid {
        cur.store_svid = entry.store_svid;
    }
    if m.hint {
        cur.hint = entry.hint.clone();
    }
    if m.jwt_svid_include_jti {
        cur.jwt_svid_include_jti = entry.jwt_svid_include_jti;
    }
    if m.disable_x509_svid_prefetch {
        cur.disable_x509_svid_prefetch = entry.disable_x509_svid_prefetch;
    }
    dedup_children(&mut cur);
    if (m.spiffe_id || m.parent_id || m.selectors)
        && let Some(other) = load_by_identity(conn, &cur).await?
        && other.id != cur.id
    {
        return Err(Error::EntryAlreadyExists(Box::new(other)));
    }
    cur.revision_number += 1;

    let mut sql = Sql::new("UPDATE registered_entries SET spiffe_id = ");
    sql.bind(cur.spiffe_id.as_str())
        .push(", parent_id = ")
        .bind(cur.parent_id.as_str())
        .push(", identity_key = ")
        .bind(identity_key(&cur))
        .push(", x509_svid_ttl = ")
        .bind(cur.x509_svid_ttl)
        .push(", jwt_svid_ttl = ")
        .bind(cur.jwt_svid_ttl)
        .push(", admin = ")
        .bind(cur.admin)
        .push(", downstream = ")
        .bind(cur.downstream)
        .push(", expires_at = ")
        .bind(cur.expires_at)
        .push(", store_svid = ")
        .bind(cur.store_svid)
        .push(", hint = ")
        .bind(cur.hint.as_str())
        .push(", revision_number = ")
        .bind(cur.revision_number)
        .push(", jwt_svid_include_jti = ")
        .bind(cur.jwt_svid_include_jti)
        .push(", disable_x509_svid_prefetch = ")
        .bind(cur.disable_x509_svid_prefetch)
        .push(" WHERE id = ")
        .bind(cur.id.as_str());
    sql.query(bk).execute(&mut *conn).await?;
    if m.selectors {
        q(
            bk,
            "DELETE FROM entry_selectors WHERE entry_id = $1",
            &[Arg::from(cur.id.as_str())],
        )
        .execute(&mut *conn)
        .await?;
    }
    if m.dns_names {
        q(
            bk,
            "DELETE FROM entry_dns_names WHERE entry_id = $1",
            &[Arg::from(cur.id.as_str())],
        )
        .execute(&mut *conn)
        .await?;
    }
    if m.federates_with {
        q(
            bk,
            "DELETE FROM entry_federates_with WHERE entry_id = $1",
            &[Arg::from(cur.id.as_str())],
        )
        .execute(&mut *conn)
        .await?;
    }
    insert_children(conn, &cur, m.selectors, m.dns_names, m.federates_with).await?;
    log_change(conn, ChangeKind::Entry, &cur.id, ChangeOp::Update, now).await?;
    Ok(cur)
}

/// Deletes an entry's rows and logs the deletion.
pub(crate) async fn delete_entry_rows(conn: &mut AnyConnection, id: &str, now: i64) -> Result<()> {
    let bk = backend_of(conn);
    for stmt in [
        "DELETE FROM entry_selectors WHERE entry_id = $1",
        "DELETE FROM entry_dns_names WHERE entry_id = $1",
        "DELETE FROM entry_federates_with WHERE entry_id = $1",
        "DELETE FROM registered_entries WHERE id = $1",
    ] {
        q(bk, stmt, &[Arg::from(id)]).execute(&mut *conn).await?;
    }
    log_change(conn, ChangeKind::Entry, id, ChangeOp::Delete, now).await?;
    Ok(())
}

/// Loads one entry (optionally locking its row).
pub(crate) async fn load_entry(
    conn: &mut AnyConnection,
    id: &str,
    lock: &str,
) -> Result<Option<Entry>> {
    let bk = backend_of(conn);
    let mut sql = Sql::new("SELECT ");
    sql.push(ENTRY_COLUMNS)
        .push(" FROM registered_entries e WHERE e.id = ")
        .bind(id)
        .push(lock);
    let rows = sql.query(bk).fetch_all(&mut *conn).await?;
    Ok(hydrate(conn, &rows).await?.into_iter().next())
}

async fn load_by_identity(conn: &mut AnyConnection, entry: &Entry) -> Result<Option<Entry>> {
    let bk = backend_of(conn);
    let mut e = entry.clone();
    dedup_children(&mut e);
    let mut sql = Sql::new("SELECT ");
    sql.push(ENTRY_COLUMNS)
        .push(" FROM registered_entries e WHERE e.identity_key = ")
        .bind(identity_key(&e));
    let rows = sql.query(bk).fetch_all(&mut *conn).await?;
    Ok(hydrate(conn, &rows).await?.into_iter().next())
}

async fn check_bundles_exist(
    conn: &mut AnyConnection,
    backend: Backend,
    tds: &[TrustDomain],
) -> Result<()> {
    let bk = backend_of(conn);
    for td in tds {
        let mut sql = Sql::new("SELECT trust_domain FROM bundles WHERE trust_domain = ");
        sql.bind(td.as_str()).push(for_share(backend));
        let row = sql.query(bk).fetch_optional(&mut *conn).await?;
        if row.is_none() {
            return Err(Error::FederatedBundleNotFound(td.as_str().to_owned()));
        }
    }
    Ok(())
}

async fn insert_children(
    conn: &mut AnyConnection,
    e: &Entry,
    selectors: bool,
    dns: bool,
    federates: bool,
) -> Result<()> {
    let bk = backend_of(conn);
    if selectors {
        for s in e.selectors.iter() {
            q(
                bk,
                "INSERT INTO entry_selectors (entry_id, type, value) VALUES ($1, $2, $3)",
                &[
                    Arg::from(e.id.as_str()),
                    Arg::from(s.kind()),
                    Arg::from(s.value()),
                ],
            )
            .execute(&mut *conn)
            .await?;
        }
    }
    if dns {
        for (i, name) in e.dns_names.iter().enumerate() {
            q(
                bk,
                "INSERT INTO entry_dns_names (entry_id, position, value) VALUES ($1, $2, $3)",
                &[
                    Arg::from(e.id.as_str()),
                    Arg::Int(i as i64),
                    Arg::from(name.as_str()),
                ],
            )
            .execute(&mut *conn)
            .await?;
        }
    }
    if federates {
        for td in &e.federates_with {
            q(
                bk,
                "INSERT INTO entry_federates_with (entry_id, trust_domain) VALUES ($1, $2)",
                &[Arg::from(e.id.as_str()), Arg::from(td.as_str())],
            )
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Sorts and de-duplicates the set-valued fields (DNS names keep their order, minus repeats).
fn dedup_children(e: &mut Entry) {
    e.federates_with.sort();
    e.federates_with.dedup();
    let mut seen = std::collections::HashSet::new();
    e.dns_names.retain(|d| seen.insert(d.clone()));
}

/// SHA-256 over the length-prefixed SPIFFE ID, parent ID and sorted selectors: the key of the
/// unique index that makes duplicate entries impossible.
fn identity_key(e: &Entry) -> String {
    let mut h = Sha256::new();
    let mut put = |s: &str| {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    };
    put(e.spiffe_id.as_str());
    put(e.parent_id.as_str());
    for s in e.selectors.iter() {
        put(s.kind());
        put(s.value());
    }
    hex::encode(h.finalize())
}

/// Appends `$a, $b, …` for `args`.
pub(crate) fn push_list(sql: &mut Sql, args: impl IntoIterator<Item = Arg>) {
    for (i, a) in args.into_iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind(a);
    }
}

fn push_entry_filter(sql: &mut Sql, f: &EntryFilter) {
    if let Some(id) = &f.by_spiffe_id {
        sql.push(" AND e.spiffe_id = ").bind(id.as_str());
    }
    if let Some(id) = &f.by_parent_id {
        sql.push(" AND e.parent_id = ").bind(id.as_str());
    }
    if let Some(hint) = &f.by_hint {
        sql.push(" AND e.hint = ").bind(hint.as_str());
    }
    if let Some(d) = f.by_downstream {
        sql.push(" AND e.downstream = ").bind(d);
    }
    if let Some(sf) = &f.by_selectors {
        let elems: Vec<Vec<Arg>> = sf
            .selectors
            .iter()
            .map(|s| vec![Arg::from(s.kind()), Arg::from(s.value())])
            .collect();
        push_set_match(
            sql,
            &SetColumns {
                table: "entry_selectors",
                fk: "entry_id",
                owner: "e.id",
                cols: &["type", "value"],
            },
            &elems,
            sf.mode,
        );
    }
    if let Some(ff) = &f.by_federates_with {
        let elems: Vec<Vec<Arg>> = ff
            .trust_domains
            .iter()
            .map(|td| vec![Arg::from(td.as_str())])
            .collect();
        push_set_match(
            sql,
            &SetColumns {
                table: "entry_federates_with",
                fk: "entry_id",
                owner: "e.id",
                cols: &["trust_domain"],
            },
            &elems,
            ff.mode,
        );
    }
}

/// Builds entries from base rows, loading their selectors, DNS names and federated trust
/// domains in batches.
async fn hydrate(conn: &mut AnyConnection, rows: &[AnyRow]) -> Result<Vec<Entry>> {
    let bk = backend_of(conn);
    let mut entries = Vec::with_capacity(rows.len());
    for r in rows {
        entries.push(base_entry(r)?);
    }
    for chunk in entries.chunks_mut(CHUNK) {
        let ids: Vec<Arg> = chunk.iter().map(|e| Arg::from(e.id.as_str())).collect();
        let index: HashMap<String, usize> = chunk
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id.clone(), i))
            .collect();

        let mut sel: Vec<Vec<Selector>> = vec![Vec::new(); chunk.len()];
        let mut sql =
            Sql::new("SELECT entry_id, type, value FROM entry_selectors WHERE entry_id IN (");
        push_list(&mut sql, ids.clone());
        sql.push(")");
        for r in sql.query(bk).fetch_all(&mut *conn).await? {
            let id = sql::text(&r, "entry_id")?;
            let s = Selector::new(sql::text(&r, "type")?, sql::text(&r, "value")?)
                .map_err(|e| Error::corrupt("entry selector", e))?;
            if let Some(&i) = index.get(&id) {
                sel[i].push(s);
            }
        }
        for (e, s) in chunk.iter_mut().zip(sel) {
            e.selectors = Selectors::from(s);
        }

        let mut sql = Sql::new("SELECT entry_id, value FROM entry_dns_names WHERE entry_id IN (");
        push_list(&mut sql, ids.clone());
        sql.push(") ORDER BY entry_id, position");
        for r in sql.query(bk).fetch_all(&mut *conn).await? {
            let id = sql::text(&r, "entry_id")?;
            if let Some(&i) = index.get(&id) {
                chunk[i].dns_names.push(sql::text(&r, "value")?);
            }
        }

        let mut sql =
            Sql::new("SELECT entry_id, trust_domain FROM entry_federates_with WHERE entry_id IN (");
        push_list(&mut sql, ids);
        sql.push(") ORDER BY entry_id, trust_domain");
        for r in sql.query(bk).fetch_all(&mut *conn).await? {
            let id = sql::text(&r, "entry_id")?;
            let td: TrustDomain = sql::parse(
                "entry federated trust domain",
                &sql::text(&r, "trust_domain")?,
            )?;
            if let Some(&i) = index.get(&id) {
                chunk[i].federates_with.push(td);
            }
        }
    }
    Ok(entries)
}

fn base_entry(r: &AnyRow) -> Result<Entry> {
    let spiffe_id: SpiffeId = sql::parse("entry SPIFFE ID", &sql::text(r, "spiffe_id")?)?;
    let parent_id: SpiffeId = sql::parse("entry parent ID", &sql::text(r, "parent_id")?)?;
    let ttl = |col: &str| -> Result<i32> {
        i32::try_from(sql::int(r, col)?).map_err(|e| Error::corrupt("entry TTL", e))
    };
    Ok(Entry {
        id: sql::text(r, "id")?,
        spiffe_id,
        parent_id,
        selectors: Selectors::new(),
        x509_svid_ttl: ttl("x509_svid_ttl")?,
        jwt_svid_ttl: ttl("jwt_svid_ttl")?,
        federates_with: Vec::new(),
        admin: sql::flag(r, "admin")?,
        downstream: sql::flag(r, "downstream")?,
        expires_at: sql::int(r, "expires_at")?,
        dns_names: Vec::new(),
        revision_number: sql::int(r, "revision_number")?,
        store_svid: sql::flag(r, "store_svid")?,
        hint: sql::text(r, "hint")?,
        created_at: sql::int(r, "created_at")?,
        jwt_svid_include_jti: sql::flag(r, "jwt_svid_include_jti")?,
        disable_x509_svid_prefetch: sql::flag(r, "disable_x509_svid_prefetch")?,
    })
}

/// Used by the bundle module for RESTRICT/DISSOCIATE/DELETE.
pub(crate) async fn entries_federating_with(
    conn: &mut AnyConnection,
    td: &str,
) -> Result<Vec<String>> {
    let bk = backend_of(conn);
    let rows = q(
        bk,
        "SELECT entry_id FROM entry_federates_with WHERE trust_domain = $1 ORDER BY entry_id",
        &[Arg::from(td)],
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| sql::text(r, "entry_id")).collect()
}

/// Used by the bundle module (DISSOCIATE): removes `td` from an entry, bumping its revision.
pub(crate) async fn dissociate(
    conn: &mut AnyConnection,
    entry_id: &str,
    td: &str,
    now: i64,
) -> Result<()> {
    let bk = backend_of(conn);
    q(
        bk,
        "DELETE FROM entry_federates_with WHERE entry_id = $1 AND trust_domain = $2",
        &[Arg::from(entry_id), Arg::from(td)],
    )
    .execute(&mut *conn)
    .await?;
    q(
        bk,
        "UPDATE registered_entries SET revision_number = revision_number + 1 WHERE id = $1",
        &[Arg::from(entry_id)],
    )
    .execute(&mut *conn)
    .await?;
    log_change(conn, ChangeKind::Entry, entry_id, ChangeOp::Update, now).await
}
