//! Crash points: named steps of the money paths where a test can make the
//! process die for real (`abort`, as SIGKILL or an out-of-memory kill
//! would), so recovery is proven against the real aftermath (an open
//! transaction dropped by PostgreSQL, a Redis reservation without an order,
//! an event published without its commit).
//!
//! A test starts the real function binary with `FAILPOINTS=<name>=return`
//! (the `fail` crate's syntax); when the process reaches that step it
//! aborts. Compiled in only with the `failpoints` feature, which only test
//! builds enable; otherwise `crash_point!` expands to nothing.
//!
//! The names, one per step, are listed in [`ALL`] so tests can check every
//! one is exercised.

/// Every crash point in the code, `<function>.<step>`.
pub const ALL: &[&str] = &[
    "pay.after_claim",
    "pay.after_publish",
    "pay.after_commit",
    "order.after_reserve",
    "order.before_commit",
    "order.before_publish",
    "settle.after_commit",
    "fds.after_commit",
    "loyalty.after_commit",
    "benefit.after_commit",
];

/// Aborts the process here when the failpoint `$name` is configured
/// (`FAILPOINTS=$name=return`). The platform bootstrap calls [`setup`],
/// which reads the variable.
#[macro_export]
macro_rules! crash_point {
    ($name:expr) => {
        $crate::failpoint::hit($name)
    };
}

/// What `crash_point!` calls. Its body exists only with the `failpoints`
/// feature (decided here, in this crate, not in the caller's).
#[inline(always)]
pub fn hit(name: &'static str) {
    #[cfg(feature = "failpoints")]
    {
        debug_assert!(ALL.contains(&name), "unlisted crash point {name}");
        if armed(name) {
            eprintln!("crash point {name} reached: aborting");
            std::process::abort();
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}

/// Reads `FAILPOINTS` once per process (the bootstrap calls this).
#[cfg(feature = "failpoints")]
pub fn setup() {
    use std::sync::OnceLock;
    static SCENARIO: OnceLock<()> = OnceLock::new();
    SCENARIO.get_or_init(|| {
        // Leaked on purpose: the scenario must live as long as the process.
        std::mem::forget(fail::FailScenario::setup());
    });
}

#[cfg(not(feature = "failpoints"))]
pub fn setup() {}

/// True when the failpoint `name` is configured to fire now.
#[cfg(feature = "failpoints")]
fn armed(name: &str) -> bool {
    let fired = || -> bool {
        fail::fail_point!(name, |_| true);
        false
    };
    fired()
}
