-- Webhook endpoints, and the job queue that fans events out to them (notification
-- channels will use the same queue), and the log of every delivery attempt.

CREATE TABLE crm_webhook_endpoints (
    id                    uuid PRIMARY KEY,
    workspace_id          uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    url                   text NOT NULL,
    description           text,
    event_types           jsonb NOT NULL,
    enabled               boolean NOT NULL,
    -- sealed with the master key (see crm_core::seal)
    secret                text NOT NULL,
    previous_secret       text,
    previous_secret_until timestamptz,
    rate_limit_per_minute bigint,
    consecutive_failures  bigint NOT NULL DEFAULT 0,
    last_success_at       timestamptz,
    last_failure_at       timestamptz,
    disabled_reason       text,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL
);

CREATE INDEX crm_webhook_endpoints_workspace ON crm_webhook_endpoints (workspace_id, id);

CREATE TABLE crm_jobs (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    kind          text NOT NULL,
    target_id     uuid NOT NULL,
    event_id      uuid NOT NULL REFERENCES crm_events (id) ON DELETE CASCADE,
    status        text NOT NULL,
    attempts      bigint NOT NULL DEFAULT 0,
    run_at        timestamptz NOT NULL,
    lease_until   timestamptz,
    lease_token   uuid,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

CREATE INDEX crm_jobs_due ON crm_jobs (status, run_at);
CREATE INDEX crm_jobs_target ON crm_jobs (target_id, id);

-- Every delivery attempt: what was sent, what came back, what happens next.
CREATE TABLE crm_delivery_attempts (
    id               uuid PRIMARY KEY,
    workspace_id     uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    job_id           uuid NOT NULL,
    -- what was delivered to: a webhook endpoint (kind webhook), later a notification channel
    kind             text NOT NULL,
    target_id        uuid NOT NULL,
    event_id         uuid NOT NULL,
    attempt          bigint NOT NULL,
    status_code      bigint,
    response_body    text,
    duration_ms      bigint NOT NULL,
    error_kind       text,
    next_attempt_at  timestamptz,
    created_at       timestamptz NOT NULL
);

CREATE INDEX crm_delivery_attempts_target ON crm_delivery_attempts (target_id, id);
CREATE INDEX crm_delivery_attempts_event ON crm_delivery_attempts (event_id, id);
