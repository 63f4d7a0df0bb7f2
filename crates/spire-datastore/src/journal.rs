//! The CA journal: one opaque blob per server (keyed by a server ID; a single server uses any
//! fixed key).

use crate::error::Result;
use crate::sql::{self, Arg, q};
use crate::store::{Backend, DataStore};

impl DataStore {
    /// The journal stored under `server_id`, if any.
    pub async fn ca_journal(&self, server_id: &str) -> Result<Option<Vec<u8>>> {
        crate::timed::timed("fetch_ca_journal", async {
            let bk = self.backend();
            let row = q(
                bk,
                "SELECT data FROM ca_journals WHERE server_id = $1",
                &[Arg::from(server_id)],
            )
            .fetch_optional(&self.inner.reader)
            .await?;
            row.map(|r| sql::bytes(&r, "data")).transpose()
        })
        .await
    }

    /// Stores (creates or replaces) the journal under `server_id`.
    pub async fn set_ca_journal(&self, server_id: &str, data: &[u8]) -> Result<()> {
        crate::timed::timed("set_ca_journal", async {
            let bk = self.backend();
            let text = match bk {
                Backend::Mysql => {
                    "INSERT INTO ca_journals (server_id, data, updated_at) VALUES ($1, $2, $3) \
                 ON DUPLICATE KEY UPDATE data = VALUES(data), updated_at = VALUES(updated_at)"
                }
                _ => {
                    "INSERT INTO ca_journals (server_id, data, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (server_id) DO UPDATE SET data = excluded.data, \
                 updated_at = excluded.updated_at"
                }
            };
            q(
                bk,
                text,
                &[
                    Arg::from(server_id),
                    Arg::Bytes(data.to_vec()),
                    Arg::Int(self.now()),
                ],
            )
            .execute(&self.inner.writer)
            .await?;
            Ok(())
        })
        .await
    }
}
