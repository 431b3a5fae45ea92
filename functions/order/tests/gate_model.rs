//! The gate's scripts on the real Redis under random interleavings of what
//! requests do (reserve, commit, fail, die before or after the commit), of
//! reconciliation runs and of single keys evicted, against a model of
//! PostgreSQL (the set of buyers with an order). After every step:
//!
//! - nobody is refused as a repeat buyer (ALREADY_PURCHASED) without an order;
//! - every buyer the gate holds owns exactly one unit: remaining + buyers = stock;
//! - orders never exceed the stock, and every buyer with an order is a buyer;
//!
//! and once quiet (every request over, a reconciliation run), the gate is
//! exactly PostgreSQL: buyers = users with an order, remaining = stock -
//! orders, no reservation left recorded.
//!
//! Evictions happen only while no request is in flight: a rebuild in the
//! middle of a request is the documented race that settlement absorbs
//! (the order can end FAILED), tested in `flash.rs`.

use std::collections::HashSet;
use std::time::Duration;

use paystream::cache::Redis;
use paystream::config::Config;
use paystream::flash::{self, Held, Reservation, SaleState, Verdict};
use paystream::ErrorCode;
use proptest::prelude::*;
use uuid::Uuid;

const USERS: u8 = 3;

#[derive(Clone, Debug)]
enum Step {
    /// A request of this user reaches the gate.
    Start(u8),
    /// The n-th request in flight commits its order and drops its record.
    Commit(usize),
    /// ... commits, and dies before dropping its record.
    CommitThenDie(usize),
    /// ... fails before its commit and gives the reservation back.
    Fail(usize),
    /// ... dies before its commit.
    Die(usize),
    /// Every request in flight is past its commit deadline (it died), the
    /// reservations are stale, and the relay schedule reconciles.
    Reconcile,
    /// One key of the gate is evicted alone, and the gate is rebuilt.
    Evict(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..USERS).prop_map(Step::Start),
        2 => any::<usize>().prop_map(Step::Commit),
        1 => any::<usize>().prop_map(Step::CommitThenDie),
        1 => any::<usize>().prop_map(Step::Fail),
        1 => any::<usize>().prop_map(Step::Die),
        1 => Just(Step::Reconcile),
        1 => (0..4usize).prop_map(Step::Evict),
    ]
}

struct World {
    redis: Redis,
    product: Uuid,
    users: Vec<Uuid>,
    stock: i64,
    /// PostgreSQL: users with an order.
    orders: HashSet<Uuid>,
    in_flight: Vec<Held>,
}

impl World {
    fn state(&self) -> SaleState {
        let now = time::OffsetDateTime::now_utc();
        SaleState {
            start_time: now - time::Duration::hours(1),
            end_time: now + time::Duration::hours(1),
            remaining: self.stock - self.orders.len() as i64,
            buyers: self.orders.iter().copied().collect(),
        }
    }

    fn take(&mut self, n: usize) -> Option<Held> {
        if self.in_flight.is_empty() {
            return None;
        }
        let i = n % self.in_flight.len();
        Some(self.in_flight.swap_remove(i))
    }

    async fn gate(&self) -> (i64, HashSet<Uuid>, Vec<Uuid>) {
        let keys = flash::key_names(&self.redis, self.product);
        let mut conn = self.redis.conn().await.unwrap();
        let remaining: i64 = redis::cmd("GET").arg(&keys[1]).query_async(&mut conn).await.unwrap();
        let buyers: Vec<String> = redis::cmd("SMEMBERS").arg(&keys[2]).query_async(&mut conn).await.unwrap();
        let recorded: Vec<String> = redis::cmd("ZRANGE").arg(&keys[3]).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
        let users = |v: Vec<String>| v.iter().filter_map(|m| Uuid::parse_str(m).ok()).collect::<Vec<_>>();
        (remaining, users(buyers).into_iter().collect(), users(recorded))
    }

    async fn run(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match step {
            Step::Start(u) => {
                let user = self.users[*u as usize];
                match flash::reserve(&self.redis, self.product, user, time::OffsetDateTime::now_utc()).await {
                    Ok(Reservation::Reserved(held)) => self.in_flight.push(held),
                    Ok(Reservation::NotLoaded) => prop_assert!(false, "the gate is always loaded here"),
                    Err(e) if e.code == ErrorCode::AlreadyPurchased => {
                        prop_assert!(self.orders.contains(&user), "refused as a repeat buyer without an order")
                    }
                    Err(e) if e.code == ErrorCode::SoldOut => {}
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            }
            Step::Commit(n) | Step::CommitThenDie(n) => {
                let Some(held) = self.take(*n) else { return Ok(()) };
                // The unique (user, product) constraint: a second order fails.
                let _committed = self.orders.insert(held.user);
                if matches!(step, Step::Commit(_)) {
                    flash::forget(&self.redis, &held).await.unwrap();
                }
            }
            Step::Fail(n) => {
                if let Some(held) = self.take(*n) {
                    flash::release(&self.redis, &held).await.unwrap();
                }
            }
            Step::Die(n) => {
                self.take(*n);
            }
            Step::Reconcile => {
                self.in_flight.clear();
                // Adopted stamps may run a few ms ahead of Redis's clock.
                tokio::time::sleep(Duration::from_millis(5)).await;
                let stale = flash::stale_reservations(&self.redis, self.product, 0, 1_000).await.unwrap();
                let verdicts: Vec<_> = stale.iter().map(|r| (*r, flash::verdict(self.orders.contains(&r.user)))).collect();
                let (returned, forgotten) = flash::settle_stale(&self.redis, self.product, &verdicts).await.unwrap();
                prop_assert_eq!(returned as usize, verdicts.iter().filter(|(_, v)| *v == Verdict::Return).count());
                prop_assert_eq!(forgotten as usize, verdicts.iter().filter(|(_, v)| *v == Verdict::Forget).count());
                let (remaining, buyers, recorded) = self.gate().await;
                prop_assert_eq!(&buyers, &self.orders, "quiet: the gate's buyers are the users with an order");
                prop_assert_eq!(remaining, self.stock - self.orders.len() as i64);
                prop_assert!(recorded.is_empty(), "quiet: nothing recorded: {:?}", recorded);
            }
            Step::Evict(k) => {
                if !self.in_flight.is_empty() {
                    return Ok(());
                }
                let keys = flash::key_names(&self.redis, self.product);
                let mut conn = self.redis.conn().await.unwrap();
                let _: i64 = redis::cmd("DEL").arg(&keys[*k]).query_async(&mut conn).await.unwrap();
                let user = self.users[0];
                let answer = flash::reserve(&self.redis, self.product, user, time::OffsetDateTime::now_utc()).await.unwrap();
                prop_assert_eq!(answer, Reservation::NotLoaded, "a partial gate is not loaded");
                prop_assert!(flash::load(&self.redis, self.product, &self.state()).await.unwrap(), "a partial gate is replaced");
            }
        }
        let (remaining, buyers, _) = self.gate().await;
        prop_assert!(remaining >= 0);
        prop_assert_eq!(remaining + buyers.len() as i64, self.stock, "each buyer holds exactly one unit");
        prop_assert!(self.orders.len() as i64 <= self.stock, "orders within the stock");
        prop_assert!(self.orders.is_subset(&buyers), "every user with an order is a buyer");
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_gate_stays_true_to_postgresql_through_crashes_reconciliation_and_eviction(
        stock in 1i64..5,
        steps in proptest::collection::vec(step(), 1..40),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut config = Config::from_env().unwrap();
            config.redis.key_prefix = format!("t:{}:", paystream::testing::unique_suffix());
            let mut world = World {
                redis: Redis::new(&config.redis).unwrap(),
                product: Uuid::new_v4(),
                users: (0..USERS).map(|_| Uuid::new_v4()).collect(),
                stock,
                orders: HashSet::new(),
                in_flight: Vec::new(),
            };
            prop_assert!(flash::load(&world.redis, world.product, &world.state()).await.unwrap());
            for step in &steps {
                world.run(step).await?;
            }
            world.run(&Step::Reconcile).await?;
            let keys = flash::key_names(&world.redis, world.product);
            let mut conn = world.redis.conn().await.unwrap();
            let _: i64 = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
            Ok(())
        })?;
    }
}
