-- Bounds: a used link-token id is kept until its token expires (plus leeway), then purged;
-- rows from before this migration are kept for good (their expiry is unknown).
ALTER TABLE used_jtis ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 9223372036854775807;
CREATE INDEX used_jtis_by_expiry ON used_jtis(expires_at);
CREATE INDEX replay_by_expiry ON replay(expires_at);
CREATE INDEX credentials_by_expiry ON credentials(expires_at);
