-- Which stored definition (its id) or inline campaign (its id) a CALL_WEBHOOK header secret
-- belongs to. The secret is then opened only for a campaign whose own stored definition holds
-- the reference and that is, or was created from, its owner; the owner is also part of what
-- the sealed value is bound to (its associated data), so changing this column does not move a
-- secret either. NULL for rows sealed before owners were recorded. Keep in step with
-- ../postgres/0011_header_secret_owners.sql.
ALTER TABLE webhook_header_secrets ADD COLUMN owner_id TEXT;
