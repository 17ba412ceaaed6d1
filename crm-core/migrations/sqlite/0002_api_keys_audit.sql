-- API keys (hashed; the secret is shown once) and the audit log.

CREATE TABLE crm_api_keys (
    id              BLOB PRIMARY KEY NOT NULL,
    workspace_id    BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    -- hex SHA-256 of the whole key
    key_hash        TEXT NOT NULL UNIQUE,
    display_prefix  TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    created_by      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    expires_at      INTEGER,
    revoked_at      INTEGER,
    last_used_at    INTEGER,
    replaced_by     BLOB
);

CREATE INDEX crm_api_keys_workspace ON crm_api_keys (workspace_id, id);

-- Security-relevant actions. The auth service writes here too.
CREATE TABLE crm_audit_log (
    id            BLOB PRIMARY KEY NOT NULL,
    workspace_id  BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    actor         TEXT,
    action        TEXT NOT NULL,
    target_type   TEXT,
    target_id     TEXT,
    ip            TEXT,
    details       TEXT NOT NULL DEFAULT '{}',
    created_at    INTEGER NOT NULL
);

CREATE INDEX crm_audit_log_workspace ON crm_audit_log (workspace_id, id);
