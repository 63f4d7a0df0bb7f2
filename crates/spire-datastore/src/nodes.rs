//! Attested nodes (agents) and their selectors.

use std::collections::HashMap;

use spire_spiffe::{Selector, Selectors, SpiffeId};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use crate::entries::push_list;
use crate::error::{Error, Result};
use crate::sets::{SetColumns, push_set_match};
use crate::sql::{self, Arg, Sql, q};
use crate::store::{DataStore, WriteTx, backend_of, for_update, log_change};
use crate::types::{
    AttestedNode, ChangeKind, ChangeOp, NodeFilter, NodeUpdate, ObjectKind, Page, Pagination,
};

const NODE_COLUMNS: &str = "n.spiffe_id, n.attestation_type, n.cert_serial_number, \
    n.cert_not_after, n.new_cert_serial_number, n.new_cert_not_after, n.can_reattest, \
    n.agent_version";

const CHUNK: usize = 500;

impl DataStore {
    /// Creates an attested node together with its selectors (replacing any stored selectors
    /// for that ID). [`Error::AlreadyExists`] if the node exists.
    pub async fn create_attested_node(&self, node: &AttestedNode) -> Result<AttestedNode> {
        let mut tx = self.begin().await?;
        let n = tx.create_attested_node(node).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// The node with this SPIFFE ID (with its selectors), if any.
    pub async fn get_attested_node(&self, id: &SpiffeId) -> Result<Option<AttestedNode>> {
        crate::timed::timed("fetch_attested_node", async {
            let mut conn = self.inner.reader.acquire().await?;
            load_node(&mut conn, id.as_str(), "").await
        })
        .await
    }

    /// Changes the fields set in `update`; [`Error::NotFound`] if the node does not exist.
    pub async fn update_attested_node(
        &self,
        id: &SpiffeId,
        update: &NodeUpdate,
    ) -> Result<AttestedNode> {
        let mut tx = self.begin().await?;
        let n = tx.update_attested_node(id, update).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Bans a node: clears both SVID serial numbers so it can neither renew nor re-attest
    /// until deleted.
    pub async fn ban_attested_node(&self, id: &SpiffeId) -> Result<AttestedNode> {
        crate::timed::timed("ban_attested_node", async {
            self.update_attested_node(
                id,
                &NodeUpdate {
                    cert_serial_number: Some(String::new()),
                    new_cert_serial_number: Some(String::new()),
                    ..NodeUpdate::default()
                },
            )
            .await
        })
        .await
    }

    /// Deletes a node and its selectors and returns it; [`Error::NotFound`] if absent.
    pub async fn delete_attested_node(&self, id: &SpiffeId) -> Result<AttestedNode> {
        crate::timed::timed("delete_attested_node", async {
            let bk = self.backend();
            let now = self.now();
            let _marked = self.inner.marks.guard(crate::marks::NODE);
            let mut tx = self.write_tx().await?;
            let node = load_node(&mut tx, id.as_str(), self.for_update())
                .await?
                .ok_or_else(|| Error::not_found(ObjectKind::Node, id.as_str()))?;
            q(
                bk,
                "DELETE FROM node_selectors WHERE spiffe_id = $1",
                &[Arg::from(id.as_str())],
            )
            .execute(&mut *tx)
            .await?;
            q(
                bk,
                "DELETE FROM attested_nodes WHERE spiffe_id = $1",
                &[Arg::from(id.as_str())],
            )
            .execute(&mut *tx)
            .await?;
            log_change(
                &mut tx,
                ChangeKind::Node,
                id.as_str(),
                ChangeOp::Delete,
                now,
            )
            .await?;
            tx.commit().await?;
            Ok(node)
        })
        .await
    }

    /// Number of nodes matching `filter`.
    pub async fn count_attested_nodes(&self, filter: &NodeFilter) -> Result<i64> {
        crate::timed::timed("count_attested_nodes", async {
            let bk = self.backend();
            let mut sql = Sql::new("SELECT COUNT(*) AS n FROM attested_nodes n WHERE 1 = 1");
            push_node_filter(&mut sql, filter);
            let row = sql.query(bk).fetch_one(&self.inner.replica).await?;
            sql::int(&row, "n")
        })
        .await
    }

    /// One page of nodes matching `filter` (with selectors), ordered by SPIFFE ID.
    pub async fn list_attested_nodes(
        &self,
        filter: &NodeFilter,
        page: &Pagination,
    ) -> Result<Page<AttestedNode>> {
        crate::timed::timed("list_attested_nodes", async {
            let bk = self.backend();
            let mut conn = self.inner.reader.acquire().await?;
            let mut sql = Sql::new("SELECT ");
            sql.push(NODE_COLUMNS)
                .push(" FROM attested_nodes n WHERE 1 = 1");
            push_node_filter(&mut sql, filter);
            if !page.token.is_empty() {
                sql.push(" AND n.spiffe_id > ").bind(page.token.as_str());
            }
            sql.push(" ORDER BY n.spiffe_id");
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
                (true, Some(last)) => last.spiffe_id.as_str().to_owned(),
                _ => String::new(),
            };
            Ok(Page {
                items,
                next_page_token,
            })
        })
        .await
    }

    /// Every node with its selectors, in SPIFFE ID order (cold start of caches;
    /// [`DataStore::for_each_node`] hands them over one at a time instead; see
    /// [`DataStore::list_all_entries`] for how to combine with the change log).
    pub async fn list_all_nodes_with_selectors(&self) -> Result<Vec<AttestedNode>> {
        let mut out = Vec::new();
        self.for_each_node(crate::bulk::BULK_PAGE, |n| out.push(n))
            .await?;
        Ok(out)
    }

    /// Replaces the selectors of node `id` (the node row need not exist yet).
    pub async fn set_node_selectors(&self, id: &SpiffeId, selectors: &Selectors) -> Result<()> {
        let mut tx = self.begin().await?;
        tx.set_node_selectors(id, selectors).await?;
        tx.commit().await
    }

    /// The stored selectors of node `id` (empty if none).
    pub async fn node_selectors(&self, id: &SpiffeId) -> Result<Selectors> {
        crate::timed::timed("get_node_selectors", async {
            let mut conn = self.inner.reader.acquire().await?;
            load_selectors(&mut conn, id.as_str()).await
        })
        .await
    }
}

impl WriteTx {
    /// See [`DataStore::create_attested_node`].
    pub async fn create_attested_node(&mut self, node: &AttestedNode) -> Result<AttestedNode> {
        crate::timed::timed("create_attested_node", async {
            let bk = self.backend;
            let now = self.now;
            self.touch(crate::marks::NODE);
            let conn = &mut *self.tx;
            let id = node.spiffe_id.as_str();
            if load_node(conn, id, "").await?.is_some() {
                return Err(Error::AlreadyExists {
                    kind: ObjectKind::Node,
                    id: id.to_owned(),
                });
            }
            let mut sql = Sql::new(
                "INSERT INTO attested_nodes (spiffe_id, attestation_type, cert_serial_number, \
             cert_not_after, new_cert_serial_number, new_cert_not_after, can_reattest, \
             agent_version, created_at, updated_at) VALUES (",
            );
            push_list(
                &mut sql,
                [
                    Arg::from(id),
                    Arg::from(node.attestation_type.as_str()),
                    Arg::from(node.cert_serial_number.as_str()),
                    Arg::from(node.cert_not_after),
                    Arg::from(node.new_cert_serial_number.as_str()),
                    Arg::from(node.new_cert_not_after),
                    Arg::from(node.can_reattest),
                    Arg::from(node.agent_version.as_str()),
                    Arg::from(now),
                    Arg::from(now),
                ],
            );
            sql.push(")");
            let res = sql.query(bk).execute(&mut *conn).await.map_err(Error::from);
            if let Err(e) = res {
                if e.is_unique_violation() {
                    return Err(Error::AlreadyExists {
                        kind: ObjectKind::Node,
                        id: id.to_owned(),
                    });
                }
                return Err(e);
            }
            replace_selectors(conn, id, &node.selectors).await?;
            log_change(conn, ChangeKind::Node, id, ChangeOp::Create, now).await?;
            load_node(conn, id, "")
                .await?
                .ok_or_else(|| Error::not_found(ObjectKind::Node, id))
        })
        .await
    }

    /// See [`DataStore::update_attested_node`].
    pub async fn update_attested_node(
        &mut self,
        id: &SpiffeId,
        u: &NodeUpdate,
    ) -> Result<AttestedNode> {
        crate::timed::timed("update_attested_node", async {
            let bk = self.backend;
            let now = self.now;
            self.touch(crate::marks::NODE);
            let conn = &mut *self.tx;
            let lock = for_update(self.backend);
            let mut n = load_node(conn, id.as_str(), lock)
                .await?
                .ok_or_else(|| Error::not_found(ObjectKind::Node, id.as_str()))?;
            if let Some(v) = &u.cert_serial_number {
                n.cert_serial_number = v.clone();
            }
            if let Some(v) = u.cert_not_after {
                n.cert_not_after = v;
            }
            if let Some(v) = &u.new_cert_serial_number {
                n.new_cert_serial_number = v.clone();
            }
            if let Some(v) = u.new_cert_not_after {
                n.new_cert_not_after = v;
            }
            if let Some(v) = u.can_reattest {
                n.can_reattest = v;
            }
            if let Some(v) = &u.agent_version {
                n.agent_version = v.clone();
            }
            let mut sql = Sql::new("UPDATE attested_nodes SET cert_serial_number = ");
            sql.bind(n.cert_serial_number.as_str())
                .push(", cert_not_after = ")
                .bind(n.cert_not_after)
                .push(", new_cert_serial_number = ")
                .bind(n.new_cert_serial_number.as_str())
                .push(", new_cert_not_after = ")
                .bind(n.new_cert_not_after)
                .push(", can_reattest = ")
                .bind(n.can_reattest)
                .push(", agent_version = ")
                .bind(n.agent_version.as_str())
                .push(", updated_at = ")
                .bind(now)
                .push(" WHERE spiffe_id = ")
                .bind(id.as_str());
            sql.query(bk).execute(&mut *conn).await?;
            log_change(conn, ChangeKind::Node, id.as_str(), ChangeOp::Update, now).await?;
            Ok(n)
        })
        .await
    }

    /// See [`DataStore::set_node_selectors`].
    pub async fn set_node_selectors(&mut self, id: &SpiffeId, selectors: &Selectors) -> Result<()> {
        crate::timed::timed("set_node_selectors", async {
            let now = self.now;
            self.touch(crate::marks::NODE);
            let conn = &mut *self.tx;
            replace_selectors(conn, id.as_str(), selectors).await?;
            log_change(conn, ChangeKind::Node, id.as_str(), ChangeOp::Update, now).await
        })
        .await
    }

    /// The node with this SPIFFE ID as seen inside this transaction.
    pub async fn get_attested_node(&mut self, id: &SpiffeId) -> Result<Option<AttestedNode>> {
        crate::timed::timed("fetch_attested_node", async {
            load_node(&mut self.tx, id.as_str(), "").await
        })
        .await
    }
}

async fn replace_selectors(
    conn: &mut AnyConnection,
    id: &str,
    selectors: &Selectors,
) -> Result<()> {
    let bk = backend_of(conn);
    q(
        bk,
        "DELETE FROM node_selectors WHERE spiffe_id = $1",
        &[Arg::from(id)],
    )
    .execute(&mut *conn)
    .await?;
    for s in selectors.iter() {
        q(
            bk,
            "INSERT INTO node_selectors (spiffe_id, type, value) VALUES ($1, $2, $3)",
            &[Arg::from(id), Arg::from(s.kind()), Arg::from(s.value())],
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn load_selectors(conn: &mut AnyConnection, id: &str) -> Result<Selectors> {
    let bk = backend_of(conn);
    let rows = q(
        bk,
        "SELECT type, value FROM node_selectors WHERE spiffe_id = $1",
        &[Arg::from(id)],
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Selector::new(sql::text(r, "type")?, sql::text(r, "value")?)
                .map_err(|e| Error::corrupt("node selector", e))
        })
        .collect()
}

async fn load_node(conn: &mut AnyConnection, id: &str, lock: &str) -> Result<Option<AttestedNode>> {
    let bk = backend_of(conn);
    let mut sql = Sql::new("SELECT ");
    sql.push(NODE_COLUMNS)
        .push(" FROM attested_nodes n WHERE n.spiffe_id = ")
        .bind(id)
        .push(lock);
    let rows = sql.query(bk).fetch_all(&mut *conn).await?;
    Ok(hydrate(conn, &rows).await?.into_iter().next())
}

fn push_node_filter(sql: &mut Sql, f: &NodeFilter) {
    if let Some(t) = &f.by_attestation_type {
        sql.push(" AND n.attestation_type = ").bind(t.as_str());
    }
    if let Some(banned) = f.by_banned {
        if banned {
            sql.push(" AND n.cert_serial_number = '' AND n.new_cert_serial_number = ''");
        } else {
            sql.push(" AND (n.cert_serial_number <> '' OR n.new_cert_serial_number <> '')");
        }
    }
    if let Some(c) = f.by_can_reattest {
        sql.push(" AND n.can_reattest = ").bind(c);
    }
    if let Some(t) = f.by_expires_before {
        sql.push(" AND n.cert_not_after < ").bind(t);
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
                table: "node_selectors",
                fk: "spiffe_id",
                owner: "n.spiffe_id",
                cols: &["type", "value"],
            },
            &elems,
            sf.mode,
        );
    }
}

async fn hydrate(conn: &mut AnyConnection, rows: &[AnyRow]) -> Result<Vec<AttestedNode>> {
    let bk = backend_of(conn);
    let mut nodes = Vec::with_capacity(rows.len());
    for r in rows {
        nodes.push(AttestedNode {
            spiffe_id: sql::parse("node SPIFFE ID", &sql::text(r, "spiffe_id")?)?,
            attestation_type: sql::text(r, "attestation_type")?,
            cert_serial_number: sql::text(r, "cert_serial_number")?,
            cert_not_after: sql::int(r, "cert_not_after")?,
            new_cert_serial_number: sql::text(r, "new_cert_serial_number")?,
            new_cert_not_after: sql::int(r, "new_cert_not_after")?,
            can_reattest: sql::flag(r, "can_reattest")?,
            agent_version: sql::text(r, "agent_version")?,
            selectors: Selectors::new(),
        });
    }
    for chunk in nodes.chunks_mut(CHUNK) {
        let index: HashMap<String, usize> = chunk
            .iter()
            .enumerate()
            .map(|(i, n)| (n.spiffe_id.as_str().to_owned(), i))
            .collect();
        let mut sel: Vec<Vec<Selector>> = vec![Vec::new(); chunk.len()];
        let mut sql =
            Sql::new("SELECT spiffe_id, type, value FROM node_selectors WHERE spiffe_id IN (");
        push_list(
            &mut sql,
            chunk.iter().map(|n| Arg::from(n.spiffe_id.as_str())),
        );
        sql.push(")");
        for r in sql.query(bk).fetch_all(&mut *conn).await? {
            let id = sql::text(&r, "spiffe_id")?;
            let s = Selector::new(sql::text(&r, "type")?, sql::text(&r, "value")?)
                .map_err(|e| Error::corrupt("node selector", e))?;
            if let Some(&i) = index.get(&id) {
                sel[i].push(s);
            }
        }
        for (n, s) in chunk.iter_mut().zip(sel) {
            n.selectors = Selectors::from(s);
        }
    }
    Ok(nodes)
}
