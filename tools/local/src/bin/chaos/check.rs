//! The invariant checker: pure functions from what the clients were told,
//! what the database holds and what the topics carry, to one outcome per
//! invariant with its counts and the first violations. No I/O here, so the
//! unit tests below feed it synthetic rows and require it to catch every
//! kind of violation.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use uuid::Uuid;

/// One HTTP attempt as the client saw it.
#[derive(Clone, Debug, Default)]
pub struct Attempt {
    /// `None`: no answer (connection error or client timeout).
    pub status: Option<u16>,
    /// `payment_id` / `order_id` of the answer, when it named one.
    pub id: Option<Uuid>,
    /// The problem+json `code`, when the answer was an error.
    pub code: Option<String>,
}

impl Attempt {
    pub fn accepted(&self) -> bool {
        self.status == Some(202)
    }
}

/// One payment a client wanted to make. Every request of a run has its own
/// amount, so the payments table tells which request produced each row.
#[derive(Clone, Debug)]
pub struct PaymentRequest {
    pub user: Uuid,
    pub merchant: Uuid,
    pub amount: i64,
    pub key: Option<String>,
    /// Every attempt with the same key and body (retries, resends).
    pub attempts: Vec<Attempt>,
}

/// One order a buyer wanted to place.
#[derive(Clone, Debug)]
pub struct OrderRequest {
    pub user: Uuid,
    pub product: Uuid,
    pub key: Option<String>,
    pub attempts: Vec<Attempt>,
}

/// A holder's answer through the SMS link.
#[derive(Clone, Debug)]
pub struct VerificationRequest {
    pub payment: Uuid,
    pub approve: bool,
    pub attempts: Vec<Attempt>,
}

/// What the clients were told.
#[derive(Clone, Debug, Default)]
pub struct Answers {
    pub payments: Vec<PaymentRequest>,
    pub orders: Vec<OrderRequest>,
    pub verifications: Vec<VerificationRequest>,
}

#[derive(Clone, Debug)]
pub struct PaymentRow {
    pub id: Uuid,
    pub user: Uuid,
    pub merchant: Uuid,
    pub amount: i64,
}

#[derive(Clone, Debug)]
pub struct LedgerRow {
    pub payment: Uuid,
    pub status: String,
}

#[derive(Clone, Debug)]
pub struct VisitRow {
    pub payment: Uuid,
    pub user: Uuid,
    pub merchant: Uuid,
}

#[derive(Clone, Debug)]
pub struct CountRow {
    pub user: Uuid,
    pub merchant: Uuid,
    pub visits: i64,
}

#[derive(Clone, Debug)]
pub struct OrderRow {
    pub id: Uuid,
    pub user: Uuid,
    pub product: Uuid,
    pub status: String,
}

#[derive(Clone, Debug)]
pub struct SettlementRow {
    pub order: Uuid,
    pub product: Uuid,
}

#[derive(Clone, Debug)]
pub struct ProductRow {
    pub id: Uuid,
    pub stock: i64,
    /// What `GET /products/{id}` answered once quiet (the live gate);
    /// `None` if it could not be read.
    pub remaining: Option<i64>,
}

/// The database after the run.
#[derive(Clone, Debug, Default)]
pub struct Database {
    pub payments: Vec<PaymentRow>,
    pub ledger: Vec<LedgerRow>,
    pub visits: Vec<VisitRow>,
    pub counts: Vec<CountRow>,
    /// `benefit_tips.payment_id`, one entry per row.
    pub tips: Vec<Uuid>,
    /// `payment_id` of every BENEFIT_TIP notification (None: unreadable).
    pub tip_notifications: Vec<Option<Uuid>>,
    pub orders: Vec<OrderRow>,
    pub settlements: Vec<SettlementRow>,
    pub products: Vec<ProductRow>,
}

/// The topics after the run: the id of every record, duplicates kept.
#[derive(Clone, Debug, Default)]
pub struct Topics {
    pub payment_events: Vec<Uuid>,
    pub order_events: Vec<Uuid>,
    /// Records that were not an event with an id.
    pub unreadable: usize,
    /// Records on `payment-stream.dlq` and `order-stream.dlq`.
    pub dead_letters: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    FunctionKill,
    BrokerRestart,
    RedisRestart,
    PostgresRestart,
}

impl FaultKind {
    pub const ALL: [FaultKind; 4] = [FaultKind::FunctionKill, FaultKind::BrokerRestart, FaultKind::RedisRestart, FaultKind::PostgresRestart];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::FunctionKill => "function-kill",
            FaultKind::BrokerRestart => "broker-restart",
            FaultKind::RedisRestart => "redis-restart-empty",
            FaultKind::PostgresRestart => "postgres-restart",
        }
    }

    /// The argument of `scripts/chaos.sh fault`.
    pub fn command(self) -> &'static str {
        match self {
            FaultKind::FunctionKill => "function",
            FaultKind::BrokerRestart => "broker",
            FaultKind::RedisRestart => "redis",
            FaultKind::PostgresRestart => "postgres",
        }
    }
}

/// A fault as it was carried out.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    pub at_s: f64,
    pub kind: FaultKind,
    pub target: Option<String>,
    /// The fault command exited 0: the process was really killed/restarted.
    pub injected: bool,
    pub took_s: f64,
    /// What the command reported (pids before and after, ...).
    pub evidence: String,
}

pub struct Observed {
    pub answers: Answers,
    pub db: Database,
    pub topics: Topics,
    pub faults: Vec<FaultRecord>,
    /// Every accepted payment and order was decided within the bound.
    pub quiet: bool,
}

/// Violations listed per invariant at most (the count is always complete).
const EXAMPLES_MAX: usize = 5;

#[derive(Debug)]
pub struct Outcome {
    pub name: &'static str,
    pub checked: usize,
    pub violations: usize,
    pub examples: Vec<String>,
}

impl Outcome {
    pub fn held(&self) -> bool {
        self.violations == 0
    }
}

struct Tally {
    name: &'static str,
    checked: usize,
    violations: usize,
    examples: Vec<String>,
}

impl Tally {
    fn new(name: &'static str) -> Self {
        Self { name, checked: 0, violations: 0, examples: Vec::new() }
    }

    /// Counts one checked item; `problem` is `Some` when it violates.
    fn item(&mut self, problem: Option<String>) {
        self.checked += 1;
        if let Some(p) = problem {
            self.violate(p);
        }
    }

    fn violate(&mut self, problem: String) {
        self.violations += 1;
        if self.examples.len() < EXAMPLES_MAX {
            self.examples.push(problem);
        }
    }

    fn done(self) -> Outcome {
        Outcome { name: self.name, checked: self.checked, violations: self.violations, examples: self.examples }
    }
}

pub const DECIDED: [&str; 2] = ["COMPLETED", "DENIED"];

/// Every invariant, in the order they are reported.
pub fn check(o: &Observed) -> Vec<Outcome> {
    let db = &o.db;
    let payments_by_id: HashMap<Uuid, Vec<&PaymentRow>> = group(&db.payments, |p| p.id);
    let ledger_by_id: HashMap<Uuid, Vec<&LedgerRow>> = group(&db.ledger, |l| l.payment);
    let orders_by_id: HashMap<Uuid, Vec<&OrderRow>> = group(&db.orders, |r| r.id);
    let settlements_by_order: HashMap<Uuid, Vec<&SettlementRow>> = group(&db.settlements, |s| s.order);
    let decided = |id: &Uuid| -> Option<&str> { ledger_by_id.get(id).and_then(|rows| rows.first()).map(|l| l.status.as_str()) };

    let mut out = Vec::new();

    // --- payments -----------------------------------------------------------
    let accepted_payments: Vec<(&PaymentRequest, Uuid)> = o
        .answers
        .payments
        .iter()
        .flat_map(|r| accepted_ids(&r.attempts).into_iter().map(move |id| (id, r)))
        .collect::<HashMap<Uuid, &PaymentRequest>>()
        .into_iter()
        .map(|(id, r)| (r, id))
        .collect();

    let mut t = Tally::new("every 202 payment has exactly one payment record");
    for (request, id) in &accepted_payments {
        let rows = payments_by_id.get(id).map_or(&[][..], |v| v.as_slice());
        t.item(match rows {
            [row] if row.user == request.user && row.amount == request.amount && row.merchant == request.merchant => None,
            [row] => Some(format!("payment {id}: record is user {} amount {}, the request was user {} amount {}", row.user, row.amount, request.user, request.amount)),
            rows => Some(format!("payment {id}: {} records", rows.len())),
        });
    }
    out.push(t.done());

    let mut t = Tally::new("every 202 payment has exactly one ledger row");
    for (_, id) in &accepted_payments {
        let n = ledger_by_id.get(id).map_or(0, Vec::len);
        t.item((n != 1).then(|| format!("payment {id}: {n} ledger rows")));
    }
    out.push(t.done());

    let mut t = Tally::new("every payment record is decided (COMPLETED/DENIED)");
    let mut checked_ids = HashSet::new();
    for id in db.payments.iter().map(|p| p.id).chain(accepted_payments.iter().map(|(_, id)| *id)) {
        if checked_ids.insert(id) {
            t.item(match decided(&id) {
                Some(s) if DECIDED.contains(&s) => None,
                Some(s) => Some(format!("payment {id}: still {s}")),
                None => Some(format!("payment {id}: no decision")),
            });
        }
    }
    out.push(t.done());

    let mut t = Tally::new("no (user, key) or request produced two payments");
    let by_request: HashMap<(Uuid, i64), Vec<&PaymentRow>> = group(&db.payments, |p| (p.user, p.amount));
    let mut requested = HashSet::new();
    for r in &o.answers.payments {
        requested.insert((r.user, r.amount));
        let rows = by_request.get(&(r.user, r.amount)).map_or(0, Vec::len);
        let ids = accepted_ids(&r.attempts);
        let label = match &r.key {
            Some(k) => format!("key {k}"),
            None => format!("unkeyed request of amount {}", r.amount),
        };
        t.item(if rows > 1 {
            Some(format!("user {} {label}: {rows} payments", r.user))
        } else if ids.len() > 1 {
            Some(format!("user {} {label}: answered with {} different payment ids", r.user, ids.len()))
        } else {
            None
        });
    }
    for p in &db.payments {
        if !requested.contains(&(p.user, p.amount)) {
            t.violate(format!("payment {}: user {} amount {} matches no request", p.id, p.user, p.amount));
        }
    }
    out.push(t.done());

    let mut t = Tally::new("payment-stream events <-> payment records");
    let on_topic: HashSet<Uuid> = o.topics.payment_events.iter().copied().collect();
    for id in &on_topic {
        t.item((!payments_by_id.contains_key(id)).then(|| format!("event for payment {id} has no payment record")));
    }
    for (_, id) in &accepted_payments {
        t.item((!on_topic.contains(id)).then(|| format!("202 payment {id} is not on payment-stream")));
    }
    out.push(t.done());

    let mut t = Tally::new("loyalty visits = decided payments per (customer, merchant)");
    let mut expected: HashMap<(Uuid, Uuid), i64> = HashMap::new();
    for p in &db.payments {
        if decided(&p.id).is_some() {
            *expected.entry((p.user, p.merchant)).or_default() += 1;
        }
    }
    let mut visits: HashMap<(Uuid, Uuid), i64> = HashMap::new();
    for v in &db.visits {
        *visits.entry((v.user, v.merchant)).or_default() += 1;
        if !payments_by_id.contains_key(&v.payment) {
            t.violate(format!("visit for payment {} without a payment record", v.payment));
        }
    }
    let counts: HashMap<(Uuid, Uuid), i64> = db.counts.iter().map(|c| ((c.user, c.merchant), c.visits)).collect();
    let pairs: HashSet<(Uuid, Uuid)> = expected.keys().chain(visits.keys()).chain(counts.keys()).copied().collect();
    for pair in pairs {
        let (want, rows, count) = (expected.get(&pair).copied().unwrap_or(0), visits.get(&pair).copied().unwrap_or(0), counts.get(&pair).copied().unwrap_or(0));
        t.item((want != rows || want != count).then(|| {
            format!("customer {} at merchant {}: {want} decided payments, {rows} visits, count {count}", pair.0, pair.1)
        }));
    }
    out.push(t.done());

    let mut t = Tally::new("at most one benefit tip per payment");
    let mut tips: HashMap<Uuid, usize> = HashMap::new();
    for id in &db.tips {
        *tips.entry(*id).or_default() += 1;
    }
    let mut notes: HashMap<Uuid, usize> = HashMap::new();
    for id in &db.tip_notifications {
        match id {
            Some(id) => *notes.entry(*id).or_default() += 1,
            None => t.violate("a BENEFIT_TIP notification names no payment".into()),
        }
    }
    let tipped: HashSet<Uuid> = tips.keys().chain(notes.keys()).copied().collect();
    for id in tipped {
        let (n_tips, n_notes) = (tips.get(&id).copied().unwrap_or(0), notes.get(&id).copied().unwrap_or(0));
        t.item(if n_tips > 1 || n_notes > 1 {
            Some(format!("payment {id}: {n_tips} tips, {n_notes} tip notifications"))
        } else if !payments_by_id.contains_key(&id) {
            Some(format!("tip for payment {id} without a payment record"))
        } else {
            None
        });
    }
    out.push(t.done());

    let mut t = Tally::new("holder decisions through the SMS link hold");
    for v in &o.answers.verifications {
        if !v.attempts.iter().any(|a| a.status == Some(200)) {
            continue; // never confirmed: nothing was promised
        }
        let want = if v.approve { "COMPLETED" } else { "DENIED" };
        t.item(match decided(&v.payment) {
            Some(s) if s == want => None,
            other => Some(format!("payment {}: {} answered 200, ledger says {}", v.payment, if v.approve { "approve" } else { "deny" }, other.unwrap_or("nothing"))),
        });
    }
    out.push(t.done());

    // --- flash sale ---------------------------------------------------------
    let accepted_orders: HashMap<Uuid, &OrderRequest> =
        o.answers.orders.iter().flat_map(|r| accepted_ids(&r.attempts).into_iter().map(move |id| (id, r))).collect();

    let mut t = Tally::new("every accepted order: SUCCESS + one settlement, or FAILED");
    let mut order_ids: HashSet<Uuid> = accepted_orders.keys().copied().collect();
    order_ids.extend(db.orders.iter().map(|r| r.id));
    for id in &order_ids {
        let rows = orders_by_id.get(id).map_or(&[][..], |v| v.as_slice());
        let settled = settlements_by_order.get(id).map_or(0, Vec::len);
        t.item(match rows {
            [row] if row.status == "SUCCESS" && settled == 1 => None,
            [row] if row.status == "FAILED" && settled == 0 => None,
            [row] => Some(format!("order {id}: {} with {settled} settlements", row.status)),
            rows => Some(format!("order {id}: {} order rows", rows.len())),
        });
    }
    for r in &o.answers.orders {
        let ids = accepted_ids(&r.attempts);
        if ids.len() > 1 {
            t.violate(format!("buyer {} product {} (key {:?}): answered with {} different order ids", r.user, r.product, r.key, ids.len()));
        }
    }
    for s in &db.settlements {
        if !orders_by_id.contains_key(&s.order) {
            t.violate(format!("settlement for unknown order {}", s.order));
        }
    }
    out.push(t.done());

    let mut per_product: HashMap<Uuid, (i64, i64, i64)> = HashMap::new(); // (success, pending, settlements)
    for r in &db.orders {
        let e = per_product.entry(r.product).or_default();
        match r.status.as_str() {
            "SUCCESS" => e.0 += 1,
            "PENDING" => e.1 += 1,
            _ => {}
        }
    }
    for s in &db.settlements {
        per_product.entry(s.product).or_default().2 += 1;
    }

    let mut t = Tally::new("successes <= stock (no oversell)");
    for p in &db.products {
        let (success, _, settled) = per_product.get(&p.id).copied().unwrap_or_default();
        t.item((success > p.stock || settled > p.stock).then(|| format!("product {}: {success} successes, {settled} settlements, stock {}", p.id, p.stock)));
    }
    out.push(t.done());

    let mut t = Tally::new("once quiet: remaining + successes + pending = stock");
    for p in &db.products {
        let (success, pending, _) = per_product.get(&p.id).copied().unwrap_or_default();
        t.item(match p.remaining {
            Some(r) if r + success + pending == p.stock => None,
            Some(r) => Some(format!("product {}: remaining {r} + successes {success} + pending {pending} != stock {}", p.id, p.stock)),
            None => Some(format!("product {}: remaining could not be read", p.id)),
        });
    }
    out.push(t.done());

    let mut t = Tally::new("nobody refused as a repeat buyer without an order");
    let has_order: HashSet<(Uuid, Uuid)> = db.orders.iter().map(|r| (r.user, r.product)).collect();
    for r in &o.answers.orders {
        for _ in r.attempts.iter().filter(|a| a.code.as_deref() == Some("ALREADY_PURCHASED")) {
            t.item((!has_order.contains(&(r.user, r.product))).then(|| format!("buyer {} refused ALREADY_PURCHASED for product {} without an order", r.user, r.product)));
        }
    }
    out.push(t.done());

    let mut t = Tally::new("nobody refused SOLD_OUT while stock remained");
    for p in &db.products {
        let refused = o.answers.orders.iter().filter(|r| r.product == p.id).flat_map(|r| &r.attempts).filter(|a| a.code.as_deref() == Some("SOLD_OUT")).count();
        if refused == 0 {
            continue;
        }
        let (success, _, _) = per_product.get(&p.id).copied().unwrap_or_default();
        t.item((success < p.stock).then(|| format!("product {}: {refused} SOLD_OUT answers, but only {success} of {} sold", p.id, p.stock)));
    }
    out.push(t.done());

    let mut t = Tally::new("order-stream events <-> orders");
    let on_topic: HashSet<Uuid> = o.topics.order_events.iter().copied().collect();
    for id in &on_topic {
        t.item((!orders_by_id.contains_key(id)).then(|| format!("event for order {id} has no order")));
    }
    for id in accepted_orders.keys() {
        t.item((!on_topic.contains(id)).then(|| format!("accepted order {id} is not on order-stream")));
    }
    out.push(t.done());

    let mut t = Tally::new("no dead letters, every record readable");
    t.item((o.topics.dead_letters > 0).then(|| format!("{} records dead-lettered", o.topics.dead_letters)));
    t.item((o.topics.unreadable > 0).then(|| format!("{} records without an event id", o.topics.unreadable)));
    out.push(t.done());

    // --- the run itself -------------------------------------------------------
    let mut t = Tally::new("quiet within the bound (all decided and settled)");
    t.item((!o.quiet).then(|| "the system did not quiesce within the bound".to_owned()));
    out.push(t.done());

    let mut t = Tally::new("every fault kind injected (real kill/restart)");
    for kind in FaultKind::ALL {
        let n = o.faults.iter().filter(|f| f.kind == kind && f.injected).count();
        t.item((n == 0).then(|| format!("{} never injected", kind.name())));
    }
    for f in o.faults.iter().filter(|f| !f.injected) {
        t.violate(format!("{} at t+{:.1}s failed: {}", f.kind.name(), f.at_s, f.evidence));
    }
    out.push(t.done());

    out
}

/// Distinct ids of the 202 answers.
fn accepted_ids(attempts: &[Attempt]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = attempts.iter().filter(|a| a.accepted()).filter_map(|a| a.id).collect();
    ids.sort();
    ids.dedup();
    ids
}

fn group<T, K: std::hash::Hash + Eq>(rows: &[T], key: impl Fn(&T) -> K) -> HashMap<K, Vec<&T>> {
    let mut map: HashMap<K, Vec<&T>> = HashMap::new();
    for row in rows {
        map.entry(key(row)).or_default().push(row);
    }
    map
}

/// The faults and the invariant table, as printed at the end of a run.
pub fn report(faults: &[FaultRecord], outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "faults injected ({}):", faults.iter().filter(|f| f.injected).count());
    for kind in FaultKind::ALL {
        let n = faults.iter().filter(|f| f.kind == kind && f.injected).count();
        let _ = writeln!(s, "  {:<22} {n}", kind.name());
    }
    for f in faults {
        let _ = writeln!(
            s,
            "  t+{:>6.1}s  {:<20} {:<10} {:<6} {:>5.1}s  {}",
            f.at_s,
            f.kind.name(),
            f.target.as_deref().unwrap_or("-"),
            if f.injected { "done" } else { "FAILED" },
            f.took_s,
            f.evidence
        );
    }
    let width = outcomes.iter().map(|o| o.name.len()).max().unwrap_or(10);
    let _ = writeln!(s, "\n{:<width$}  {:>8}  {:>10}  result", "invariant", "checked", "violations");
    for o in outcomes {
        let _ = writeln!(s, "{:<width$}  {:>8}  {:>10}  {}", o.name, o.checked, o.violations, if o.held() { "held" } else { "VIOLATED" });
        for e in &o.examples {
            let _ = writeln!(s, "{:<width$}    - {e}", "");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    const USER: u128 = 1;
    const MERCHANT: u128 = 2;
    const PRODUCT: u128 = 3;

    fn ok(status: u16, id: Option<Uuid>, code: Option<&str>) -> Attempt {
        Attempt { status: Some(status), id, code: code.map(str::to_owned) }
    }

    fn fault(kind: FaultKind) -> FaultRecord {
        FaultRecord { at_s: 1.0, kind, target: None, injected: true, took_s: 0.1, evidence: "pid 1 -> 2".into() }
    }

    /// A consistent run: two payments (one keyed and retried after a 503,
    /// one unkeyed), an approval, a product of stock 2 with one SUCCESS,
    /// one FAILED, a SOLD_OUT and an ALREADY_PURCHASED of a real buyer.
    fn healthy() -> Observed {
        let (p1, p2) = (id(101), id(102));
        let (o1, o2) = (id(201), id(202));
        let (buyer2, buyer3) = (id(11), id(12));
        let answers = Answers {
            payments: vec![
                PaymentRequest {
                    user: id(USER),
                    merchant: id(MERCHANT),
                    amount: 10_001,
                    key: Some("k1".into()),
                    attempts: vec![ok(503, None, Some("BROKER_UNAVAILABLE")), Attempt::default(), ok(202, Some(p1), None), ok(202, Some(p1), None)],
                },
                PaymentRequest { user: id(USER), merchant: id(MERCHANT), amount: 10_002, key: None, attempts: vec![ok(202, Some(p2), None)] },
                // No answer, no payment: allowed.
                PaymentRequest { user: id(USER), merchant: id(MERCHANT), amount: 10_003, key: None, attempts: vec![Attempt::default()] },
            ],
            orders: vec![
                OrderRequest { user: id(USER), product: id(PRODUCT), key: Some("o1".into()), attempts: vec![ok(202, Some(o1), None), ok(202, Some(o1), None)] },
                OrderRequest { user: id(USER), product: id(PRODUCT), key: None, attempts: vec![ok(409, None, Some("ALREADY_PURCHASED"))] },
                OrderRequest { user: buyer2, product: id(PRODUCT), key: None, attempts: vec![ok(502, None, None), ok(202, Some(o2), None)] },
                OrderRequest { user: buyer3, product: id(PRODUCT), key: None, attempts: vec![ok(409, None, Some("SOLD_OUT"))] },
            ],
            verifications: vec![VerificationRequest { payment: p2, approve: true, attempts: vec![ok(200, None, None)] }],
        };
        let db = Database {
            payments: vec![
                PaymentRow { id: p1, user: id(USER), merchant: id(MERCHANT), amount: 10_001 },
                PaymentRow { id: p2, user: id(USER), merchant: id(MERCHANT), amount: 10_002 },
            ],
            ledger: vec![LedgerRow { payment: p1, status: "COMPLETED".into() }, LedgerRow { payment: p2, status: "COMPLETED".into() }],
            visits: vec![
                VisitRow { payment: p1, user: id(USER), merchant: id(MERCHANT) },
                VisitRow { payment: p2, user: id(USER), merchant: id(MERCHANT) },
            ],
            counts: vec![CountRow { user: id(USER), merchant: id(MERCHANT), visits: 2 }],
            tips: vec![p1],
            tip_notifications: vec![Some(p1)],
            orders: vec![
                OrderRow { id: o1, user: id(USER), product: id(PRODUCT), status: "SUCCESS".into() },
                OrderRow { id: o2, user: buyer2, product: id(PRODUCT), status: "SUCCESS".into() },
            ],
            settlements: vec![SettlementRow { order: o1, product: id(PRODUCT) }, SettlementRow { order: o2, product: id(PRODUCT) }],
            products: vec![ProductRow { id: id(PRODUCT), stock: 2, remaining: Some(0) }],
        };
        let topics = Topics { payment_events: vec![p1, p1, p2], order_events: vec![o1, o2, o2], unreadable: 0, dead_letters: 0 };
        Observed { answers, db, topics, faults: FaultKind::ALL.into_iter().map(fault).collect(), quiet: true }
    }

    fn violated(o: &Observed) -> Vec<&'static str> {
        check(o).into_iter().filter(|x| !x.held()).map(|x| x.name).collect()
    }

    /// Applies `break_it` to a healthy run and requires exactly the named
    /// invariants to fail.
    fn expect(break_it: impl FnOnce(&mut Observed), names: &[&str]) {
        let mut o = healthy();
        break_it(&mut o);
        let mut got = violated(&o);
        got.sort();
        let mut want = names.to_vec();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn a_healthy_run_holds_everything() {
        let o = healthy();
        let outcomes = check(&o);
        assert!(outcomes.iter().all(Outcome::held), "{}", report(&o.faults, &outcomes));
        assert!(outcomes.iter().all(|x| x.checked > 0), "every invariant checks something: {outcomes:?}");
    }

    #[test]
    fn a_202_payment_without_its_record_is_caught() {
        expect(
            |o| {
                o.db.payments.retain(|p| p.id != id(102));
                o.db.visits.retain(|v| v.payment != id(102));
                o.db.counts[0].visits = 1;
            },
            &["every 202 payment has exactly one payment record", "payment-stream events <-> payment records"],
        );
    }

    #[test]
    fn a_202_payment_without_a_ledger_row_is_caught() {
        expect(
            |o| {
                o.db.ledger.retain(|l| l.payment != id(101));
                o.db.visits.retain(|v| v.payment != id(101));
                o.db.counts[0].visits = 1;
            },
            &["every 202 payment has exactly one ledger row", "every payment record is decided (COMPLETED/DENIED)"],
        );
    }

    #[test]
    fn a_payment_left_pending_is_caught() {
        expect(|o| o.db.ledger[0].status = "PENDING".into(), &["every payment record is decided (COMPLETED/DENIED)"]);
    }

    #[test]
    fn a_key_that_produced_two_payments_is_caught() {
        expect(
            |o| {
                let twin = id(103);
                o.db.payments.push(PaymentRow { id: twin, user: id(USER), merchant: id(MERCHANT), amount: 10_001 });
                o.db.ledger.push(LedgerRow { payment: twin, status: "COMPLETED".into() });
                o.db.visits.push(VisitRow { payment: twin, user: id(USER), merchant: id(MERCHANT) });
                o.db.counts[0].visits = 3;
                o.topics.payment_events.push(twin);
            },
            &["no (user, key) or request produced two payments"],
        );
    }

    #[test]
    fn a_replay_with_another_payment_id_is_caught() {
        expect(|o| o.answers.payments[0].attempts[3].id = Some(id(999)), &[
            "no (user, key) or request produced two payments",
            "every 202 payment has exactly one payment record",
            "every 202 payment has exactly one ledger row",
            "every payment record is decided (COMPLETED/DENIED)",
            "payment-stream events <-> payment records",
        ]);
    }

    #[test]
    fn an_event_without_a_payment_record_is_caught() {
        expect(|o| o.topics.payment_events.push(id(555)), &["payment-stream events <-> payment records"]);
    }

    #[test]
    fn a_payment_nobody_requested_is_caught() {
        expect(
            |o| {
                let stray = id(104);
                o.db.payments.push(PaymentRow { id: stray, user: id(USER), merchant: id(MERCHANT), amount: 77 });
                o.db.ledger.push(LedgerRow { payment: stray, status: "DENIED".into() });
                o.db.visits.push(VisitRow { payment: stray, user: id(USER), merchant: id(MERCHANT) });
                o.db.counts[0].visits = 3;
            },
            &["no (user, key) or request produced two payments"],
        );
    }

    #[test]
    fn a_double_counted_visit_is_caught() {
        expect(|o| o.db.counts[0].visits = 3, &["loyalty visits = decided payments per (customer, merchant)"]);
        expect(
            |o| {
                let p = o.db.visits[0].payment;
                o.db.visits.push(VisitRow { payment: p, user: id(USER), merchant: id(MERCHANT) });
            },
            &["loyalty visits = decided payments per (customer, merchant)"],
        );
    }

    #[test]
    fn a_missing_visit_is_caught() {
        expect(|o| { o.db.visits.pop(); }, &["loyalty visits = decided payments per (customer, merchant)"]);
    }

    #[test]
    fn two_tips_for_one_payment_are_caught() {
        expect(|o| o.db.tips.push(id(101)), &["at most one benefit tip per payment"]);
        expect(|o| o.db.tip_notifications.push(Some(id(101))), &["at most one benefit tip per payment"]);
        expect(|o| o.db.tips.push(id(404)), &["at most one benefit tip per payment"]);
    }

    #[test]
    fn an_approval_that_did_not_hold_is_caught() {
        expect(|o| o.db.ledger[1].status = "DENIED".into(), &["holder decisions through the SMS link hold"]);
    }

    #[test]
    fn an_unsettled_or_double_settled_order_is_caught() {
        expect(|o| o.db.orders[0].status = "PENDING".into(), &[
            "every accepted order: SUCCESS + one settlement, or FAILED",
            "nobody refused SOLD_OUT while stock remained",
        ]);
        expect(|o| o.db.settlements.push(SettlementRow { order: id(201), product: id(PRODUCT) }), &[
            "every accepted order: SUCCESS + one settlement, or FAILED",
            "successes <= stock (no oversell)",
        ]);
        expect(|o| o.db.settlements.retain(|s| s.order != id(202)), &["every accepted order: SUCCESS + one settlement, or FAILED"]);
        expect(
            |o| {
                o.db.orders.retain(|r| r.id != id(202));
                o.db.settlements.retain(|s| s.order != id(202));
                o.db.products[0].remaining = Some(1);
            },
            &["every accepted order: SUCCESS + one settlement, or FAILED", "order-stream events <-> orders", "nobody refused SOLD_OUT while stock remained"],
        );
    }

    #[test]
    fn oversell_is_caught() {
        expect(
            |o| {
                let extra = id(203);
                o.db.orders.push(OrderRow { id: extra, user: id(13), product: id(PRODUCT), status: "SUCCESS".into() });
                o.db.settlements.push(SettlementRow { order: extra, product: id(PRODUCT) });
                o.topics.order_events.push(extra);
                o.db.products[0].remaining = Some(-1);
            },
            &["successes <= stock (no oversell)"],
        );
    }

    #[test]
    fn a_leaked_reservation_is_caught() {
        // One unit reserved in the gate with no order behind it.
        expect(
            |o| {
                o.db.orders[1].status = "FAILED".into();
                o.db.settlements.retain(|s| s.order != id(202));
                o.db.products[0].remaining = Some(0);
            },
            &["once quiet: remaining + successes + pending = stock", "nobody refused SOLD_OUT while stock remained"],
        );
    }

    #[test]
    fn a_repeat_buyer_refusal_without_an_order_is_caught() {
        expect(|o| o.answers.orders[3].attempts[0].code = Some("ALREADY_PURCHASED".into()), &["nobody refused as a repeat buyer without an order"]);
    }

    #[test]
    fn an_order_replay_with_another_id_is_caught() {
        expect(|o| o.answers.orders[0].attempts[1].id = Some(id(299)), &[
            "every accepted order: SUCCESS + one settlement, or FAILED",
            "order-stream events <-> orders",
        ]);
    }

    #[test]
    fn an_order_event_without_an_order_and_dead_letters_are_caught() {
        expect(|o| o.topics.order_events.push(id(777)), &["order-stream events <-> orders"]);
        expect(|o| o.topics.dead_letters = 1, &["no dead letters, every record readable"]);
    }

    #[test]
    fn a_run_that_never_quiesced_fails() {
        expect(|o| o.quiet = false, &["quiet within the bound (all decided and settled)"]);
    }

    #[test]
    fn a_run_without_every_fault_kind_fails() {
        expect(|o| o.faults.retain(|f| f.kind != FaultKind::PostgresRestart), &["every fault kind injected (real kill/restart)"]);
        expect(|o| o.faults.iter_mut().for_each(|f| f.injected = f.kind != FaultKind::FunctionKill), &["every fault kind injected (real kill/restart)"]);
        expect(|o| o.faults.clear(), &["every fault kind injected (real kill/restart)"]);
    }
}
