-- Archived leads (Leads::archive): hidden from lists and search unless asked for,
-- kept with their timeline. NULL for a lead that is not archived.

ALTER TABLE crm_leads ADD COLUMN archived_at timestamptz;
