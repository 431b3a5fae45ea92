-- What every payment writes, made cheaper again (measured by `bench intake`
-- and `bench consumers`).

-- Nothing reads payments or ledger rows by holder: every read is by payment
-- id (`GET /payments/{id}`, FDS's "already decided?" probe, the verify
-- page), and the holder's last location has its own table. These two
-- indexes were one more B-tree insert on every intake record and every
-- ledger row, for no reader. A route that lists a holder's payments would
-- bring its index back with it.
DROP INDEX IF EXISTS payments_user_idx;
DROP INDEX IF EXISTS transactions_user_idx;

-- Every keyed request writes its key twice: the claim (before the broker
-- is asked) and the answer (after). Appended rows filled each page, so the
-- answer's new row version rarely fitted on the claim's page and the update
-- added an entry to both indexes. With room left on each page the answer
-- stays on the page (a HOT update: no index entry). Applies to pages
-- written from now on.
ALTER TABLE idempotency_keys SET (fillfactor = 50);
