//! Business counters and latencies as CloudWatch Embedded Metric Format
//! lines on stdout: on Lambda they become metrics with no API call; locally
//! they are JSON log lines like any other.
//!
//! Values go through the `metrics` facade to the `metrics_cloudwatch_embedded`
//! recorder, installed once per execution environment by
//! [`crate::Platform::bootstrap`] with one dimension, `function` (nothing
//! per request or per id, so the metric count stays fixed). The runners
//! ([`crate::http::run`], [`crate::msk::run`]) call [`invocation_started`]
//! and [`flush`] around every invocation, so each invocation's values are
//! written before its answer, while the environment is still running.
//! Without an installed recorder (tests and tools calling handlers in
//! process) every call here does nothing.

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use metrics_cloudwatch_embedded::Collector;

pub const NAMESPACE: &str = "paystream";

/// The EMF dimension every metric carries.
pub const DIMENSION: &str = "function";

/// An EMF document holds at most 100 values per metric, and the recorder
/// keeps at most that many unflushed latencies per metric (it drops the
/// rest). A consumer batch (up to 1,000 records) records one latency per
/// event, so after this many values the recorder is flushed mid-invocation.
pub const MAX_VALUES_PER_FLUSH: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }

    fn to_metrics(self) -> metrics::Unit {
        match self {
            Unit::Count => metrics::Unit::Count,
            Unit::Milliseconds => metrics::Unit::Milliseconds,
        }
    }
}

/// One metric the platform emits.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
    /// What one value means (the README's metrics table).
    pub meaning: &'static str,
}

pub const COLD_START: &str = "ColdStart";
pub const INIT_DURATION: &str = "InitDuration";
pub const BATCH_DURATION: &str = "BatchDuration";
pub const INTAKE_LATENCY: &str = "IntakeLatency";
pub const FDS_DECISION_LATENCY: &str = "FdsDecisionLatency";
pub const SETTLEMENT_LAG: &str = "SettlementLag";
pub const EVENT_LAG: &str = "EventLag";
pub const SMS_SENT: &str = "SmsSent";

/// Every metric, with its unit: described to the recorder at install (so
/// each line names its unit) and listed in the README.
pub const ALL: &[Metric] = &[
    Metric { name: COLD_START, unit: Unit::Count, meaning: "1 on the first invocation of an execution environment" },
    Metric { name: INIT_DURATION, unit: Unit::Milliseconds, meaning: "bootstrap start to ready for the first event (with ColdStart)" },
    Metric { name: BATCH_DURATION, unit: Unit::Milliseconds, meaning: "one MSK batch handled, success or failure (every consumer)" },
    Metric { name: INTAKE_LATENCY, unit: Unit::Milliseconds, meaning: "pay: request start to its 202 (broker acknowledged, row committed)" },
    Metric { name: "PaymentsAccepted", unit: Unit::Count, meaning: "payments answered 202 (replays not counted)" },
    Metric { name: FDS_DECISION_LATENCY, unit: Unit::Milliseconds, meaning: "payment event occurred_at to the FDS decision's commit, per payment" },
    Metric { name: "FdsCompleted", unit: Unit::Count, meaning: "FDS decisions COMPLETED" },
    Metric { name: "FdsPending", unit: Unit::Count, meaning: "FDS decisions PENDING (impossible travel, holder asked)" },
    Metric { name: "FdsDenied", unit: Unit::Count, meaning: "FDS decisions DENIED (holder locked)" },
    Metric { name: "VerificationSmsQueued", unit: Unit::Count, meaning: "verification SMS queued (within the holder's rate limit)" },
    Metric { name: SMS_SENT, unit: Unit::Count, meaning: "SMS delivered (SNS accepted it; outbox mode: marked delivered)" },
    Metric { name: "VerificationsExpired", unit: Unit::Count, meaning: "pending payments denied because nobody answered in time" },
    Metric { name: EVENT_LAG, unit: Unit::Milliseconds, meaning: "payment event occurred_at to the loyalty or benefit consumer's commit, per payment" },
    Metric { name: "VisitsCounted", unit: Unit::Count, meaning: "loyalty visits counted" },
    Metric { name: "VipsMade", unit: Unit::Count, meaning: "holders who became VIP" },
    Metric { name: "TipsSent", unit: Unit::Count, meaning: "benefit tips sent" },
    Metric { name: "OrdersAccepted", unit: Unit::Count, meaning: "flash-sale orders accepted at the gate" },
    Metric { name: "OrdersSoldOut", unit: Unit::Count, meaning: "flash-sale orders refused: sold out" },
    Metric { name: SETTLEMENT_LAG, unit: Unit::Milliseconds, meaning: "order ordered_at to its settlement's commit, per settled order" },
    Metric { name: "Settlements", unit: Unit::Count, meaning: "orders settled (SUCCESS, one settlement each)" },
    Metric { name: "OrdersFailed", unit: Unit::Count, meaning: "orders FAILED at settlement (no stock left)" },
];

struct Installed {
    collector: &'static Collector,
    /// Bootstrap start, for the cold start's init duration.
    init_started: Instant,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();
/// Set by the runners once the function is ready for its first event.
static INIT_DURATION_MS: OnceLock<f64> = OnceLock::new();
/// Latencies recorded since the last flush (see [`MAX_VALUES_PER_FLUSH`]);
/// the lock also keeps two flushes from interleaving.
static UNFLUSHED_VALUES: Mutex<usize> = Mutex::new(0);
static COLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Installs the EMF recorder for this process, dimensioned by `function`.
/// Once per process: a second call (tests bootstrapping twice) is ignored.
pub fn install(function: &'static str, init_started: Instant) {
    if INSTALLED.get().is_some() {
        return;
    }
    let collector = match metrics_cloudwatch_embedded::Builder::new().cloudwatch_namespace(NAMESPACE).with_dimension(DIMENSION, function).init() {
        Ok(collector) => collector,
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed; no metrics from this process");
            return;
        }
    };
    for m in ALL {
        describe(m.name, m.unit);
    }
    let _ = INSTALLED.set(Installed { collector, init_started });
}

fn describe(name: &'static str, unit: Unit) {
    match unit {
        Unit::Count => metrics::describe_counter!(name, unit.to_metrics(), ""),
        Unit::Milliseconds => metrics::describe_histogram!(name, unit.to_metrics(), ""),
    }
}

/// The runners call this just before handing control to the Lambda
/// runtime: the end of init, as Lambda's own Init Duration counts it.
pub fn runtime_ready() {
    if let Some(installed) = INSTALLED.get() {
        let _ = INIT_DURATION_MS.set(elapsed_ms(installed.init_started));
    }
}

/// The start of an invocation: the first one of the environment records
/// the cold start; every one names its request id on the lines it flushes
/// (a property, not a dimension: it creates no metric). With several
/// invocations at once (Lambda Managed Instances) a line carries the values
/// of all of them since the last flush and names the latest request id.
pub fn invocation_started(request_id: &str) {
    let Some(installed) = INSTALLED.get() else { return };
    installed.collector.set_property("request_id", request_id);
    if COLD.swap(false, std::sync::atomic::Ordering::Relaxed) {
        count(COLD_START, 1);
        if let Some(ms) = INIT_DURATION_MS.get() {
            latency_ms(INIT_DURATION, *ms);
        }
    }
}

/// Adds `n` to a counter.
pub fn count(name: &'static str, n: u64) {
    metrics::counter!(name).increment(n);
}

/// Records one latency in milliseconds.
pub fn latency_ms(name: &'static str, ms: f64) {
    latencies_ms(name, [ms]);
}

/// Records latencies of one metric in milliseconds (a consumer's one per
/// event of its batch). The histogram is looked up once per call, not per
/// value: each lookup locks the recorder's registry, copies the labels and
/// allocates a handle, which a 1,000-event batch did 1,000 times.
pub fn latencies_ms(name: &'static str, values_ms: impl IntoIterator<Item = f64>) {
    let Some(installed) = INSTALLED.get() else { return };
    // A handle stays valid across flushes: a flush drains its values.
    let histogram = metrics::histogram!(name);
    let mut unflushed = UNFLUSHED_VALUES.lock().unwrap_or_else(|e| e.into_inner());
    for ms in values_ms {
        if *unflushed >= MAX_VALUES_PER_FLUSH {
            write(installed.collector);
            *unflushed = 0;
        }
        histogram.record(ms.max(0.0));
        *unflushed += 1;
    }
}

/// Milliseconds since `start`.
pub fn elapsed_ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// Milliseconds from `from` to `to` on the wall clock (0 when the clocks
/// of the writer of `from` and of this process disagree the other way).
pub fn lag_ms(from: time::OffsetDateTime, to: time::OffsetDateTime) -> f64 {
    ((to - from).as_seconds_f64() * 1000.0).max(0.0)
}

/// Records several metrics at once (counters and latencies).
/// `function` is the installed dimension; it is kept so call sites read as
/// before the recorder existed.
pub fn emit(function: &str, metrics: &[(&'static str, f64, Unit)]) {
    let _ = function;
    for &(name, value, unit) in metrics {
        match unit {
            Unit::Count => count(name, value.max(0.0) as u64),
            Unit::Milliseconds => latency_ms(name, value),
        }
    }
}

/// Writes every value recorded since the last flush as EMF lines (one per
/// call of the runners, at the end of each invocation).
pub fn flush() {
    let Some(installed) = INSTALLED.get() else { return };
    let mut unflushed = UNFLUSHED_VALUES.lock().unwrap_or_else(|e| e.into_inner());
    write(installed.collector);
    *unflushed = 0;
}

/// Serialises into memory first and writes the lines with one call on the
/// locked stdout, so a log line written by another thread never lands in
/// the middle of a metrics line.
fn write(collector: &Collector) {
    use std::io::Write;
    let mut lines = Vec::with_capacity(1024);
    if let Err(e) = collector.flush(&mut lines) {
        tracing::warn!(error = %e, "metrics not serialised");
        return;
    }
    if !lines.is_empty() {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&lines).and_then(|()| out.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_metric_is_in_the_readme() {
        let readme = include_str!("../../README.md");
        let mut names: Vec<_> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a metric name appears twice");
        for m in ALL {
            let row = format!("| `{}` | {} |", m.name, m.unit.as_str());
            assert!(readme.contains(&row), "README's metrics table lacks {row}");
        }
    }

    #[test]
    fn lag_never_goes_negative() {
        let t = time::macros::datetime!(2026-11-22 00:00 UTC);
        assert_eq!(lag_ms(t, t + time::Duration::milliseconds(250)), 250.0);
        assert_eq!(lag_ms(t + time::Duration::seconds(1), t), 0.0);
    }
}
