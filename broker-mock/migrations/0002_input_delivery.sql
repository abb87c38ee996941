-- Durable delivery of `job.input` to the provider (PROTOCOL §5.5).
--
-- input_state: NULL while no input is owed (offered, rejected); then
--   'pending'   the broker still has to deliver it (input_next_attempt_ms says when);
--   'delivered' the provider took it (2xx, or 409: it had it already);
--   'failed'    the provider refused it (4xx) or every attempt failed: the job is failed;
--   'stopped'   the job moved on (progress or an end) before a delivery was confirmed.
-- input_attempts counts delivery attempts; each is one message with a fresh credential and a
-- new webhook-id. input_next_attempt_ms is when the next attempt is due (Unix milliseconds).
ALTER TABLE jobs ADD COLUMN input_state TEXT;
ALTER TABLE jobs ADD COLUMN input_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN input_next_attempt_ms INTEGER;
ALTER TABLE jobs ADD COLUMN input_last_attempt_at INTEGER;
ALTER TABLE jobs ADD COLUMN input_last_error TEXT;
ALTER TABLE jobs ADD COLUMN input_delivered_at INTEGER;
CREATE INDEX jobs_input_due ON jobs(input_state, input_next_attempt_ms);
