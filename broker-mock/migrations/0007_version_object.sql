-- Model versions kept in an S3-compatible bucket (`--storage s3://…`): the object's name;
-- their `content` is then empty. NULL: the bytes are in `content`.
ALTER TABLE model_versions ADD COLUMN object_key TEXT;
CREATE INDEX model_versions_object_key ON model_versions (object_key) WHERE object_key IS NOT NULL;
