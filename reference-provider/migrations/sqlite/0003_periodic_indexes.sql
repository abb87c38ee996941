-- Periodic queries (the workers' claim, the janitor, the replay purge) read what they need
-- through an index of their own instead of walking rows that grow with every offer.
-- Keep in step with ../postgres/0004_periodic_indexes.sql.
--
-- `jobs_claimable` (state, created_at) held every job ever accepted; the claim's
-- `state = 'accepted' AND input_json IS NOT NULL` walked all the jobs still waiting for
-- their input (most of them while offers pour in) on every poll. Three partial indexes
-- replace it: jobs whose input has come (the claim), jobs waiting for it (the janitor's
-- input timeout) and running jobs by lease end (the claim of an expired lease). Finished
-- jobs are in none of them.
DROP INDEX jobs_claimable;
CREATE INDEX jobs_ready ON jobs (created_at) WHERE state = 'accepted' AND input_json IS NOT NULL;
CREATE INDEX jobs_waiting ON jobs (created_at) WHERE state = 'accepted' AND input_json IS NULL;
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE state = 'running';
-- The replay purge (`DELETE … WHERE expires_at < now`, every few seconds) scanned the
-- whole table, one row per signed message of the last `tolerance`.
CREATE INDEX replay_expiry ON replay (expires_at);
-- The janitor's expired results, and a job's latest result credential.
CREATE INDEX result_credentials_expiry ON result_credentials (expires_at);
CREATE INDEX result_credentials_by_job ON result_credentials (provider_job_id);
