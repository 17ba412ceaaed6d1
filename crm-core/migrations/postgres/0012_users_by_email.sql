-- Sign-in with an email and password only finds the email's accounts in every
-- workspace, and registration checks that an email has no account yet.

CREATE INDEX crm_users_email_key ON crm_users (email_key);
