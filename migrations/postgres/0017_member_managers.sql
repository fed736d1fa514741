-- A member's manager: another member of the same organisation (the store checks that, and that
-- no chain of managers loops), or NULL for none. Deleting a manager leaves their reports without
-- one. The index answers "the reports of a manager" (`GET /v1/members/{id}/reports`) paged by id.
-- Keep in step with ../sqlite/0017_member_managers.sql.
ALTER TABLE members ADD COLUMN manager_id TEXT REFERENCES members(id) ON DELETE SET NULL;
CREATE INDEX members_org_manager ON members(org_id, manager_id, id);
