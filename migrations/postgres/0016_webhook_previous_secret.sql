-- The webhook channel's previous signing secret, kept after a rotation so that the Standard
-- Webhooks signature (`webhook-signature`) can carry it beside the new one for an overlap
-- (PIDGR_WEBHOOK_SECRET_OVERLAP_HOURS after `secret_rotated_at`). Sealed like the current one;
-- NULL until the first rotation. Keep in step with ../sqlite/0016_webhook_previous_secret.sql.
ALTER TABLE webhook_channels ADD COLUMN previous_secret_ciphertext TEXT;
