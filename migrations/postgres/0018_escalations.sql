-- ESCALATE steps: one row per manager a step told about their reports' unresolved deliveries,
-- unique per (campaign, step, manager), so a retried activity never tells a manager twice, with
-- the unguessable code of the manager's link (`GET /v1/escalations/{code}`) and the reports
-- escalated. manager_id names a member without a reference: the record outlives the member.
-- The webhook channel event and the push are recorded against one of the reports' deliveries
-- (anchor_delivery_id), as webhook_events and push_log key everything by a delivery.
-- pushed_at is set once the push went out, so a retry does not push again.
-- Keep in step with ../sqlite/0018_escalations.sql.
CREATE TABLE escalations (
    id                  TEXT PRIMARY KEY,
    org_id              TEXT NOT NULL REFERENCES organisations(id),
    campaign_id         TEXT NOT NULL REFERENCES campaigns(id),
    step_id             TEXT NOT NULL,
    manager_id          TEXT NOT NULL,
    -- The manager's external id when the step ran: the event's user_id.
    manager_user_id     TEXT NOT NULL,
    unresolved_count    BIGINT NOT NULL,
    anchor_delivery_id  TEXT NOT NULL REFERENCES deliveries(id),
    code                TEXT NOT NULL UNIQUE,
    pushed_at           BIGINT,
    created_at          BIGINT NOT NULL,
    UNIQUE (campaign_id, step_id, manager_id)
);

CREATE TABLE escalation_reports (
    escalation_id  TEXT NOT NULL REFERENCES escalations(id),
    delivery_id    TEXT NOT NULL REFERENCES deliveries(id),
    PRIMARY KEY (escalation_id, delivery_id)
);
