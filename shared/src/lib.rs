//! paystream's shared platform crate.
//!
//! Every Lambda function links this crate and starts with one call to
//! [`platform::Platform::bootstrap`]. Everything a function needs beyond its own
//! handler code lives here, written once: configuration, tracing, the error
//! catalogue, PostgreSQL, Redis, the Kafka producer, authentication and the
//! domain types that parse instead of validate.

/// Every binary that links this crate (each function, the local tools and
/// benchmarks, the tests) allocates with mimalloc. With glibc's malloc the
/// consumers spent 17-20 % of their CPU in the allocator (1,000-record
/// batches: large buffers freed and coalesced every invocation), and
/// `account` needed the mmap threshold tuned so that each Argon2 hash (19
/// MiB) went back to the OS (145 MB peak RSS otherwise); mimalloc returns
/// freed large blocks by itself. docs/benchmarks-history.md has both measured.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod api;
pub mod apigw;
pub mod aws_secrets;
pub mod auth;
pub mod batch;
pub mod cache;
pub mod config;
pub mod db;
pub mod demo;
pub mod domain;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod flash;
pub mod msk;
pub mod msk_connect;
pub mod openapi;
pub mod sms;
pub mod verification;
pub mod http;
pub mod idempotency;
pub mod kafka;
pub mod memo;
pub mod metrics;
pub mod platform;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod tls;

#[cfg(feature = "testing")]
pub mod testing;

pub use error::{AppError, ErrorCode};
pub use platform::{Need, Platform};
