//! HTTP glue shared by every TaskPilot Lambda: identity, the one error→response
//! mapping, JSON helpers, CORS, tracing set-up, the chat budget's settings and the runner
//! that keeps a process serving after a panic.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
pub mod budget;
pub mod cors;
pub mod cpu;
pub mod error;
pub mod events;
pub mod json;
mod jwks;
pub mod metrics;
pub mod request;
pub mod routes;
pub mod serve;
pub mod telemetry;

pub use auth::Authenticator;
pub use cors::Cors;
pub use error::{ApiError, UpstreamError};
pub use lambda_http::{Body, Request, Response};
