//! Local stand-ins for API Gateway, the MSK event source mappings and
//! EventBridge schedules. Both read `template.yaml` (the one source of
//! truth) and call functions through the Lambda Invoke API, so they work
//! with `cargo lambda watch` here and with `sam local start-lambda` where
//! Docker exists.

pub mod client;
pub mod poller;
pub mod template;
