-- Attested acknowledgements and signed audit exports. Each READ and ACK keeps what the member
-- was shown (the campaign's template and version, the SHA-256 of the rendered content) and the
-- API key that recorded it, in the same row as before: no extra write on the ACK path. SENT and
-- MISSED are the deliveries' own times. Each organisation's Ed25519 key signs its exports; the
-- private key is sealed like every other secret (re-sealed by `pidgr secrets rotate-key`).
-- Keep in step with ../sqlite/0019_attested_actions.sql.

ALTER TABLE actions ADD COLUMN api_key_id TEXT;
ALTER TABLE actions ADD COLUMN template_id TEXT;
ALTER TABLE actions ADD COLUMN template_version BIGINT;
ALTER TABLE actions ADD COLUMN content_sha256 TEXT;
-- Whether the request carried content_sha256 and it matched: the member's app attested the
-- content, rather than the server alone computing what it shows. 1 or 0, as elsewhere.
ALTER TABLE actions ADD COLUMN content_confirmed BIGINT NOT NULL DEFAULT 0;

CREATE TABLE signing_keys (
    id                  TEXT PRIMARY KEY,
    org_id              TEXT NOT NULL UNIQUE REFERENCES organisations(id),
    algorithm           TEXT NOT NULL,
    -- The raw 32-byte public key, base64.
    public_key          TEXT NOT NULL,
    -- The PKCS#8 private key (hex), sealed with the server's secret key.
    private_key_sealed  TEXT NOT NULL,
    created_at          BIGINT NOT NULL
);
