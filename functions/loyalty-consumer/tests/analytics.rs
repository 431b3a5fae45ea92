//! Loyalty, the benefit guide and the merchant dashboard on the real
//! PostgreSQL and Redis, fed MSK events exactly as MSK delivers them.

use benefit_consumer::BenefitGuide;
use loyalty_consumer::Loyalty;
use paystream::demo::{ALICE, ALICE_CAFE_CARD, ALICE_EVERYDAY_CARD, BOB, CAFE_LOVER, EVERYDAY, PARIS_CAFE, SEOUL_CAFE};
use paystream::events::{PaymentEvent, EVENT_VERSION};
use paystream::http::respond;
use paystream::msk::{build_event, handle_event, BatchOutcome, OutRecordForEvent};
use paystream::testing::{apigw_request, body_json, fresh_config, seed, user};
use paystream::Platform;
use report::ReportApi;
use serde_json::Value;
use uuid::Uuid;

struct World {
    loyalty: Loyalty,
    benefit: BenefitGuide,
    report: ReportApi,
    offset: i64,
}

impl World {
    async fn new() -> Self {
        let config = fresh_config().await;
        let loyalty = Loyalty::new(Platform::from_config("loyalty-consumer", config.clone()).unwrap());
        seed(&loyalty.platform).await;
        Self {
            benefit: BenefitGuide::new(Platform::from_config("benefit-consumer", config.clone()).unwrap()),
            report: ReportApi::new(Platform::from_config("report", config).unwrap()),
            loyalty,
            offset: 0,
        }
    }

    fn payment(&self, user: Uuid, card: Uuid, product: Uuid, merchant: Uuid, amount: i64) -> PaymentEvent {
        PaymentEvent {
            v: EVENT_VERSION,
            payment_id: Uuid::new_v4(),
            user_id: user,
            card_id: card,
            card_product_id: product,
            merchant_id: merchant,
            merchant_category: "cafe".into(),
            amount,
            currency: "KRW".into(),
            country: "KR".into(),
            lat: 37.5665,
            lon: 126.978,
            occurred_at: time::OffsetDateTime::now_utc(),
        }
    }

    /// The MSK event that delivers these payments (next offsets of partition 0).
    fn batch(&mut self, events: &[PaymentEvent]) -> aws_lambda_events::event::kafka::KafkaEvent {
        let values: Vec<Vec<u8>> = events.iter().map(|e| serde_json::to_vec(e).unwrap()).collect();
        let keys: Vec<String> = events.iter().map(|e| e.user_id.to_string()).collect();
        let records: Vec<OutRecordForEvent<'_>> = values
            .iter()
            .zip(&keys)
            .enumerate()
            .map(|(i, (v, k))| OutRecordForEvent {
                topic: "payment-stream",
                partition: 0,
                offset: self.offset + i as i64,
                timestamp_ms: 1,
                key: Some(k.as_bytes()),
                value: v,
                headers: &[],
            })
            .collect();
        self.offset += events.len() as i64;
        serde_json::from_value(build_event("arn:aws:kafka:local", &records)).unwrap()
    }

    /// Delivers these payments once to both consumers.
    async fn deliver(&mut self, events: &[PaymentEvent]) -> (BatchOutcome, BatchOutcome) {
        let event = self.batch(events);
        self.both(event).await
    }

    async fn both(&self, event: aws_lambda_events::event::kafka::KafkaEvent) -> (BatchOutcome, BatchOutcome) {
        let loyalty = handle_event(&self.loyalty, event.clone(), "test").await.unwrap();
        let benefit = handle_event(&self.benefit, event, "test").await.unwrap();
        (loyalty, benefit)
    }

    async fn scalar(&self, sql: &str) -> i64 {
        self.loyalty.platform.pg.get().await.unwrap().query_one(sql, &[]).await.unwrap().get(0)
    }

    async fn redis_count(&self, merchant: Uuid, user: Uuid) -> Option<i64> {
        let redis = &self.loyalty.platform.redis;
        let mut conn = redis.conn().await.unwrap();
        redis::cmd("GET").arg(redis.key(&format!("loy:count:{merchant}:{user}"))).query_async(&mut conn).await.unwrap()
    }

    async fn flush_redis(&self) {
        let redis = &self.loyalty.platform.redis;
        let mut conn = redis.conn().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{}*", redis.prefix())).query_async(&mut conn).await.unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
        }
    }

    async fn dashboard(&self, merchant: Uuid, username: &str) -> (u16, Value) {
        let token = user(&self.report.platform, username).await;
        let bearer = token.bearer();
        let response = respond(&self.report, apigw_request("GET", &format!("/merchants/{merchant}/dashboard"), &[("authorization", &bearer)], None)).await;
        (response.status().as_u16(), body_json(&response))
    }

    async fn notifications(&self, user: Uuid, kind: &str) -> Vec<Value> {
        let db = self.loyalty.platform.pg.get().await.unwrap();
        db.query("SELECT payload FROM notifications WHERE user_id = $1 AND kind = $2 ORDER BY created_at", &[&user, &kind])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

fn visits(w: &World, n: usize, card: Uuid, product: Uuid) -> Vec<PaymentEvent> {
    (0..n).map(|_| w.payment(ALICE.0, card, product, SEOUL_CAFE.0, 5_000)).collect()
}

#[tokio::test]
async fn ten_visits_make_one_vip_and_the_dashboard_shows_it() {
    let mut w = World::new().await;
    let nine = visits(&w, 9, ALICE_CAFE_CARD.0, CAFE_LOVER.0);
    w.deliver(&nine).await;
    assert!(w.notifications(ALICE.0, "VIP").await.is_empty(), "nine visits are not enough");
    let tenth = visits(&w, 2, ALICE_CAFE_CARD.0, CAFE_LOVER.0);
    w.deliver(&tenth).await;
    let vip = w.notifications(ALICE.0, "VIP").await;
    assert_eq!(vip.len(), 1, "exactly one VIP notification");
    assert_eq!(vip[0]["merchant"], "Seoul Bean Cafe");
    assert_eq!(w.redis_count(SEOUL_CAFE.0, ALICE.0).await, Some(11));

    let (status, board) = w.dashboard(SEOUL_CAFE.0, "merchant_demo").await;
    assert_eq!(status, 200, "{board}");
    assert_eq!((board["customers"].as_i64(), board["vips"].as_i64()), (Some(1), Some(1)));
    assert_eq!(board["top_customers"][0], serde_json::json!({"customer": "al***", "visits": 11}));
    assert_eq!(board["recent_vips"][0]["customer"], "al***");
    assert_eq!(board["recent_vips"][0]["visits"], 10, "became VIP at the threshold");
    assert!(!board.to_string().contains("alice"), "customers are masked");
}

/// A customer is made VIP of a merchant once: after the merchant raises
/// its threshold, reaching the new one makes neither a second VIP row nor
/// a second notification.
#[tokio::test]
async fn reaching_a_raised_threshold_makes_no_second_vip() {
    let mut w = World::new().await;
    let ten = visits(&w, 10, ALICE_CAFE_CARD.0, CAFE_LOVER.0);
    w.deliver(&ten).await;
    assert_eq!(w.notifications(ALICE.0, "VIP").await.len(), 1);
    let db = w.loyalty.platform.pg.get().await.unwrap();
    db.execute("UPDATE merchants SET vip_threshold = 15 WHERE id = $1", &[&SEOUL_CAFE.0]).await.unwrap();
    w.flush_redis().await; // the cached threshold with it
    let five = visits(&w, 5, ALICE_CAFE_CARD.0, CAFE_LOVER.0);
    let (loyalty, _) = w.deliver(&five).await;
    assert_eq!(loyalty.applied, 5);
    assert_eq!(w.scalar(&format!("SELECT visits::bigint FROM loyalty_counts WHERE user_id = '{}'", ALICE.0)).await, 15);
    assert_eq!(w.notifications(ALICE.0, "VIP").await.len(), 1, "still exactly one VIP notification");
    assert_eq!(w.scalar("SELECT count(*) FROM loyalty_vips").await, 1);
    assert_eq!(w.scalar("SELECT visits::bigint FROM loyalty_vips").await, 10, "became VIP at the first threshold");
}

#[tokio::test]
async fn a_batch_delivered_twice_counts_once() {
    let mut w = World::new().await;
    let mut events = visits(&w, 5, ALICE_CAFE_CARD.0, CAFE_LOVER.0);
    events.push(events[0].clone()); // the stream repeated one inside the batch
    let event = w.batch(&events);
    let (first, _) = w.both(event.clone()).await;
    let (second, _) = w.both(event).await;
    assert_eq!((first.applied, first.duplicates), (5, 1));
    assert_eq!((second.applied, second.duplicates), (0, 6));
    assert_eq!(w.scalar("SELECT visits::bigint FROM loyalty_counts").await, 5);
    assert_eq!(w.redis_count(SEOUL_CAFE.0, ALICE.0).await, Some(5));
}

/// A batch that repeats payments an earlier one counted (as after a crash
/// between two shards' commits, or a poller rewinding its offset) counts
/// only the new ones: its first write, which assumes none was counted,
/// does nothing, and the second looks each one up. The tenth visit still
/// makes exactly one VIP.
#[tokio::test]
async fn a_batch_overlapping_a_counted_one_counts_only_its_new_payments() {
    let mut w = World::new().await;
    let nine = visits(&w, 9, ALICE_CAFE_CARD.0, CAFE_LOVER.0);
    w.deliver(&nine).await;
    let mut overlapping = nine[5..].to_vec();
    overlapping.extend(visits(&w, 2, ALICE_CAFE_CARD.0, CAFE_LOVER.0));
    overlapping.push(w.payment(BOB.0, Uuid::new_v4(), EVERYDAY.0, SEOUL_CAFE.0, 5_000));
    let (loyalty, _) = w.deliver(&overlapping).await;
    assert_eq!((loyalty.applied, loyalty.duplicates), (3, 4));
    assert_eq!(w.scalar(&format!("SELECT visits::bigint FROM loyalty_counts WHERE user_id = '{}'", ALICE.0)).await, 11);
    assert_eq!(w.scalar(&format!("SELECT visits::bigint FROM loyalty_counts WHERE user_id = '{}'", BOB.0)).await, 1);
    assert_eq!(w.scalar("SELECT count(*) FROM loyalty_visits").await, 12);
    assert_eq!(w.notifications(ALICE.0, "VIP").await.len(), 1, "exactly one VIP notification");
    assert_eq!(w.redis_count(SEOUL_CAFE.0, ALICE.0).await, Some(11));
}

/// An event source can redeliver a batch while the first invocation is
/// still running (a timeout it did not notice). Both write at once; at most
/// one commits each visit, and a failed one is retried as the event source
/// would, until it succeeds. Counts (a new pair and an existing one) come out
/// exactly once per payment.
#[tokio::test]
async fn a_batch_delivered_twice_at_once_counts_once() {
    let mut w = World::new().await;
    let mut expected = [0i64, 0];
    let mut collided = 0;
    for round in 0..5 {
        let mut events = visits(&w, 3, ALICE_CAFE_CARD.0, CAFE_LOVER.0);
        events.push(w.payment(BOB.0, Uuid::new_v4(), EVERYDAY.0, SEOUL_CAFE.0, 5_000));
        expected[0] += 3;
        expected[1] += 1;
        let event = w.batch(&events);
        let (a, b) = tokio::join!(handle_event(&w.loyalty, event.clone(), "first"), handle_event(&w.loyalty, event.clone(), "again"));
        let mut applied = [&a, &b].iter().filter_map(|r| r.as_ref().ok()).map(|o| o.applied).sum::<usize>();
        collided += usize::from(a.is_err() || b.is_err());
        for _retry in 0..3 {
            if a.is_ok() && b.is_ok() {
                break;
            }
            match handle_event(&w.loyalty, event.clone(), "retry").await {
                Ok(o) => {
                    applied += o.applied;
                    break;
                }
                Err(e) => eprintln!("round {round}: retry failed again: {e}"),
            }
        }
        // A failed invocation may have committed some of its shards (each
        // holds its own customers), which its outcome does not report: so
        // at most 4 reported, and the data shows each visit exactly once.
        assert!(applied <= 4, "round {round}: a payment applied twice ({applied} reported)");
        assert_eq!(w.scalar("SELECT count(*) FROM loyalty_visits").await, expected[0] + expected[1], "round {round}");
    }
    assert_eq!(w.scalar(&format!("SELECT visits::bigint FROM loyalty_counts WHERE user_id = '{}'", ALICE.0)).await, expected[0]);
    assert_eq!(w.scalar(&format!("SELECT visits::bigint FROM loyalty_counts WHERE user_id = '{}'", BOB.0)).await, expected[1]);
    assert_eq!(w.scalar("SELECT count(*) FROM loyalty_visits").await, expected[0] + expected[1]);
    assert_eq!(w.redis_count(SEOUL_CAFE.0, BOB.0).await, Some(expected[1]));
    eprintln!("{collided} of 5 rounds had an invocation fail on the other's rows");
}

#[tokio::test]
async fn after_redis_lost_everything_counts_continue_from_postgres() {
    let mut w = World::new().await;
    let first = visits(&w, 6, ALICE_CAFE_CARD.0, CAFE_LOVER.0);
    w.deliver(&first).await;
    w.flush_redis().await;
    assert_eq!(w.redis_count(SEOUL_CAFE.0, ALICE.0).await, None);
    let second = visits(&w, 4, ALICE_CAFE_CARD.0, CAFE_LOVER.0);
    let event = w.batch(&second);
    w.both(event.clone()).await;
    w.both(event).await; // and redelivered after the loss
    assert_eq!(w.redis_count(SEOUL_CAFE.0, ALICE.0).await, Some(10));
    assert_eq!(w.scalar("SELECT visits::bigint FROM loyalty_counts").await, 10);
    assert_eq!(w.notifications(ALICE.0, "VIP").await.len(), 1, "the tenth visit made the VIP, once");
}

#[tokio::test]
async fn the_guide_names_the_better_card_and_the_amount_missed() {
    let mut w = World::new().await;
    let with_a = w.payment(ALICE.0, ALICE_EVERYDAY_CARD.0, EVERYDAY.0, SEOUL_CAFE.0, 10_000);
    let with_b = w.payment(ALICE.0, ALICE_CAFE_CARD.0, CAFE_LOVER.0, SEOUL_CAFE.0, 10_000);
    let large_with_a = w.payment(ALICE.0, ALICE_EVERYDAY_CARD.0, EVERYDAY.0, PARIS_CAFE.0, 100_000);
    let bob_alone = w.payment(BOB.0, paystream::demo::BOB_GLOBETROTTER_CARD.0, paystream::demo::GLOBETROTTER.0, SEOUL_CAFE.0, 10_000);
    let event = w.batch(&[with_a.clone(), with_b.clone(), large_with_a.clone(), bob_alone]);
    let (_, outcome) = w.both(event.clone()).await;
    assert_eq!(outcome.applied, 4);
    let tips = w.notifications(ALICE.0, "BENEFIT_TIP").await;
    assert_eq!(tips.len(), 2, "{tips:?}");
    let tip_for = |id: Uuid| tips.iter().find(|t| t["payment_id"] == id.to_string()).cloned();
    let small = tip_for(with_a.payment_id).expect("a tip for the café payment with card A");
    assert_eq!(small["better_card"]["card_product"], "Cafe Lover");
    assert_eq!(small["better_card"]["last4"], "4444");
    assert_eq!(small["missed_amount"], 400);
    assert!(tip_for(with_b.payment_id).is_none(), "paying with B earns the most already");
    let large = tip_for(large_with_a.payment_id).expect("a tip for the large payment");
    assert_eq!(large["missed_amount"], 1_000, "B's 2,000 cap minus A's 1,000");
    assert!(w.notifications(BOB.0, "BENEFIT_TIP").await.is_empty(), "one card, nothing to compare");

    w.both(event).await;
    assert_eq!(w.notifications(ALICE.0, "BENEFIT_TIP").await.len(), 2, "one tip per payment, also redelivered");
    assert_eq!(w.scalar("SELECT count(*) FROM benefit_tips").await, 2);
    let (_, board) = w.dashboard(SEOUL_CAFE.0, "admin").await;
    assert_eq!(board["tips_sent"], 1);
}

#[tokio::test]
async fn someone_elses_dashboard_does_not_exist() {
    let w = World::new().await;
    assert_eq!(w.dashboard(SEOUL_CAFE.0, "alice").await.0, 404);
    assert_eq!(w.dashboard(SEOUL_CAFE.0, "merchant_demo").await.0, 200);
    assert_eq!(w.dashboard(SEOUL_CAFE.0, "admin").await.0, 200);
    assert_eq!(w.dashboard(Uuid::new_v4(), "admin").await.0, 404);
    assert_eq!(w.dashboard(Uuid::new_v4(), "merchant_demo").await.0, 404);
}

#[tokio::test]
async fn poison_records_go_to_the_dlq_for_both_consumers() {
    let config = fresh_config().await;
    paystream::testing::create_topics(&config, &[("payment-stream.dlq", 1)]).await;
    let loyalty = Loyalty::new(Platform::from_config("loyalty-consumer", config).unwrap());
    let record = [OutRecordForEvent { topic: "payment-stream", partition: 0, offset: 0, timestamp_ms: 1, key: None, value: b"{oops", headers: &[] }];
    let event: aws_lambda_events::event::kafka::KafkaEvent = serde_json::from_value(build_event("arn", &record)).unwrap();
    let outcome = handle_event(&loyalty, event, "test").await.unwrap();
    assert_eq!((outcome.applied, outcome.dead_lettered), (0, 1));
}

/// The loyalty and benefit MSK samples (ten café payments by alice with her
/// Everyday card; one more) and the dashboard sample.
#[tokio::test]
async fn the_analytics_samples_get_their_documented_answers() {
    const EVENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events");
    let w = World::new().await;
    let load = |path: &str| std::fs::read_to_string(format!("{EVENTS}/{path}")).unwrap();
    let ten: aws_lambda_events::event::kafka::KafkaEvent = serde_json::from_str(&load("loyalty-consumer/payment-batch.json")).unwrap();
    let outcome = handle_event(&w.loyalty, ten, "sample").await.unwrap();
    assert_eq!(outcome.applied, 10);
    assert_eq!(w.notifications(ALICE.0, "VIP").await.len(), 1);
    let one: aws_lambda_events::event::kafka::KafkaEvent = serde_json::from_str(&load("benefit-consumer/payment-batch.json")).unwrap();
    handle_event(&w.benefit, one, "sample").await.unwrap();
    assert_eq!(w.notifications(ALICE.0, "BENEFIT_TIP").await.len(), 1);

    let owner = user(&w.report.platform, "merchant_demo").await;
    let raw = load("report/merchant-dashboard.json").replace("REPLACE_WITH_MERCHANT_TOKEN", &owner.token);
    let response = respond(&w.report, lambda_http::request::from_str(&raw).unwrap()).await;
    assert_eq!(response.status(), 200);
    let board = body_json(&response);
    assert_eq!((board["vips"].as_i64(), board["tips_sent"].as_i64()), (Some(1), Some(1)));
}
