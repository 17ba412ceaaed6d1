-- Notification channels, each served by a plugin (a `Notifier`). Their
-- jobs go through crm_jobs (kind 'notification') like webhooks.

CREATE TABLE crm_notification_channels (
    id            BLOB PRIMARY KEY NOT NULL,
    workspace_id  BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    kind          TEXT NOT NULL,
    name          TEXT NOT NULL,
    -- the plugin's configuration (tokens, chat ids), sealed with the master key
    config        TEXT NOT NULL,
    event_types   TEXT NOT NULL,
    enabled       INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE INDEX crm_notification_channels_workspace ON crm_notification_channels (workspace_id, id);
