-- How many recipients the audience had at start: the workflow writes their deliveries in
-- pages after the start request has answered.
ALTER TABLE campaigns ADD COLUMN recipient_count BIGINT;
