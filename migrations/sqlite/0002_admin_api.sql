-- The admin and mobile API: roles, the directory (members, devices, teams and groups),
-- versioned templates and workflow definitions, template-based campaigns, the webhook channel's
-- settings and idempotent creates. Keep in step with ../postgres/0002_admin_api.sql.

-- A role is a set of permissions. The four system roles of every organisation have fixed ids
-- (super_admin, admin, manager, member) and are never changed; custom roles have UUID ids.
CREATE TABLE roles (
    org_id       TEXT NOT NULL REFERENCES organisations(id),
    id           TEXT NOT NULL,
    name         TEXT NOT NULL,
    -- JSON array of permission names, sorted.
    permissions  TEXT NOT NULL,
    system       INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (org_id, id),
    UNIQUE (org_id, name)
);

-- Organisations created before roles existed get their system roles here; new ones get them
-- when they are created. api_keys.role holds a role id from now on ('admin' keys stay Admin).
INSERT INTO roles (org_id, id, name, permissions, system, created_at, updated_at)
SELECT id, 'super_admin', 'Super Admin', '["api_keys:manage","campaigns:read","campaigns:run","campaigns:write","deliveries:write","groups:read","groups:write","integrations:manage","members:read","members:write","roles:read","roles:write","sso:manage","teams:read","teams:write","templates:read","templates:write"]', 1, created_at, created_at FROM organisations;
INSERT INTO roles (org_id, id, name, permissions, system, created_at, updated_at)
SELECT id, 'admin', 'Admin', '["campaigns:read","campaigns:run","campaigns:write","deliveries:write","groups:read","groups:write","integrations:manage","members:read","members:write","roles:read","teams:read","teams:write","templates:read","templates:write"]', 1, created_at, created_at FROM organisations;
INSERT INTO roles (org_id, id, name, permissions, system, created_at, updated_at)
SELECT id, 'manager', 'Manager', '["campaigns:read","campaigns:run","campaigns:write","groups:read","groups:write","members:read","teams:read","templates:read","templates:write"]', 1, created_at, created_at FROM organisations;
INSERT INTO roles (org_id, id, name, permissions, system, created_at, updated_at)
SELECT id, 'member', 'Member', '[]', 1, created_at, created_at FROM organisations;

CREATE TABLE members (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organisations(id),
    -- The organisation's own identifier for the person (HR id, SSO subject, ...).
    external_id   TEXT NOT NULL,
    email         TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    -- JSON object, string -> string: profile attributes usable as template variables.
    attributes    TEXT NOT NULL,
    role_id       TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (org_id, external_id)
);
CREATE INDEX members_org ON members(org_id, id);

CREATE TABLE devices (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organisations(id),
    member_id     TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    platform      TEXT NOT NULL,
    token         TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    -- A token is one phone: registering it again (for anyone) moves it.
    UNIQUE (org_id, platform, token)
);
CREATE INDEX devices_member ON devices(member_id);

-- Teams (organisational units) and groups (cross-functional) are both named sets of members.
CREATE TABLE member_sets (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organisations(id),
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (org_id, kind, name)
);
CREATE INDEX member_sets_org ON member_sets(org_id, kind, id);

CREATE TABLE member_set_members (
    set_id     TEXT NOT NULL REFERENCES member_sets(id) ON DELETE CASCADE,
    member_id  TEXT NOT NULL REFERENCES members(id) ON DELETE CASCADE,
    org_id     TEXT NOT NULL REFERENCES organisations(id),
    added_at   INTEGER NOT NULL,
    PRIMARY KEY (set_id, member_id)
);
CREATE INDEX member_set_members_member ON member_set_members(member_id);

CREATE TABLE templates (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    name            TEXT NOT NULL,
    latest_version  INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (org_id, name)
);
CREATE INDEX templates_org ON templates(org_id, id);

-- Append-only: a version is never updated or deleted.
CREATE TABLE template_versions (
    template_id  TEXT NOT NULL REFERENCES templates(id),
    version      INTEGER NOT NULL,
    org_id       TEXT NOT NULL REFERENCES organisations(id),
    title        TEXT NOT NULL,
    body         TEXT NOT NULL,
    -- JSON array of the variable names the title and body use, sorted.
    variables    TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (template_id, version)
);

CREATE TABLE workflow_definitions (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    name            TEXT NOT NULL,
    latest_version  INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (org_id, name)
);
CREATE INDEX workflow_definitions_org ON workflow_definitions(org_id, id);

-- Append-only, like template versions. `definition` is the validated canonical JSON.
CREATE TABLE workflow_definition_versions (
    definition_id  TEXT NOT NULL REFERENCES workflow_definitions(id),
    version        INTEGER NOT NULL,
    org_id         TEXT NOT NULL REFERENCES organisations(id),
    definition     TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (definition_id, version)
);

-- Campaigns pin a template version (its title and body are copied into the campaign, so
-- nothing later can change them) and say where their definition came from. `title` stays the
-- campaign's title ({{title}} in templates); `message_title` is the pinned version's title.
-- `audience` holds the audience as given: groups, teams and members with their variables.
ALTER TABLE campaigns ADD COLUMN message_title TEXT;
ALTER TABLE campaigns ADD COLUMN template_id TEXT;
ALTER TABLE campaigns ADD COLUMN template_version INTEGER;
ALTER TABLE campaigns ADD COLUMN definition_id TEXT;
ALTER TABLE campaigns ADD COLUMN definition_version INTEGER;
UPDATE campaigns SET message_title = title;

-- The member a delivery goes to (NULL for deliveries written before members existed).
ALTER TABLE deliveries ADD COLUMN member_id TEXT;
CREATE INDEX deliveries_member ON deliveries(org_id, member_id);

-- The generic webhook channel's settings, one per organisation. The signing secret is needed
-- back to sign, so it is encrypted (not hashed) with the server's key.
CREATE TABLE webhook_channels (
    org_id             TEXT PRIMARY KEY REFERENCES organisations(id),
    url                TEXT NOT NULL,
    secret_ciphertext  TEXT NOT NULL,
    timeout_ms         INTEGER NOT NULL,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    secret_rotated_at  INTEGER NOT NULL
);

-- Idempotent creates: the first response to an Idempotency-Key is kept and replayed. A row
-- without a status is a request still in flight.
CREATE TABLE idempotency_keys (
    org_id        TEXT NOT NULL REFERENCES organisations(id),
    idem_key      TEXT NOT NULL,
    -- SHA-256 of method, path and body: the same key with another request is refused.
    fingerprint   TEXT NOT NULL,
    status        INTEGER,
    response      TEXT,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (org_id, idem_key)
);
