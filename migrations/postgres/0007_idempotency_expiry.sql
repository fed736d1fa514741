-- Idempotency keys expire 24 hours after their claim and are purged periodically; the purge
-- finds them by age.
CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);
