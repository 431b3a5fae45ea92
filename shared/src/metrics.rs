//! Business metrics as CloudWatch Embedded Metric Format lines on stdout:
//! on Lambda they become metrics with no API call; locally they are JSON log
//! lines like any other.

use std::io::Write;

pub const NAMESPACE: &str = "paystream";

#[derive(Clone, Copy, Debug)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// Emits one EMF line with the given metrics, dimensioned by function.
pub fn emit(function: &str, metrics: &[(&str, f64, Unit)]) {
    if metrics.is_empty() {
        return;
    }
    let line = emf_line(function, metrics, time::OffsetDateTime::now_utc());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

fn emf_line(function: &str, metrics: &[(&str, f64, Unit)], now: time::OffsetDateTime) -> serde_json::Value {
    let definitions: Vec<_> = metrics.iter().map(|(name, _, unit)| serde_json::json!({"Name": name, "Unit": unit.as_str()})).collect();
    let mut line = serde_json::json!({
        "_aws": {
            "Timestamp": now.unix_timestamp() * 1000,
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [["function"]], "Metrics": definitions}]
        },
        "function": function,
    });
    for (name, value, _) in metrics {
        line[*name] = serde_json::json!(value);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_the_embedded_metric_format() {
        let line = emf_line("pay", &[("PaymentsAccepted", 3.0, Unit::Count)], time::macros::datetime!(2026-11-22 00:00 UTC));
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"], "PaymentsAccepted");
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0][0], "function");
        assert_eq!(line["PaymentsAccepted"], 3.0);
        assert_eq!(line["function"], "pay");
    }
}
