-- The picture a provider drew of the job that made a version (a PNG, checked on arrival):
-- NULL when the job sent none, or sent one that failed its checks.
ALTER TABLE model_versions ADD COLUMN picture BLOB;
ALTER TABLE model_versions ADD COLUMN picture_sha256 TEXT;
