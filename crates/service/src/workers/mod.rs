//! The service's background tasks.

pub(crate) mod alerts;
pub(crate) mod instance;
pub(crate) mod prepare;
pub(crate) mod pull;
pub(crate) mod sign;
pub(crate) mod upload;

/// The codes of problems that are not the card's or customs' answers (see
/// `SignerError::code` for the card's; customs' are its answer codes).
/// OPERATIONS.md lists them all.
pub(crate) mod code {
    /// The platform has no payment data for the order (yet), or never had it in time.
    pub(crate) const NO_PAYMENT_DATA: &str = "no_payment_data";
    /// The platform's pull URL could not be read (no connection, an HTTP error).
    pub(crate) const PULL_FAILED: &str = "pull_failed";
    /// The platform's payment data is unusable for this order.
    pub(crate) const INVALID_RECORD: &str = "invalid_record";
    /// The platform's payment data conflicts with what is stored.
    pub(crate) const PAYMENT_CONFLICT: &str = "payment_conflict";
    /// The database refused a write; retried.
    pub(crate) const DATABASE: &str = "database_error";
    /// The stored pre-sign string cannot be read back.
    pub(crate) const UNREADABLE_PRESIGN: &str = "unreadable_presign";
    /// Given back untried: signing is paused.
    pub(crate) const SIGNING_PAUSED: &str = "signing_paused";
    /// Given back untried: another instance drives the card now.
    pub(crate) const NOT_DRIVEN: &str = "card_not_driven_here";
    /// Given back untried: the service stopped.
    pub(crate) const STOPPED: &str = "stopped";
}

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

/// Every log line about a request carries its sessionID and orderNo.
pub(crate) fn request_span(claim: &customs179_store::Claim) -> tracing::Span {
    tracing::info_span!("request", session_id = %claim.session_id, order_no = %claim.order_no)
}

/// Checkpoints the store's write-ahead log every second, off the commit path.
pub(crate) async fn checkpoints(ctx: crate::context::ApiContext, mut shutdown: Shutdown) {
    while !shutdown.sleep(Duration::from_secs(1)).await {
        ctx.health.beat("checkpoints");
        if let Err(e) = ctx.store.checkpoint().await {
            tracing::warn!(error = %e, "checkpoint failed");
        }
    }
}

/// Notices within a second what an operator changed behind the service's
/// back (a replay, pause or resume from the CLI, which works on the database
/// directly), and wakes the workers it concerns.
pub(crate) async fn watch_changes(ctx: crate::context::ApiContext, mut shutdown: Shutdown) {
    let mut seen = ctx.store.changes().await.ok();
    while !shutdown.sleep(Duration::from_secs(1)).await {
        ctx.health.beat("change watcher");
        match ctx.store.changes().await {
            Ok(version) if Some(version) != seen => {
                seen = Some(version);
                ctx.prepare.sweep();
                ctx.sign.notify_one();
                ctx.upload.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the change counter"),
        }
    }
}

/// Retries a store operation until the database takes it: a commit that
/// fails (the disk busy past the busy timeout) would otherwise leave its
/// request claimed until the lease runs out. Gives up after [`DB_PATIENCE`],
/// leaving the lease to expire (or the next start to release it).
pub(crate) struct DbRetry {
    what: &'static str,
    started: std::time::Instant,
    wait: Duration,
}

impl DbRetry {
    pub fn new(what: &'static str) -> DbRetry {
        DbRetry { what, started: std::time::Instant::now(), wait: Duration::from_millis(100) }
    }

    /// After a failed attempt: waits and answers true to try again, or false to give up.
    pub async fn again(&mut self, e: &customs179_store::StoreError) -> bool {
        if self.started.elapsed() >= DB_PATIENCE {
            tracing::error!(error = %e, "{}: database error; giving up", self.what);
            return false;
        }
        tracing::warn!(error = %e, retry_in_ms = self.wait.as_millis(), "{}: database error; retrying", self.what);
        tokio::time::sleep(self.wait).await;
        self.wait = (self.wait * 2).min(Duration::from_secs(2));
        true
    }
}

/// How long [`DbRetry`] keeps trying.
const DB_PATIENCE: Duration = Duration::from_secs(30);

/// Exponential backoff as data: `first_ms × 2^(attempts − 1)`, capped at
/// `cap_ms` (and never below `first_ms`).
pub(crate) fn backoff(first_ms: i64, attempts: i64, cap_ms: i64) -> i64 {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    first_ms.saturating_mul(1i64 << exponent).min(cap_ms.max(first_ms))
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_up_to_its_cap() {
        use super::backoff;
        assert_eq!(backoff(5_000, 1, 60_000), 5_000);
        assert_eq!(backoff(5_000, 2, 60_000), 10_000);
        assert_eq!(backoff(5_000, 4, 60_000), 40_000);
        assert_eq!(backoff(5_000, 5, 60_000), 60_000);
        assert_eq!(backoff(5_000, 0, 60_000), 5_000);
        assert_eq!(backoff(5_000, i64::MAX, 60_000), 60_000);
        assert_eq!(backoff(120_000, 3, 60_000), 120_000, "never below the first wait");
    }
}
