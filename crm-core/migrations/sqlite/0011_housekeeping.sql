-- What housekeeping deletes by, so that each of its batches is an index range, not a
-- scan of the table (and, on SQLite, not a scan under the write lock): the cascade
-- from an event to its jobs, and the times rows expire or age out by.
CREATE INDEX crm_jobs_event ON crm_jobs (event_id);
CREATE INDEX crm_events_created ON crm_events (created_at);
CREATE INDEX crm_delivery_attempts_created ON crm_delivery_attempts (created_at);
CREATE INDEX crm_auth_tokens_expiry ON crm_auth_tokens (expires_at);
CREATE INDEX crm_sessions_absolute_expiry ON crm_sessions (absolute_expires_at);
CREATE INDEX crm_login_throttle_window ON crm_login_throttle (window_start);
