//! What PostgreSQL wrote per operation: WAL bytes, from the WAL insert
//! position (`pg_current_wal_lsn`), and write transactions, from the next
//! transaction id (`pg_current_snapshot`'s xmax: one id per transaction,
//! or subtransaction, that wrote; read-only statements take none). Both
//! are the whole server's and exact at the moment they are read, unlike
//! `pg_stat_wal` and `pg_stat_database`, which a backend reports only
//! when it goes idle and, having reported within the last second, up to
//! ten seconds later (measured here: a committed single-row INSERT run
//! showed no WAL and no commits in them). Read before and after a
//! measured run, like the CPU samples. The inverse of write transactions
//! per operation is how many operations shared a commit; WAL bytes include
//! full-page images (a page's first change after a checkpoint, 8 KiB), so
//! an index taking inserts at random places shows here.

/// The server's WAL position and next transaction id at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    wal_bytes: f64,
    next_xid: i64,
}

/// WAL bytes and write transactions per operation between two samples.
#[derive(Clone, Copy, Debug)]
pub struct PerOp {
    pub bytes: f64,
    pub write_xacts: f64,
}

/// The position and id now, or `None` when they cannot be read (no
/// database configured): the tables then show no WAL columns.
pub async fn sample() -> Option<Sample> {
    let config = paystream::config::Config::from_env().ok()?;
    let pool = paystream::db::pool(&config.database, "bench-wal").ok()?;
    let db = pool.get().await.ok()?;
    let row = db
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8, pg_snapshot_xmax(pg_current_snapshot())::text::int8",
            &[],
        )
        .await
        .ok()?;
    Some(Sample { wal_bytes: row.get(0), next_xid: row.get(1) })
}

pub fn per_op(before: Option<Sample>, after: Option<Sample>, operations: usize) -> Option<PerOp> {
    assert!(operations > 0, "WAL per operation needs operations");
    let (before, after) = (before?, after?);
    assert!(after.next_xid >= before.next_xid && after.wal_bytes >= before.wal_bytes, "WAL position and transaction ids only grow");
    let n = operations as f64;
    Some(PerOp { bytes: (after.wal_bytes - before.wal_bytes) / n, write_xacts: (after.next_xid - before.next_xid) as f64 / n })
}
