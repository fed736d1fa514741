-- The campaign engine: organisations and their API keys, campaigns, deliveries, actions, the
-- activity log and the log push provider's record. Timestamps are Unix epoch milliseconds (UTC);
-- ids are UUID text. Keep in step with ../postgres/0001_campaign_engine.sql.

CREATE TABLE organisations (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organisations(id),
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    -- SHA-256 of the secret; the secret itself is shown once and never stored.
    key_hash      TEXT NOT NULL UNIQUE,
    prefix        TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_used_at  INTEGER,
    revoked_at    INTEGER
);
CREATE INDEX api_keys_org ON api_keys(org_id);

CREATE TABLE campaigns (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    name            TEXT NOT NULL,
    title           TEXT NOT NULL,
    body            TEXT NOT NULL,
    audience        TEXT NOT NULL,
    definition      TEXT NOT NULL,
    status          TEXT NOT NULL,
    workflow_id     TEXT,
    current_step    TEXT,
    idempotency_key TEXT,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER,
    -- Last time an API process signalled the workflow with fresh counts (signal throttling).
    last_signal_at  INTEGER,
    UNIQUE (org_id, idempotency_key)
);
CREATE INDEX campaigns_org ON campaigns(org_id, created_at);

CREATE TABLE deliveries (
    id                  TEXT PRIMARY KEY,
    org_id              TEXT NOT NULL REFERENCES organisations(id),
    campaign_id         TEXT NOT NULL REFERENCES campaigns(id),
    -- Position in the audience: fan-out pages and checkpoints by it.
    seq                 INTEGER NOT NULL,
    user_id             TEXT NOT NULL,
    email               TEXT,
    display_name        TEXT,
    variables           TEXT NOT NULL,
    status              TEXT NOT NULL,
    deeplink_code       TEXT NOT NULL UNIQUE,
    sent_at             INTEGER,
    read_at             INTEGER,
    acknowledged_at     INTEGER,
    missed_at           INTEGER,
    failed_at           INTEGER,
    failure_reason      TEXT,
    reminder_count      INTEGER NOT NULL DEFAULT 0,
    -- The last step that notified this recipient: a retried fan-out skips them.
    last_notified_step  TEXT,
    UNIQUE (campaign_id, seq),
    UNIQUE (campaign_id, user_id)
);
CREATE INDEX deliveries_campaign_status ON deliveries(campaign_id, status);

CREATE TABLE actions (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES organisations(id),
    campaign_id  TEXT NOT NULL REFERENCES campaigns(id),
    delivery_id  TEXT NOT NULL REFERENCES deliveries(id),
    kind         TEXT NOT NULL,
    source       TEXT NOT NULL,
    occurred_at  INTEGER NOT NULL
);
CREATE INDEX actions_delivery ON actions(delivery_id);

CREATE TABLE activity_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id       TEXT NOT NULL REFERENCES organisations(id),
    campaign_id  TEXT NOT NULL REFERENCES campaigns(id),
    occurred_at  INTEGER NOT NULL,
    step_id      TEXT,
    kind         TEXT NOT NULL,
    message      TEXT NOT NULL,
    details      TEXT NOT NULL
);
CREATE INDEX activity_log_campaign ON activity_log(campaign_id, id);

CREATE TABLE push_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id       TEXT NOT NULL REFERENCES organisations(id),
    campaign_id  TEXT NOT NULL REFERENCES campaigns(id),
    delivery_id  TEXT NOT NULL REFERENCES deliveries(id),
    step_id      TEXT NOT NULL,
    provider     TEXT NOT NULL,
    title        TEXT NOT NULL,
    body         TEXT NOT NULL,
    deeplink     TEXT NOT NULL,
    sent_at      INTEGER NOT NULL
);
CREATE INDEX push_log_campaign ON push_log(campaign_id, id);
