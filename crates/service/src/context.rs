//! What every handler and worker shares.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use customs179_store::{Millis, Store};
use tokio::sync::Notify;

use crate::config::Config;

/// The shared state of the service: one per process.
#[derive(Clone)]
pub(crate) struct ApiContext {
    pub config: Arc<Config>,
    pub store: Store,
    /// Wakes the preparer when requests or payment records were committed:
    /// a request is prepared the moment its data is there, not at a poll.
    pub prepare: Arc<Notify>,
    /// Wakes the signer when requests became ready or signing was resumed.
    pub sign: Arc<Notify>,
    /// Wakes the uploader when requests were signed or uploading was resumed.
    pub upload: Arc<Notify>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Unix time in milliseconds.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
