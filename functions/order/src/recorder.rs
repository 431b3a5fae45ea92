//! Records the accepted orders of every invocation in flight in this
//! environment together: one statement (orders and their outbox rows), one
//! commit, however many orders (see [`paystream::batch`]). Each request
//! still answers 202 only after the statement holding its order committed.
//!
//! The commit deadline is checked per order when its batch runs, not when
//! it was queued: an order whose reservation is older than
//! `ORDER_COMMIT_DEADLINE_MS` by then is not written (the request gives its
//! unit back), so no order commits after reconciliation may have returned
//! its unit (`RESERVATION_TTL_MS` exceeds the deadline plus the statement
//! timeout).

use std::sync::Arc;
use std::time::Instant;

use paystream::batch::Step;
use paystream::events::OrderEvent;
use paystream::store::orders;
use paystream::{AppError, Platform};

/// An order to record: its event (the row's fields and the outbox payload)
/// and the moment after which it must not commit.
pub struct Unrecorded {
    pub event: OrderEvent,
    pub commit_by: Instant,
}

/// What became of one order.
pub enum Recorded {
    /// Committed with its outbox row.
    Yes,
    /// Not written: PostgreSQL already has this buyer's order for the product.
    AlreadyPurchased,
    /// Not written: its commit deadline had passed when its batch ran.
    TooLate,
    /// Not written: no connection (the statement was never sent).
    NotSent(AppError),
    /// The statement failed. A lost connection (`DEPENDENCY_UNAVAILABLE`)
    /// may still have committed it; any other error rolled it back.
    Failed(AppError),
}

pub struct RecordOrders {
    pub platform: Arc<Platform>,
}

impl Step for RecordOrders {
    type Row = Unrecorded;
    type Answer = Recorded;

    async fn run(&self, rows: Vec<Unrecorded>) -> Vec<Recorded> {
        let db = match self.platform.pg.get().await {
            Ok(db) => db,
            Err(e) => {
                let e = AppError::from(e);
                tracing::warn!(orders = rows.len(), error = ?e, "no connection for a batch of orders");
                return rows.iter().map(|_| Recorded::NotSent(e.for_each_request())).collect();
            }
        };
        let now = Instant::now();
        let live: Vec<&OrderEvent> = rows.iter().filter(|r| r.commit_by > now).map(|r| &r.event).collect();
        let written = if live.is_empty() { Ok(Default::default()) } else { orders::insert_with_outbox(&db, &live).await };
        match written {
            Ok(ids) => rows
                .iter()
                .map(|r| {
                    if r.commit_by <= now {
                        Recorded::TooLate
                    } else if ids.contains(&r.event.order_id) {
                        Recorded::Yes
                    } else {
                        Recorded::AlreadyPurchased
                    }
                })
                .collect(),
            Err(e) => {
                tracing::warn!(orders = live.len(), error = ?e, "recording a batch of orders failed");
                rows.iter().map(|r| if r.commit_by <= now { Recorded::TooLate } else { Recorded::Failed(e.for_each_request()) }).collect()
            }
        }
    }
}
