//! Several cards: each card's own pauses (its signing: a refused PIN, its
//! breaker, its certificate; its uploads: customs refused its certNo), and
//! what a 20004 for one card's certNo does to the requests it signed.
//!
//! A card's pauses are rows of `controls` beside the global ones, named
//! `card:NAME:signing` and `card:NAME:uploading`. A card signs only while
//! neither all signing nor either of its own stages is paused: a card whose
//! certNo customs refused must not sign what would be refused again.

use serde::Serialize;

use crate::backend::on_db;
use crate::controls::ControlWrites as _;
use crate::queue::{Entry, QueueWrites as _, UploadJob};
use crate::{Millis, Outcome, Pause, Stage, Store, StoreError};

/// One card's pause of one stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CardPause {
    pub card: String,
    pub stage: Stage,
    #[serde(flatten)]
    pub pause: Pause,
}

impl CardPause {
    /// `card`'s pause of `stage` among `pauses` (as [`Store::card_pauses`] lists them).
    pub fn find<'a>(pauses: &'a [CardPause], card: &str, stage: Stage) -> Option<&'a Pause> {
        pauses.iter().find(|p| p.card == card && p.stage == stage).map(|p| &p.pause)
    }
}

/// What a 20004 for the certNo of an upload came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateRefused {
    /// The signing card's uploads are paused, and every signed request with
    /// the refused certNo (this one included) is back in `ready`, to be
    /// signed by another card: their pre-sign strings stay as they are.
    SentBack { card: String, requests: Vec<String> },
    /// No other card is left (or the card that signed is unknown): all
    /// uploads are stopped, and the request waits, signed, as it is.
    AllStopped,
    /// The claim was lost: nothing was changed.
    Lost,
}

const CARD_PREFIX: &str = "card:";

/// The `controls` row of a card's stage.
pub(crate) fn control_name(card: &str, stage: Stage) -> String {
    format!("{CARD_PREFIX}{card}:{}", stage.as_str())
}

/// The card and stage of a `controls` row named by [`control_name`].
fn parse_control_name(name: &str) -> Option<(String, Stage)> {
    let (card, stage) = name.strip_prefix(CARD_PREFIX)?.rsplit_once(':')?;
    Some((card.to_owned(), Stage::parse(stage)?))
}

impl Store {
    /// Pauses one card's stage (the first reason is kept). When the
    /// database refuses, the whole stage is paused from a file instead, at
    /// the next open: stopping every card is the safe side of stopping one.
    pub async fn pause_card(
        &self,
        card: &str,
        stage: Stage,
        reason: &str,
        by: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.pause_control(&control_name(card, stage), stage, reason, by, now).await
    }

    /// Clears one card's pause of a stage; returns the one cleared, if any.
    pub async fn resume_card(&self, card: &str, stage: Stage) -> Result<Option<Pause>, StoreError> {
        self.resume_control(&control_name(card, stage)).await
    }

    pub async fn card_pause_of(&self, card: &str, stage: Stage) -> Result<Option<Pause>, StoreError> {
        self.control(&control_name(card, stage)).await
    }

    /// Every card's pauses, by card then stage.
    pub async fn card_pauses(&self) -> Result<Vec<CardPause>, StoreError> {
        on_db!(self, pool, d => {
            let rows: Vec<(String, String, Millis, Option<String>)> = sqlx::query_as(
                "SELECT name, reason, paused_at, paused_by FROM controls WHERE name LIKE 'card:%' ORDER BY name",
            )
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .filter_map(|(name, reason, since, by)| {
                    let (card, stage) = parse_control_name(&name)?;
                    Some(CardPause { card, stage, pause: Pause { reason, since, by } })
                })
                .collect())
        })
    }

    /// What keeps `card` from signing, if anything: all signing paused,
    /// then the card's own signing, then its uploads.
    pub async fn card_signing_stop(&self, card: &str) -> Result<Option<Pause>, StoreError> {
        on_db!(self, pool, d => {
            let names = [
                Stage::Signing.as_str().to_owned(),
                control_name(card, Stage::Signing),
                control_name(card, Stage::Uploading),
            ];
            let rows: Vec<(String, String, Millis, Option<String>)> =
                sqlx::query_as("SELECT name, reason, paused_at, paused_by FROM controls WHERE name IN ($1, $2, $3)")
                    .bind(&names[0])
                    .bind(&names[1])
                    .bind(&names[2])
                    .fetch_all(pool)
                    .await?;
            Ok(names.iter().find_map(|name| {
                rows.iter().find(|(row, ..)| row == name).map(|(_, reason, since, by)| Pause {
                    reason: reason.clone(),
                    since: *since,
                    by: by.clone(),
                })
            }))
        })
    }

    /// Customs answered 20004 to `job`: the certNo it carries is not
    /// registered (or not for this ebpCode). When a card of `cards` other
    /// than the one that signed is left (its uploads not paused), that card's
    /// uploads are paused and every signed request carrying the refused
    /// certNo goes back to `ready`, to be signed by another card; else all
    /// uploads stop, as with one card. One transaction: two 20004s for two
    /// cards at once cannot both think the other is left.
    pub async fn certificate_refused(
        &self,
        job: &UploadJob,
        cards: &[&str],
        answer: &Outcome<'_>,
        reason: &str,
        now: Millis,
    ) -> Result<CertificateRefused, StoreError> {
        on_db!(self, pool, d => {
            let mut tx = pool.begin_with(d.begin_writing()).await?;
            if let Some(lock) = d.lock_writers("controls") {
                sqlx::query(sqlx::AssertSqlSafe(lock)).execute(&mut *tx).await?;
            }
            let held: Option<(Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT u.card, u.cert_no FROM requests r JOIN uploads u ON u.id = r.upload_id
                 WHERE r.session_id = $1 AND r.generation = $2 AND r.state = 'signed'",
            )
            .bind(&job.claim.session_id)
            .bind(job.claim.generation)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((signed_by, cert_no)) = held else { return Ok(CertificateRefused::Lost) };
            let paused: Vec<String> = sqlx::query_scalar("SELECT name FROM controls WHERE name LIKE 'card:%'")
                .fetch_all(&mut *tx)
                .await?;
            let card = signed_by.filter(|card| cards.contains(&card.as_str()));
            let other_left = card.as_deref().is_some_and(|card| {
                cards
                    .iter()
                    .any(|other| *other != card && !paused.contains(&control_name(other, Stage::Uploading)))
            });
            let (Some(card), Some(cert_no), true) = (card, cert_no, other_left) else {
                sqlx::query(
                    "UPDATE requests SET lease_until = NULL, next_attempt_at = $1, last_error = $2, last_code = $3,
                                     updated_at = $1
                 WHERE session_id = $4",
                )
                .bind(now)
                .bind(answer.text)
                .bind(answer.code)
                .bind(&job.claim.session_id)
                .execute(&mut *tx)
                .await?;
                let entry = Entry::new(&job.claim.session_id, "upload", "retry", now).of(answer);
                tx.record_attempt(&entry).await?;
                tx.insert_control(Stage::Uploading.as_str(), reason, None, now).await?;
                tx.bump_changes().await?;
                tx.commit().await?;
                self.changed(|| vec![job.claim.session_id.clone()]);
                return Ok(CertificateRefused::AllStopped);
            };
            tx.insert_control(&control_name(&card, Stage::Uploading), reason, None, now).await?;
            // Signed requests are few (the state index finds them); each one's
            // upload is read by its key.
            let requests: Vec<String> = sqlx::query_scalar(
                "UPDATE requests
             SET state = 'ready', generation = generation + 1, lease_until = NULL, attempts = 0,
                 next_attempt_at = $1, last_error = $2, last_code = $3, updated_at = $1
             WHERE state = 'signed'
               AND (SELECT u.cert_no FROM uploads u WHERE u.id = requests.upload_id) = $4
             RETURNING session_id",
            )
            .bind(now)
            .bind(reason)
            .bind(answer.code)
            .bind(&cert_no)
            .fetch_all(&mut *tx)
            .await?;
            let back = format!("sent back to be signed by another card (customs refused card {card}'s certNo)");
            for session_id in &requests {
                let entry = if *session_id == job.claim.session_id {
                    Entry::new(session_id, "upload", &back, now).of(answer)
                } else {
                    Entry::new(session_id, "upload", &back, now).detail(reason).code(answer.code)
                };
                tx.record_attempt(&entry).await?;
            }
            tx.bump_changes().await?;
            tx.commit().await?;
            if !requests.is_empty() {
                self.changed(|| requests.clone());
            }
            Ok(CertificateRefused::SentBack { card, requests })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_names_of_cards_read_back() {
        assert_eq!(control_name("card-a", Stage::Signing), "card:card-a:signing");
        assert_eq!(parse_control_name("card:card-a:uploading"), Some(("card-a".into(), Stage::Uploading)));
        assert_eq!(parse_control_name("card:x:nothing"), None);
        assert_eq!(parse_control_name("signing"), None);
    }
}
