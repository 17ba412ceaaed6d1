-- Contacts (people) and organizations (companies), many contacts to one
-- organization (Contacts, Organizations, Leads::convert); an owner (a user of the
-- workspace) on leads, contacts and organizations; a lead's link to the contact it
-- was converted into.

CREATE TABLE crm_organizations (
    id            uuid PRIMARY KEY,
    workspace_id  uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    -- "C" collation: sort by bytes, as SQLite does, so both backends page alike.
    name          text COLLATE "C" NOT NULL,
    -- The name folded (lower case, single spaces): how a conversion finds a company.
    name_key      text NOT NULL,
    -- Lower case, no scheme or path; unique in the workspace.
    domain        text,
    industry      text,
    size          text,
    address       text,
    owner_id      uuid REFERENCES crm_users (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    -- Letters and digits only, the same tokens SQLite's FTS5 unicode61 tokenizer sees.
    search        tsvector GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig, regexp_replace(
            coalesce(name, '') || ' ' || coalesce(domain, '') || ' ' || coalesce(industry, ''),
            '[^[:alnum:]]+', ' ', 'g'))
    ) STORED
);

CREATE UNIQUE INDEX crm_organizations_domain ON crm_organizations (workspace_id, domain);
CREATE INDEX crm_organizations_name_key ON crm_organizations (workspace_id, name_key);
CREATE INDEX crm_organizations_created ON crm_organizations (workspace_id, created_at, id);
CREATE INDEX crm_organizations_updated ON crm_organizations (workspace_id, updated_at, id);
CREATE INDEX crm_organizations_name ON crm_organizations (workspace_id, name, id);
-- By owner alone: the listing filter, and what deleting a user sets to NULL.
CREATE INDEX crm_organizations_owner ON crm_organizations (owner_id) WHERE owner_id IS NOT NULL;
CREATE INDEX crm_organizations_search ON crm_organizations USING gin (search);

CREATE TABLE crm_contacts (
    id                 uuid PRIMARY KEY,
    workspace_id       uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    first_name         text NOT NULL,
    last_name          text,
    -- First and last name, for sorting and search.
    name               text COLLATE "C" NOT NULL,
    emails             jsonb NOT NULL DEFAULT '[]',
    phones             jsonb NOT NULL DEFAULT '[]',
    title              text,
    address            text,
    social             jsonb NOT NULL DEFAULT '{}',
    organization_id    uuid REFERENCES crm_organizations (id) ON DELETE SET NULL,
    owner_id           uuid REFERENCES crm_users (id) ON DELETE SET NULL,
    notes              text,
    tags               jsonb NOT NULL DEFAULT '[]',
    custom             jsonb NOT NULL DEFAULT '{}',
    last_contacted_at  timestamptz,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    search             tsvector GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig, regexp_replace(
            coalesce(name, '') || ' ' || emails::text || ' ' || coalesce(title, '')
            || ' ' || coalesce(notes, ''),
            '[^[:alnum:]]+', ' ', 'g'))
    ) STORED
);

CREATE INDEX crm_contacts_created ON crm_contacts (workspace_id, created_at, id);
CREATE INDEX crm_contacts_updated ON crm_contacts (workspace_id, updated_at, id);
CREATE INDEX crm_contacts_name ON crm_contacts (workspace_id, name, id);
-- By owner alone: the listing filter, and what deleting a user sets to NULL.
CREATE INDEX crm_contacts_owner ON crm_contacts (owner_id) WHERE owner_id IS NOT NULL;
CREATE INDEX crm_contacts_organization ON crm_contacts (organization_id)
    WHERE organization_id IS NOT NULL;
CREATE INDEX crm_contacts_search ON crm_contacts USING gin (search);
CREATE INDEX crm_contacts_tags ON crm_contacts USING gin (tags);

-- Every email (by its case-insensitive key) and phone of a contact, one row each:
-- a mailbox or a phone belongs to one contact of the workspace.
CREATE TABLE crm_contact_keys (
    workspace_id  uuid NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    -- 'email:' || the email's key, or 'phone:' || the E.164 number.
    key           text NOT NULL,
    contact_id    uuid NOT NULL REFERENCES crm_contacts (id) ON DELETE CASCADE,
    PRIMARY KEY (workspace_id, key)
);

CREATE INDEX crm_contact_keys_contact ON crm_contact_keys (contact_id);

ALTER TABLE crm_leads ADD COLUMN owner_id uuid REFERENCES crm_users (id) ON DELETE SET NULL;
ALTER TABLE crm_leads ADD COLUMN contact_id uuid REFERENCES crm_contacts (id) ON DELETE SET NULL;
CREATE INDEX crm_leads_owner ON crm_leads (owner_id) WHERE owner_id IS NOT NULL;
CREATE INDEX crm_leads_contact ON crm_leads (contact_id) WHERE contact_id IS NOT NULL;
