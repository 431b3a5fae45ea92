//! JSON-lines logging. Every line carries the span fields it was written in;
//! the Lambda runtime opens a span with `requestId` per invocation and
//! [`crate::http::respond`] adds `request_id`, method and route, so each line
//! can be traced back to one request. Nothing secret is ever a field: PANs,
//! tokens and passwords are typed so that they cannot be formatted.

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The subscriber every function uses, writing to `writer`.
pub fn json_subscriber<W>(filter: &str, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_current_span(false)
        .with_span_list(true)
        .flatten_event(true)
        .with_target(true)
        // Lambda adds its own timestamp to CloudWatch lines, but local runs
        // and tests need one too.
        .with_writer(writer)
        .finish()
}

/// Installs the JSON subscriber on stdout for the whole process. Safe to call
/// twice (the second call is ignored), so tests and tools can share code paths.
pub fn init(filter: &str) {
    let _ = tracing::subscriber::set_global_default(json_subscriber(filter, std::io::stdout));
}
