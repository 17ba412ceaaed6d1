-- crm_jobs_target (target_id, id) goes: every claim rewrites a job's entry in each
-- index of crm_jobs, and this one served only the delete of an endpoint's jobs,
-- which now deletes its pending jobs only (as a channel's delete does) and finds
-- them through crm_jobs_pending_by_target. A finished job of a deleted endpoint
-- stays until housekeeping removes its event, as every finished job does
-- (with a retention period). SQLite drops it too (its 0023).

DROP INDEX crm_jobs_target;
