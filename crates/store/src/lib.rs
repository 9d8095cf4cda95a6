//! customs179's durable queue in SQLite or PostgreSQL: customs requests,
//! payment records, prepared uploads and every attempt.
//!
//! The rest of the service sees only [`Store`]'s methods, which speak the
//! domain (requests, payments, claims) and take the current time as an
//! argument, so that tests need no sleeps; which database is behind them
//! is the store's business (see [`backend`]).

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::backend::{Pool, on_db};

mod alerts;
mod backend;
mod cards;
mod controls;
mod export;
mod feed;
mod instances;
mod payments;
mod queue;
mod reads;
mod replays;

pub use alerts::{AlertDelivery, AlertRecord, DueAlert};
pub use cards::{CardPause, CertificateRefused};
pub use controls::{AuditEntry, Pause, PinInFlight, Stage};
pub use export::{ExportCursor, ExportPage, ExportRange, ExportRow};
pub use feed::{Changed, Watch};
pub use instances::{CardLease, CardLeaseView, DeadInstance, INSTANCE_TTL, InstanceInfo, InstanceView};
pub use payments::{PutError, PutOutcome};
pub use queue::{
    Claim, Delivery, NewRequest, Outcome, Pending, PreparedUpload, SigningJob, State, UploadJob,
};
pub use reads::{AttemptView, ListFilter, RequestDetail, RequestPage, RequestSummary, Sort, UploadView};
pub use replays::{
    DryRun, FailureExample, FailureGroup, NotTaken, REPLAY_CAP, REPLAY_CHUNK, REPLAY_TOKEN_TTL, ReplayError,
    ReplayFilter, ReplayJob, ReplayProgress, ReplaySelection, ReplayStatus, failure_group_id, failure_kind,
};

/// Unix time in milliseconds, the unit of every time the store keeps.
pub type Millis = i64;

/// How long a write waits for another writer before it gives up. Intake
/// answers customs within this time even when the database is stuck.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// At most this many passes of [`Store::checkpoint`] run beside the commits.
const CHECKPOINT_PASSES: usize = 4;
/// What may be left for the pass that intake's commits wait for: frames written while the
/// pass before ran.
const CATCH_UP_FRAMES: i64 = 2_000;

/// What `PRAGMA wal_checkpoint` answers: the frames in the log, and how many are copied.
struct WalPass {
    log: i64,
    copied: i64,
}

/// One passive checkpoint (it never waits for readers or writers) on `connection`.
async fn passive_checkpoint(connection: &mut sqlx::SqliteConnection) -> Result<WalPass, StoreError> {
    let (_busy, log, copied): (i64, i64, i64) =
        sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(connection).await?;
    Ok(WalPass { log, copied })
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the PostgreSQL address is not valid: {0}")]
    BadUrl(String),
    #[error("cannot apply the database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the database holds data this version cannot read: {0}")]
    Corrupt(String),
    #[error(
        "another customs179 serve is using the database {0} (it holds {0}.lock); stop it first, or give this \
         one its own [store] path"
    )]
    InUse(String),
}

/// Where the store is kept.
#[derive(Debug, Clone)]
pub enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://…`); the address may carry a password.
    Postgres(customs179_core::Secret),
}

impl Location {
    /// A PostgreSQL location, if `url` is a PostgreSQL address (the reason
    /// why not never repeats it: it may hold a password).
    pub fn postgres(url: &str) -> Result<Location, StoreError> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(StoreError::BadUrl(
                "expected postgres://user[:password]@host[:port]/database".into(),
            ));
        }
        pg_options(url)?;
        Ok(Location::Postgres(customs179_core::Secret::new(url)))
    }

    /// The location for logs and errors: a path, or the PostgreSQL address
    /// without its password.
    pub fn describe(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres(url) => match PgConnectOptions::from_str(url.expose()) {
                Ok(options) => format!(
                    "postgres://{}@{}:{}/{}",
                    options.get_username(),
                    options.get_host(),
                    options.get_port(),
                    options.get_database().unwrap_or_default()
                ),
                Err(_) => "an unreadable PostgreSQL address".to_owned(),
            },
        }
    }
}

/// The queue and everything kept for audit.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    /// The SQLite file, beside which pauses the database refused are kept
    /// (None on PostgreSQL, which has no such place).
    path: Option<Arc<PathBuf>>,
    /// The lock beside a SQLite file that makes a service the only process
    /// working its queue, held for its life (released by the OS when the
    /// process dies, however it dies).
    lock: Option<Arc<File>>,
    /// The instance whose claims this store makes (None: a command's store).
    instance: Option<Arc<str>>,
    /// The requests changed, for live views (see [`feed`]).
    feed: feed::Feed,
    /// The last failure groups, and when they were read.
    failures: Arc<tokio::sync::Mutex<Option<replays::FailuresRead>>>,
    /// The SQLite connection intake commits on, in a service (see [`Store::open_exclusive`]).
    intake: Option<sqlx::SqlitePool>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and applies the
    /// migrations, and any pause that could only be kept in a file. Commits
    /// are fully synced (WAL, `synchronous=FULL`): an answered customs
    /// request must survive a power cut.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, None).await
    }

    /// Opens the database for the one process that works its queue: takes
    /// the exclusive lock beside it (refusing with [`StoreError::InUse`] when
    /// another process holds it) and, since every lease in the database now
    /// belongs to a process that is gone, releases them all, so that the
    /// work a crashed process had claimed resumes at once. Returns how many
    /// leases were released.
    pub async fn open_exclusive(path: &Path, now: Millis) -> Result<(Store, u64), StoreError> {
        let lock = lock_file(path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StoreError::InUse(path.display().to_string())),
            Err(TryLockError::Error(e)) => return Err(StoreError::Database(sqlx::Error::Io(e))),
        }
        let store = Store::open_with(path, Some(lock)).await?;
        let released = store.release_all_leases(now).await?;
        Ok((store, released))
    }

    /// Whether a process holds the database's exclusive lock (a running service).
    pub fn in_use(path: &Path) -> Result<bool, StoreError> {
        let lock = lock_file(path)?;
        match lock.try_lock() {
            Ok(()) => Ok(false),
            Err(TryLockError::WouldBlock) => Ok(true),
            Err(TryLockError::Error(e)) => Err(StoreError::Database(sqlx::Error::Io(e))),
        }
    }

    async fn open_with(path: &Path, lock: Option<File>) -> Result<Store, StoreError> {
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
            .pragma("wal_autocheckpoint", "0")
            // Up to 64 MiB of pages a connection (SQLite's default is 2 MiB), for the ten
            // indexes intake writes at a million requests (measured together with intake's
            // own connection below, not alone).
            .pragma("cache_size", "-65536");
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options.clone()).await?;
        sqlx::migrate!("../../migrations/sqlite").run(&pool).await?;
        // The service's intake commits on a connection of its own, whose cache stays warm: the
        // pool hands its connections out in turn, and a connection that another one's commit
        // came after drops its whole cache, so that each group commit began by reading its
        // indexes' pages again. Without it the million bench's intake fell behind on every run
        // here and did not recover (BENCHMARKS.md). Commands open no such connection.
        let intake = match lock {
            Some(_) => Some(SqlitePoolOptions::new().max_connections(1).connect_with(options).await?),
            None => None,
        };
        let mut store = Store::with_pool(Pool::Sqlite(pool), Some(path), lock);
        store.intake = intake;
        store.apply_pending_pauses(path).await?;
        store.group_older_failures().await?;
        Ok(store)
    }

    /// Opens the store at `location` ([`Store::open`] or [`Store::connect`]).
    pub async fn open_at(location: &Location) -> Result<Store, StoreError> {
        match location {
            Location::Sqlite(path) => Store::open(path).await,
            Location::Postgres(url) => Store::connect(url.expose()).await,
        }
    }

    /// Opens the store at `location` for a service: on SQLite, as the only
    /// process working its queue ([`Store::open_exclusive`]); on PostgreSQL,
    /// as one of its instances, which share the queue: the claims of those
    /// that died are released by [`Store::retire_dead_instances`], not here.
    pub async fn open_for_service(location: &Location, now: Millis) -> Result<(Store, u64), StoreError> {
        match location {
            Location::Sqlite(path) => Store::open_exclusive(path, now).await,
            Location::Postgres(url) => Ok((Store::connect(url.expose()).await?, 0)),
        }
    }

    /// Whether a service works the store at `location`: holds its lock
    /// ([`Store::in_use`]), or on PostgreSQL, any instance lives.
    pub async fn in_use_at(location: &Location, now: Millis) -> Result<bool, StoreError> {
        match location {
            Location::Sqlite(path) => Store::in_use(path),
            Location::Postgres(url) => {
                let store = Store::connect(url.expose()).await?;
                let live = store.live_instances(now).await;
                store.close().await;
                Ok(live? > 0)
            }
        }
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://…`) and
    /// applies its migrations (under PostgreSQL's advisory lock, so that
    /// instances starting together take turns).
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(pg_options(url)?).await
    }

    /// [`Store::connect`] with the options already made.
    pub async fn connect_with(options: PgConnectOptions) -> Result<Store, StoreError> {
        // PostgreSQL's notices (the migrations' "already exists, skipping" at every start)
        // would be logged as the service's own; its warnings still are.
        let options = options.options([("client_min_messages", "warning")]);
        let pool = PgPoolOptions::new().max_connections(8).connect_with(options).await?;
        sqlx::migrate!("../../migrations/postgres").run(&pool).await?;
        let store = Store::with_pool(Pool::Postgres(pool), None, None);
        store.group_older_failures().await?;
        Ok(store)
    }

    fn with_pool(pool: Pool, path: Option<&Path>, lock: Option<File>) -> Store {
        Store {
            pool,
            path: path.map(|path| Arc::new(path.to_owned())),
            lock: lock.map(Arc::new),
            instance: None,
            feed: feed::Feed::default(),
            failures: Arc::default(),
            intake: None,
        }
    }

    /// Whether this store is the only one working its queue (a service's, on SQLite).
    pub fn is_exclusive(&self) -> bool {
        self.lock.is_some()
    }

    /// Copies the write-ahead log into the database, so that the next commit starts the log
    /// over from its beginning; the service runs it every second (the automatic checkpoint is
    /// off). PostgreSQL checkpoints on its own.
    ///
    /// SQLite starts the log over only when a commit finds every frame of it copied, and a
    /// passive checkpoint copies the frames that were there when it began: under a steady
    /// stream of commits it never catches up, and the log grew by about 100 MB a second at
    /// 5,000 customs calls a second (BENCHMARKS.md), each commit appending to the file, for
    /// which the kernel zeroes new pages (17 % of a profile of the service). So passes
    /// that do not block writers copy what they can until what was added meanwhile is small,
    /// and the rest is copied on intake's own connection, which intake's next commit waits
    /// for, once a second (intake's commits, that wait included, stayed under 5 ms in all
    /// but 12 of 23,704 at 5,000 calls a second on a million requests).
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        let Pool::Sqlite(pool) = &self.pool else { return Ok(()) };
        let mut copied_before = 0;
        for _ in 0..CHECKPOINT_PASSES {
            let pass = passive_checkpoint(&mut *pool.acquire().await?).await?;
            // Frames this pass found that the one before it had not copied.
            let added = if pass.log >= copied_before { pass.log - copied_before } else { pass.log };
            copied_before = pass.copied;
            if added <= CATCH_UP_FRAMES {
                break;
            }
        }
        if let Some(intake) = &self.intake {
            passive_checkpoint(&mut *intake.acquire().await?).await?;
        }
        Ok(())
    }

    /// The SQLite pool, for tests that look at SQLite's own plans and files.
    #[cfg(test)]
    pub(crate) fn sqlite(&self) -> &sqlx::SqlitePool {
        match &self.pool {
            Pool::Sqlite(pool) => pool,
            Pool::Postgres(_) => panic!("a SQLite test on PostgreSQL"),
        }
    }

    /// Closes every connection, waiting for those in use. The last one to
    /// close checkpoints the log.
    pub async fn close(&self) {
        if let Some(intake) = &self.intake {
            intake.close().await;
        }
        on_db!(self, pool, _d => pool.close().await)
    }
}

/// The options of a PostgreSQL address. The address may hold a password:
/// the error does not repeat it.
fn pg_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    PgConnectOptions::from_str(url)
        .map_err(|_| StoreError::BadUrl("expected postgres://user[:password]@host[:port]/database".into()))
}

/// `customs179.sqlite` → `customs179.sqlite.lock`, created if needed.
fn lock_file(db: &Path) -> Result<File, StoreError> {
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
    }
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PathBuf::from(name))
        .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))
}

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;
