-- crm_jobs is the queue, not the record: a delivered job's row is deleted when its
-- attempt is logged (crm_delivery_attempts keeps the record). The index on
-- (status, run_at) served no query left (the queue statistics read the pending
-- rows through crm_jobs_pending_by_target) and cost a write on every claim; it
-- goes after the delete, which it serves.

DELETE FROM crm_jobs WHERE status = 'delivered';
DROP INDEX crm_jobs_due;
