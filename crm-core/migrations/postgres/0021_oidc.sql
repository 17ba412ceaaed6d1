-- Sign-in with an OpenID Connect provider (Google, Microsoft, any issuer).
-- A workspace's providers: the client registered at the issuer, its sealed secret
-- (crm's master key), which email domains may sign in, and whether a first sign-in
-- without an account creates a member.
CREATE TABLE crm_oidc_providers (
    workspace_id     uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    name             text NOT NULL,
    issuer           text NOT NULL,
    client_id        text NOT NULL,
    client_secret    text,
    allowed_domains  text NOT NULL,
    allow_signup     boolean NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, name)
);

-- Sign-ins under way: one row per redirect to the provider, found by the hash of
-- its `state`, deleted by the callback that uses it (a state works once) or by
-- housekeeping once expired.
CREATE TABLE crm_oidc_logins (
    state_hash     text PRIMARY KEY,
    workspace_id   uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    provider       text NOT NULL,
    issuer         text NOT NULL,
    nonce          text NOT NULL,
    code_verifier  text NOT NULL,
    redirect_uri   text NOT NULL,
    return_to      text,
    remember       boolean NOT NULL,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL
);

CREATE INDEX crm_oidc_logins_expiry ON crm_oidc_logins (expires_at);

-- Which user an issuer's subject signs in as, once linked (by verified email or
-- by the sign-in that created the user).
CREATE TABLE crm_oidc_identities (
    workspace_id  uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    issuer        text NOT NULL,
    subject       text NOT NULL,
    user_id       uuid NOT NULL REFERENCES crm_users (id) ON DELETE CASCADE,
    email         text NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, issuer, subject)
);

CREATE INDEX crm_oidc_identities_user ON crm_oidc_identities (user_id);
