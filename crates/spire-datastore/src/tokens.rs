//! Join tokens. Only the SHA-256 of a token is stored; tokens are never logged.

use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

use crate::error::{Error, Result};
use crate::sql::{self, Arg, q};
use crate::store::{Backend, DataStore, WriteTx, backend_of};
use crate::types::{JoinTokenStatus, ObjectKind};

impl DataStore {
    /// Stores a join token valid until `expires_at` (Unix seconds).
    /// [`Error::AlreadyExists`] if the same token is already stored.
    pub async fn create_join_token(&self, token: &str, expires_at: i64) -> Result<()> {
        crate::timed::timed("create_join_token", async {
            let bk = self.backend();
            let hash = token_hash(token);
            let res = q(
                bk,
                "INSERT INTO join_tokens (token_hash, expires_at) VALUES ($1, $2)",
                &[Arg::from(hash), Arg::Int(expires_at)],
            )
            .execute(&self.inner.writer)
            .await
            .map_err(Error::from);
            match res {
                Ok(_) => Ok(()),
                Err(e) if e.is_unique_violation() => Err(Error::AlreadyExists {
                    kind: ObjectKind::JoinToken,
                    // Never echo the token itself.
                    id: "<redacted>".into(),
                }),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Consumes a token in its own transaction: see [`WriteTx::consume_join_token`].
    pub async fn consume_join_token(&self, token: &str, now: i64) -> Result<JoinTokenStatus> {
        let mut tx = self.begin().await?;
        let status = tx.consume_join_token(token, now).await?;
        tx.commit().await?;
        Ok(status)
    }

    /// Whether a token is stored and unexpired at `now`, without consuming it.
    pub async fn join_token_exists(&self, token: &str, now: i64) -> Result<bool> {
        crate::timed::timed("fetch_join_token", async {
            let bk = self.backend();
            let row = q(
                bk,
                "SELECT expires_at FROM join_tokens WHERE token_hash = $1",
                &[Arg::from(token_hash(token))],
            )
            .fetch_optional(&self.inner.reader)
            .await?;
            Ok(match row {
                Some(r) => sql::int(&r, "expires_at")? > now,
                None => false,
            })
        })
        .await
    }

    /// Deletes every token that expired before `before`; returns how many.
    pub async fn prune_join_tokens(&self, before: i64) -> Result<u64> {
        crate::timed::timed("prune_join_tokens", async {
            let bk = self.backend();
            let res = q(
                bk,
                "DELETE FROM join_tokens WHERE expires_at < $1",
                &[Arg::Int(before)],
            )
            .execute(&self.inner.writer)
            .await?;
            Ok(res.rows_affected())
        })
        .await
    }
}

impl WriteTx {
    /// Deletes the token and reports whether it existed and was unexpired at `now` (Unix
    /// seconds). Single use: of concurrent consumers exactly one sees `Valid`. Call it in the
    /// transaction that creates the attested node so a failed attestation does not burn it.
    pub async fn consume_join_token(&mut self, token: &str, now: i64) -> Result<JoinTokenStatus> {
        crate::timed::timed("consume_join_token", async {
            consume(&mut self.tx, token, now).await
        })
        .await
    }
}

async fn consume(conn: &mut AnyConnection, token: &str, now: i64) -> Result<JoinTokenStatus> {
    let bk = backend_of(conn);
    let hash = token_hash(token);
    let row = if bk == Backend::Mysql {
        // No DELETE … RETURNING on MySQL: read the expiry, then let the DELETE decide. Of two
        // racing consumers the second DELETE waits for the first to commit and then removes
        // nothing, so only one sees the row go.
        let row = q(
            bk,
            "SELECT expires_at FROM join_tokens WHERE token_hash = $1",
            &[Arg::from(hash.as_str())],
        )
        .fetch_optional(&mut *conn)
        .await?;
        let deleted = q(
            bk,
            "DELETE FROM join_tokens WHERE token_hash = $1",
            &[Arg::from(hash.as_str())],
        )
        .execute(&mut *conn)
        .await?
        .rows_affected();
        row.filter(|_| deleted == 1)
    } else {
        q(
            bk,
            "DELETE FROM join_tokens WHERE token_hash = $1 RETURNING expires_at",
            &[Arg::from(hash)],
        )
        .fetch_optional(&mut *conn)
        .await?
    };
    Ok(match row {
        None => JoinTokenStatus::NotFound,
        Some(r) => {
            let expires_at = sql::int(&r, "expires_at")?;
            if expires_at > now {
                JoinTokenStatus::Valid { expires_at }
            } else {
                JoinTokenStatus::Expired { expires_at }
            }
        }
    })
}

/// Hex SHA-256 of the token: the stored key.
fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}
