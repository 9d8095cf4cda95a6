//! Global stops that outlive restarts: signing paused after the card refused
//! (it may be a wrong PIN: retrying could lock the card), uploads stopped
//! after customs said the configuration is wrong; the "PIN in flight" marks
//! that turn a crash during an unproven Sign into such a stop; and the
//! change counter by which a running service notices what the CLI did.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::backend::{for_each_connection, on_db};
use crate::{Millis, Store, StoreError};

/// What can be stopped as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Signing,
    Uploading,
}

impl Stage {
    pub const ALL: [Stage; 2] = [Stage::Signing, Stage::Uploading];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Signing => "signing",
            Stage::Uploading => "uploading",
        }
    }

    pub fn parse(text: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Why and since when a stage is paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pause {
    pub reason: String,
    pub since: Millis,
    /// The operator who paused; None when the service did, on what it saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// One operator action, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: Millis,
    /// The token's name, or the command that acted.
    pub actor: String,
    /// "replay", "pause signing", "resume uploading", ...
    pub action: String,
    /// What it acted on (a sessionID), if one thing.
    pub target: Option<String>,
    pub reason: Option<String>,
    /// How many requests it concerned.
    pub count: i64,
}

/// A Sign carrying a PIN not yet proven on the card, sent and not answered
/// (or whose answer was not yet noted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PinInFlight {
    /// Who sent it: the service, or a command.
    pub holder: String,
    /// The card it was sent to (None for a mark older than card names).
    pub card: Option<String>,
    pub cert_no: String,
    pub since: Millis,
}

impl PinInFlight {
    /// The reason of the pause that a mark left by a dead process becomes.
    pub fn pause_reason(&self) -> String {
        format!(
            "a Sign carrying an unproven PIN (card {}certNo {}, sent by {}) got no answer before the \
             process stopped: the card may have counted a wrong PIN. Check the card's pin, then resume signing",
            self.card.as_ref().map_or(String::new(), |card| format!("{card}, ")),
            self.cert_no,
            self.holder
        )
    }
}

impl Store {
    /// Pauses a stage. The first reason is kept: it is the one that matters.
    /// When the database cannot take it, the pause is written to a file
    /// beside the database instead (and the error returned): whatever opens
    /// the store next applies it, so a pause is never dropped.
    pub async fn pause(&self, stage: Stage, reason: &str, now: Millis) -> Result<(), StoreError> {
        self.pause_as(stage, reason, None, now).await
    }

    /// [`Store::pause`] by an operator (`by`), or by the service (None).
    pub async fn pause_as(
        &self,
        stage: Stage,
        reason: &str,
        by: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.pause_control(stage.as_str(), stage, reason, by, now).await
    }

    /// Inserts the control `name` (a stage, or a card's stage); when the
    /// database refuses, `fallback` (a whole stage: the safe superset of a
    /// card's pause) is kept in a file instead.
    pub(crate) async fn pause_control(
        &self,
        name: &str,
        fallback: Stage,
        reason: &str,
        by: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        on_db!(self, pool, d => {
            let stored = async {
                let mut tx = pool.begin().await?;
                tx.insert_control(name, reason, by, now).await?;
                tx.bump_changes().await?;
                Ok::<_, StoreError>(tx.commit().await?)
            }
            .await;
            if let Err(e) = stored {
                match &self.path {
                    Some(db) => write_pending_pause(db, fallback, reason, now),
                    None => tracing::error!(error = %e, "the database refused a pause; it is not kept"),
                }
                return Err(e);
            }
            Ok(())
        })
    }

    /// Clears a pause; returns the one cleared, if any.
    pub async fn resume(&self, stage: Stage) -> Result<Option<Pause>, StoreError> {
        self.resume_control(stage.as_str()).await
    }

    pub(crate) async fn resume_control(&self, name: &str) -> Result<Option<Pause>, StoreError> {
        on_db!(self, pool, d => {
            let mut tx = pool.begin().await?;
            let cleared: Option<(String, Millis, Option<String>)> =
                sqlx::query_as("DELETE FROM controls WHERE name = $1 RETURNING reason, paused_at, paused_by")
                    .bind(name)
                    .fetch_optional(&mut *tx)
                    .await?;
            tx.bump_changes().await?;
            tx.commit().await?;
            Ok(cleared.map(|(reason, since, by)| Pause { reason, since, by }))
        })
    }

    pub async fn pause_of(&self, stage: Stage) -> Result<Option<Pause>, StoreError> {
        self.control(stage.as_str()).await
    }

    pub(crate) async fn control(&self, name: &str) -> Result<Option<Pause>, StoreError> {
        on_db!(self, pool, d => {
            let pause: Option<(String, Millis, Option<String>)> =
                sqlx::query_as("SELECT reason, paused_at, paused_by FROM controls WHERE name = $1")
                    .bind(name)
                    .fetch_optional(pool)
                    .await?;
            Ok(pause.map(|(reason, since, by)| Pause { reason, since, by }))
        })
    }

    /// Writes an operator's action to the audit log.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: Option<&str>,
        reason: Option<&str>,
        count: i64,
        now: Millis,
    ) -> Result<(), StoreError> {
        on_db!(self, pool, d => {
            sqlx::query("INSERT INTO audit (at, actor, action, target, reason, count) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(now)
                .bind(actor)
                .bind(action)
                .bind(target)
                .bind(reason)
                .bind(count)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// The audit log, newest first: up to `limit` entries older than `before` (an id).
    pub async fn audit_log(&self, limit: i64, before: Option<i64>) -> Result<Vec<AuditEntry>, StoreError> {
        on_db!(self, pool, d => {
            type Row = (i64, Millis, String, String, Option<String>, Option<String>, i64);
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT id, at, actor, action, target, reason, count FROM audit
                 WHERE id < $1 ORDER BY id DESC LIMIT $2",
            )
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(id, at, actor, action, target, reason, count)| AuditEntry {
                    id,
                    at,
                    actor,
                    action,
                    target,
                    reason,
                    count,
                })
                .collect())
        })
    }

    /// Commits the "PIN in flight" mark of `holder` on `card`, before its
    /// Sign is sent. A service's instance marks only a card it drives (see
    /// [`Store::take_card`]), and false says it does not any more: the Sign
    /// must not be sent, as another instance may be sending the PIN.
    pub async fn mark_pin_in_flight(
        &self,
        holder: &str,
        card: &str,
        cert_no: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        on_db!(self, pool, d => {
            // The card's lease is locked while the mark goes in: a takeover
            // either comes after it (and turns it into a pause) or before
            // (and the mark is not written).
            let sql = format!(
                "INSERT INTO pin_in_flight (holder, card, cert_no, since, instance)
                 SELECT $1, $2, $3, $4, $5
                 WHERE $5 IS NULL OR EXISTS (SELECT 1 FROM card_leases WHERE card = $2 AND owner = $5{})
                 ON CONFLICT (holder) DO UPDATE SET card = excluded.card, cert_no = excluded.cert_no,
                                                    since = excluded.since, instance = excluded.instance",
                d.for_share()
            );
            let marked = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(holder)
                .bind(card)
                .bind(cert_no)
                .bind(now)
                .bind(self.instance.as_deref())
                .execute(pool)
                .await?;
            Ok(marked.rows_affected() == 1)
        })
    }

    /// Clears `holder`'s mark once the card has answered.
    pub async fn clear_pin_in_flight(&self, holder: &str) -> Result<(), StoreError> {
        on_db!(self, pool, d => {
            sqlx::query("DELETE FROM pin_in_flight WHERE holder = $1").bind(holder).execute(pool).await?;
            Ok(())
        })
    }

    pub async fn pins_in_flight(&self) -> Result<Vec<PinInFlight>, StoreError> {
        on_db!(self, pool, d => {
            Ok(sqlx::query_as("SELECT holder, card, cert_no, since FROM pin_in_flight ORDER BY since")
                .fetch_all(pool)
                .await?)
        })
    }

    /// Turns the marks left by dead processes into pauses, in one
    /// transaction; returns them. A mark on one of `cards` pauses that
    /// card's signing; a mark on a card not configured any more (or older
    /// than card names) pauses signing on every card. Only a process that
    /// knows no other one can be signing (the service, holding the
    /// database's lock) may call it.
    pub async fn pause_for_pins_in_flight(
        &self,
        cards: &[&str],
        now: Millis,
    ) -> Result<Vec<PinInFlight>, StoreError> {
        on_db!(self, pool, d => {
            let mut tx = pool.begin_with(d.begin_writing()).await?;
            let mut marks: Vec<PinInFlight> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("DELETE FROM pin_in_flight RETURNING {MARK}"))).fetch_all(&mut *tx).await?;
            marks.sort_by_key(|mark| mark.since);
            tx.pause_for_marks(&marks, |card| cards.contains(&card), now).await?;
            tx.commit().await?;
            Ok(marks)
        })
    }

    /// A number that changes whenever an operator replays, pauses or resumes
    /// (through the API or the CLI): a running service polls it to notice
    /// what was done behind its back.
    pub async fn changes(&self) -> Result<i64, StoreError> {
        on_db!(self, pool, d => {
            Ok(sqlx::query_scalar("SELECT version FROM changes WHERE id = 1").fetch_one(pool).await?)
        })
    }

    /// Applies the pauses that could not be stored earlier (see
    /// [`Store::pause`]) and removes their files.
    pub(crate) async fn apply_pending_pauses(&self, db: &Path) -> Result<(), StoreError> {
        for stage in Stage::ALL {
            let file = pending_pause_file(db, stage);
            let Ok(text) = std::fs::read_to_string(&file) else { continue };
            let (since, reason) = text.split_once('\n').unwrap_or(("0", text.as_str()));
            let since = since.trim().parse().unwrap_or(0);
            // Stored before the file goes: a crash in between applies it twice, harmlessly.
            self.pause(stage, reason, since).await?;
            std::fs::remove_file(&file).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        }
        Ok(())
    }
}

/// The writes of controls that other statements share, inside a transaction of either
/// database.
pub(crate) trait ControlWrites {
    /// Sets the control `name` (a stage, or a card's stage); a pause already there keeps
    /// its first reason.
    async fn insert_control(
        &mut self,
        name: &str,
        reason: &str,
        by: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Bumps the change counter, in a transaction that changes a control or a request.
    async fn bump_changes(&mut self) -> Result<(), StoreError>;

    /// Turns "PIN in flight" marks (taken out of their table) into pauses: of
    /// the signing of their card where `known` knows it, else of all signing
    /// (a mark on a card not configured any more, or older than card names).
    async fn pause_for_marks(
        &mut self,
        marks: &[PinInFlight],
        known: impl Fn(&str) -> bool,
        now: Millis,
    ) -> Result<(), StoreError>;
}

/// The columns of a [`PinInFlight`], for `SELECT` and `RETURNING`.
pub(crate) const MARK: &str = "holder, card, cert_no, since";

for_each_connection! { impl ControlWrites {
    async fn insert_control(
        &mut self,
        name: &str,
        reason: &str,
        by: Option<&str>,
        now: Millis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO controls (name, paused_at, reason, paused_by) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(now)
        .bind(reason)
        .bind(by)
        .execute(self)
        .await?;
        Ok(())
    }

    async fn bump_changes(&mut self) -> Result<(), StoreError> {
        sqlx::query("UPDATE changes SET version = version + 1 WHERE id = 1").execute(self).await?;
        Ok(())
    }

    async fn pause_for_marks(
        &mut self,
        marks: &[PinInFlight],
        known: impl Fn(&str) -> bool,
        now: Millis,
    ) -> Result<(), StoreError> {
        for mark in marks {
            let control = match mark.card.as_deref().filter(|card| known(card)) {
                Some(card) => crate::cards::control_name(card, Stage::Signing),
                None => Stage::Signing.as_str().to_owned(),
            };
            self.insert_control(&control, &mark.pause_reason(), None, now).await?;
        }
        if !marks.is_empty() {
            self.bump_changes().await?;
        }
        Ok(())
    }
}}

/// `customs179.sqlite` → `customs179.sqlite.signing-paused`.
fn pending_pause_file(db: &Path, stage: Stage) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(format!(".{}-paused", stage.as_str()));
    PathBuf::from(name)
}

/// Writes and syncs the file that stands in for a pause the database refused.
fn write_pending_pause(db: &Path, stage: Stage, reason: &str, now: Millis) {
    let file = pending_pause_file(db, stage);
    let written = std::fs::File::create(&file).and_then(|mut f| {
        write!(f, "{now}\n{reason}")?;
        f.sync_all()
    });
    match written {
        Ok(()) => {
            tracing::error!(file = %file.display(), "the pause is kept in a file until the database takes it")
        }
        Err(e) => {
            tracing::error!(file = %file.display(), error = %e, "cannot keep the pause in a file either")
        }
    }
}
