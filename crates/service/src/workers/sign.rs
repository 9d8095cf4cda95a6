//! The signer: takes prepared requests, earliest deadline first, has the
//! card sign their pre-sign strings through EportClient, verifies each
//! signature locally and stores it with the upload body built from the
//! very bytes that were signed.
//!
//! Failures follow the spec's allow-list: reader errors and lost connections
//! are retried later; a request the control calls malformed (Base50000) or a
//! signature that does not verify fails the item; anything else may be a
//! wrong PIN or a locked card, so all signing pauses at once, persistently,
//! until an operator resumes. A PIN failure is never retried on its own.

use std::sync::Arc;
use std::time::Duration;

use customs179_core::PreSign;
use customs179_eport::{FailureClass, SignerClient, SignerError};
use customs179_store::{SigningJob, Stage, State, StoreError};
use tokio::sync::mpsc;

use super::{Shutdown, backoff};
use crate::context::{ApiContext, now_ms};

/// Requests claimed at once: the card signs them back to back while their
/// results are committed by another task, so it is not kept waiting on disk.
const BATCH: i64 = 8;
/// Retries after a reader error or an outage back off up to this.
const MAX_BACKOFF_MS: i64 = 30_000;

pub(crate) async fn run(ctx: ApiContext, signer: Arc<SignerClient>, mut shutdown: Shutdown) {
    let (results, mut to_commit) =
        mpsc::channel::<(SigningJob, Result<customs179_eport::CardSignature, SignerError>)>(64);
    let committer = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            while let Some((job, result)) = to_commit.recv().await {
                if let Err(e) = commit(&ctx, &job, result).await {
                    tracing::error!(session_id = job.claim.session_id, error = %e, "signer: database error");
                }
            }
        })
    };
    let timeout_ms = i64::try_from(ctx.config.signer.timeout_ms).unwrap_or(i64::MAX);
    let lease = timeout_ms.saturating_mul(BATCH + 2);
    while !shutdown.is_requested() {
        match ctx.store.pause_of(Stage::Signing).await {
            Ok(None) => {}
            Ok(Some(_)) => {
                wait(&ctx, &mut shutdown, Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "signer: database error");
                wait(&ctx, &mut shutdown, Duration::from_secs(1)).await;
                continue;
            }
        }
        let jobs = match ctx.store.claim_signing(now_ms(), lease, BATCH).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(error = %e, "signer: database error");
                Vec::new()
            }
        };
        if jobs.is_empty() {
            let due = ctx.store.next_due(State::Ready).await.ok().flatten();
            let wait_ms = due.map_or(1_000, |due| (due - now_ms()).clamp(5, 1_000));
            wait(&ctx, &mut shutdown, Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1_000))).await;
            continue;
        }
        let mut jobs = jobs.into_iter();
        while let Some(job) = jobs.next() {
            let started = std::time::Instant::now();
            let result = signer.sign(&job.presign, ctx.config.signer.pin.expose()).await;
            if result.is_ok() {
                ctx.metrics.signed(started.elapsed());
            }
            if let Err(SignerError::Failed { class: FailureClass::Refused, message }) = &result {
                // Paused before anything else reaches the card.
                pause(&ctx, &format!("the card refused: {message}"), &mut shutdown).await;
            }
            if let Err(SignerError::Certificate(message)) = &result {
                pause(&ctx, &format!("the card's certificate is unusable: {message}"), &mut shutdown).await;
            }
            let paused = matches!(
                &result,
                Err(SignerError::Failed { class: FailureClass::Refused, .. } | SignerError::Certificate(_))
            );
            if results.send((job, result)).await.is_err() {
                return;
            }
            if paused {
                for job in jobs.by_ref() {
                    let _ = ctx
                        .store
                        .retry_later(&job.claim, "sign", now_ms(), "signing is paused", now_ms())
                        .await;
                }
            }
            if shutdown.is_requested() {
                for job in jobs.by_ref() {
                    let _ = ctx.store.poll_again(&job.claim, now_ms(), "the service stopped", now_ms()).await;
                }
            }
        }
    }
    drop(results);
    let _ = committer.await;
}

/// Persists the pause; until that succeeds nothing else is signed.
async fn pause(ctx: &ApiContext, reason: &str, shutdown: &mut Shutdown) {
    tracing::error!(
        reason,
        "SIGNING PAUSED: the card refused (a wrong PIN or a locked card?). Fix it, then resume signing \
         (customs179 resume signing, or POST /api/control/signing/resume)"
    );
    while let Err(e) = ctx.store.pause(Stage::Signing, reason, now_ms()).await {
        tracing::error!(error = %e, "signer: cannot persist the pause; retrying");
        if shutdown.sleep(Duration::from_secs(1)).await {
            return;
        }
    }
}

async fn wait(ctx: &ApiContext, shutdown: &mut Shutdown, at_most: Duration) {
    tokio::select! {
        () = ctx.sign.notified() => {}
        _ = shutdown.sleep(at_most) => {}
    }
}

async fn commit(
    ctx: &ApiContext,
    job: &SigningJob,
    result: Result<customs179_eport::CardSignature, SignerError>,
) -> Result<(), StoreError> {
    let now = now_ms();
    let session_id = job.claim.session_id.as_str();
    let error = match result {
        Ok(signature) => {
            let body = match PreSign::parse(&job.presign) {
                Ok(presign) => presign.upload_body(&signature.cert_no, &signature.sign_value),
                Err(e) => {
                    ctx.store
                        .fail(
                            &job.claim,
                            "sign",
                            &format!("the stored pre-sign string is unreadable: {e}"),
                            now,
                        )
                        .await?;
                    return Ok(());
                }
            };
            if ctx.store.signed(job, &signature.cert_no, &signature.sign_value, body.as_str(), now).await? {
                tracing::info!(session_id, cert_no = signature.cert_no, "signer: signed and verified");
                ctx.upload.notify_one();
            }
            return Ok(());
        }
        Err(error) => error,
    };
    let reason = error.to_string();
    match error {
        SignerError::Unavailable(_) | SignerError::Failed { class: FailureClass::ReaderUnwell, .. } => {
            tracing::warn!(session_id, reason, "signer: will retry");
            let next = now + backoff(1_000, job.claim.attempts, MAX_BACKOFF_MS);
            ctx.store.retry_later(&job.claim, "sign", next, &reason, now).await?;
        }
        SignerError::Failed { class: FailureClass::BadArguments, .. } | SignerError::BadSignature(_) => {
            tracing::error!(session_id, reason, "signer: the item failed");
            ctx.store.fail(&job.claim, "sign", &reason, now).await?;
        }
        // The pause itself was persisted by the signing loop.
        SignerError::Failed { class: FailureClass::Refused, .. } | SignerError::Certificate(_) => {
            ctx.store.retry_later(&job.claim, "sign", now, &reason, now).await?;
        }
    }
    Ok(())
}
