-- Inbound messages already turned into lead changes, so a provider's redelivery of the
-- same message (a WhatsApp wamid, a Cal.com booking uid + trigger) changes nothing.

CREATE TABLE crm_inbound_receipts (
    workspace_id  uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    source        text NOT NULL,
    external_id   text NOT NULL,
    lead_id       uuid NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, source, external_id)
);
