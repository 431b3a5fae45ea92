//! paystream's benchmarks. Each prints its figures next to a baseline
//! measured in the same run, so a ratio is reported, not just a time.
//!
//!   bench flash [attempts] [concurrency]   flash-sale decisions on a hot product (defaults 20000 64)
//!   bench lambda [runs] [rounds]           cold start and peak memory of every function (defaults 20 20)
//!   bench consumers [batches] [only]       MSK consumers on 1,000-record batches (default 10; `only`: the consumers whose name contains it)
//!   bench intake [payments] [concurrency] [processes]  POST /payments, broker-acknowledged, three execution models (defaults 20000 64 8; 0 processes skips the Runtime API one)
//!   bench orders [orders] [concurrency]    POST /orders, durable accepted orders (defaults 20000 64)
//!   bench gateway [seconds] [concurrency]  payments and flash-sale decisions through scripts/run.sh's gateway (defaults 10 64)
//!   bench latency [idle] [rate] [seconds]  202 -> FDS decision through scripts/run.sh's runtime (defaults 50 500 10)
//!
//! Run from the repository root with the stack up, in release:
//! `cargo run --release -p paystream-local --bin bench -- flash`.

mod consumers;
mod cpu;
mod flash;
mod gateway;
mod intake;
mod lambda;
mod latency;
mod orders;
mod stats;
mod wal;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let numbers = |from: usize| -> Vec<usize> { args.iter().skip(from).filter_map(|a| a.parse().ok()).collect() };
    match args.first().map(String::as_str) {
        Some("lambda") => {
            let n = numbers(1);
            lambda::run(n.first().copied().unwrap_or(20), n.get(1).copied().unwrap_or(20)).await;
        }
        Some("consumers") => {
            let only = args.iter().skip(1).find(|a| a.parse::<usize>().is_err()).cloned();
            consumers::run(numbers(1).first().copied().unwrap_or(10), only.as_deref()).await;
        }
        Some("intake") => {
            let n = numbers(1);
            intake::run(n.first().copied().unwrap_or(20_000), n.get(1).copied().unwrap_or(64), n.get(2).copied().unwrap_or(8)).await;
        }
        Some("orders") => {
            let n = numbers(1);
            orders::run(n.first().copied().unwrap_or(20_000), n.get(1).copied().unwrap_or(64)).await;
        }
        Some("latency") => {
            let n = numbers(1);
            latency::run(n.first().copied().unwrap_or(50), n.get(1).copied().unwrap_or(500), n.get(2).copied().unwrap_or(10)).await;
        }
        Some("gateway") => {
            let n = numbers(1);
            gateway::run(n.first().copied().unwrap_or(10) as u64, n.get(1).copied().unwrap_or(64)).await;
        }
        Some("flash") => {
            let n = numbers(1);
            flash::run(n.first().copied().unwrap_or(20_000), n.get(1).copied().unwrap_or(64)).await;
        }
        _ => {
            eprintln!("usage: bench flash [attempts] [concurrency] | lambda [runs] [rounds] | consumers [batches] [only] | intake [payments] [concurrency] [processes] | orders [orders] [concurrency] | gateway [seconds] [concurrency] | latency [idle] [rate] [seconds]");
            std::process::exit(2);
        }
    }
}
