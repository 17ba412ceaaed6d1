-- Inbound messages already turned into lead changes, so a provider's redelivery of the
-- same message (a WhatsApp wamid, a Cal.com booking uid + trigger) changes nothing.

CREATE TABLE crm_inbound_receipts (
    workspace_id  BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    source        TEXT NOT NULL,
    external_id   TEXT NOT NULL,
    lead_id       BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, source, external_id)
);
