//! The uploader: posts signed requests to customs, a few in parallel,
//! earliest deadline first, and acts on every answer of spec 1.2.
//!
//! 10000 delivered; 20006 delivered by an earlier attempt (on a first
//! attempt, an anomaly worth showing); 20004 refuses the certNo of the card
//! that signed: that card's uploads pause and its signed requests go back to
//! be signed by another card, or, with no other card left, all uploads stop,
//! persistently, until an operator resumes; anything else
//! (timeouts included) is retried with exponential backoff and jitter up to
//! `[customs] retry_max_secs`, until `[customs] give_up_after_secs` after
//! customs' call, when the request fails with the last answer as reason.

use std::time::Duration;

use customs179_core::AnswerClass;
use customs179_store::{CertificateRefused, Delivery, Outcome, Stage, State, StoreError, UploadJob};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use super::{Shutdown, backoff};
use crate::context::{ApiContext, now_ms};
use crate::customs::CustomsClient;

/// Uploads in flight at once.
const PARALLEL: i64 = 4;
/// The first retry comes after about this long.
const FIRST_RETRY_MS: i64 = 1_000;

pub(crate) async fn run(ctx: ApiContext, client: CustomsClient, mut shutdown: Shutdown) {
    let timeout_ms = i64::try_from(ctx.config.customs.timeout_ms).unwrap_or(i64::MAX);
    let lease = timeout_ms.saturating_mul(3);
    while !shutdown.is_requested() {
        ctx.health.beat("uploader");
        let paused = match ctx.store.pause_of(Stage::Uploading).await {
            Ok(pause) => pause.is_some(),
            Err(e) => {
                tracing::error!(error = %e, "uploader: database error");
                true
            }
        };
        let jobs = if paused {
            Vec::new()
        } else {
            ctx.store.claim_uploads(now_ms(), lease, PARALLEL).await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "uploader: database error");
                Vec::new()
            })
        };
        if jobs.is_empty() {
            let due = if paused { None } else { ctx.store.next_due(State::Signed).await.ok().flatten() };
            let wait_ms = due.map_or(1_000, |due| (due - now_ms()).clamp(5, 1_000));
            tokio::select! {
                () = ctx.upload.notified() => {}
                _ = shutdown.sleep(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1_000))) => {}
            }
            continue;
        }
        let mut uploads = JoinSet::new();
        for job in jobs {
            let (ctx, client) = (ctx.clone(), client.clone());
            let span = super::request_span(&job.claim);
            uploads.spawn(
                async move {
                    let started = std::time::Instant::now();
                    let answer = client.upload(&job.upload_body).await;
                    let took_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
                    note_answer(&ctx, &answer);
                    let mut retry = super::DbRetry::new("uploader");
                    while let Err(e) = settle(&ctx, &job, answer.clone(), took_ms).await {
                        if !retry.again(&e).await {
                            break;
                        }
                    }
                }
                .instrument(span),
            );
        }
        uploads.join_all().await;
    }
}

/// Counts an answer once, however often its settling is retried.
fn note_answer(ctx: &ApiContext, answer: &crate::customs::Answer) {
    ctx.metrics.customs_answer(&answer.code);
    let stored = matches!(answer.class, AnswerClass::Delivered | AnswerClass::AlreadyStored);
    ctx.live.customs_answered(&answer.code, stored, now_ms());
}

/// Records what an answer means for the request. Every write is guarded by
/// the claim's generation, so running it again after a database error
/// does not apply a change twice.
async fn settle(
    ctx: &ApiContext,
    job: &UploadJob,
    answer: crate::customs::Answer,
    took_ms: i64,
) -> Result<(), StoreError> {
    let now = now_ms();
    let outcome = Outcome::new(&answer.code, &answer.record).took(took_ms);
    let session_id = job.claim.session_id.as_str();
    let late = now > job.claim.deadline_at;
    let since_call = Duration::from_millis(u64::try_from(now - job.claim.received_at).unwrap_or(0));
    match answer.class {
        AnswerClass::Delivered => {
            if ctx.store.delivered(job, Delivery::Stored, &outcome, now).await? {
                ctx.metrics.delivered(since_call, late, false);
                tracing::info!(session_id, late, "uploader: delivered");
            }
        }
        AnswerClass::AlreadyStored => {
            if job.claim.attempts <= 1 {
                tracing::warn!(
                    session_id,
                    answer = answer.record,
                    "uploader: 20006 on a first attempt (anomaly)"
                );
            }
            if ctx.store.delivered(job, Delivery::AlreadyStored, &outcome, now).await? {
                ctx.metrics.delivered(since_call, late, job.claim.attempts <= 1);
                tracing::info!(session_id, late, "uploader: delivered by an earlier attempt (20006)");
            }
        }
        AnswerClass::ConfigurationError { message } => {
            let reason =
                format!("customs answered 20004 (certNo not registered, or not this ebpCode's): {message}");
            let cards: Vec<&str> = ctx.config.signers.iter().map(|s| s.name.as_str()).collect();
            // The attempt is on record before the pause shows; no new upload is
            // claimed before this settles (the claim loop waits for its batch).
            match ctx.store.certificate_refused(job, &cards, &outcome, &reason, now).await? {
                CertificateRefused::SentBack { card, requests } => {
                    tracing::error!(
                        session_id,
                        card,
                        sent_back = requests.len(),
                        reason,
                        "UPLOADS OF THIS CARD PAUSED: its signed requests go back to be signed by another card. \
                         Register its certNo, then resume its uploads \
                         (customs179 resume uploading --card NAME, or POST /api/control/cards/NAME/uploading/resume)"
                    );
                    ctx.sign.notify_one();
                }
                CertificateRefused::AllStopped => tracing::error!(
                    session_id,
                    reason,
                    "UPLOADS STOPPED: no other card is left. Fix the registration, then resume uploading \
                     (customs179 resume uploading, or POST /api/control/uploading/resume)"
                ),
                CertificateRefused::Lost => {}
            }
        }
        AnswerClass::Retryable { .. } | AnswerClass::Unknown { .. } => {
            let give_up_ms =
                i64::try_from(ctx.config.customs.give_up_after_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            if now.saturating_sub(job.claim.waiting_since) >= give_up_ms {
                let reason = format!(
                    "gave up after {} s; last answer: {}",
                    ctx.config.customs.give_up_after_secs, answer.record
                );
                tracing::error!(session_id, reason, "uploader: failed");
                let outcome = Outcome { text: &reason, ..outcome };
                ctx.store.fail(&job.claim, "upload", &outcome, now).await?;
            } else {
                let cap =
                    i64::try_from(ctx.config.customs.retry_max_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
                let next = now + jittered(backoff(FIRST_RETRY_MS, job.claim.attempts, cap), jitter());
                tracing::warn!(
                    session_id,
                    answer = answer.record,
                    retry_in_ms = next - now,
                    "uploader: will retry"
                );
                ctx.store.retry_later(&job.claim, "upload", next, &outcome, now).await?;
            }
        }
    }
    Ok(())
}

/// A fraction in [0, 1) from the OS's randomness (via a v4 UUID's bits).
fn jitter() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64 >> 11;
    bits as f64 / (1u64 << 53) as f64
}

/// Spreads a wait uniformly over [½, 1) of itself, so that retries of many
/// items after one outage do not arrive together.
fn jittered(wait_ms: i64, jitter: f64) -> i64 {
    wait_ms / 2 + (wait_ms as f64 / 2.0 * jitter) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_jittered_within_half_of_the_schedule() {
        assert_eq!(jittered(1_000, 0.0), 500);
        assert_eq!(jittered(1_000, 0.999_999), 999);
        let spread: std::collections::BTreeSet<i64> =
            (0..50).map(|_| jittered(backoff(FIRST_RETRY_MS, 4, 300_000), jitter())).collect();
        assert!(spread.len() > 10, "jitter spreads retries: {spread:?}");
        assert!(spread.iter().all(|&ms| (4_000..8_000).contains(&ms)), "{spread:?}");
        assert!(jittered(backoff(FIRST_RETRY_MS, 40, 300_000), 0.999) < 300_000);
    }
}
