//! `pay` against the real PostgreSQL and broker: what 202 promises.

use std::time::{Duration, Instant};

use pay::PayApi;
use paystream::demo::{PARIS_CAFE, SEOUL_CAFE};
use paystream::events::decode_payment;
use paystream::testing::{create_topics, fresh_config, read_topic, seed, user, PrivateBroker, TestUser};
use paystream::Platform;
use serde_json::{json, Value};

async fn api() -> PayApi {
    let config = fresh_config().await;
    create_topics(&config, &[(&config.kafka.payment_topic, 3)]).await;
    let p = Platform::from_config("pay", config).unwrap();
    seed(&p).await;
    PayApi::new(p)
}

async fn call(api: &PayApi, method: &str, path: &str, who: &TestUser, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
    paystream::testing::call(api, method, path, &who.token, key, body).await
}

fn payment(who: &TestUser, merchant: impl ToString, amount: i64) -> Value {
    json!({"card_id": who.cards[0], "merchant_id": merchant.to_string(), "amount": amount, "currency": "KRW"})
}

/// A first request "still publishing": its claim of `key` for `body` is
/// committed and its lease has not run out. Returns the claim's scope and
/// request hash.
async fn live_claim(db: &paystream::db::PgConn, who: &TestUser, key: &str, body: &Value) -> (String, Vec<u8>) {
    let hash = paystream::idempotency::request_hash("POST /payments", body);
    let scope = format!("pay:{}", who.id);
    db.execute(
        "INSERT INTO idempotency_keys (scope, key, request_hash, lease_until) VALUES ($1, $2, $3, now() + interval '1 hour')",
        &[&scope, &key, &hash],
    )
    .await
    .unwrap();
    (scope, hash)
}

async fn count(api: &PayApi, sql: &str) -> i64 {
    api.platform.pg.get().await.unwrap().query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn an_accepted_payment_is_published_once_with_the_merchant_facts() {
    let api = api().await;
    let alice = user(&api.platform, "alice").await;
    let (status, body) = call(&api, "POST", "/payments", &alice, None, Some(payment(&alice, SEOUL_CAFE, 12_000))).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "RECEIVED");
    let payment_id = body["payment_id"].as_str().unwrap().to_owned();

    let records = read_topic(&api.platform.config, &api.platform.config.kafka.payment_topic, 1, Duration::from_secs(1)).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key.as_deref(), Some(alice.id.to_string().as_bytes()), "keyed by user id");
    let event = decode_payment(&records[0].value).unwrap();
    assert_eq!(event.payment_id.to_string(), payment_id);
    assert_eq!((event.merchant_category.as_str(), event.country.as_str(), event.amount), ("cafe", "KR", 12_000));
    assert_eq!(event.card_product_id, paystream::demo::EVERYDAY.0);
    assert!(records[0].headers.iter().any(|(k, v)| k == "event-type" && v == b"payment.received"));

    let (status, body) = call(&api, "GET", &format!("/payments/{payment_id}"), &alice, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"payment_id": payment_id, "status": "RECEIVED", "amount": 12_000, "currency": "KRW", "merchant_id": SEOUL_CAFE.to_string()}));
}

#[tokio::test]
async fn other_peoples_cards_and_payments_are_not_found() {
    let api = api().await;
    let alice = user(&api.platform, "alice").await;
    let bob = user(&api.platform, "bob").await;
    let (status, body) = call(&api, "POST", "/payments", &alice, None, Some(json!({"card_id": bob.cards[0], "merchant_id": SEOUL_CAFE.to_string(), "amount": 1, "currency": "KRW"}))).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("NOT_FOUND")));
    let (status, _) = call(&api, "POST", "/payments", &alice, None, Some(payment(&alice, uuid::Uuid::new_v4(), 1))).await;
    assert_eq!(status, 404);
    let (status, body) = call(&api, "POST", "/payments", &alice, None, Some(json!({"card_id": alice.cards[0], "merchant_id": SEOUL_CAFE.to_string(), "amount": 0, "currency": "KRW"}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("VALIDATION")));

    let (_, body) = call(&api, "POST", "/payments", &alice, None, Some(payment(&alice, SEOUL_CAFE, 500))).await;
    let id = body["payment_id"].as_str().unwrap();
    assert_eq!(call(&api, "GET", &format!("/payments/{id}"), &bob, None, None).await.0, 404);
    assert_eq!(call(&api, "GET", &format!("/payments/{id}"), &alice, None, None).await.0, 200);
    assert_eq!(count(&api, "SELECT count(*) FROM payments").await, 1, "refused payments leave nothing");
}

/// The environment's memo of cards (`IntakeMemo`) keeps a card under its
/// owner: once bob's card is remembered, alice paying with it is still
/// asked of PostgreSQL, and refused.
#[tokio::test]
async fn a_remembered_card_is_still_not_found_for_anyone_but_its_owner() {
    let api = api().await;
    let alice = user(&api.platform, "alice").await;
    let bob = user(&api.platform, "bob").await;
    for _ in 0..2 {
        assert_eq!(call(&api, "POST", "/payments", &bob, None, Some(payment(&bob, SEOUL_CAFE, 700))).await.0, 202, "bob's card and the cafe, remembered");
    }
    let stolen = json!({"card_id": bob.cards[0], "merchant_id": SEOUL_CAFE.to_string(), "amount": 1, "currency": "KRW"});
    let (status, body) = call(&api, "POST", "/payments", &alice, None, Some(stolen)).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("NOT_FOUND")), "{body}");
    let (status, _) = call(&api, "POST", "/payments", &bob, None, Some(payment(&bob, PARIS_CAFE, 900))).await;
    assert_eq!(status, 202, "a remembered card at a merchant not yet seen");
    let records = read_topic(&api.platform.config, &api.platform.config.kafka.payment_topic, 3, Duration::from_secs(1)).await;
    let countries: Vec<String> = records.iter().map(|r| decode_payment(&r.value).unwrap().country).collect();
    assert_eq!(countries.iter().filter(|c| *c == "KR").count(), 2, "{countries:?}");
    assert_eq!(countries.iter().filter(|c| *c == "FR").count(), 1, "each payment carries its own merchant's facts: {countries:?}");
    assert_eq!(count(&api, &format!("SELECT count(*) FROM payments WHERE user_id = '{}'", alice.id)).await, 0, "nothing recorded for alice");
}

#[tokio::test]
async fn idempotency_replays_refuses_reuse_and_survives_a_race() {
    let api = api().await;
    let alice = user(&api.platform, "alice").await;
    let body = payment(&alice, PARIS_CAFE, 7_000);
    let (s1, first) = call(&api, "POST", "/payments", &alice, Some("key-1"), Some(body.clone())).await;
    // Same body, other key order and formatting: still the same request.
    let reordered = json!({"currency": "KRW", "amount": 7_000, "merchant_id": PARIS_CAFE.to_string(), "card_id": alice.cards[0]});
    let (s2, second) = call(&api, "POST", "/payments", &alice, Some("key-1"), Some(reordered)).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first, second, "the first response again");
    let (s3, conflict) = call(&api, "POST", "/payments", &alice, Some("key-1"), Some(payment(&alice, PARIS_CAFE, 7_001))).await;
    assert_eq!((s3, conflict["code"].as_str()), (409, Some("IDEMPOTENCY_KEY_REUSED")));

    // Two identical requests at the same moment.
    let race = payment(&alice, SEOUL_CAFE, 3_000);
    let (a, b) = tokio::join!(
        call(&api, "POST", "/payments", &alice, Some("key-race"), Some(race.clone())),
        call(&api, "POST", "/payments", &alice, Some("key-race"), Some(race.clone()))
    );
    assert_eq!((a.0, b.0), (202, 202));
    assert_eq!(a.1, b.1);

    // A key is per user: bob may use "key-1" for his own payment.
    let bob = user(&api.platform, "bob").await;
    assert_eq!(call(&api, "POST", "/payments", &bob, Some("key-1"), Some(payment(&bob, SEOUL_CAFE, 1))).await.0, 202);

    assert_eq!(count(&api, "SELECT count(*) FROM payments").await, 3);
    let records = read_topic(&api.platform.config, &api.platform.config.kafka.payment_topic, 3, Duration::from_secs(2)).await;
    assert_eq!(records.len(), 3, "no second event for a replay");
}

#[tokio::test]
async fn with_the_broker_stopped_payments_get_503_and_the_keyed_retry_pays_once_with_the_same_id() {
    let mut broker = PrivateBroker::start();
    let mut config = fresh_config().await;
    config.kafka.bootstrap_servers = broker.bootstrap();
    config.kafka.publish_timeout_ms = 1_500;
    create_topics(&config, &[(&config.kafka.payment_topic, 1)]).await;
    let p = Platform::from_config("pay", config).unwrap();
    seed(&p).await;
    let api = PayApi::new(p);
    let alice = user(&api.platform, "alice").await;
    assert_eq!(call(&api, "POST", "/payments", &alice, None, Some(payment(&alice, SEOUL_CAFE, 100))).await.0, 202);

    broker.stop();
    let started = Instant::now();
    let (status, body) = call(&api, "POST", "/payments", &alice, Some("while-down"), Some(payment(&alice, SEOUL_CAFE, 200))).await;
    assert_eq!((status, body["code"].as_str()), (503, Some("BROKER_UNAVAILABLE")));
    assert!(started.elapsed() < Duration::from_millis(1_500 + 1_500), "bounded: {:?}", started.elapsed());
    assert_eq!(count(&api, "SELECT count(*) FROM payments").await, 1, "only the acknowledged payment");
    // The publish may have landed for all the function knows (a timeout):
    // the claim stays, unanswered, its lease ended.
    assert_eq!(count(&api, "SELECT count(*) FROM idempotency_keys WHERE status_code IS NULL AND lease_until < now()").await, 1, "the claim is abandoned");
    let (status, refused) = call(&api, "POST", "/payments", &alice, Some("while-down"), Some(payment(&alice, SEOUL_CAFE, 201))).await;
    assert_eq!((status, refused["code"].as_str()), (409, Some("IDEMPOTENCY_KEY_REUSED")), "another request with the key: the first may have paid");

    // Once the broker is back, the retry takes the claim over and pays
    // with the id the failed attempt would have published.
    broker.restart();
    let body = payment(&alice, SEOUL_CAFE, 200);
    let mut answer = (0, Value::Null);
    for _ in 0..10 {
        answer = call(&api, "POST", "/payments", &alice, Some("while-down"), Some(body.clone())).await;
        if answer.0 == 202 {
            break;
        }
        assert_eq!(answer.1["code"].as_str(), Some("BROKER_UNAVAILABLE"), "{answer:?}");
    }
    assert_eq!(answer.0, 202, "{answer:?}");
    let db = api.platform.pg.get().await.unwrap();
    let claimed_at = db.query_one("SELECT created_at FROM idempotency_keys WHERE key = 'while-down'", &[]).await.unwrap().get(0);
    let hash = paystream::idempotency::request_hash("POST /payments", &body);
    let first_attempts_id = paystream::idempotency::derived_id(&format!("pay:{}", alice.id), "while-down", &hash, claimed_at);
    assert_eq!(answer.1["payment_id"], first_attempts_id.to_string());
    assert_eq!(count(&api, "SELECT count(*) FROM payments").await, 2);
}

#[tokio::test]
async fn a_twin_of_a_request_still_in_progress_gets_409_in_progress_not_a_server_error() {
    let api = api().await;
    let alice = user(&api.platform, "alice").await;
    let body = payment(&alice, SEOUL_CAFE, 4_200);
    // The first request is "still publishing": its claim is committed and
    // its lease has not run out.
    let db = api.platform.pg.get().await.unwrap();
    live_claim(&db, &alice, "slow-key", &body).await;

    let started = Instant::now();
    let (status, answer) = call(&api, "POST", "/payments", &alice, Some("slow-key"), Some(body.clone())).await;
    let waited_ms = started.elapsed().as_millis() as u64;
    assert_eq!((status, answer["code"].as_str()), (409, Some("IDEMPOTENCY_KEY_IN_PROGRESS")), "{answer}");
    let wait_ms = api.platform.config.http.idempotency_wait_ms;
    assert!(waited_ms >= wait_ms && waited_ms < wait_ms + 1_000, "waited {waited_ms} ms");
    assert_eq!(count(&api, "SELECT count(*) FROM payments").await, 0, "the twin did nothing");

    // The first request's invocation died: once its lease has run out, the
    // retry takes the claim over and does the work once.
    db.execute("UPDATE idempotency_keys SET lease_until = now() - interval '1 second' WHERE key = 'slow-key'", &[]).await.unwrap();
    let (status, answer) = call(&api, "POST", "/payments", &alice, Some("slow-key"), Some(body.clone())).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(count(&api, "SELECT count(*) FROM payments").await, 1);
    // Another request with that key is still refused, and a replay answers.
    let (status, refused) = call(&api, "POST", "/payments", &alice, Some("slow-key"), Some(payment(&alice, SEOUL_CAFE, 4_201))).await;
    assert_eq!((status, refused["code"].as_str()), (409, Some("IDEMPOTENCY_KEY_REUSED")));
    let (status, replayed) = call(&api, "POST", "/payments", &alice, Some("slow-key"), Some(body)).await;
    assert_eq!((status, &replayed), (202, &answer));
    assert_eq!(count(&api, "SELECT count(*) FROM payments").await, 1);
}

#[tokio::test]
async fn a_claim_released_by_a_failed_first_request_lets_the_twin_do_the_work() {
    let api = api().await;
    let alice = user(&api.platform, "alice").await;
    let body = payment(&alice, SEOUL_CAFE, 4_300);
    let db = api.platform.pg.get().await.unwrap();
    let (scope, hash) = live_claim(&db, &alice, "released", &body).await;
    // The first request fails (its publish did) and releases its claim while
    // the twin waits.
    let release = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        paystream::idempotency::release(&db, &scope, "released", &hash).await.unwrap();
    };
    let (_, (status, answer)) = tokio::join!(release, call(&api, "POST", "/payments", &alice, Some("released"), Some(body)));
    assert_eq!(status, 202, "{answer}");
    assert_eq!(count(&api, "SELECT count(*) FROM payments").await, 1);
}

#[tokio::test]
async fn payment_ids_are_time_ordered_and_a_keyed_one_is_derived_from_its_claim() {
    let api = api().await;
    let alice = user(&api.platform, "alice").await;
    let body = payment(&alice, SEOUL_CAFE, 1_000);
    let (_, answer) = call(&api, "POST", "/payments", &alice, Some("derived"), Some(body.clone())).await;
    let hash = paystream::idempotency::request_hash("POST /payments", &body);
    let db = api.platform.pg.get().await.unwrap();
    let claimed_at = db.query_one("SELECT created_at FROM idempotency_keys WHERE key = 'derived'", &[]).await.unwrap().get(0);
    let expected = paystream::idempotency::derived_id(&format!("pay:{}", alice.id), "derived", &hash, claimed_at);
    assert_eq!(answer["payment_id"], expected.to_string(), "a retry after a lost commit publishes the same payment again");
    // Ids grow with time (UUIDv7), keyed or not, so the tables' keys grow
    // at their right edge.
    tokio::time::sleep(Duration::from_millis(2)).await; // another millisecond
    let (_, later) = call(&api, "POST", "/payments", &alice, None, Some(payment(&alice, SEOUL_CAFE, 1_001))).await;
    let (first, second): (uuid::Uuid, uuid::Uuid) = (expected, later["payment_id"].as_str().unwrap().parse().unwrap());
    assert_eq!((first.get_version_num(), second.get_version_num()), (7, 7));
    assert!(second > first, "{second} after {first}");
}

/// Many requests in flight at once (as in a Managed Instances environment)
/// share the claim and record statements; each payment is still published
/// and recorded exactly once, every key gets its own answer, and a twin in
/// the same batch as its first request replays it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_statements_and_each_pays_once() {
    const PAYMENTS: usize = 120;
    const TWINS: usize = 30;
    let api = std::sync::Arc::new(api().await);
    let alice = std::sync::Arc::new(user(&api.platform, "alice").await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..PAYMENTS + TWINS {
        let (api, alice) = (std::sync::Arc::clone(&api), std::sync::Arc::clone(&alice));
        // Requests PAYMENTS.. repeat the first TWINS requests (key and body).
        let n = if i < PAYMENTS { i } else { i - PAYMENTS };
        tasks.spawn(async move {
            let key = format!("batch-{n}");
            let (status, body) = call(&api, "POST", "/payments", &alice, Some(&key), Some(payment(&alice, SEOUL_CAFE, 1_000 + n as i64))).await;
            (n, status, body)
        });
    }
    let mut answers: std::collections::HashMap<usize, Vec<Value>> = std::collections::HashMap::new();
    while let Some(done) = tasks.join_next().await {
        let (n, status, body) = done.unwrap();
        assert_eq!(status, 202, "request {n}: {body}");
        answers.entry(n).or_default().push(body);
    }
    assert_eq!(answers.len(), PAYMENTS);
    for (n, bodies) in &answers {
        assert!(bodies.windows(2).all(|w| w[0] == w[1]), "twins of {n} got the same answer: {bodies:?}");
    }
    assert_eq!(count(&api, "SELECT count(*) FROM payments").await, PAYMENTS as i64);
    assert_eq!(count(&api, "SELECT count(*) FROM idempotency_keys WHERE status_code = 202 AND lease_until IS NULL").await, PAYMENTS as i64);
    let records = read_topic(&api.platform.config, &api.platform.config.kafka.payment_topic, PAYMENTS, Duration::from_secs(2)).await;
    let ids: std::collections::HashSet<_> = records.iter().map(|r| decode_payment(&r.value).unwrap().payment_id).collect();
    assert_eq!((records.len(), ids.len()), (PAYMENTS, PAYMENTS), "one event per payment, none for a replay");
}

/// The environment's one write statement carries both kinds of row at
/// once: the claims of requests starting (a new key, the same key twice,
/// a key already taken) and the record of a request finishing (its
/// payment and its key's answer), each with its own outcome.
#[tokio::test]
async fn one_write_statement_claims_new_keys_and_records_finished_payments() {
    use paystream::idempotency::NewClaim;
    use paystream::store::payments::{write_intake, Accepted, KeyAnswer, NewPayment};
    let api = api().await;
    let alice = user(&api.platform, "alice").await;
    let db = api.platform.pg.get().await.unwrap();
    let (scope, hash) = live_claim(&db, &alice, "finishing", &payment(&alice, SEOUL_CAFE, 1_000)).await;
    let claim = |key: &str| NewClaim { scope: scope.clone(), key: key.to_owned(), hash: hash.clone() };
    let id = paystream::domain::new_id();
    let finished = Accepted {
        payment: NewPayment { id, user_id: alice.id.0, card_id: alice.cards[0], merchant_id: SEOUL_CAFE.0, amount: 1_000, currency: "KRW" },
        key: Some(KeyAnswer { scope: scope.clone(), key: "finishing".to_owned(), status: 202, body: json!({"payment_id": id}) }),
    };
    let claims = [claim("starting"), claim("starting"), claim("finishing")];
    let outcomes = write_intake(&db, &claims, &[finished], 60_000).await.unwrap();
    assert!(outcomes[0].is_some(), "a new key is claimed");
    assert_eq!(outcomes[1..], [None, None], "the same key again and a taken key go on to await_claim");
    let keys: Vec<(String, Option<i16>, bool)> = db
        .query("SELECT key, status_code, lease_until IS NOT NULL FROM idempotency_keys WHERE scope = $1 ORDER BY key", &[&scope])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(keys, [("finishing".to_owned(), Some(202), false), ("starting".to_owned(), None, true)], "answered and unleased; claimed and leased");
    assert_eq!(count(&api, &format!("SELECT count(*) FROM payments WHERE id = '{id}'")).await, 1);
}
