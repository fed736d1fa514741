-- Indexes for the queries that run on every ACK, every fan-out page and every progress count,
-- so that their cost does not grow with the campaign or the organisation. Keep in step with
-- ../postgres/0004_scale.sql.

-- The progress count (GROUP BY status), the "is anything left unresolved?" probe after an
-- ACK, mark-missed and the fan-out's next page of PENDING deliveries in seq order all name a
-- campaign, its organisation and statuses. This index answers the first three from the index
-- alone (the probe stops at its first entry) and the fourth in order, stopping at the page's
-- end. It replaces (campaign_id, status), which had to read every matching row from the table
-- to check org_id, and which SQLite without statistics passed over for a scan of the
-- campaign's rows in seq order.
DROP INDEX deliveries_campaign_status;
CREATE INDEX deliveries_progress ON deliveries(campaign_id, org_id, status, seq);

-- A fan-out page's devices (org_id = ? AND member_id IN (...)): without it SQLite walks every
-- device of the organisation through UNIQUE (org_id, platform, token). devices_member stays:
-- deleting a member cascades to its devices by member_id alone.
CREATE INDEX devices_org_member ON devices(org_id, member_id);
