-- Per-workspace provider credentials and settings (OpenAI, Resend, SMTP, WhatsApp,
-- Cal.com, Telegram, Discord): one row per workspace and provider, the settings
-- sealed with the master key. Providers that receive webhooks get an unguessable
-- inbound id, the path segment of the workspace's inbound route.

CREATE TABLE crm_integrations (
    workspace_id  uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    kind          text NOT NULL,
    -- the settings as JSON, sealed with the master key
    settings      text NOT NULL,
    inbound_id    text UNIQUE,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, kind)
);
