-- Sign-in with an OpenID Connect provider (Google, Microsoft, any issuer).
-- A workspace's providers: the client registered at the issuer, its sealed secret
-- (crm's master key), which email domains may sign in, and whether a first sign-in
-- without an account creates a member.
CREATE TABLE crm_oidc_providers (
    workspace_id     BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    issuer           TEXT NOT NULL,
    client_id        TEXT NOT NULL,
    client_secret    TEXT,
    allowed_domains  TEXT NOT NULL,
    allow_signup     INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, name)
);

-- Sign-ins under way: one row per redirect to the provider, found by the hash of
-- its `state`, deleted by the callback that uses it (a state works once) or by
-- housekeeping once expired.
CREATE TABLE crm_oidc_logins (
    state_hash     TEXT PRIMARY KEY NOT NULL,
    workspace_id   BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    provider       TEXT NOT NULL,
    issuer         TEXT NOT NULL,
    nonce          TEXT NOT NULL,
    code_verifier  TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    return_to      TEXT,
    remember       INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL
);

CREATE INDEX crm_oidc_logins_expiry ON crm_oidc_logins (expires_at);

-- Which user an issuer's subject signs in as, once linked (by verified email or
-- by the sign-in that created the user).
CREATE TABLE crm_oidc_identities (
    workspace_id  BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    issuer        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    user_id       BLOB NOT NULL REFERENCES crm_users (id) ON DELETE CASCADE,
    email         TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, issuer, subject)
);

CREATE INDEX crm_oidc_identities_user ON crm_oidc_identities (user_id);
