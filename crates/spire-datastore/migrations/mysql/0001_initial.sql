-- spire-rs datastore schema, MySQL/MariaDB dialect (InnoDB, MySQL 8 / MariaDB 10.5 or later).
-- Booleans are stored as BIGINT 0/1 and times as Unix seconds, as on SQLite and PostgreSQL, so
-- one set of queries serves every backend. Keys and compared text are VARBINARY: comparisons,
-- uniqueness and ordering (and so paging) are byte-wise as on the other backends, with no
-- case folding or trailing-space padding. Lengths keep every index under InnoDB's 3072 bytes.

CREATE TABLE registered_entries (
    id                          VARBINARY(255)  NOT NULL PRIMARY KEY,
    spiffe_id                   VARBINARY(2048) NOT NULL,
    parent_id                   VARBINARY(2048) NOT NULL,
    identity_key                VARBINARY(64)   NOT NULL,
    x509_svid_ttl               BIGINT NOT NULL DEFAULT 0,
    jwt_svid_ttl                BIGINT NOT NULL DEFAULT 0,
    admin                       BIGINT NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
    downstream                  BIGINT NOT NULL DEFAULT 0 CHECK (downstream IN (0, 1)),
    expires_at                  BIGINT NOT NULL DEFAULT 0,
    store_svid                  BIGINT NOT NULL DEFAULT 0 CHECK (store_svid IN (0, 1)),
    hint                        VARBINARY(1024) NOT NULL DEFAULT '',
    created_at                  BIGINT NOT NULL,
    revision_number             BIGINT NOT NULL DEFAULT 0,
    jwt_svid_include_jti        BIGINT NOT NULL DEFAULT 0 CHECK (jwt_svid_include_jti IN (0, 1)),
    disable_x509_svid_prefetch  BIGINT NOT NULL DEFAULT 0 CHECK (disable_x509_svid_prefetch IN (0, 1))
) ENGINE = InnoDB;
CREATE UNIQUE INDEX registered_entries_identity ON registered_entries (identity_key);
CREATE INDEX registered_entries_spiffe_id ON registered_entries (spiffe_id);
CREATE INDEX registered_entries_parent_id ON registered_entries (parent_id);
CREATE INDEX registered_entries_hint ON registered_entries (hint);
CREATE INDEX registered_entries_expires_at ON registered_entries (expires_at);

CREATE TABLE entry_selectors (
    entry_id VARBINARY(255)  NOT NULL,
    type     VARBINARY(255)  NOT NULL,
    value    VARBINARY(2048) NOT NULL,
    PRIMARY KEY (entry_id, type, value),
    FOREIGN KEY (entry_id) REFERENCES registered_entries (id) ON DELETE CASCADE
) ENGINE = InnoDB;
CREATE INDEX entry_selectors_type_value ON entry_selectors (type, value);

CREATE TABLE entry_dns_names (
    entry_id VARBINARY(255) NOT NULL,
    position BIGINT NOT NULL,
    value    VARBINARY(2048) NOT NULL,
    PRIMARY KEY (entry_id, position),
    FOREIGN KEY (entry_id) REFERENCES registered_entries (id) ON DELETE CASCADE
) ENGINE = InnoDB;

CREATE TABLE entry_federates_with (
    entry_id     VARBINARY(255) NOT NULL,
    trust_domain VARBINARY(255) NOT NULL,
    PRIMARY KEY (entry_id, trust_domain),
    FOREIGN KEY (entry_id) REFERENCES registered_entries (id) ON DELETE CASCADE
) ENGINE = InnoDB;
CREATE INDEX entry_federates_with_td ON entry_federates_with (trust_domain);

CREATE TABLE attested_nodes (
    spiffe_id              VARBINARY(2048) NOT NULL PRIMARY KEY,
    attestation_type       VARBINARY(255)  NOT NULL,
    cert_serial_number     VARBINARY(255)  NOT NULL DEFAULT '',
    cert_not_after         BIGINT NOT NULL DEFAULT 0,
    new_cert_serial_number VARBINARY(255)  NOT NULL DEFAULT '',
    new_cert_not_after     BIGINT NOT NULL DEFAULT 0,
    can_reattest           BIGINT NOT NULL DEFAULT 0 CHECK (can_reattest IN (0, 1)),
    agent_version          VARBINARY(255)  NOT NULL DEFAULT '',
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
) ENGINE = InnoDB;
CREATE INDEX attested_nodes_cert_not_after ON attested_nodes (cert_not_after);
CREATE INDEX attested_nodes_attestation_type ON attested_nodes (attestation_type);

CREATE TABLE node_selectors (
    spiffe_id VARBINARY(2048) NOT NULL,
    type      VARBINARY(255)  NOT NULL,
    value     VARBINARY(768)  NOT NULL,
    PRIMARY KEY (spiffe_id, type, value)
) ENGINE = InnoDB;
CREATE INDEX node_selectors_type_value ON node_selectors (type, value);

CREATE TABLE join_tokens (
    token_hash VARBINARY(64) NOT NULL PRIMARY KEY,
    expires_at BIGINT NOT NULL
) ENGINE = InnoDB;
CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);

CREATE TABLE bundles (
    trust_domain VARBINARY(255) NOT NULL PRIMARY KEY,
    data         LONGTEXT CHARACTER SET utf8mb4 NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
) ENGINE = InnoDB;

CREATE TABLE federation_relationships (
    trust_domain        VARBINARY(255)  NOT NULL PRIMARY KEY,
    bundle_endpoint_url VARBINARY(2048) NOT NULL,
    profile             VARBINARY(32)   NOT NULL CHECK (profile IN ('https_web', 'https_spiffe')),
    endpoint_spiffe_id  VARBINARY(2048) NOT NULL DEFAULT '',
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
) ENGINE = InnoDB;

CREATE TABLE ca_journals (
    server_id  VARBINARY(255) NOT NULL PRIMARY KEY,
    data       LONGBLOB NOT NULL,
    updated_at BIGINT NOT NULL
) ENGINE = InnoDB;

CREATE TABLE change_log (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    kind       VARBINARY(16)   NOT NULL CHECK (kind IN ('entry', 'node', 'bundle', 'federation')),
    object_id  VARBINARY(2048) NOT NULL,
    op         VARBINARY(16)   NOT NULL CHECK (op IN ('create', 'update', 'delete')),
    created_at BIGINT NOT NULL
) ENGINE = InnoDB;
CREATE INDEX change_log_created_at ON change_log (created_at);
