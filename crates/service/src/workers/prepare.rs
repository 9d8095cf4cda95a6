//! The preparer: the moment a waiting request's payment record is there,
//! fixes its upload (a new guid, the platform's serviceTime, the pre-sign
//! string built once) so it can be signed. It also gives up, visibly, on
//! requests whose data never came.

use std::time::{Duration, Instant};

use customs179_core::{Guid, PreSign};
use customs179_store::{Pending, PreparedUpload};

use super::Shutdown;
use super::instance::singleton;
use crate::context::{ApiContext, now_ms};

/// How often waiting requests are checked for giving up.
const GIVE_UP_EVERY: Duration = Duration::from_secs(1);
/// How often every waiting request is looked at, whatever changed: a safety
/// net (e.g. a crash between a commit and the wake-up it would have sent).
const FULL_SWEEP_EVERY: Duration = Duration::from_secs(30);
const BATCH: i64 = 256;

pub(crate) async fn run(ctx: ApiContext, mut shutdown: Shutdown) {
    let mut last_sweep = Instant::now();
    let mut last_give_up = Instant::now() - GIVE_UP_EVERY;
    while !shutdown.is_requested() {
        ctx.health.beat("preparer");
        let (orders, mut sweep) = ctx.prepare.take();
        // The safety net is one instance's work; a sweep asked for here (a
        // replay, a change seen) is this one's.
        if last_sweep.elapsed() >= FULL_SWEEP_EVERY {
            last_sweep = Instant::now();
            sweep |= super::instance::holds(&ctx, singleton::SWEEP).await;
        }
        let scope = if sweep { Scope::Everything } else { Scope::Orders(orders) };
        if let Err(e) = prepare_pending(&ctx, &scope).await {
            tracing::error!(error = %e, "preparer: database error");
        }
        if last_give_up.elapsed() >= GIVE_UP_EVERY && super::instance::holds(&ctx, singleton::SWEEP).await {
            last_give_up = Instant::now();
            if let Err(e) = give_up(&ctx).await {
                tracing::error!(error = %e, "preparer: database error");
            }
        }
        tokio::select! {
            () = ctx.prepare.changed() => {}
            () = tokio::time::sleep(GIVE_UP_EVERY) => {}
            () = shutdown.requested() => {}
        }
    }
}

/// Which waiting requests to look at.
enum Scope {
    Everything,
    Orders(Vec<String>),
}

async fn prepare_pending(ctx: &ApiContext, scope: &Scope) -> Result<(), customs179_store::StoreError> {
    match scope {
        Scope::Everything => prepare_some(ctx, None).await,
        Scope::Orders(orders) => {
            for chunk in orders.chunks(usize::try_from(BATCH).unwrap_or(256)) {
                prepare_some(ctx, Some(chunk)).await?;
            }
            Ok(())
        }
    }
}

/// Prepares the waiting requests of `orders` (all waiting ones with None).
async fn prepare_some(
    ctx: &ApiContext,
    orders: Option<&[String]>,
) -> Result<(), customs179_store::StoreError> {
    loop {
        let pending = ctx.store.pending_preparation(orders, BATCH).await?;
        if pending.is_empty() {
            return Ok(());
        }
        for request in &pending {
            let now = now_ms();
            match build_upload(ctx, request, now) {
                Ok(upload) => {
                    if ctx.store.prepare(request, &upload, now).await? {
                        tracing::info!(session_id = request.session_id, guid = %upload.guid, "preparer: ready to sign");
                        ctx.sign.notify_one();
                    }
                }
                // Validation makes this unreachable for stored records. Should
                // it happen, stop this round rather than spin on the same
                // request; it stays visible as waiting and is given up later.
                Err(e) => {
                    tracing::error!(session_id = request.session_id, error = %e, "preparer: cannot build the upload");
                    return Ok(());
                }
            }
        }
    }
}

/// A new upper-case UUID guid for every upload, this platform's ebpCode when
/// the record has none, and now as the platform's serviceTime.
fn build_upload(
    ctx: &ApiContext,
    request: &Pending,
    now: i64,
) -> Result<PreparedUpload, customs179_core::BuildError> {
    let mut record = request.record.clone();
    let guid = Guid::from_random_bytes(uuid::Uuid::new_v4().into_bytes());
    record.head.guid = Some(guid.clone());
    record.head.ebp_code.get_or_insert_with(|| ctx.config.enterprise.ebp_code.clone());
    let service_time = u64::try_from(now).unwrap_or_default();
    let presign = PreSign::build(&record, &request.session_id, service_time)?;
    Ok(PreparedUpload { guid, service_time: now, presign })
}

async fn give_up(ctx: &ApiContext) -> Result<(), customs179_store::StoreError> {
    let after_secs = ctx.config.payments.give_up_after_secs;
    let now = now_ms();
    let cutoff = now.saturating_sub(i64::try_from(after_secs.saturating_mul(1000)).unwrap_or(i64::MAX));
    let reason = format!("no payment data for this order after {after_secs} s");
    let outcome = customs179_store::Outcome::new(super::code::NO_PAYMENT_DATA, &reason);
    for session_id in ctx.store.give_up_waiting(cutoff, &outcome, now).await? {
        tracing::warn!(session_id, reason, "preparer: gave up waiting for payment data");
    }
    Ok(())
}
