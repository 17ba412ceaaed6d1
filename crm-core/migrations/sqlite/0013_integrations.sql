-- Per-workspace provider credentials and settings (OpenAI, Resend, SMTP, WhatsApp,
-- Cal.com, Telegram, Discord): one row per workspace and provider, the settings
-- sealed with the master key. Providers that receive webhooks get an unguessable
-- inbound id, the path segment of the workspace's inbound route.

CREATE TABLE crm_integrations (
    workspace_id  BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    kind          TEXT NOT NULL,
    -- the settings as JSON, sealed with the master key
    settings      TEXT NOT NULL,
    inbound_id    TEXT UNIQUE,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, kind)
);
