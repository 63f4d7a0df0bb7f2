//! The change log: read API and a follower that tolerates out-of-order commits.
//!
//! Every write to entries, attested nodes (including node selectors), bundles and federation
//! relationships appends a [`Change`] row in the same transaction, so a committed change and its
//! log row become visible together.
//!
//! **Gaps.** On SQLite there is a single writer and ids commit in order. On PostgreSQL two
//! transactions can take ids 7 and 8 and commit 8 first: a reader then sees 8 without 7, and 7
//! appears later (or never, if its transaction rolled back). Reading "everything after the
//! highest id seen" would then skip 7 forever. [`ChangeFollower`] remembers every skipped id
//! below its cursor together with when it noticed it, asks for those ids again on each poll,
//! and gives up on one after a timeout (a rolled-back transaction leaves a permanent hole). A
//! timeout should be much longer than the longest write transaction.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use sqlx::any::AnyRow;

use crate::entries::push_list;
use crate::error::{Error, Result};
use crate::sql::{self, Arg, Sql, q};
use crate::store::DataStore;
use crate::types::{Change, ChangeKind, ChangeOp};

const COLUMNS: &str = "id, kind, object_id, op, created_at";

/// Most skipped ids a follower tracks; beyond that the oldest are dropped (and reported by
/// [`ChangeFollower::take_expired`], so the caller can fall back to a full reload).
const MAX_GAPS: usize = 10_000;

impl DataStore {
    /// Up to `limit` changes with `id > after`, in id order.
    pub async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>> {
        crate::timed::timed("list_changes", async {
            let bk = self.backend();
            let mut sql = Sql::new("SELECT ");
            sql.push(COLUMNS)
                .push(" FROM change_log WHERE id > ")
                .bind(after)
                .push(" ORDER BY id LIMIT ")
                .bind(i64::from(limit.max(1)));
            let rows = sql.query(bk).fetch_all(&self.inner.reader).await?;
            rows.iter().map(decode).collect()
        })
        .await
    }

    /// The changes with these ids that exist now, in id order.
    pub async fn changes_by_id(&self, ids: &[i64]) -> Result<Vec<Change>> {
        crate::timed::timed("fetch_changes", async {
            let bk = self.backend();
            let mut out = Vec::new();
            for chunk in ids.chunks(500) {
                let mut sql = Sql::new("SELECT ");
                sql.push(COLUMNS).push(" FROM change_log WHERE id IN (");
                push_list(&mut sql, chunk.iter().map(|i| Arg::Int(*i)));
                sql.push(") ORDER BY id");
                let rows = sql.query(bk).fetch_all(&self.inner.reader).await?;
                for r in &rows {
                    out.push(decode(r)?);
                }
            }
            out.sort_by_key(|c| c.id);
            Ok(out)
        })
        .await
    }

    /// The highest change id (0 when the log is empty).
    pub async fn latest_change_id(&self) -> Result<i64> {
        crate::timed::timed("fetch_latest_change_id", async {
            let bk = self.backend();
            let row = q(bk, "SELECT COALESCE(MAX(id), 0) AS n FROM change_log", &[])
                .fetch_one(&self.inner.reader)
                .await?;
            sql::int(&row, "n")
        })
        .await
    }

    /// Deletes change-log rows written before `before` (Unix seconds); returns how many.
    pub async fn prune_changes(&self, before: i64) -> Result<u64> {
        crate::timed::timed("prune_changes", async {
            let bk = self.backend();
            let res = q(
                bk,
                "DELETE FROM change_log WHERE created_at < $1",
                &[Arg::Int(before)],
            )
            .execute(&self.inner.writer)
            .await?;
            Ok(res.rows_affected())
        })
        .await
    }
}

fn decode(r: &AnyRow) -> Result<Change> {
    let kind = sql::text(r, "kind")?;
    let op = sql::text(r, "op")?;
    Ok(Change {
        id: sql::int(r, "id")?,
        kind: ChangeKind::parse(&kind).ok_or_else(|| Error::corrupt("change kind", &kind))?,
        object_id: sql::text(r, "object_id")?,
        op: ChangeOp::parse(&op).ok_or_else(|| Error::corrupt("change op", &op))?,
        created_at: sql::int(r, "created_at")?,
    })
}

/// Follows the change log from a starting id, tracking skipped ids (see the module docs).
///
/// Cold start: `let start = ds.latest_change_id()?;` then load the full state
/// ([`DataStore::list_all_entries`], [`DataStore::list_all_nodes_with_selectors`]), then
/// `ChangeFollower::new(start, timeout)`. Changes committed during the load are replayed, which
/// is harmless because a follower re-reads the object a change names.
#[derive(Debug, Clone)]
pub struct ChangeFollower {
    cursor: i64,
    gaps: BTreeMap<i64, SystemTime>,
    gap_timeout: Duration,
    expired: Vec<i64>,
}

impl ChangeFollower {
    /// A follower that has seen every change up to and including `after`.
    pub fn new(after: i64, gap_timeout: Duration) -> Self {
        ChangeFollower {
            cursor: after,
            gaps: BTreeMap::new(),
            gap_timeout,
            expired: Vec::new(),
        }
    }

    /// The highest id seen.
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    /// Ids below the cursor not seen yet.
    pub fn pending_gaps(&self) -> Vec<i64> {
        self.gaps.keys().copied().collect()
    }

    /// Ids given up on since the last call (timed out or over the tracking limit). A caller
    /// that must not miss anything can do a full reload when this is non-empty.
    pub fn take_expired(&mut self) -> Vec<i64> {
        std::mem::take(&mut self.expired)
    }

    /// Reads newly visible changes: skipped ids that have appeared, then up to `limit` changes
    /// after the cursor. `now` comes from the caller's clock and drives gap timeouts.
    pub async fn poll(
        &mut self,
        ds: &DataStore,
        now: SystemTime,
        limit: u32,
    ) -> Result<Vec<Change>> {
        self.expire(now);
        let gaps: Vec<i64> = self.gaps.keys().copied().collect();
        let mut out = if gaps.is_empty() {
            Vec::new()
        } else {
            ds.changes_by_id(&gaps).await?
        };
        let fresh = ds.changes_since(self.cursor, limit).await?;
        out.extend(fresh);
        Ok(self.observe(out, now))
    }

    /// Applies a batch of changes read from the log (gap fills and new rows in any order) and
    /// returns those not seen before, in id order. Exposed for callers that read the log
    /// themselves.
    pub fn observe(&mut self, mut changes: Vec<Change>, now: SystemTime) -> Vec<Change> {
        changes.sort_by_key(|c| c.id);
        changes.dedup_by_key(|c| c.id);
        let mut out = Vec::with_capacity(changes.len());
        for c in changes {
            if c.id <= self.cursor {
                if self.gaps.remove(&c.id).is_some() {
                    out.push(c);
                }
                continue;
            }
            let mut missing = self.cursor + 1;
            while missing < c.id {
                self.gaps.insert(missing, now);
                missing += 1;
            }
            self.cursor = c.id;
            out.push(c);
        }
        while self.gaps.len() > MAX_GAPS {
            if let Some((id, _)) = self.gaps.pop_first() {
                self.expired.push(id);
            }
        }
        out
    }

    fn expire(&mut self, now: SystemTime) {
        let timeout = self.gap_timeout;
        let expired: Vec<i64> = self
            .gaps
            .iter()
            .filter(|(_, seen)| now.duration_since(**seen).is_ok_and(|d| d >= timeout))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.gaps.remove(&id);
            self.expired.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(id: i64) -> Change {
        Change {
            id,
            kind: ChangeKind::Entry,
            object_id: format!("e{id}"),
            op: ChangeOp::Create,
            created_at: 0,
        }
    }

    #[test]
    fn follower_tracks_and_fills_gaps() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut f = ChangeFollower::new(5, Duration::from_secs(60));
        let got = f.observe(vec![ch(6), ch(9)], t0);
        assert_eq!(got.iter().map(|c| c.id).collect::<Vec<_>>(), vec![6, 9]);
        assert_eq!(f.cursor(), 9);
        assert_eq!(f.pending_gaps(), vec![7, 8]);
        // 8 commits late; 9 is re-read and ignored.
        let got = f.observe(vec![ch(8), ch(9), ch(10)], t0);
        assert_eq!(got.iter().map(|c| c.id).collect::<Vec<_>>(), vec![8, 10]);
        assert_eq!(f.pending_gaps(), vec![7]);
        // 7 never arrives: it times out.
        f.expire(t0 + Duration::from_secs(59));
        assert_eq!(f.pending_gaps(), vec![7]);
        f.expire(t0 + Duration::from_secs(60));
        assert!(f.pending_gaps().is_empty());
        assert_eq!(f.take_expired(), vec![7]);
        assert!(f.take_expired().is_empty());
    }

    #[test]
    fn follower_ignores_old_ids_that_were_not_gaps() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut f = ChangeFollower::new(3, Duration::from_secs(1));
        assert!(f.observe(vec![ch(1), ch(3)], t0).is_empty());
        assert_eq!(f.cursor(), 3);
    }
}
