//! customs179's durable queue in SQLite: customs requests, payment records,
//! prepared uploads and every attempt.
//!
//! The rest of the service sees only [`Store`]'s methods, which speak the
//! domain (requests, payments, claims) and take the current time as an
//! argument, so that tests need no sleeps and a PostgreSQL store can later
//! offer the same methods with its own SQL.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

mod controls;
mod payments;
mod queue;
mod reads;

pub use controls::{Pause, Stage};
pub use payments::{PutError, PutOutcome};
pub use queue::{Claim, Delivery, NewRequest, Pending, PreparedUpload, SigningJob, State, UploadJob};
pub use reads::{AttemptView, ListFilter, RequestDetail, RequestPage, RequestSummary, UploadView};

/// Unix time in milliseconds, the unit of every time the store keeps.
pub type Millis = i64;

/// How long a write waits for another writer before it gives up. Intake
/// answers customs within this time even when the database is stuck.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot apply the database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the database holds data this version cannot read: {0}")]
    Corrupt(String),
}

/// The queue and everything kept for audit.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and applies the
    /// migrations. Commits are fully synced (WAL, `synchronous=FULL`): an
    /// answered customs request must survive a power cut.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // Checkpoints are run by [`Store::checkpoint`] off the commit
            // path; the automatic one would stall whichever commit reaches
            // the threshold, and with it intake's answers.
            .pragma("wal_autocheckpoint", "0");
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        sqlx::migrate!("../../migrations").run(&pool).await?;
        Ok(Store { pool })
    }

    /// Copies the write-ahead log into the database without blocking
    /// writers (a passive checkpoint); the service runs it every second.
    /// Without it the log grows: the automatic checkpoint is off.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection, waiting for those in use. The last one to
    /// close checkpoints the log.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests;
