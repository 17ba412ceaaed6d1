-- Access can be revoked: users can be disabled, and sessions remember the client's
-- user agent so a user can tell their sessions apart.

ALTER TABLE crm_users ADD COLUMN disabled_at timestamptz;
ALTER TABLE crm_sessions ADD COLUMN user_agent text;
