-- Console sign-in sessions. The browser holds only an opaque session id; the table keeps its
-- SHA-256, the API key the session acts as (by id, never the key's secret: revoking the key
-- ends its sessions), the session's CSRF token and when it expires.
CREATE TABLE console_sessions (
    id_hash TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
