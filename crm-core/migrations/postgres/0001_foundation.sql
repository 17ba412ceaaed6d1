-- Foundation: workspaces, leads (with full-text search), activities, the event outbox.

CREATE TABLE crm_workspaces (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The default workspace (the nil UUID) for single-tenant apps.
INSERT INTO crm_workspaces (id, name) VALUES ('00000000-0000-0000-0000-000000000000', 'Default');

CREATE TABLE crm_leads (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    -- "C" collation: sort by bytes, as SQLite does, so both backends page alike.
    name          text COLLATE "C" NOT NULL,
    email         text,
    email_key     text,
    phone         text,
    company       text,
    budget        text,
    project_type  text,
    message       text,
    source        text,
    status        text COLLATE "C" NOT NULL,
    notes         text,
    tags          jsonb NOT NULL DEFAULT '[]',
    custom        jsonb NOT NULL DEFAULT '{}',
    raw_input     text,
    ai_parsed     boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    -- Letters and digits only, the same tokens SQLite's FTS5 unicode61 tokenizer sees.
    search        tsvector GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig, regexp_replace(
            coalesce(name, '') || ' ' || coalesce(email, '') || ' ' || coalesce(company, '')
            || ' ' || coalesce(message, '') || ' ' || coalesce(notes, ''),
            '[^[:alnum:]]+', ' ', 'g'))
    ) STORED,
    CONSTRAINT crm_leads_contact CHECK (email IS NOT NULL OR phone IS NOT NULL)
);

CREATE UNIQUE INDEX crm_leads_email_key ON crm_leads (workspace_id, email_key);
CREATE UNIQUE INDEX crm_leads_phone ON crm_leads (workspace_id, phone);
CREATE INDEX crm_leads_created ON crm_leads (workspace_id, created_at, id);
CREATE INDEX crm_leads_updated ON crm_leads (workspace_id, updated_at, id);
CREATE INDEX crm_leads_name ON crm_leads (workspace_id, name, id);
CREATE INDEX crm_leads_status ON crm_leads (workspace_id, status, id);
CREATE INDEX crm_leads_search ON crm_leads USING gin (search);
CREATE INDEX crm_leads_tags ON crm_leads USING gin (tags);

CREATE TABLE crm_activities (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    lead_id       uuid NOT NULL REFERENCES crm_leads (id) ON DELETE CASCADE,
    kind          text NOT NULL,
    description   text,
    old_status    text,
    new_status    text,
    actor         text,
    created_at    timestamptz NOT NULL
);

CREATE INDEX crm_activities_lead ON crm_activities (lead_id, created_at, id);

-- The outbox: one row per domain event, written in the transaction of the change.
CREATE TABLE crm_events (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    event_type    text NOT NULL,
    lead_id       uuid,
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL
);

CREATE INDEX crm_events_workspace ON crm_events (workspace_id, created_at, id);
