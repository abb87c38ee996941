-- fmp_accept_recorded_offers (0003) with one statement per table for the whole run instead
-- of one statement per offer. Same signature, same outcome: offer i is accepted when its
-- account exists in its currency, its broker job and its webhook-id are new (in the tables
-- and earlier in the run) and the balance covers its hold after the holds of the accepted
-- offers before it; the run stops at the first offer that is not, and the function returns
-- how many were accepted (a prefix), writing the holds, ledger entries, job rows and replay
-- records of exactly that prefix.
--
-- The run's accounts are locked first (in account id order), so the balances read for the
-- decision are the ones the holds change. An offer's hold is accepted when the account's
-- balance covers the sum of that account's holds up to and including it (amounts are never
-- negative, so this is the one-at-a-time rule); each ledger entry carries the balance and
-- held amount after its own hold, as one-at-a-time inserts would have written them.
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
    n INTEGER := coalesce(array_length(amounts, 1), 0);
    k INTEGER;
BEGIN
    IF n = 0 THEN
        RETURN 0;
    END IF;
    PERFORM 1 FROM accounts WHERE account_id = ANY (account_ids)
     ORDER BY account_id FOR UPDATE;

    -- k: the length of the accepted prefix.
    WITH o AS (
        SELECT i,
               sum(amounts[i]) OVER (PARTITION BY account_ids[i] ORDER BY i) AS upto,
               row_number() OVER (PARTITION BY broker_job_ids[i] ORDER BY i) AS job_seen,
               row_number() OVER (PARTITION BY message_ids[i] ORDER BY i) AS id_seen
          FROM generate_series(1, n) AS i)
    SELECT coalesce(min(o.i) - 1, n) INTO k
      FROM o LEFT JOIN accounts a ON a.account_id = account_ids[o.i]
     WHERE NOT coalesce(
               a.currency = currencies[o.i]
               AND a.balance >= o.upto
               AND o.job_seen = 1
               AND o.id_seen = 1
               AND NOT EXISTS (SELECT 1 FROM jobs WHERE broker_job_id = broker_job_ids[o.i])
               AND NOT EXISTS (SELECT 1 FROM replay WHERE message_id = message_ids[o.i]),
               FALSE);
    IF k = 0 THEN
        RETURN 0;
    END IF;

    -- Ledger entries first: they read the balances before the run's holds.
    INSERT INTO ledger (entry_id, account_id, kind, amount, balance_after, held_after,
                        provider_job_id, created_at)
    SELECT entry_ids[o.i], account_ids[o.i], 'hold', amounts[o.i],
           a.balance - o.upto, a.held + o.upto, provider_job_ids[o.i], now_ms
      FROM (SELECT i, sum(amounts[i]) OVER (PARTITION BY account_ids[i] ORDER BY i) AS upto
              FROM generate_series(1, k) AS i) AS o
      JOIN accounts a ON a.account_id = account_ids[o.i]
     ORDER BY o.i;

    UPDATE accounts a SET balance = a.balance - t.total, held = a.held + t.total
      FROM (SELECT account_ids[i] AS account_id, sum(amounts[i]) AS total
              FROM generate_series(1, k) AS i GROUP BY 1) AS t
     WHERE a.account_id = t.account_id;

    INSERT INTO jobs (provider_job_id, broker_job_id, offer_message_id, account_id,
                      broker_user_id, events_url, operation, model_name, model_size,
                      model_sha256, quote_amount, currency, state, created_at, updated_at)
    SELECT provider_job_ids[i], broker_job_ids[i], message_ids[i], account_ids[i],
           broker_user_ids[i], events_urls[i], operations[i], model_names[i],
           model_sizes[i], model_sha256s[i], amounts[i], currencies[i], job_state,
           now_ms, now_ms
      FROM generate_series(1, k) AS i ORDER BY i;

    INSERT INTO replay (message_id, digest, expires_at, response_status, response_body,
                        response_location)
    SELECT message_ids[i], digests[i], expiries[i], 202, bodies[i], locations[i]
      FROM generate_series(1, k) AS i ORDER BY i;

    RETURN k;
END
$$;
