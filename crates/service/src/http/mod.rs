//! The two HTTP faces of the service: intake (customs, public) and the
//! admin API (operators and the platform, token-protected).

pub(crate) mod admin;
mod alerts;
mod controls;
mod error;
mod events;
mod export;
pub(crate) mod intake;
pub(crate) mod listener;
mod payments;
pub(crate) mod replays;
mod requests;
mod status;

pub(crate) use error::{ApiError, id_param, stored_text};

pub(crate) use payments::parse_records;
