//! What the request-path benchmarks share: drive a step with a bounded
//! number in flight, and summarise latencies.

use std::future::Future;
use std::time::{Duration, Instant};

pub struct Run {
    pub name: String,
    pub per_s: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// Runs `step(i)` for every `i` in `0..total`, `concurrency` at a time;
/// returns each step's latency and the wall time of the whole run.
pub async fn drive<F, Fut>(total: usize, concurrency: usize, step: F) -> (Vec<Duration>, Duration)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    assert!(total > 0 && concurrency > 0, "total and concurrency must be positive");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..concurrency {
        let step = step.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            for i in (t..total).step_by(concurrency) {
                let begun = Instant::now();
                step(i).await;
                latencies.push(begun.elapsed());
            }
            latencies
        });
    }
    let mut latencies = Vec::with_capacity(total);
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.expect("benchmark task"));
    }
    (latencies, started.elapsed())
}

pub fn summarise(name: impl Into<String>, (mut latencies, elapsed): (Vec<Duration>, Duration)) -> Run {
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    Run { name: name.into(), per_s: latencies.len() as f64 / elapsed.as_secs_f64(), p50: pick(0.50), p99: pick(0.99) }
}

/// A run with its cost: CPU µs per operation of each process involved, and
/// the mean latency (what one Lambda invocation is billed for).
pub struct Costed {
    pub run: Run,
    pub cpu_us: Vec<(&'static str, f64)>,
    pub mean: Duration,
    /// PostgreSQL's WAL and write transactions per operation (the whole
    /// server's, meanwhile).
    pub wal: Option<crate::wal::PerOp>,
}

/// [`drive`] and [`summarise`], with the CPU every process spent meanwhile.
pub async fn costed<F, Fut>(name: impl Into<String>, total: usize, concurrency: usize, step: F) -> Costed
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    costed_then(name, total, concurrency, step, async {}).await
}

/// [`costed`] for work that goes on after the answers (an event published
/// beside the request): `finish` waits until it is done, and its time and
/// CPU count in the run's rate and cost (not in the latencies).
pub async fn costed_then<F, Fut, D>(name: impl Into<String>, total: usize, concurrency: usize, step: F, finish: D) -> Costed
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
    D: Future<Output = ()>,
{
    let wal_before = crate::wal::sample().await;
    let before = crate::cpu::sample();
    let started = Instant::now();
    let (latencies, _) = drive(total, concurrency, step).await;
    finish.await;
    let elapsed = started.elapsed();
    let after = crate::cpu::sample();
    let wal = crate::wal::per_op(wal_before, crate::wal::sample().await, total);
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    Costed { run: summarise(name, (latencies, elapsed)), cpu_us: crate::cpu::per_op_us(&before, &after, total), mean, wal }
}

/// One table of costed runs: rate, p50, p99, ratio to `baseline`, CPU µs
/// per operation by process, and the Lambda GB-s per million operations
/// at `memory_mb` if each operation is one invocation of its mean latency.
pub fn print_costed(unit: &str, runs: &[&Costed], baseline: &Costed, memory_mb: u64) {
    let processes: Vec<&str> = runs[0].cpu_us.iter().map(|(p, _)| *p).collect();
    print!("{:<58} {:>10} {:>8} {:>8} {:>8} |", "path", unit, "p50 ms", "p99 ms", "vs base");
    for p in &processes {
        print!(" {:>12}", p);
    }
    println!(" | {:>8} | {:>8} {:>11}", "GB-s/1M", "WAL B", "write xacts");
    for c in runs {
        print!(
            "{:<58} {:>10.0} {:>8.2} {:>8.2} {:>7.3}x |",
            c.run.name,
            c.run.per_s,
            c.run.p50.as_secs_f64() * 1e3,
            c.run.p99.as_secs_f64() * 1e3,
            c.run.per_s / baseline.run.per_s
        );
        for (_, us) in &c.cpu_us {
            print!(" {:>12.1}", us);
        }
        print!(" | {:>8.1}", c.mean.as_secs_f64() * (memory_mb as f64 / 1024.0) * 1e6);
        match c.wal {
            Some(w) => println!(" | {:>8.0} {:>11.3}", w.bytes, w.write_xacts),
            None => println!(" | {:>8} {:>11}", "-", "-"),
        }
    }
    println!("CPU: µs per operation by process (`this process` runs the in-process handlers and the load); GB-s/1M: mean duration x {memory_mb} MB x 1,000,000");
    println!("WAL B, write xacts: PostgreSQL's WAL bytes and transactions that wrote, per operation (WAL position, next transaction id): the whole server's while the path ran");
}

/// Configuration for the benchmarks that write data: their own database
/// (`paystream_bench` beside the configured one, created new for every run,
/// then migrated and seeded) and a fresh Redis key prefix, so the demo
/// database and keys are left alone. Returns it with a suffix for unique
/// names.
///
/// A new database per run, because the runs' rows otherwise pile up: their
/// keys are random UUIDs, so every index they enlarge stays hot as a whole,
/// and once the benchmark database outgrew this machine's 128 MB of shared
/// buffers (about ten runs, 0.9 GB) every consumer ran slower run after run
/// (settle 28k to 17k records/s, loyalty 81k to 32k, same code). A run
/// that needs history builds it itself (settle's 100,000 orders).
pub async fn isolated_config() -> (paystream::config::Config, String) {
    use paystream::secret::Secret;
    let mut config = paystream::config::Config::from_env().expect("configuration");
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    config.redis.key_prefix = format!("bench:{suffix}:");
    let url = config.database.url.expose().to_owned();
    let server = &url[..url.rfind('/').expect("DATABASE_URL names a database")];
    let admin = paystream::config::DatabaseConfig { url: Secret::new(format!("{server}/postgres")), ..config.database.clone() };
    let admin = paystream::db::pool(&admin, "bench").expect("admin pool").get().await.expect("PostgreSQL");
    // Two statements: neither may run inside a (multi-statement) transaction.
    admin.batch_execute("DROP DATABASE IF EXISTS paystream_bench WITH (FORCE)").await.expect("drop paystream_bench");
    admin.batch_execute("CREATE DATABASE paystream_bench").await.expect("create paystream_bench");
    config.database.url = Secret::new(format!("{server}/paystream_bench"));
    let pool = paystream::db::pool(&config.database, "bench").expect("bench pool");
    let mut conn = pool.get().await.expect("paystream_bench");
    paystream::db::migrate(&mut conn).await.expect("migrate paystream_bench");
    drop(conn);
    paystream::demo::seed(&pool, &config, &Secret::new("bench-admin-password-not-used")).await.expect("seed paystream_bench");
    (config, suffix)
}

/// Vacuums and analyzes the benchmark database once its data is in place,
/// before anything is timed. A production database has autovacuum keeping
/// its statistics and visibility maps current; this machine's PostgreSQL
/// runs with autovacuum off, so without this every run would plan against
/// whatever statistics the previous runs left (or none) and scan the dead
/// row versions they left behind.
pub async fn vacuum(pg: &paystream::db::PgPool) {
    pg.get().await.expect("database").batch_execute("VACUUM (ANALYZE)").await.expect("vacuum paystream_bench");
}

/// `n` new users without cards, named with `suffix` so runs never collide.
/// Inserted `BUYERS_PER_INSERT` at a time: the project database (`bench
/// gateway`) runs under the functions' `statement_timeout`, and one INSERT of
/// 200,000 users beside a busy runtime outlasted it.
pub async fn create_buyers(pg: &paystream::db::PgPool, n: usize, suffix: &str) -> Vec<uuid::Uuid> {
    const BUYERS_PER_INSERT: usize = 10_000;
    let db = pg.get().await.expect("database");
    let insert = db
        .prepare(
            "INSERT INTO users (id, username, email, password_hash, phone, role)
             SELECT gen_random_uuid(), 'bench' || i || '_' || $3, 'bench' || i || '_' || $3 || '@example.com', 'unusable', '+821055550000', 'USER'
             FROM generate_series($1::int, $2::int) AS i RETURNING id",
        )
        .await
        .expect("prepare bench users");
    let mut ids = Vec::with_capacity(n);
    for first in (1..=n).step_by(BUYERS_PER_INSERT) {
        let last = (first + BUYERS_PER_INSERT - 1).min(n);
        let (first, last) = (i32::try_from(first).expect("user count fits"), i32::try_from(last).expect("user count fits"));
        let rows = db.query(&insert, &[&first, &last, &suffix]).await.expect("bench users");
        ids.extend(rows.iter().map(|r| r.get::<_, uuid::Uuid>(0)));
    }
    assert_eq!(ids.len(), n, "every buyer inserted");
    ids
}

/// While it lives, this process's stdout goes to /dev/null: the handlers'
/// JSON logs and EMF lines are written as in Lambda, but not shown.
pub struct QuietStdout {
    saved_fd: i32,
}

impl QuietStdout {
    pub fn new() -> Self {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // SAFETY: plain descriptor calls on fds this process owns; stdout is
        // restored in Drop.
        unsafe {
            let saved_fd = libc::dup(1);
            assert!(saved_fd >= 0, "dup(stdout)");
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
            assert!(null >= 0, "open /dev/null");
            assert!(libc::dup2(null, 1) >= 0, "dup2 onto stdout");
            libc::close(null);
            Self { saved_fd }
        }
    }
}

impl Drop for QuietStdout {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // SAFETY: restores the descriptor saved in new().
        unsafe {
            libc::dup2(self.saved_fd, 1);
            libc::close(self.saved_fd);
        }
    }
}
