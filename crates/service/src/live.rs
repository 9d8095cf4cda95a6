//! What the workers last saw of the card and of customs, for the status:
//! kept in memory (it is this process's view, and starts empty). What the
//! other instances see of the cards they drive, and of customs, comes from
//! the database ([`system_cards`], [`customs_of_others`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use customs179_eport::CardIdentity;
use customs179_store::Millis;
use serde::{Deserialize, Serialize};

/// Answers are counted per second for this long: a window of a few seconds is exact to
/// the second, whatever minute it straddles.
const WINDOW_SECONDS: i64 = 3_600;
const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60_000;

/// One card, as the signer that drives it last saw it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CardView {
    /// Its name in the configuration.
    pub name: String,
    pub url: String,
    pub connected: bool,
    pub cert_no: Option<String>,
    /// "SM2" or "RSA".
    pub algorithm: Option<String>,
    /// The certificate's notAfter, unix seconds, and the whole days left until then.
    pub valid_until: Option<i64>,
    pub days_left: Option<i64>,
    /// When the last signature was made and verified.
    pub last_signature_at: Option<Millis>,
    pub last_error: Option<String>,
    pub last_error_at: Option<Millis>,
    /// Since when its EportClient could not be reached (None while it can).
    pub unreachable_since: Option<Millis>,
    /// The instance that drives the card (None: none does, or none did yet).
    pub driven_by: Option<String>,
    /// Whether that instance lives.
    pub driver_alive: bool,
    /// When that instance published this view (None: it is this instance's own).
    pub seen_at: Option<Millis>,
    /// Whether this instance drives the card: its own view, not published.
    #[serde(skip)]
    pub driven_here: bool,
}

/// Customs, as the uploader last saw it.
#[derive(Debug, Default)]
struct CustomsSeen {
    last_success_at: Option<Millis>,
    /// (second, answer code, whether it stored the upload) → uploads, for the last hour,
    /// oldest first.
    answers: VecDeque<(i64, String, bool, u64)>,
}

/// What `GET /api/status` shows of customs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CustomsView {
    pub last_success_at: Option<Millis>,
    /// Uploads per answer code in the last hour ("http 503", "timeout"… for answers without one).
    pub answers_last_hour: BTreeMap<String, u64>,
}

/// What an instance shares of customs with the others, with each heartbeat:
/// its answers of the last hour counted per minute (the others' answers are
/// known to the minute, this instance's own to the second).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct CustomsShared {
    pub last_success_at: Option<Millis>,
    /// (minute, answer code, whether it stored the upload, uploads), oldest first.
    pub answers: Vec<(i64, String, bool, u64)>,
}

#[derive(Default)]
pub(crate) struct Live {
    /// Every configured card, in the configuration's order.
    cards: Vec<Mutex<CardView>>,
    customs: Mutex<CustomsSeen>,
}

impl Live {
    /// The cards, (name, url) each, as configured.
    pub fn new<'a>(cards: impl IntoIterator<Item = (&'a str, &'a str)>) -> Live {
        let cards = cards
            .into_iter()
            .map(|(name, url)| {
                Mutex::new(CardView { name: name.to_owned(), url: url.to_owned(), ..CardView::default() })
            })
            .collect();
        Live { cards, customs: Mutex::default() }
    }

    /// Runs `note` on the card named `name` (configured cards only).
    fn card(&self, name: &str, note: impl FnOnce(&mut CardView)) {
        for card in &self.cards {
            let mut card = card.lock().unwrap_or_else(PoisonError::into_inner);
            if card.name == name {
                note(&mut card);
                return;
            }
        }
    }

    pub fn card_connected(&self, name: &str, identity: &CardIdentity, now: Millis) {
        self.card(name, |card| {
            card.connected = true;
            card.unreachable_since = None;
            card.cert_no = Some(identity.cert_no.to_string());
            card.algorithm = Some(match identity.verifier.algorithm() {
                customs179_core::Algorithm::Sm2Sm3 => "SM2".to_owned(),
                customs179_core::Algorithm::RsaSha1 => "RSA".to_owned(),
            });
            if let Some((_, not_after)) = identity.verifier.validity() {
                card.valid_until = Some(not_after);
                card.days_left = Some(customs179_core::days_left(not_after, now));
            }
        });
    }

    /// This instance drives the card now (or no longer does).
    pub fn card_driven(&self, name: &str, driven: bool) {
        self.card(name, |card| card.driven_here = driven);
    }

    pub fn driven_here(&self, name: &str) -> bool {
        self.cards.iter().any(|card| {
            let card = card.lock().unwrap_or_else(PoisonError::into_inner);
            card.name == name && card.driven_here
        })
    }

    pub fn card_signed(&self, name: &str, now: Millis) {
        self.card(name, |card| card.last_signature_at = Some(now));
    }

    /// A failure at the card; `connected` says whether the connection stands.
    pub fn card_failed(&self, name: &str, error: &str, connected: bool, now: Millis) {
        self.card(name, |card| {
            card.connected = connected;
            if connected {
                card.unreachable_since = None;
            } else if card.unreachable_since.is_none() {
                card.unreachable_since = Some(now);
            }
            card.last_error = Some(error.to_owned());
            card.last_error_at = Some(now);
        });
    }

    pub fn cards(&self) -> Vec<CardView> {
        self.cards.iter().map(|card| card.lock().unwrap_or_else(PoisonError::into_inner).clone()).collect()
    }

    /// An answer from customs: its code, or what stood for one.
    pub fn customs_answered(&self, code: &str, stored: bool, now: Millis) {
        let mut customs = self.customs.lock().unwrap_or_else(PoisonError::into_inner);
        if stored {
            customs.last_success_at = Some(now);
        }
        let second = now.div_euclid(SECOND_MS);
        // This second's entries are at the back: the search stops at the first older one.
        let this_second = customs.answers.iter_mut().rev().take_while(|(s, _, _, _)| *s == second);
        match this_second.into_iter().find(|(_, c, _, _)| c == code) {
            Some((_, _, _, n)) => *n += 1,
            None => customs.answers.push_back((second, code.to_owned(), stored, 1)),
        }
        while customs.answers.front().is_some_and(|(s, _, _, _)| *s <= second - WINDOW_SECONDS) {
            customs.answers.pop_front();
        }
    }

    /// Answers that stored nothing within the last `window` ms: this
    /// instance's counted by whole seconds, the `others`' by whole minutes
    /// (each minute that overlaps the window), at most the last hour.
    pub fn customs_errors(&self, now: Millis, window: Millis, others: &[CustomsShared]) -> u64 {
        let customs = self.customs.lock().unwrap_or_else(PoisonError::into_inner);
        let window = window.clamp(0, WINDOW_SECONDS * SECOND_MS - SECOND_MS);
        let from = now.div_euclid(SECOND_MS) - window.div_euclid(SECOND_MS);
        let own: u64 = customs
            .answers
            .iter()
            .filter(|(s, _, stored, _)| *s >= from && !stored)
            .map(|(_, _, _, n)| n)
            .sum();
        let from_minute = (now - window).div_euclid(MINUTE_MS);
        let theirs = others.iter().flat_map(|other| &other.answers);
        own + theirs
            .filter(|(m, _, stored, _)| *m >= from_minute && !stored)
            .map(|(_, _, _, n)| n)
            .sum::<u64>()
    }

    /// The last hour of customs: this instance's answers and the `others'`.
    pub fn customs(&self, now: Millis, others: &[CustomsShared]) -> CustomsView {
        let customs = self.customs.lock().unwrap_or_else(PoisonError::into_inner);
        let since = now.div_euclid(SECOND_MS) - WINDOW_SECONDS;
        let mut answers_last_hour = BTreeMap::new();
        for (_, code, _, n) in customs.answers.iter().filter(|(s, _, _, _)| *s > since) {
            *answers_last_hour.entry(code.clone()).or_insert(0) += n;
        }
        let since_minute = now.div_euclid(MINUTE_MS) - WINDOW_SECONDS / 60;
        for (_, code, _, n) in others.iter().flat_map(|o| &o.answers).filter(|(m, _, _, _)| *m > since_minute)
        {
            *answers_last_hour.entry(code.clone()).or_insert(0) += n;
        }
        let last_success_at =
            others.iter().map(|o| o.last_success_at).fold(customs.last_success_at, std::cmp::max);
        CustomsView { last_success_at, answers_last_hour }
    }

    /// What this instance shares of customs ([`CustomsShared`]).
    pub fn customs_shared(&self) -> CustomsShared {
        let customs = self.customs.lock().unwrap_or_else(PoisonError::into_inner);
        let mut answers: Vec<(i64, String, bool, u64)> = Vec::new();
        for (second, code, stored, n) in &customs.answers {
            let minute = (second * SECOND_MS).div_euclid(MINUTE_MS);
            let this_minute = answers.iter_mut().rev().take_while(|(m, _, _, _)| *m == minute);
            match this_minute.into_iter().find(|(_, c, s, _)| c == code && s == stored) {
                Some((_, _, _, count)) => *count += n,
                None => answers.push((minute, code.clone(), *stored, *n)),
            }
        }
        CustomsShared { last_success_at: customs.last_success_at, answers }
    }
}

/// What the instances other than this one (those alive, and those stopped in
/// the last hour) published of customs; an unreadable view is left out.
pub(crate) fn customs_of_others(
    me: &str,
    instances: &[customs179_store::InstanceView],
) -> Vec<CustomsShared> {
    instances
        .iter()
        .filter(|instance| instance.id != me)
        .filter_map(|instance| serde_json::from_str(instance.customs.as_deref()?).ok())
        .collect()
}

/// Every card of the system: those this instance drives as it sees them,
/// the others as the instances that drive them last published them, and
/// configured cards that no instance drives as they are known here; by name.
pub(crate) async fn system_cards(
    ctx: &crate::context::ApiContext,
    now: Millis,
) -> Result<Vec<CardView>, customs179_store::StoreError> {
    let leases = ctx.store.card_leases(now).await?;
    let mut cards: BTreeMap<String, CardView> = BTreeMap::new();
    for lease in leases {
        let mut card = lease
            .live
            .as_deref()
            .and_then(|live| serde_json::from_str::<CardView>(live).ok())
            .unwrap_or_else(|| CardView { name: lease.card.clone(), ..CardView::default() });
        card.name = lease.card.clone();
        card.driven_by = Some(lease.owner);
        card.driver_alive = lease.owner_alive;
        card.seen_at = lease.live_at;
        cards.insert(lease.card, card);
    }
    for mut card in ctx.live.cards() {
        if card.driven_here {
            card.driven_by = Some(ctx.instance.name.clone());
            card.driver_alive = true;
            card.seen_at = None;
            cards.insert(card.name.clone(), card);
        } else {
            cards.entry(card.name.clone()).or_insert(card);
        }
    }
    Ok(cards.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customs_answers_are_counted_for_the_last_hour() {
        let live = Live::new([("card", "ws://x/")]);
        let hour = 3_600 * SECOND_MS;
        live.customs_answered("10000", true, 1_000);
        live.customs_answered("20000", false, 1_500);
        live.customs_answered("10000", true, 60_000);
        let view = live.customs(60_010, &[]);
        assert_eq!(view.answers_last_hour, BTreeMap::from([("10000".into(), 2), ("20000".into(), 1)]));
        assert_eq!(view.last_success_at, Some(60_000));
        // An hour on, the first second has gone.
        let later = live.customs(hour + 1_010, &[]);
        assert_eq!(later.answers_last_hour, BTreeMap::from([("10000".into(), 1)]));
        live.customs_answered("20004", false, 3 * hour);
        assert_eq!(live.customs(3 * hour, &[]).answers_last_hour, BTreeMap::from([("20004".into(), 1)]));
    }

    #[test]
    fn customs_errors_are_counted_within_a_window() {
        let live = Live::new([("card", "ws://x/")]);
        let minute = 60 * SECOND_MS;
        live.customs_answered("HTTP 503", false, 0);
        live.customs_answered("10000", true, 10 * minute);
        live.customs_answered("20000", false, 10 * minute + 1);
        live.customs_answered("transport", false, 12 * minute);
        assert_eq!(live.customs_errors(12 * minute, 10 * minute, &[]), 2, "the first is 12 minutes old");
        assert_eq!(live.customs_errors(12 * minute, 20 * minute, &[]), 3);
        assert_eq!(live.customs_errors(12 * minute, 0, &[]), 1, "the current second only");
        assert_eq!(live.customs_errors(80 * minute, 10 * minute, &[]), 0);
    }

    #[test]
    fn the_others_answers_count_with_ours_by_the_minute() {
        let minute = 60 * SECOND_MS;
        let theirs = Live::new([("card", "ws://x/")]);
        theirs.customs_answered("10000", true, 10 * minute + 1_000);
        theirs.customs_answered("10000", true, 10 * minute + 2_000);
        theirs.customs_answered("HTTP 503", false, 10 * minute + 3_000);
        theirs.customs_answered("HTTP 503", false, 11 * minute);
        let shared = theirs.customs_shared();
        assert_eq!(
            shared.answers,
            [
                (10, "10000".to_owned(), true, 2),
                (10, "HTTP 503".to_owned(), false, 1),
                (11, "HTTP 503".to_owned(), false, 1)
            ]
        );
        // Published as JSON with the heartbeat, read back by another instance.
        let shared: CustomsShared = serde_json::from_str(&serde_json::to_string(&shared).unwrap()).unwrap();
        let ours = Live::new([("card", "ws://x/")]);
        ours.customs_answered("20000", false, 11 * minute + 500);
        let others = [shared];
        let view = ours.customs(11 * minute + 1_000, &others);
        assert_eq!(
            view.answers_last_hour,
            BTreeMap::from([("10000".into(), 2), ("20000".into(), 1), ("HTTP 503".into(), 2)])
        );
        assert_eq!(view.last_success_at, Some(10 * minute + 2_000));
        // Ours to the second (ours at 11:00.5 is out of the last 30 s at 11:40); theirs by
        // each minute the window overlaps.
        let at = 11 * minute + 40 * SECOND_MS;
        assert_eq!(ours.customs_errors(at, 30 * SECOND_MS, &others), 1, "their minute 11");
        assert_eq!(ours.customs_errors(at, 2 * minute, &others), 3, "ours, and their minutes 10 and 11");
        let hour_on = ours.customs(71 * minute, &others);
        assert!(hour_on.answers_last_hour.is_empty(), "{hour_on:?}");
    }

    #[test]
    fn a_window_of_seconds_straddling_a_minute_counts_both_sides() {
        let live = Live::new([("card", "ws://x/")]);
        let minute = 60 * SECOND_MS;
        live.customs_answered("transport", false, 3 * minute - 1_200);
        live.customs_answered("transport", false, 3 * minute - 200);
        live.customs_answered("10000", true, 3 * minute + 100);
        live.customs_answered("transport", false, 3 * minute + 300);
        assert_eq!(live.customs_errors(3 * minute + 500, 4 * SECOND_MS, &[]), 3);
        assert_eq!(live.customs_errors(3 * minute + 500, SECOND_MS, &[]), 2, "the last second and this one");
        assert_eq!(live.customs_errors(3 * minute + 5_000, 4 * SECOND_MS, &[]), 0, "all older than 4 s");
    }

    #[test]
    fn the_card_is_unreachable_from_its_first_failure_to_connect_until_it_connects() {
        let live = Live::new([("a", "ws://a/"), ("b", "ws://b/")]);
        live.card_failed("b", "refused", false, 5);
        live.card_failed("b", "refused again", false, 9);
        live.card_failed("nobody", "not a card", false, 9);
        let cards = live.cards();
        assert_eq!((cards[0].name.as_str(), cards[0].unreachable_since), ("a", None), "each card its own");
        assert_eq!((cards[1].name.as_str(), cards[1].unreachable_since), ("b", Some(5)));
        live.card_failed("b", "the card refused", true, 10);
        assert_eq!(live.cards()[1].unreachable_since, None, "it answered");
    }
}
