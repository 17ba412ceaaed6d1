-- Users, sessions, single-use tokens (password reset, email verification), login throttle.

CREATE TABLE crm_users (
    id                 uuid PRIMARY KEY,
    workspace_id       uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    email              text NOT NULL,
    email_key          text NOT NULL,
    display_name       text NOT NULL,
    role               text NOT NULL,
    password_hash      text NOT NULL,
    email_verified_at  timestamptz,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL
);

CREATE UNIQUE INDEX crm_users_email ON crm_users (workspace_id, email_key);

CREATE TABLE crm_sessions (
    id                   uuid PRIMARY KEY,
    workspace_id         uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    user_id              uuid NOT NULL REFERENCES crm_users (id) ON DELETE CASCADE,
    -- hex SHA-256 of the token
    token_hash           text NOT NULL UNIQUE,
    remember             boolean NOT NULL,
    ip                   text,
    created_at           timestamptz NOT NULL,
    last_seen_at         timestamptz NOT NULL,
    expires_at           timestamptz NOT NULL,
    absolute_expires_at  timestamptz NOT NULL
);

CREATE INDEX crm_sessions_user ON crm_sessions (user_id);
CREATE INDEX crm_sessions_expiry ON crm_sessions (expires_at);

CREATE TABLE crm_auth_tokens (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    user_id       uuid NOT NULL REFERENCES crm_users (id) ON DELETE CASCADE,
    purpose       text NOT NULL,
    token_hash    text NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    used_at       timestamptz
);

-- Failed logins per (workspace, email), kept whether or not the account exists, so
-- throttling and lockout say nothing about which accounts exist.
CREATE TABLE crm_login_throttle (
    workspace_id   uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    email_key      text NOT NULL,
    failures       bigint NOT NULL,
    window_start   timestamptz NOT NULL,
    lockouts       bigint NOT NULL,
    locked_until   timestamptz,
    PRIMARY KEY (workspace_id, email_key)
);
