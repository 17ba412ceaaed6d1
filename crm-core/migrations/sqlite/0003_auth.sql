-- Users, sessions, single-use tokens (password reset, email verification), login throttle.

CREATE TABLE crm_users (
    id                 BLOB PRIMARY KEY NOT NULL,
    workspace_id       BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    email              TEXT NOT NULL,
    email_key          TEXT NOT NULL,
    display_name       TEXT NOT NULL,
    role               TEXT NOT NULL,
    password_hash      TEXT NOT NULL,
    email_verified_at  INTEGER,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);

CREATE UNIQUE INDEX crm_users_email ON crm_users (workspace_id, email_key);

CREATE TABLE crm_sessions (
    id                   BLOB PRIMARY KEY NOT NULL,
    workspace_id         BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    user_id              BLOB NOT NULL REFERENCES crm_users (id) ON DELETE CASCADE,
    -- hex SHA-256 of the token
    token_hash           TEXT NOT NULL UNIQUE,
    remember             INTEGER NOT NULL,
    ip                   TEXT,
    created_at           INTEGER NOT NULL,
    last_seen_at         INTEGER NOT NULL,
    expires_at           INTEGER NOT NULL,
    absolute_expires_at  INTEGER NOT NULL
);

CREATE INDEX crm_sessions_user ON crm_sessions (user_id);
CREATE INDEX crm_sessions_expiry ON crm_sessions (expires_at);

CREATE TABLE crm_auth_tokens (
    id            BLOB PRIMARY KEY NOT NULL,
    workspace_id  BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    user_id       BLOB NOT NULL REFERENCES crm_users (id) ON DELETE CASCADE,
    purpose       TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER
);

-- Failed logins per (workspace, email), kept whether or not the account exists, so
-- throttling and lockout say nothing about which accounts exist.
CREATE TABLE crm_login_throttle (
    workspace_id   BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    email_key      TEXT NOT NULL,
    failures       INTEGER NOT NULL,
    window_start   INTEGER NOT NULL,
    lockouts       INTEGER NOT NULL,
    locked_until   INTEGER,
    PRIMARY KEY (workspace_id, email_key)
);
