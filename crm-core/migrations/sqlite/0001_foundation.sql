-- Foundation: workspaces, leads (with FTS5 search), activities, the event outbox.
-- UUIDs are 16-byte BLOBs, timestamps integer microseconds since the Unix epoch.

CREATE TABLE crm_workspaces (
    id          BLOB PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

-- The default workspace (the nil UUID) for single-tenant apps.
INSERT INTO crm_workspaces (id, name, created_at)
VALUES (zeroblob(16), 'Default', CAST(strftime('%s', 'now') AS INTEGER) * 1000000);

CREATE TABLE crm_leads (
    -- An integer rowid alias: FTS5's external content needs a rowid that VACUUM keeps.
    seq           INTEGER PRIMARY KEY,
    id            BLOB NOT NULL UNIQUE,
    workspace_id  BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    email         TEXT,
    email_key     TEXT,
    phone         TEXT,
    company       TEXT,
    budget        TEXT,
    project_type  TEXT,
    message       TEXT,
    source        TEXT,
    status        TEXT NOT NULL,
    notes         TEXT,
    tags          TEXT NOT NULL DEFAULT '[]',
    custom        TEXT NOT NULL DEFAULT '{}',
    raw_input     TEXT,
    ai_parsed     INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    CHECK (email IS NOT NULL OR phone IS NOT NULL)
);

CREATE UNIQUE INDEX crm_leads_email_key ON crm_leads (workspace_id, email_key);
CREATE UNIQUE INDEX crm_leads_phone ON crm_leads (workspace_id, phone);
CREATE INDEX crm_leads_created ON crm_leads (workspace_id, created_at, id);
CREATE INDEX crm_leads_updated ON crm_leads (workspace_id, updated_at, id);
CREATE INDEX crm_leads_name ON crm_leads (workspace_id, name, id);
CREATE INDEX crm_leads_status ON crm_leads (workspace_id, status, id);

CREATE VIRTUAL TABLE crm_leads_fts USING fts5 (
    name, email, company, message, notes,
    content = 'crm_leads',
    content_rowid = 'seq'
);

CREATE TRIGGER crm_leads_fts_insert AFTER INSERT ON crm_leads BEGIN
    INSERT INTO crm_leads_fts (rowid, name, email, company, message, notes)
    VALUES (new.seq, new.name, new.email, new.company, new.message, new.notes);
END;

CREATE TRIGGER crm_leads_fts_delete AFTER DELETE ON crm_leads BEGIN
    INSERT INTO crm_leads_fts (crm_leads_fts, rowid, name, email, company, message, notes)
    VALUES ('delete', old.seq, old.name, old.email, old.company, old.message, old.notes);
END;

CREATE TRIGGER crm_leads_fts_update AFTER UPDATE OF name, email, company, message, notes ON crm_leads BEGIN
    INSERT INTO crm_leads_fts (crm_leads_fts, rowid, name, email, company, message, notes)
    VALUES ('delete', old.seq, old.name, old.email, old.company, old.message, old.notes);
    INSERT INTO crm_leads_fts (rowid, name, email, company, message, notes)
    VALUES (new.seq, new.name, new.email, new.company, new.message, new.notes);
END;

CREATE TABLE crm_activities (
    id            BLOB PRIMARY KEY NOT NULL,
    workspace_id  BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    lead_id       BLOB NOT NULL REFERENCES crm_leads (id) ON DELETE CASCADE,
    kind          TEXT NOT NULL,
    description   TEXT,
    old_status    TEXT,
    new_status    TEXT,
    actor         TEXT,
    created_at    INTEGER NOT NULL
);

CREATE INDEX crm_activities_lead ON crm_activities (lead_id, created_at, id);

-- The outbox: one row per domain event, written in the transaction of the change.
CREATE TABLE crm_events (
    id            BLOB PRIMARY KEY NOT NULL,
    workspace_id  BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    event_type    TEXT NOT NULL,
    lead_id       BLOB,
    payload       TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE INDEX crm_events_workspace ON crm_events (workspace_id, created_at, id);
