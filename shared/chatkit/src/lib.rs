//! The self-hosted ChatKit protocol (see `../shared/research/chatkit-protocol.md`
//! §2–§3): wire types with the exact field names, request parsing with clear
//! errors, the server-sent events, and the port the thread store implements.
//! No AWS or HTTP types live here.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod ids;
pub mod model;
pub mod request;
pub mod server;
pub mod sink;
pub mod store;
pub mod tools;
pub mod types;
pub mod widgets;
