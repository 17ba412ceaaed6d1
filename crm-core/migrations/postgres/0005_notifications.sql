-- Notification channels, each served by a plugin (a `Notifier`). Their
-- jobs go through crm_jobs (kind 'notification') like webhooks.

CREATE TABLE crm_notification_channels (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    kind          text NOT NULL,
    name          text NOT NULL,
    -- the plugin's configuration (tokens, chat ids), sealed with the master key
    config        text NOT NULL,
    event_types   jsonb NOT NULL,
    enabled       boolean NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

CREATE INDEX crm_notification_channels_workspace ON crm_notification_channels (workspace_id, id);
