//! TaskPilot's integration and contract tests, one module per area, in one
//! binary: it is built and linked once, and the process-wide emulators
//! (DynamoDB Local, moto) start once for every test that needs them.
//!
//! In-process tests of the domain, the store and the chat engine on the
//! ports' fakes run in milliseconds; whole-stack tests drive the real function
//! binaries behind the local API Gateway with the real AWS SDK clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod alarms;
mod attachments;
mod budget;
mod chat_budget;
mod chat_engine;
mod chat_files;
mod chat_history;
mod chat_store;
mod chatkit;
mod chatkit_contract;
mod deployment;
mod faults;
mod frontend;
mod fuzz;
mod health;
mod hostile;
mod load;
mod local_page;
mod local_stack;
mod openai_stream;
mod openapi;
mod sessions;
mod store_dynamodb;
mod tasks_api;
mod tasks_contract;
