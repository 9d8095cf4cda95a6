//! Simulators for running customs179 end to end without a customs IC card or customs.
//!
//! - [`eport`]: the EportClient signing WebSocket with a software card, faults on demand and
//!   an HTTP control endpoint.
//! - [`keys`]: the simulated card's key pair and self-signed certificate, kept in a state
//!   directory so the certNo survives restarts.

pub mod eport;
pub mod keys;
