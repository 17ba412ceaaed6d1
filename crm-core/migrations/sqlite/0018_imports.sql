-- Tracked CSV imports of leads (Leads::start_import): the report, saved with each
-- batch it commits. Purged by housekeeping after the retention period.
CREATE TABLE crm_imports (
    id            BLOB PRIMARY KEY NOT NULL,
    workspace_id  BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    report        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE INDEX crm_imports_updated ON crm_imports (updated_at);
