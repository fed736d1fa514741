-- The codec server's permission, codec:decode (reading Temporal payloads in clear), goes to the
-- Super Admin role of every existing organisation; new organisations get it from the code's
-- list of system roles. Super Admin holds every permission, so the whole list is set.
-- Keep in step with ../sqlite/0009_codec_permission.sql.
UPDATE roles
SET permissions = '["api_keys:manage","campaigns:read","campaigns:run","campaigns:write","codec:decode","deliveries:write","groups:read","groups:write","integrations:manage","members:read","members:write","roles:read","roles:write","sso:manage","teams:read","teams:write","templates:read","templates:write"]'
WHERE id = 'super_admin' AND system = 1;
