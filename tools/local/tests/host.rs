//! The local Lambda host against real function processes (the `hello`
//! function): a process killed mid-invocation fails that invocation at once
//! and is replaced; timeouts are enforced; instances serve concurrently;
//! init failures are reported; the Invoke API answers as Lambda does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use paystream_local::client::HttpClient;
use paystream_local::host::{FunctionSpec, Host, InvokeError};

fn hello(instances: usize, timeout_ms: u64) -> FunctionSpec {
    FunctionSpec {
        name: "hello".into(),
        binary: env!("CARGO_BIN_EXE_hello").into(),
        env: vec![("LOG_LEVEL".into(), "warn".into())],
        instances,
        concurrency: 1,
        timeout_ms,
    }
}

fn json(value: serde_json::Value) -> Bytes {
    Bytes::from(value.to_string())
}

/// Waits (bounded) until the function has `n` live processes again.
async fn live(host: &Host, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = host.pids("hello");
        if pids.len() == n {
            return pids;
        }
        assert!(Instant::now() < deadline, "{} live processes, expected {n}", pids.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_process_killed_mid_invocation_fails_it_at_once_and_is_replaced() {
    let host = Host::start(vec![hello(1, 30_000)]).await.unwrap();
    let before = host.pids("hello");
    assert_eq!(before.len(), 1);
    assert_eq!(host.invoke("hello", json(serde_json::json!({"n": 1}))).await.unwrap(), json(serde_json::json!({"n": 1})));

    let call = {
        let host = Arc::clone(&host);
        tokio::spawn(async move { host.invoke("hello", json(serde_json::json!({"sleep_ms": 20_000}))).await })
    };
    // Let the invocation reach the process.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = Instant::now();
    // SAFETY: kill(2) on the function process this test started.
    assert_eq!(unsafe { libc::kill(before[0] as libc::pid_t, libc::SIGKILL) }, 0);
    let outcome = call.await.unwrap();
    let took = killed_at.elapsed();
    assert!(matches!(&outcome, Err(InvokeError::Crashed(why)) if why.contains("signal: 9")), "{outcome:?}");
    assert!(took < Duration::from_millis(1500), "the crash took {took:?} to report");

    assert_eq!(host.invoke("hello", json(serde_json::json!({"n": 2}))).await.unwrap(), json(serde_json::json!({"n": 2})));
    let after = live(&host, 1).await;
    assert_ne!(before, after, "the killed process was replaced");
    host.shutdown().await;
}

#[tokio::test]
async fn an_aborting_function_fails_its_invocation_and_the_next_is_served() {
    let host = Host::start(vec![hello(1, 30_000)]).await.unwrap();
    let before = host.pids("hello");
    let started = Instant::now();
    let outcome = host.invoke("hello", json(serde_json::json!({"abort": true}))).await;
    assert!(matches!(&outcome, Err(InvokeError::Crashed(why)) if why.contains("signal: 6")), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(host.invoke("hello", json(serde_json::json!({"n": 3}))).await.unwrap(), json(serde_json::json!({"n": 3})));
    assert_ne!(live(&host, 1).await, before);
    host.shutdown().await;
}

#[tokio::test]
async fn an_invocation_past_the_timeout_fails_and_its_process_is_replaced() {
    let host = Host::start(vec![hello(1, 500)]).await.unwrap();
    let before = host.pids("hello");
    let started = Instant::now();
    let outcome = host.invoke("hello", json(serde_json::json!({"sleep_ms": 10_000}))).await;
    let took = started.elapsed();
    assert_eq!(outcome, Err(InvokeError::TimedOut));
    assert!(took >= Duration::from_millis(500) && took < Duration::from_millis(1500), "timed out after {took:?}");
    assert_eq!(host.invoke("hello", json(serde_json::json!({"n": 4}))).await.unwrap(), json(serde_json::json!({"n": 4})));
    let after = live(&host, 1).await;
    assert_ne!(before, after, "the timed-out process was replaced");
    // SAFETY: signal 0 only checks whether the pid exists.
    assert_ne!(unsafe { libc::kill(before[0] as libc::pid_t, 0) }, 0, "the timed-out process is gone");
    host.shutdown().await;
}

#[tokio::test]
async fn two_instances_run_two_slow_invocations_at_once() {
    let host = Host::start(vec![hello(2, 30_000)]).await.unwrap();
    assert_eq!(host.pids("hello").len(), 2);
    let started = Instant::now();
    let slow = || {
        let host = Arc::clone(&host);
        tokio::spawn(async move { host.invoke("hello", json(serde_json::json!({"sleep_ms": 1_000}))).await })
    };
    let (a, b) = (slow(), slow());
    assert!(a.await.unwrap().is_ok());
    assert!(b.await.unwrap().is_ok());
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1_800), "two 1 s invocations took {took:?}: not concurrent");
    host.shutdown().await;
}

#[tokio::test]
async fn one_process_with_managed_concurrency_runs_four_slow_invocations_at_once_and_a_crash_fails_them_all() {
    let spec = FunctionSpec { concurrency: 4, ..hello(1, 30_000) };
    let host = Host::start(vec![spec]).await.unwrap();
    let pids = host.pids("hello");
    assert_eq!(pids.len(), 1, "one execution environment");
    let call = |payload: serde_json::Value| {
        let host = Arc::clone(&host);
        tokio::spawn(async move { host.invoke("hello", json(payload)).await })
    };
    let started = Instant::now();
    let slow: Vec<_> = (0..4).map(|n| call(serde_json::json!({"sleep_ms": 1_000, "n": n}))).collect();
    for (n, task) in slow.into_iter().enumerate() {
        assert_eq!(task.await.unwrap().unwrap(), json(serde_json::json!({"sleep_ms": 1_000, "n": n})), "each answer goes to its own caller");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1_800), "four 1 s invocations in one process took {took:?}: not concurrent");

    // Four more: one of them aborts the process, which fails the others too.
    let slow: Vec<_> = (0..3).map(|_| call(serde_json::json!({"sleep_ms": 20_000}))).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let aborting = call(serde_json::json!({"abort": true}));
    assert!(matches!(aborting.await.unwrap(), Err(InvokeError::Crashed(_))));
    for task in slow {
        assert!(matches!(task.await.unwrap(), Err(InvokeError::Crashed(_))), "in flight in the dead process");
    }
    let after = live(&host, 1).await;
    assert_ne!(pids, after, "the process was replaced");
    assert_eq!(host.invoke("hello", json(serde_json::json!({"n": 9}))).await.unwrap(), json(serde_json::json!({"n": 9})));
    host.shutdown().await;
}

#[tokio::test]
async fn function_errors_and_unknown_functions() {
    let host = Host::start(vec![hello(1, 30_000)]).await.unwrap();
    match host.invoke("hello", json(serde_json::json!({"fail": "card declined"}))).await {
        Err(InvokeError::Function { message, .. }) => assert_eq!(message, "card declined"),
        other => panic!("{other:?}"),
    }
    assert_eq!(host.invoke("nobody", Bytes::new()).await, Err(InvokeError::NoSuchFunction("nobody".into())));
    host.shutdown().await;
}

#[tokio::test]
async fn a_function_that_cannot_initialise_is_reported_not_waited_on() {
    let started = Instant::now();
    let exits = FunctionSpec { binary: "/bin/false".into(), ..hello(1, 1_000) };
    let error = Host::start(vec![exits]).await.err().expect("start fails");
    assert!(error.contains("failed to initialise") && error.contains("exit status: 1"), "{error}");
    let missing = FunctionSpec { binary: "/nonexistent/bootstrap".into(), ..hello(1, 1_000) };
    let error = Host::start(vec![missing]).await.err().expect("start fails");
    assert!(error.contains("/nonexistent/bootstrap"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn shutdown_leaves_no_process_behind() {
    let host = Host::start(vec![hello(2, 30_000)]).await.unwrap();
    let pids = host.pids("hello");
    let call = {
        let host = Arc::clone(&host);
        tokio::spawn(async move { host.invoke("hello", json(serde_json::json!({"sleep_ms": 20_000}))).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    host.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(matches!(call.await.unwrap(), Err(InvokeError::Crashed(_))));
    assert!(host.pids("hello").is_empty());
    for pid in pids {
        // SAFETY: signal 0 only checks whether the pid exists.
        assert_ne!(unsafe { libc::kill(pid as libc::pid_t, 0) }, 0, "process {pid} outlived the host");
    }
}

/// Through the Invoke API with the client the gateway and poller use.
#[tokio::test]
async fn the_invoke_api_answers_as_lambda_does() {
    let host = Host::start(vec![hello(1, 30_000)]).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(Arc::clone(&host).serve_invoke_api(listener));
    let client = HttpClient::new(Duration::from_secs(30));

    let answer = client.invoke(&endpoint, "hello", &serde_json::json!({"n": 5})).await.unwrap();
    assert_eq!(answer, serde_json::json!({"n": 5}));

    let url = format!("{endpoint}/2015-03-31/functions/hello/invocations");
    let raw = client.send(hyper::Method::POST, &url, &[], Some(br#"{"fail":"no"}"#.to_vec())).await.unwrap();
    assert_eq!(raw.status, 200);
    assert_eq!(raw.headers.get("x-amz-function-error").unwrap(), "Unhandled");
    assert_eq!(raw.json()["errorMessage"], "no");
    assert!(client.invoke(&endpoint, "hello", &serde_json::json!({"fail": "no"})).await.is_err());

    let raw = client.send(hyper::Method::POST, &format!("{endpoint}/2015-03-31/functions/nobody/invocations"), &[], None).await.unwrap();
    assert_eq!(raw.status, 404);
    assert_eq!(raw.headers.get("x-amzn-errortype").unwrap(), "ResourceNotFoundException");

    // A crash answers promptly as a function error (the gateway's 502).
    let pid = host.pids("hello")[0];
    let crashing = {
        let (client, endpoint) = (client.clone(), endpoint.clone());
        tokio::spawn(async move {
            let url = format!("{endpoint}/2015-03-31/functions/hello/invocations");
            client.send(hyper::Method::POST, &url, &[], Some(br#"{"sleep_ms":20000}"#.to_vec())).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = Instant::now();
    // SAFETY: kill(2) on the function process this test started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    let raw = crashing.await.unwrap().unwrap();
    assert!(killed_at.elapsed() < Duration::from_millis(1500));
    assert_eq!((raw.status, raw.headers.get("x-amz-function-error").map(|v| v.to_str().unwrap().to_owned())), (200, Some("Unhandled".into())));
    assert_eq!(raw.json()["errorType"], "Runtime.ExitError");
    assert_eq!(client.invoke(&endpoint, "hello", &serde_json::json!({"n": 6})).await.unwrap(), serde_json::json!({"n": 6}));

    host.shutdown().await;
    tokio::time::timeout(Duration::from_secs(5), server).await.expect("the Invoke API stops with the host").unwrap();
}
