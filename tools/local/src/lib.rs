//! Local stand-ins for API Gateway, the MSK event source mappings and
//! EventBridge schedules. Both read `template.yaml` (the one source of
//! truth) and call functions through the Lambda Invoke API, so they work
//! with the local Lambda host (`host`, binary `lambda-host`) here and with
//! `sam local start-lambda` where Docker exists.

pub mod client;
pub mod host;
pub mod poller;
pub mod template;

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. Scripts stop background tools
/// with SIGTERM, because a non-interactive shell starts them ignoring SIGINT.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
