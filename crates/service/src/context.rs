//! What every handler and worker shares.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use customs179_store::{Millis, Store};
use tokio::sync::Notify;

use crate::config::Config;

/// The shared state of the service: one per process.
#[derive(Clone)]
pub(crate) struct ApiContext {
    pub config: Arc<Config>,
    pub store: Store,
    /// Orders whose requests or payment records were just committed: a
    /// request is prepared the moment its data is there, not at a poll.
    pub prepare: Arc<PrepareQueue>,
    /// Wakes the signer when requests became ready or signing was resumed.
    pub sign: Arc<Notify>,
    /// Wakes the uploader when requests were signed or uploading was resumed.
    pub upload: Arc<Notify>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Set when a signing pause could not be stored before the stop: the
    /// process must then exit non-zero.
    pub pause_lost: Arc<AtomicBool>,
    pub health: Arc<crate::health::Health>,
    /// The card and customs as the workers last saw them.
    pub live: Arc<crate::live::Live>,
    /// This instance among those on the database.
    pub instance: Arc<crate::workers::instance::Instance>,
    /// Set when the service stops: long answers (event streams) end then.
    pub stopping: crate::workers::Shutdown,
}

/// What the preparer should look at next. Only the orders that changed are
/// looked at, so its work does not grow with the number of requests that
/// wait for data; a full sweep catches anything else (after a restart, a
/// replay) now and then.
#[derive(Default)]
pub(crate) struct PrepareQueue {
    orders: Mutex<HashSet<String>>,
    sweep: AtomicBool,
    wake: Notify,
}

impl PrepareQueue {
    /// These orders' requests or records changed.
    pub fn orders<'a>(&self, orders: impl IntoIterator<Item = &'a str>) {
        if let Ok(mut dirty) = self.orders.lock() {
            dirty.extend(orders.into_iter().map(str::to_owned));
        }
        self.wake.notify_one();
    }

    /// Anything may have changed: look at every waiting request.
    pub fn sweep(&self) {
        self.sweep.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// The orders to look at, and whether a full sweep was asked for.
    pub fn take(&self) -> (Vec<String>, bool) {
        let orders = self.orders.lock().map(|mut dirty| dirty.drain().collect()).unwrap_or_default();
        (orders, self.sweep.swap(false, Ordering::Relaxed))
    }

    pub async fn changed(&self) {
        self.wake.notified().await;
    }
}

/// How far the database's clock is ahead of this machine's (ms): set by the
/// instance's heartbeat (see `Store::clock_offset`), 0 on SQLite. One per
/// process, as every store of a process is on one database server.
static CLOCK_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Unix time in milliseconds, by the database's clock: the times of claims
/// and heartbeats that other instances compare with theirs.
pub fn now_ms() -> Millis {
    local_ms().saturating_add(CLOCK_OFFSET_MS.load(Ordering::Relaxed))
}

/// Unix time in milliseconds by this machine's clock.
pub fn local_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(crate) fn set_clock_offset(offset: Millis) {
    CLOCK_OFFSET_MS.store(offset, Ordering::Relaxed);
}
