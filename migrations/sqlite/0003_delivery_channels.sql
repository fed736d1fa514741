-- Delivery channels: push provider credentials per organisation and the generic webhook
-- channel's events. Keep in step with ../postgres/0003_delivery_channels.sql.

-- FCM and APNs credentials. The private keys are needed back in clear to sign provider tokens,
-- so the whole credential is encrypted with the server's key (organisation id as associated
-- data); `summary` holds the non-secret fields the API shows (project, key id, bundle id…).
CREATE TABLE push_credentials (
    org_id      TEXT NOT NULL REFERENCES organisations(id),
    provider    TEXT NOT NULL,
    summary     TEXT NOT NULL,
    sealed      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (org_id, provider)
);

-- One event per recipient and notifying step (seed 002). The body is kept byte for byte, so
-- every retry re-sends exactly what the first attempt sent (same occurred_at); receivers
-- deduplicate on (user_id, campaign_id, occurred_at).
CREATE TABLE webhook_events (
    id               TEXT PRIMARY KEY,
    org_id           TEXT NOT NULL REFERENCES organisations(id),
    campaign_id      TEXT NOT NULL REFERENCES campaigns(id),
    step_id          TEXT NOT NULL,
    delivery_id      TEXT NOT NULL REFERENCES deliveries(id),
    body             TEXT NOT NULL,
    -- PENDING (an attempt is due at next_attempt_at), DELIVERED or FAILED.
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    UNIQUE (campaign_id, step_id, delivery_id)
);
CREATE INDEX webhook_events_due ON webhook_events(campaign_id, step_id, status, next_attempt_at);
