-- The lead statistics (Leads::stats) read each part through an index: the counts
-- by source, and the status changes of a workspace (the funnel and the time to
-- contact), which crm_activities_lead could only reach lead by lead.

CREATE INDEX crm_leads_source ON crm_leads (workspace_id, source);
CREATE INDEX crm_activities_status_changes
    ON crm_activities (workspace_id, lead_id, old_status, new_status, created_at)
    WHERE kind = 'status_change';
