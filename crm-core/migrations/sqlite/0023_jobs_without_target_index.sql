-- crm_jobs_target (target_id, id) goes: each job queued and each delivered job
-- deleted wrote its entry in it, and it served only the delete of an endpoint's
-- jobs, which now deletes its pending jobs only (as a channel's delete does) and
-- finds them through crm_jobs_pending_by_target. A finished job of a deleted
-- endpoint stays until housekeeping removes its event, as every finished job does
-- (with a retention period). Postgres drops it too (its 0024), where every claim
-- also rewrote the entry.

DROP INDEX crm_jobs_target;
