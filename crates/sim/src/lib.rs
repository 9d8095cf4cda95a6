//! Simulators for running customs179 end to end without a customs IC card or customs.
//!
//! - [`eport`]: the EportClient signing WebSocket with a software card, faults on demand and
//!   an HTTP control endpoint.
//! - [`customs`]: customs' upload endpoint, with its answer codes, the checks customs does
//!   not report (signature, field rules), a report of every upload and faults on demand; and
//!   customs' first call to the platform.
//! - [`keys`]: the simulated card's key pair and self-signed certificate, kept in a state
//!   directory so the certNo survives restarts.

pub mod customs;
pub mod eport;
pub mod keys;
mod server;
