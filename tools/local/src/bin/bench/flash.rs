//! Benchmarks the flash-sale decision (accepted or sold out) on a hot
//! product against Redis on this machine, next to two baselines measured in
//! the same run: FlashPay's lock-then-check-then-decrement order path, and
//! Redis's raw rate for one atomic step (a bare DECR).
//!
//!   bench flash [attempts] [concurrency]      defaults: 20000 64
//!
//! Prints one table row per path: decisions/s, p50 and p99 latency, the
//! ratio to the gate, and the cost: CPU µs per decision of this process
//! (where the order function's gate call runs) and of Redis, and the Lambda
//! GB-s per million decisions at the order function's MemorySize.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use paystream::cache::Redis;
use paystream::config::Config;
use paystream::flash::{self, SaleState};
use redis::AsyncCommands;
use uuid::Uuid;

const STOCK: i64 = 1_000;
/// Spin bound for the baseline's lock (FlashPay retries until it gets it).
const LOCK_ATTEMPTS_MAX: usize = 10_000;

use crate::stats::{costed, print_costed, Costed};

pub async fn run(attempts: usize, concurrency: usize) {
    let concurrency = concurrency.max(1);
    let mut config = Config::from_env().expect("configuration");
    config.redis.key_prefix = format!("bench:{}:", Uuid::new_v4().simple());
    let redis = Arc::new(Redis::new(&config.redis).expect("redis"));
    let template = paystream_local::template::Template::from_env().expect("template.yaml (run from the repository root)");
    let memory_mb = template.functions.iter().find(|f| f.binary == "order").map_or(128, |f| f.memory_mb);

    println!("flash-sale decisions on one hot product: stock {STOCK}, {attempts} attempts by distinct buyers, {concurrency} concurrent");
    let gate = measure("paystream gate (one Lua script)", &redis, attempts, concurrency, gate_setup, gate_step).await;
    let lock = measure("baseline: lock, check, decrement", &redis, attempts, concurrency, lock_setup, lock_step).await;
    let raw = measure("Redis raw: one DECR", &redis, attempts, concurrency, lock_setup, raw_step).await;
    print_costed("decisions/s", &[&gate.0, &lock.0, &raw.0], &gate.0, memory_mb);
    println!("accepted: gate {}, lock {}, raw {} (stock {STOCK})", gate.1, lock.1, raw.1);
    assert_eq!(gate.1 as i64, STOCK.min(attempts as i64), "the gate never oversells");
    // Leave nothing behind in Redis.
    let mut conn = redis.conn().await.expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}*", redis.prefix())).query_async(&mut conn).await.unwrap_or_default();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap_or(());
    }
}

type Setup = fn(Arc<Redis>, Uuid) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
type Step = fn(Arc<Redis>, Uuid, Uuid) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

/// One path: `setup` on a fresh product, then `attempts` steps by distinct
/// buyers; the run and how many were accepted.
async fn measure(name: &'static str, redis: &Arc<Redis>, attempts: usize, concurrency: usize, setup: Setup, step: Step) -> (Costed, usize) {
    let product = Uuid::new_v4();
    setup(Arc::clone(redis), product).await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let (redis, counter) = (Arc::clone(redis), Arc::clone(&accepted));
    let attempt = move |_: usize| {
        let (redis, counter) = (Arc::clone(&redis), Arc::clone(&counter));
        async move {
            if step(redis, product, Uuid::new_v4()).await {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let run = costed(name, attempts, concurrency, attempt).await;
    (run, accepted.load(Ordering::Relaxed))
}

fn gate_setup(redis: Arc<Redis>, product: Uuid) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        let now = time::OffsetDateTime::now_utc();
        let state = SaleState { start_time: now - time::Duration::minutes(1), end_time: now + time::Duration::hours(1), remaining: STOCK, buyers: Vec::new() };
        flash::load(&redis, product, &state).await.expect("load gate");
    })
}

fn gate_step(redis: Arc<Redis>, product: Uuid, user: Uuid) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
    Box::pin(async move { matches!(flash::reserve(&redis, product, user, time::OffsetDateTime::now_utc()).await, Ok(flash::Reservation::Reserved(_))) })
}

fn keys(redis: &Redis, product: Uuid) -> (String, String, String) {
    (redis.key(&format!("base:{product}:lock")), redis.key(&format!("base:{product}:stock")), redis.key(&format!("base:{product}:buyers")))
}

fn lock_setup(redis: Arc<Redis>, product: Uuid) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(async move {
        let (_, stock, _) = keys(&redis, product);
        let mut conn = redis.conn().await.expect("redis");
        let _: () = conn.set(stock, STOCK).await.expect("set stock");
    })
}

/// FlashPay's order path: take a lock, read stock and buyers, decrement, release.
fn lock_step(redis: Arc<Redis>, product: Uuid, user: Uuid) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
    Box::pin(async move {
        let (lock, stock, buyers) = keys(&redis, product);
        let mut conn = redis.conn().await.expect("redis");
        let token = user.to_string();
        for _ in 0..LOCK_ATTEMPTS_MAX {
            let got: bool = redis::cmd("SET").arg(&lock).arg(&token).arg("NX").arg("PX").arg(100).query_async(&mut conn).await.map(|v: Option<String>| v.is_some()).unwrap_or(false);
            if got {
                let remaining: i64 = conn.get(&stock).await.unwrap_or(0);
                let already: bool = conn.sismember(&buyers, &token).await.unwrap_or(false);
                let ok = remaining > 0 && !already;
                if ok {
                    let _: i64 = conn.decr(&stock, 1).await.unwrap_or(0);
                    let _: i64 = conn.sadd(&buyers, &token).await.unwrap_or(0);
                }
                let _: i64 = conn.del(&lock).await.unwrap_or(0);
                return ok;
            }
            tokio::task::yield_now().await;
        }
        false
    })
}

fn raw_step(redis: Arc<Redis>, product: Uuid, _user: Uuid) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> {
    Box::pin(async move {
        let (_, stock, _) = keys(&redis, product);
        let mut conn = redis.conn().await.expect("redis");
        let left: i64 = conn.decr(&stock, 1).await.unwrap_or(-1);
        left >= 0
    })
}
