-- API keys (hashed; the secret is shown once), the audit log, and the shared rate-limit state.

CREATE TABLE crm_api_keys (
    id              uuid PRIMARY KEY,
    workspace_id    uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    name            text NOT NULL,
    -- hex SHA-256 of the whole key
    key_hash        text NOT NULL UNIQUE,
    display_prefix  text NOT NULL,
    scopes          jsonb NOT NULL,
    created_by      text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    expires_at      timestamptz,
    revoked_at      timestamptz,
    last_used_at    timestamptz,
    replaced_by     uuid
);

CREATE INDEX crm_api_keys_workspace ON crm_api_keys (workspace_id, id);

-- Security-relevant actions. The auth service writes here too.
CREATE TABLE crm_audit_log (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    actor         text,
    action        text NOT NULL,
    target_type   text,
    target_id     text,
    ip            text,
    details       jsonb NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL
);

CREATE INDEX crm_audit_log_workspace ON crm_audit_log (workspace_id, id);

-- GCRA state shared by every app instance: the theoretical arrival time, in
-- microseconds since the epoch. A row whose tat is in the past is idle.
CREATE TABLE crm_rate_limits (
    key  text PRIMARY KEY,
    tat  bigint NOT NULL
);
