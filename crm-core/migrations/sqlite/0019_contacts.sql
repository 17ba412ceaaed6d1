-- Contacts (people) and organizations (companies), many contacts to one
-- organization (Contacts, Organizations, Leads::convert); an owner (a user of the
-- workspace) on leads, contacts and organizations; a lead's link to the contact it
-- was converted into.

CREATE TABLE crm_organizations (
    -- An integer rowid alias for the FTS5 external content, as crm_leads has.
    seq           INTEGER PRIMARY KEY,
    id            BLOB NOT NULL UNIQUE,
    workspace_id  BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    -- The name folded (lower case, single spaces): how a conversion finds a company.
    name_key      TEXT NOT NULL,
    -- Lower case, no scheme or path; unique in the workspace.
    domain        TEXT,
    industry      TEXT,
    size          TEXT,
    address       TEXT,
    owner_id      BLOB REFERENCES crm_users (id) ON DELETE SET NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE UNIQUE INDEX crm_organizations_domain ON crm_organizations (workspace_id, domain);
CREATE INDEX crm_organizations_name_key ON crm_organizations (workspace_id, name_key);
CREATE INDEX crm_organizations_created ON crm_organizations (workspace_id, created_at, id);
CREATE INDEX crm_organizations_updated ON crm_organizations (workspace_id, updated_at, id);
CREATE INDEX crm_organizations_name ON crm_organizations (workspace_id, name, id);
-- By owner alone: the listing filter, and what deleting a user sets to NULL.
CREATE INDEX crm_organizations_owner ON crm_organizations (owner_id) WHERE owner_id IS NOT NULL;

CREATE VIRTUAL TABLE crm_organizations_fts USING fts5 (
    name, domain, industry,
    content = 'crm_organizations',
    content_rowid = 'seq'
);

CREATE TRIGGER crm_organizations_fts_insert AFTER INSERT ON crm_organizations BEGIN
    INSERT INTO crm_organizations_fts (rowid, name, domain, industry)
    VALUES (new.seq, new.name, new.domain, new.industry);
END;

CREATE TRIGGER crm_organizations_fts_delete AFTER DELETE ON crm_organizations BEGIN
    INSERT INTO crm_organizations_fts (crm_organizations_fts, rowid, name, domain, industry)
    VALUES ('delete', old.seq, old.name, old.domain, old.industry);
END;

CREATE TRIGGER crm_organizations_fts_update AFTER UPDATE OF name, domain, industry
ON crm_organizations BEGIN
    INSERT INTO crm_organizations_fts (crm_organizations_fts, rowid, name, domain, industry)
    VALUES ('delete', old.seq, old.name, old.domain, old.industry);
    INSERT INTO crm_organizations_fts (rowid, name, domain, industry)
    VALUES (new.seq, new.name, new.domain, new.industry);
END;

CREATE TABLE crm_contacts (
    seq                INTEGER PRIMARY KEY,
    id                 BLOB NOT NULL UNIQUE,
    workspace_id       BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    first_name         TEXT NOT NULL,
    last_name          TEXT,
    -- First and last name, for sorting and search.
    name               TEXT NOT NULL,
    emails             TEXT NOT NULL DEFAULT '[]',
    phones             TEXT NOT NULL DEFAULT '[]',
    title              TEXT,
    address            TEXT,
    social             TEXT NOT NULL DEFAULT '{}',
    organization_id    BLOB REFERENCES crm_organizations (id) ON DELETE SET NULL,
    owner_id           BLOB REFERENCES crm_users (id) ON DELETE SET NULL,
    notes              TEXT,
    tags               TEXT NOT NULL DEFAULT '[]',
    custom             TEXT NOT NULL DEFAULT '{}',
    last_contacted_at  INTEGER,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);

CREATE INDEX crm_contacts_created ON crm_contacts (workspace_id, created_at, id);
CREATE INDEX crm_contacts_updated ON crm_contacts (workspace_id, updated_at, id);
CREATE INDEX crm_contacts_name ON crm_contacts (workspace_id, name, id);
-- By owner alone: the listing filter, and what deleting a user sets to NULL.
CREATE INDEX crm_contacts_owner ON crm_contacts (owner_id) WHERE owner_id IS NOT NULL;
CREATE INDEX crm_contacts_organization ON crm_contacts (organization_id)
    WHERE organization_id IS NOT NULL;

CREATE VIRTUAL TABLE crm_contacts_fts USING fts5 (
    name, emails, title, notes,
    content = 'crm_contacts',
    content_rowid = 'seq'
);

CREATE TRIGGER crm_contacts_fts_insert AFTER INSERT ON crm_contacts BEGIN
    INSERT INTO crm_contacts_fts (rowid, name, emails, title, notes)
    VALUES (new.seq, new.name, new.emails, new.title, new.notes);
END;

CREATE TRIGGER crm_contacts_fts_delete AFTER DELETE ON crm_contacts BEGIN
    INSERT INTO crm_contacts_fts (crm_contacts_fts, rowid, name, emails, title, notes)
    VALUES ('delete', old.seq, old.name, old.emails, old.title, old.notes);
END;

CREATE TRIGGER crm_contacts_fts_update AFTER UPDATE OF name, emails, title, notes
ON crm_contacts BEGIN
    INSERT INTO crm_contacts_fts (crm_contacts_fts, rowid, name, emails, title, notes)
    VALUES ('delete', old.seq, old.name, old.emails, old.title, old.notes);
    INSERT INTO crm_contacts_fts (rowid, name, emails, title, notes)
    VALUES (new.seq, new.name, new.emails, new.title, new.notes);
END;

-- Every email (by its case-insensitive key) and phone of a contact, one row each:
-- a mailbox or a phone belongs to one contact of the workspace.
CREATE TABLE crm_contact_keys (
    workspace_id  BLOB NOT NULL REFERENCES crm_workspaces (id) ON DELETE CASCADE,
    -- 'email:' || the email's key, or 'phone:' || the E.164 number.
    key           TEXT NOT NULL,
    contact_id    BLOB NOT NULL REFERENCES crm_contacts (id) ON DELETE CASCADE,
    PRIMARY KEY (workspace_id, key)
);

CREATE INDEX crm_contact_keys_contact ON crm_contact_keys (contact_id);

ALTER TABLE crm_leads ADD COLUMN owner_id BLOB REFERENCES crm_users (id) ON DELETE SET NULL;
ALTER TABLE crm_leads ADD COLUMN contact_id BLOB REFERENCES crm_contacts (id) ON DELETE SET NULL;
CREATE INDEX crm_leads_owner ON crm_leads (owner_id) WHERE owner_id IS NOT NULL;
CREATE INDEX crm_leads_contact ON crm_leads (contact_id) WHERE contact_id IS NOT NULL;
