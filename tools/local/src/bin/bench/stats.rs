//! What the request-path benchmarks share: drive a step with a bounded
//! number in flight, and summarise latencies.

use std::future::Future;
use std::time::{Duration, Instant};

pub struct Run {
    pub name: &'static str,
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

pub fn summarise(name: &'static str, (mut latencies, elapsed): (Vec<Duration>, Duration)) -> Run {
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    Run { name, per_s: latencies.len() as f64 / elapsed.as_secs_f64(), p50: pick(0.50), p99: pick(0.99) }
}

/// One table: each run's rate, p50 and p99, and its ratio to `baseline`.
pub fn print(unit: &str, runs: &[&Run], baseline: &Run) {
    println!("{:<40} {:>12} {:>9} {:>9} {:>12}", "path", unit, "p50 ms", "p99 ms", "vs baseline");
    for run in runs {
        println!(
            "{:<40} {:>12.0} {:>9.2} {:>9.2} {:>11.3}x",
            run.name,
            run.per_s,
            run.p50.as_secs_f64() * 1e3,
            run.p99.as_secs_f64() * 1e3,
            run.per_s / baseline.per_s
        );
    }
}

/// Configuration for the benchmarks that write data: their own database
/// (`paystream_bench` beside the configured one; created, migrated and
/// seeded when missing) and a fresh Redis key prefix, so the demo database
/// and keys are left alone. Returns it with a suffix for unique names.
pub async fn isolated_config() -> (paystream::config::Config, String) {
    use paystream::secret::Secret;
    let mut config = paystream::config::Config::from_env().expect("configuration");
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    config.redis.key_prefix = format!("bench:{suffix}:");
    let url = config.database.url.expose().to_owned();
    let server = &url[..url.rfind('/').expect("DATABASE_URL names a database")];
    let admin = paystream::config::DatabaseConfig { url: Secret::new(format!("{server}/postgres")), ..config.database.clone() };
    let admin = paystream::db::pool(&admin, "bench").expect("admin pool").get().await.expect("PostgreSQL");
    let exists = admin.query_opt("SELECT 1 FROM pg_database WHERE datname = 'paystream_bench'", &[]).await.expect("pg_database");
    if exists.is_none() {
        admin.batch_execute("CREATE DATABASE paystream_bench").await.expect("create paystream_bench");
    }
    config.database.url = Secret::new(format!("{server}/paystream_bench"));
    let pool = paystream::db::pool(&config.database, "bench").expect("bench pool");
    let mut conn = pool.get().await.expect("paystream_bench");
    paystream::db::migrate(&mut conn).await.expect("migrate paystream_bench");
    drop(conn);
    paystream::demo::seed(&pool, &config, &Secret::new("bench-admin-password-not-used")).await.expect("seed paystream_bench");
    (config, suffix)
}

/// `n` new users without cards, named with `suffix` so runs never collide.
pub async fn create_buyers(pg: &paystream::db::PgPool, n: usize, suffix: &str) -> Vec<uuid::Uuid> {
    let db = pg.get().await.expect("database");
    let rows = db
        .query(
            "INSERT INTO users (id, username, email, password_hash, phone, role)
             SELECT gen_random_uuid(), 'bench' || i || '_' || $2, 'bench' || i || '_' || $2 || '@example.com', 'unusable', '+821055550000', 'USER'
             FROM generate_series(1, $1::int) AS i RETURNING id",
            &[&i32::try_from(n).expect("user count fits"), &suffix],
        )
        .await
        .expect("bench users");
    rows.iter().map(|r| r.get(0)).collect()
}
