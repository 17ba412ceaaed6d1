-- Idempotency keys of API requests: the first request with a key claims it (status
-- NULL while it runs), its response is stored for replay; rows older than 24 h are
-- replaced when the key is used again.

CREATE TABLE crm_idempotency_keys (
    workspace_id  uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    scope         text NOT NULL,
    idem_key      text NOT NULL,
    fingerprint   text NOT NULL,
    status_code   bigint,
    response      text,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, scope, idem_key)
);

CREATE INDEX crm_idempotency_keys_created ON crm_idempotency_keys (created_at);
