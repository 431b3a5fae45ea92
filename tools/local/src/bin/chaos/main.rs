//! The chaos run (`scripts/chaos.sh` starts its own stack, then this):
//! mixed load through the gateway while real processes are killed and
//! restarted, then, once the system is quiet, an invariant check over the
//! database and the topics. Prints the faults and a table of invariants;
//! exits 1 on any violation, or if any kind of fault was not injected.
//!
//! Settings (environment, defaults in brackets): CHAOS_LOAD_S [90] load
//! window; CHAOS_QUIESCE_S [75] longest wait for quiet; CHAOS_RATE_PER_S [20]
//! payments per second; CHAOS_PAYERS [16], CHAOS_TRAVELLERS [12],
//! CHAOS_BUYERS [40]; CHAOS_STOCK [20] per flash product (three products);
//! CHAOS_FUNCTION_KILLS [4], CHAOS_BROKER_RESTARTS [2], CHAOS_REDIS_RESTARTS
//! [2], CHAOS_POSTGRES_RESTARTS [2]; CHAOS_SEED [from the clock];
//! CHAOS_FAULT_COMMAND (required: program and arguments that carry out one
//! fault, given its kind). The gateway is PAYSTREAM_HTTP_PORT; the database,
//! broker and topics come from the usual configuration.

mod check;
mod faults;
mod load;
mod observe;
mod rng;

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use paystream::config::Config;
use paystream_local::client::HttpClient;
use paystream_local::template::Template;
use serde_json::json;
use tokio::sync::Semaphore;
use uuid::Uuid;

use check::{Attempt, FaultKind, Observed};
use load::{Answer, Ctx, User};
use rng::Rng;

/// Bound of the set-up (sign-ups, cards, products; argon2 is slow on purpose).
const SETUP_BOUND: Duration = Duration::from_secs(90);
/// Bound of in-flight retries after the load window closes.
const DRAIN_BOUND: Duration = Duration::from_secs(60);
/// Client timeout per HTTP request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent sign-ups (each hashes a password).
const SIGNUPS_IN_FLIGHT: usize = 4;
/// A wave starts this long before the fault it is paired with (its buyers
/// keep arriving for `load::WAVE_SPREAD`, so the fault lands mid-wave).
const WAVE_LEAD: Duration = Duration::from_millis(500);
const PRODUCTS: usize = 3;

struct Settings {
    load: Duration,
    quiesce: Duration,
    rate_per_s: f64,
    payers: usize,
    travellers: usize,
    buyers: usize,
    stock: i64,
    counts: faults::Counts,
    seed: u64,
    fault_command: Vec<String>,
    http_port: u16,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(raw) if !raw.trim().is_empty() => raw.trim().parse().map_err(|_| format!("{name} must be a number, got {raw:?}")),
        _ => Ok(default),
    }
}

impl Settings {
    fn from_env() -> Result<Self, String> {
        let clock_seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
        let fault_command: Vec<String> = std::env::var("CHAOS_FAULT_COMMAND").unwrap_or_default().split_whitespace().map(str::to_owned).collect();
        if fault_command.is_empty() {
            return Err("CHAOS_FAULT_COMMAND is required (scripts/chaos.sh sets it)".into());
        }
        let s = Self {
            load: Duration::from_secs(env("CHAOS_LOAD_S", 90)?),
            quiesce: Duration::from_secs(env("CHAOS_QUIESCE_S", 75)?),
            rate_per_s: env("CHAOS_RATE_PER_S", 20.0)?,
            payers: env("CHAOS_PAYERS", 16)?,
            travellers: env("CHAOS_TRAVELLERS", 12)?,
            buyers: env("CHAOS_BUYERS", 40)?,
            stock: env("CHAOS_STOCK", 20)?,
            counts: faults::Counts {
                function_kills: env("CHAOS_FUNCTION_KILLS", 4)?,
                broker_restarts: env("CHAOS_BROKER_RESTARTS", 2)?,
                redis_restarts: env("CHAOS_REDIS_RESTARTS", 2)?,
                postgres_restarts: env("CHAOS_POSTGRES_RESTARTS", 2)?,
            },
            seed: env("CHAOS_SEED", clock_seed)?,
            fault_command,
            http_port: env("PAYSTREAM_HTTP_PORT", 3000)?,
        };
        if s.rate_per_s <= 0.0 || s.payers == 0 || s.buyers == 0 || s.stock <= 0 || s.load.as_secs() < 20 {
            return Err("CHAOS_RATE_PER_S, CHAOS_PAYERS, CHAOS_BUYERS and CHAOS_STOCK must be positive, CHAOS_LOAD_S at least 20".into());
        }
        Ok(s)
    }
}

#[tokio::main]
async fn main() {
    match run().await {
        Ok(true) => println!("chaos: every invariant held"),
        Ok(false) => {
            println!("chaos: FAILED (violations above)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("chaos: FAILED: {e}");
            std::process::exit(1);
        }
    }
}

struct Cast {
    payers: Arc<Vec<User>>,
    travellers: Vec<Arc<User>>,
    buyers: Arc<Vec<User>>,
    products: Vec<Uuid>,
}

async fn run() -> Result<bool, String> {
    let settings = Settings::from_env()?;
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let template = Template::from_env()?;
    let groups: Vec<(String, Vec<String>)> = template.msk_sources.iter().map(|s| (s.consumer_group_id.clone(), s.topics.clone())).collect();
    let pg = paystream::db::pool(&config.database, "chaos").map_err(|e| e.to_string())?;
    let ctx = Arc::new(Ctx::new(format!("http://127.0.0.1:{}", settings.http_port), HttpClient::new(REQUEST_TIMEOUT), pg, Instant::now()));
    ctx.log(&format!(
        "seed {} (CHAOS_SEED replays it); load {:?} at {}/s; {} payers, {} travellers, {} buyers, {PRODUCTS} products of stock {}",
        settings.seed, settings.load, settings.rate_per_s, settings.payers, settings.travellers, settings.buyers, settings.stock
    ));

    let cast = tokio::time::timeout(SETUP_BOUND, setup(&ctx, &settings)).await.map_err(|_| format!("set-up took longer than {SETUP_BOUND:?}"))??;
    ctx.log(&format!("set-up done: {} users signed up through the gateway", cast.payers.len() + cast.travellers.len() + cast.buyers.len()));

    let mut rng = Rng::new(settings.seed);
    let plan = faults::plan(&mut rng, settings.load, settings.counts);
    for p in &plan {
        ctx.log(&format!("planned: {} at +{:.1}s {}", p.kind.name(), p.at.as_secs_f64(), p.target.as_deref().unwrap_or("")));
    }
    let start = Instant::now();
    let until = start + settings.load;
    let mut tasks = tokio::task::JoinSet::new();
    let merchants = vec![paystream::demo::SEOUL_CAFE.0, paystream::demo::BUSAN_GRILL.0];
    tasks.spawn(load::payments(Arc::clone(&ctx), Arc::clone(&cast.payers), merchants, settings.rate_per_s, until, rng.fork()));

    // Travellers start early enough for an ignored verification to expire
    // (and be denied by the sweep) before the quiet wait ends.
    let latest_s = (settings.load.as_secs_f64() - config.fds.verify_ttl_s as f64 - 5.0).max(3.0);
    for (i, user) in cast.travellers.iter().enumerate() {
        let at = start + Duration::from_secs_f64(3.0 + rng.unit() * (latest_s - 3.0).max(0.0));
        let answer = [Answer::Approve, Answer::Deny, Answer::Ignore][i % 3];
        tasks.spawn(load::traveller(Arc::clone(&ctx), Arc::clone(user), at, answer, paystream::demo::SEOUL_CAFE.0, paystream::demo::PARIS_CAFE.0));
    }

    // Each flash wave starts just before a fault: Redis lost mid-sale,
    // PostgreSQL restarting mid-sale, the order function killed mid-sale.
    let paired = [(FaultKind::RedisRestart, None), (FaultKind::PostgresRestart, None), (FaultKind::FunctionKill, Some("order"))];
    for (product, (kind, target)) in cast.products.iter().zip(paired) {
        let at = plan
            .iter()
            .find(|p| p.kind == kind && (target.is_none() || p.target.as_deref() == target))
            .map(|p| p.at.saturating_sub(WAVE_LEAD))
            .unwrap_or_else(|| Duration::from_secs_f64(rng.unit() * settings.load.as_secs_f64()));
        tasks.spawn(load::flash_wave(Arc::clone(&ctx), Arc::clone(&cast.buyers), *product, start + at, rng.fork()));
    }
    let probe = faults::Probe { pg: ctx.pg.clone(), redis_url: config.redis.url.expose().to_owned() };
    let fault_task = tokio::spawn(faults::run(Arc::clone(&ctx), probe, start, plan, settings.fault_command.clone()));

    let drained = tokio::time::timeout(settings.load + DRAIN_BOUND, async { while tasks.join_next().await.is_some() {} }).await.is_ok();
    if !drained {
        tasks.abort_all();
        ctx.log("load did not finish within its bound; aborted");
    }
    let faults = match tokio::time::timeout(DRAIN_BOUND, fault_task).await {
        Ok(Ok(records)) => records,
        _ => return Err("the fault runner did not finish".into()),
    };
    ctx.log("load done");
    summarise(&ctx);

    let quiet = observe::quiesce(&ctx, &config.kafka, &groups, settings.quiesce).await && drained;
    let db = observe::database(&ctx).await?;
    let topics = observe::topics(&config.kafka, &config.kafka.payment_topic, &config.kafka.order_topic).await?;
    let answers = ctx.journal.lock().expect("journal").clone();
    let observed = Observed { answers, db, topics, faults, quiet };
    let outcomes = check::check(&observed);
    println!("\n{}", check::report(&observed.faults, &outcomes));
    println!(
        "read: {} payment records, {} ledger rows, {} orders, {} settlements; {} payment events, {} order events on the topics",
        observed.db.payments.len(),
        observed.db.ledger.len(),
        observed.db.orders.len(),
        observed.db.settlements.len(),
        observed.topics.payment_events.len(),
        observed.topics.order_events.len()
    );
    // Not a violation, but worth seeing: payments that exist although their
    // client never got a 202 (its answer was lost to a fault; a keyed client
    // gets it on retry, an unkeyed one cannot know).
    let recorded: std::collections::HashSet<(Uuid, i64)> = observed.db.payments.iter().map(|p| (p.user, p.amount)).collect();
    let unseen = |keyed: bool| {
        observed.answers.payments.iter().filter(|r| r.key.is_some() == keyed && !r.attempts.iter().any(Attempt::accepted) && recorded.contains(&(r.user, r.amount))).count()
    };
    println!("payments recorded although their client saw no 202: {} with a key, {} without", unseen(true), unseen(false));
    Ok(outcomes.iter().all(check::Outcome::held))
}

async fn setup(ctx: &Arc<Ctx>, s: &Settings) -> Result<Cast, String> {
    let suffix = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let admin_password = std::env::var("PAYSTREAM_ADMIN_PASSWORD").unwrap_or_else(|_| "admin-local-only".into());
    let admin = ctx.login(paystream::demo::ADMIN_USERNAME, &admin_password).await?;
    let now = time::OffsetDateTime::now_utc();
    let rfc = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let mut products = Vec::new();
    for i in 0..PRODUCTS {
        let body = json!({"title": format!("Chaos drop {i} {suffix}"), "price": 99_000, "currency": "KRW", "stock": s.stock,
            "start_time": rfc(now - time::Duration::minutes(1)), "end_time": rfc(now + time::Duration::hours(1))});
        let created = ctx.must(Method::POST, "/products", Some(&admin), &body, 201).await?;
        products.push(created["product_id"].as_str().and_then(|v| Uuid::parse_str(v).ok()).ok_or("no product_id")?);
    }
    let both = [paystream::demo::EVERYDAY.0, paystream::demo::CAFE_LOVER.0];
    let payers = sign_up_many(ctx, "p", &suffix, s.payers, &both).await?;
    let travellers = sign_up_many(ctx, "t", &suffix, s.travellers, &both[..1]).await?;
    let buyers = sign_up_many(ctx, "b", &suffix, s.buyers, &[]).await?;
    Ok(Cast { payers: Arc::new(payers), travellers: travellers.into_iter().map(Arc::new).collect(), buyers: Arc::new(buyers), products })
}

async fn sign_up_many(ctx: &Arc<Ctx>, role: &str, suffix: &str, n: usize, cards: &[Uuid]) -> Result<Vec<User>, String> {
    let slots = Arc::new(Semaphore::new(SIGNUPS_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (ctx, slots, name, cards) = (Arc::clone(ctx), Arc::clone(&slots), format!("chaos_{role}{i}_{suffix}"), cards.to_vec());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.map_err(|e| e.to_string())?;
            load::sign_up(&ctx, &name, &cards).await.map(|u| (i, u))
        });
    }
    let mut users = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        users.push(done.map_err(|e| e.to_string())??);
    }
    users.sort_by_key(|(i, _)| *i);
    Ok(users.into_iter().map(|(_, u)| u).collect())
}

/// What the clients saw, by final answer.
fn summarise(ctx: &Ctx) {
    let journal = ctx.journal.lock().expect("journal");
    let line = |what: &str, attempts: Vec<&Vec<Attempt>>| {
        let finals: Vec<&Attempt> = attempts.iter().filter_map(|a| a.last()).collect();
        let n = |f: &dyn Fn(&Attempt) -> bool| finals.iter().filter(|a| f(a)).count();
        ctx.log(&format!(
            "{what}: {} requests, {} attempts; final answers: {} accepted/ok, {} 4xx, {} 5xx, {} no answer",
            attempts.len(),
            attempts.iter().map(|a| a.len()).sum::<usize>(),
            n(&|a| matches!(a.status, Some(200..=299))),
            n(&|a| matches!(a.status, Some(400..=499))),
            n(&|a| matches!(a.status, Some(500..))),
            n(&|a| a.status.is_none()),
        ));
    };
    line("payments", journal.payments.iter().map(|p| &p.attempts).collect());
    line("  of which with an Idempotency-Key", journal.payments.iter().filter(|p| p.key.is_some()).map(|p| &p.attempts).collect());
    line("orders", journal.orders.iter().map(|o| &o.attempts).collect());
    line("SMS-link decisions", journal.verifications.iter().map(|v| &v.attempts).collect());
    let skipped = ctx.skipped_ticks.load(std::sync::atomic::Ordering::Relaxed);
    if skipped > 0 {
        ctx.log(&format!("{skipped} payment ticks skipped (too many requests in flight)"));
    }
}
