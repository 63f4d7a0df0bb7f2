//! Datastore integration tests. Every test function runs against SQLite (temp file) and, when
//! `SPIRE_TEST_POSTGRES_URL` / `SPIRE_TEST_MYSQL_URL` are set, against a fresh PostgreSQL and
//! MySQL/MariaDB database. Under `CI=true` those variants fail when the variable is missing.

// Test helpers outside #[test] functions unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod bulk;
mod bundles;
mod changes;
mod entries;
mod misc;
mod nodes;
