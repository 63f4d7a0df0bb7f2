//! Federation relationships with other trust domains.

use spire_spiffe::{SpiffeId, TrustDomain};
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use crate::bundles::{self, set_bundle_tx};
use crate::error::{Error, Result};
use crate::sql::{self, Arg, Sql, q};
use crate::store::{DataStore, backend_of, log_change};
use crate::types::{
    BundleEndpointProfile, ChangeKind, ChangeOp, FederationRelationship,
    FederationRelationshipMask, ObjectKind, Page, Pagination,
};

impl DataStore {
    /// Creates a relationship (and stores `trust_domain_bundle`, if given, in the same
    /// transaction). [`Error::AlreadyExists`] if one exists for the trust domain.
    pub async fn create_federation_relationship(
        &self,
        rel: &FederationRelationship,
    ) -> Result<FederationRelationship> {
        crate::timed::timed("create_federation_relationship", async {
            let bk = self.backend();
            let now = self.now();
            let mut tx = self.write_tx().await?;
            let td = rel.trust_domain.as_str();
            if load(&mut tx, td, "").await?.is_some() {
                return Err(Error::AlreadyExists {
                    kind: ObjectKind::FederationRelationship,
                    id: td.to_owned(),
                });
            }
            let (profile, endpoint_id) = profile_columns(&rel.profile);
            q(
                bk,
                "INSERT INTO federation_relationships (trust_domain, bundle_endpoint_url, profile, \
             endpoint_spiffe_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
                &[
                    Arg::from(td),
                    Arg::from(rel.bundle_endpoint_url.as_str()),
                    Arg::from(profile),
                    Arg::from(endpoint_id),
                    Arg::Int(now),
                ],
            )
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                Error::from(e).already_exists_if_unique(ObjectKind::FederationRelationship, td)
            })?;
            if let Some(b) = &rel.trust_domain_bundle {
                set_bundle_tx(&mut tx, self.backend(), &with_td(b, &rel.trust_domain), now).await?;
            }
            log_change(&mut tx, ChangeKind::Federation, td, ChangeOp::Create, now).await?;
            let out = load_full(&mut tx, td).await?;
            tx.commit().await?;
            out.ok_or_else(|| Error::not_found(ObjectKind::FederationRelationship, td))
        })
        .await
    }

    /// The relationship with `trust_domain` (with its stored bundle), if any.
    pub async fn get_federation_relationship(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<FederationRelationship>> {
        crate::timed::timed("fetch_federation_relationship", async {
            let mut conn = self.inner.reader.acquire().await?;
            load_full(&mut conn, trust_domain.as_str()).await
        })
        .await
    }

    /// One page of relationships (with their bundles), ordered by trust domain.
    pub async fn list_federation_relationships(
        &self,
        page: &Pagination,
    ) -> Result<Page<FederationRelationship>> {
        crate::timed::timed("list_federation_relationships", async {
            let bk = self.backend();
            let mut conn = self.inner.reader.acquire().await?;
            let mut sql = Sql::new(
                "SELECT trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id \
             FROM federation_relationships WHERE 1 = 1",
            );
            if !page.token.is_empty() {
                sql.push(" AND trust_domain > ").bind(page.token.as_str());
            }
            sql.push(" ORDER BY trust_domain");
            if page.page_size > 0 {
                sql.push(" LIMIT ").bind(i64::from(page.page_size) + 1);
            }
            let mut rows = sql.query(bk).fetch_all(&mut *conn).await?;
            let more = page.page_size > 0 && rows.len() > page.page_size as usize;
            if more {
                rows.truncate(page.page_size as usize);
            }
            let mut items = Vec::with_capacity(rows.len());
            for r in &rows {
                let mut rel = decode_row(r)?;
                rel.trust_domain_bundle =
                    bundles::load(&mut conn, rel.trust_domain.as_str(), "").await?;
                items.push(rel);
            }
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

    /// Updates the fields selected by `mask`; [`Error::NotFound`] if there is no relationship.
    pub async fn update_federation_relationship(
        &self,
        rel: &FederationRelationship,
        mask: &FederationRelationshipMask,
    ) -> Result<FederationRelationship> {
        crate::timed::timed("update_federation_relationship", async {
            let bk = self.backend();
            let now = self.now();
            let mut tx = self.write_tx().await?;
            let td = rel.trust_domain.as_str();
            let mut sql =
                Sql::new("SELECT trust_domain FROM federation_relationships WHERE trust_domain = ");
            sql.bind(td).push(self.for_update());
            if sql.query(bk).fetch_optional(&mut *tx).await?.is_none() {
                return Err(Error::not_found(ObjectKind::FederationRelationship, td));
            }
            if mask.bundle_endpoint_url {
                q(
                    bk,
                    "UPDATE federation_relationships SET bundle_endpoint_url = $1, updated_at = $2 \
                 WHERE trust_domain = $3",
                    &[
                        Arg::from(rel.bundle_endpoint_url.as_str()),
                        Arg::Int(now),
                        Arg::from(td),
                    ],
                )
                .execute(&mut *tx)
                .await?;
            }
            if mask.profile {
                let (profile, endpoint_id) = profile_columns(&rel.profile);
                q(
                    bk,
                    "UPDATE federation_relationships SET profile = $1, endpoint_spiffe_id = $2, \
                 updated_at = $3 WHERE trust_domain = $4",
                    &[
                        Arg::from(profile),
                        Arg::from(endpoint_id),
                        Arg::Int(now),
                        Arg::from(td),
                    ],
                )
                .execute(&mut *tx)
                .await?;
            }
            if mask.trust_domain_bundle
                && let Some(b) = &rel.trust_domain_bundle
            {
                set_bundle_tx(&mut tx, self.backend(), &with_td(b, &rel.trust_domain), now).await?;
            }
            log_change(&mut tx, ChangeKind::Federation, td, ChangeOp::Update, now).await?;
            let out = load_full(&mut tx, td).await?;
            tx.commit().await?;
            out.ok_or_else(|| Error::not_found(ObjectKind::FederationRelationship, td))
        })
        .await
    }

    /// Deletes the relationship (its bundle stays; delete it with
    /// [`DataStore::delete_bundle`]). [`Error::NotFound`] if there is none.
    pub async fn delete_federation_relationship(&self, trust_domain: &TrustDomain) -> Result<()> {
        crate::timed::timed("delete_federation_relationship", async {
            let bk = self.backend();
            let now = self.now();
            let mut tx = self.write_tx().await?;
            let td = trust_domain.as_str();
            let res = q(
                bk,
                "DELETE FROM federation_relationships WHERE trust_domain = $1",
                &[Arg::from(td)],
            )
            .execute(&mut *tx)
            .await?;
            if res.rows_affected() == 0 {
                return Err(Error::not_found(ObjectKind::FederationRelationship, td));
            }
            log_change(&mut tx, ChangeKind::Federation, td, ChangeOp::Delete, now).await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }
}

fn with_td(b: &crate::types::Bundle, td: &TrustDomain) -> crate::types::Bundle {
    let mut b = b.clone();
    b.trust_domain = td.clone();
    b
}

fn profile_columns(p: &BundleEndpointProfile) -> (&'static str, String) {
    match p {
        BundleEndpointProfile::HttpsWeb => ("https_web", String::new()),
        BundleEndpointProfile::HttpsSpiffe { endpoint_spiffe_id } => {
            ("https_spiffe", endpoint_spiffe_id.as_str().to_owned())
        }
    }
}

async fn load(
    conn: &mut AnyConnection,
    td: &str,
    lock: &str,
) -> Result<Option<FederationRelationship>> {
    let bk = backend_of(conn);
    let mut sql = Sql::new(
        "SELECT trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id \
         FROM federation_relationships WHERE trust_domain = ",
    );
    sql.bind(td).push(lock);
    let row = sql.query(bk).fetch_optional(&mut *conn).await?;
    row.as_ref().map(decode_row).transpose()
}

async fn load_full(conn: &mut AnyConnection, td: &str) -> Result<Option<FederationRelationship>> {
    let Some(mut rel) = load(conn, td, "").await? else {
        return Ok(None);
    };
    rel.trust_domain_bundle = bundles::load(conn, td, "").await?;
    Ok(Some(rel))
}

fn decode_row(r: &AnyRow) -> Result<FederationRelationship> {
    let trust_domain: TrustDomain =
        sql::parse("federation trust domain", &sql::text(r, "trust_domain")?)?;
    let profile = match sql::text(r, "profile")?.as_str() {
        "https_web" => BundleEndpointProfile::HttpsWeb,
        "https_spiffe" => {
            let id: SpiffeId = sql::parse(
                "federation endpoint SPIFFE ID",
                &sql::text(r, "endpoint_spiffe_id")?,
            )?;
            BundleEndpointProfile::HttpsSpiffe {
                endpoint_spiffe_id: id,
            }
        }
        other => return Err(Error::corrupt("federation profile", other)),
    };
    Ok(FederationRelationship {
        trust_domain,
        bundle_endpoint_url: sql::text(r, "bundle_endpoint_url")?,
        profile,
        trust_domain_bundle: None,
    })
}
