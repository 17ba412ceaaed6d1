-- The claim counts each target's jobs in flight (leased, not finished): an index on
-- exactly those rows, so the count follows the jobs in flight, not the backlog.

CREATE INDEX crm_jobs_leased ON crm_jobs (target_id, lease_until)
    WHERE status = 'pending' AND lease_until IS NOT NULL;
