//! The event-source poller's work (see the `poller` binary): one task per
//! MSK event source and per schedule.
//!
//! The poller is not a consumer-group member. It assigns itself every
//! partition of its source's topics (discovered from metadata, refreshed on
//! a bound), starts each at the offset its `ConsumerGroupId` committed, and
//! commits there (a "simple consumer" commit, generation -1) after
//! successful invocations, at most once per `commit_interval_ms`. Why: tansu 0.6.0 (the broker before nisshi) could
//! leave a group "Forming" under a leader that had left, and a member of
//! such a group never got a partition again; nisshi fixes that, but a local
//! runtime should not rest on any broker's group coordinator. Without JoinGroup and
//! SyncGroup no group state can stall delivery: a broker restart costs
//! reconnects, and the broker accepts and returns the group's offsets
//! whatever its membership state.
//!
//! The poller is therefore the only consumer of each group locally: two
//! pollers on the same broker would both deliver every record (at-least-once
//! is allowed and the consumers are idempotent, but it is wasted work).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use paystream::config::Config;
use paystream::kafka::client_config;
use paystream::msk::{build_event, OutRecordForEvent};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::client::HttpClient;
use crate::template::{MskSource, Schedule};

/// The ARN the local "cluster" reports in events.
const LOCAL_CLUSTER_ARN: &str = "arn:aws:kafka:local:000000000000:cluster/paystream-local/00000000-0000-0000-0000-000000000000-1";

/// The poller's bounds, from the environment (`PAYSTREAM_POLLER_*`, README's
/// configuration table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollerSettings {
    /// First delay before a failed batch is invoked (or a failed commit
    /// made) again; it doubles.
    pub retry_first_ms: u64,
    /// Longest delay between two invocations of a failing batch (or two
    /// attempts of a failing commit).
    pub retry_max_ms: u64,
    /// How often partitions are discovered again (a new partition or topic
    /// is picked up within this) and the stall check runs.
    pub refresh_ms: u64,
    /// Bound of each metadata, committed-offset and watermark request.
    pub broker_timeout_ms: u64,
    /// Bound of one offset commit (librdkafka waits this long for a
    /// coordinator, and each request this long for an answer); a failed
    /// commit is made again with the same backoff as a failed batch.
    pub commit_timeout_ms: u64,
    /// A partition with records beyond the poller's position that yields
    /// none for this long counts as stalled: the consumer is recreated at
    /// the positions the poller holds.
    pub stall_ms: u64,
    /// On shutdown, how long the last commit may take.
    pub shutdown_commit_ms: u64,
    /// Least time between the starts of two commits of one source. Every
    /// commit is a write the broker pays for; committing after every batch
    /// made one per invocation (hundreds a second under load, per source).
    /// Delivery stays at-least-once either way: after a poller crash, what
    /// was delivered since the last commit (at most this long's batches)
    /// comes again, and the consumers are idempotent.
    pub commit_interval_ms: u64,
    /// Longest wait for one invocation's answer (then it counts as failed).
    pub invoke_timeout_ms: u64,
    /// librdkafka `fetch.wait.max.ms`: how long the broker may hold a fetch.
    /// The broker answers as soon as records are there, but with none it
    /// reads its SQLite log again and again through the wait, at halving
    /// intervals (nothing wakes it when records arrive): a record reaching
    /// an idle partition waits up to half of this, and every read costs
    /// the broker CPU. Four idle librdkafka consumers set as this poller's
    /// (this machine, nisshi 0.8.1, 500 records/s produced beside them)
    /// cost the broker 61 % of a core at 20 ms, 37 % at 50 ms and 24 % at
    /// 100 ms; the local runtime's broker idled at 64 % and 37 % with this
    /// poller at 20 and 50 ms.
    pub fetch_wait_ms: u64,
    /// librdkafka `queued.min.messages`: while this many records wait in
    /// the poller (fetched, not yet taken into a batch), it fetches no
    /// more. librdkafka's default (100,000) keeps a fetch in flight all
    /// the time, so under load the broker answered a stream of fetches of
    /// a few records each while the consumer's invocation ran; with 1,
    /// a source fetches about once per invocation and the next batch is
    /// what arrived meanwhile, as an event source mapping's would be.
    pub prefetch_records: u64,
    /// librdkafka `fetch.queue.backoff.ms`: how soon after the poller took
    /// the waiting records fetching resumes (librdkafka checks the queue
    /// again after this; its default is 1 s).
    pub prefetch_backoff_ms: u64,
}

impl Default for PollerSettings {
    fn default() -> Self {
        Self {
            retry_first_ms: 100,
            retry_max_ms: 5_000,
            refresh_ms: 5_000,
            broker_timeout_ms: 3_000,
            commit_timeout_ms: 10_000,
            stall_ms: 30_000,
            shutdown_commit_ms: 1_000,
            commit_interval_ms: 100,
            invoke_timeout_ms: 120_000,
            fetch_wait_ms: 50,
            prefetch_records: 1,
            prefetch_backoff_ms: 1,
        }
    }
}

impl PollerSettings {
    pub fn from_env() -> Result<Self, String> {
        Self::from_vars(&std::env::vars().collect())
    }

    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, String> {
        let d = Self::default();
        let get = |name: &str, default: u64| -> Result<u64, String> {
            match vars.get(name) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!("{name} must be a positive whole number, not {v:?}")),
                },
            }
        };
        let settings = Self {
            retry_first_ms: get("PAYSTREAM_POLLER_RETRY_FIRST_MS", d.retry_first_ms)?,
            retry_max_ms: get("PAYSTREAM_POLLER_RETRY_MAX_MS", d.retry_max_ms)?,
            refresh_ms: get("PAYSTREAM_POLLER_REFRESH_MS", d.refresh_ms)?,
            broker_timeout_ms: get("PAYSTREAM_POLLER_BROKER_TIMEOUT_MS", d.broker_timeout_ms)?,
            commit_timeout_ms: get("PAYSTREAM_POLLER_COMMIT_TIMEOUT_MS", d.commit_timeout_ms)?,
            stall_ms: get("PAYSTREAM_POLLER_STALL_MS", d.stall_ms)?,
            shutdown_commit_ms: get("PAYSTREAM_POLLER_SHUTDOWN_COMMIT_MS", d.shutdown_commit_ms)?,
            commit_interval_ms: get("PAYSTREAM_POLLER_COMMIT_INTERVAL_MS", d.commit_interval_ms)?,
            invoke_timeout_ms: get("PAYSTREAM_POLLER_INVOKE_TIMEOUT_MS", d.invoke_timeout_ms)?,
            fetch_wait_ms: get("PAYSTREAM_POLLER_FETCH_WAIT_MS", d.fetch_wait_ms)?,
            prefetch_records: get("PAYSTREAM_POLLER_PREFETCH_RECORDS", d.prefetch_records)?,
            prefetch_backoff_ms: get("PAYSTREAM_POLLER_PREFETCH_BACKOFF_MS", d.prefetch_backoff_ms)?,
        };
        if settings.retry_max_ms < settings.retry_first_ms {
            return Err("PAYSTREAM_POLLER_RETRY_MAX_MS must not be below PAYSTREAM_POLLER_RETRY_FIRST_MS".into());
        }
        Ok(settings)
    }
}

type Tp = (String, i32);

/// `fut`'s output if it is ready at the first poll (a record librdkafka
/// already holds), without waiting for it.
async fn ready<F: std::future::Future>(fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| std::task::Poll::Ready(match fut.as_mut().poll(cx) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }))
    .await
}

/// What the broker answered to commit number `id`.
struct CommitOutcome {
    id: u64,
    result: Result<(), String>,
}

type PollerConsumer = StreamConsumer;

/// One partition as the poller sees it.
struct Partition {
    /// One past the last record delivered (successfully invoked) this run,
    /// or where delivery starts.
    next_offset: i64,
    /// What the broker acknowledged as committed for the group (or, after
    /// a discovery, what it answered it has).
    committed: Option<i64>,
    /// When the broker last acknowledged a commit of this partition.
    committed_acked_at: Option<Instant>,
    /// When the last record of this partition arrived (or it was assigned).
    last_record_at: Instant,
}

/// What one discovery round found (runs on a blocking thread: librdkafka's
/// metadata, OffsetFetch and ListOffsets calls block).
struct Discovery {
    /// Every partition of the source's topics, with its committed offset
    /// (None: the group has none) and high watermark.
    partitions: Vec<(Tp, Option<i64>, i64)>,
}

/// The poller of one MSK event source.
pub struct Poller {
    config: Config,
    source: MskSource,
    settings: PollerSettings,
    consumer: Arc<PollerConsumer>,
    /// Commits run on a blocking thread (librdkafka reports the outcome of
    /// an asynchronous commit only to a C callback rdkafka does not set)
    /// and send their outcome here, so delivery goes on meanwhile.
    commits_tx: mpsc::UnboundedSender<CommitOutcome>,
    commits: mpsc::UnboundedReceiver<CommitOutcome>,
    partitions: BTreeMap<Tp, Partition>,
    /// The one commit the broker has not answered yet: id, when, offsets.
    commit_in_flight: Option<(u64, Instant, BTreeMap<Tp, i64>)>,
    commit_ids: u64,
    /// No commit before this (after a failed one).
    commit_not_before: Instant,
    /// The wait after the next failed commit: doubles from `retry_first_ms`
    /// up to `retry_max_ms`, back to the start after a success.
    commit_retry_ms: u64,
}

fn new_consumer(config: &Config, source: &MskSource, settings: &PollerSettings) -> Result<PollerConsumer, String> {
    let consumer: PollerConsumer = client_config(&config.kafka, &format!("poller-{}", source.function))
        // The group only names where offsets are committed: the poller
        // never subscribes, so it never joins it.
        .set("group.id", &source.consumer_group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Should a position ever fall out of the log's range, start again
        // from the oldest record: redelivery, never a skip.
        .set("auto.offset.reset", "earliest")
        // Bounds a commit: how long it waits for a coordinator, and each request.
        .set("session.timeout.ms", settings.commit_timeout_ms.to_string())
        .set("socket.timeout.ms", settings.commit_timeout_ms.to_string())
        .set("fetch.wait.max.ms", settings.fetch_wait_ms.to_string())
        .set("queued.min.messages", settings.prefetch_records.to_string())
        .set("fetch.queue.backoff.ms", settings.prefetch_backoff_ms.to_string())
        .create()
        .map_err(|e| format!("consumer for {}: {e}", source.function))?;
    Ok(consumer)
}

impl Poller {
    /// Checks the configuration and creates the consumer (no broker needed yet).
    pub fn new(config: &Config, source: MskSource, settings: PollerSettings) -> Result<Self, String> {
        if source.batch_size == 0 {
            return Err(format!("{}: BatchSize must be positive", source.function));
        }
        let consumer = new_consumer(config, &source, &settings)?;
        let (commits_tx, commits) = mpsc::unbounded_channel();
        Ok(Self {
            config: config.clone(),
            source,
            consumer: Arc::new(consumer),
            commits_tx,
            commits,
            partitions: BTreeMap::new(),
            commit_in_flight: None,
            commit_ids: 0,
            commit_not_before: Instant::now(),
            commit_retry_ms: settings.retry_first_ms,
            settings,
        })
    }

    /// Delivers until `stop` turns true (or its sender is dropped).
    pub async fn run(mut self, endpoint: String, client: HttpClient, mut stop: watch::Receiver<bool>) {
        // As an event source mapping: with a window of 0 the batch is what
        // has arrived when the first record is there, invoked at once.
        let window = Duration::from_secs(self.source.batching_window_s);
        let function = self.source.function.clone();
        let mut next_refresh = Instant::now();
        'batches: loop {
            if *stop.borrow() {
                break;
            }
            if Instant::now() >= next_refresh {
                let watching = stop.clone();
                let complete = tokio::select! {
                    done = self.refresh(&watching) => done,
                    _ = stop.changed() => break,
                };
                // Until every topic's partitions are known and assigned,
                // look again soon.
                let every_ms = if complete { self.settings.refresh_ms } else { self.settings.retry_max_ms.min(self.settings.refresh_ms) };
                next_refresh = Instant::now() + Duration::from_millis(every_ms);
            }
            self.commit_if_due();

            // Collect one batch: up to BatchSize records, or what arrived
            // within the batching window after the first one.
            let mut batch: Vec<OwnedMessage> = Vec::with_capacity(self.source.batch_size.min(1_000));
            let consumer = Arc::clone(&self.consumer);
            let wake_at = next_refresh.min(self.next_commit_check());
            let first = tokio::select! {
                m = consumer.recv() => m.map(|m| m.detach()),
                Some(outcome) = self.commits.recv() => { self.committed(outcome); continue; }
                _ = tokio::time::sleep_until(wake_at) => continue,
                _ = stop.changed() => break,
            };
            // Per partition of this batch: the offset the next record should have.
            let mut batch_next: HashMap<Tp, i64> = HashMap::new();
            match first {
                Ok(m) => self.accept(m, &mut batch, &mut batch_next),
                Err(e) => {
                    // librdkafka reconnects by itself; these only report it.
                    tracing::warn!(%function, error = %e, "consumer error");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(self.settings.retry_first_ms)) => {}
                        _ = stop.changed() => break,
                    }
                    continue;
                }
            }
            let deadline = Instant::now() + window;
            while batch.len() < self.source.batch_size {
                let next = if window.is_zero() {
                    match ready(consumer.recv()).await {
                        Some(next) => next,
                        None => break,
                    }
                } else {
                    match tokio::time::timeout_at(deadline, consumer.recv()).await {
                        Ok(next) => next,
                        Err(_) => break,
                    }
                };
                match next {
                    Ok(m) => self.accept(m.detach(), &mut batch, &mut batch_next),
                    Err(e) => tracing::warn!(%function, error = %e, "consumer error"),
                }
            }
            if batch.is_empty() {
                continue;
            }
            let event = msk_event(&batch);
            // The same batch until it succeeds: never skip, never reorder. The
            // only way out without success is shutdown, which leaves the batch
            // uncommitted, so it is delivered again after the restart.
            let mut delay_ms = self.settings.retry_first_ms;
            let invoking = Instant::now();
            loop {
                match client.invoke(&endpoint, &function, &event).await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(%function, records = batch.len(), retry_in_ms = delay_ms, error = %e, "invocation failed; retrying the batch");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
                            _ = stop.changed() => {
                                tracing::info!(%function, records = batch.len(), "stopping; the undelivered batch stays uncommitted");
                                break 'batches;
                            }
                        }
                        delay_ms = (delay_ms * 2).min(self.settings.retry_max_ms);
                    }
                }
            }
            for (tp, next) in batch_next {
                if let Some(p) = self.partitions.get_mut(&tp) {
                    p.next_offset = p.next_offset.max(next);
                }
            }
            // Time spent invoking is not time a partition failed to yield
            // records (the stall check): its clock stood still meanwhile.
            let invoked_for = invoking.elapsed();
            let now = Instant::now();
            for p in self.partitions.values_mut() {
                p.last_record_at = (p.last_record_at + invoked_for).min(now);
            }
            tracing::info!(%function, records = batch.len(), "batch delivered");
            self.commit_if_due();
        }
        self.flush_commits().await;
        // Dropping the consumer closes it; it holds no group membership.
    }

    /// Takes a record into the batch unless this run already delivered it
    /// (a position reset to the log's start replays; the function saw those).
    fn accept(&mut self, m: OwnedMessage, batch: &mut Vec<OwnedMessage>, batch_next: &mut HashMap<Tp, i64>) {
        let tp = (m.topic().to_owned(), m.partition());
        let Some(p) = self.partitions.get_mut(&tp) else {
            tracing::warn!(function = %self.source.function, topic = %tp.0, partition = tp.1, "record of a partition the poller did not assign; ignored");
            return;
        };
        p.last_record_at = Instant::now();
        let expected = batch_next.get(&tp).copied().unwrap_or(p.next_offset);
        if m.offset() < expected {
            tracing::debug!(function = %self.source.function, topic = %tp.0, partition = tp.1, offset = m.offset(), "already delivered; not again");
            return;
        }
        if m.offset() > expected {
            // Nothing can bring those offsets back; compaction or an
            // aborted transaction leaves such gaps legitimately.
            tracing::warn!(function = %self.source.function, topic = %tp.0, partition = tp.1, expected, got = m.offset(), "offset gap in the log");
        }
        batch_next.insert(tp, m.offset() + 1);
        batch.push(m);
    }

    /// Discovers partitions, assigns the new ones at the group's committed
    /// offsets, and recreates the consumer when a partition stalls. Returns
    /// whether every topic's partitions are known and assigned.
    async fn refresh(&mut self, stop: &watch::Receiver<bool>) -> bool {
        let consumer = Arc::clone(&self.consumer);
        let topics = self.source.topics.clone();
        let timeout = Duration::from_millis(self.settings.broker_timeout_ms);
        let stop = stop.clone();
        let asked_at = Instant::now();
        let job = tokio::task::spawn_blocking(move || discover(&consumer, &topics, timeout, &stop));
        let discovery = match job.await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::warn!(function = %self.source.function, error = %e, "partition discovery failed; trying again");
                // While the broker does not answer, records not arriving is
                // no stall of the consumer: the stall clock starts again.
                let now = Instant::now();
                for p in self.partitions.values_mut() {
                    p.last_record_at = now;
                }
                return false;
            }
            Err(e) => {
                tracing::error!(function = %self.source.function, error = %e, "partition discovery panicked");
                return false;
            }
        };
        let now = Instant::now();
        let mut new = TopicPartitionList::new();
        for (tp, committed, high) in &discovery.partitions {
            if let Some(p) = self.partitions.get_mut(tp) {
                let function = &self.source.function;
                p.committed = reconcile_committed(p.committed, p.committed_acked_at, *committed, asked_at, || {
                    tracing::warn!(%function, topic = %tp.0, partition = tp.1, believed = ?p.committed, broker = ?committed, "the broker lost an acknowledged commit; committing again");
                });
                continue;
            }
            let start = match committed {
                Some(c) => *c,
                // No commit yet: where the template says, fixed now, so
                // LATEST means "latest when first seen", as an event
                // source mapping does.
                None if self.source.starting_position == "LATEST" => *high,
                None => 0,
            };
            if new.add_partition_offset(&tp.0, tp.1, Offset::Offset(start)).is_err() {
                continue;
            }
            tracing::info!(function = %self.source.function, topic = %tp.0, partition = tp.1, start, committed = ?committed, "partition assigned");
            self.partitions.insert(tp.clone(), Partition { next_offset: start, committed: *committed, committed_acked_at: None, last_record_at: now });
        }
        if new.count() > 0 {
            if let Err(e) = self.consumer.incremental_assign(&new) {
                tracing::error!(function = %self.source.function, error = %e, "assign failed; recreating the consumer");
                for e in new.elements() {
                    self.partitions.remove(&(e.topic().to_owned(), e.partition()));
                }
                self.recreate();
                return false;
            }
        }
        // The stall check: records beyond our position that never arrive.
        let stall = Duration::from_millis(self.settings.stall_ms);
        let stalled: Vec<&Tp> = discovery
            .partitions
            .iter()
            .filter(|(tp, _, high)| self.partitions.get(tp).is_some_and(|p| *high > p.next_offset && now.duration_since(p.last_record_at) >= stall))
            .map(|(tp, _, _)| tp)
            .collect();
        if !stalled.is_empty() {
            tracing::warn!(function = %self.source.function, ?stalled, stall_ms = self.settings.stall_ms, "records waiting but none received; recreating the consumer");
            self.recreate();
        }
        let known = self.source.topics.iter().all(|t| discovery.partitions.iter().any(|(tp, _, _)| &tp.0 == t));
        known
    }

    /// A new consumer, every partition assigned at the offset the poller
    /// would deliver next. The old consumer is dropped once its last commit
    /// (if any) returns; that commit's outcome is ignored and the offsets
    /// are committed again.
    fn recreate(&mut self) {
        let consumer = match new_consumer(&self.config, &self.source, &self.settings) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(function = %self.source.function, error = %e, "recreating the consumer failed");
                return;
            }
        };
        let mut all = TopicPartitionList::new();
        let now = Instant::now();
        for (tp, p) in self.partitions.iter_mut() {
            let _ = all.add_partition_offset(&tp.0, tp.1, Offset::Offset(p.next_offset));
            p.last_record_at = now;
        }
        if let Err(e) = consumer.assign(&all) {
            tracing::error!(function = %self.source.function, error = %e, "assign on the new consumer failed");
            return;
        }
        self.consumer = Arc::new(consumer);
        self.commit_in_flight = None;
    }

    /// Offsets delivered but not yet acknowledged as committed.
    fn uncommitted(&self) -> BTreeMap<Tp, i64> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.committed.is_none_or(|c| c < p.next_offset))
            .filter(|(_, p)| p.committed.is_some() || p.next_offset > 0)
            .map(|(tp, p)| (tp.clone(), p.next_offset))
            .collect()
    }

    /// When the loop should wake up for the commit bookkeeping.
    fn next_commit_check(&self) -> Instant {
        match &self.commit_in_flight {
            Some((_, sent, _)) => *sent + Duration::from_millis(2 * self.settings.commit_timeout_ms),
            None if !self.uncommitted().is_empty() => self.commit_not_before,
            None => Instant::now() + Duration::from_secs(3_600),
        }
    }

    /// Starts one commit of everything delivered and not yet acknowledged,
    /// unless one is in flight (one at a time, so an older commit never
    /// lands after a newer one), the last one started less than
    /// `commit_interval_ms` ago, or a failed one is backing off.
    fn commit_if_due(&mut self) {
        let now = Instant::now();
        if let Some((_, sent, _)) = &self.commit_in_flight {
            // librdkafka answers every commit within its bounds; this is only
            // the bound on our side of it.
            if now.duration_since(*sent) < Duration::from_millis(2 * self.settings.commit_timeout_ms) {
                return;
            }
            tracing::warn!(function = %self.source.function, "a commit was never answered; committing again");
            self.commit_in_flight = None;
        }
        if now < self.commit_not_before {
            return;
        }
        let offsets = self.uncommitted();
        if offsets.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &offsets {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
        }
        self.commit_ids += 1;
        let id = self.commit_ids;
        let (consumer, tx) = (Arc::clone(&self.consumer), self.commits_tx.clone());
        // Bounded by librdkafka: session.timeout.ms waiting for a
        // coordinator, socket.timeout.ms for the answer (both commit_timeout_ms).
        tokio::task::spawn_blocking(move || {
            let result = consumer.commit(&tpl, CommitMode::Sync).map_err(|e| e.to_string());
            let _ = tx.send(CommitOutcome { id, result });
        });
        self.commit_in_flight = Some((id, now, offsets));
        self.commit_not_before = now + Duration::from_millis(self.settings.commit_interval_ms);
    }

    /// The broker's answer to a commit.
    fn committed(&mut self, outcome: CommitOutcome) {
        // An answer to a commit given up on (or of a replaced consumer).
        if self.commit_in_flight.as_ref().is_none_or(|(id, _, _)| *id != outcome.id) {
            return;
        }
        let Some((_, _, offsets)) = self.commit_in_flight.take() else { return };
        if let Err(error) = &outcome.result {
            // E.g. the broker restarting, or (on brokers that fence commits as
            // Kafka does) another consumer being a member of the group.
            tracing::warn!(function = %self.source.function, %error, retry_in_ms = self.commit_retry_ms, "commit failed; trying again");
            self.commit_not_before = Instant::now() + Duration::from_millis(self.commit_retry_ms);
            self.commit_retry_ms = (self.commit_retry_ms * 2).min(self.settings.retry_max_ms);
            return;
        }
        self.commit_retry_ms = self.settings.retry_first_ms;
        let now = Instant::now();
        for (tp, offset) in offsets {
            if let Some(p) = self.partitions.get_mut(&tp) {
                p.committed = Some(p.committed.map_or(offset, |c| c.max(offset)));
                p.committed_acked_at = Some(now);
            }
        }
        self.commit_if_due();
    }

    /// On shutdown: commit what was delivered, within `shutdown_commit_ms`.
    async fn flush_commits(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(self.settings.shutdown_commit_ms);
        self.commit_not_before = Instant::now();
        loop {
            self.commit_if_due();
            if self.commit_in_flight.is_none() && self.uncommitted().is_empty() {
                return;
            }
            tokio::select! {
                Some(outcome) = self.commits.recv() => self.committed(outcome),
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(function = %self.source.function, uncommitted = ?self.uncommitted(), "stopping before the last commit was acknowledged; those records come again");
                    return;
                }
            }
        }
    }
}

/// What the poller takes as a partition's committed offset after a
/// discovery answered `broker` (asked at `asked_at`), when it believed
/// `believed`, last acknowledged at `acked_at`.
///
/// Forward answers are always taken. A lower (or missing) answer is taken
/// only when every acknowledgement the poller holds came before the
/// question: a broker SIGKILLed right after acknowledging a commit can come
/// back without it, and believing the lost commit would leave the group
/// behind for good (nothing recommits a partition that gets no new records),
/// so a restarted consumer would get those records again. An answer to a
/// question asked before the latest acknowledgement may simply predate that
/// commit and is ignored. `on_lost` runs when the broker's answer wins.
fn reconcile_committed(believed: Option<i64>, acked_at: Option<Instant>, broker: Option<i64>, asked_at: Instant, on_lost: impl FnOnce()) -> Option<i64> {
    match (believed, broker) {
        (Some(b), Some(c)) if c >= b => Some(c),
        (None, c) => c,
        (Some(b), c) => {
            if acked_at.is_some_and(|t| t >= asked_at) {
                Some(b)
            } else {
                on_lost();
                c
            }
        }
    }
}

/// Partitions of `topics`, the group's committed offsets and the high
/// watermarks. Blocking; every request bounded by `timeout`.
fn discover(consumer: &PollerConsumer, topics: &[String], timeout: Duration, stop: &watch::Receiver<bool>) -> Result<Discovery, String> {
    // Checked between requests, so a shutdown does not wait for all of them.
    let stopping = || if *stop.borrow() { Err("stopping".to_owned()) } else { Ok(()) };
    let mut tps: Vec<Tp> = Vec::new();
    for topic in topics {
        stopping()?;
        let metadata = consumer.fetch_metadata(Some(topic), timeout).map_err(|e| format!("metadata of {topic}: {e}"))?;
        for t in metadata.topics() {
            if let Some(error) = t.error() {
                tracing::warn!(topic = %t.name(), ?error, "topic not available");
                continue;
            }
            tps.extend(t.partitions().iter().map(|p| (t.name().to_owned(), p.id())));
        }
    }
    let mut wanted = TopicPartitionList::new();
    for (topic, partition) in &tps {
        wanted.add_partition(topic, *partition);
    }
    let committed = if tps.is_empty() { TopicPartitionList::new() } else { consumer.committed_offsets(wanted, timeout).map_err(|e| format!("committed offsets: {e}"))? };
    let mut partitions = Vec::with_capacity(tps.len());
    for tp in tps {
        stopping()?;
        let offset = match committed.find_partition(&tp.0, tp.1) {
            Some(e) => {
                e.error().map_err(|err| format!("committed offset of {}-{}: {err}", tp.0, tp.1))?;
                match e.offset() {
                    Offset::Offset(n) if n >= 0 => Some(n),
                    _ => None,
                }
            }
            None => None,
        };
        let (_, high) = consumer.fetch_watermarks(&tp.0, tp.1, timeout).map_err(|e| format!("watermarks of {}-{}: {e}", tp.0, tp.1))?;
        partitions.push((tp, offset, high));
    }
    Ok(Discovery { partitions })
}

fn msk_event(batch: &[OwnedMessage]) -> serde_json::Value {
    let headers: Vec<Vec<(&str, &[u8])>> = batch
        .iter()
        .map(|m| m.headers().map(|h| h.iter().map(|h| (h.key, h.value.unwrap_or_default())).collect()).unwrap_or_default())
        .collect();
    let records: Vec<OutRecordForEvent<'_>> = batch
        .iter()
        .zip(&headers)
        .map(|(m, h)| OutRecordForEvent {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
            key: m.key(),
            value: m.payload().unwrap_or_default(),
            headers: h,
        })
        .collect();
    build_event(LOCAL_CLUSTER_ARN, &records)
}

pub async fn tick(schedule: Schedule, every_s: u64, endpoint: String, client: HttpClient, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(Duration::from_secs(every_s.max(1)));
    interval.tick().await;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        let event = serde_json::json!({
            "version": "0", "id": uuid::Uuid::new_v4(), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "000000000000", "time": paystream::store::rfc3339(time::OffsetDateTime::now_utc()),
            "region": "local", "resources": [format!("arn:aws:events:local:000000000000:rule/{}", schedule.function)], "detail": {}
        });
        match client.invoke(&endpoint, &schedule.function, &event).await {
            Ok(answer) => tracing::info!(function = %schedule.function, %answer, "schedule fired"),
            Err(e) => tracing::warn!(function = %schedule.function, error = %e, "scheduled invocation failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_parse_and_refuse_nonsense() {
        assert_eq!(PollerSettings::from_vars(&HashMap::new()).unwrap(), PollerSettings::default());
        let vars: HashMap<String, String> = [("PAYSTREAM_POLLER_STALL_MS", "1500"), ("PAYSTREAM_POLLER_REFRESH_MS", "200"), ("PAYSTREAM_POLLER_PREFETCH_RECORDS", "100000")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let s = PollerSettings::from_vars(&vars).unwrap();
        assert_eq!((s.stall_ms, s.refresh_ms, s.prefetch_records), (1_500, 200, 100_000));
        for bad in ["0", "-1", "soon"] {
            let vars = HashMap::from([("PAYSTREAM_POLLER_RETRY_MAX_MS".to_owned(), bad.to_owned())]);
            assert!(PollerSettings::from_vars(&vars).is_err(), "{bad}");
        }
        let inverted = HashMap::from([("PAYSTREAM_POLLER_RETRY_FIRST_MS".to_owned(), "9000".to_owned())]);
        assert!(PollerSettings::from_vars(&inverted).is_err());
    }

    #[test]
    fn a_lower_committed_answer_wins_only_when_asked_after_every_acknowledgement() {
        let t0 = Instant::now();
        let (before, after) = (t0, t0 + Duration::from_millis(10));
        let lost = std::cell::Cell::new(0);
        let rule = |believed, acked_at, broker, asked_at| reconcile_committed(believed, acked_at, broker, asked_at, || lost.set(lost.get() + 1));
        // Forward answers always win; nothing is lost.
        assert_eq!(rule(Some(5), Some(after), Some(9), before), Some(9));
        assert_eq!(rule(None, None, Some(3), before), Some(3));
        assert_eq!(rule(None, None, None, before), None);
        assert_eq!(lost.get(), 0);
        // Asked before the acknowledgement: the answer may predate the commit.
        assert_eq!(rule(Some(9), Some(after), Some(5), before), Some(9));
        assert_eq!(rule(Some(9), Some(after), None, before), Some(9));
        assert_eq!(lost.get(), 0);
        // Asked after it: the broker lost the commit, and its answer is the truth.
        assert_eq!(rule(Some(9), Some(before), Some(5), after), Some(5));
        assert_eq!(rule(Some(9), Some(before), None, after), None);
        // A belief from an earlier answer, never acknowledged to this poller.
        assert_eq!(rule(Some(9), None, Some(5), before), Some(5));
        assert_eq!(lost.get(), 3);
    }
}
