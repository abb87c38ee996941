-- Transient download failures (the model source down, 5xx, timeouts, cut bodies) are
-- retried with backoff until the input credential expires, outside the crash budget that
-- `attempts` counts: this column counts them and sets their backoff.
ALTER TABLE jobs ADD COLUMN download_retries BIGINT NOT NULL DEFAULT 0;
