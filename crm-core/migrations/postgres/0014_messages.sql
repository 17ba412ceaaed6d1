-- Conversations on the timeline: a `message` activity records what was sent or
-- received through a provider (direction, type, media, delivery status) as JSON,
-- and the provider's message id (`channel:id`) to find it when a status arrives.

ALTER TABLE crm_activities ADD COLUMN message text;
ALTER TABLE crm_activities ADD COLUMN message_id text;

CREATE INDEX crm_activities_message ON crm_activities (workspace_id, message_id)
    WHERE message_id IS NOT NULL;
