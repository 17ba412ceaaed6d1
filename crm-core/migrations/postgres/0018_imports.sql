-- Tracked CSV imports of leads (Leads::start_import): the report, saved with each
-- batch it commits. Purged by housekeeping after the retention period.
CREATE TABLE crm_imports (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    report        jsonb NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

CREATE INDEX crm_imports_updated ON crm_imports (updated_at);
