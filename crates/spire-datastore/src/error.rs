//! The datastore's error type.

use crate::types::{Entry, ObjectKind};

/// Everything a datastore operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The datastore configuration is unusable (unknown `database_type`, bad connection string).
    #[error("invalid datastore configuration: {0}")]
    Config(String),
    /// The database could not be opened or reached when the store was opened.
    #[error("cannot open the {database_type} datastore at {target}")]
    Open {
        /// `sqlite3`, `postgres` or `mysql`.
        database_type: &'static str,
        /// The file path, or the server's host, port and database (never the password).
        target: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// The SQLite database file, or the directory holding it, cannot be written (read-only
    /// file system, permissions); found before any connection is attempted.
    #[error("cannot open the sqlite3 datastore at {path}: {what} is not writable")]
    NotWritable {
        /// The database file.
        path: String,
        /// `the database file` or `its directory <dir>`.
        what: String,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },
    /// The database rejected or failed a statement, or could not be reached.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// Applying the schema migrations failed.
    #[error("applying datastore schema migrations failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The object does not exist.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// What kind of object was looked up.
        kind: ObjectKind,
        /// Its identifier.
        id: String,
    },
    /// A registration entry with the same SPIFFE ID, parent ID and selector set (or the same
    /// entry ID) already exists; the existing entry is carried.
    #[error("registration entry already exists (existing entry {:?})", .0.id)]
    EntryAlreadyExists(Box<Entry>),
    /// An object other than an entry with this identifier already exists.
    #[error("{kind} {id:?} already exists")]
    AlreadyExists {
        /// What kind of object was being created.
        kind: ObjectKind,
        /// Its identifier.
        id: String,
    },
    /// An entry federates with a trust domain for which no bundle is stored.
    #[error("unable to find federated bundle {0:?} (create the bundle before federating with it)")]
    FederatedBundleNotFound(String),
    /// A bundle cannot be deleted with mode RESTRICT while entries federate with it.
    #[error(
        "cannot delete bundle {trust_domain:?}: {entries} registration entries federate with it (use mode DISSOCIATE or DELETE)"
    )]
    BundleInUse {
        /// The bundle's trust domain.
        trust_domain: String,
        /// How many entries federate with it.
        entries: i64,
    },
    /// A prune would remove every X.509 authority of a bundle.
    #[error("prune of bundle {0:?} would remove every X.509 authority")]
    PruneWouldEmptyBundle(String),
    /// An argument is malformed (e.g. an X.509 authority that is not a DER certificate).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A stored row cannot be turned back into a domain value.
    #[error("stored {what} is corrupt: {reason}")]
    Corrupt {
        /// Which value was read.
        what: &'static str,
        /// Why it could not be decoded.
        reason: String,
    },
}

impl Error {
    pub(crate) fn not_found(kind: ObjectKind, id: impl Into<String>) -> Self {
        Error::NotFound {
            kind,
            id: id.into(),
        }
    }

    /// Turns a unique-constraint violation into [`Error::AlreadyExists`].
    pub(crate) fn already_exists_if_unique(self, kind: ObjectKind, id: &str) -> Self {
        if self.is_unique_violation() {
            Error::AlreadyExists {
                kind,
                id: id.to_owned(),
            }
        } else {
            self
        }
    }

    pub(crate) fn corrupt(what: &'static str, reason: impl std::fmt::Display) -> Self {
        Error::Corrupt {
            what,
            reason: reason.to_string(),
        }
    }

    /// True when the database could not be reached or stopped answering (connection refused
    /// or reset, pool timeout, closed pool): a transient condition a caller may retry, which
    /// the server reports as `Unavailable`.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Sql(e) | Error::Open { source: e, .. } => matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            ),
            _ => false,
        }
    }

    /// True when the error is a unique-constraint violation reported by the database.
    pub(crate) fn is_unique_violation(&self) -> bool {
        match self {
            Error::Sql(sqlx::Error::Database(e)) => e.is_unique_violation(),
            _ => false,
        }
    }
}

/// Shorthand for datastore results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_database_is_unavailable_other_failures_are_not() {
        let io = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(Error::Sql(sqlx::Error::Io(io())).is_unavailable());
        assert!(Error::Sql(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(
            Error::Open {
                database_type: "postgres",
                target: "127.0.0.1:5432/spire".into(),
                source: sqlx::Error::Io(io()),
            }
            .is_unavailable()
        );
        assert!(!Error::Sql(sqlx::Error::RowNotFound).is_unavailable());
        assert!(!Error::Config("bad".into()).is_unavailable());
    }
}
