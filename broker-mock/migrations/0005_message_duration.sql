-- The message log keeps how long each exchange took (a request handled, an outgoing attempt
-- or download); the per-job timeline of /inspector orders by when each one started.
ALTER TABLE messages ADD COLUMN duration_ms INTEGER;
