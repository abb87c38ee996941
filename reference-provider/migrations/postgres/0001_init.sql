-- FixMyPrint schema (PostgreSQL). Keep in step with ../sqlite/0001_init.sql.
-- Times are Unix milliseconds unless a column name says otherwise; money is integer minor units.

CREATE TABLE registration (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    provider_id   TEXT    NOT NULL,
    broker_id     TEXT    NOT NULL,
    broker_url    TEXT    NOT NULL,
    events_url    TEXT    NOT NULL,
    secret_scope  TEXT    NOT NULL,
    registered_at BIGINT  NOT NULL
);

CREATE TABLE provider_keys (
    key_id     TEXT   PRIMARY KEY,
    secret     TEXT   NOT NULL,
    not_after  BIGINT,             -- Unix seconds; NULL = no end
    position   BIGINT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE accounts (
    account_id   TEXT   PRIMARY KEY,
    name         TEXT   NOT NULL,
    api_key_hash TEXT   NOT NULL UNIQUE,
    currency     TEXT   NOT NULL,
    balance      BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),
    held         BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0),
    created_at   BIGINT NOT NULL
);

CREATE TABLE ledger (
    seq             BIGSERIAL PRIMARY KEY,
    entry_id        TEXT   NOT NULL UNIQUE,
    account_id      TEXT   NOT NULL REFERENCES accounts (account_id),
    kind            TEXT   NOT NULL CHECK (kind IN ('top_up', 'hold', 'capture', 'release')),
    amount          BIGINT NOT NULL CHECK (amount >= 0),
    balance_after   BIGINT NOT NULL CHECK (balance_after >= 0),
    held_after      BIGINT NOT NULL CHECK (held_after >= 0),
    provider_job_id TEXT,
    idempotency_key TEXT,
    created_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX ledger_one_per_job_and_kind ON ledger (provider_job_id, kind)
    WHERE provider_job_id IS NOT NULL;
CREATE UNIQUE INDEX ledger_idempotency ON ledger (account_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX ledger_by_account ON ledger (account_id, seq);

CREATE TABLE jobs (
    provider_job_id  TEXT   PRIMARY KEY,
    broker_job_id    TEXT   NOT NULL UNIQUE,
    offer_message_id TEXT   NOT NULL,
    account_id       TEXT   NOT NULL REFERENCES accounts (account_id),
    broker_user_id   TEXT   NOT NULL,
    events_url       TEXT   NOT NULL,
    operation        TEXT   NOT NULL,
    model_name       TEXT   NOT NULL,
    model_size       BIGINT NOT NULL,
    model_sha256     TEXT   NOT NULL,
    quote_amount     BIGINT NOT NULL,
    currency         TEXT   NOT NULL,
    state            TEXT   NOT NULL CHECK (state IN ('accepted', 'running', 'completed', 'failed')),
    progress         BIGINT,
    input_json       TEXT,
    problem_json     TEXT,
    result_json      TEXT,
    next_sequence    BIGINT NOT NULL DEFAULT 1,
    attempts         BIGINT NOT NULL DEFAULT 0,
    not_before       BIGINT NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_until      BIGINT,
    finished_by      TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX jobs_claimable ON jobs (state, created_at);

CREATE TABLE result_credentials (
    token_hash      TEXT   PRIMARY KEY,
    provider_job_id TEXT   NOT NULL REFERENCES jobs (provider_job_id),
    object_key      TEXT   NOT NULL,  -- key in the result store
    expires_at      BIGINT NOT NULL   -- Unix seconds
);

CREATE TABLE outbox (
    message_id      TEXT   PRIMARY KEY,
    provider_job_id TEXT   NOT NULL,
    sequence        BIGINT NOT NULL,
    event_type      TEXT   NOT NULL,
    url             TEXT   NOT NULL,
    body            TEXT   NOT NULL,
    state           TEXT   NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT,
    UNIQUE (provider_job_id, sequence)
);
CREATE INDEX outbox_pending ON outbox (state, next_attempt_at);

CREATE TABLE replay (
    message_id      TEXT   PRIMARY KEY,
    digest          TEXT   NOT NULL,
    expires_at      BIGINT NOT NULL,  -- Unix seconds
    response_status BIGINT,
    response_body   TEXT,
    response_location TEXT
);

CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger is append-only';
END;
$$;
CREATE TRIGGER ledger_no_update_or_delete BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
