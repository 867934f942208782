//! The self-hosted ChatKit protocol and its engine, shaped like the reference
//! SDK (chatkit-python): wire types (`types`, `widget`), requests (`request`),
//! the engine that runs them (`engine`, with the persistence rules of a stream
//! in `turn`), and the ports it drives: the thread store (`store`), the event
//! sink (`sink`) and the responder (`responder`). The task assistant, one
//! responder, is its own crate (`taskpilot-assistant`), talking to a model
//! through the typed `model` port.
//! No AWS, HTTP or vendor wire types live here.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod attachments;
pub mod context;
pub mod dictation;
pub mod engine;
pub mod ids;
pub mod metrics;
pub mod model;
pub mod params;
pub mod request;
pub mod responder;
pub mod sink;
pub mod store;
pub mod structured;
pub mod turn;
pub mod types;
pub mod widget;
pub mod zone;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
