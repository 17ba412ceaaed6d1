-- Archived leads (Leads::archive): hidden from lists and search unless asked for,
-- kept with their timeline. NULL for a lead that is not archived.

ALTER TABLE crm_leads ADD COLUMN archived_at INTEGER;
-- The archived leads of a workspace (`archived=true`), few beside the rest.
CREATE INDEX crm_leads_archived ON crm_leads (workspace_id, archived_at)
    WHERE archived_at IS NOT NULL;
