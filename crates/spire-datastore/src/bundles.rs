//! Trust bundles (local and federated), stored as one JSON document per trust domain.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use spire_spiffe::TrustDomain;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use crate::entries::{delete_entry_rows, dissociate, entries_federating_with};
use crate::error::{Error, Result};
use crate::sql::{self, Arg, Sql, q};
use crate::store::{Backend, DataStore, WriteTx, backend_of, for_update, log_change};
use crate::types::{
    Bundle, BundleDeleteMode, ChangeKind, ChangeOp, JwtAuthority, ObjectKind, Page, Pagination,
    X509Authority,
};

impl DataStore {
    /// Stores a new bundle; [`Error::AlreadyExists`] if one exists for the trust domain.
    pub async fn create_bundle(&self, bundle: &Bundle) -> Result<Bundle> {
        crate::timed::timed("create_bundle", async {
            let now = self.now();
            let _marked = self.inner.marks.guard(crate::marks::BUNDLE);
            let mut tx = self.write_tx().await?;
            if load(&mut tx, bundle.trust_domain.as_str(), "")
                .await?
                .is_some()
            {
                return Err(Error::AlreadyExists {
                    kind: ObjectKind::Bundle,
                    id: bundle.trust_domain.as_str().to_owned(),
                });
            }
            insert(&mut tx, bundle, now).await.map_err(|e| {
                e.already_exists_if_unique(ObjectKind::Bundle, bundle.trust_domain.as_str())
            })?;
            tx.commit().await?;
            Ok(bundle.clone())
        })
        .await
    }

    /// The bundle of `trust_domain`, if any.
    pub async fn get_bundle(&self, trust_domain: &TrustDomain) -> Result<Option<Bundle>> {
        crate::timed::timed("fetch_bundle", async {
            let mut conn = self.inner.reader.acquire().await?;
            load(&mut conn, trust_domain.as_str(), "").await
        })
        .await
    }

    /// Creates or replaces the bundle of its trust domain (stored as given, including the
    /// sequence number).
    pub async fn set_bundle(&self, bundle: &Bundle) -> Result<Bundle> {
        let mut tx = self.begin().await?;
        tx.set_bundle(bundle).await?;
        tx.commit().await?;
        Ok(bundle.clone())
    }

    /// Replaces an existing bundle; [`Error::NotFound`] if there is none.
    pub async fn update_bundle(&self, bundle: &Bundle) -> Result<Bundle> {
        crate::timed::timed("update_bundle", async {
            self.modify_bundle(&bundle.trust_domain, |b| {
                *b = bundle.clone();
                Ok(false)
            })
            .await
        })
        .await
    }

    /// Adds the X.509 and JWT authorities of `bundle` that are not stored yet (an existing
    /// authority is never duplicated). If anything was added the sequence number is
    /// incremented. Creates the bundle if none exists. Returns the stored result.
    ///
    /// Servers sharing a database (HA) may append to a missing bundle at the same time: the
    /// one whose insert loses the race appends to the winner's bundle instead.
    pub async fn append_bundle(&self, bundle: &Bundle) -> Result<Bundle> {
        crate::timed::timed("append_bundle", async {
            match self.append_bundle_once(bundle).await {
                Err(e) if e.is_unique_violation() => self.append_bundle_once(bundle).await,
                other => other,
            }
        })
        .await
    }

    async fn append_bundle_once(&self, bundle: &Bundle) -> Result<Bundle> {
        let now = self.now();
        let _marked = self.inner.marks.guard(crate::marks::BUNDLE);
        let mut tx = self.write_tx().await?;
        let td = bundle.trust_domain.as_str();
        let out = match load(&mut tx, td, self.for_update()).await? {
            None => {
                insert(&mut tx, bundle, now).await?;
                bundle.clone()
            }
            Some(mut cur) => {
                let mut changed = false;
                for a in &bundle.x509_authorities {
                    if !cur.x509_authorities.iter().any(|c| c.der == a.der) {
                        cur.x509_authorities.push(a.clone());
                        changed = true;
                    }
                }
                for k in &bundle.jwt_authorities {
                    if !cur
                        .jwt_authorities
                        .iter()
                        .any(|c| c.key_id == k.key_id && c.public_key == k.public_key)
                    {
                        cur.jwt_authorities.push(k.clone());
                        changed = true;
                    }
                }
                if changed {
                    cur.sequence_number += 1;
                    save(&mut tx, &cur, now).await?;
                }
                cur
            }
        };
        tx.commit().await?;
        Ok(out)
    }

    /// Reads, changes and writes a bundle in one transaction (row-locked on PostgreSQL). `f`
    /// returns whether it made a change that must bump the sequence number. The trust domain
    /// cannot be changed. [`Error::NotFound`] if there is no bundle.
    pub async fn modify_bundle<F>(&self, trust_domain: &TrustDomain, f: F) -> Result<Bundle>
    where
        F: FnOnce(&mut Bundle) -> Result<bool> + Send,
    {
        crate::timed::timed("modify_bundle", async {
            let now = self.now();
            let _marked = self.inner.marks.guard(crate::marks::BUNDLE);
            let mut tx = self.write_tx().await?;
            let td = trust_domain.as_str();
            let mut b = load(&mut tx, td, self.for_update())
                .await?
                .ok_or_else(|| Error::not_found(ObjectKind::Bundle, td))?;
            if f(&mut b)? {
                b.sequence_number += 1;
            }
            b.trust_domain = trust_domain.clone();
            save(&mut tx, &b, now).await?;
            tx.commit().await?;
            Ok(b)
        })
        .await
    }

    /// Removes X.509 authorities whose certificate expired before `before` and JWT authorities
    /// with a non-zero `expires_at` before it. Bumps the sequence number if anything was
    /// removed and returns whether it did. Fails rather than remove every X.509 authority.
    pub async fn prune_bundle(&self, trust_domain: &TrustDomain, before: i64) -> Result<bool> {
        crate::timed::timed("prune_bundle", async {
            let now = self.now();
            let mut tx = self.write_tx().await?;
            let td = trust_domain.as_str();
            let mut b = load(&mut tx, td, self.for_update())
                .await?
                .ok_or_else(|| Error::not_found(ObjectKind::Bundle, td))?;
            let mut keep = Vec::with_capacity(b.x509_authorities.len());
            for a in &b.x509_authorities {
                if cert_not_after(&a.der)? >= before {
                    keep.push(a.clone());
                }
            }
            if keep.is_empty() && !b.x509_authorities.is_empty() {
                return Err(Error::PruneWouldEmptyBundle(td.to_owned()));
            }
            let jwt_count = b.jwt_authorities.len();
            b.jwt_authorities
                .retain(|k| k.expires_at == 0 || k.expires_at >= before);
            let changed =
                keep.len() != b.x509_authorities.len() || jwt_count != b.jwt_authorities.len();
            if !changed {
                return Ok(false);
            }
            // Marked only when it writes: the periodic check that finds nothing to prune must
            // not send the server's bundle readers to the database (marks: before the write,
            // and again after the commit when the guard drops).
            let _marked = self.inner.marks.guard(crate::marks::BUNDLE);
            b.x509_authorities = keep;
            b.sequence_number += 1;
            save(&mut tx, &b, now).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    /// One page of bundles, ordered by trust domain.
    pub async fn list_bundles(&self, page: &Pagination) -> Result<Page<Bundle>> {
        crate::timed::timed("list_bundles", async {
            let bk = self.backend();
            let mut sql = Sql::new("SELECT trust_domain, data FROM bundles WHERE 1 = 1");
            if !page.token.is_empty() {
                sql.push(" AND trust_domain > ").bind(page.token.as_str());
            }
            sql.push(" ORDER BY trust_domain");
            if page.page_size > 0 {
                sql.push(" LIMIT ").bind(i64::from(page.page_size) + 1);
            }
            let mut rows = sql.query(bk).fetch_all(&self.inner.reader).await?;
            let more = page.page_size > 0 && rows.len() > page.page_size as usize;
            if more {
                rows.truncate(page.page_size as usize);
            }
            let items = rows.iter().map(decode_row).collect::<Result<Vec<_>>>()?;
            let next_page_token = match (more, items.last()) {
                (true, Some(last)) => last.trust_domain.as_str().to_owned(),
                _ => String::new(),
            };
            Ok(Page {
                items,
                next_page_token,
            })
        })
        .await
    }

    /// Number of stored bundles.
    pub async fn count_bundles(&self) -> Result<i64> {
        crate::timed::timed("count_bundles", async {
            let bk = self.backend();
            let row = q(bk, "SELECT COUNT(*) AS n FROM bundles", &[])
                .fetch_one(&self.inner.replica)
                .await?;
            sql::int(&row, "n")
        })
        .await
    }

    /// Deletes a bundle. With [`BundleDeleteMode::Restrict`] it fails if entries federate with
    /// it; `Dissociate` removes the trust domain from those entries; `Delete` deletes them.
    /// All in one transaction. [`Error::NotFound`] if there is no bundle.
    pub async fn delete_bundle(
        &self,
        trust_domain: &TrustDomain,
        mode: BundleDeleteMode,
    ) -> Result<()> {
        crate::timed::timed("delete_bundle", async {
            let bk = self.backend();
            let now = self.now();
            let _marked = self.inner.marks.guard(crate::marks::BUNDLE);
            let mut tx = self.write_tx().await?;
            let td = trust_domain.as_str();
            if load(&mut tx, td, self.for_update()).await?.is_none() {
                return Err(Error::not_found(ObjectKind::Bundle, td));
            }
            let entries = entries_federating_with(&mut tx, td).await?;
            if !entries.is_empty() {
                match mode {
                    BundleDeleteMode::Restrict => {
                        return Err(Error::BundleInUse {
                            trust_domain: td.to_owned(),
                            entries: entries.len() as i64,
                        });
                    }
                    BundleDeleteMode::Dissociate => {
                        for id in &entries {
                            dissociate(&mut tx, id, td, now).await?;
                        }
                    }
                    BundleDeleteMode::Delete => {
                        for id in &entries {
                            delete_entry_rows(&mut tx, id, now).await?;
                        }
                    }
                }
            }
            q(
                bk,
                "DELETE FROM bundles WHERE trust_domain = $1",
                &[Arg::from(td)],
            )
            .execute(&mut *tx)
            .await?;
            log_change(&mut tx, ChangeKind::Bundle, td, ChangeOp::Delete, now).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }
}

impl WriteTx {
    /// See [`DataStore::set_bundle`].
    pub async fn set_bundle(&mut self, bundle: &Bundle) -> Result<()> {
        crate::timed::timed("set_bundle", async {
            self.touch(crate::marks::BUNDLE);
            set_bundle_tx(&mut self.tx, self.backend, bundle, self.now).await
        })
        .await
    }
}

pub(crate) async fn set_bundle_tx(
    conn: &mut AnyConnection,
    backend: Backend,
    bundle: &Bundle,
    now: i64,
) -> Result<()> {
    let td = bundle.trust_domain.as_str();
    if load(conn, td, for_update(backend)).await?.is_some() {
        save(conn, bundle, now).await
    } else {
        insert(conn, bundle, now).await
    }
}

pub(crate) async fn load(conn: &mut AnyConnection, td: &str, lock: &str) -> Result<Option<Bundle>> {
    let bk = backend_of(conn);
    let mut sql = Sql::new("SELECT trust_domain, data FROM bundles WHERE trust_domain = ");
    sql.bind(td).push(lock);
    let row = sql.query(bk).fetch_optional(&mut *conn).await?;
    row.as_ref().map(decode_row).transpose()
}

async fn insert(conn: &mut AnyConnection, b: &Bundle, now: i64) -> Result<()> {
    let bk = backend_of(conn);
    let td = b.trust_domain.as_str();
    q(
        bk,
        "INSERT INTO bundles (trust_domain, data, created_at, updated_at) VALUES ($1, $2, $3, $3)",
        &[Arg::from(td), Arg::from(encode(b)?), Arg::Int(now)],
    )
    .execute(&mut *conn)
    .await?;
    log_change(conn, ChangeKind::Bundle, td, ChangeOp::Create, now).await
}

async fn save(conn: &mut AnyConnection, b: &Bundle, now: i64) -> Result<()> {
    let bk = backend_of(conn);
    let td = b.trust_domain.as_str();
    q(
        bk,
        "UPDATE bundles SET data = $1, updated_at = $2 WHERE trust_domain = $3",
        &[Arg::from(encode(b)?), Arg::Int(now), Arg::from(td)],
    )
    .execute(&mut *conn)
    .await?;
    log_change(conn, ChangeKind::Bundle, td, ChangeOp::Update, now).await
}

/// `notAfter` of a DER certificate, in Unix seconds.
fn cert_not_after(der: &[u8]) -> Result<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| {
        Error::InvalidArgument(format!("X.509 authority is not a DER certificate: {e}"))
    })?;
    Ok(cert.validity().not_after.timestamp())
}

// === storage format ===

#[derive(Serialize, Deserialize)]
struct StoredBundle {
    #[serde(default)]
    x509_authorities: Vec<StoredX509>,
    #[serde(default)]
    jwt_authorities: Vec<StoredJwt>,
    #[serde(default)]
    refresh_hint: i64,
    #[serde(default)]
    sequence_number: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredX509 {
    der: String,
    #[serde(default)]
    tainted: bool,
}

#[derive(Serialize, Deserialize)]
struct StoredJwt {
    key_id: String,
    public_key: String,
    #[serde(default)]
    expires_at: i64,
    #[serde(default)]
    tainted: bool,
}

fn encode(b: &Bundle) -> Result<String> {
    let s = StoredBundle {
        x509_authorities: b
            .x509_authorities
            .iter()
            .map(|a| StoredX509 {
                der: B64.encode(&a.der),
                tainted: a.tainted,
            })
            .collect(),
        jwt_authorities: b
            .jwt_authorities
            .iter()
            .map(|k| StoredJwt {
                key_id: k.key_id.clone(),
                public_key: B64.encode(&k.public_key),
                expires_at: k.expires_at,
                tainted: k.tainted,
            })
            .collect(),
        refresh_hint: b.refresh_hint,
        sequence_number: b.sequence_number,
    };
    serde_json::to_string(&s).map_err(|e| Error::InvalidArgument(format!("bundle: {e}")))
}

fn decode_row(row: &AnyRow) -> Result<Bundle> {
    let td: TrustDomain = sql::parse("bundle trust domain", &sql::text(row, "trust_domain")?)?;
    let data = sql::text(row, "data")?;
    let s: StoredBundle = serde_json::from_str(&data).map_err(|e| Error::corrupt("bundle", e))?;
    let b64 = |v: &str| B64.decode(v).map_err(|e| Error::corrupt("bundle", e));
    Ok(Bundle {
        trust_domain: td,
        x509_authorities: s
            .x509_authorities
            .iter()
            .map(|a| {
                Ok(X509Authority {
                    der: b64(&a.der)?,
                    tainted: a.tainted,
                })
            })
            .collect::<Result<_>>()?,
        jwt_authorities: s
            .jwt_authorities
            .iter()
            .map(|k| {
                Ok(JwtAuthority {
                    key_id: k.key_id.clone(),
                    public_key: b64(&k.public_key)?,
                    expires_at: k.expires_at,
                    tainted: k.tainted,
                })
            })
            .collect::<Result<_>>()?,
        refresh_hint: s.refresh_hint,
        sequence_number: s.sequence_number,
    })
}
