-- fmp_accept_offer_run: a run of new signed offers decided and written in one call, with a
-- fixed number of statements per call (not per offer), so that it can be sent on its own,
-- outside any transaction, as one round trip that commits itself.
--
-- The caller sends a run in which no broker job id and no webhook-id repeats, every offer
-- is priced in currency_in, and amounts are not negative (it cuts the run before the first
-- offer that breaks this). Offer i is accepted when it is addressed to this provider, its
-- broker job and its webhook-id are new, its account exists in currency_in and the balance
-- covers its hold after the holds of the accepted offers before it; the run stops at the
-- first offer that is not, and the function returns how many were accepted (a prefix),
-- writing the holds, ledger entries, job rows and replay records (with the saved 202) of
-- exactly that prefix. Each ledger entry carries the balance and held amount after its own
-- hold, as one-at-a-time inserts would have written them.
--
-- The run's accounts (account_keys: distinct, in key order; account_of[i]: offer i's
-- position in it) are locked one after the other in that order, so two runs never lock
-- them crosswise and the balances read are the ones the holds change. Every key is looked
-- up on its own (LATERAL ... LIMIT 1) rather than through one "= ANY(array)" filter: the
-- plans are cached, and a plan made while jobs and replay were small would scan them whole
-- as they grow by a row per offer.
--
-- 0003/0006's fmp_accept_recorded_offers (one four-part statement per offer) is left in
-- place for a server of the previous version sharing the database during an upgrade.
CREATE FUNCTION fmp_accept_offer_run(
    provider_ids     TEXT[],
    account_keys     TEXT[],
    account_of       INTEGER[],
    account_ids      TEXT[],
    amounts          BIGINT[],
    currency_in      TEXT,
    broker_job_ids   TEXT[],
    message_ids      TEXT[],
    provider_job_ids TEXT[],
    entry_ids        TEXT[],
    broker_user_ids  TEXT[],
    events_urls      TEXT[],
    operations       TEXT[],
    model_names      TEXT[],
    model_sizes      BIGINT[],
    model_sha256s    TEXT[],
    digests          TEXT[],
    expiries         BIGINT[],
    bodies           TEXT[],
    locations        TEXT[],
    now_ms           BIGINT,
    job_state        TEXT
) RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    n          INTEGER := coalesce(array_length(amounts, 1), 0);
    m          INTEGER := 0;
    bal        BIGINT[];
    hld        BIGINT[];
    cur        TEXT[];
    bal_after  BIGINT[] := '{}';
    held_after BIGINT[] := '{}';
    j          INTEGER;
    a          BIGINT;
BEGIN
    -- The prefix addressed to this provider, whose broker jobs and webhook-ids are new.
    SELECT coalesce(min(k.i) - 1, n) INTO n
      FROM unnest(provider_ids) WITH ORDINALITY AS k(p, i)
     WHERE k.i <= n
       AND k.p IS DISTINCT FROM (SELECT provider_id FROM registration WHERE id = 1);
    SELECT coalesce(min(k.i) - 1, n) INTO n
      FROM unnest(broker_job_ids) WITH ORDINALITY AS k(id, i),
           LATERAL (SELECT 1 FROM jobs WHERE broker_job_id = k.id LIMIT 1) AS seen
     WHERE k.i <= n;
    SELECT coalesce(min(k.i) - 1, n) INTO n
      FROM unnest(message_ids) WITH ORDINALITY AS k(id, i),
           LATERAL (SELECT 1 FROM replay WHERE message_id = k.id LIMIT 1) AS seen
     WHERE k.i <= n;
    IF n = 0 THEN
        RETURN 0;
    END IF;

    -- Lock and read the accounts (NULL for an unknown one).
    SELECT array_agg(acct.balance ORDER BY k.i), array_agg(acct.held ORDER BY k.i),
           array_agg(acct.currency ORDER BY k.i)
      INTO bal, hld, cur
      FROM unnest(account_keys) WITH ORDINALITY AS k(id, i)
      LEFT JOIN LATERAL (SELECT balance, held, currency FROM accounts
                          WHERE account_id = k.id LIMIT 1 FOR UPDATE) AS acct ON true;

    -- The holds, one offer after the other.
    FOR i IN 1 .. n LOOP
        j := account_of[i];
        a := amounts[i];
        EXIT WHEN bal[j] IS NULL OR cur[j] <> currency_in OR bal[j] < a;
        bal[j] := bal[j] - a;
        hld[j] := hld[j] + a;
        bal_after[i] := bal[j];
        held_after[i] := hld[j];
        m := i;
    END LOOP;
    IF m = 0 THEN
        RETURN 0;
    END IF;

    UPDATE accounts AS acct SET balance = d.b, held = d.h
      FROM unnest(account_keys, bal, hld) AS d(id, b, h)
     WHERE acct.account_id = d.id AND (acct.balance <> d.b OR acct.held <> d.h);
    INSERT INTO ledger (entry_id, account_id, kind, amount, balance_after, held_after,
                        provider_job_id, created_at)
    SELECT o.e, o.acc, 'hold', o.amt, o.b, o.h, o.pj, now_ms
      FROM unnest(entry_ids[1:m], account_ids[1:m], amounts[1:m], bal_after, held_after,
                  provider_job_ids[1:m]) AS o(e, acc, amt, b, h, pj);
    INSERT INTO jobs (provider_job_id, broker_job_id, offer_message_id, account_id,
                      broker_user_id, events_url, operation, model_name, model_size,
                      model_sha256, quote_amount, currency, state, created_at, updated_at)
    SELECT o.pj, o.bj, o.mid, o.acc, o.bu, o.ev, o.op, o.mn, o.ms, o.sha, o.amt, currency_in,
           job_state, now_ms, now_ms
      FROM unnest(provider_job_ids[1:m], broker_job_ids[1:m], message_ids[1:m],
                  account_ids[1:m], broker_user_ids[1:m], events_urls[1:m], operations[1:m],
                  model_names[1:m], model_sizes[1:m], model_sha256s[1:m], amounts[1:m])
           AS o(pj, bj, mid, acc, bu, ev, op, mn, ms, sha, amt);
    INSERT INTO replay (message_id, digest, expires_at, response_status, response_body,
                        response_location)
    SELECT o.mid, o.dg, o.ex, 202, o.body, o.loc
      FROM unnest(message_ids[1:m], digests[1:m], expiries[1:m], bodies[1:m], locations[1:m])
           AS o(mid, dg, ex, body, loc);
    RETURN m;
END
$$;
