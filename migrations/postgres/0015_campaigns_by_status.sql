-- The campaign list filtered by status (`GET /v1/campaigns?status=ACTIVE`), paged by id: this
-- index answers it in order, so a page costs its own rows whatever else the organisation has.
-- Keep in step with ../sqlite/0015_campaigns_by_status.sql.
CREATE INDEX campaigns_org_status ON campaigns(org_id, status, id);
