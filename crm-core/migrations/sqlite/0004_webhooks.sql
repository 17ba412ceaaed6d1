-- Webhook endpoints, and the job queue that fans events out to them (notification
-- channels will use the same queue), and the log of every delivery attempt.

CREATE TABLE crm_webhook_endpoints (
    id                    BLOB PRIMARY KEY NOT NULL,
    workspace_id          BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    url                   TEXT NOT NULL,
    description           TEXT,
    event_types           TEXT NOT NULL,
    enabled               INTEGER NOT NULL,
    -- sealed with the master key (see crm_core::seal)
    secret                TEXT NOT NULL,
    previous_secret       TEXT,
    previous_secret_until INTEGER,
    rate_limit_per_minute INTEGER,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    last_success_at       INTEGER,
    last_failure_at       INTEGER,
    disabled_reason       TEXT,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);

CREATE INDEX crm_webhook_endpoints_workspace ON crm_webhook_endpoints (workspace_id, id);

CREATE TABLE crm_jobs (
    id            BLOB PRIMARY KEY NOT NULL,
    workspace_id  BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    kind          TEXT NOT NULL,
    target_id     BLOB NOT NULL,
    event_id      BLOB NOT NULL REFERENCES crm_events (id) ON DELETE CASCADE,
    status        TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    run_at        INTEGER NOT NULL,
    lease_until   INTEGER,
    lease_token   BLOB,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE INDEX crm_jobs_due ON crm_jobs (status, run_at);
CREATE INDEX crm_jobs_target ON crm_jobs (target_id, id);

-- Every delivery attempt: what was sent, what came back, what happens next.
CREATE TABLE crm_delivery_attempts (
    id               BLOB PRIMARY KEY NOT NULL,
    workspace_id     BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    job_id           BLOB NOT NULL,
    -- what was delivered to: a webhook endpoint (kind webhook), later a notification channel
    kind             TEXT NOT NULL,
    target_id        BLOB NOT NULL,
    event_id         BLOB NOT NULL,
    attempt          INTEGER NOT NULL,
    status_code      INTEGER,
    response_body    TEXT,
    duration_ms      INTEGER NOT NULL,
    error_kind       TEXT,
    next_attempt_at  INTEGER,
    created_at       INTEGER NOT NULL
);

CREATE INDEX crm_delivery_attempts_target ON crm_delivery_attempts (target_id, id);
CREATE INDEX crm_delivery_attempts_event ON crm_delivery_attempts (event_id, id);
