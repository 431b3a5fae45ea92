//! Cold start and memory of the real function binaries, each run as Lambda
//! runs it: the process is started with the Lambda environment variables and
//! talks to a Lambda Runtime API served here on loopback.
//!
//! - cold start: from `exec` to the function's first `GET .../invocation/next`
//!   (it is then ready for its first event), several runs per function;
//! - memory: peak RSS (`VmHWM`) after the function has handled every sample
//!   event under `events/<function>/` many times, one at a time as Lambda
//!   delivers them, against the local PostgreSQL, Redis and broker.
//!
//! The baseline, measured in the same run, is `hello`: the smallest Rust
//! Lambda function (it echoes its event), built the same way.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use paystream::auth::TokenIssuer;
use paystream::config::Config;
use paystream::domain::Role;

/// How long a function may take to become ready or to answer all its events.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// What one run of a function saw.
#[derive(Default)]
struct RuntimeApi {
    ready_at: Option<Instant>,
    events: VecDeque<(String, Bytes)>,
    responses: usize,
    errors: usize,
    init_error: Option<String>,
}

type Shared = Arc<Mutex<RuntimeApi>>;

/// Serves the Runtime API (`/2018-06-01/runtime/...`) for one function
/// process. When no event is left, `next` never answers, as on Lambda.
/// Returns the address and the server task (abort it when the run ends).
async fn serve_runtime_api(state: Shared) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let address = listener.local_addr().expect("local address").to_string();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| answer(Arc::clone(&state), req));
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (address, server)
}

async fn answer(state: Shared, req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let ok = |status: u16, body: Bytes| Ok(Response::builder().status(status).body(Full::new(body)).expect("response"));
    if path.ends_with("/invocation/next") {
        let next = {
            let mut api = state.lock().expect("runtime state");
            api.ready_at.get_or_insert_with(Instant::now);
            api.events.pop_front()
        };
        let Some((request_id, body)) = next else {
            std::future::pending::<()>().await;
            unreachable!("pending never completes");
        };
        let deadline_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000 + 30_000).to_string();
        let response = Response::builder()
            .status(200)
            .header("lambda-runtime-aws-request-id", request_id)
            .header("lambda-runtime-deadline-ms", deadline_ms)
            .header("lambda-runtime-invoked-function-arn", "arn:aws:lambda:us-east-1:000000000000:function:bench")
            .header("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000;Sampled=0")
            .body(Full::new(body))
            .expect("event response");
        return Ok(response);
    }
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut api = state.lock().expect("runtime state");
    if path.ends_with("/init/error") {
        api.init_error = Some(String::from_utf8_lossy(&body).into_owned());
    } else if path.ends_with("/response") {
        api.responses += 1;
    } else if path.ends_with("/error") {
        api.errors += 1;
    }
    ok(202, Bytes::from_static(b"{}"))
}

/// Starts `binary` as Lambda would and returns the process and when it was started.
fn start(binary: &Path, function: &str, runtime_api: &str) -> (tokio::process::Child, Instant) {
    let started = Instant::now();
    let child = tokio::process::Command::new(binary)
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{function}"))
        .env("LOG_LEVEL", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
    (child, started)
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
    let state: Shared = Arc::default();
    let (address, server) = serve_runtime_api(Arc::clone(&state)).await;
    let (mut child, started) = start(binary, function, &address);
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(ready) = state.lock().expect("runtime state").ready_at {
            let _ = child.kill().await;
            server.abort();
            return ready - started;
        }
        assert!(Instant::now() < deadline, "{function} was not ready within {READY_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// Handles `events` one at a time; returns peak RSS (KiB), responses, errors.
async fn under_load(binary: &Path, function: &str, events: Vec<Bytes>) -> (u64, usize, usize) {
    let total = events.len();
    let state: Shared = Arc::default();
    state.lock().expect("runtime state").events = events.into_iter().enumerate().map(|(i, e)| (format!("bench-{i}"), e)).collect();
    let (address, server) = serve_runtime_api(Arc::clone(&state)).await;
    let (mut child, _) = start(binary, function, &address);
    let deadline = Instant::now() + LOAD_TIMEOUT;
    loop {
        let (done, init_error) = {
            let api = state.lock().expect("runtime state");
            (api.responses + api.errors, api.init_error.clone())
        };
        assert!(init_error.is_none(), "{function} failed to start: {init_error:?}");
        if done == total {
            break;
        }
        assert!(Instant::now() < deadline, "{function} answered {done} of {total} events within {LOAD_TIMEOUT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let peak = child.id().map(peak_rss_kib).unwrap_or(0);
    let _ = child.kill().await;
    server.abort();
    let api = state.lock().expect("runtime state");
    (peak, api.responses, api.errors)
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
