//! Work of the concurrent invocations of one execution environment, done
//! together.
//!
//! An environment that runs several invocations at once (Lambda Managed
//! Instances, `AWS_LAMBDA_MAX_CONCURRENCY`; locally `PAYSTREAM_CONCURRENCY`)
//! often has many requests doing the same step at the same moment: the same
//! INSERT, the same publish. Each hands its row to the step's [`Batcher`],
//! which runs what has queued as one batch (one multi-row statement: one
//! round trip and one commit for all of them) and gives every request its
//! own answer. A request that waits for its answer still answers only after
//! its batch is done, so durability is what it was; N requests at once cost
//! one commit instead of N.
//!
//! Batches form by themselves: a batch takes everything queued when a slot
//! is free, so an idle environment runs each row at once (a batch of one,
//! the cost of a channel hop) and a busy one runs fewer, larger batches.
//!
//! Bounds: at most `queue_max` rows wait (beyond that [`Batcher::submit`]
//! refuses at once), a batch holds at most `batch_max` rows, and at most
//! `in_flight_max` batches run at once (keep it at most the pool's size).

use std::future::Future;
use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::error::{AppError, ErrorCode};

/// One step that can run many rows at once.
pub trait Step: Send + Sync + 'static {
    type Row: Send + 'static;
    type Answer: Send + 'static;
    /// Runs one batch (1..=`batch_max` rows); returns one answer per row,
    /// in the rows' order.
    fn run(&self, rows: Vec<Self::Row>) -> impl Future<Output = Vec<Self::Answer>> + Send;
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub queue_max: usize,
    pub batch_max: usize,
    pub in_flight_max: usize,
}

/// The bounds of a request path's write step (`pay`'s one statement for
/// key claims and records, `order`'s order inserts): one statement at a
/// time. A second statement in flight halves the rows each one carries,
/// and every statement is a commit PostgreSQL pays for. Measured on
/// 2026-12-04 (`bench intake 5000 32 0`, `bench orders 10000 64`, four
/// runs each way): against two statements at once (pay) and four (order),
/// one at a time kept the rate and p99 and cost PostgreSQL 17 % less CPU
/// per payment and 38 % less per order. It also leaves every other
/// connection of the pool to reads. Pay's claims and records later came
/// to share one statement (measured the same way, three runs each): half
/// the commits again and 14 % less PostgreSQL CPU per payment; a second
/// statement in flight beside it changed neither the rate nor how long a
/// write waits.
pub const WRITE_STEP: Limits = Limits { queue_max: 4_096, batch_max: 256, in_flight_max: 1 };

type Queued<S> = (<S as Step>::Row, oneshot::Sender<<S as Step>::Answer>);

/// One per step and execution environment (held by the function's state).
pub struct Batcher<S: Step> {
    step: Arc<S>,
    limits: Limits,
    /// Started by the first row, inside the runtime that serves requests.
    queue: OnceLock<mpsc::Sender<Queued<S>>>,
}

/// A submitted row's answer, once its batch has run. Dropping it is fine:
/// the row is still done.
pub type Pending<A> = oneshot::Receiver<A>;

impl<S: Step> Batcher<S> {
    pub fn new(step: S, limits: Limits) -> Self {
        assert!(limits.queue_max > 0 && limits.batch_max > 0 && limits.in_flight_max > 0, "every bound is positive");
        Self { step: Arc::new(step), limits, queue: OnceLock::new() }
    }

    /// Queues `row` for the next batch; refuses at once when `queue_max`
    /// rows are waiting already (the caller answers 503 or leaves the work
    /// to its recovery path).
    pub fn submit(&self, row: S::Row) -> Result<Pending<S::Answer>, AppError> {
        let queue = self.queue.get_or_init(|| start(Arc::clone(&self.step), self.limits));
        let (answer, pending) = oneshot::channel();
        queue
            .try_send((row, answer))
            .map_err(|_| AppError::new(ErrorCode::DependencyUnavailable, "too much work waiting in this environment; retry"))?;
        Ok(pending)
    }

    /// [`Self::submit`] and wait for the answer.
    pub async fn run(&self, row: S::Row) -> Result<S::Answer, AppError> {
        self.submit(row)?
            .await
            .map_err(|_| AppError::internal(std::io::Error::other("a batch ended without answering (its task panicked)")))
    }
}

/// The answers of a batch whose shared work failed as a whole: the error is
/// logged once (with its source, naming `what` and the batch's size) and
/// every row gets the same answer without the source.
pub fn each_failed<T>(rows: usize, what: &str, error: AppError) -> Vec<Result<T, AppError>> {
    tracing::warn!(rows, error = ?error, "{what} failed for the whole batch");
    (0..rows).map(|_| Err(error.for_each_request())).collect()
}

/// The environment's loop for one step: waits for a free slot, takes what
/// has queued (up to `batch_max`) and runs it. Ends when the step's
/// [`Batcher`] (the only sender) is dropped.
fn start<S: Step>(step: Arc<S>, limits: Limits) -> mpsc::Sender<Queued<S>> {
    let (sender, mut receiver) = mpsc::channel::<Queued<S>>(limits.queue_max);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(limits.in_flight_max));
        let mut queued = Vec::with_capacity(limits.batch_max);
        loop {
            // The slot first: while every slot is busy the queue fills, and
            // the next batch is larger.
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
            if receiver.recv_many(&mut queued, limits.batch_max).await == 0 {
                return;
            }
            let (rows, answers): (Vec<S::Row>, Vec<oneshot::Sender<S::Answer>>) = queued.drain(..).unzip();
            let step = Arc::clone(&step);
            tokio::spawn(async move {
                let results = step.run(rows).await;
                assert_eq!(results.len(), answers.len(), "a batch answers every row");
                for (answer, result) in answers.into_iter().zip(results) {
                    // The requester may have stopped waiting: fine.
                    let _ = answer.send(result);
                }
                drop(slot);
            });
        }
    });
    sender
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Doubles numbers, slowly, and records the size of every batch.
    struct Double {
        sizes: Arc<Mutex<Vec<usize>>>,
    }

    impl Step for Double {
        type Row = u32;
        type Answer = u32;
        async fn run(&self, rows: Vec<u32>) -> Vec<u32> {
            self.sizes.lock().unwrap().push(rows.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
            rows.into_iter().map(|n| n * 2).collect()
        }
    }

    #[tokio::test]
    async fn concurrent_rows_share_batches_and_each_gets_its_own_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let batcher = Arc::new(Batcher::new(Double { sizes: Arc::clone(&sizes) }, Limits { queue_max: 1_000, batch_max: 50, in_flight_max: 2 }));
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..400u32 {
            let batcher = Arc::clone(&batcher);
            tasks.spawn(async move { (n, batcher.run(n).await.unwrap()) });
        }
        while let Some(done) = tasks.join_next().await {
            let (n, doubled) = done.unwrap();
            assert_eq!(doubled, n * 2);
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 400);
        assert!(sizes.iter().all(|s| (1..=50).contains(s)), "{sizes:?}");
        assert!(sizes.len() < 400 / 4, "rows waiting together went in few batches: {sizes:?}");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let batcher = Batcher::new(Double { sizes }, Limits { queue_max: 2, batch_max: 1, in_flight_max: 1 });
        // The loop has not run yet: the first rows wait in the queue.
        let first = batcher.submit(1).unwrap();
        let _second = batcher.submit(2).unwrap();
        let refused = batcher.submit(3).unwrap_err();
        assert_eq!(refused.code, ErrorCode::DependencyUnavailable);
        assert_eq!(first.await.unwrap(), 2, "queued rows are still done");
    }
}
