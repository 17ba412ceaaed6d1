-- The fair claim ranks the pending jobs of each target (endpoint or channel) by due
-- time: an index on exactly those rows.

CREATE INDEX crm_jobs_pending_by_target ON crm_jobs (target_id, run_at, id) WHERE status = 'pending';
