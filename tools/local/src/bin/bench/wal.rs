//! WAL that PostgreSQL wrote per operation, from `pg_stat_wal` (the whole
//! server's counters, PostgreSQL 14+): records, full-page images and bytes;
//! and the transactions it committed per operation (`pg_stat_database`),
//! whose inverse is how many operations shared a commit.
//! Read before and after a measured run, like the CPU samples. Full-page
//! images are the first change of a page after a checkpoint written whole
//! (8 KiB), so an index that takes inserts at random places costs a page
//! image per page touched; the bytes column shows it where the CPU column
//! only shows a total.

/// The server's WAL counters at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    records: i64,
    fpi: i64,
    bytes: f64,
    commits: i64,
}

/// WAL per operation between two samples.
#[derive(Clone, Copy, Debug)]
pub struct PerOp {
    pub records: f64,
    pub fpi: f64,
    pub bytes: f64,
    pub commits: f64,
}

/// A backend reports its counters when it goes idle, at most once a second
/// (PostgreSQL's `PGSTAT_MIN_INTERVAL`), so a sample waits this long first
/// for the counters of the work just done (outside the timed run).
const STATS_FLUSH_WAIT_MS: u64 = 1_500;

/// The counters once every backend has reported, or `None` when they
/// cannot be read (a server before 14, or no database configured): the
/// tables then show no WAL column.
pub async fn sample() -> Option<Sample> {
    tokio::time::sleep(std::time::Duration::from_millis(STATS_FLUSH_WAIT_MS)).await;
    let config = paystream::config::Config::from_env().ok()?;
    let pool = paystream::db::pool(&config.database, "bench-wal").ok()?;
    let db = pool.get().await.ok()?;
    let row = db
        .query_one("SELECT wal_records, wal_fpi, wal_bytes::float8, (SELECT sum(xact_commit)::int8 FROM pg_stat_database) FROM pg_stat_wal", &[])
        .await
        .ok()?;
    Some(Sample { records: row.get(0), fpi: row.get(1), bytes: row.get(2), commits: row.get(3) })
}

pub fn per_op(before: Option<Sample>, after: Option<Sample>, operations: usize) -> Option<PerOp> {
    assert!(operations > 0, "WAL per operation needs operations");
    let (before, after) = (before?, after?);
    let n = operations as f64;
    Some(PerOp {
        records: (after.records - before.records) as f64 / n,
        fpi: (after.fpi - before.fpi) as f64 / n,
        bytes: (after.bytes - before.bytes) / n,
        commits: (after.commits - before.commits) as f64 / n,
    })
}
