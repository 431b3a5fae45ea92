//! The mixed load, through the gateway only, as real clients behave:
//! payments at a steady rate (half with an Idempotency-Key, retried with
//! the same key and body after a failure, some resent after success as if
//! the answer had been lost), impossible-travel pairs answered through the
//! SMS link, and flash-sale waves of concurrent buyers. Every answer is
//! journalled for the checker.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::Method;
use paystream::db::PgPool;
use paystream_local::client::HttpClient;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::check::{Answers, Attempt, OrderRequest, PaymentRequest, VerificationRequest};
use crate::rng::Rng;

/// Attempts per request that a client retries (the first included).
const ATTEMPTS_MAX: usize = 4;
/// First retry delay; doubles per attempt.
const RETRY_BACKOFF_MS: u64 = 400;
/// Most payment requests in flight; a tick beyond it is skipped (counted).
const IN_FLIGHT_MAX: usize = 48;
/// How long a traveller waits for a decision, or for the SMS.
const DECISION_WAIT: Duration = Duration::from_secs(25);
const POLL_EVERY: Duration = Duration::from_millis(400);
/// A flash wave's buyers arrive within this long.
pub const WAVE_SPREAD: Duration = Duration::from_secs(4);
/// Payments in this run get amounts from here up, one per request.
const AMOUNT_BASE: i64 = 10_000;

pub struct User {
    pub id: Uuid,
    pub bearer: String,
    pub cards: Vec<Uuid>,
}

pub struct Ctx {
    pub base: String,
    pub client: HttpClient,
    pub pg: PgPool,
    pub t0: Instant,
    pub journal: Mutex<Answers>,
    next_amount: AtomicI64,
    pub skipped_ticks: AtomicUsize,
}

impl Ctx {
    pub fn new(base: String, client: HttpClient, pg: PgPool, t0: Instant) -> Self {
        Self { base, client, pg, t0, journal: Mutex::new(Answers::default()), next_amount: AtomicI64::new(AMOUNT_BASE), skipped_ticks: AtomicUsize::new(0) }
    }

    pub fn log(&self, line: &str) {
        println!("[chaos t+{:>6.1}s] {line}", self.t0.elapsed().as_secs_f64());
    }

    /// One HTTP call through the gateway; never fails (no answer is an Attempt too).
    pub async fn call(&self, method: Method, path: &str, bearer: Option<&str>, key: Option<&str>, body: Option<&Value>) -> (Attempt, Value) {
        let mut headers = vec![("content-type", "application/json"), ("accept", "application/json")];
        if let Some(b) = bearer {
            headers.push(("authorization", b));
        }
        if let Some(k) = key {
            headers.push(("idempotency-key", k));
        }
        let url = format!("{}{path}", self.base);
        match self.client.send(method, &url, &headers, body.map(|b| b.to_string().into_bytes())).await {
            Ok(answer) => {
                let value = answer.json();
                let id = ["payment_id", "order_id"].iter().find_map(|f| value[*f].as_str()).and_then(|s| Uuid::parse_str(s).ok());
                let code = value["code"].as_str().map(str::to_owned);
                (Attempt { status: Some(answer.status), id, code }, value)
            }
            Err(_) => (Attempt::default(), Value::Null),
        }
    }

    /// A request a client retries with the same key and body: up to
    /// `attempts_max` attempts while the answer is [`retryable`].
    async fn with_retries(&self, method: Method, path: &str, bearer: Option<&str>, key: Option<&str>, body: &Value, attempts_max: usize) -> Vec<Attempt> {
        let mut attempts = Vec::new();
        for n in 0..attempts_max {
            let (attempt, _) = self.call(method.clone(), path, bearer, key, Some(body)).await;
            let again = retryable(&attempt);
            attempts.push(attempt);
            if !again || n + 1 == attempts_max {
                break;
            }
            tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS << n)).await;
        }
        attempts
    }

    fn amount(&self) -> i64 {
        self.next_amount.fetch_add(1, Ordering::Relaxed)
    }

    /// One payment; keyed ones are retried, and `resend` sends a keyed one
    /// once more after its 202 (the client lost the answer).
    pub async fn pay(&self, user: &User, card: Uuid, merchant: Uuid, key: Option<String>, resend: bool) -> PaymentRequest {
        let amount = self.amount();
        let body = json!({"card_id": card, "merchant_id": merchant, "amount": amount, "currency": "KRW"});
        let attempts_max = if key.is_some() { ATTEMPTS_MAX } else { 1 };
        let mut attempts = self.with_retries(Method::POST, "/payments", Some(&user.bearer), key.as_deref(), &body, attempts_max).await;
        if resend && key.is_some() && attempts.last().is_some_and(Attempt::accepted) {
            attempts.push(self.call(Method::POST, "/payments", Some(&user.bearer), key.as_deref(), Some(&body)).await.0);
        }
        let request = PaymentRequest { user: user.id, merchant, amount, key, attempts };
        self.journal.lock().expect("journal").payments.push(request.clone());
        request
    }
}

/// What a client retries: no answer, a 5xx or 429, or its own earlier
/// attempt still in progress (409 IDEMPOTENCY_KEY_IN_PROGRESS).
fn retryable(a: &Attempt) -> bool {
    match a.status {
        None => true,
        Some(s) => s >= 500 || s == 429 || a.code.as_deref() == Some("IDEMPOTENCY_KEY_IN_PROGRESS"),
    }
}

fn key() -> String {
    format!("chaos-{}", Uuid::new_v4().simple())
}

/// Payments from `payers` at `rate_per_s` until `until`.
pub async fn payments(ctx: Arc<Ctx>, payers: Arc<Vec<User>>, merchants: Vec<Uuid>, rate_per_s: f64, until: Instant, mut rng: Rng) {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate_per_s));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let slots = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    let mut tasks = tokio::task::JoinSet::new();
    while Instant::now() < until {
        ticker.tick().await;
        while tasks.try_join_next().is_some() {}
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            ctx.skipped_ticks.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let who = rng.below(payers.len());
        let card_index = if rng.chance(0.7) { 0 } else { 1 };
        let merchant = merchants[rng.below(merchants.len())];
        let keyed = rng.chance(0.5);
        let resend = keyed && rng.chance(0.1);
        let (ctx, payers) = (Arc::clone(&ctx), Arc::clone(&payers));
        tasks.spawn(async move {
            let user = &payers[who];
            let card = user.cards[card_index.min(user.cards.len() - 1)];
            ctx.pay(user, card, merchant, keyed.then(key), resend).await;
            drop(slot);
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[derive(Clone, Copy, Debug)]
pub enum Answer {
    Approve,
    Deny,
    /// Leave it to expire (the sweep denies it).
    Ignore,
}

/// Seoul, then Paris moments later with the same card: the Paris payment is
/// held (PENDING) and its SMS link answered per `answer`.
pub async fn traveller(ctx: Arc<Ctx>, user: Arc<User>, start: Instant, answer: Answer, seoul: Uuid, paris: Uuid) {
    tokio::time::sleep_until(start.into()).await;
    let card = user.cards[0];
    let first = ctx.pay(&user, card, seoul, Some(key()), false).await;
    if let Some(id) = first.attempts.iter().rev().find(|a| a.accepted()).and_then(|a| a.id) {
        ctx.wait_decided(&user, id, &["RECEIVED"]).await;
    }
    let second = ctx.pay(&user, card, paris, Some(key()), false).await;
    let Some(id) = second.attempts.iter().rev().find(|a| a.accepted()).and_then(|a| a.id) else { return };
    let status = ctx.wait_decided(&user, id, &["RECEIVED"]).await;
    if status.as_deref() != Some("PENDING") {
        ctx.log(&format!("traveller: Paris payment {id} -> {}", status.as_deref().unwrap_or("no answer")));
        return;
    }
    let approve = match answer {
        Answer::Ignore => return ctx.log(&format!("traveller: Paris payment {id} PENDING, left to expire")),
        Answer::Approve => true,
        Answer::Deny => false,
    };
    let Some(token) = ctx.sms_token(user.id).await else {
        return ctx.log(&format!("traveller: no SMS for payment {id}"));
    };
    let body = json!({"decision": if approve { "approve" } else { "deny" }});
    let attempts = ctx.with_retries(Method::POST, &format!("/verify/{token}"), None, None, &body, ATTEMPTS_MAX).await;
    ctx.log(&format!(
        "traveller: Paris payment {id} PENDING, {} through the SMS link -> {:?}",
        if approve { "approved" } else { "denied" },
        attempts.iter().map(|a| a.status).collect::<Vec<_>>()
    ));
    ctx.journal.lock().expect("journal").verifications.push(VerificationRequest { payment: id, approve, attempts });
}

impl Ctx {
    /// Polls `GET /payments/{id}` while its status is one of `while_in`; the last status seen.
    async fn wait_decided(&self, user: &User, id: Uuid, while_in: &[&str]) -> Option<String> {
        let deadline = Instant::now() + DECISION_WAIT;
        let mut last = None;
        while Instant::now() < deadline {
            let (attempt, body) = self.call(Method::GET, &format!("/payments/{id}"), Some(&user.bearer), None, None).await;
            if attempt.status == Some(200) {
                last = body["status"].as_str().map(str::to_owned);
                if last.as_deref().is_some_and(|s| !while_in.contains(&s)) {
                    return last;
                }
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        last
    }

    /// The token of the newest SMS to `user` (the local outbox), waiting for it.
    async fn sms_token(&self, user: Uuid) -> Option<String> {
        let deadline = Instant::now() + DECISION_WAIT;
        while Instant::now() < deadline {
            let body: Option<String> = async {
                let db = self.pg.get().await.ok()?;
                db.query_opt("SELECT body FROM sms_outbox WHERE user_id = $1 ORDER BY id DESC LIMIT 1", &[&user]).await.ok()?.map(|r| r.get(0))
            }
            .await;
            if let Some(token) = body.as_deref().and_then(|b| b.split_whitespace().find(|w| w.contains("/verify/"))).and_then(|l| l.rsplit('/').next()) {
                return Some(token.trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_').to_owned());
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        None
    }
}

/// Every buyer orders `product` within [`WAVE_SPREAD`] of `start`; half with
/// a key. Clients retry after no answer or a 5xx (with the same key, or
/// without one as an impatient buyer would); some resend a keyed order after
/// its 202 (the answer was lost), and some who got a 202 order again without
/// a key (a double click), which must be refused as ALREADY_PURCHASED.
pub async fn flash_wave(ctx: Arc<Ctx>, buyers: Arc<Vec<User>>, product: Uuid, start: Instant, mut rng: Rng) {
    tokio::time::sleep_until(start.into()).await;
    ctx.log(&format!("flash sale: {} buyers order product {product} over {WAVE_SPREAD:?}", buyers.len()));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..buyers.len() {
        let keyed = rng.chance(0.5);
        let resend = keyed && rng.chance(0.2);
        let again = rng.chance(0.25);
        let delay = WAVE_SPREAD.mul_f64(rng.unit());
        let (ctx, buyers) = (Arc::clone(&ctx), Arc::clone(&buyers));
        tasks.spawn(async move {
            tokio::time::sleep(delay).await;
            let buyer = &buyers[i];
            let key = keyed.then(key);
            let body = json!({"product_id": product});
            let mut attempts = ctx.with_retries(Method::POST, "/orders", Some(&buyer.bearer), key.as_deref(), &body, ATTEMPTS_MAX).await;
            let accepted = attempts.last().is_some_and(Attempt::accepted);
            if resend && accepted {
                attempts.push(ctx.call(Method::POST, "/orders", Some(&buyer.bearer), key.as_deref(), Some(&body)).await.0);
            }
            ctx.journal.lock().expect("journal").orders.push(OrderRequest { user: buyer.id, product, key, attempts });
            if again && accepted {
                let attempts = ctx.with_retries(Method::POST, "/orders", Some(&buyer.bearer), None, &body, ATTEMPTS_MAX).await;
                ctx.journal.lock().expect("journal").orders.push(OrderRequest { user: buyer.id, product, key: None, attempts });
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let journal = ctx.journal.lock().expect("journal");
    let mine: Vec<&OrderRequest> = journal.orders.iter().filter(|o| o.product == product).collect();
    let count = |f: &dyn Fn(&Attempt) -> bool| mine.iter().filter(|o| o.attempts.last().is_some_and(f)).count();
    ctx.log(&format!(
        "flash sale of {product}: {} accepted, {} sold out, {} already purchased, {} other (final answers)",
        count(&|a| a.accepted()),
        count(&|a| a.code.as_deref() == Some("SOLD_OUT")),
        count(&|a| a.code.as_deref() == Some("ALREADY_PURCHASED")),
        count(&|a| !a.accepted() && !matches!(a.code.as_deref(), Some("SOLD_OUT" | "ALREADY_PURCHASED"))),
    ));
}

/// Sign-up, log-in and cards, through the gateway (before any fault).
pub async fn sign_up(ctx: &Ctx, name: &str, card_products: &[Uuid]) -> Result<User, String> {
    let password = "chaos-password-123";
    let body = json!({"username": name, "email": format!("{name}@example.com"), "password": password, "phone": "+821055550000"});
    let created = ctx.must(Method::POST, "/auth/signup", None, &body, 201).await?;
    let id = created["user_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).ok_or("sign-up answered no user_id")?;
    let bearer = ctx.login(name, password).await?;
    let mut cards = Vec::new();
    for (product, pan) in card_products.iter().zip(["4242 4242 4242 4242", "5555 5555 5555 4444"]) {
        let card = ctx.must(Method::POST, "/cards", Some(&bearer), &json!({"card_product_id": product, "pan": pan, "expiry": "12/30"}), 201).await?;
        cards.push(card["card_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()).ok_or("no card_id")?);
    }
    Ok(User { id, bearer, cards })
}

impl Ctx {
    pub async fn login(&self, username: &str, password: &str) -> Result<String, String> {
        let token = self.must(Method::POST, "/auth/login", None, &json!({"username": username, "password": password}), 200).await?;
        Ok(format!("Bearer {}", token["access_token"].as_str().ok_or("log-in answered no token")?))
    }

    /// A setup call that must answer `want` (retried a few times: the
    /// functions start cold).
    pub async fn must(&self, method: Method, path: &str, bearer: Option<&str>, body: &Value, want: u16) -> Result<Value, String> {
        let mut last = None;
        for n in 0..ATTEMPTS_MAX {
            let (attempt, value) = self.call(method.clone(), path, bearer, None, Some(body)).await;
            if attempt.status == Some(want) {
                return Ok(value);
            }
            last = Some((attempt.status, value));
            tokio::time::sleep(Duration::from_millis(RETRY_BACKOFF_MS << n)).await;
        }
        Err(format!("{method} {path}: expected {want}, got {last:?}"))
    }
}
