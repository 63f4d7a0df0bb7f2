-- spire-rs datastore schema, PostgreSQL dialect.
-- Booleans are stored as BIGINT 0/1 (the same representation as on SQLite, so one set of
-- queries serves both backends), times as Unix seconds. Text uses the "C" collation so that
-- ordering (and so paging) is byte-wise, as on SQLite, whatever the cluster's locale.

CREATE TABLE registered_entries (
    id                          TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    spiffe_id                   TEXT COLLATE "C" NOT NULL,
    parent_id                   TEXT COLLATE "C" NOT NULL,
    identity_key                TEXT COLLATE "C" NOT NULL,
    x509_svid_ttl               BIGINT  NOT NULL DEFAULT 0,
    jwt_svid_ttl                BIGINT  NOT NULL DEFAULT 0,
    admin                       BIGINT  NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
    downstream                  BIGINT  NOT NULL DEFAULT 0 CHECK (downstream IN (0, 1)),
    expires_at                  BIGINT  NOT NULL DEFAULT 0,
    store_svid                  BIGINT  NOT NULL DEFAULT 0 CHECK (store_svid IN (0, 1)),
    hint                        TEXT COLLATE "C" NOT NULL DEFAULT '',
    created_at                  BIGINT  NOT NULL,
    revision_number             BIGINT  NOT NULL DEFAULT 0,
    jwt_svid_include_jti        BIGINT  NOT NULL DEFAULT 0 CHECK (jwt_svid_include_jti IN (0, 1)),
    disable_x509_svid_prefetch  BIGINT  NOT NULL DEFAULT 0 CHECK (disable_x509_svid_prefetch IN (0, 1))
);
CREATE UNIQUE INDEX registered_entries_identity ON registered_entries (identity_key);
CREATE INDEX registered_entries_spiffe_id ON registered_entries (spiffe_id);
CREATE INDEX registered_entries_parent_id ON registered_entries (parent_id);
CREATE INDEX registered_entries_hint ON registered_entries (hint);
CREATE INDEX registered_entries_expires_at ON registered_entries (expires_at);

CREATE TABLE entry_selectors (
    entry_id TEXT COLLATE "C" NOT NULL REFERENCES registered_entries (id) ON DELETE CASCADE,
    type     TEXT COLLATE "C" NOT NULL,
    value    TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (entry_id, type, value)
);
CREATE INDEX entry_selectors_type_value ON entry_selectors (type, value);

CREATE TABLE entry_dns_names (
    entry_id TEXT COLLATE "C" NOT NULL REFERENCES registered_entries (id) ON DELETE CASCADE,
    position BIGINT  NOT NULL,
    value    TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (entry_id, position)
);

CREATE TABLE entry_federates_with (
    entry_id     TEXT COLLATE "C" NOT NULL REFERENCES registered_entries (id) ON DELETE CASCADE,
    trust_domain TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (entry_id, trust_domain)
);
CREATE INDEX entry_federates_with_td ON entry_federates_with (trust_domain);

CREATE TABLE attested_nodes (
    spiffe_id              TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    attestation_type       TEXT COLLATE "C" NOT NULL,
    cert_serial_number     TEXT COLLATE "C" NOT NULL DEFAULT '',
    cert_not_after         BIGINT  NOT NULL DEFAULT 0,
    new_cert_serial_number TEXT COLLATE "C" NOT NULL DEFAULT '',
    new_cert_not_after     BIGINT  NOT NULL DEFAULT 0,
    can_reattest           BIGINT  NOT NULL DEFAULT 0 CHECK (can_reattest IN (0, 1)),
    agent_version          TEXT COLLATE "C" NOT NULL DEFAULT '',
    created_at             BIGINT  NOT NULL,
    updated_at             BIGINT  NOT NULL
);
CREATE INDEX attested_nodes_cert_not_after ON attested_nodes (cert_not_after);
CREATE INDEX attested_nodes_attestation_type ON attested_nodes (attestation_type);

CREATE TABLE node_selectors (
    spiffe_id TEXT COLLATE "C" NOT NULL,
    type      TEXT COLLATE "C" NOT NULL,
    value     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (spiffe_id, type, value)
);
CREATE INDEX node_selectors_type_value ON node_selectors (type, value);

CREATE TABLE join_tokens (
    token_hash TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    expires_at BIGINT  NOT NULL
);
CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);

CREATE TABLE bundles (
    trust_domain TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    data         TEXT COLLATE "C" NOT NULL,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL
);

CREATE TABLE federation_relationships (
    trust_domain        TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    bundle_endpoint_url TEXT COLLATE "C" NOT NULL,
    profile             TEXT COLLATE "C" NOT NULL CHECK (profile IN ('https_web', 'https_spiffe')),
    endpoint_spiffe_id  TEXT COLLATE "C" NOT NULL DEFAULT '',
    created_at          BIGINT  NOT NULL,
    updated_at          BIGINT  NOT NULL
);

CREATE TABLE ca_journals (
    server_id  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    data       BYTEA   NOT NULL,
    updated_at BIGINT  NOT NULL
);

CREATE TABLE change_log (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       TEXT COLLATE "C" NOT NULL CHECK (kind IN ('entry', 'node', 'bundle', 'federation')),
    object_id  TEXT COLLATE "C" NOT NULL,
    op         TEXT COLLATE "C" NOT NULL CHECK (op IN ('create', 'update', 'delete')),
    created_at BIGINT  NOT NULL
);
CREATE INDEX change_log_created_at ON change_log (created_at);
