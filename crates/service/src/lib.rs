//! customs179's long-running service: intake, payments API, admin API, workers.
//!
//! [`Service::start`] binds both listeners and starts every task; `main`
//! (the `serve` command) and the tests drive the very same code.

pub mod card;
pub mod config;
mod context;
mod customs;
mod health;
mod http;
mod live;
mod metrics;
mod service;
mod workers;

pub use context::now_ms;
pub use service::{Service, StartError, StopError};
