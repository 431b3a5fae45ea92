//! Cold start and memory of the real function binaries, each run as Lambda
//! runs it: under the local Lambda host (`paystream_local::host`), which
//! starts the process with the Lambda environment variables and serves its
//! Lambda Runtime API on loopback.
//!
//! - cold start: from `exec` to the function's first `GET .../invocation/next`
//!   (it is then ready for its first event), several runs per function;
//! - memory: peak RSS (`VmHWM`) after the function has handled every sample
//!   event under `events/<function>/` many times, one at a time as Lambda
//!   delivers them, against the local PostgreSQL, Redis and broker.
//!
//! The baseline, measured in the same run, is `hello`: the smallest Rust
//! Lambda function (it echoes its event), built the same way.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use paystream::auth::TokenIssuer;
use paystream::config::Config;
use paystream::domain::Role;
use paystream_local::host::{FunctionOutput, FunctionSpec, Host, HostConfig, InvokeError};

/// How long one event may take (the deadline the function sees).
const EVENT_TIMEOUT_MS: u64 = 30_000;

/// The function under the Lambda host, one process, its output discarded.
async fn host(binary: &Path, function: &str) -> std::sync::Arc<Host> {
    let spec = FunctionSpec {
        name: function.to_owned(),
        binary: binary.to_owned(),
        env: vec![("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), "256".into()), ("LOG_LEVEL".into(), "warn".into())],
        instances: 1,
        concurrency: 1,
        timeout_ms: EVENT_TIMEOUT_MS,
    };
    let config = HostConfig { function_output: FunctionOutput::Null, ..HostConfig::default() };
    Host::start_with(vec![spec], config).await.unwrap_or_else(|e| panic!("{function} failed to start: {e}"))
}

/// Peak resident set size of a live process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One cold start: exec to the first `next`.
async fn cold_start(binary: &Path, function: &str) -> Duration {
    let host = host(binary, function).await;
    let init = host.init_durations(function)[0];
    host.shutdown().await;
    init
}

/// Handles `events` one at a time; returns peak RSS (KiB), responses, errors.
async fn under_load(binary: &Path, function: &str, events: Vec<Bytes>) -> (u64, usize, usize) {
    let host = host(binary, function).await;
    let pid = host.pids(function)[0];
    let (mut responses, mut errors) = (0, 0);
    for event in events {
        match host.invoke(function, event).await {
            Ok(_) => responses += 1,
            Err(InvokeError::Function { .. }) => errors += 1,
            Err(e) => panic!("{function}: {e}"),
        }
    }
    assert_eq!(host.pids(function), vec![pid], "{function} was replaced during the run");
    let peak = peak_rss_kib(pid);
    host.shutdown().await;
    (peak, responses, errors)
}

/// The samples under `events/<function>/`, with real access tokens for the
/// seeded demo users in place of the placeholders.
fn samples(function: &str, tokens: &[(&str, String)]) -> Vec<Bytes> {
    let dir = Path::new("events").join(function);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run from the repository root)", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|file| {
            let mut text = std::fs::read_to_string(file).expect("sample event");
            for (placeholder, token) in tokens {
                text = text.replace(placeholder, token);
            }
            Bytes::from(text)
        })
        .collect()
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

pub async fn run(runs: usize, rounds: usize) {
    assert!(runs > 0 && rounds > 0, "runs and rounds must be positive");
    let config = Config::from_env().expect("configuration");
    let issuer = TokenIssuer::new(&config.auth);
    let token = |user, role| issuer.issue(user, role).expect("token").access_token;
    let tokens = [
        ("REPLACE_WITH_USER_TOKEN", token(paystream::demo::ALICE, Role::User)),
        ("REPLACE_WITH_MERCHANT_TOKEN", token(paystream::demo::MERCHANT_OWNER_ID, Role::Merchant)),
        ("REPLACE_WITH_ADMIN_TOKEN", token(paystream::demo::ADMIN_ID, Role::Admin)),
    ];
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let release = Path::new(&target).join("release");
    let functions = ["account", "pay", "verify", "order", "report", "fds-consumer", "loyalty-consumer", "benefit-consumer", "settle"];

    // The baseline gets every sample of every function: it echoes them.
    let all_samples: Vec<Bytes> = functions.iter().flat_map(|f| samples(f, &tokens)).collect();
    println!("cold start (exec -> ready for the first event, median of {runs}) and peak RSS after each sample event {rounds} times, one at a time");
    println!("{:<18} {:>14} {:>9} {:>12} {:>13} {:>9} {:>12}", "function", "cold start ms", "vs hello", "invocations", "function err", "peak MB", "vs hello");
    let mut rows = Vec::new();
    for function in std::iter::once("hello").chain(functions) {
        let binary = release.join(function);
        assert!(binary.exists(), "{} is missing: cargo build --release --workspace --bins", binary.display());
        let mut starts = Vec::with_capacity(runs);
        for _ in 0..runs {
            starts.push(cold_start(&binary, function).await);
        }
        let events: Vec<Bytes> = if function == "hello" { all_samples.clone() } else { samples(function, &tokens) };
        let events: Vec<Bytes> = (0..rounds).flat_map(|_| events.iter().cloned()).collect();
        let invocations = events.len();
        let (peak_kib, _responses, errors) = under_load(&binary, function, events).await;
        rows.push((function, median(starts), invocations, errors, peak_kib as f64 / 1024.0));
    }
    let (_, hello_start, _, _, hello_mb) = rows[0];
    for (function, start, invocations, errors, mb) in &rows {
        println!(
            "{:<18} {:>14.2} {:>8.2}x {:>12} {:>13} {:>9.1} {:>11.2}x",
            function,
            start.as_secs_f64() * 1e3,
            start.as_secs_f64() / hello_start.as_secs_f64(),
            invocations,
            errors,
            mb,
            mb / hello_mb
        );
    }
}
