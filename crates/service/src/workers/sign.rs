//! The signers, one per card: each takes prepared requests from the one
//! queue, in the queue's order, has its card sign their pre-sign strings
//! through its EportClient, verifies each signature locally against that
//! card's certificate and stores it, with the card's name and certNo, in the
//! upload body built from the very bytes that were signed.
//!
//! Failures follow the spec's allow-list: reader errors and lost connections
//! are retried later; a request the control calls malformed (Base50000)
//! fails the item; anything else may be a wrong PIN or a locked card, so the
//! card's signing pauses at once, persistently, until an operator resumes
//! it (the other cards go on). A Sign without an answer is retried only once
//! the PIN is proven on the card (see [`crate::card`]); before that it
//! pauses the card too. Unusable signatures (not verifying, missing, another
//! certNo) send their items back to be signed again, and the card's
//! `breaker_after` of them in a row pause the card.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use customs179_core::PreSign;
use customs179_eport::{FailureClass, SignerClient, SignerError};
use customs179_store::Pause;
use customs179_store::{CardLease, Outcome, SigningJob, Stage, State, StoreError};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::{Shutdown, backoff, code};
use crate::card;
use crate::config::SignerConfig;
use crate::context::{ApiContext, now_ms};

/// Requests claimed ahead of the card: while it signs one, the next few are
/// already claimed and read, and results are committed by another task, so
/// the card never waits for the disk.
const PREFETCH: usize = 4;
/// Retries after a reader error or an outage back off up to this.
const MAX_BACKOFF_MS: i64 = 30_000;
/// The most [`SignerClient`] waits between reconnection attempts.
const CLIENT_MAX_BACKOFF_MS: i64 = 10_000;
/// How long a pause the database refuses is retried once the service is
/// stopping; after that it stays in the file the store keeps for it, and the
/// process exits non-zero.
const PAUSE_RETRY_AT_STOP: Duration = Duration::from_secs(5);
/// Who pauses signing for a certificate out of date: only such a pause is
/// lifted by the service itself, once a card with a valid certificate connects.
pub(crate) const CERTIFICATE_CHECK: &str = "certificate check";

type Signed = Result<customs179_eport::CardSignature, SignerError>;

/// What the card answered, and how long the signing took (connecting
/// included, should the connection have been down).
struct CardAnswer {
    card: Arc<Card>,
    result: Signed,
    took_ms: i64,
}

/// One card, as its signer holds it.
pub(crate) struct Card {
    pub config: SignerConfig,
    pub client: SignerClient,
    /// Its signer's task name, for the health report.
    pub task: &'static str,
    /// Until when (unix ms) the card is left alone after its EportClient
    /// could not be reached, and how long the last such wait was: the other
    /// cards take the work meanwhile.
    pub unwell_until: AtomicI64,
    pub unwell_for: AtomicI64,
    /// Whether another instance was last seen driving the card (told once in the log).
    driven_elsewhere: AtomicBool,
}

impl Card {
    pub fn new(config: SignerConfig, client: SignerClient, task: &'static str) -> Card {
        Card {
            config,
            client,
            task,
            unwell_until: AtomicI64::new(0),
            unwell_for: AtomicI64::new(0),
            driven_elsewhere: AtomicBool::new(false),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The card could not be reached: nothing is claimed for it for a while
    /// (1 s, doubling up to [`MAX_BACKOFF_MS`] while it stays away).
    fn unwell(&self, now: i64) {
        let wait = (self.unwell_for.load(Ordering::Relaxed) * 2).clamp(1_000, MAX_BACKOFF_MS);
        self.unwell_for.store(wait, Ordering::Relaxed);
        self.unwell_until.store(now + wait, Ordering::Relaxed);
    }

    fn well(&self) {
        self.unwell_for.store(0, Ordering::Relaxed);
        self.unwell_until.store(0, Ordering::Relaxed);
    }
}

pub(crate) async fn run(ctx: ApiContext, card: Arc<Card>, mut shutdown: Shutdown) {
    let signer = &card.client;
    let name = card.name();
    let holder = card::service_holder(&ctx.instance.name, name);
    let (results, mut to_commit) = mpsc::channel::<(SigningJob, CardAnswer)>(64);
    let committer = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            while let Some((job, answer)) = to_commit.recv().await {
                let span = super::request_span(&job.claim);
                let mut retry = super::DbRetry::new("signer");
                async {
                    while let Err(e) = commit(&ctx, &job, &answer).await {
                        if !retry.again(&e).await {
                            break;
                        }
                    }
                }
                .instrument(span)
                .await;
            }
        })
    };
    drive(&ctx, &card).await;
    let (claimed, mut jobs) = mpsc::channel::<SigningJob>(PREFETCH);
    let claimer = tokio::spawn(claim_ahead(ctx.clone(), card.clone(), claimed, shutdown.clone()));
    let breaker_after = card.config.breaker_after;
    let mut unusable_in_a_row = 0u64;
    // The first idle second probes: the status and alerts know the card from the start.
    let mut last_probe =
        std::time::Instant::now().checked_sub(PROBE_EVERY).unwrap_or_else(std::time::Instant::now);
    loop {
        ctx.health.beat(card.task);
        let job = tokio::select! {
            job = jobs.recv() => job,
            () = shutdown.requested() => None,
            // Beats while nothing is to be signed, or signing is paused.
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                // Another instance drives the card: it is not asked anything.
                if !drive(&ctx, &card).await {
                    continue;
                }
                // Under a certificate pause the card is asked every second anyway.
                let mut asked = lift_certificate_pause(&ctx, &card).await;
                if !asked && last_probe.elapsed() >= PROBE_EVERY {
                    probe(&ctx, &card).await;
                    asked = true;
                }
                if asked {
                    last_probe = std::time::Instant::now();
                }
                continue;
            }
        };
        let Some(job) = job else { break };
        if !drives(&ctx, name) {
            give_back(&ctx, &job, 0, code::NOT_DRIVEN, "this instance does not drive the card now").await;
            continue;
        }
        // A pause may have come after this job was claimed: the request tells which.
        match ctx.store.card_signing_stop(name).await {
            Ok(None) => {}
            Ok(Some(pause)) => {
                let why = format!("signing is paused: {}", pause.reason);
                give_back(&ctx, &job, 0, code::SIGNING_PAUSED, &why).await;
                continue;
            }
            Err(_) => {
                give_back(
                    &ctx,
                    &job,
                    0,
                    code::SIGNING_PAUSED,
                    "signing may be paused (the database is not answering)",
                )
                .await;
                continue;
            }
        }
        let started = std::time::Instant::now();
        let session = tokio::select! {
            session = signer.session() => session,
            () = shutdown.requested() => {
                give_back(&ctx, &job, 0, code::STOPPED, "the service stopped").await;
                break;
            }
        };
        // Once sent, a Sign is waited for (its timeout bounds it) even when
        // the service is stopping: an abandoned Sign is an unknown outcome.
        let attempt = match session {
            Ok(session) => {
                if let Some(identity) = session.identity() {
                    ctx.live.card_connected(name, identity, now_ms());
                    // Checked before each signature: customs refuses what an
                    // expired certificate signs, and every upload would fail.
                    if let Some(reason) = certificate_out_of_date(identity.verifier.validity(), now_ms()) {
                        drop(session);
                        pause(&ctx, &card, &reason, Some(CERTIFICATE_CHECK), &mut shutdown).await;
                        // Coded as the card's own certificate problems are.
                        let code = SignerError::Certificate(String::new()).code();
                        give_back(&ctx, &job, 0, code, &reason).await;
                        continue;
                    }
                }
                card::sign(session, &ctx.store, &holder, name, &job.presign, card.config.pin.expose()).await
            }
            Err(e) => card::Attempt { result: Err(e), pin_proven: false, pause: None },
        };
        let took = started.elapsed();
        match &attempt.result {
            Ok(_) => {
                ctx.metrics.signed(name, took);
                ctx.live.card_signed(name, now_ms());
            }
            Err(e) => card_failed(&ctx, name, e),
        }
        unusable_in_a_row = match &attempt.result {
            Err(SignerError::BadSignature(_)) => unusable_in_a_row + 1,
            Ok(_) => 0,
            Err(_) => unusable_in_a_row,
        };
        let pause_reason = attempt.pause.clone().or_else(|| match &attempt.result {
            Err(SignerError::BadSignature(reason)) if unusable_in_a_row >= breaker_after => {
                unusable_in_a_row = 0;
                Some(format!(
                    "{breaker_after} requests in a row got an unusable signature from the card (last: {reason}); \
                     they wait to be signed again. Check the card and EportClient, then resume its signing"
                ))
            }
            _ => None,
        });
        // Paused before anything else reaches the card.
        if let Some(reason) = pause_reason {
            pause(&ctx, &card, &reason, None, &mut shutdown).await;
        }
        // The code of an outage of the card or its reader, if this was one.
        let unwell = match &attempt.result {
            Err(
                e @ (SignerError::Unavailable(_)
                | SignerError::Failed { class: FailureClass::ReaderUnwell, .. }),
            ) => Some(e.code()),
            Err(e @ SignerError::NoAnswer(_)) if attempt.pause.is_none() => Some(e.code()),
            _ => None,
        };
        let took_ms = i64::try_from(took.as_millis()).unwrap_or(i64::MAX);
        let answer_ok = attempt.result.is_ok();
        let answer = CardAnswer { card: card.clone(), result: attempt.result, took_ms };
        if results.send((job, answer)).await.is_err() {
            break;
        }
        match (&unwell, &answer_ok) {
            (Some(_), _) => card.unwell(now_ms()),
            (None, true) => card.well(),
            (None, false) => {}
        }
        if let Some(unwell) = unwell {
            // The jobs claimed ahead would only wait out the client's
            // reconnection backoff, one after the other: give them back.
            while let Ok(job) = jobs.try_recv() {
                give_back(&ctx, &job, 1_000, unwell, "the signer is unavailable").await;
            }
        }
    }
    jobs.close();
    while let Some(job) = jobs.recv().await {
        give_back(&ctx, &job, 0, code::STOPPED, "the service stopped").await;
    }
    let _ = claimer.await;
    drop(results);
    let _ = committer.await;
}

/// Keeps up to [`PREFETCH`] ready requests claimed ahead of the card, in
/// the queue's order, while nothing stops the card signing.
async fn claim_ahead(
    ctx: ApiContext,
    card: Arc<Card>,
    claimed: mpsc::Sender<SigningJob>,
    mut shutdown: Shutdown,
) {
    // Long enough for every job ahead to wait out a signature or a reconnection.
    let per_job =
        i64::try_from(card.config.timeout_ms).unwrap_or(i64::MAX).saturating_add(CLIENT_MAX_BACKOFF_MS);
    let lease = per_job.saturating_mul(i64::try_from(PREFETCH).unwrap_or(4) + 2);
    while !shutdown.is_requested() {
        let paused = match ctx.store.card_signing_stop(card.name()).await {
            Ok(pause) => pause.is_some(),
            Err(e) => {
                tracing::error!(error = %e, "signer: database error");
                true
            }
        };
        let unwell_ms = card.unwell_until.load(Ordering::Relaxed) - now_ms();
        let elsewhere = !drives(&ctx, card.name());
        if paused || elsewhere || unwell_ms > 0 {
            let wait_ms = if paused || elsewhere { 1_000 } else { unwell_ms.min(1_000) };
            wait(&ctx, &mut shutdown, Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1_000))).await;
            continue;
        }
        let permit = tokio::select! {
            permit = claimed.reserve() => permit,
            () = shutdown.requested() => break,
        };
        let Ok(permit) = permit else { break };
        match ctx.store.claim_signing(now_ms(), lease, 1).await {
            Ok(mut jobs) if !jobs.is_empty() => {
                permit.send(jobs.remove(0));
                // One wake reaches one signer: passed on, it reaches the
                // other cards' too while there is work.
                ctx.sign.notify_one();
            }
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

/// Whether this instance may sign on the card now: it drives the card, and
/// its heartbeat is recent enough that nobody can have taken the card over.
fn drives(ctx: &ApiContext, card: &str) -> bool {
    ctx.live.driven_here(card) && ctx.instance.current(now_ms())
}

/// Takes the card when no live instance drives it (see
/// `Store::take_card`); whether this instance drives it. Marks left on it
/// by others (a dead instance, a command) become a pause of its signing.
async fn drive(ctx: &ApiContext, card: &Card) -> bool {
    let name = card.name();
    if ctx.live.driven_here(name) {
        return true;
    }
    if !ctx.instance.current(now_ms()) {
        return false;
    }
    match ctx.store.take_card(name, &ctx.instance.id, now_ms()).await {
        Ok(CardLease::Held { paused }) => {
            for mark in &paused {
                tracing::error!(
                    reason = mark.pause_reason(),
                    "SIGNING PAUSED ON THIS CARD as it was taken over"
                );
            }
            tracing::info!(instance = ctx.instance.name, "signer: this instance drives the card");
            card.driven_elsewhere.store(false, Ordering::Relaxed);
            ctx.live.card_driven(name, true);
            ctx.sign.notify_one();
            true
        }
        Ok(CardLease::HeldBy { owner }) => {
            if !card.driven_elsewhere.swap(true, Ordering::Relaxed) {
                tracing::info!(owner, "signer: another instance drives the card; this one stands by");
            }
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "signer: cannot ask for the card");
            false
        }
    }
}

/// Releases a claimed job untried, due again in `delay_ms`.
async fn give_back(ctx: &ApiContext, job: &SigningJob, delay_ms: i64, code: &str, why: &str) {
    let now = now_ms();
    if let Err(e) = ctx.store.poll_again(&job.claim, now + delay_ms, &Outcome::new(code, why), now).await {
        tracing::error!(session_id = job.claim.session_id, error = %e, "signer: database error");
    }
}

/// Persists the card's pause, then clears the "PIN in flight" mark it
/// supersedes. Until the pause is stored nothing else is signed on the card;
/// once the service is stopping it is retried for [`PAUSE_RETRY_AT_STOP`]
/// only, and if it is still not stored the process exits non-zero (the
/// store keeps a pause of all signing in a file beside the database, which
/// the next start applies).
async fn pause(ctx: &ApiContext, card: &Card, reason: &str, by: Option<&str>, shutdown: &mut Shutdown) {
    tracing::error!(
        card = card.name(),
        reason,
        "SIGNING PAUSED ON THIS CARD. Fix the cause, then resume its signing \
         (customs179 resume signing --card NAME, or POST /api/control/cards/NAME/signing/resume)"
    );
    let mut give_up_at = None;
    while let Err(e) = ctx.store.pause_card(card.name(), Stage::Signing, reason, by, now_ms()).await {
        tracing::error!(card = card.name(), error = %e, "signer: cannot persist the pause; retrying");
        if shutdown.is_requested() {
            let give_up_at =
                *give_up_at.get_or_insert_with(|| std::time::Instant::now() + PAUSE_RETRY_AT_STOP);
            if std::time::Instant::now() >= give_up_at {
                ctx.pause_lost.store(true, Ordering::SeqCst);
                tracing::error!(
                    "signer: the pause could not be stored before the stop; it is kept in a file"
                );
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Err(e) =
        ctx.store.clear_pin_in_flight(&card::service_holder(&ctx.instance.name, card.name())).await
    {
        tracing::error!(error = %e, "signer: cannot clear the PIN-in-flight mark (the pause is stored)");
    }
}

/// Why a certificate valid over `validity` (unix seconds) cannot sign at
/// `now_ms`, if it cannot. A bare key (no certificate) has no dates to check.
fn certificate_out_of_date(validity: Option<(i64, i64)>, now_ms: i64) -> Option<String> {
    let (not_before, not_after) = validity?;
    let now = now_ms.div_euclid(1000);
    let date = |at: i64| customs179_core::time::shanghai_time(at.saturating_mul(1000));
    if now > not_after {
        Some(format!(
            "the card's certificate expired on {}: signatures made with it would be refused. \
             Put in a card with a renewed certificate (register its certNo with customs first); \
             signing resumes by itself once it connects",
            date(not_after)
        ))
    } else if now < not_before {
        Some(format!(
            "the card's certificate is not valid before {}: check the machine's clock, or wait; \
             signing resumes by itself once the certificate is valid",
            date(not_before)
        ))
    } else {
        None
    }
}

/// How often the card's EportClient is asked for its certNo while nothing
/// is to be signed: an unreachable or changed card is seen (and alerted on)
/// before work arrives. The call carries no PIN.
const PROBE_EVERY: Duration = Duration::from_secs(10);

/// One exchange with the card (a real one, so that a connection lost
/// meanwhile is noticed and the next call connects anew), noted for the
/// status; the card's identity when it answered.
async fn probe(ctx: &ApiContext, card: &Card) -> Option<customs179_eport::CardIdentity> {
    let asked = card.client.call(customs179_eport::Method::GetCertNo, serde_json::Map::new()).await;
    match asked.and(card.client.identity().await) {
        Ok(identity) => {
            card.well();
            ctx.live.card_connected(card.name(), &identity, now_ms());
            Some(identity)
        }
        Err(e) => {
            if matches!(e, SignerError::Unavailable(_)) {
                card.unwell(now_ms());
            }
            card_failed(ctx, card.name(), &e);
            None
        }
    }
}

/// Notes a failure at the card for the status and metrics; whether the
/// connection stands tells whether the EportClient is reachable.
fn card_failed(ctx: &ApiContext, name: &str, e: &SignerError) {
    let connected = !matches!(e, SignerError::Unavailable(_) | SignerError::NoAnswer(_));
    ctx.metrics.card_error(name);
    ctx.live.card_failed(name, &e.to_string(), connected, now_ms());
}

/// Lifts the card's pause made for a certificate out of date once the card
/// connected has a valid one. Other pauses are an operator's to lift.
/// Whether it asked the card (it does under such a pause).
async fn lift_certificate_pause(ctx: &ApiContext, card: &Card) -> bool {
    let Ok(Some(Pause { by, .. })) = ctx.store.card_pause_of(card.name(), Stage::Signing).await else {
        return false;
    };
    if by.as_deref() != Some(CERTIFICATE_CHECK) {
        return false;
    }
    // The card may have been changed: asked anew, not as last seen.
    let Some(identity) = probe(ctx, card).await else { return true };
    if certificate_out_of_date(identity.verifier.validity(), now_ms()).is_some() {
        return true;
    }
    let cert_no = identity.cert_no.to_string();
    let now = now_ms();
    let why = format!("a card with a valid certificate (certNo {cert_no}) connected");
    match ctx.store.resume_card(card.name(), Stage::Signing).await {
        Ok(_) => {
            tracing::warn!(card = card.name(), cert_no, "SIGNING RESUMED ON THIS CARD: {why}");
            let action = format!("resume signing on card {}", card.name());
            if let Err(e) = ctx.store.audit(CERTIFICATE_CHECK, &action, None, Some(&why), 1, now).await {
                tracing::error!(error = %e, "signer: cannot write the audit log");
            }
            ctx.sign.notify_one();
        }
        Err(e) => tracing::error!(error = %e, "signer: cannot lift the certificate pause"),
    }
    true
}

async fn wait(ctx: &ApiContext, shutdown: &mut Shutdown, at_most: Duration) {
    tokio::select! {
        () = ctx.sign.notified() => {}
        _ = shutdown.sleep(at_most) => {}
    }
}

async fn commit(ctx: &ApiContext, job: &SigningJob, answer: &CardAnswer) -> Result<(), StoreError> {
    let now = now_ms();
    let (card, took_ms) = (answer.card.name(), answer.took_ms);
    let session_id = job.claim.session_id.as_str();
    let error = match answer.result.clone() {
        Ok(signature) => {
            let body = match PreSign::parse(&job.presign) {
                Ok(presign) => presign.upload_body(&signature.cert_no, &signature.sign_value),
                Err(e) => {
                    let reason = format!("the stored pre-sign string is unreadable: {e}");
                    let outcome = Outcome::new(code::UNREADABLE_PRESIGN, &reason);
                    ctx.store.fail(&job.claim, "sign", &outcome, now).await?;
                    return Ok(());
                }
            };
            let (cert_no, sign_value) = (&signature.cert_no, &signature.sign_value);
            if ctx.store.signed(job, card, cert_no, sign_value, body.as_str(), took_ms, now).await? {
                tracing::info!(session_id, card, cert_no = signature.cert_no, "signer: signed and verified");
                ctx.upload.notify_one();
            }
            return Ok(());
        }
        Err(error) => error,
    };
    let reason = error.to_string();
    let problem = Outcome::new(error.code(), &reason).took(took_ms);
    match error {
        SignerError::Unavailable(_)
        | SignerError::NoAnswer(_)
        | SignerError::Failed { class: FailureClass::ReaderUnwell, .. }
        | SignerError::BadSignature(_) => {
            tracing::warn!(session_id, card, reason, "signer: will retry");
            // Nothing reached an unreachable card: the request is due at once for
            // any card, while this one is left alone for its own backoff (Card::unwell).
            let next = if matches!(error, SignerError::Unavailable(_)) {
                now
            } else {
                now + backoff(1_000, job.claim.attempts, MAX_BACKOFF_MS)
            };
            ctx.store.retry_later(&job.claim, "sign", next, &problem, now).await?;
        }
        SignerError::Failed { class: FailureClass::BadArguments, .. } => {
            tracing::error!(session_id, card, reason, "signer: the item failed");
            ctx.store.fail(&job.claim, "sign", &problem, now).await?;
        }
        // The pause itself was persisted by the signing loop.
        SignerError::Failed { class: FailureClass::Refused, .. } | SignerError::Certificate(_) => {
            ctx.store.retry_later(&job.claim, "sign", now, &problem, now).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::certificate_out_of_date;

    #[test]
    fn a_certificate_signs_from_its_first_second_to_its_last() {
        // 2026-12-01T00:00:00+08:00 .. 2027-12-01T00:00:00+08:00
        let (from, to) = (1_796_054_400, 1_827_590_400);
        let validity = Some((from, to));
        assert_eq!(certificate_out_of_date(validity, from * 1000), None);
        assert_eq!(certificate_out_of_date(validity, to * 1000 + 999), None, "notAfter is inclusive");
        let expired = certificate_out_of_date(validity, (to + 1) * 1000).unwrap();
        assert!(expired.contains("expired on 2027-12-01T00:00:00.000+08:00"), "{expired}");
        let early = certificate_out_of_date(validity, from * 1000 - 1).unwrap();
        assert!(early.contains("not valid before 2026-12-01T00:00:00.000+08:00"), "{early}");
        assert_eq!(certificate_out_of_date(None, 0), None, "a bare key has no dates");
    }
}
