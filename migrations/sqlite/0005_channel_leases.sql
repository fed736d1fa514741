-- Webhook channel events are sent by several senders at once (each fan-out range sends the
-- events of its pages while the pushes go on, and the step's own sender finishes the rest), so
-- a sender claims an event before POSTing it: `leased_until` is set in the same statement that
-- selects the event, and no other sender takes it until the lease runs out (a sender that died
-- mid-send). Recording the attempt ends the lease. 0 means not leased. Keep in step with
-- ../postgres/0005_channel_leases.sql.
ALTER TABLE webhook_events ADD COLUMN leased_until INTEGER NOT NULL DEFAULT 0;
