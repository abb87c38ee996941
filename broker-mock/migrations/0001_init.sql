-- Broker mock schema. Times are Unix seconds unless the column name ends in _ms.

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    api_key_hash TEXT NOT NULL UNIQUE,
    notification_url TEXT,
    notification_secret TEXT,
    created_at INTEGER NOT NULL
);

CREATE TABLE groups (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_by TEXT NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL
);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    added_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
);

CREATE TABLE providers (
    id TEXT PRIMARY KEY,
    group_id TEXT NOT NULL REFERENCES groups(id),
    name TEXT NOT NULL,
    service_kind TEXT NOT NULL,
    job_url TEXT NOT NULL,
    signup_url TEXT NOT NULL,
    pricing TEXT NOT NULL,
    description TEXT,
    secret_scope TEXT NOT NULL,
    bound_user_id TEXT REFERENCES users(id),
    created_at INTEGER NOT NULL
);
CREATE INDEX providers_by_kind ON providers(service_kind);

-- Shared secrets, oldest first by seq; the newest active one is the primary.
CREATE TABLE provider_keys (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    provider_id TEXT NOT NULL REFERENCES providers(id),
    key_id TEXT NOT NULL,
    secret TEXT NOT NULL,
    not_after INTEGER,
    created_at INTEGER NOT NULL,
    UNIQUE (provider_id, key_id)
);

CREATE TABLE models (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE model_versions (
    model_id TEXT NOT NULL REFERENCES models(id),
    version INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    content BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    source_job_id TEXT,
    source_provider_id TEXT,
    source_from_version INTEGER,
    PRIMARY KEY (model_id, version)
);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    provider_id TEXT NOT NULL REFERENCES providers(id),
    model_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    operation TEXT NOT NULL,
    params TEXT,
    state TEXT NOT NULL,
    provider_job_id TEXT,
    status_url TEXT,
    quote TEXT,
    progress INTEGER,
    problem TEXT,
    result_version INTEGER,
    report TEXT,
    last_sequence INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX jobs_by_user ON jobs(user_id, created_at);

-- Every provider event applied to a job, for idempotent duplicates.
CREATE TABLE job_events (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    sequence INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, sequence)
);

CREATE TABLE links (
    user_id TEXT NOT NULL REFERENCES users(id),
    provider_id TEXT NOT NULL REFERENCES providers(id),
    account_id TEXT NOT NULL,
    linked_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, provider_id)
);

CREATE TABLE used_jtis (
    provider_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    used_at INTEGER NOT NULL,
    PRIMARY KEY (provider_id, jti)
);

-- Temporary credentials, stored as SHA-256 of the bearer value.
CREATE TABLE credentials (
    token_hash TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    model_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    method TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE notifications (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id),
    job_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    acked_at INTEGER,
    delivered_at INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX notifications_by_user ON notifications(user_id, acked_at);

-- Replay protection for signed messages received, per sender scope.
CREATE TABLE replay (
    scope TEXT NOT NULL,
    message_id TEXT NOT NULL,
    digest BLOB NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (scope, message_id)
);

-- The message log shown by /v1/messages and /inspector.
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    direction TEXT NOT NULL,
    method TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    status INTEGER,
    provider_id TEXT,
    job_id TEXT,
    headers TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX messages_by_provider ON messages(provider_id);
CREATE INDEX messages_by_job ON messages(job_id);
