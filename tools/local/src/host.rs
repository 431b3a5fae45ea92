//! The local Lambda host: runs each function's binary as Lambda does (its
//! own Lambda Runtime API on loopback, the Lambda environment variables),
//! serves the Lambda Invoke API that the gateway and the poller call, and
//! supervises the processes the way Lambda replaces execution environments:
//!
//! - a process that exits (SIGKILL, abort, out of memory) while handling an
//!   invocation fails that invocation at once (`Runtime.ExitError`), and is
//!   replaced; the next invocation goes to a live process;
//! - an invocation that outlives the function's timeout fails
//!   (`Sandbox.Timedout`) and its process is killed and replaced;
//! - a process that exits or stalls before asking for its first event (an
//!   init error) is reported, to `start` and to queued invocations, instead
//!   of being waited on;
//! - replacements are rate-limited (backoff for processes that die before
//!   becoming ready, a restart budget per minute), and logged.
//!
//! `cargo lambda watch` did none of this: a killed function stayed dead and
//! every later call hung until the caller's own timeout.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

/// Lambda's limit on a synchronous request and response payload.
const PAYLOAD_MAX_BYTES: usize = 6 * 1024 * 1024;
/// A process that ran at least this long before dying is replaced without
/// backoff (as Lambda replaces a crashed environment at the next invoke);
/// one that dies sooner backs off, so a crash loop cannot spin.
const HEALTHY_RUN: Duration = Duration::from_secs(10);
/// The window of `HostConfig::restarts_per_minute`.
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// One function to host.
#[derive(Clone, Debug)]
pub struct FunctionSpec {
    /// The name the Invoke API knows it by.
    pub name: String,
    pub binary: PathBuf,
    /// Set in the process's environment on top of the host's own and the
    /// Lambda variables (so it may override `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`).
    pub env: Vec<(String, String)>,
    /// Processes (execution environments) kept for the function.
    pub instances: usize,
    /// Invocations one process handles at once: 1 as classic Lambda; more
    /// as Lambda Managed Instances, given to the process as
    /// `AWS_LAMBDA_MAX_CONCURRENCY` (the runtime's `run_concurrent` then
    /// asks for that many events at once). The function handles
    /// `instances * concurrency` invocations at once.
    pub concurrency: usize,
    /// The function's timeout (the template's `Timeout`).
    pub timeout_ms: u64,
}

/// Why an invocation did not return the function's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvokeError {
    /// The function reported an error (`/invocation/{id}/error`).
    Function { error_type: String, message: String },
    /// The process died while handling the invocation, or could not start.
    Crashed(String),
    /// The invocation outlived the function's timeout, or waited longer
    /// than the queue bound for a free instance.
    TimedOut,
    NoSuchFunction(String),
}

impl std::fmt::Display for InvokeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Function { error_type, message } => write!(f, "function error {error_type}: {message}"),
            Self::Crashed(why) => write!(f, "crashed: {why}"),
            Self::TimedOut => f.write_str("timed out"),
            Self::NoSuchFunction(name) => write!(f, "no such function: {name}"),
        }
    }
}

impl std::error::Error for InvokeError {}

/// Where the functions' stdout and stderr go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FunctionOutput {
    /// The host's own (its log then holds the functions' logs, as under
    /// `cargo lambda watch`).
    #[default]
    Inherit,
    /// Discarded (the benchmarks).
    Null,
}

/// The host's bounds.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// How long a new process may take to ask for its first event before it
    /// counts as an init failure and is killed (Lambda's init limit is 10 s).
    pub init_timeout_ms: u64,
    /// How long an invocation may wait for a free instance; `None`: the
    /// function's own timeout.
    pub queue_wait_ms: Option<u64>,
    /// Replacements of one instance within a minute before it waits for the
    /// window to move on.
    pub restarts_per_minute: usize,
    /// Backoff between replacements of a process that died before running
    /// healthily: the first, doubling up to the max.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// SIGTERM to SIGKILL at shutdown.
    pub shutdown_grace_ms: u64,
    pub function_output: FunctionOutput,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            init_timeout_ms: 10_000,
            queue_wait_ms: None,
            restarts_per_minute: 30,
            backoff_initial_ms: 100,
            backoff_max_ms: 5_000,
            shutdown_grace_ms: 2_000,
            function_output: FunctionOutput::Inherit,
        }
    }
}

impl HostConfig {
    /// The defaults, overridden by `PAYSTREAM_LAMBDA_INIT_TIMEOUT_MS`,
    /// `PAYSTREAM_LAMBDA_QUEUE_WAIT_MS`, `PAYSTREAM_LAMBDA_RESTARTS_PER_MINUTE`,
    /// `PAYSTREAM_LAMBDA_BACKOFF_MAX_MS`, `PAYSTREAM_LAMBDA_SHUTDOWN_GRACE_MS`.
    pub fn from_env() -> Result<Self, String> {
        fn number(name: &str) -> Result<Option<u64>, String> {
            match std::env::var(name) {
                Err(_) => Ok(None),
                Ok(v) => v.trim().parse().map(Some).map_err(|_| format!("{name} must be a whole number, not {v:?}")),
            }
        }
        let mut config = Self::default();
        if let Some(v) = number("PAYSTREAM_LAMBDA_INIT_TIMEOUT_MS")? {
            config.init_timeout_ms = v;
        }
        config.queue_wait_ms = number("PAYSTREAM_LAMBDA_QUEUE_WAIT_MS")?;
        if let Some(v) = number("PAYSTREAM_LAMBDA_RESTARTS_PER_MINUTE")? {
            config.restarts_per_minute = v as usize;
        }
        if let Some(v) = number("PAYSTREAM_LAMBDA_BACKOFF_MAX_MS")? {
            config.backoff_max_ms = v;
        }
        if let Some(v) = number("PAYSTREAM_LAMBDA_SHUTDOWN_GRACE_MS")? {
            config.shutdown_grace_ms = v;
        }
        if config.restarts_per_minute == 0 || config.init_timeout_ms == 0 {
            return Err("PAYSTREAM_LAMBDA_RESTARTS_PER_MINUTE and PAYSTREAM_LAMBDA_INIT_TIMEOUT_MS must be positive".into());
        }
        Ok(config)
    }
}

type Reply = oneshot::Sender<Result<Bytes, InvokeError>>;

/// An invocation waiting for a free instance.
struct Pending {
    request_id: String,
    payload: Bytes,
    reply: Reply,
}

/// An invocation an instance is handling.
struct InFlight {
    request_id: String,
    reply: Reply,
    /// Fails the invocation when it outlives the timeout; stopped when it ends.
    watchdog: AbortHandle,
}

impl InFlight {
    fn finish(self, outcome: Result<Bytes, InvokeError>) {
        self.watchdog.abort();
        let _ = self.reply.send(outcome);
    }
}

#[derive(Default)]
enum Phase {
    /// No process (not yet started, exited, or waiting to be replaced).
    #[default]
    Down,
    /// Started, has not asked for its first event yet.
    Starting,
    /// Ready, nothing in flight.
    Idle,
    /// Handling these invocations (at most the spec's `concurrency`).
    Busy(Vec<InFlight>),
    /// Being killed (timed out, init error): takes no more events.
    Stopping,
}

#[derive(Default)]
struct SlotState {
    /// Counts the processes this slot has run; a Runtime API request from an
    /// earlier one is ignored.
    incarnation: u64,
    pid: Option<u32>,
    phase: Phase,
    spawned_at: Option<Instant>,
    /// Exec to the first `/invocation/next` of the current process.
    init_duration: Option<Duration>,
    ever_ready: bool,
    /// Why the last process failed before becoming ready; cleared once one is.
    init_failure: Option<String>,
    /// What the current process posted to `/init/error`.
    init_error: Option<String>,
    /// Asks the supervisor to kill the current process.
    kill: Arc<Notify>,
}

/// One execution environment: a process at a time, replaced when it dies.
struct Slot {
    state: Mutex<SlotState>,
}

struct Function {
    spec: FunctionSpec,
    config: Arc<HostConfig>,
    queue: Mutex<VecDeque<Pending>>,
    /// Wakes the instances waiting in `/invocation/next`.
    queued: Notify,
    slots: Vec<Slot>,
    /// Any slot of any function changed phase (`Host::start` waits on it).
    changed: Arc<Notify>,
}

/// Hosts the functions; see the module documentation.
pub struct Host {
    functions: HashMap<String, Arc<Function>>,
    config: Arc<HostConfig>,
    stop: watch::Sender<bool>,
    supervisors: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the host down with it.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Host {
    /// Starts every function with the default bounds; see `start_with`.
    pub async fn start(specs: Vec<FunctionSpec>) -> Result<Arc<Host>, String> {
        Self::start_with(specs, HostConfig::default()).await
    }

    /// Spawns `instances` processes per function and waits (at most the
    /// init timeout) until each has asked for its first event. An error if
    /// any process could not start, exited or stalled first; nothing is
    /// left running then.
    pub async fn start_with(specs: Vec<FunctionSpec>, config: HostConfig) -> Result<Arc<Host>, String> {
        let config = Arc::new(config);
        let changed = Arc::new(Notify::new());
        let mut functions = HashMap::new();
        for spec in specs {
            if spec.instances == 0 || spec.concurrency == 0 || spec.timeout_ms == 0 {
                return Err(format!("{}: instances, concurrency and timeout_ms must be positive", spec.name));
            }
            let slots = (0..spec.instances).map(|_| Slot { state: Mutex::default() }).collect();
            let name = spec.name.clone();
            let function = Function { spec, config: Arc::clone(&config), queue: Mutex::default(), queued: Notify::new(), slots, changed: Arc::clone(&changed) };
            if functions.insert(name.clone(), Arc::new(function)).is_some() {
                return Err(format!("function {name} is listed twice"));
            }
        }
        let (stop, _) = watch::channel(false);
        let host = Arc::new(Host { functions, config: Arc::clone(&config), stop, supervisors: Mutex::default() });
        {
            let mut supervisors = lock(&host.supervisors);
            for function in host.functions.values() {
                for index in 0..function.slots.len() {
                    supervisors.push(tokio::spawn(supervise(Arc::clone(function), index, host.stop.subscribe())));
                }
            }
        }
        // The supervisor kills a process that stalls past the init timeout,
        // so this bound is only a backstop.
        let deadline = Instant::now() + Duration::from_millis(config.init_timeout_ms) + Duration::from_secs(5);
        loop {
            let notified = changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match host.startup_state() {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    host.shutdown().await;
                    return Err(e);
                }
            }
            if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
                host.shutdown().await;
                return Err(format!("the functions were not ready within {} ms", config.init_timeout_ms));
            }
        }
        tracing::info!(functions = host.functions.len(), processes = host.functions.values().map(|f| f.slots.len()).sum::<usize>(), "every function is ready");
        Ok(host)
    }

    /// Ok(true) once every slot has been ready; an error once one failed first.
    fn startup_state(&self) -> Result<bool, String> {
        let mut all_ready = true;
        for function in self.functions.values() {
            for slot in &function.slots {
                let state = lock(&slot.state);
                if state.ever_ready {
                    continue;
                }
                if let Some(why) = &state.init_failure {
                    return Err(why.clone());
                }
                all_ready = false;
            }
        }
        Ok(all_ready)
    }

    /// Runs one invocation on a free instance of `function` (waiting, within
    /// the queue bound, for one to be free) and returns its answer.
    pub async fn invoke(&self, function: &str, payload: Bytes) -> Result<Bytes, InvokeError> {
        let f = self.functions.get(function).ok_or_else(|| InvokeError::NoSuchFunction(function.to_owned()))?;
        if *self.stop.borrow() {
            return Err(InvokeError::Crashed("the Lambda host is shutting down".into()));
        }
        if let Some(why) = f.unavailable() {
            return Err(InvokeError::Crashed(why));
        }
        let (reply, mut answer) = oneshot::channel();
        let request_id = uuid::Uuid::new_v4().to_string();
        lock(&f.queue).push_back(Pending { request_id: request_id.clone(), payload, reply });
        f.queued.notify_waiters();
        let queue_wait = Duration::from_millis(self.config.queue_wait_ms.unwrap_or(f.spec.timeout_ms));
        tokio::select! {
            outcome = &mut answer => return outcome.unwrap_or_else(|_| Err(dropped())),
            _ = tokio::time::sleep(queue_wait) => {}
        }
        let still_queued = {
            let mut queue = lock(&f.queue);
            let position = queue.iter().position(|p| p.request_id == request_id);
            position.and_then(|i| queue.remove(i)).is_some()
        };
        if still_queued {
            tracing::warn!(function, request_id, queue_wait_ms = queue_wait.as_millis() as u64, "no instance was free within the queue bound");
            return Err(InvokeError::TimedOut);
        }
        // An instance has it: its timeout, its exit or the shutdown answers.
        answer.await.unwrap_or_else(|_| Err(dropped()))
    }

    /// Serves the Lambda Invoke API (`POST /2015-03-31/functions/{name}/invocations`)
    /// on `listener` until `shutdown`. Answers as Lambda does: the function's
    /// answer with 200; a function error (also a crash or a timeout) with 200,
    /// `X-Amz-Function-Error: Unhandled` and `{errorType, errorMessage}`; an
    /// unknown function with 404 `ResourceNotFoundException`.
    pub async fn serve_invoke_api(self: Arc<Self>, listener: tokio::net::TcpListener) {
        let mut stop = self.stop.subscribe();
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            // Out of file descriptors and the like: do not spin.
                            tracing::warn!(error = %e, "invoke API accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let host = Arc::clone(&self);
                    connections.spawn(async move {
                        let service = service_fn(move |req| {
                            let host = Arc::clone(&host);
                            async move { Ok::<_, Infallible>(host.answer_invoke(req).await) }
                        });
                        let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                    });
                    // Reap finished connections so the set stays small.
                    while connections.try_join_next().is_some() {}
                }
                _ = stopped(&mut stop) => return,
            }
        }
    }

    async fn answer_invoke(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let name = path
            .strip_prefix("/2015-03-31/functions/")
            .and_then(|rest| rest.strip_suffix("/invocations"))
            .filter(|_| req.method() == Method::POST)
            .map(function_name);
        let Some(name) = name else {
            return json_response(404, &serde_json::json!({"Type": "User", "message": format!("unknown operation {} {path}", req.method())}), &[("x-amzn-errortype", "UnknownOperationException")]);
        };
        let invocation_type = req.headers().get("x-amz-invocation-type").and_then(|v| v.to_str().ok()).unwrap_or("RequestResponse").to_owned();
        let payload = match Limited::new(req.into_body(), PAYLOAD_MAX_BYTES).collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                let body = serde_json::json!({"Type": "User", "message": format!("request payload larger than {PAYLOAD_MAX_BYTES} bytes")});
                return json_response(413, &body, &[("x-amzn-errortype", "RequestTooLargeException")]);
            }
        };
        if !self.functions.contains_key(&name) {
            let body = serde_json::json!({"Type": "User", "message": format!("Function not found: {name}")});
            return json_response(404, &body, &[("x-amzn-errortype", "ResourceNotFoundException")]);
        }
        match invocation_type.as_str() {
            "DryRun" => return plain_response(204, Bytes::new(), &[]),
            "Event" => {
                let host = Arc::clone(&self);
                tokio::spawn(async move {
                    if let Err(e) = host.invoke(&name, payload).await {
                        tracing::warn!(function = %name, error = %e, "asynchronous invocation failed");
                    }
                });
                return plain_response(202, Bytes::new(), &[]);
            }
            _ => {}
        }
        let timeout_ms = self.functions[&name].spec.timeout_ms;
        match self.invoke(&name, payload).await {
            Ok(answer) => plain_response(200, answer, &[("content-type", "application/json"), ("x-amz-executed-version", "$LATEST")]),
            Err(e) => {
                let (error_type, message) = match e {
                    InvokeError::Function { error_type, message } => (error_type, message),
                    InvokeError::Crashed(why) => ("Runtime.ExitError".to_owned(), why),
                    InvokeError::TimedOut => ("Sandbox.Timedout".to_owned(), format!("Task timed out after {:.2} seconds", timeout_ms as f64 / 1e3)),
                    InvokeError::NoSuchFunction(name) => {
                        let body = serde_json::json!({"Type": "User", "message": format!("Function not found: {name}")});
                        return json_response(404, &body, &[("x-amzn-errortype", "ResourceNotFoundException")]);
                    }
                };
                tracing::warn!(function = %name, error_type, error = %message, "invocation failed");
                let body = serde_json::json!({"errorType": error_type, "errorMessage": message});
                json_response(200, &body, &[("x-amz-function-error", "Unhandled"), ("x-amz-executed-version", "$LATEST")])
            }
        }
    }

    /// Process ids of the function's live processes.
    pub fn pids(&self, function: &str) -> Vec<u32> {
        let Some(f) = self.functions.get(function) else { return Vec::new() };
        f.slots.iter().filter_map(|slot| lock(&slot.state).pid).collect()
    }

    /// Exec to first `/invocation/next` of each of the function's current
    /// processes that got there (the cold start).
    pub fn init_durations(&self, function: &str) -> Vec<Duration> {
        let Some(f) = self.functions.get(function) else { return Vec::new() };
        f.slots.iter().filter_map(|slot| lock(&slot.state).init_duration).collect()
    }

    /// Stops every process (SIGTERM, then SIGKILL after the grace period)
    /// and waits for them; queued invocations fail. Idempotent.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        for f in self.functions.values() {
            let queued: Vec<Pending> = lock(&f.queue).drain(..).collect();
            for pending in queued {
                let _ = pending.reply.send(Err(InvokeError::Crashed("the Lambda host is shutting down".into())));
            }
            f.queued.notify_waiters();
        }
        let supervisors: Vec<JoinHandle<()>> = lock(&self.supervisors).drain(..).collect();
        for supervisor in supervisors {
            let _ = supervisor.await;
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Without a shutdown call the supervisors still stop their processes.
        self.stop.send_replace(true);
    }
}

/// Resolves once the host is stopping (or gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

fn dropped() -> InvokeError {
    InvokeError::Crashed("the invocation was dropped by the host".into())
}

/// `name`, `name:qualifier` or a function ARN, as the Invoke API accepts.
fn function_name(raw: &str) -> String {
    let name = raw.rsplit_once(":function:").map_or(raw, |(_, rest)| rest);
    name.split(':').next().unwrap_or(name).to_owned()
}

fn plain_response(status: u16, body: Bytes, headers: &[(&str, &str)]) -> Response<Full<Bytes>> {
    let mut response = Response::builder().status(status);
    for (k, v) in headers {
        response = response.header(*k, *v);
    }
    response.body(Full::new(body)).expect("valid response")
}

fn json_response(status: u16, body: &serde_json::Value, headers: &[(&str, &str)]) -> Response<Full<Bytes>> {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    plain_response(status, Bytes::from(body.to_string()), &all)
}

impl Function {
    /// Why no instance can serve now: every process failed to initialise
    /// (and none is starting). Invocations then fail at once, not after the
    /// queue bound.
    fn unavailable(&self) -> Option<String> {
        let mut why = None;
        for slot in &self.slots {
            let state = lock(&slot.state);
            match (&state.phase, &state.init_failure) {
                (Phase::Down, Some(failure)) => why = Some(failure.clone()),
                _ => return None,
            }
        }
        why
    }

    fn live_instances(&self) -> usize {
        self.slots.iter().filter(|slot| matches!(lock(&slot.state).phase, Phase::Starting | Phase::Idle | Phase::Busy(_))).count()
    }

    fn fail_queued(&self, why: &str) {
        let queued: Vec<Pending> = lock(&self.queue).drain(..).collect();
        if !queued.is_empty() {
            tracing::warn!(function = %self.spec.name, invocations = queued.len(), "failing queued invocations: no instance can start");
        }
        for pending in queued {
            let _ = pending.reply.send(Err(InvokeError::Crashed(why.to_owned())));
        }
    }
}

/// What a process's run ended with.
struct Exit {
    became_ready: bool,
    lived: Duration,
}

/// Keeps slot `index` of `f` running a process until the host stops.
async fn supervise(f: Arc<Function>, index: usize, mut stop: watch::Receiver<bool>) {
    let name = f.spec.name.clone();
    let mut restarts: VecDeque<Instant> = VecDeque::new();
    let mut early_exits: u32 = 0;
    loop {
        if *stop.borrow() {
            break;
        }
        let exit = run_process(&f, index, &mut stop).await;
        if *stop.borrow() {
            break;
        }
        let now = Instant::now();
        while restarts.front().is_some_and(|t| now.duration_since(*t) >= RESTART_WINDOW) {
            restarts.pop_front();
        }
        early_exits = if exit.became_ready && exit.lived >= HEALTHY_RUN { 0 } else { early_exits.saturating_add(1) };
        // A process that had served is replaced at once, unless the one
        // before it died early too; one that never got ready backs off.
        let backoff_steps = match (early_exits, exit.became_ready) {
            (0, _) | (1, true) => None,
            (n, true) => Some(n - 2),
            (n, false) => Some(n - 1),
        };
        let mut delay = backoff_steps.map_or(Duration::ZERO, |steps| {
            let doubled = f.config.backoff_initial_ms.saturating_mul(1u64 << steps.min(20));
            Duration::from_millis(doubled.min(f.config.backoff_max_ms))
        });
        if restarts.len() >= f.config.restarts_per_minute {
            let window_moves = RESTART_WINDOW.saturating_sub(now.duration_since(restarts[0]));
            delay = delay.max(window_moves);
            tracing::error!(function = %name, instance = index, restarts = restarts.len(), wait_ms = delay.as_millis() as u64, "restart budget for this minute used up; the instance waits");
        }
        restarts.push_back(now + delay);
        tracing::warn!(function = %name, instance = index, delay_ms = delay.as_millis() as u64, "replacing the function process");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop) => break,
        }
    }
}

/// Starts one process in slot `index`, serves its Runtime API and waits for
/// it to exit (or kills it: timeout, init stall, init error, shutdown).
async fn run_process(f: &Arc<Function>, index: usize, stop: &mut watch::Receiver<bool>) -> Exit {
    let name = &f.spec.name;
    let slot = &f.slots[index];
    let kill = Arc::new(Notify::new());
    let incarnation = {
        let mut state = lock(&slot.state);
        state.incarnation += 1;
        state.phase = Phase::Starting;
        state.kill = Arc::clone(&kill);
        state.init_error = None;
        state.init_duration = None;
        state.incarnation
    };
    let started = Instant::now();
    let process = async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("Runtime API listener: {e}"))?;
        let address = listener.local_addr().map_err(|e| e.to_string())?.to_string();
        let server = tokio::spawn(serve_runtime_api(listener, Arc::clone(f), index, incarnation));
        match command(f, index, incarnation, &address).spawn() {
            Ok(child) => Ok((child, server, address)),
            Err(e) => {
                server.abort();
                Err(format!("{}: {e}", f.spec.binary.display()))
            }
        }
    };
    let (mut child, server, address) = match process.await {
        Ok(started) => started,
        Err(e) => {
            let why = format!("{name}: could not start the function process: {e}");
            tracing::error!(function = %name, instance = index, error = %e, "could not start the function process");
            end_process(f, index, incarnation, None, &why);
            return Exit { became_ready: false, lived: started.elapsed() };
        }
    };
    let pid = child.id();
    {
        let mut state = lock(&slot.state);
        state.pid = pid;
        state.spawned_at = Some(started);
    }
    tracing::info!(function = %name, instance = index, pid, runtime_api = %address, "function process started");

    let init_deadline = tokio::time::sleep(Duration::from_millis(f.config.init_timeout_ms));
    tokio::pin!(init_deadline);
    let mut init_checked = false;
    let mut terminating: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = kill.notified() => {
                let _ = child.start_kill();
            }
            _ = &mut init_deadline, if !init_checked => {
                init_checked = true;
                let mut state = lock(&slot.state);
                if state.incarnation == incarnation && matches!(state.phase, Phase::Starting) {
                    state.phase = Phase::Stopping;
                    state.init_error.get_or_insert_with(|| format!("did not ask for its first event within {} ms", f.config.init_timeout_ms));
                    drop(state);
                    tracing::error!(function = %name, instance = index, pid, "init timeout: killing the function process");
                    let _ = child.start_kill();
                }
            }
            _ = stopped(stop), if terminating.is_none() => {
                // SIGTERM first, as Lambda does at shutdown. The child is not
                // reaped yet (only this task waits on it), so the pid is its.
                if let Some(pid) = child.id() {
                    // SAFETY: kill(2) with a pid we own and a valid signal.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                }
                terminating = Some(Box::pin(tokio::time::sleep(Duration::from_millis(f.config.shutdown_grace_ms))));
            }
            _ = async { terminating.as_mut().expect("guarded").await }, if terminating.is_some() => {
                tracing::warn!(function = %name, instance = index, pid, "no exit within the shutdown grace period: SIGKILL");
                let _ = child.start_kill();
                terminating = Some(Box::pin(tokio::time::sleep(Duration::from_secs(3600))));
            }
        }
    };
    server.abort();
    let status = match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("wait failed: {e}"),
    };
    let became_ready = end_process(f, index, incarnation, pid, &status);
    if *stop.borrow() {
        tracing::info!(function = %name, instance = index, pid, %status, "function process stopped");
    } else {
        tracing::warn!(function = %name, instance = index, pid, %status, "function process exited");
    }
    Exit { became_ready, lived: started.elapsed() }
}

/// Records that the slot's process has ended; fails its in-flight
/// invocation (a crash) or reports an init failure. Returns whether the
/// process had become ready.
fn end_process(f: &Function, index: usize, incarnation: u64, pid: Option<u32>, status: &str) -> bool {
    let name = &f.spec.name;
    let pid_text = pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
    let mut state = lock(&f.slots[index].state);
    if state.incarnation != incarnation {
        return false;
    }
    state.pid = None;
    let became_ready = state.init_duration.is_some();
    let previous = std::mem::take(&mut state.phase);
    let init_failure = if became_ready {
        None
    } else {
        let detail = state.init_error.take().map(|e| format!(" ({e})")).unwrap_or_default();
        let why = format!("{name}: the function process (pid {pid_text}) failed to initialise: {status}{detail}");
        state.init_failure = Some(why.clone());
        Some(why)
    };
    drop(state);
    if let Phase::Busy(in_flight) = previous {
        for in_flight in in_flight {
            let why = format!("{name}: the function process (pid {pid_text}) exited while handling request {}: {status}", in_flight.request_id);
            tracing::error!(function = %name, instance = index, request_id = %in_flight.request_id, %status, "function process died during an invocation");
            in_flight.finish(Err(InvokeError::Crashed(why)));
        }
    }
    if let Some(why) = init_failure {
        tracing::error!(function = %name, instance = index, error = %why, "init failed");
        if f.live_instances() == 0 {
            f.fail_queued(&why);
        }
    }
    f.changed.notify_waiters();
    f.queued.notify_waiters();
    became_ready
}

/// The process for slot `index`, as Lambda starts a custom runtime: the
/// host's environment, the Lambda variables, `spec.env`, then the Runtime
/// API address and function name, which nothing overrides.
fn command(f: &Function, index: usize, incarnation: u64, runtime_api: &str) -> tokio::process::Command {
    let spec = &f.spec;
    let mut command = tokio::process::Command::new(&spec.binary);
    command
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{}", spec.name))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", format!("local/{}/{index}.{incarnation}", spec.name))
        .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
        .env("_HANDLER", "bootstrap")
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", &spec.name)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    // Classic Lambda does not set it; Managed Instances set it to the
    // function's PerExecutionEnvironmentMaxConcurrency.
    if spec.concurrency > 1 {
        command.env("AWS_LAMBDA_MAX_CONCURRENCY", spec.concurrency.to_string());
    }
    if f.config.function_output == FunctionOutput::Null {
        command.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    }
    let host_pid = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec. The child
    // dies with the host even when the host is SIGKILLed (no orphans).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != host_pid {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    command
}

/// Serves the Lambda Runtime API (`/2018-06-01/runtime/...`) for one process
/// of slot `index`. Aborting the task closes every connection.
async fn serve_runtime_api(listener: tokio::net::TcpListener, f: Arc<Function>, index: usize, incarnation: u64) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let f = Arc::clone(&f);
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let f = Arc::clone(&f);
                async move { Ok::<_, Infallible>(runtime_answer(f, index, incarnation, req).await) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn runtime_answer(f: Arc<Function>, index: usize, incarnation: u64, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix("/2018-06-01/runtime/") else {
        return json_response(404, &serde_json::json!({"errorType": "NotFound", "errorMessage": path}), &[]);
    };
    if rest == "invocation/next" && req.method() == Method::GET {
        return next_invocation(&f, index, incarnation).await;
    }
    let error_type_header = req.headers().get("lambda-runtime-function-error-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = match Limited::new(req.into_body(), PAYLOAD_MAX_BYTES).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(_) => Err(()),
    };
    let accepted = || json_response(202, &serde_json::json!({"status": "OK"}), &[]);
    if rest == "init/error" {
        let text = body.map(|b| describe_error(&b, error_type_header.as_deref())).unwrap_or_else(|_| "(too large)".into());
        let mut state = lock(&f.slots[index].state);
        if state.incarnation == incarnation {
            tracing::error!(function = %f.spec.name, instance = index, error = %text, "init error reported");
            state.init_error = Some(text);
            // Lambda ends an environment whose init failed.
            state.phase = Phase::Stopping;
            state.kill.notify_one();
        }
        return accepted();
    }
    let Some((request_id, outcome)) = rest.strip_prefix("invocation/").and_then(|r| r.split_once('/')) else {
        return json_response(404, &serde_json::json!({"errorType": "NotFound", "errorMessage": path}), &[]);
    };
    let result = match (outcome, body) {
        ("response", Ok(body)) => Ok(body),
        ("response", Err(())) => Err(InvokeError::Function {
            error_type: "Function.ResponseSizeTooLarge".into(),
            message: format!("response payload larger than {PAYLOAD_MAX_BYTES} bytes"),
        }),
        ("error", body) => {
            let body = body.unwrap_or_default();
            let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            let error_type = parsed["errorType"].as_str().map(str::to_owned).or(error_type_header).unwrap_or_else(|| "Unhandled".into());
            let message = parsed["errorMessage"].as_str().map(str::to_owned).unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            Err(InvokeError::Function { error_type, message })
        }
        _ => return json_response(404, &serde_json::json!({"errorType": "NotFound", "errorMessage": path}), &[]),
    };
    let in_flight = {
        let mut state = lock(&f.slots[index].state);
        let current = state.incarnation == incarnation;
        match &mut state.phase {
            Phase::Busy(in_flight) if current => {
                let found = in_flight.iter().position(|i| i.request_id == request_id).map(|at| in_flight.swap_remove(at));
                if in_flight.is_empty() {
                    state.phase = Phase::Idle;
                }
                found
            }
            _ => None,
        }
    };
    match in_flight {
        Some(in_flight) => {
            in_flight.finish(result);
            accepted()
        }
        // Timed out meanwhile, or not an invocation of this process.
        None => json_response(400, &serde_json::json!({"errorType": "InvalidRequestID", "errorMessage": format!("no invocation {request_id} in flight here")}), &[]),
    }
}

fn describe_error(body: &[u8], error_type: Option<&str>) -> String {
    let parsed: serde_json::Value = serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    match (parsed["errorType"].as_str().or(error_type), parsed["errorMessage"].as_str()) {
        (Some(t), Some(m)) => format!("{t}: {m}"),
        _ => String::from_utf8_lossy(body).into_owned(),
    }
}

/// `GET /invocation/next`: the first marks the process ready; each waits
/// for an invocation, which then is this process's until it answers, dies
/// or times out.
async fn next_invocation(f: &Arc<Function>, index: usize, incarnation: u64) -> Response<Full<Bytes>> {
    let slot = &f.slots[index];
    let current = {
        let mut state = lock(&slot.state);
        let current = state.incarnation == incarnation && !matches!(state.phase, Phase::Down | Phase::Stopping);
        // With several invocations at once, the other workers' events stay
        // in flight while one asks for its next.
        let concurrent = f.spec.concurrency > 1 && matches!(state.phase, Phase::Busy(_));
        if current && !concurrent {
            match std::mem::replace(&mut state.phase, Phase::Idle) {
                Phase::Starting => {
                    let init = state.spawned_at.map(|t| t.elapsed()).unwrap_or_default();
                    state.init_duration = Some(init);
                    state.ever_ready = true;
                    state.init_failure = None;
                    tracing::info!(function = %f.spec.name, instance = index, pid = state.pid, init_ms = init.as_secs_f64() * 1e3, "function process ready");
                    f.changed.notify_waiters();
                }
                Phase::Busy(in_flight) => {
                    // The runtime moved on without answering (not lambda_runtime's way).
                    for in_flight in in_flight {
                        let why = format!("{}: the runtime asked for the next event without answering request {}", f.spec.name, in_flight.request_id);
                        in_flight.finish(Err(InvokeError::Crashed(why)));
                    }
                }
                Phase::Idle | Phase::Down | Phase::Stopping => {}
            }
        }
        current
    };
    if !current {
        return never().await;
    }
    loop {
        let notified = f.queued.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let handed_over = {
            let mut state = lock(&slot.state);
            let room = match &state.phase {
                Phase::Idle => true,
                Phase::Busy(in_flight) => in_flight.len() < f.spec.concurrency,
                _ => false,
            };
            if state.incarnation != incarnation || !room {
                None
            } else {
                // Slot before queue, always: the pick and the hand-over are
                // one step, so an invocation is never lost between them.
                let next = lock(&f.queue).pop_front();
                match next {
                    Some(pending) => {
                        let timeout = Duration::from_millis(f.spec.timeout_ms);
                        let watchdog = tokio::spawn(time_out(Arc::clone(f), index, incarnation, pending.request_id.clone(), timeout)).abort_handle();
                        let started = InFlight { request_id: pending.request_id.clone(), reply: pending.reply, watchdog };
                        match &mut state.phase {
                            Phase::Busy(in_flight) => in_flight.push(started),
                            _ => state.phase = Phase::Busy(vec![started]),
                        }
                        Some(Some(event_response(&f.spec.name, &pending.request_id, pending.payload, timeout)))
                    }
                    None => Some(None),
                }
            }
        };
        match handed_over {
            None => return never().await,
            Some(Some(event)) => return event,
            Some(None) => notified.await,
        }
    }
}

/// A request of a process that is gone or being killed: never answered (the
/// connection closes with the process's Runtime API server).
async fn never() -> Response<Full<Bytes>> {
    std::future::pending().await
}

fn event_response(function: &str, request_id: &str, payload: Bytes, timeout: Duration) -> Response<Full<Bytes>> {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    let deadline_ms = (now_ms + timeout.as_millis()).to_string();
    let arn = format!("arn:aws:lambda:us-east-1:000000000000:function:{function}");
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .header("lambda-runtime-aws-request-id", request_id)
        .header("lambda-runtime-deadline-ms", deadline_ms)
        .header("lambda-runtime-invoked-function-arn", arn)
        .header("lambda-runtime-trace-id", "Root=1-00000000-000000000000000000000000;Sampled=0")
        .body(Full::new(payload))
        .expect("event response")
}

/// Fails the invocation if it is still in flight after `timeout`, then kills
/// its process (Lambda does not reuse an environment that timed out).
async fn time_out(f: Arc<Function>, index: usize, incarnation: u64, request_id: String, timeout: Duration) {
    tokio::time::sleep(timeout).await;
    let (in_flight, pid, kill) = {
        let mut state = lock(&f.slots[index].state);
        if state.incarnation != incarnation || !matches!(&state.phase, Phase::Busy(i) if i.iter().any(|i| i.request_id == request_id)) {
            return;
        }
        // The process is killed: every invocation it has in flight ends.
        let Phase::Busy(mut in_flight) = std::mem::replace(&mut state.phase, Phase::Stopping) else { return };
        let at = in_flight.iter().position(|i| i.request_id == request_id).expect("checked above");
        let timed_out = in_flight.swap_remove(at);
        for other in in_flight {
            let why = format!("{}: the function process was killed: request {request_id} beside it timed out", f.spec.name);
            other.finish(Err(InvokeError::Crashed(why)));
        }
        (timed_out, state.pid, Arc::clone(&state.kill))
    };
    tracing::warn!(function = %f.spec.name, instance = index, pid, request_id, timeout_ms = timeout.as_millis() as u64, "invocation timed out: killing the function process");
    // Not `finish`: that would abort this very task before the kill.
    let _ = in_flight.reply.send(Err(InvokeError::TimedOut));
    kill.notify_one();
}
