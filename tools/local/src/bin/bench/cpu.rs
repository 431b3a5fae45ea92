//! CPU time per process, from `/proc`: what a benchmark's operations cost
//! each process involved (this process, where the handlers run in the
//! benchmarks that call them directly; PostgreSQL's backends; Redis; the
//! broker). Read before and after a measured run; the difference over the
//! operations is the cost per operation.

use std::collections::HashMap;

/// The processes a benchmark's work lands on, by their `comm`: the servers,
/// and the function binaries a benchmark runs under the local Lambda host.
pub const SERVERS: [&str; 5] = ["postgres", "redis-server", "nisshi", "pay", "order"];

/// Every process of the local runtime (`scripts/run.sh`), by `comm` (the
/// kernel keeps 15 bytes of a name): the servers, the gateway, the Lambda
/// host, the poller and each function.
pub const RUNTIME: [&str; 15] = [
    "postgres",
    "redis-server",
    "nisshi",
    "gateway",
    "lambda-host",
    "poller",
    "pay",
    "fds-consumer",
    "loyalty-consume",
    "benefit-consume",
    "order",
    "settle",
    "account",
    "verify",
    "report",
];

/// CPU seconds (user + system) so far: this process, and each of the
/// watched names summed over its processes.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub this_process_s: f64,
    pub names: Vec<&'static str>,
    pub servers_s: HashMap<&'static str, f64>,
}

fn ticks_per_s() -> f64 {
    // SAFETY: sysconf only reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(ticks > 0, "sysconf(_SC_CLK_TCK) must be positive");
    ticks as f64
}

/// utime + stime of one process, in clock ticks (fields 14 and 15 of
/// `/proc/PID/stat`, counted after the command name, which may hold spaces).
fn process_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name, field 3 (state) is index 0, so field 14 is index 11.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

pub fn sample() -> Sample {
    sample_of(&SERVERS)
}

/// CPU seconds of this process and of every process named in `names`.
pub fn sample_of(names: &[&'static str]) -> Sample {
    let per_s = ticks_per_s();
    let own = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| process_ticks(&s)).unwrap_or(0);
    let mut servers_s: HashMap<&'static str, f64> = names.iter().map(|s| (*s, 0.0)).collect();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())).map(str::to_owned) else { continue };
            let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else { continue };
            let Some(server) = names.iter().find(|s| comm.trim() == **s) else { continue };
            if let Some(ticks) = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| process_ticks(&s)) {
                *servers_s.get_mut(server).expect("every server has an entry") += ticks as f64 / per_s;
            }
        }
    }
    Sample { this_process_s: own as f64 / per_s, names: names.to_vec(), servers_s }
}

/// CPU microseconds per operation between two samples, for this process
/// and each server. A server whose processes exited in between reads low.
pub fn per_op_us(before: &Sample, after: &Sample, operations: usize) -> Vec<(&'static str, f64)> {
    assert!(operations > 0, "cost per operation needs operations");
    let per = |s: f64| 1e6 * s.max(0.0) / operations as f64;
    let mut costs = vec![("this process", per(after.this_process_s - before.this_process_s))];
    for server in &after.names {
        costs.push((*server, per(after.servers_s[server] - before.servers_s.get(server).copied().unwrap_or(0.0))));
    }
    costs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_ticks_after_a_name_with_spaces() {
        let stat = "1234 (tokio (worker) 1) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 15";
        assert_eq!(process_ticks(stat), Some(333));
    }

    #[test]
    fn this_process_burns_cpu_it_can_see() {
        let before = sample();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(200) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = sample();
        assert!(after.this_process_s - before.this_process_s >= 0.1, "200 ms of spinning shows as CPU time");
    }
}
