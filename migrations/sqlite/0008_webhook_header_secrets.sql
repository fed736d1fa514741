-- CALL_WEBHOOK header values (an `Authorization: Bearer …` is a credential). They are sealed
-- here, bound to the organisation, this table and column, when a definition is stored; the
-- stored definition, the workflow's input and the activity's input carry only
-- `secret:<id>`, resolved by the activity just before the POST. Rows are never updated except
-- by a key rotation, which re-seals them. Keep in step with
-- ../postgres/0008_webhook_header_secrets.sql.
CREATE TABLE webhook_header_secrets (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organisations(id),
    sealed      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
