-- Each claim of an idempotency key carries a random token; only the request holding it may
-- complete or release the claim, so a slow request whose claim was taken over cannot overwrite
-- or free the claim of the request that took it over. Claims made before this column existed
-- have none and are taken over after the claim timeout like any dead claim.
ALTER TABLE idempotency_keys ADD COLUMN claim_token TEXT;
