//! TaskPilot's local stack and test harness, on the generic [`emulators`]:
//! the whole stack wired from `template.yaml` ([`stack`]), the OpenAI stub and
//! its scripted or improvised model ([`openai_stub`], [`improvise`]), the
//! sample events ([`events`]) and the contract checkers against the OpenAPI
//! spec, the official ChatKit types and schemathesis.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod chatkit_contract;
pub mod contract;
pub mod events;
pub mod handler;
pub mod improvise;
pub mod openai_stub;
pub mod schemathesis;
pub mod settings;
pub mod stack;

pub use emulators::{Error, Result, free_port, http_client, workspace_root as repo_root};
