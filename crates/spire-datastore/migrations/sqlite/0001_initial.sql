-- spire-rs datastore schema, SQLite dialect.
-- Booleans are stored as INTEGER 0/1 (the same representation as on PostgreSQL, where they are
-- BIGINT), times as Unix seconds.

CREATE TABLE registered_entries (
    id                          TEXT    NOT NULL PRIMARY KEY,
    spiffe_id                   TEXT    NOT NULL,
    parent_id                   TEXT    NOT NULL,
    identity_key                TEXT    NOT NULL,
    x509_svid_ttl               INTEGER NOT NULL DEFAULT 0,
    jwt_svid_ttl                INTEGER NOT NULL DEFAULT 0,
    admin                       INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
    downstream                  INTEGER NOT NULL DEFAULT 0 CHECK (downstream IN (0, 1)),
    expires_at                  INTEGER NOT NULL DEFAULT 0,
    store_svid                  INTEGER NOT NULL DEFAULT 0 CHECK (store_svid IN (0, 1)),
    hint                        TEXT    NOT NULL DEFAULT '',
    created_at                  INTEGER NOT NULL,
    revision_number             INTEGER NOT NULL DEFAULT 0,
    jwt_svid_include_jti        INTEGER NOT NULL DEFAULT 0 CHECK (jwt_svid_include_jti IN (0, 1)),
    disable_x509_svid_prefetch  INTEGER NOT NULL DEFAULT 0 CHECK (disable_x509_svid_prefetch IN (0, 1))
);
CREATE UNIQUE INDEX registered_entries_identity ON registered_entries (identity_key);
CREATE INDEX registered_entries_spiffe_id ON registered_entries (spiffe_id);
CREATE INDEX registered_entries_parent_id ON registered_entries (parent_id);
CREATE INDEX registered_entries_hint ON registered_entries (hint);
CREATE INDEX registered_entries_expires_at ON registered_entries (expires_at);

CREATE TABLE entry_selectors (
    entry_id TEXT NOT NULL REFERENCES registered_entries (id) ON DELETE CASCADE,
    type     TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (entry_id, type, value)
);
CREATE INDEX entry_selectors_type_value ON entry_selectors (type, value);

CREATE TABLE entry_dns_names (
    entry_id TEXT    NOT NULL REFERENCES registered_entries (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    value    TEXT    NOT NULL,
    PRIMARY KEY (entry_id, position)
);

CREATE TABLE entry_federates_with (
    entry_id     TEXT NOT NULL REFERENCES registered_entries (id) ON DELETE CASCADE,
    trust_domain TEXT NOT NULL,
    PRIMARY KEY (entry_id, trust_domain)
);
CREATE INDEX entry_federates_with_td ON entry_federates_with (trust_domain);

CREATE TABLE attested_nodes (
    spiffe_id              TEXT    NOT NULL PRIMARY KEY,
    attestation_type       TEXT    NOT NULL,
    cert_serial_number     TEXT    NOT NULL DEFAULT '',
    cert_not_after         INTEGER NOT NULL DEFAULT 0,
    new_cert_serial_number TEXT    NOT NULL DEFAULT '',
    new_cert_not_after     INTEGER NOT NULL DEFAULT 0,
    can_reattest           INTEGER NOT NULL DEFAULT 0 CHECK (can_reattest IN (0, 1)),
    agent_version          TEXT    NOT NULL DEFAULT '',
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL
);
CREATE INDEX attested_nodes_cert_not_after ON attested_nodes (cert_not_after);
CREATE INDEX attested_nodes_attestation_type ON attested_nodes (attestation_type);

CREATE TABLE node_selectors (
    spiffe_id TEXT NOT NULL,
    type      TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (spiffe_id, type, value)
);
CREATE INDEX node_selectors_type_value ON node_selectors (type, value);

CREATE TABLE join_tokens (
    token_hash TEXT    NOT NULL PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);

CREATE TABLE bundles (
    trust_domain TEXT    NOT NULL PRIMARY KEY,
    data         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE federation_relationships (
    trust_domain        TEXT    NOT NULL PRIMARY KEY,
    bundle_endpoint_url TEXT    NOT NULL,
    profile             TEXT    NOT NULL CHECK (profile IN ('https_web', 'https_spiffe')),
    endpoint_spiffe_id  TEXT    NOT NULL DEFAULT '',
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);

CREATE TABLE ca_journals (
    server_id  TEXT    NOT NULL PRIMARY KEY,
    data       BLOB    NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE change_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT    NOT NULL CHECK (kind IN ('entry', 'node', 'bundle', 'federation')),
    object_id  TEXT    NOT NULL,
    op         TEXT    NOT NULL CHECK (op IN ('create', 'update', 'delete')),
    created_at INTEGER NOT NULL
);
CREATE INDEX change_log_created_at ON change_log (created_at);
