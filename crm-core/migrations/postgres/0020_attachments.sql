-- Files attached to a lead or to a contact (Attachments). The bytes live in the
-- configured storage under `storage_key`; this row is the truth about them.
-- Deleting the lead or contact deletes its rows (crm deletes the bytes after the
-- commit; housekeeping deletes any bytes no row names).
CREATE TABLE crm_attachments (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    lead_id       uuid REFERENCES crm_leads (id) ON DELETE CASCADE,
    contact_id    uuid REFERENCES crm_contacts (id) ON DELETE CASCADE,
    name          text NOT NULL,
    size          bigint NOT NULL CHECK (size > 0),
    content_type  text NOT NULL,
    sha256        text NOT NULL,
    storage_key   text NOT NULL UNIQUE,
    uploaded_by   text,
    created_at    timestamptz NOT NULL,
    CHECK ((lead_id IS NULL) <> (contact_id IS NULL))
);

CREATE INDEX crm_attachments_lead ON crm_attachments (lead_id, created_at) WHERE lead_id IS NOT NULL;
CREATE INDEX crm_attachments_contact ON crm_attachments (contact_id, created_at) WHERE contact_id IS NOT NULL;
-- The quota: a workspace's bytes, summed from the index alone.
CREATE INDEX crm_attachments_usage ON crm_attachments (workspace_id) INCLUDE (size);
