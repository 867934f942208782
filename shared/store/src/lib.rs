//! DynamoDB storage for TaskPilot: the adapter behind the domain's ports.
//!
//! One table, keyed by `pk`/`sk`. Every entity of a user lives in that user's
//! partition (`pk = USER#<sub>`) under its own sort-key prefix, so no key ever
//! depends on anything but the verified user id and a server-made id.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "chat")]
mod activity;
#[cfg(feature = "chat")]
mod attachments;
#[cfg(feature = "chat")]
mod chat;
mod client;
mod error;
mod item;
mod keys;
mod rate_limit;
mod sessions;
mod table;
mod tasks;
mod usage;

pub use client::dynamodb_client;
pub use table::{DynamoStore, WARM_UP_BUDGET};
pub use usage::USAGE_RETENTION_DAYS;
