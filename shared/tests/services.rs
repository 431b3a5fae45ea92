//! PostgreSQL migrations and the Redis connection, against the real servers.

use paystream::db::{migrate, MigrateError, MIGRATIONS};
use paystream::testing::{fresh_config, platform};
use redis::AsyncCommands;
use uuid::Uuid;

#[tokio::test]
async fn migrations_apply_once_and_detect_edits() {
    let config = fresh_config().await; // already migrated
    let (mut client, connection) = tokio_postgres::connect(config.database.url.expose(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    assert_eq!(migrate(&mut client).await.unwrap(), Vec::<i32>::new(), "second run applies nothing");
    let versions: Vec<i32> = client.query("SELECT version FROM schema_migrations ORDER BY version", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, MIGRATIONS.iter().map(|m| m.version).collect::<Vec<_>>());

    client.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1", &[]).await.unwrap();
    assert!(matches!(migrate(&mut client).await, Err(MigrateError::Edited { version: 1, .. })));
}

#[tokio::test]
async fn redis_keys_are_prefixed_and_the_connection_survives_being_killed() {
    let p = platform("tests").await;
    let key = p.redis.key("greeting");
    assert!(key.starts_with(p.redis.prefix()) && key.ends_with("greeting"));
    let mut conn = p.redis.conn().await.unwrap();
    let _: () = conn.set(&key, "hello").await.unwrap();
    let id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await.unwrap();

    // Kill exactly our connection from another one, as a Redis restart would.
    let killer = redis::Client::open(p.config.redis.url.expose()).unwrap();
    let mut killer = killer.get_multiplexed_async_connection().await.unwrap();
    let killed: i64 = redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query_async(&mut killer).await.unwrap();
    assert_eq!(killed, 1);

    // The manager reconnects by itself; allow the one in-flight failure.
    let mut value: Option<String> = None;
    for _ in 0..3 {
        match conn.get::<_, Option<String>>(&key).await {
            Ok(v) => {
                value = v;
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    assert_eq!(value.as_deref(), Some("hello"));
    let new_id: i64 = redis::cmd("CLIENT").arg("ID").query_async(&mut conn).await.unwrap();
    assert_ne!(new_id, id, "a new connection was made");
    let _: () = conn.del(&key).await.unwrap();
}

/// Two transactions that lock the same rows in opposite orders: PostgreSQL
/// aborts one (40P01) after `deadlock_timeout`. That request did nothing and
/// succeeds when retried, so it answers 503 (retry), never a 500.
#[tokio::test]
async fn a_deadlock_victim_answers_retry_not_internal_error() {
    let config = fresh_config().await;
    let connect = || async {
        let (client, connection) = tokio_postgres::connect(config.database.url.expose(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    };
    let (mut first, mut second) = (connect().await, connect().await);
    first.batch_execute("CREATE TABLE deadlock_probe (id int PRIMARY KEY, n int); INSERT INTO deadlock_probe VALUES (1, 0), (2, 0)").await.unwrap();

    let a = first.transaction().await.unwrap();
    let b = second.transaction().await.unwrap();
    a.execute("UPDATE deadlock_probe SET n = n + 1 WHERE id = 1", &[]).await.unwrap();
    b.execute("UPDATE deadlock_probe SET n = n + 1 WHERE id = 2", &[]).await.unwrap();
    // Each now waits for the row the other holds.
    let (from_a, from_b) = tokio::join!(
        a.execute("UPDATE deadlock_probe SET n = n + 1 WHERE id = 2", &[]),
        b.execute("UPDATE deadlock_probe SET n = n + 1 WHERE id = 1", &[]),
    );
    let errors: Vec<tokio_postgres::Error> = [from_a, from_b].into_iter().filter_map(Result::err).collect();
    assert_eq!(errors.len(), 1, "PostgreSQL aborts exactly one of the two");
    assert_eq!(errors[0].code(), Some(&paystream::db::SqlState::T_R_DEADLOCK_DETECTED));

    let answer = paystream::AppError::from(errors.into_iter().next().unwrap());
    assert_eq!(answer.status(), 503, "a deadlock victim is retryable: {answer:?}");
    assert_eq!(answer.code.as_str(), "DEPENDENCY_UNAVAILABLE");
}

/// A writer's hold (`Redis::hold_for_write`): every key holds the hold value with the hold's expiry, so a
/// reader finds a miss, reads the truth and does not replace the hold.
#[tokio::test]
async fn a_hold_hides_every_cached_value_and_lapses() {
    use paystream::cache::{WRITE_HOLD_S, WRITE_HOLD_VALUE};
    use std::collections::HashMap;
    let p = platform("tests").await;
    let ids: Vec<Uuid> = (0..300).map(|_| Uuid::now_v7()).collect();
    let read = |truth: i32| {
        let (redis, ids) = (&p.redis, &ids);
        async move {
            redis.read_through("test:hold", ids, 600, |misses| async move { Ok(misses.into_iter().map(|id| (id, truth)).collect()) }).await.unwrap()
        }
    };
    let cached: HashMap<Uuid, i32> = read(1).await;
    assert!(cached.values().all(|v| *v == 1) && cached.len() == ids.len());

    p.redis.hold_for_write("test:hold", &ids).await.unwrap();
    let mut conn = p.redis.conn().await.unwrap();
    let held = |conn: &mut redis::aio::ConnectionManager| {
        let keys: Vec<String> = ids.iter().map(|id| p.redis.key(&format!("test:hold:{id}"))).collect();
        let mut conn = conn.clone();
        async move {
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.get(key).ttl(key);
            }
            let answers: Vec<(String, i64)> = pipe.query_async(&mut conn).await.unwrap();
            answers
        }
    };
    for (value, ttl_s) in held(&mut conn).await {
        assert_eq!(value, WRITE_HOLD_VALUE);
        assert!(ttl_s > 0 && ttl_s <= WRITE_HOLD_S as i64, "the hold lapses: {ttl_s}");
    }
    let read_while_held: HashMap<Uuid, i32> = read(2).await;
    assert!(read_while_held.values().all(|v| *v == 2), "a held key is a miss: the truth is read");
    assert!(held(&mut conn).await.iter().all(|(value, _)| value == WRITE_HOLD_VALUE), "the reader's fill does not replace a hold");
}

/// FDS's stored locations (`holders::save_locations`): a holder's row
/// moves only forward in time; a holder without one gets one, in the same
/// statement whether or not every other holder had one.
#[tokio::test]
async fn stored_locations_move_forward_and_new_holders_get_a_row() {
    use paystream::store::holders::{self, LastLocation};
    let p = platform("tests").await;
    let base = time::macros::datetime!(2026-12-01 12:00:00 UTC);
    let at = |ms: i64| LastLocation { payment_id: Uuid::now_v7(), country: "KR".into(), lat: 37.5, lon: 127.0, at: base + time::Duration::milliseconds(ms) };
    let save = |locations: Vec<(Uuid, LastLocation)>| {
        let pg = &p.pg;
        async move {
            let mut conn = pg.get().await.unwrap();
            let tx = conn.transaction().await.unwrap();
            holders::save_locations(&tx, &locations).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    save(vec![(a, at(1_000)), (b, at(1_000))]).await;
    // Every holder has a row and moves: the INSERT has nothing to do.
    let (a2, b2) = (at(2_000), at(2_000));
    save(vec![(a, a2.clone()), (b, b2.clone())]).await;
    // One moves, one stays (older than its row), one is new.
    let (a3, b_older, c1) = (at(3_000), at(1_500), at(100));
    save(vec![(a, a3.clone()), (b, b_older), (c, c1.clone())]).await;

    let db = p.pg.get().await.unwrap();
    let stored = |user: Uuid| {
        let db = &db;
        async move { db.query_one("SELECT payment_id FROM holder_locations WHERE user_id = $1", &[&user]).await.unwrap().get::<_, Uuid>(0) }
    };
    assert_eq!(stored(a).await, a3.payment_id, "moved forward twice");
    assert_eq!(stored(b).await, b2.payment_id, "an older location does not move it back");
    assert_eq!(stored(c).await, c1.payment_id, "a new holder gets a row beside holders who have one");
}

/// FDS's location cache (`holders::cache`): a location replaces an older
/// one, never a newer one (a slow writer loses), and replaces a writer's
/// hold and a cached "no location yet".
#[tokio::test]
async fn a_cached_location_is_replaced_only_by_a_newer_one() {
    use paystream::store::holders::{self, LastLocation};
    let p = platform("tests").await;
    let conn = p.pg.get().await.unwrap();
    let db: &tokio_postgres::Client = &conn;
    let base = time::macros::datetime!(2026-12-01 12:00:00 UTC);
    let at = |ms: i64| LastLocation { payment_id: Uuid::now_v7(), country: "KR".into(), lat: 37.5, lon: 127.0, at: base + time::Duration::milliseconds(ms) };
    let cached_at = |user: Uuid| {
        let redis = &p.redis;
        async move { holders::last_locations(redis, db, &[user]).await.unwrap().get(&user).map(|l| l.at) }
    };

    let (user, held, unknown) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    holders::cache(&p.redis, &[(user, at(2_000))]).await.unwrap();
    holders::cache(&p.redis, &[(user, at(1_000))]).await.unwrap();
    assert_eq!(cached_at(user).await, Some(base + time::Duration::milliseconds(2_000)), "an older location does not replace a newer one");
    holders::cache(&p.redis, &[(user, at(2_001))]).await.unwrap();
    assert_eq!(cached_at(user).await, Some(base + time::Duration::milliseconds(2_001)), "a newer one, by a millisecond, does");

    holders::hold(&p.redis, &[held]).await.unwrap();
    holders::cache(&p.redis, &[(held, at(5))]).await.unwrap();
    assert_eq!(cached_at(held).await, Some(base + time::Duration::milliseconds(5)), "a hold is replaced");

    assert_eq!(cached_at(unknown).await, None, "no location: cached as none");
    holders::cache(&p.redis, &[(unknown, at(7))]).await.unwrap();
    assert_eq!(cached_at(unknown).await, Some(base + time::Duration::milliseconds(7)), "none is replaced");
}

/// How many times `table` was read whole, as PostgreSQL's statistics say
/// (this backend's counts flushed first; the database is this test's own).
async fn whole_table_reads(db: &tokio_postgres::Client, table: &str) -> i64 {
    db.execute("SELECT pg_stat_force_next_flush()", &[]).await.unwrap();
    db.query_one("SELECT coalesce(seq_scan, 0) FROM pg_stat_user_tables WHERE relname = $1", &[&table]).await.unwrap().get(0)
}

/// The consumers' deduplication reads a thousand ids by key, never the
/// whole table: with `= ANY($1)`, the first executions of the prepared
/// statement (planned with the array's real length) read all of
/// `loyalty_visits` or `transactions` once they held some 100,000 rows,
/// so a batch cost more as history grew (see `store`'s module comment).
#[tokio::test]
async fn deduplication_of_a_large_batch_reads_by_key_not_the_whole_table() {
    use paystream::store::{ledger, loyalty};
    let p = platform("tests").await;
    let (stats, connection) = tokio_postgres::connect(p.config.database.url.expose(), tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    // History: 100,000 visits and ledger rows (neither table has foreign
    // keys), with statistics as a live system keeps them.
    stats
        .batch_execute(
            "INSERT INTO loyalty_visits (payment_id, user_id, merchant_id, visited_at)
               SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), now() FROM generate_series(1, 100000);
             INSERT INTO transactions (payment_id, user_id, card_id, merchant_id, amount, currency, country, lat, lon, status, occurred_at)
               SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 1000, 'KRW', 'KR', 37.5, 127.0, 'COMPLETED', now()
               FROM generate_series(1, 100000);
             ANALYZE loyalty_visits; ANALYZE transactions;",
        )
        .await
        .unwrap();
    let (visits_before, ledger_before) = (whole_table_reads(&stats, "loyalty_visits").await, whole_table_reads(&stats, "transactions").await);

    let batch: Vec<loyalty::Visit> = (0..1_000)
        .map(|_| loyalty::Visit { payment_id: Uuid::now_v7(), user_id: Uuid::now_v7(), merchant_id: Uuid::now_v7(), at: time::OffsetDateTime::now_utc() })
        .collect();
    let ids: Vec<Uuid> = batch.iter().map(|v| v.payment_id).collect();
    // A new connection's first executions: plans made for these arrays.
    let mut conn = p.pg.get().await.unwrap();
    let tx = paystream::db::begin(&mut conn).await.unwrap();
    // The lookup a redelivery takes (a first delivery looks nothing up).
    let loyalty::Recorded::Counted(changes) = loyalty::record_visits(&tx, &batch, loyalty::Lookup::ByKey).await.unwrap() else {
        panic!("every visit is new")
    };
    assert_eq!(changes.len(), 1_000, "every visit is new, each pair counted once");
    let known = ledger::known(&tx, &ids).await.unwrap();
    assert!(known.decided.is_empty());
    tx.rollback().await.unwrap();
    conn.execute("SELECT pg_stat_force_next_flush()", &[]).await.unwrap();
    drop(conn);

    assert_eq!(whole_table_reads(&stats, "loyalty_visits").await, visits_before, "loyalty_visits read by key only");
    assert_eq!(whole_table_reads(&stats, "transactions").await, ledger_before, "transactions read by key only");
}
