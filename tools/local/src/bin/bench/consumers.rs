//! Consumer batch throughput: each MSK consumer on 1,000-record batches of
//! new events, against the local PostgreSQL and Redis, doing what its
//! Lambda does per invocation: the handler's parse of the invocation's body,
//! the MSK event (JSON, base64 records: `msk::parse_records`; the runtime
//! hands the body over untouched, `msk::TakeBody`), handle them
//! (`msk::handle_records`), write its JSON log lines and flush its EMF
//! metrics (to /dev/null while timed, where Lambda has CloudWatch).
//!
//! Two shapes, each after one untimed warm-up batch per consumer instance:
//! - one partition: one environment, one batch at a time;
//! - three partitions in parallel: three environments (own pools), one
//!   batch each at the same time, as three ESM pollers would invoke them.
//!
//! The records are what pay and order publish: the key (payer or order id
//! as text), the value, and the two headers (`event-type`, `event-id`),
//! which MSK delivers as arrays of numbers; the parse keeps them as raw
//! JSON and decodes them only for a record sent to the DLQ (`msk::Headers`).
//!
//! The data is what production holds:
//! - payments: every event's payment row exists (intake wrote it before
//!   publishing); 1 in 20 payments is impossible travel (Paris moments after
//!   Seoul: PENDING, a verification token and an SMS outbox row); 1 in 5 is
//!   made with the card that earns less at a café (a benefit tip); each
//!   holder pays at their own usual café, one of 100 in Seoul, whose VIP
//!   thresholds range over 2..62 visits (so every batch makes some VIPs);
//! - orders: one flash-sale product that already has [`HISTORY_ORDERS`]
//!   settled orders; each batch is 1,000 new accepted (PENDING) orders.
//!
//! Baselines, same run: FDS and loyalty on one partition with each batch in
//! one transaction (`CONSUMER_BATCH_SHARDS=1`), on as many batches of the
//! same payers just before; on the same records, parsing and decoding the event
//! (the floor every consumer pays), and a raw multi-row INSERT of the
//! batch's rows (the ledger's rows for payments, settlements for orders)
//! committed in one statement. Cost: CPU microseconds per record for this
//! process (where the handler runs) and each server, and the Lambda GB-s
//! per million records that follow from the batch duration and the
//! template's `MemorySize`, and the rate that the CPU Lambda gives at that
//! size (`MemorySize` / 1,769 of a vCPU) allows at the CPU per record
//! measured here (and at the Globals' 256 MB, for comparison).

use std::sync::Arc;
use std::time::{Duration, Instant};

use paystream::db::PgPool;
use paystream::demo;
use paystream::events::{decode_order, decode_payment, OrderEvent, PaymentEvent, HEADER_EVENT_ID, HEADER_EVENT_TYPE};
use paystream::msk::{self, decode_all, BatchConsumer, OutRecordForEvent};
use paystream::Platform;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::cpu;

/// Records per batch: the template's BatchSize for every consumer.
pub const BATCH_RECORDS: usize = 1_000;
/// Partitions of each topic, and so parallel batches in the second shape.
const PARTITIONS: usize = 3;
/// One payment in this many is impossible travel (5 %).
const TRAVEL_EVERY: usize = 20;
/// One payment in this many is made with the lesser card (a tip, 20 %).
const TIP_EVERY: usize = 5;
/// Settled orders the sale's product has before the timed batches.
const HISTORY_ORDERS: usize = 100_000;
/// Where the bench cafés are (latitude, longitude): Seoul, as the demo's café.
const SEOUL: (f64, f64) = (37.5665, 126.978);
/// Cafés in Seoul the card holders pay at: each holder always at the same
/// one (so visits add up to VIP as at a regular's café), the holders spread
/// evenly over them, as a real payment stream spreads over many merchants.
const CAFES: usize = 100;
/// The cafés' VIP thresholds, spread over them (café i: start + i % len),
/// so every batch makes some regulars VIP (about 1 payment in 60 once the
/// holders have paid twice), not one batch all of them.
const VIP_THRESHOLDS: std::ops::Range<i32> = 2..62;
/// Minutes between consecutive batches' payments (so Seoul → Seoul is
/// plausible and Seoul → Paris is impossible).
const SLOT_MINUTES: i64 = 1;

pub struct User {
    pub id: Uuid,
    pub everyday_card: Uuid,
    pub cafe_card: Uuid,
    /// The Seoul café this holder pays at (one of [`CAFES`]).
    pub cafe: Uuid,
}

/// 1,000 users, each with an Everyday and a Cafe Lover card and a usual
/// café.
pub async fn create_users(pg: &PgPool, suffix: &str) -> Vec<User> {
    create_card_holders(pg, BATCH_RECORDS, suffix).await
}

async fn create_card_holders(pg: &PgPool, n: usize, suffix: &str) -> Vec<User> {
    let ids = crate::stats::create_buyers(pg, n, suffix).await;
    let db = pg.get().await.expect("database");
    let mut cards: Vec<std::collections::HashMap<Uuid, Uuid>> = Vec::new();
    for product in [demo::EVERYDAY.0, demo::CAFE_LOVER.0] {
        let rows = db
            .query(
                "INSERT INTO cards (id, user_id, card_product_id, last4, fingerprint, expiry_month, expiry_year)
                 SELECT gen_random_uuid(), u, $2::uuid, '4242', sha256(convert_to(u::text || $2::uuid::text, 'UTF8')), 12, 2099
                 FROM unnest($1::uuid[]) AS u RETURNING user_id, id",
                &[&ids, &product],
            )
            .await
            .expect("bench cards");
        cards.push(rows.iter().map(|r| (r.get(0), r.get(1))).collect());
    }
    // The cafés belong to the first holder: the database only asks for an
    // existing owner, and nobody signs in as it.
    let cafes: Vec<Uuid> = db
        .query(
            "INSERT INTO merchants (id, owner_id, name, category, country, lat, lon, vip_threshold)
             SELECT gen_random_uuid(), $1, 'Bench Cafe ' || i, 'cafe', 'KR', $3, $4, $5 + i % $6 FROM generate_series(1, $2::int) AS i
             RETURNING id",
            &[&ids[0], &i32::try_from(CAFES).expect("fits"), &SEOUL.0, &SEOUL.1, &VIP_THRESHOLDS.start, &(VIP_THRESHOLDS.end - VIP_THRESHOLDS.start)],
        )
        .await
        .expect("bench cafes")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let users: Vec<User> =
        ids.iter().enumerate().map(|(i, id)| User { id: *id, everyday_card: cards[0][id], cafe_card: cards[1][id], cafe: cafes[i % CAFES] }).collect();
    assert_eq!(users.len(), n);
    users
}

/// Per user, the `Authorization` header and body of a `POST /payments` of
/// `amount` KRW with their Everyday card at their usual Seoul café.
pub fn payment_requests(tokens: &paystream::auth::TokenIssuer, users: &[User], amount: i64) -> Vec<(String, String)> {
    users
        .iter()
        .map(|u| {
            let token = tokens.issue(paystream::domain::UserId(u.id), paystream::domain::Role::User).expect("token").access_token;
            let body = serde_json::json!({"card_id": u.everyday_card, "merchant_id": u.cafe, "amount": amount, "currency": "KRW"});
            (format!("Bearer {token}"), body.to_string())
        })
        .collect()
}

/// One batch as its event source delivers it: the MSK event's JSON.
#[derive(Clone)]
struct Batch {
    partition: i32,
    /// Shared, so handing a batch to its invocation's task copies nothing.
    event_json: bytes::Bytes,
    records: usize,
}

/// One record as its producer publishes it: the key and the headers
/// (event type and id) exactly as pay and order set them, so the event's
/// JSON is as large, and as costly to parse, as production's.
struct BenchRecord {
    key: String,
    event_type: &'static str,
    event_id: String,
    value: Vec<u8>,
}

fn batch_of(topic: &str, partition: i32, first_offset: i64, records: &[BenchRecord]) -> Batch {
    let headers: Vec<[(&str, &[u8]); 2]> =
        records.iter().map(|r| [(HEADER_EVENT_TYPE, r.event_type.as_bytes()), (HEADER_EVENT_ID, r.event_id.as_bytes())]).collect();
    let timestamp_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    let out: Vec<OutRecordForEvent<'_>> = records
        .iter()
        .zip(&headers)
        .enumerate()
        .map(|(i, (r, headers))| OutRecordForEvent {
            topic,
            partition,
            offset: first_offset + i as i64,
            timestamp_ms,
            key: Some(r.key.as_bytes()),
            value: &r.value,
            headers,
        })
        .collect();
    let event = msk::build_event("arn:aws:kafka:local:000000000000:cluster/bench/0", &out);
    Batch { partition, event_json: serde_json::to_vec(&event).expect("event").into(), records: records.len() }
}

/// Each user's payment in time slot `slot`: at their Seoul café, except,
/// when `travel`, one in [`TRAVEL_EVERY`] in Paris (impossible after the
/// last slot's Seoul, so never in a group's first slot); one in
/// [`TIP_EVERY`] of the Seoul ones with the Everyday card.
fn payment_events(users: &[User], slot: usize, start: OffsetDateTime, travel: bool) -> Vec<PaymentEvent> {
    let at = start + time::Duration::minutes(SLOT_MINUTES * slot as i64);
    users
        .iter()
        .enumerate()
        .map(|(i, user)| {
            let travels = travel && (i + slot) % TRAVEL_EVERY == 0;
            let lesser_card = (i + slot) % TIP_EVERY == 0;
            let (card_id, card_product_id) =
                if lesser_card && !travels { (user.everyday_card, demo::EVERYDAY.0) } else { (user.cafe_card, demo::CAFE_LOVER.0) };
            let (merchant, country, lat, lon, amount, currency) = if travels {
                (demo::PARIS_CAFE.0, "FR", 48.8566, 2.3522, 1_250, "EUR")
            } else {
                (user.cafe, "KR", SEOUL.0, SEOUL.1, 10_000, "KRW")
            };
            PaymentEvent {
                v: 1,
                payment_id: paystream::domain::new_id(),
                user_id: user.id,
                card_id,
                card_product_id,
                merchant_id: merchant,
                merchant_category: "cafe".into(),
                amount,
                currency: currency.into(),
                country: country.into(),
                lat,
                lon,
                occurred_at: at,
            }
        })
        .collect()
}

/// The payment rows intake wrote for `events` before publishing them.
async fn record_intake(pg: &PgPool, events: &[PaymentEvent]) {
    let db = pg.get().await.expect("database");
    let refs: Vec<&PaymentEvent> = events.iter().collect();
    let inserted = paystream::store::payments::reconcile_from_events(&**db, &refs).await.expect("bench payments");
    assert_eq!(inserted as usize, events.len(), "every bench payment is recorded as intake would");
}

/// A product on sale with `HISTORY_ORDERS` settled orders (as settle would
/// have left them) and stock for every order the run adds.
async fn product_with_history(pg: &PgPool, suffix: &str, new_orders: usize) -> Uuid {
    let product = paystream::domain::new_id();
    let buyers = crate::stats::create_buyers(pg, HISTORY_ORDERS, &format!("{suffix}h")).await;
    let mut db = pg.get().await.expect("database");
    let tx = db.transaction().await.expect("begin");
    tx.execute(
        "INSERT INTO products (id, title, price, currency, stock, start_time, end_time, created_by)
         VALUES ($1, 'bench', 1000, 'KRW', $2, now() - interval '1 hour', now() + interval '1 hour', $3)",
        &[&product, &i32::try_from(HISTORY_ORDERS + new_orders).expect("stock fits"), &demo::ADMIN_ID.0],
    )
    .await
    .expect("bench product");
    // Ids as the order and settle functions make them (`domain::new_id`).
    let new_ids = |n: usize| (0..n).map(|_| paystream::domain::new_id()).collect::<Vec<Uuid>>();
    tx.execute(
        "INSERT INTO orders (id, user_id, product_id, amount, currency, status)
         SELECT id, u, $2, 1000, 'KRW', 'SUCCESS' FROM unnest($3::uuid[], $1::uuid[]) AS t(id, u)",
        &[&buyers, &product, &new_ids(buyers.len())],
    )
    .await
    .expect("history orders");
    tx.execute(
        "INSERT INTO settlements (id, order_id, user_id, product_id, amount, currency)
         SELECT s.id, o.id, o.user_id, o.product_id, o.amount, o.currency
         FROM (SELECT *, row_number() OVER (ORDER BY id) AS n FROM orders WHERE product_id = $1) o
         JOIN unnest($2::uuid[]) WITH ORDINALITY AS s(id, n) USING (n)",
        &[&product, &new_ids(buyers.len())],
    )
    .await
    .expect("history settlements");
    tx.execute("UPDATE products SET sold = $2 WHERE id = $1", &[&product, &i32::try_from(HISTORY_ORDERS).expect("fits")])
        .await
        .expect("history count");
    tx.commit().await.expect("commit history");
    db.batch_execute("ANALYZE orders; ANALYZE settlements").await.expect("analyze");
    product
}

/// New accepted orders of `buyers` for `product` (as the order function
/// left them), as one batch.
async fn order_batch(pg: &PgPool, product: Uuid, buyers: &[Uuid], partition: i32, first_offset: i64) -> (Batch, Vec<OrderEvent>) {
    let db = pg.get().await.expect("database");
    let now = OffsetDateTime::now_utc();
    let rows = db
        .query(
            "INSERT INTO orders (id, user_id, product_id, amount, currency)
             SELECT id, u, $2, 1000, 'KRW' FROM unnest($3::uuid[], $1::uuid[]) WITH ORDINALITY AS t(id, u, n) ORDER BY n
             RETURNING id, user_id",
            &[&buyers, &product, &buyers.iter().map(|_| paystream::domain::new_id()).collect::<Vec<Uuid>>()],
        )
        .await
        .expect("bench orders");
    let events: Vec<OrderEvent> = rows
        .iter()
        .map(|row| OrderEvent { v: 1, order_id: row.get(0), user_id: row.get(1), product_id: product, amount: 1000, currency: "KRW".into(), ordered_at: now })
        .collect();
    // Order's key is the order id (publisher::publish_one).
    let records: Vec<BenchRecord> = events
        .iter()
        .map(|e| BenchRecord { key: e.order_id.to_string(), event_type: OrderEvent::TYPE, event_id: e.order_id.to_string(), value: serde_json::to_vec(e).expect("event") })
        .collect();
    (batch_of("order-stream", partition, first_offset, &records), events)
}

fn payment_batch(events: &[PaymentEvent], partition: i32, first_offset: i64) -> Batch {
    // Pay's key is the payer (payments::publish).
    let records: Vec<BenchRecord> = events
        .iter()
        .map(|e| BenchRecord { key: e.user_id.to_string(), event_type: PaymentEvent::TYPE, event_id: e.payment_id.to_string(), value: serde_json::to_vec(e).expect("event") })
        .collect();
    batch_of("payment-stream", partition, first_offset, &records)
}

/// One invocation, as `msk::run` does it: parse, handle, flush metrics.
async fn invoke<C: BatchConsumer>(consumer: &C, batch: &Batch, request_id: &str) {
    let records = msk_records(&batch.event_json);
    paystream::metrics::invocation_started(request_id);
    let outcome = msk::handle_records(consumer, records, request_id).await.expect("batch handled");
    paystream::metrics::flush();
    assert_eq!(outcome.dead_lettered, 0, "bench records are well formed");
    assert_eq!(outcome.applied, batch.records, "every bench record is new");
}

/// Measured: records, wall time, and CPU from before to after.
struct Timed {
    records: usize,
    elapsed: Duration,
    cpu_before: cpu::Sample,
    cpu_after: cpu::Sample,
}

/// Runs each round's batches (one per consumer instance, at the same
/// time), round after round; the first round is an untimed warm-up.
async fn time_rounds<C: BatchConsumer>(consumers: &[Arc<C>], rounds: &[Vec<Batch>]) -> Timed {
    let (warm_up, timed) = rounds.split_first().expect("a warm-up round");
    invoke_round(consumers, warm_up).await;
    let cpu_before = cpu::sample();
    let started = Instant::now();
    let mut records = 0;
    for round in timed {
        records += round.iter().map(|b| b.records).sum::<usize>();
        invoke_round(consumers, round).await;
    }
    Timed { records, elapsed: started.elapsed(), cpu_before, cpu_after: cpu::sample() }
}

/// Each consumer instance (standing for its own environment) handles its
/// batch; all at once, each invocation its own task (three ESM pollers'
/// environments each have their own CPU, so one's decoding must not wait
/// for another's), and the round ends when the last one has answered.
async fn invoke_round<C: BatchConsumer>(consumers: &[Arc<C>], batches: &[Batch]) {
    assert_eq!(consumers.len(), batches.len(), "one batch per consumer instance");
    let mut invocations = tokio::task::JoinSet::new();
    for (consumer, batch) in consumers.iter().zip(batches) {
        let (consumer, batch) = (Arc::clone(consumer), batch.clone());
        let request_id = format!("bench-p{}-{}", batch.partition, Uuid::new_v4());
        invocations.spawn(async move { invoke(&*consumer, &batch, &request_id).await });
    }
    while let Some(done) = invocations.join_next().await {
        done.expect("an invocation panicked");
    }
}

/// Parsing the MSK event and decoding every record: the floor.
/// The event's records as the consumer's handler gets them in Lambda: the
/// handler's parse of the invocation's body, which the runtime hands over
/// untouched (`msk::TakeBody`).
fn msk_records(body: &bytes::Bytes) -> Vec<msk::InRecord> {
    msk::parse_records(body).expect("MSK event")
}

fn time_decode(batches: &[Batch], payments: bool) -> (usize, Duration) {
    let mut records = 0;
    let started = Instant::now();
    for batch in batches {
        let in_records = msk_records(&batch.event_json);
        records += if payments { decode_all(&in_records, decode_payment).0.len() } else { decode_all(&in_records, decode_order).0.len() };
    }
    (records, started.elapsed())
}

/// The batch's ledger rows in one INSERT, committed (autocommit).
async fn time_raw_ledger_insert(pg: &PgPool, batches: &[Vec<PaymentEvent>]) -> (usize, Duration) {
    let db = pg.get().await.expect("database");
    db.batch_execute("CREATE TABLE IF NOT EXISTS bench_raw_ledger (LIKE transactions INCLUDING ALL); TRUNCATE bench_raw_ledger")
        .await
        .expect("raw ledger table");
    let statement = db
        .prepare(
            "INSERT INTO bench_raw_ledger (payment_id, user_id, card_id, merchant_id, amount, currency, country, lat, lon, status, occurred_at)
             SELECT p, u, c, m, a, cur, co, la, lo, 'COMPLETED', t
             FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::bigint[], $6::text[], $7::text[], $8::float8[], $9::float8[], $10::timestamptz[])
                  AS r(p, u, c, m, a, cur, co, la, lo, t)",
        )
        .await
        .expect("prepare raw insert");
    let mut records = 0;
    let started = Instant::now();
    for events in batches {
        let col = |f: fn(&PaymentEvent) -> Uuid| events.iter().map(f).collect::<Vec<Uuid>>();
        let amounts: Vec<i64> = events.iter().map(|e| e.amount).collect();
        let currencies: Vec<&str> = events.iter().map(|e| e.currency.as_str()).collect();
        let countries: Vec<&str> = events.iter().map(|e| e.country.as_str()).collect();
        let lats: Vec<f64> = events.iter().map(|e| e.lat).collect();
        let lons: Vec<f64> = events.iter().map(|e| e.lon).collect();
        let times: Vec<OffsetDateTime> = events.iter().map(|e| e.occurred_at).collect();
        let (ids, users, cards, merchants) = (col(|e| e.payment_id), col(|e| e.user_id), col(|e| e.card_id), col(|e| e.merchant_id));
        records += db
            .execute(&statement, &[&ids, &users, &cards, &merchants, &amounts, &currencies, &countries, &lats, &lons, &times])
            .await
            .expect("raw ledger insert") as usize;
    }
    (records, started.elapsed())
}

/// The batch's settlements in one INSERT, committed (autocommit).
async fn time_raw_settlement_insert(pg: &PgPool, batches: &[Vec<OrderEvent>]) -> (usize, Duration) {
    let db = pg.get().await.expect("database");
    db.batch_execute(
        "CREATE TABLE IF NOT EXISTS bench_raw_settlements (LIKE settlements INCLUDING ALL); TRUNCATE bench_raw_settlements",
    )
    .await
    .expect("raw settlements table");
    let statement = db
        .prepare(
            "INSERT INTO bench_raw_settlements (id, order_id, user_id, product_id, amount, currency)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::bigint[], $6::text[])",
        )
        .await
        .expect("prepare raw insert");
    let mut records = 0;
    let started = Instant::now();
    for events in batches {
        let ids: Vec<Uuid> = events.iter().map(|_| paystream::domain::new_id()).collect();
        let orders: Vec<Uuid> = events.iter().map(|e| e.order_id).collect();
        let users: Vec<Uuid> = events.iter().map(|e| e.user_id).collect();
        let products: Vec<Uuid> = events.iter().map(|e| e.product_id).collect();
        let amounts: Vec<i64> = events.iter().map(|e| e.amount).collect();
        let currencies: Vec<&str> = events.iter().map(|e| e.currency.as_str()).collect();
        records += db.execute(&statement, &[&ids, &orders, &users, &products, &amounts, &currencies]).await.expect("raw settlement insert") as usize;
    }
    (records, started.elapsed())
}

struct Row {
    name: String,
    function: &'static str,
    timed: Timed,
    target_per_s: f64,
    decode_per_s: f64,
    raw_insert_per_s: f64,
}

/// `only`: measure just the consumers whose name contains it (e.g.
/// `loyalty`), for comparing one consumer's variants in shorter runs.
pub async fn run(batches: usize, only: Option<&str>) {
    assert!(batches > 0, "batches must be positive");
    const CONSUMERS: [&str; 4] = ["fds-consumer", "loyalty-consumer", "benefit-consumer", "settle"];
    if let Some(only) = only {
        assert!(CONSUMERS.iter().any(|c| c.contains(only)), "no consumer's name contains {only:?}: {CONSUMERS:?}");
    }
    paystream::telemetry::init("info");
    paystream::metrics::install("bench-consumers", Instant::now());
    let template = paystream_local::template::Template::from_env().expect("template.yaml (run from the repository root)");
    let function_def = |binary: &str| template.functions.iter().find(|f| f.binary == binary).expect("every consumer is in template.yaml");
    // The Globals' size, which the HTTP functions keep and the consumers
    // had before they were given one vCPU: their CPU caps show at both.
    let http_memory_mb = function_def("pay").memory_mb;
    // The handlers' logs and metrics are written as in Lambda, unseen.
    let quiet = crate::stats::QuietStdout::new();
    eprintln!("bench consumers: setting up (users, cards, {HISTORY_ORDERS} orders of history)");

    let (config, suffix) = crate::stats::isolated_config().await;
    let setup = Platform::from_config("bench", config.clone()).expect("platform");
    let platform = |name: &'static str| Platform::from_config(name, config.clone()).expect("platform");
    let one_transaction_platform = |name: &'static str| {
        let consumer = paystream::config::ConsumerConfig { batch_shards: 1, ..config.consumer };
        Platform::from_config(name, paystream::config::Config { consumer, ..config.clone() }).expect("platform")
    };
    let rounds = batches + 1; // the first is the warm-up

    // Payments: partition p's users are group p; one partition alone uses
    // group 0, for slots 0..rounds in one transaction per batch (the
    // sharding baseline) and for the next `rounds` slots as configured;
    // then three in parallel use every group for the slots after.
    let holders = create_card_holders(&setup.pg, PARTITIONS * BATCH_RECORDS, &suffix).await;
    let groups: Vec<&[User]> = holders.chunks(BATCH_RECORDS).collect();
    let start = OffsetDateTime::now_utc() - time::Duration::minutes(SLOT_MINUTES * 3 * rounds as i64);
    let mut one_transaction: Vec<Vec<Batch>> = Vec::new();
    let mut one_partition: Vec<Vec<Batch>> = Vec::new();
    let mut one_partition_events: Vec<Vec<PaymentEvent>> = Vec::new();
    for slot in 0..2 * rounds {
        let events = payment_events(groups[0], slot, start, slot > 0);
        record_intake(&setup.pg, &events).await;
        let batch = vec![payment_batch(&events, 0, (slot * BATCH_RECORDS) as i64)];
        if slot < rounds {
            one_transaction.push(batch);
        } else {
            one_partition.push(batch);
            one_partition_events.push(events);
        }
    }
    let mut parallel: Vec<Vec<Batch>> = Vec::new();
    for round in 0..rounds {
        let slot = 2 * rounds + round;
        let mut batches_of_round = Vec::new();
        for (p, group) in groups.iter().enumerate() {
            let events = payment_events(group, slot, start, round > 0);
            record_intake(&setup.pg, &events).await;
            batches_of_round.push(payment_batch(&events, p as i32, (slot * BATCH_RECORDS) as i64));
        }
        parallel.push(batches_of_round);
    }
    // Group 0's slots continue after the one-partition run; the parallel
    // run's warm-up round (no travel) gives groups 1 and 2 their locations.

    // Orders: one product with history; new buyers for every batch.
    let new_orders = rounds * BATCH_RECORDS * (1 + PARTITIONS);
    let product = product_with_history(&setup.pg, &suffix, new_orders).await;
    let buyers = crate::stats::create_buyers(&setup.pg, new_orders, &format!("{suffix}o")).await;
    let mut buyer_batches = buyers.chunks(BATCH_RECORDS);
    let mut order_rounds_one: Vec<Vec<Batch>> = Vec::new();
    let mut order_events_one: Vec<Vec<OrderEvent>> = Vec::new();
    for round in 0..rounds {
        let (batch, events) = order_batch(&setup.pg, product, buyer_batches.next().expect("buyers"), 0, (round * BATCH_RECORDS) as i64).await;
        order_rounds_one.push(vec![batch]);
        order_events_one.push(events);
    }
    let mut order_rounds_parallel: Vec<Vec<Batch>> = Vec::new();
    for round in 0..rounds {
        let mut batches_of_round = Vec::new();
        for p in 0..PARTITIONS {
            let offset = ((rounds + round) * BATCH_RECORDS) as i64;
            batches_of_round.push(order_batch(&setup.pg, product, buyer_batches.next().expect("buyers"), p as i32, offset).await.0);
        }
        order_rounds_parallel.push(batches_of_round);
    }

    crate::stats::vacuum(&setup.pg).await;
    let timed_payment_batches: Vec<Batch> = one_partition[1..].iter().flatten().cloned().collect();
    let timed_order_batches: Vec<Batch> = order_rounds_one[1..].iter().flatten().cloned().collect();
    let (decoded_payments, decode_payments_time) = time_decode(&timed_payment_batches, true);
    let (decoded_orders, decode_orders_time) = time_decode(&timed_order_batches, false);
    let per_s = |records: usize, elapsed: Duration| records as f64 / elapsed.as_secs_f64();
    let payment_floor = per_s(decoded_payments, decode_payments_time);
    let order_floor = per_s(decoded_orders, decode_orders_time);
    let (raw_ledger, raw_ledger_time) = time_raw_ledger_insert(&setup.pg, &one_partition_events[1..]).await;
    let (raw_settlements, raw_settlements_time) = time_raw_settlement_insert(&setup.pg, &order_events_one[1..]).await;
    let payment_raw = per_s(raw_ledger, raw_ledger_time);
    let order_raw = per_s(raw_settlements, raw_settlements_time);

    eprintln!("bench consumers: measuring");
    let mut rows = Vec::new();
    let wanted = |function: &str| only.is_none_or(|only| function.contains(only));
    macro_rules! measure {
        ($function:literal, $make:expr, $rounds:expr, $target:expr, $floor:expr, $raw:expr) => {{
            if wanted($function) {
                let one = vec![Arc::new($make)];
                let timed = time_rounds(&one, &$rounds.0).await;
                rows.push(Row { name: format!("{} (1 partition)", $function), function: $function, timed, target_per_s: $target, decode_per_s: $floor, raw_insert_per_s: $raw });
                let three: Vec<_> = (0..PARTITIONS).map(|_| Arc::new($make)).collect();
                let timed = time_rounds(&three, &$rounds.1).await;
                rows.push(Row { name: format!("{} ({PARTITIONS} in parallel)", $function), function: $function, timed, target_per_s: $target, decode_per_s: $floor, raw_insert_per_s: $raw });
            }
        }};
    }
    // The spec's targets (1,000-record batches).
    const FDS_TARGET_PER_S: f64 = 50_000.0;
    const LOYALTY_TARGET_PER_S: f64 = 100_000.0;
    const BENEFIT_TARGET_PER_S: f64 = 50_000.0;
    const SETTLE_TARGET_PER_S: f64 = 20_000.0;
    // Baseline: FDS and loyalty on one partition with each batch in one
    // transaction (CONSUMER_BATCH_SHARDS=1), on the slots before the
    // configured run's. Each consumer sees every payment batch once, in
    // slot order, so group 0's locations carry on from run to run.
    let configured_shards = config.consumer.batch_shards;
    let one_transaction_row = |function: &'static str, target_per_s: f64, timed: Timed| Row {
        name: format!("{function} (1 partition, 1 tx)"),
        function,
        timed,
        target_per_s,
        decode_per_s: payment_floor,
        raw_insert_per_s: payment_raw,
    };
    if wanted("fds-consumer") {
        let timed = time_rounds(&[Arc::new(fds_consumer::Fds::new(one_transaction_platform("fds-consumer")))], &one_transaction).await;
        rows.push(one_transaction_row("fds-consumer", FDS_TARGET_PER_S, timed));
    }
    if wanted("loyalty-consumer") {
        let timed = time_rounds(&[Arc::new(loyalty_consumer::Loyalty::new(one_transaction_platform("loyalty-consumer")))], &one_transaction).await;
        rows.push(one_transaction_row("loyalty-consumer", LOYALTY_TARGET_PER_S, timed));
    }
    let payment_rounds = (&one_partition, &parallel);
    measure!("fds-consumer", fds_consumer::Fds::new(platform("fds-consumer")), payment_rounds, FDS_TARGET_PER_S, payment_floor, payment_raw);
    measure!("loyalty-consumer", loyalty_consumer::Loyalty::new(platform("loyalty-consumer")), payment_rounds, LOYALTY_TARGET_PER_S, payment_floor, payment_raw);
    measure!("benefit-consumer", benefit_consumer::BenefitGuide::new(platform("benefit-consumer")), payment_rounds, BENEFIT_TARGET_PER_S, payment_floor, payment_raw);
    let order_rounds = (&order_rounds_one, &order_rounds_parallel);
    measure!("settle", settle::Settle::new(platform("settle")), order_rounds, SETTLE_TARGET_PER_S, order_floor, order_raw);

    drop(quiet);
    println!(
        "consumer batch throughput: {batches} timed batches of {BATCH_RECORDS} records per partition after one warm-up; \
         payments: 1 in {TRAVEL_EVERY} impossible travel, 1 in {TIP_EVERY} with the lesser card, about 1 in 60 makes a VIP; \
         orders: one product with {HISTORY_ORDERS} settled orders before; \
         FDS and loyalty apply a batch in at most {configured_shards} transactions at once, split by payer (CONSUMER_BATCH_SHARDS; \"1 tx\": in one)"
    );

    println!(
        "{:<38} {:>10} {:>9} {:>9} {:>10} {:>10} | {:>31} | {:>9} | {:>10} {:>10}",
        "path", "records/s", "ms/batch", "target/s", "vs decode", "vs raw ins", "CPU us/record: fn pg redis", "GB-s/1M",
        format!("cap@{http_memory_mb}MB"), "cap@tmpl"
    );
    println!("{:<38} {:>10.0} {:>9.2} {:>9} {:>9.3}x {:>10}", "baseline: parse + decode payments", payment_floor, 1e3 * BATCH_RECORDS as f64 / payment_floor, "-", 1.0, "-");
    println!("{:<38} {:>10.0} {:>9.2} {:>9} {:>9.3}x {:>10}", "baseline: parse + decode orders", order_floor, 1e3 * BATCH_RECORDS as f64 / order_floor, "-", 1.0, "-");
    println!("{:<38} {:>10.0} {:>9.2} {:>9} {:>10} {:>9.3}x", "baseline: raw INSERT ledger rows", payment_raw, 1e3 * BATCH_RECORDS as f64 / payment_raw, "-", "-", 1.0);
    println!("{:<38} {:>10.0} {:>9.2} {:>9} {:>10} {:>9.3}x", "baseline: raw INSERT settlements", order_raw, 1e3 * BATCH_RECORDS as f64 / order_raw, "-", "-", 1.0);
    for row in &rows {
        let t = &row.timed;
        let rate = per_s(t.records, t.elapsed);
        let batches_run = t.records / BATCH_RECORDS;
        let parallel_batches = if row.name.contains("parallel") { PARTITIONS } else { 1 };
        // Each batch is one invocation lasting its round's wall time.
        let invocation_s = t.elapsed.as_secs_f64() / (batches_run / parallel_batches) as f64;
        let function = function_def(row.function);
        let gb_s_per_million = invocation_s * (function.memory_mb as f64 / 1024.0) * (1e6 / BATCH_RECORDS as f64);
        let costs = cpu::per_op_us(&t.cpu_before, &t.cpu_after, t.records);
        let cost = |name: &str| costs.iter().find(|(n, _)| *n == name).map_or(0.0, |(_, us)| *us);
        // The most records a second this row's environments could handle
        // if the CPU Lambda gives them at `memory_mb` were their only
        // limit: their vCPU share over this process's CPU per record.
        let fn_cpu_cap_per_s = |memory_mb: u64| {
            parallel_batches as f64 * paystream_local::template::vcpu_share(memory_mb) * 1e6 / cost("this process").max(f64::EPSILON)
        };
        println!(
            "{:<38} {:>10.0} {:>9.2} {:>9.0} {:>9.3}x {:>9.3}x | {:>9.1} {:>9.1} {:>9.1}  | {:>9.1} | {:>10.0} {:>10.0}",
            row.name,
            rate,
            1e3 * invocation_s,
            row.target_per_s,
            rate / row.decode_per_s,
            rate / row.raw_insert_per_s,
            cost("this process"),
            cost("postgres"),
            cost("redis-server"),
            gb_s_per_million,
            fn_cpu_cap_per_s(http_memory_mb),
            fn_cpu_cap_per_s(function.memory_mb),
        );
    }
    println!("GB-s/1M: Lambda GB-seconds per million records at the template's MemorySize, from the measured batch duration");
    println!(
        "cap@: the records/s the row's environments could not exceed on Lambda, where a function gets MemorySize / {} of a vCPU: \
         that share over the fn CPU per record measured here (x86; Graviton differs), at {http_memory_mb} MB and at the template's MemorySize",
        paystream_local::template::LAMBDA_MB_PER_VCPU
    );
}
