//! Alerts: the watcher looks at the conditions every second and writes each
//! raise and all-clear to the store's outbox; one sender per channel takes
//! them from there, in order, under the channel's rate limit, retrying with
//! backoff. They share nothing with signing and uploading but the database,
//! so a slow or failing channel delays only its own messages.
//!
//! A delivery cut short by a stop or a crash has an unknown outcome: it is
//! sent again after the restart (the alert's id is the same, so a receiver
//! can tell a repeat). Alerts are told at least once, never dropped.

use std::sync::Arc;
use std::time::Duration;

use customs179_alerts::channel::Channel;
use customs179_alerts::condition::{self, CardSeen, Change, Observation, PauseSeen, Rules};
use customs179_alerts::{Alert, Event};
use customs179_store::{CardPause, Pause, Stage, StoreError};
use tokio::sync::Notify;

use super::Shutdown;
use super::instance::singleton;
use crate::context::{ApiContext, now_ms};

/// How often the conditions are looked at.
pub(crate) const TICK: Duration = Duration::from_secs(1);
/// One delivery's limit, given to each channel: one that takes longer is retried later.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// The waits between a channel's attempts at one delivery, in seconds; the
/// last repeats.
const BACKOFF_SECS: [i64; 7] = [5, 15, 30, 60, 120, 300, 600];
/// A delivery still failing this long after its alert is given up (and
/// shown as failed in `GET /api/alerts`): by then it tells nothing new.
const GIVE_UP_AFTER_MS: i64 = 24 * 3_600_000;
const MINUTE_MS: i64 = 60_000;

/// A channel's sender and what wakes it.
pub(crate) struct Sender {
    pub channel: Channel,
    pub wake: Arc<Notify>,
}

/// Watches the conditions until the stop; wakes `wakes` when it stored alerts.
pub(crate) async fn watch(ctx: ApiContext, wakes: Vec<Arc<Notify>>, mut shutdown: Shutdown) {
    let rules = ctx.config.alerts.rules;
    loop {
        ctx.health.beat("alert watcher");
        let looked = if super::instance::holds(&ctx, singleton::ALERTS).await {
            look(&ctx, &rules).await
        } else {
            Ok(0)
        };
        match looked {
            Ok(0) => {}
            Ok(_) => wakes.iter().for_each(|wake| wake.notify_one()),
            Err(e) => tracing::warn!(error = %e, "alerts: cannot look at the conditions; trying again"),
        }
        if shutdown.sleep(TICK).await {
            break;
        }
    }
}

/// Stores an alert for each condition that began or ended; returns how many.
async fn look(ctx: &ApiContext, rules: &Rules) -> Result<usize, StoreError> {
    let now = now_ms();
    let seen = observe(ctx, rules, now).await?;
    let changes = condition::changes(&ctx.store.active_alerts().await?, &condition::holding(&seen, rules));
    for change in &changes {
        let alert = alert_of(change, &ctx.config.enterprise.ebp_code, now);
        let channels: Vec<&str> = ctx
            .config
            .alerts
            .channels
            .iter()
            .filter(|c| c.wants(alert.kind, alert.severity))
            .map(|c| c.name.as_str())
            .collect();
        let id = ctx.store.record_alert(&alert, &channels).await?;
        ctx.metrics.alert(alert.kind.as_str(), alert.event.as_str());
        tracing::warn!(
            id,
            kind = alert.kind.as_str(),
            event = alert.event.as_str(),
            severity = alert.severity.as_str(),
            card = alert.card,
            level = alert.level,
            count = alert.count,
            detail = ?alert.detail,
            channels = channels.len(),
            "alert"
        );
    }
    Ok(changes.len())
}

fn alert_of(change: &Change, source: &str, now: i64) -> Alert {
    let (event, count, detail) = match change {
        Change::Raise(h) => (Event::Raised, h.count, h.detail.clone()),
        Change::Clear(_) => (Event::Cleared, 0, String::new()),
    };
    let (kind, card, level, severity, since) = match change {
        Change::Raise(h) => (h.kind, &h.card, &h.level, h.severity, h.since),
        Change::Clear(a) => (a.kind, &a.card, &a.level, a.severity, a.since),
    };
    let (card, level, source) = (card.clone(), level.clone(), source.to_owned());
    Alert { id: 0, kind, severity, event, card, level, count, detail, since, at: now, source }
}

/// What the conditions are judged on, now.
async fn observe(ctx: &ApiContext, rules: &Rules, now: i64) -> Result<Observation, StoreError> {
    let seen_pause =
        |pause: Option<Pause>| pause.map(|p| PauseSeen { reason: p.reason, since: p.since, by: p.by });
    let pauses = ctx.store.card_pauses().await?;
    let own = |card: &str, stage: Stage| seen_pause(CardPause::find(&pauses, card, stage).cloned());
    let cards = crate::live::system_cards(ctx, now)
        .await?
        .into_iter()
        .map(|card| CardSeen {
            paused: own(&card.name, Stage::Signing),
            uploads_stopped: own(&card.name, Stage::Uploading),
            name: card.name,
            unreachable_since: card.unreachable_since,
            error: card.last_error,
            certificate_not_after: card.valid_until,
        })
        .collect();
    // Every instance's uploads: this one's, and what the others published (those stopped
    // within the window too).
    let instances = ctx.store.instances(now, rules.window_ms).await?;
    let others = crate::live::customs_of_others(&ctx.instance.id, &instances);
    Ok(Observation {
        now,
        signing_paused: seen_pause(ctx.store.pause_of(Stage::Signing).await?),
        uploads_stopped: seen_pause(ctx.store.pause_of(Stage::Uploading).await?),
        cards,
        at_risk: ctx.store.count_at_risk(now, ctx.config.customs.at_risk_ms()).await?,
        past_deadline: ctx.store.count_past_deadline(now).await?,
        customs_errors: i64::try_from(ctx.live.customs_errors(now, rules.window_ms, &others))
            .unwrap_or(i64::MAX),
        failed: ctx.store.count_failed_since(now - rules.window_ms).await?,
    })
}

/// Sends one channel's alerts until the stop.
pub(crate) async fn send(ctx: ApiContext, sender: Sender, task: &'static str, mut shutdown: Shutdown) {
    let Sender { channel, wake } = sender;
    let name = channel.config().name.clone();
    let per_minute = usize::try_from(channel.config().per_minute).unwrap_or(usize::MAX).max(1);
    loop {
        ctx.health.beat(task);
        let wait = match next_step(&ctx, &channel, &name, per_minute, &mut shutdown).await {
            Ok(Step::Sent) => continue,
            Ok(Step::Wait(wait)) => wait,
            Ok(Step::Stopped) => break,
            Err(e) => {
                tracing::warn!(channel = name, error = %e, "alerts: the outbox cannot be read; trying again");
                Duration::from_secs(5)
            }
        };
        // Beats at least every 30 s while it waits.
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(wait.min(Duration::from_secs(30))) => {}
            () = shutdown.requested() => break,
        }
    }
}

enum Step {
    /// An attempt was made (sent or not): look again at once.
    Sent,
    /// Nothing can be sent before this long.
    Wait(Duration),
    Stopped,
}

async fn next_step(
    ctx: &ApiContext,
    channel: &Channel,
    name: &str,
    per_minute: usize,
    shutdown: &mut Shutdown,
) -> Result<Step, StoreError> {
    if !super::instance::holds(ctx, singleton::ALERTS).await {
        return Ok(Step::Wait(super::instance::BEAT));
    }
    let Some(due) = ctx.store.next_alert_delivery(name).await? else {
        return Ok(Step::Wait(Duration::from_secs(30)));
    };
    let now = now_ms();
    if due.next_at > now {
        return Ok(Step::Wait(millis(due.next_at - now)));
    }
    let sent = ctx.store.alert_sends_since(name, now - MINUTE_MS).await?;
    if sent.len() >= per_minute {
        // Free again a minute after the send that fills the window.
        let frees_at = sent[sent.len() - per_minute] + MINUTE_MS;
        return Ok(Step::Wait(millis(frees_at - now).max(Duration::from_millis(50))));
    }
    let id = due.alert.id;
    if now - due.alert.at > GIVE_UP_AFTER_MS {
        let reason = "given up: not delivered within 24 hours of the alert";
        ctx.store.alert_not_sent(id, name, "expired", reason, None).await?;
        ctx.metrics.alert_delivery("given_up");
        tracing::error!(channel = name, id, "alerts: {reason}");
        return Ok(Step::Sent);
    }
    // The channel bounds each delivery by SEND_TIMEOUT itself (it was built with it).
    let result = tokio::select! {
        result = channel.send(&due.alert, now) => result,
        () = shutdown.requested() => return Ok(Step::Stopped),
    };
    let e = match result {
        Ok(()) => {
            ctx.store.alert_sent(id, name, now_ms()).await?;
            ctx.metrics.alert_delivery("sent");
            tracing::info!(channel = name, id, kind = due.alert.kind.as_str(), "alerts: delivered");
            return Ok(Step::Sent);
        }
        Err(e) => e,
    };
    let (code, error) = (e.code(), e.to_string());
    let attempt = usize::try_from(due.attempts).unwrap_or(usize::MAX);
    let wait = BACKOFF_SECS[attempt.min(BACKOFF_SECS.len() - 1)] * 1000;
    ctx.store.alert_not_sent(id, name, &code, &error, Some(now_ms() + wait)).await?;
    ctx.metrics.alert_delivery("failed");
    tracing::warn!(channel = name, id, code, error, retry_in_ms = wait, "alerts: not delivered");
    Ok(Step::Sent)
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}
