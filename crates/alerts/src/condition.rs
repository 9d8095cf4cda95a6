//! Which conditions hold, and what changed since the last look.
//!
//! Each tick the service gathers an [`Observation`]; [`holding`] tells
//! which conditions hold in it, and [`changes`] compares them with those
//! the store says are active: a condition that begins is raised, one that
//! ends is cleared, and one that goes on sends nothing more (its count may
//! change: one message per condition while it lasts). A condition whose
//! level changes (a certificate 30 days from expiry, then 7) is raised
//! again at its new level, without an all-clear between.

use customs179_core::time::shanghai_time;

use crate::{AlertKind, Severity};

/// A pause of signing or uploading, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseSeen {
    pub reason: String,
    pub since: i64,
    /// The operator who paused; None when the service did.
    pub by: Option<String>,
}

/// One card, as the service sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardSeen {
    /// Its `[[signer]]` name.
    pub name: String,
    /// Its own pause (a refused PIN, its breaker, its certificate).
    pub paused: Option<PauseSeen>,
    /// Its uploads paused: customs refused its certNo.
    pub uploads_stopped: Option<PauseSeen>,
    /// Since when its EportClient could not be reached (None while it can).
    pub unreachable_since: Option<i64>,
    /// Its last error, for the message.
    pub error: Option<String>,
    /// Its certificate's notAfter, unix seconds, once it told it.
    pub certificate_not_after: Option<i64>,
}

/// What the service sees at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub now: i64,
    /// Signing paused for every card.
    pub signing_paused: Option<PauseSeen>,
    pub uploads_stopped: Option<PauseSeen>,
    pub cards: Vec<CardSeen>,
    /// Pending requests close to their deadline.
    pub at_risk: i64,
    /// Pending requests past their deadline.
    pub past_deadline: i64,
    /// Customs' answers other than success within [`Rules::window_ms`].
    pub customs_errors: i64,
    /// Requests failed within [`Rules::window_ms`].
    pub failed: i64,
}

/// The thresholds, from `[alert_rules]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The signer must be unreachable this long before it is told.
    pub signer_unreachable_ms: i64,
    /// Customs errors within the window that make an alert (0: never).
    pub customs_errors: i64,
    /// The window of `customs_errors` and of failed requests.
    pub window_ms: i64,
}

/// Days before the certificate's expiry at which it is told, with the severity.
pub const CERTIFICATE_LEVELS: [(i64, &str, Severity); 3] =
    [(1, "1", Severity::Critical), (7, "7", Severity::Warning), (30, "30", Severity::Warning)];

/// A condition that holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub kind: AlertKind,
    /// The card it is about; empty for the service's conditions.
    pub card: String,
    pub level: String,
    pub severity: Severity,
    pub count: i64,
    pub detail: String,
    /// When it began, as far as the observation tells; else the observation's time.
    pub since: i64,
}

/// A condition the store holds as active: what its alert said.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Active {
    pub kind: AlertKind,
    pub card: String,
    pub level: String,
    pub severity: Severity,
    pub since: i64,
}

/// What to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A condition began, or moved to another level.
    Raise(Holding),
    /// A condition ended.
    Clear(Active),
}

/// The conditions that hold in `seen`, at most one per kind and card.
pub fn holding(seen: &Observation, rules: &Rules) -> Vec<Holding> {
    let now = seen.now;
    let mut found = Vec::new();
    let mut hold = |kind, card: &str, severity, count, detail: String, since| {
        found.push(Holding {
            kind,
            card: card.to_owned(),
            level: String::new(),
            severity,
            count,
            detail,
            since,
        });
    };
    let paused = |pause: &PauseSeen| match &pause.by {
        Some(by) => format!("{} (paused by {by})", pause.reason),
        None => pause.reason.clone(),
    };
    if let Some(pause) = &seen.signing_paused {
        hold(AlertKind::SigningPaused, "", Severity::Critical, 0, paused(pause), pause.since);
    }
    if let Some(pause) = &seen.uploads_stopped {
        hold(AlertKind::UploadsStopped, "", Severity::Critical, 0, paused(pause), pause.since);
    }
    for card in &seen.cards {
        if let Some(pause) = &card.paused {
            hold(AlertKind::SigningPaused, &card.name, Severity::Critical, 0, paused(pause), pause.since);
        }
        if let Some(pause) = &card.uploads_stopped {
            hold(AlertKind::UploadsStopped, &card.name, Severity::Critical, 0, paused(pause), pause.since);
        }
        if let Some(since) = card.unreachable_since
            && now - since >= rules.signer_unreachable_ms
        {
            let detail = card.error.clone().unwrap_or_default();
            hold(AlertKind::SignerUnreachable, &card.name, Severity::Critical, 0, detail, since);
        }
    }
    if seen.at_risk > 0 {
        hold(AlertKind::AtRisk, "", Severity::Warning, seen.at_risk, String::new(), now);
    }
    if seen.past_deadline > 0 {
        hold(AlertKind::Late, "", Severity::Critical, seen.past_deadline, String::new(), now);
    }
    if rules.customs_errors > 0 && seen.customs_errors >= rules.customs_errors {
        let detail = format!("{} or more in {} min", rules.customs_errors, rules.window_ms / 60_000);
        hold(AlertKind::CustomsErrors, "", Severity::Warning, seen.customs_errors, detail, now);
    }
    if seen.failed > 0 {
        hold(AlertKind::RequestsFailed, "", Severity::Warning, seen.failed, String::new(), now);
    }
    for card in &seen.cards {
        if let Some(not_after) = card.certificate_not_after
            && let Some((level, severity)) = certificate_level(not_after, now)
        {
            let days = customs179_core::days_left(not_after, now);
            let until = shanghai_time(not_after.saturating_mul(1000));
            let detail = format!("valid until {until}, {days} day(s) left");
            let card = card.name.clone();
            found.push(Holding {
                kind: AlertKind::Certificate,
                card,
                level,
                severity,
                count: 0,
                detail,
                since: now,
            });
        }
    }
    found
}

/// The certificate's level: "expired" once past its notAfter, else the
/// nearest threshold it is within; None when it has more than 30 days.
pub fn certificate_level(not_after: i64, now: i64) -> Option<(String, Severity)> {
    if now.div_euclid(1000) >= not_after {
        return Some(("expired".to_owned(), Severity::Critical));
    }
    let days = customs179_core::days_left(not_after, now);
    CERTIFICATE_LEVELS
        .iter()
        .find(|(within, _, _)| days < *within)
        .map(|&(_, level, severity)| (level.to_owned(), severity))
}

/// What to send, given the active conditions and those that hold now.
pub fn changes(active: &[Active], now_holding: &[Holding]) -> Vec<Change> {
    let mut keys: Vec<(AlertKind, &str)> = active
        .iter()
        .map(|a| (a.kind, a.card.as_str()))
        .chain(now_holding.iter().map(|h| (h.kind, h.card.as_str())))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut out = Vec::new();
    for (kind, card) in keys {
        let was = active.iter().find(|a| a.kind == kind && a.card == card);
        let is = now_holding.iter().find(|h| h.kind == kind && h.card == card);
        match (was, is) {
            (None, Some(is)) => out.push(Change::Raise(is.clone())),
            (Some(was), None) => out.push(Change::Clear(was.clone())),
            (Some(was), Some(is)) if was.level != is.level => out.push(Change::Raise(is.clone())),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_112_187_123;
    const DAY: i64 = 86_400;
    const RULES: Rules = Rules { signer_unreachable_ms: 60_000, customs_errors: 10, window_ms: 600_000 };

    fn seen() -> Observation {
        Observation { now: NOW, ..Observation::default() }
    }

    fn kinds(holding: &[Holding]) -> Vec<(AlertKind, &str)> {
        holding.iter().map(|h| (h.kind, h.card.as_str())).collect()
    }

    fn card(name: &str) -> CardSeen {
        CardSeen { name: name.into(), ..CardSeen::default() }
    }

    #[test]
    fn a_quiet_service_holds_nothing() {
        let mut quiet = seen();
        let mut a = card("a");
        a.certificate_not_after = Some(NOW / 1000 + 31 * DAY);
        a.unreachable_since = Some(NOW - 59_999);
        quiet.cards = vec![a, card("b")];
        quiet.customs_errors = 9;
        assert_eq!(holding(&quiet, &RULES), []);
    }

    #[test]
    fn each_condition_holds_with_its_severity_count_and_detail() {
        let mut all = seen();
        all.signing_paused = Some(PauseSeen { reason: "the card refused".into(), since: 5, by: None });
        all.uploads_stopped =
            Some(PauseSeen { reason: "customs maintenance".into(), since: 6, by: Some("alice".into()) });
        let mut a = card("a");
        a.unreachable_since = Some(NOW - 60_000);
        a.error = Some("connection refused".into());
        a.certificate_not_after = Some(NOW / 1000 + 5 * DAY);
        let mut b = card("b");
        b.paused = Some(PauseSeen { reason: "the card refused: wrong PIN".into(), since: 7, by: None });
        b.certificate_not_after = Some(NOW / 1000 - DAY);
        b.uploads_stopped = Some(PauseSeen { reason: "customs answered 20004".into(), since: 8, by: None });
        all.cards = vec![a, b];
        all.at_risk = 4;
        all.past_deadline = 2;
        all.customs_errors = 10;
        all.failed = 3;
        let found = holding(&all, &RULES);
        assert_eq!(
            kinds(&found),
            [
                (AlertKind::SigningPaused, ""),
                (AlertKind::UploadsStopped, ""),
                (AlertKind::SignerUnreachable, "a"),
                (AlertKind::SigningPaused, "b"),
                (AlertKind::UploadsStopped, "b"),
                (AlertKind::AtRisk, ""),
                (AlertKind::Late, ""),
                (AlertKind::CustomsErrors, ""),
                (AlertKind::RequestsFailed, ""),
                (AlertKind::Certificate, "a"),
                (AlertKind::Certificate, "b"),
            ]
        );
        let by = |kind| found.iter().find(|h| h.kind == kind).unwrap();
        let b_paused = found.iter().find(|h| h.kind == AlertKind::SigningPaused && h.card == "b").unwrap();
        assert_eq!((b_paused.detail.as_str(), b_paused.since), ("the card refused: wrong PIN", 7));
        let b_refused = found.iter().find(|h| h.kind == AlertKind::UploadsStopped && h.card == "b").unwrap();
        assert_eq!((b_refused.detail.as_str(), b_refused.since), ("customs answered 20004", 8));
        assert_eq!(found.last().unwrap().level, "expired");
        assert_eq!(by(AlertKind::SigningPaused).detail, "the card refused");
        assert_eq!(by(AlertKind::SigningPaused).since, 5);
        assert_eq!(by(AlertKind::UploadsStopped).detail, "customs maintenance (paused by alice)");
        assert_eq!(by(AlertKind::SignerUnreachable).since, NOW - 60_000);
        assert_eq!(by(AlertKind::SignerUnreachable).detail, "connection refused");
        assert_eq!((by(AlertKind::AtRisk).count, by(AlertKind::AtRisk).severity), (4, Severity::Warning));
        assert_eq!((by(AlertKind::Late).count, by(AlertKind::Late).severity), (2, Severity::Critical));
        assert_eq!(by(AlertKind::CustomsErrors).detail, "10 or more in 10 min");
        assert_eq!(by(AlertKind::RequestsFailed).count, 3);
        let cert = by(AlertKind::Certificate);
        assert_eq!((cert.level.as_str(), cert.severity), ("7", Severity::Warning));
        assert!(cert.detail.ends_with("5 day(s) left"), "{}", cert.detail);
    }

    #[test]
    fn customs_errors_can_be_left_untold() {
        let mut errors = seen();
        errors.customs_errors = 1_000;
        assert_eq!(holding(&errors, &Rules { customs_errors: 0, ..RULES }), []);
    }

    #[test]
    fn certificate_levels_follow_the_days_left() {
        let now_s = NOW / 1000;
        let level = |not_after: i64| certificate_level(not_after, NOW);
        assert_eq!(level(now_s + 31 * DAY), None);
        assert_eq!(level(now_s + 30 * DAY), None, "30 whole days left is not within 30");
        assert_eq!(level(now_s + 30 * DAY - 1), Some(("30".into(), Severity::Warning)));
        assert_eq!(level(now_s + 7 * DAY - 1), Some(("7".into(), Severity::Warning)));
        assert_eq!(level(now_s + DAY - 1), Some(("1".into(), Severity::Critical)));
        assert_eq!(level(now_s + 1), Some(("1".into(), Severity::Critical)));
        assert_eq!(level(now_s), Some(("expired".into(), Severity::Critical)));
        assert_eq!(level(now_s - 400 * DAY), Some(("expired".into(), Severity::Critical)));
    }

    fn active(kind: AlertKind, level: &str) -> Active {
        Active { kind, card: String::new(), level: level.into(), severity: Severity::Warning, since: 1 }
    }

    fn held(kind: AlertKind, level: &str, count: i64) -> Holding {
        let (card, detail) = (String::new(), String::new());
        Holding { kind, card, level: level.into(), severity: Severity::Warning, count, detail, since: 2 }
    }

    #[test]
    fn each_card_s_condition_is_its_own() {
        let on = |card: &str| Holding { card: card.into(), ..held(AlertKind::SignerUnreachable, "", 0) };
        let was = |card: &str| Active { card: card.into(), ..active(AlertKind::SignerUnreachable, "") };
        assert_eq!(changes(&[was("a")], &[on("a"), on("b")]), [Change::Raise(on("b"))]);
        assert_eq!(changes(&[was("a"), was("b")], &[on("b")]), [Change::Clear(was("a"))]);
    }

    #[test]
    fn a_condition_is_raised_once_and_cleared_once() {
        let raised = changes(&[], &[held(AlertKind::AtRisk, "", 3)]);
        assert_eq!(raised, [Change::Raise(held(AlertKind::AtRisk, "", 3))]);
        // It goes on with another count: nothing more is sent.
        assert_eq!(changes(&[active(AlertKind::AtRisk, "")], &[held(AlertKind::AtRisk, "", 9)]), []);
        let cleared = changes(&[active(AlertKind::AtRisk, "")], &[]);
        assert_eq!(cleared, [Change::Clear(active(AlertKind::AtRisk, ""))]);
        assert_eq!(changes(&[], &[]), []);
    }

    #[test]
    fn a_new_level_is_raised_again_without_an_all_clear() {
        let was = [active(AlertKind::Certificate, "30")];
        let now_holding = [held(AlertKind::Certificate, "7", 0)];
        assert_eq!(changes(&was, &now_holding), [Change::Raise(held(AlertKind::Certificate, "7", 0))]);
    }

    #[test]
    fn kinds_change_independently() {
        let was = [active(AlertKind::SigningPaused, ""), active(AlertKind::Late, "")];
        let now_holding = [held(AlertKind::Late, "", 1), held(AlertKind::RequestsFailed, "", 2)];
        assert_eq!(
            changes(&was, &now_holding),
            [
                Change::Clear(active(AlertKind::SigningPaused, "")),
                Change::Raise(held(AlertKind::RequestsFailed, "", 2))
            ]
        );
    }
}
