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
use tracing::Instrument as _;

use super::{Shutdown, backoff};
use crate::context::{ApiContext, now_ms};

/// Requests claimed ahead of the card: while it signs one, the next few are
/// already claimed and read, and results are committed by another task, so
/// the card never waits for the disk.
const PREFETCH: usize = 4;
/// Retries after a reader error or an outage back off up to this.
const MAX_BACKOFF_MS: i64 = 30_000;
/// The most [`SignerClient`] waits between reconnection attempts.
const CLIENT_MAX_BACKOFF_MS: i64 = 10_000;

type Signed = Result<customs179_eport::CardSignature, SignerError>;

pub(crate) async fn run(ctx: ApiContext, signer: Arc<SignerClient>, mut shutdown: Shutdown) {
    let (results, mut to_commit) = mpsc::channel::<(SigningJob, Signed)>(64);
    let committer = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            while let Some((job, result)) = to_commit.recv().await {
                let span = super::request_span(&job.claim);
                if let Err(e) = commit(&ctx, &job, result).instrument(span).await {
                    tracing::error!(session_id = job.claim.session_id, error = %e, "signer: database error");
                }
            }
        })
    };
    let (claimed, mut jobs) = mpsc::channel::<SigningJob>(PREFETCH);
    let claimer = tokio::spawn(claim_ahead(ctx.clone(), claimed, shutdown.clone()));
    loop {
        let job = tokio::select! {
            job = jobs.recv() => job,
            () = shutdown.requested() => None,
        };
        let Some(job) = job else { break };
        // A pause may have come after this job was claimed.
        if !matches!(ctx.store.pause_of(Stage::Signing).await, Ok(None)) {
            give_back(&ctx, &job, 0, "signing is paused").await;
            continue;
        }
        let started = std::time::Instant::now();
        let result = tokio::select! {
            result = signer.sign(&job.presign, ctx.config.signer.pin.expose()) => result,
            () = shutdown.requested() => {
                give_back(&ctx, &job, 0, "the service stopped").await;
                break;
            }
        };
        if result.is_ok() {
            ctx.metrics.signed(started.elapsed());
        }
        // Paused before anything else reaches the card.
        match &result {
            Err(SignerError::Failed { class: FailureClass::Refused, message }) => {
                pause(&ctx, &format!("the card refused: {message}"), &mut shutdown).await;
            }
            Err(SignerError::Certificate(message)) => {
                pause(&ctx, &format!("the card's certificate is unusable: {message}"), &mut shutdown).await;
            }
            _ => {}
        }
        let unwell = matches!(
            &result,
            Err(SignerError::Unavailable(_) | SignerError::Failed { class: FailureClass::ReaderUnwell, .. })
        );
        if results.send((job, result)).await.is_err() {
            break;
        }
        if unwell {
            // The jobs claimed ahead would only wait out the client's
            // reconnection backoff, one after the other: give them back.
            while let Ok(job) = jobs.try_recv() {
                give_back(&ctx, &job, 1_000, "the signer is unavailable").await;
            }
        }
    }
    jobs.close();
    while let Some(job) = jobs.recv().await {
        give_back(&ctx, &job, 0, "the service stopped").await;
    }
    let _ = claimer.await;
    drop(results);
    let _ = committer.await;
}

/// Keeps up to [`PREFETCH`] ready requests claimed ahead of the card,
/// earliest deadline first, while signing is not paused.
async fn claim_ahead(ctx: ApiContext, claimed: mpsc::Sender<SigningJob>, mut shutdown: Shutdown) {
    // Long enough for every job ahead to wait out a signature or a reconnection.
    let per_job =
        i64::try_from(ctx.config.signer.timeout_ms).unwrap_or(i64::MAX).saturating_add(CLIENT_MAX_BACKOFF_MS);
    let lease = per_job.saturating_mul(i64::try_from(PREFETCH).unwrap_or(4) + 2);
    while !shutdown.is_requested() {
        let paused = match ctx.store.pause_of(Stage::Signing).await {
            Ok(pause) => pause.is_some(),
            Err(e) => {
                tracing::error!(error = %e, "signer: database error");
                true
            }
        };
        if paused {
            wait(&ctx, &mut shutdown, Duration::from_secs(1)).await;
            continue;
        }
        let permit = tokio::select! {
            permit = claimed.reserve() => permit,
            () = shutdown.requested() => break,
        };
        let Ok(permit) = permit else { break };
        match ctx.store.claim_signing(now_ms(), lease, 1).await {
            Ok(mut jobs) if !jobs.is_empty() => permit.send(jobs.remove(0)),
            Ok(_) => {
                drop(permit);
                let due = ctx.store.next_due(State::Ready).await.ok().flatten();
                let wait_ms = due.map_or(1_000, |due| (due - now_ms()).clamp(5, 1_000));
                wait(&ctx, &mut shutdown, Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1_000)))
                    .await;
            }
            Err(e) => {
                drop(permit);
                tracing::error!(error = %e, "signer: database error");
                wait(&ctx, &mut shutdown, Duration::from_secs(1)).await;
            }
        }
    }
}

/// Releases a claimed job untried, due again in `delay_ms`.
async fn give_back(ctx: &ApiContext, job: &SigningJob, delay_ms: i64, why: &str) {
    let now = now_ms();
    if let Err(e) = ctx.store.poll_again(&job.claim, now + delay_ms, why, now).await {
        tracing::error!(session_id = job.claim.session_id, error = %e, "signer: database error");
    }
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
