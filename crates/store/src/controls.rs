//! Global stops that outlive restarts: signing paused after the card refused
//! (it may be a wrong PIN: retrying could lock the card), uploads stopped
//! after customs said the configuration is wrong.

use serde::Serialize;

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
}

impl Store {
    /// Pauses a stage. The first reason is kept: it is the one that matters.
    pub async fn pause(&self, stage: Stage, reason: &str, now: Millis) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO controls (name, paused_at, reason) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(stage.as_str())
        .bind(now)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Clears a pause; returns the one cleared, if any.
    pub async fn resume(&self, stage: Stage) -> Result<Option<Pause>, StoreError> {
        let cleared: Option<(String, Millis)> =
            sqlx::query_as("DELETE FROM controls WHERE name = ? RETURNING reason, paused_at")
                .bind(stage.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(cleared.map(|(reason, since)| Pause { reason, since }))
    }

    pub async fn pause_of(&self, stage: Stage) -> Result<Option<Pause>, StoreError> {
        let pause: Option<(String, Millis)> =
            sqlx::query_as("SELECT reason, paused_at FROM controls WHERE name = ?")
                .bind(stage.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(pause.map(|(reason, since)| Pause { reason, since }))
    }
}
