//! Faults, carried out for real by `scripts/chaos.sh fault <kind>`: SIGKILL
//! of a function process of this run's Lambda host, SIGKILL and restart of
//! the broker on its SQLite file, SIGKILL and restart of Redis (empty: no
//! persistence), `pg_ctlcluster ... restart` of the run's PostgreSQL
//! cluster. The command exits 0 only when the process really went away and
//! came back (it prints the pids as evidence). This side then checks the
//! effect itself, not trusting the command: PostgreSQL's
//! `pg_postmaster_start_time()` and Redis's `run_id` must have changed, a
//! killed function's pid must be gone, the old broker pid gone and the new
//! one a live broker process (`BROKER_PROCESS`). Anything else is recorded as a fault that was not
//! injected, which fails the run.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use paystream::db::PgPool;

use crate::check::{FaultKind, FaultRecord};
use crate::load::Ctx;
use crate::rng::Rng;

/// No fault in the first and last seconds of the load window.
const MARGIN_S: f64 = 6.0;
/// Longest one fault command may take (a broker restart waits up to 30 s for its port).
const FAULT_TIMEOUT: Duration = Duration::from_secs(90);
/// A function kill that found nothing to kill is tried again this much later.
const KILL_RETRY_AFTER: Duration = Duration::from_secs(2);
/// The broker's process name (`comm`), as `scripts/lib.sh` installs it.
const BROKER_PROCESS: &str = "nisshi";
const KILL_ATTEMPTS_MAX: usize = 3;
/// How long a restarted service may take to answer again before the fault
/// counts as not carried out.
const COME_BACK_WITHIN: Duration = Duration::from_secs(30);

/// Reads the services' identities, to confirm a restart independently.
pub struct Probe {
    pub pg: PgPool,
    pub redis_url: String,
}

impl Probe {
    /// When the PostgreSQL server started (changes with every restart).
    async fn pg_started(&self) -> Option<String> {
        let db = self.pg.get().await.ok()?;
        db.query_one("SELECT pg_postmaster_start_time()::text", &[]).await.ok().map(|r| r.get(0))
    }

    /// Redis's `run_id` (random per server start).
    async fn redis_run_id(&self) -> Option<String> {
        let client = redis::Client::open(self.redis_url.as_str()).ok()?;
        let call = async {
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await.ok()?;
            info.lines().find_map(|l| l.strip_prefix("run_id:")).map(|v| v.trim().to_owned())
        };
        tokio::time::timeout(Duration::from_secs(2), call).await.ok().flatten()
    }

    async fn identity(&self, kind: FaultKind) -> Option<String> {
        match kind {
            FaultKind::PostgresRestart => self.pg_started().await,
            FaultKind::RedisRestart => self.redis_run_id().await,
            FaultKind::FunctionKill | FaultKind::BrokerRestart => None,
        }
    }

    /// Confirms the fault from outside the command; Err says what did not happen.
    async fn confirm(&self, kind: FaultKind, before: Option<String>, evidence: &str) -> Result<String, String> {
        match kind {
            FaultKind::PostgresRestart | FaultKind::RedisRestart => {
                let what = if kind == FaultKind::PostgresRestart { "PostgreSQL start time" } else { "Redis run_id" };
                let before = before.ok_or_else(|| format!("{what} unreadable before the fault"))?;
                let deadline = Instant::now() + COME_BACK_WITHIN;
                loop {
                    match self.identity(kind).await {
                        Some(after) if after != before => return Ok(format!("{what} changed")),
                        Some(_) => return Err(format!("{what} unchanged: no restart happened")),
                        None if Instant::now() > deadline => return Err(format!("not answering {COME_BACK_WITHIN:?} after the fault")),
                        None => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            }
            FaultKind::FunctionKill => {
                let pid = pids(evidence).first().copied().ok_or("the evidence names no pid")?;
                if alive(pid) {
                    return Err(format!("pid {pid} is still alive"));
                }
                Ok(format!("pid {pid} gone"))
            }
            FaultKind::BrokerRestart => match pids(evidence)[..] {
                [old, new, ..] if !alive(old) && alive(new) && comm(new).as_deref() == Some(BROKER_PROCESS) => Ok(format!("pid {old} gone, {BROKER_PROCESS} pid {new} running")),
                _ => Err(format!("old broker not gone or no new {BROKER_PROCESS} process ({evidence:?})")),
            },
        }
    }
}

/// Numbers following "pid " in `text`, in order.
fn pids(text: &str) -> Vec<u32> {
    text.split("pid ").skip(1).filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()).collect()
}

/// Running (a zombie has exited: only its parent has not collected it yet).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim().to_owned())
}

#[derive(Clone, Debug)]
pub struct Planned {
    pub at: Duration,
    pub kind: FaultKind,
    /// Function name for a kill (None: any), shutdown mode for PostgreSQL.
    pub target: Option<String>,
}

#[derive(Clone, Copy, Debug)]
pub struct Counts {
    pub function_kills: usize,
    pub broker_restarts: usize,
    pub redis_restarts: usize,
    pub postgres_restarts: usize,
}

/// Random times over the load window, one fault per slot (so they never
/// pile up), kinds in random order. The first function kill targets
/// `order` (a flash-sale wave is started just before it); PostgreSQL
/// restarts alternate between fast shutdown and immediate (crash) shutdown.
pub fn plan(rng: &mut Rng, load: Duration, counts: Counts) -> Vec<Planned> {
    let mut kinds = Vec::new();
    kinds.extend(std::iter::repeat_n(FaultKind::FunctionKill, counts.function_kills));
    kinds.extend(std::iter::repeat_n(FaultKind::BrokerRestart, counts.broker_restarts));
    kinds.extend(std::iter::repeat_n(FaultKind::RedisRestart, counts.redis_restarts));
    kinds.extend(std::iter::repeat_n(FaultKind::PostgresRestart, counts.postgres_restarts));
    rng.shuffle(&mut kinds);
    let span = (load.as_secs_f64() - 2.0 * MARGIN_S).max(1.0);
    let slot = span / kinds.len().max(1) as f64;
    let (mut kills, mut restarts) = (0, 0);
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            let at = Duration::from_secs_f64(MARGIN_S + slot * i as f64 + rng.unit() * slot * 0.5);
            let target = match kind {
                FaultKind::FunctionKill => {
                    kills += 1;
                    (kills == 1).then(|| "order".to_owned())
                }
                FaultKind::PostgresRestart => {
                    restarts += 1;
                    Some(if restarts % 2 == 1 { "fast" } else { "immediate" }.to_owned())
                }
                _ => None,
            };
            Planned { at, kind, target }
        })
        .collect()
}

/// Carries out `plan` in order at its times after `start`; `command` is the
/// fault command (program and leading arguments), given the kind and target.
pub async fn run(ctx: Arc<Ctx>, probe: Probe, start: Instant, plan: Vec<Planned>, command: Vec<String>) -> Vec<FaultRecord> {
    let mut records = Vec::new();
    for p in plan {
        tokio::time::sleep_until((start + p.at).into()).await;
        let mut target = p.target.clone();
        for attempt in 1..=KILL_ATTEMPTS_MAX {
            let record = inject(&ctx, &probe, &command, p.kind, target.as_deref()).await;
            let injected = record.injected;
            records.push(record);
            if injected || p.kind != FaultKind::FunctionKill || attempt == KILL_ATTEMPTS_MAX {
                break;
            }
            // Nothing of that name was running: kill whatever is.
            target = None;
            tokio::time::sleep(KILL_RETRY_AFTER).await;
        }
    }
    records
}

async fn inject(ctx: &Ctx, probe: &Probe, command: &[String], kind: FaultKind, target: Option<&str>) -> FaultRecord {
    let before = probe.identity(kind).await;
    let at_s = ctx.t0.elapsed().as_secs_f64();
    let started = Instant::now();
    ctx.log(&format!("fault: {} {}", kind.name(), target.unwrap_or("")));
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..]).arg(kind.command()).args(target).stdin(Stdio::null()).kill_on_drop(true);
    let (injected, evidence) = match tokio::time::timeout(FAULT_TIMEOUT, cmd.output()).await {
        Err(_) => (false, format!("no result within {FAULT_TIMEOUT:?}")),
        Ok(Err(e)) => (false, format!("could not run {command:?}: {e}")),
        Ok(Ok(out)) => {
            let last = |bytes: &[u8]| String::from_utf8_lossy(bytes).lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_owned();
            if out.status.success() {
                (true, last(&out.stdout))
            } else {
                (false, format!("{}: {}", out.status, last(&out.stderr)))
            }
        }
    };
    let (injected, evidence) = match (injected, probe.confirm(kind, before, &evidence).await) {
        (true, Ok(seen)) => (true, format!("{evidence} [confirmed: {seen}]")),
        (true, Err(why)) => (false, format!("{evidence} [NOT confirmed: {why}]")),
        (false, _) => (false, evidence),
    };
    let took_s = started.elapsed().as_secs_f64();
    ctx.log(&format!("fault: {} {} ({took_s:.1} s): {evidence}", kind.name(), if injected { "done" } else { "FAILED" }));
    FaultRecord { at_s, kind, target: target.map(str::to_owned), injected, took_s, evidence }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_pids_and_liveness() {
        assert_eq!(pids("SIGKILL nisshi (pid 27420), started again on the same SQLite file as pid 4630"), vec![27420, 4630]);
        assert_eq!(pids("SIGKILL order (pid 3434; 1 candidate processes)"), vec![3434]);
        assert!(pids("nothing").is_empty());
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX));
    }

    #[test]
    fn the_plan_has_every_fault_once_per_slot_inside_the_window() {
        let counts = Counts { function_kills: 4, broker_restarts: 1, redis_restarts: 2, postgres_restarts: 2 };
        for seed in 1..50 {
            let plan = plan(&mut Rng::new(seed), Duration::from_secs(90), counts);
            assert_eq!(plan.len(), 9);
            assert!(plan.windows(2).all(|w| w[0].at < w[1].at), "in order, one per slot");
            assert!(plan.iter().all(|p| p.at.as_secs_f64() >= MARGIN_S && p.at.as_secs_f64() <= 90.0 - MARGIN_S));
            for kind in FaultKind::ALL {
                assert!(plan.iter().any(|p| p.kind == kind));
            }
            assert_eq!(plan.iter().filter(|p| p.target.as_deref() == Some("order")).count(), 1);
        }
    }
}
