//! customs179's long-running service: intake, payments API, admin API, workers.

pub mod config;
