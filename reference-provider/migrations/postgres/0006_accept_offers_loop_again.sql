-- Back to 0003's fmp_accept_recorded_offers (one statement per offer in a loop). 0005's
-- set-based version (decide the run's prefix in one query, then one statement per table)
-- gave the same outcomes but was not faster: measured alone against this one in alternating
-- runs it gave 1,138–2,366 offers/s against 1,020–3,810 (medians 1,585 and 2,118;
-- docs/LOADGEN.md), so the simpler function stays.
CREATE OR REPLACE FUNCTION fmp_accept_recorded_offers(
    amounts          BIGINT[],
    account_ids      TEXT[],
    currencies       TEXT[],
    broker_job_ids   TEXT[],
    provider_job_ids TEXT[],
    entry_ids        TEXT[],
    now_ms           BIGINT,
    message_ids      TEXT[],
    broker_user_ids  TEXT[],
    events_urls      TEXT[],
    operations       TEXT[],
    model_names      TEXT[],
    model_sizes      BIGINT[],
    model_sha256s    TEXT[],
    job_state        TEXT,
    bodies           TEXT[],
    locations        TEXT[],
    digests          TEXT[],
    expiries         BIGINT[]
) RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    n   INTEGER := coalesce(array_length(amounts, 1), 0);
    hit INTEGER;
BEGIN
    FOR i IN 1 .. n LOOP
        WITH acct AS (
            UPDATE accounts SET balance = balance - amounts[i], held = held + amounts[i]
             WHERE account_id = account_ids[i] AND balance >= amounts[i]
               AND currency = currencies[i]
               AND NOT EXISTS (SELECT 1 FROM jobs WHERE broker_job_id = broker_job_ids[i])
               AND NOT EXISTS (SELECT 1 FROM replay WHERE message_id = message_ids[i])
             RETURNING account_id, balance, held),
        led AS (
            INSERT INTO ledger (entry_id, account_id, kind, amount, balance_after, held_after,
                                provider_job_id, created_at)
            SELECT entry_ids[i], account_id, 'hold', amounts[i], balance, held,
                   provider_job_ids[i], now_ms
              FROM acct),
        job AS (
            INSERT INTO jobs (provider_job_id, broker_job_id, offer_message_id, account_id,
                              broker_user_id, events_url, operation, model_name, model_size,
                              model_sha256, quote_amount, currency, state, created_at,
                              updated_at)
            SELECT provider_job_ids[i], broker_job_ids[i], message_ids[i], account_ids[i],
                   broker_user_ids[i], events_urls[i], operations[i], model_names[i],
                   model_sizes[i], model_sha256s[i], amounts[i], currencies[i], job_state,
                   now_ms, now_ms
              FROM acct),
        rep AS (
            INSERT INTO replay (message_id, digest, expires_at, response_status, response_body,
                                response_location)
            SELECT message_ids[i], digests[i], expiries[i], 202, bodies[i], locations[i]
              FROM acct)
        SELECT count(*) INTO hit FROM acct;
        IF hit = 0 THEN
            RETURN i - 1;
        END IF;
    END LOOP;
    RETURN n;
END
$$;
