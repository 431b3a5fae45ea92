//! The local Lambda host (`lambda-host`): every function of `template.yaml`
//! runs as a real Lambda function process under `paystream_local::host`,
//! which serves the Lambda Invoke API on 127.0.0.1:`PAYSTREAM_LAMBDA_PORT`
//! (default 9000) for the gateway, the poller and `cargo lambda invoke`, and
//! replaces a process that dies, as Lambda does.
//!
//! - binaries: `$CARGO_TARGET_DIR/<PAYSTREAM_PROFILE>/<binary>` (profile
//!   `debug` (default) or `release`; target dir default `target`);
//! - `PAYSTREAM_INSTANCES` processes per function (default 1), each
//!   handling `PAYSTREAM_CONCURRENCY` invocations at once (default 1, as
//!   classic Lambda; more, as Lambda Managed Instances: the process gets
//!   `AWS_LAMBDA_MAX_CONCURRENCY`);
//! - each function's `Timeout` and `MemorySize` from the template;
//! - the host's bounds: `HostConfig::from_env` (`PAYSTREAM_LAMBDA_*`).
//!
//! It listens once every function is ready, so a caller that waits for the
//! port waits for the functions; SIGTERM or Ctrl-C stops every process.

use std::net::SocketAddr;
use std::path::PathBuf;

use paystream_local::host::{FunctionSpec, Host, HostConfig};
use paystream_local::template::Template;

#[tokio::main]
async fn main() {
    paystream::telemetry::init(&std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into()));
    let template = Template::from_env().unwrap_or_else(|e| fail(&e));
    let profile = std::env::var("PAYSTREAM_PROFILE").unwrap_or_else(|_| "debug".into());
    if profile != "debug" && profile != "release" {
        fail(&format!("PAYSTREAM_PROFILE must be debug or release, not {profile:?}"));
    }
    let target = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into())).join(&profile);
    let instances: usize = match std::env::var("PAYSTREAM_INSTANCES") {
        Err(_) => 1,
        Ok(v) => v.parse().ok().filter(|n| *n > 0).unwrap_or_else(|| fail(&format!("PAYSTREAM_INSTANCES must be a positive number, not {v:?}"))),
    };
    let concurrency: usize = match std::env::var("PAYSTREAM_CONCURRENCY") {
        Err(_) => 1,
        Ok(v) => v.parse().ok().filter(|n| *n > 0).unwrap_or_else(|| fail(&format!("PAYSTREAM_CONCURRENCY must be a positive number, not {v:?}"))),
    };
    let port: u16 = match std::env::var("PAYSTREAM_LAMBDA_PORT") {
        Err(_) => 9000,
        Ok(v) => v.parse().unwrap_or_else(|_| fail(&format!("PAYSTREAM_LAMBDA_PORT must be a port number, not {v:?}"))),
    };
    let config = HostConfig::from_env().unwrap_or_else(|e| fail(&e));
    let mut specs = Vec::with_capacity(template.functions.len());
    for function in &template.functions {
        let binary = target.join(&function.binary);
        if !binary.is_file() {
            fail(&format!("{}: not built (cargo build --workspace --bins{})", binary.display(), if profile == "release" { " --release" } else { "" }));
        }
        specs.push(FunctionSpec {
            name: function.name.clone(),
            binary,
            env: vec![("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), function.memory_mb.to_string())],
            instances,
            concurrency,
            timeout_ms: function.timeout_s * 1000,
        });
    }
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let host = tokio::select! {
        started = Host::start_with(specs, config) => started.unwrap_or_else(|e| fail(&e)),
        // Start waits for every process (bounded); a stop meanwhile ends the
        // half-started host with the dropped future (its processes are
        // killed with it).
        _ = paystream_local::shutdown_signal() => return,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            host.shutdown().await;
            fail(&format!("bind {addr}: {e}"));
        }
    };
    tracing::info!(%addr, functions = ?names, instances, concurrency, %profile, "lambda host listening");
    tokio::select! {
        _ = std::sync::Arc::clone(&host).serve_invoke_api(listener) => {}
        _ = paystream_local::shutdown_signal() => {}
    }
    tracing::info!("lambda host stopping: SIGTERM to every function process");
    host.shutdown().await;
    tracing::info!("lambda host stopped");
}

fn fail(message: &str) -> ! {
    eprintln!("lambda-host: {message}");
    std::process::exit(1)
}
