//! SQL datastore of the SPIRE server: registration entries, attested nodes and their selectors,
//! join tokens, trust bundles, federation relationships, the CA journal and an ordered change
//! log, on embedded SQLite (default), PostgreSQL or MySQL/MariaDB through sqlx.
//!
//! Invariants:
//! - This is the only crate that contains SQL. Queries use `$N` placeholders and run through
//!   sqlx's `Any` driver, so one set of queries serves every backend (for MySQL the one SQL
//!   layer rewrites `$N` into `?`; the few statements with no common spelling — upsert, delete
//!   returning, shared row locks — are chosen per backend); each backend has its own migration
//!   set (`migrations/sqlite`, `migrations/postgres`, `migrations/mysql`), applied on open.
//! - On PostgreSQL every transaction that appends to the change log also notifies
//!   [`CHANGE_LOG_CHANNEL`]; [`DataStore::change_notifications`] turns that into wake-ups for
//!   followers in other processes (HA servers). Other backends' followers poll.
//! - Every operation that writes more than one row runs in one transaction, and every write to
//!   entries, nodes, bundles and federation relationships appends to `change_log` in that same
//!   transaction (see [`changes`] for how to follow the log, including out-of-order commits on
//!   PostgreSQL).
//! - SQLite runs in WAL mode with `synchronous = FULL` and a single writer connection: a write
//!   that returned `Ok` has been fsynced.
//! - Duplicate registration entries (same SPIFFE ID, parent ID and selector set) are impossible:
//!   a unique index on a hash of that triple backs the check.
//! - Join tokens are stored as SHA-256 hashes and never logged; a token is consumed at most once.
//! - Times are Unix seconds taken from the injected [`spire_spiffe::Clock`].
//! - Opening a store installs sqlx's default `Any` drivers; no other crate may install `Any`
//!   drivers of its own.
//!
//! Batches: [`DataStore::create_entries`] commits **each item in its own transaction** (as SPIRE
//! does), so every acknowledged item is durable and a failed item leaves nothing behind;
//! [`DataStore::create_entries_atomic`] commits all or nothing. Operations that must commit
//! together across kinds (consume a join token + create the node + set its selectors) use a
//! [`WriteTx`] from [`DataStore::begin`].
//!
//! Metrics: every public operation is counted and timed (`datastore_operations_total` and
//! `datastore_operation_duration_seconds`, labelled with SPIRE's operation name and the outcome)
//! through one wrapper, `timed`.

mod bulk;
mod bundles;
pub mod changes;
mod entries;
mod error;
mod federation;
mod journal;
mod marks;
mod nodes;
mod notify;
mod sets;
mod sql;
mod store;
mod timed;
mod tokens;
mod types;

pub use bulk::BULK_PAGE;
pub use changes::ChangeFollower;
pub use error::{Error, Result};
pub use notify::ChangeNotifications;
pub use store::{Backend, CHANGE_LOG_CHANNEL, DataStore, DataStoreConfig, WriteTx};
pub use types::{
    AttestedNode, Bundle, BundleDeleteMode, BundleEndpointProfile, Change, ChangeKind, ChangeOp,
    Entry, EntryFilter, EntryMask, FederatesWithFilter, FederationRelationship,
    FederationRelationshipMask, JoinTokenStatus, JwtAuthority, MatchMode, NodeFilter, NodeUpdate,
    ObjectKind, Page, Pagination, SelectorFilter, X509Authority,
};
