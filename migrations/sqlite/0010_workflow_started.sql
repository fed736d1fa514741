-- When the campaign's workflow was first known to exist (started, or found already started):
-- the reconciler looks only at ACTIVE campaigns without it, so it never restarts a workflow
-- that ran and closed, even after Temporal's retention has forgotten it, and its periodic pass
-- reads a handful of rows instead of every campaign.
ALTER TABLE campaigns ADD COLUMN workflow_started_at BIGINT;
CREATE INDEX campaigns_workflow_not_started ON campaigns(status) WHERE workflow_started_at IS NULL;
