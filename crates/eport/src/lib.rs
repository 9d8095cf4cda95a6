//! The EportClient signing WebSocket (see the spec's eportclient-websocket.md).
//!
//! - [`frames`]: the JSON frames both ways and the allow-list that classifies
//!   failures. Pure; the simulator speaks through the same types.
//! - [`client`]: [`SignerClient`], one long-lived connection, one request in
//!   flight, a timeout per request, reconnection with backoff.

pub mod client;
pub mod frames;

pub use client::{CardIdentity, CardSession, CardSignature, SignerClient, SignerError};
pub use frames::{FailureClass, Method, Outcome, Reply, RequestFrame};
