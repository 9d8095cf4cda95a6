//! The service's background tasks.

pub(crate) mod prepare;
pub(crate) mod pull;
pub(crate) mod sign;
pub(crate) mod upload;

use std::time::Duration;

use tokio::sync::watch;

/// Tells long-running tasks to stop; cloned into each.
#[derive(Clone)]
pub(crate) struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown is requested (or its sender is gone).
    pub async fn requested(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }

    /// Sleeps for `duration` unless shutdown comes first; true if it did.
    pub async fn sleep(&mut self, duration: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => false,
            () = self.requested() => true,
        }
    }
}
