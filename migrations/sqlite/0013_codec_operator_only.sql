-- The codec server opens every organisation's Temporal payloads (its key is the server's), so
-- it is an operator's power, reached with the operator's PIDGR_CODEC_TOKEN, and no longer a
-- permission: `codec:decode` (given to Super Admin by 0009, and possibly to custom roles) is
-- taken out of every role. Permission lists are JSON arrays written without spaces, so the
-- three spellings below (first or middle, last, alone) are every place it can stand.
-- Keep in step with ../postgres/0013_codec_operator_only.sql.
UPDATE roles
SET permissions = REPLACE(REPLACE(REPLACE(permissions,
    '"codec:decode",', ''),
    ',"codec:decode"', ''),
    '"codec:decode"', '')
WHERE permissions LIKE '%"codec:decode"%';
