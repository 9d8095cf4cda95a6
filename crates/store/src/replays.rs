//! Failures by cause, and bulk replays that act on exactly what a dry run showed.
//!
//! A failed request's *stage* is the step of its last failed attempt ("payment
//! data", "pull", "sign", "upload"); its *kind* is its reason normalised by
//! [`failure_kind`], so that requests failed for the same cause share a kind
//! whatever per-request text (sessionIDs, orderNos, numbers) their reasons hold.
//! A group is one (stage, kind); its id is a hash of the two, the same on every
//! call and in every process.
//!
//! A bulk replay is made in two steps. A dry run captures the failed requests
//! selected (their sessionID and generation, in `replay_items`) and hands out a
//! token; confirming the token (once, within [`REPLAY_TOKEN_TTL`], with a
//! reason) turns the capture into a job, which [`Store::replay_chunk`] works
//! through: a captured request still failed at the captured generation is
//! replayed as [`Store::replay`] does, any other is skipped. Each chunk
//! commits its requests' changes with its items' done flags and the job's
//! counts, so a job cut short by a crash resumes where it was, and no request
//! is replayed twice by one job.

use std::collections::HashSet;

use serde::Serialize;
use sqlx::Row;

use crate::backend::{Dialect, for_each_connection, on_db};
use crate::controls::ControlWrites as _;
use crate::queue::{BACK_TO_WAITING, State};
use crate::{Millis, Store, StoreError};

/// At most this many requests in one bulk replay: a dry run selecting more is refused.
pub const REPLAY_CAP: usize = 10_000;

/// A dry run's token must be confirmed within this time (10 minutes).
pub const REPLAY_TOKEN_TTL: Millis = 10 * 60 * 1_000;

/// Requests replayed per transaction by [`Store::replay_chunk`]'s callers.
pub const REPLAY_CHUNK: i64 = 500;

/// The stage of a failed request that has no failed attempt on record.
const UNKNOWN_STAGE: &str = "unknown";

/// Older failed requests given their group per transaction.
const FAILED_PAGE: i64 = 2_000;

/// Failed requests that failed at the same stage for the same kind of reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureGroup {
    /// Stable: a hash of stage and kind. `{"group": id}` replays the group.
    pub id: String,
    /// The step that failed: "payment data", "pull", "sign", "upload", ...
    pub stage: String,
    /// The normalised reason (see [`failure_kind`]).
    pub kind: String,
    pub count: i64,
    /// When customs called for the oldest and the newest request of the group.
    pub oldest: Millis,
    pub newest: Millis,
    /// When the first and the last of them failed.
    pub first_failed_at: Millis,
    pub last_failed_at: Millis,
    /// The newest request of the group and its reason as it was written.
    pub example: FailureExample,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureExample {
    pub session_id: String,
    pub reason: String,
}

/// Which failed requests a bulk replay takes. Only failed requests are ever taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplaySelection {
    /// These requests, those of them that are failed.
    SessionIds(Vec<String>),
    /// The members of a [`FailureGroup`], by its id.
    Group(String),
    /// Failed requests matching every key given.
    Filter(ReplayFilter),
}

/// Failed requests received (customs' call) in `[since, until)`, of one order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayFilter {
    pub since: Option<Millis>,
    pub until: Option<Millis>,
    pub order_no: Option<String>,
}

/// What a dry run captured.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// The replay job it becomes once confirmed.
    pub id: i64,
    pub token: String,
    /// Failed requests captured.
    pub count: i64,
    pub expires_at: Millis,
    /// Of the sessionIDs given, those not taken (unknown, or not failed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_taken: Vec<NotTaken>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotTaken {
    pub session_id: String,
    /// None when customs never asked for it.
    pub state: Option<State>,
}

/// Where a replay stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayStatus {
    /// A dry run whose token can still be confirmed.
    AwaitingConfirmation,
    /// A dry run never confirmed in time.
    Expired,
    /// Confirmed; requests are still to be replayed.
    Running,
    Finished,
}

/// A bulk replay, from its dry run to its end.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayJob {
    pub id: i64,
    pub status: ReplayStatus,
    /// What was asked for.
    pub selection: serde_json::Value,
    /// Requests the dry run captured.
    pub count: i64,
    pub replayed: i64,
    /// Captured requests that had changed (replayed or failed again by then) and were left alone.
    pub skipped: i64,
    pub to_do: i64,
    pub created_at: Millis,
    pub created_by: String,
    pub expires_at: Millis,
    pub confirmed_at: Option<Millis>,
    pub confirmed_by: Option<String>,
    pub reason: Option<String>,
    pub finished_at: Option<Millis>,
    /// The first skipped sessionIDs (at most [`SKIPPED_SHOWN`]).
    pub skipped_session_ids: Vec<String>,
}

/// How many skipped sessionIDs a [`ReplayJob`] shows.
pub const SKIPPED_SHOWN: i64 = 100;

/// What one [`Store::replay_chunk`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayProgress {
    pub replayed: i64,
    pub skipped: i64,
    /// No item is left (or the job is not a confirmed one).
    pub finished: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "{count} failed requests match, more than the {cap} one bulk replay may take: narrow the selection \
         (since, until, a group)"
    )]
    OverCap { count: i64, cap: usize },
    #[error("no dry run handed out this token")]
    UnknownToken,
    #[error("this token was already used (replay {id}): make a new dry run")]
    TokenUsed { id: i64 },
    #[error(
        "this token has expired (replay {id}; a dry run must be confirmed within 10 minutes): make a new dry run"
    )]
    TokenExpired { id: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl StoreError {
    /// The store was closed (the service is stopping): nothing more can be done with it.
    pub fn is_closed(&self) -> bool {
        matches!(self, StoreError::Database(sqlx::Error::PoolClosed))
    }
}

impl From<sqlx::Error> for ReplayError {
    fn from(e: sqlx::Error) -> ReplayError {
        ReplayError::Store(StoreError::Database(e))
    }
}

/// The kind of a failure reason: what requests failed for the same cause have
/// in common. The rules, in order:
///
/// 1. An upload given up on ("… last answer: A") is known by its last answer A:
///    `customs answered CODE` when customs answered with a code (HTTP 2xx),
///    `HTTP STATUS` for another HTTP status, `HTTP STATUS, an unreadable answer`
///    for a 2xx without a code; any other A (no answer at all) goes on with rule 2.
/// 2. The request's own sessionID and orderNo become `{sessionID}` and `{orderNo}`;
///    only the text before the first `": "` is kept (what follows is detail:
///    problems, answers, transport errors); every run of digits becomes `#`;
///    at most 120 characters are kept.
///
/// So "no payment data for this order after 15 s" is "no payment data for this
/// order after # s", and "gave up after 86400 s; last answer: HTTP 200:
/// {"code":"20001",…}" is "customs answered 20001".
pub fn failure_kind(reason: &str, session_id: &str, order_no: &str) -> String {
    let reason = reason.trim();
    let Some((_, answer)) = reason.split_once("last answer: ") else {
        return generalise(reason, session_id, order_no);
    };
    let answer = answer.trim();
    if let Some(rest) = answer.strip_prefix("HTTP ") {
        let (status, body) = rest.split_once(':').unwrap_or((rest, ""));
        let status = status.trim();
        if !status.is_empty() && status.len() <= 3 && status.bytes().all(|b| b.is_ascii_digit()) {
            if !status.starts_with('2') {
                return format!("HTTP {status}");
            }
            return match customs179_core::CustomsAnswer::parse(body.trim()) {
                Some(customs) => format!("customs answered {}", clip(customs.code.trim(), 40)),
                None => format!("HTTP {status}, an unreadable answer"),
            };
        }
    }
    generalise(answer, session_id, order_no)
}

/// Rule 2 of [`failure_kind`].
fn generalise(text: &str, session_id: &str, order_no: &str) -> String {
    let mut text = text.to_owned();
    let mut own = [(session_id, "{sessionID}"), (order_no, "{orderNo}")];
    // The longer first, should one hold the other.
    own.sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
    for (value, placeholder) in own {
        if !value.is_empty() {
            text = text.replace(value, placeholder);
        }
    }
    let head = text.split_once(": ").map_or(text.as_str(), |(head, _)| head);
    let mut kind = String::with_capacity(head.len());
    let mut in_digits = false;
    for c in head.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                kind.push('#');
            }
            in_digits = true;
        } else {
            kind.push(c);
            in_digits = false;
        }
    }
    clip(kind.trim(), 120)
}

fn clip(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The id of the group of (stage, kind): 64-bit FNV-1a, in hex. Stable across
/// calls, processes and versions (unlike `std`'s hasher).
pub fn failure_group_id(stage: &str, kind: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in stage.bytes().chain([0]).chain(kind.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The failure groups, read on a connection of either database (in the
/// snapshot of a transaction).
trait FailureReads {
    /// Every failure group, from the group columns of failed requests (one pass
    /// over their index), the largest group first.
    async fn failure_groups(&mut self, d: Dialect) -> Result<Vec<FailureGroup>, StoreError>;
}

for_each_connection! { impl FailureReads {
    async fn failure_groups(&mut self, d: Dialect) -> Result<Vec<FailureGroup>, StoreError> {
        let from = d.table_via("requests", "requests_failure_groups");
        let rows: Vec<(String, String, i64, Millis, Millis, Millis, Millis)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT failed_stage, failed_kind, COUNT(*), MIN(received_at), MAX(received_at),
                    MIN(updated_at), MAX(updated_at)
             FROM {from}
             WHERE state = 'failed' AND failed_stage IS NOT NULL AND failed_kind IS NOT NULL
             GROUP BY failed_stage, failed_kind"
        )))
        .fetch_all(&mut *self)
        .await?;
        let mut groups = Vec::with_capacity(rows.len());
        let example = format!(
            "SELECT session_id, last_error FROM {from}
             WHERE state = 'failed' AND failed_stage = $1 AND failed_kind = $2
             ORDER BY received_at DESC, session_id DESC LIMIT 1"
        );
        for (stage, kind, count, oldest, newest, first_failed_at, last_failed_at) in rows {
            let (session_id, reason): (String, Option<String>) = sqlx::query_as(sqlx::AssertSqlSafe(example.clone()))
            .bind(&stage)
            .bind(&kind)
            .fetch_one(&mut *self)
            .await?;
            groups.push(FailureGroup {
                id: failure_group_id(&stage, &kind),
                example: FailureExample { session_id, reason: reason.unwrap_or_default() },
                stage,
                kind,
                count,
                oldest,
                newest,
                first_failed_at,
                last_failed_at,
            });
        }
        groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| (&a.stage, &a.kind).cmp(&(&b.stage, &b.kind))));
        Ok(groups)
    }
}}

impl ReplaySelection {
    /// What the job row keeps of the selection.
    fn describe(&self) -> serde_json::Value {
        match self {
            ReplaySelection::SessionIds(ids) => serde_json::json!({ "session_ids": ids.len() }),
            ReplaySelection::Group(id) => serde_json::json!({ "group": id }),
            ReplaySelection::Filter(filter) => serde_json::json!({ "filter": filter }),
        }
    }
}

/// Failure groups as read when the failed count and the change counter were
/// these two numbers.
pub(crate) type FailuresRead = ((i64, i64), Vec<FailureGroup>);

impl Store {
    /// Failed requests grouped by stage and kind, the largest group first.
    /// Groups in SQL over the index of failed requests' groups, in one
    /// snapshot; and only when they may have changed since the last call: the set of failed requests changes only when one fails
    /// (the failed count grows) or a replay takes some (the change counter
    /// moves, whichever process replayed), so the two numbers tell.
    pub async fn failure_groups(&self) -> Result<Vec<FailureGroup>, StoreError> {
        on_db!(self, pool, d => {
            // A read transaction: one snapshot for every page, and no writer waits for it.
            let mut tx = pool.begin().await?;
            let seen: (i64, i64) = sqlx::query_as(
                "SELECT (SELECT CAST(SUM(n) AS BIGINT) FROM state_counts WHERE state = 'failed'), (SELECT version FROM changes WHERE id = 1)",
            )
            .fetch_one(&mut *tx)
            .await?;
            // Held while grouping: callers at the same moment wait for one pass.
            let mut cached = self.failures.lock().await;
            if let Some((at, groups)) = cached.as_ref()
                && *at == seen
            {
                return Ok(groups.clone());
            }
            let groups = tx.failure_groups(d).await?;
            tx.rollback().await?;
            *cached = Some((seen, groups.clone()));
            Ok(groups)
        })
    }

    /// Gives requests failed before their group was kept in the row (migration
    /// 0016) their stage and kind: the stage is the step of their last failed
    /// attempt. A few thousand at a time; once done, one indexed look finds
    /// nothing more.
    pub(crate) async fn group_older_failures(&self) -> Result<(), StoreError> {
        on_db!(self, pool, d => {
            loop {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT r.session_id, r.order_no, r.last_error,
                        (SELECT a.step FROM attempts a WHERE a.session_id = r.session_id
                         AND a.outcome = 'failed' ORDER BY a.id DESC LIMIT 1)
                 FROM {} WHERE r.state = 'failed' AND r.failed_stage IS NULL LIMIT $1",
                    d.table_via("requests r", "requests_failure_groups")
                )))
                .bind(FAILED_PAGE)
                .fetch_all(pool)
                .await?;
                if rows.is_empty() {
                    return Ok(());
                }
                let mut tx = pool.begin().await?;
                for row in rows {
                    let session_id: String = row.get(0);
                    let order_no: String = row.get(1);
                    let reason: Option<String> = row.get(2);
                    let stage: Option<String> = row.get(3);
                    // Guarded: a request that failed again meanwhile has its own group already.
                    sqlx::query(
                        "UPDATE requests SET failed_stage = $1, failed_kind = $2
                         WHERE session_id = $3 AND state = 'failed' AND failed_stage IS NULL",
                    )
                    .bind(stage.as_deref().unwrap_or(UNKNOWN_STAGE))
                    .bind(failure_kind(reason.as_deref().unwrap_or_default(), &session_id, &order_no))
                    .bind(&session_id)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
        })
    }

    /// A bulk replay's dry run: captures the failed requests `selection`
    /// takes, each with its generation, under a new token (`token`, made by
    /// the caller: unguessable, unique) to be confirmed by
    /// [`Store::confirm_replay`] within [`REPLAY_TOKEN_TTL`]. Refused when it
    /// would take more than `cap` requests. The selection is read in one
    /// snapshot without holding up writers; what changes after it is left
    /// alone by the confirmed replay.
    pub async fn capture_replay(
        &self,
        selection: &ReplaySelection,
        actor: &str,
        token: &str,
        cap: usize,
        now: Millis,
    ) -> Result<DryRun, ReplayError> {
        on_db!(self, pool, d => {
            let cap_count = i64::try_from(cap).unwrap_or(i64::MAX);
            let mut items: Vec<(String, i64)> = Vec::new();
            let mut not_taken = Vec::new();
            let mut read = pool.begin().await?;
            match selection {
                ReplaySelection::SessionIds(ids) => {
                    let mut seen = HashSet::new();
                    let ids: Vec<&String> = ids.iter().filter(|id| seen.insert(id.as_str())).collect();
                    if ids.len() > cap {
                        return Err(ReplayError::OverCap {
                            count: i64::try_from(ids.len()).unwrap_or(i64::MAX),
                            cap,
                        });
                    }
                    let json = serde_json::to_string(&ids).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    let found: Vec<(String, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "SELECT session_id, state, generation FROM requests WHERE session_id IN ({})",
                        d.json_strings("$1")
                    )))
                    .bind(json)
                    .fetch_all(&mut *read)
                    .await?;
                    let found: std::collections::HashMap<&str, (&str, i64)> = found
                        .iter()
                        .map(|(id, state, generation)| (id.as_str(), (state.as_str(), *generation)))
                        .collect();
                    for id in ids {
                        match found.get(id.as_str()) {
                            Some((state, generation)) if *state == State::Failed.as_str() => {
                                items.push((id.clone(), *generation));
                            }
                            Some((state, _)) => {
                                not_taken.push(NotTaken { session_id: id.clone(), state: State::parse(state) });
                            }
                            None => not_taken.push(NotTaken { session_id: id.clone(), state: None }),
                        }
                    }
                }
                ReplaySelection::Group(group) => {
                    let groups = read.failure_groups(d).await?;
                    if let Some(found) = groups.iter().find(|g| g.id == *group) {
                        if found.count > cap_count {
                            return Err(ReplayError::OverCap { count: found.count, cap });
                        }
                        items = sqlx::query_as(
                            "SELECT session_id, generation FROM requests
                             WHERE state = 'failed' AND failed_stage = $1 AND failed_kind = $2",
                        )
                        .bind(&found.stage)
                        .bind(&found.kind)
                        .fetch_all(&mut *read)
                        .await?;
                    }
                }
                ReplaySelection::Filter(filter) => {
                    const WHERE: &str =
                        "FROM requests WHERE state = 'failed' AND received_at >= $1 AND received_at < $2
                                         AND ($3 IS NULL OR order_no = $3)";
                    let since = filter.since.unwrap_or(Millis::MIN);
                    let until = filter.until.unwrap_or(Millis::MAX);
                    let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) {WHERE}")))
                        .bind(since)
                        .bind(until)
                        .bind(filter.order_no.as_deref())
                        .fetch_one(&mut *read)
                        .await?;
                    if count > cap_count {
                        return Err(ReplayError::OverCap { count, cap });
                    }
                    items = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT session_id, generation {WHERE}")))
                        .bind(since)
                        .bind(until)
                        .bind(filter.order_no.as_deref())
                        .fetch_all(&mut *read)
                        .await?;
                }
            }
            read.rollback().await?;

            let selection_text = selection.describe().to_string();
            let items_json = serde_json::to_string(&items).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let count = i64::try_from(items.len()).unwrap_or(i64::MAX);
            let expires_at = now.saturating_add(REPLAY_TOKEN_TTL);
            let mut tx = pool.begin_with(d.begin_writing()).await?;
            // Dry runs never confirmed keep their row (so their token is known as
            // expired) but not their capture.
            sqlx::query(
                "DELETE FROM replay_items WHERE replay_id IN
                     (SELECT id FROM replays WHERE confirmed_at IS NULL AND expires_at <= $1)",
            )
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO replays (token, selection, count, created_at, created_by, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(token)
            .bind(&selection_text)
            .bind(count)
            .bind(now)
            .bind(actor)
            .bind(expires_at)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO replay_items (replay_id, session_id, generation) SELECT $1, item.* FROM ({}) AS item",
                d.json_pairs("$2")
            )))
            .bind(id)
            .bind(items_json)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(DryRun { id, token: token.to_owned(), count, expires_at, not_taken })
        })
    }

    /// Confirms a dry run's token: once, before it expires. The job starts
    /// (to be worked through by [`Store::replay_chunk`]) and the audit log
    /// gets its entry (`actor`, "replay", target `replays/{id}`, `reason`,
    /// the count captured), in one transaction.
    pub async fn confirm_replay(
        &self,
        token: &str,
        actor: &str,
        reason: &str,
        now: Millis,
    ) -> Result<ReplayJob, ReplayError> {
        on_db!(self, pool, d => {
            let mut tx = pool.begin_with(d.begin_writing()).await?;
            // Locked: a token is confirmed once, however many confirm it at once.
            let found: Option<(i64, Option<Millis>, Millis, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT id, confirmed_at, expires_at, count FROM replays WHERE token = $1{}",
                d.for_update()
            )))
            .bind(token)
                    .fetch_optional(&mut *tx)
                    .await?;
            let (id, confirmed_at, expires_at, count) = found.ok_or(ReplayError::UnknownToken)?;
            if confirmed_at.is_some() {
                return Err(ReplayError::TokenUsed { id });
            }
            if expires_at <= now {
                return Err(ReplayError::TokenExpired { id });
            }
            sqlx::query(
                "UPDATE replays SET confirmed_at = $1, confirmed_by = $2, reason = $3,
                                finished_at = CASE WHEN count = 0 THEN $1 END, worker = $5
             WHERE id = $4",
            )
            .bind(now)
            .bind(actor)
            .bind(reason)
            .bind(id)
            .bind(self.instance.as_deref())
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO audit (at, actor, action, target, reason, count) VALUES ($1, $2, 'replay', $3, $4, $5)",
            )
            .bind(now)
            .bind(actor)
            .bind(format!("replays/{id}"))
            .bind(reason)
            .bind(count)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            let job = self.replay_job(id, now).await?;
            job.ok_or_else(|| ReplayError::Store(StoreError::Corrupt(format!("replay {id} vanished"))))
        })
    }

    /// Works through up to `limit` items of confirmed replay `id`, in one
    /// transaction: each captured request still failed at its captured
    /// generation goes back to `waiting` as [`Store::replay`] puts it (its
    /// give-up clocks restart, so the queue takes it after live work); the
    /// others are skipped. Safe to run from two processes at once.
    pub async fn replay_chunk(&self, id: i64, limit: i64, now: Millis) -> Result<ReplayProgress, StoreError> {
        on_db!(self, pool, d => {
            let mut tx = pool.begin_with(d.begin_writing()).await?;
            // Locked: two workers of one job take turns, each chunk after the last.
            let confirmed: Option<Option<Millis>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT confirmed_at FROM replays WHERE id = $1 AND finished_at IS NULL{}",
                d.for_update()
            )))
            .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if !matches!(confirmed, Some(Some(_))) {
                return Ok(ReplayProgress { replayed: 0, skipped: 0, finished: true });
            }
            let chunk: Vec<String> = sqlx::query_scalar(
                "SELECT session_id FROM replay_items WHERE replay_id = $1 AND done = 0 ORDER BY session_id LIMIT $2",
            )
            .bind(id)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            let chunk_json = serde_json::to_string(&chunk).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            // Store::replay's change, for the requests unchanged since the dry run.
            let replayed: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "UPDATE requests SET {BACK_TO_WAITING}
             WHERE session_id IN ({}) AND state = 'failed'
               AND generation = (SELECT i.generation FROM replay_items i
                                 WHERE i.replay_id = $3 AND i.session_id = requests.session_id)
             RETURNING session_id",
                d.json_strings("$2")
            )))
            .bind(now)
            .bind(&chunk_json)
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            let replayed_json =
                serde_json::to_string(&replayed).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO attempts (session_id, upload_id, step, at, outcome, detail)
             SELECT session_id, upload_id, 'replay', $1, 'replayed', $2 FROM requests
             WHERE session_id IN ({})",
                d.json_strings("$3")
            )))
            .bind(now)
            .bind(format!("was failed; bulk replay {id}"))
            .bind(&replayed_json)
            .execute(&mut *tx)
            .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE replay_items SET done = CASE WHEN session_id IN ({}) THEN 1 ELSE 2 END
                 WHERE replay_id = $2 AND done = 0 AND session_id IN ({})",
                d.json_strings("$1"),
                d.json_strings("$3")
            )))
            .bind(&replayed_json)
            .bind(id)
            .bind(&chunk_json)
            .execute(&mut *tx)
            .await?;
            let replayed_n = i64::try_from(replayed.len()).unwrap_or(i64::MAX);
            let skipped_n = i64::try_from(chunk.len() - replayed.len()).unwrap_or(i64::MAX);
            let finished: bool = sqlx::query_scalar(
                "UPDATE replays SET replayed = replayed + $1, skipped = skipped + $2,
                 finished_at = CASE WHEN EXISTS (SELECT 1 FROM replay_items WHERE replay_id = $4 AND done = 0)
                                    THEN NULL ELSE $3 END
             WHERE id = $4
             RETURNING finished_at IS NOT NULL",
            )
            .bind(replayed_n)
            .bind(skipped_n)
            .bind(now)
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            if replayed_n > 0 {
                tx.bump_changes().await?;
            }
            tx.commit().await?;
            if !replayed.is_empty() {
                self.changed(|| replayed);
            }
            Ok(ReplayProgress { replayed: replayed_n, skipped: skipped_n, finished })
        })
    }

    /// A replay, from its dry run on; None when there is no such id.
    pub async fn replay_job(&self, id: i64, now: Millis) -> Result<Option<ReplayJob>, StoreError> {
        on_db!(self, pool, d => {
            let Some(row) = sqlx::query(
                "SELECT id, selection, count, replayed, skipped, created_at, created_by, expires_at,
                    confirmed_at, confirmed_by, reason, finished_at
             FROM replays WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
            else {
                return Ok(None);
            };
            let skipped_session_ids: Vec<String> = sqlx::query_scalar(
                "SELECT session_id FROM replay_items WHERE replay_id = $1 AND done = 2 ORDER BY session_id LIMIT $2",
            )
            .bind(id)
            .bind(SKIPPED_SHOWN)
            .fetch_all(pool)
            .await?;
            let selection: String = row.get("selection");
            let selection = serde_json::from_str(&selection)
                .map_err(|e| StoreError::Corrupt(format!("replay {id}'s selection is not JSON: {e}")))?;
            let (count, replayed, skipped): (i64, i64, i64) =
                (row.get("count"), row.get("replayed"), row.get("skipped"));
            let expires_at: Millis = row.get("expires_at");
            let confirmed_at: Option<Millis> = row.get("confirmed_at");
            let finished_at: Option<Millis> = row.get("finished_at");
            let status = match (confirmed_at, finished_at) {
                (_, Some(_)) => ReplayStatus::Finished,
                (Some(_), None) => ReplayStatus::Running,
                (None, None) if expires_at > now => ReplayStatus::AwaitingConfirmation,
                (None, None) => ReplayStatus::Expired,
            };
            Ok(Some(ReplayJob {
                id,
                status,
                selection,
                count,
                replayed,
                skipped,
                to_do: if status == ReplayStatus::Expired { 0 } else { count - replayed - skipped },
                created_at: row.get("created_at"),
                created_by: row.get("created_by"),
                expires_at,
                confirmed_at,
                confirmed_by: row.get("confirmed_by"),
                reason: row.get("reason"),
                finished_at,
                skipped_session_ids,
            }))
        })
    }

    /// Takes on, as this store's instance, the confirmed replays with
    /// requests still to do that no live instance works (their worker
    /// stopped, crashed or was declared dead), oldest first: to be worked
    /// through with [`Store::replay_chunk`]. Each is adopted by one instance;
    /// a read first, so that finding none writes nothing.
    pub async fn adopt_replays(&self, now: Millis) -> Result<Vec<i64>, StoreError> {
        let orphaned = format!(
            "confirmed_at IS NOT NULL AND finished_at IS NULL
             AND (worker IS NULL OR NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = replays.worker AND {}))",
            crate::instances::alive("i")
        );
        on_db!(self, pool, d => {
            let found: Option<i64> =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT id FROM replays WHERE {orphaned} LIMIT 1")))
                    .bind(now)
                    .fetch_optional(pool)
                    .await?;
            if found.is_none() {
                return Ok(Vec::new());
            }
            let mut adopted: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "UPDATE replays SET worker = $2 WHERE {orphaned} RETURNING id"
            )))
            .bind(now)
            .bind(self.instance.as_deref())
            .fetch_all(pool)
            .await?;
            adopted.sort_unstable();
            Ok(adopted)
        })
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::queue::Outcome;
    use crate::testing::on_both;
    use crate::tests::request;

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("queue.sqlite")).await.unwrap();
        (store, dir)
    }

    /// Receives `session_id` at `at` and fails it at `at + 10` at `step` with `reason`.
    async fn failed(store: &Store, session_id: &str, at: Millis, step: &str, reason: &str) {
        let order_no = format!("O-{session_id}");
        store.insert_requests(&[request(session_id, &order_no, at)]).await.unwrap();
        let claims = store.claim_pulls(at + 10, 1_000, 100).await.unwrap();
        let claim = claims.iter().find(|c| c.session_id == session_id).unwrap();
        assert!(store.fail(claim, step, &Outcome::new("test", reason), at + 10).await.unwrap());
    }

    async fn no_data(store: &Store, session_id: &str, at: Millis) {
        failed(store, session_id, at, "payment data", "no payment data for this order after 15 s").await;
    }

    async fn state_and_replays(store: &Store, session_id: &str) -> (State, usize) {
        let detail = store.request_detail(session_id, 0).await.unwrap().unwrap();
        (detail.summary.state, detail.attempts.iter().filter(|a| a.step == "replay").count())
    }

    /// Works a job through in chunks of `limit`; returns (replayed, skipped, chunks).
    async fn work(store: &Store, id: i64, limit: i64, now: Millis) -> (i64, i64, usize) {
        let (mut replayed, mut skipped, mut chunks) = (0, 0, 0);
        loop {
            let progress = store.replay_chunk(id, limit, now).await.unwrap();
            replayed += progress.replayed;
            skipped += progress.skipped;
            chunks += 1;
            if progress.finished {
                return (replayed, skipped, chunks);
            }
        }
    }

    fn all_failed() -> ReplaySelection {
        ReplaySelection::Filter(ReplayFilter::default())
    }

    #[test]
    fn kinds_leave_out_what_is_particular_to_a_request() {
        let kind = |reason: &str| failure_kind(reason, "S-77", "SO-2024-0042");
        assert_eq!(
            kind("no payment data for this order after 15 s"),
            "no payment data for this order after # s"
        );
        assert_eq!(
            kind(
                r#"gave up after 86400 s; last answer: HTTP 200: {"code":"20001","message":"sessionID S-77 bad"}"#
            ),
            "customs answered 20001"
        );
        assert_eq!(
            kind(r#"gave up after 60 s; last answer: HTTP 200: {"code":20000}"#),
            "customs answered 20000"
        );
        assert_eq!(kind("gave up after 60 s; last answer: HTTP 503: <html>busy</html>"), "HTTP 503");
        assert_eq!(
            kind("gave up after 60 s; last answer: HTTP 200: not json"),
            "HTTP 200, an unreadable answer"
        );
        assert_eq!(
            kind(
                "gave up after 60 s; last answer: no answer from customs: connection refused (os error 111)"
            ),
            "no answer from customs"
        );
        assert_eq!(
            kind("the platform's payment data for order SO-2024-0042 does not list that order"),
            "the platform's payment data for order {orderNo} does not list that order"
        );
        assert_eq!(
            kind("the platform's payment data is invalid: /payExchangeInfoHead/payCode: missing"),
            "the platform's payment data is invalid"
        );
        assert_eq!(
            kind("the control answered a failure: Err:Base50000 参数错误"),
            "the control answered a failure"
        );
        assert_eq!(kind(&"x".repeat(300)).chars().count(), 121);
        assert_eq!(kind(""), "");
        // The ids are fixed forever: they are in operators' scripts and tickets.
        assert_eq!(
            failure_group_id("upload", "customs answered 20001"),
            failure_group_id("upload", "customs answered 20001")
        );
        assert_ne!(
            failure_group_id("upload", "customs answered 20001"),
            failure_group_id("upload", "customs answered 20002")
        );
        assert_ne!(failure_group_id("ab", "c"), failure_group_id("a", "bc"));
        assert_eq!(failure_group_id("", ""), "af63bd4c8601b7df");
    }

    on_both! {
    async fn failures_are_grouped_by_stage_and_kind_with_counts_and_times(f) {
        let store = f.store.clone();
        let customs = |sid: &str, code: &str| {
            format!(
                r#"gave up after 86400 s; last answer: HTTP 200: {{"code":"{code}","message":"bad {sid}"}}"#
            )
        };
        failed(&store, "U-1", 1_000, "upload", &customs("U-1", "20001")).await;
        failed(&store, "U-2", 3_000, "upload", &customs("U-2", "20001")).await;
        failed(&store, "U-3", 2_000, "upload", &customs("U-3", "20002")).await;
        no_data(&store, "P-1", 500).await;
        no_data(&store, "P-2", 4_000).await;
        no_data(&store, "P-3", 5_000).await;
        // Neither waiting nor delivered requests are failures.
        store.insert_requests(&[request("W-1", "O-W-1", 100)]).await.unwrap();

        let groups = store.failure_groups().await.unwrap();
        let seen: Vec<(&str, &str, i64, Millis, Millis)> =
            groups.iter().map(|g| (g.stage.as_str(), g.kind.as_str(), g.count, g.oldest, g.newest)).collect();
        assert_eq!(
            seen,
            [
                ("payment data", "no payment data for this order after # s", 3, 500, 5_000),
                ("upload", "customs answered 20001", 2, 1_000, 3_000),
                ("upload", "customs answered 20002", 1, 2_000, 2_000),
            ]
        );
        let uploads = &groups[1];
        assert_eq!(uploads.id, failure_group_id("upload", "customs answered 20001"));
        assert_eq!((uploads.first_failed_at, uploads.last_failed_at), (1_010, 3_010));
        assert_eq!(uploads.example.session_id, "U-2");
        assert!(uploads.example.reason.contains("bad U-2"), "{:?}", uploads.example);
        assert_eq!(store.failure_groups().await.unwrap(), groups, "the same on every call");

        // A group's members are what a group replay takes.
        let dry = store
            .capture_replay(&ReplaySelection::Group(uploads.id.clone()), "alice", "t-1", 10, 6_000)
            .await
            .unwrap();
        assert_eq!(dry.count, 2);
        let job = store.confirm_replay("t-1", "alice", "customs fixed 20001", 6_001).await.unwrap();
        assert_eq!(work(&store, job.id, 500, 6_002).await, (2, 0, 1));
        assert_eq!(state_and_replays(&store, "U-1").await, (State::Waiting, 1));
        assert_eq!(state_and_replays(&store, "U-3").await, (State::Failed, 0));
        let unknown = ReplaySelection::Group("0000000000000000".into());
        assert_eq!(store.capture_replay(&unknown, "alice", "t-2", 10, 6_003).await.unwrap().count, 0);
    }
    }

    on_both! {
    /// Requests failed before the group columns existed get their group when the store is
    /// next opened; requests given up waiting carry theirs from the start.
    async fn requests_failed_before_the_group_columns_are_grouped_when_the_store_opens(f) {
        let store = f.store.clone();
        failed(&store, "U-1", 1_000, "upload", "customs said no to U-1 (O-U-1)").await;
        failed(&store, "U-2", 1_500, "upload", "customs said no to U-2 (O-U-2)").await;
        store
            .insert_requests(&[request("W-1", "O-W-1", 2_000), request("W-2", "O-W-2", 2_500)])
            .await
            .unwrap();
        let reason = Outcome::new("payment data", "no payment data after 15 s");
        assert_eq!(store.give_up_waiting(2_500, &reason, 3_000).await.unwrap().len(), 2);
        // As an older version left them: no group, and one without any failed attempt.
        store.insert_requests(&[request("X-1", "O-X-1", 4_000)]).await.unwrap();
        on_db!(store, pool, _d => {
            sqlx::query(
                "UPDATE requests SET state = 'failed', last_error = 'lost in 2019', updated_at = 4010
                 WHERE session_id = 'X-1'",
            )
            .execute(pool)
            .await
            .unwrap();
            sqlx::query(
                "UPDATE requests SET failed_stage = NULL, failed_kind = NULL WHERE session_id IN ('U-1', 'X-1')",
            )
            .execute(pool)
            .await
            .unwrap();
        });
        store.close().await;

        let store = f.reopen().await;
        let groups = store.failure_groups().await.unwrap();
        let seen: Vec<(&str, &str, i64)> =
            groups.iter().map(|g| (g.stage.as_str(), g.kind.as_str(), g.count)).collect();
        assert_eq!(
            seen,
            [
                ("payment data", "no payment data after # s", 2),
                ("upload", "customs said no to {sessionID} ({orderNo})", 2),
                ("unknown", "lost in #", 1),
            ]
        );
        assert_eq!(groups[1].example.session_id, "U-2");
        let unset: i64 = on_db!(store, pool, _d => {
            sqlx::query_scalar("SELECT COUNT(*) FROM requests WHERE state = 'failed' AND failed_kind IS NULL")
                .fetch_one(pool)
                .await
                .unwrap()
        });
        assert_eq!(unset, 0);
    }
    }

    on_both! {
    /// The groups are read again exactly when the failed requests may have changed: one
    /// failed, or a replay took some, here or in another process.
    async fn failure_groups_follow_every_failure_and_every_replay(f) {
        let store = f.store.clone();
        let count = async |store: &Store| -> Vec<(String, i64)> {
            store.failure_groups().await.unwrap().into_iter().map(|g| (g.kind, g.count)).collect()
        };
        failed(&store, "A", 1_000, "pull", "gone").await;
        assert_eq!(count(&store).await, [("gone".to_owned(), 1)]);
        failed(&store, "B", 1_100, "pull", "gone").await;
        assert_eq!(count(&store).await, [("gone".to_owned(), 2)], "a new failure");
        // As many failed as before, but not the same ones.
        store.replay("A", 2_000).await.unwrap().unwrap().unwrap();
        failed(&store, "C", 2_100, "pull", "lost").await;
        let both = [("gone".to_owned(), 1), ("lost".to_owned(), 1)];
        assert_eq!(count(&store).await, both, "a replay here");
        // The command line works on the same file through its own store.
        let other = f.reopen().await;
        other.replay("B", 2_200).await.unwrap().unwrap().unwrap();
        failed(&other, "D", 2_300, "pull", "lost").await;
        assert_eq!(count(&store).await, [("lost".to_owned(), 2)], "a replay by another process");
        other.close().await;
    }
    }

    on_both! {
    async fn a_confirmed_replay_takes_only_what_its_dry_run_captured_and_skips_what_changed(f) {
        let store = f.store.clone();
        for (i, sid) in ["A", "B", "C", "D"].iter().enumerate() {
            no_data(&store, sid, 1_000 + i64::try_from(i).unwrap()).await;
        }
        let dry = store.capture_replay(&all_failed(), "alice", "tok", 10, 2_000).await.unwrap();
        assert_eq!((dry.count, dry.expires_at), (4, 2_000 + REPLAY_TOKEN_TTL));
        let shown = store.replay_job(dry.id, 2_000).await.unwrap().unwrap();
        assert_eq!(
            (shown.status, shown.to_do, shown.created_by.as_str()),
            (ReplayStatus::AwaitingConfirmation, 4, "alice")
        );

        // After the dry run: another request fails, A is replayed by hand and
        // fails again (same state, another generation), B is replayed by hand.
        no_data(&store, "E", 2_100).await;
        for sid in ["A", "B"] {
            assert_eq!(store.replay(sid, 2_200).await.unwrap(), Some(Ok(State::Failed)));
        }
        let cutoff = 2_200;
        assert_eq!(
            store
                .give_up_waiting(cutoff, &Outcome::new("no_payment_data", "no payment data again"), 2_300)
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(store.replay("B", 2_400).await.unwrap(), Some(Ok(State::Failed)));

        let changes = store.changes().await.unwrap();
        let job = store.confirm_replay("tok", "alice", "the platform resent the data", 3_000).await.unwrap();
        assert_eq!((job.status, job.confirmed_by.as_deref()), (ReplayStatus::Running, Some("alice")));
        assert_eq!(work(&store, job.id, 1, 3_001).await, (2, 2, 4));
        assert!(store.changes().await.unwrap() > changes, "a running service notices");
        let done = store.replay_job(job.id, 3_002).await.unwrap().unwrap();
        assert_eq!((done.status, done.replayed, done.skipped, done.to_do), (ReplayStatus::Finished, 2, 2, 0));
        assert_eq!(done.skipped_session_ids, ["A", "B"]);
        assert_eq!(done.reason.as_deref(), Some("the platform resent the data"));
        assert_eq!(
            done.selection,
            serde_json::json!({"filter": {"since": null, "until": null, "order_no": null}})
        );

        assert_eq!(state_and_replays(&store, "A").await, (State::Failed, 1), "only the hand replay");
        assert_eq!(state_and_replays(&store, "B").await, (State::Waiting, 2), "two hand replays");
        assert_eq!(state_and_replays(&store, "C").await, (State::Waiting, 1));
        assert_eq!(state_and_replays(&store, "D").await, (State::Waiting, 1));
        assert_eq!(state_and_replays(&store, "E").await, (State::Failed, 0), "failed after the dry run");
        // As Store::replay: the give-up clock restarts, the queue puts it after live work.
        let claims = store.claim_pulls(3_010, 1_000, 10).await.unwrap();
        let c = claims.iter().find(|c| c.session_id == "C").unwrap();
        assert_eq!((c.waiting_since, c.attempts), (3_001, 1));

        // Once only, and audited once.
        assert!(matches!(
            store.confirm_replay("tok", "bob", "again", 3_100).await,
            Err(ReplayError::TokenUsed { id }) if id == job.id
        ));
        let audit = store.audit_log(10, None).await.unwrap();
        assert_eq!(audit.len(), 1);
        let entry = &audit[0];
        assert_eq!(
            (
                entry.actor.as_str(),
                entry.action.as_str(),
                entry.target.as_deref(),
                entry.reason.as_deref(),
                entry.count
            ),
            (
                "alice",
                "replay",
                Some(format!("replays/{}", job.id).as_str()),
                Some("the platform resent the data"),
                4
            )
        );
        assert!(store.adopt_replays(9_999_999).await.unwrap().is_empty());
    }
    }

    on_both! {
    async fn tokens_expire_and_unknown_ones_are_refused(f) {
        let store = f.store.clone();
        no_data(&store, "A", 1_000).await;
        let dry = store.capture_replay(&all_failed(), "alice", "late", 10, 2_000).await.unwrap();
        assert!(matches!(
            store.confirm_replay("late", "alice", "r", 2_000 + REPLAY_TOKEN_TTL).await,
            Err(ReplayError::TokenExpired { id }) if id == dry.id
        ));
        let expired = store.replay_job(dry.id, 2_000 + REPLAY_TOKEN_TTL).await.unwrap().unwrap();
        assert_eq!((expired.status, expired.to_do), (ReplayStatus::Expired, 0));
        // A later dry run drops the expired capture; its token stays known as expired.
        store.capture_replay(&all_failed(), "alice", "in-time", 10, 2_000 + REPLAY_TOKEN_TTL).await.unwrap();
        assert!(matches!(
            store.confirm_replay("late", "alice", "r", 2_000 + REPLAY_TOKEN_TTL + 1).await,
            Err(ReplayError::TokenExpired { .. })
        ));
        assert!(matches!(
            store.confirm_replay("never-issued", "alice", "r", 2_000).await,
            Err(ReplayError::UnknownToken)
        ));
        let job =
            store.confirm_replay("in-time", "alice", "r", 2_000 + 2 * REPLAY_TOKEN_TTL - 1).await.unwrap();
        assert_eq!(work(&store, job.id, 500, 2_000 + 2 * REPLAY_TOKEN_TTL).await, (1, 0, 1));
        assert_eq!(store.audit_log(10, None).await.unwrap().len(), 1, "refusals are not actions");
    }
    }

    on_both! {
    async fn a_dry_run_over_the_cap_is_refused_and_captures_nothing(f) {
        let store = f.store.clone();
        for sid in ["A", "B", "C"] {
            no_data(&store, sid, 1_000).await;
        }
        store.insert_requests(&[request("W", "O-W", 1_000)]).await.unwrap();
        let over = |r: Result<DryRun, ReplayError>| match r {
            Err(ReplayError::OverCap { count, cap }) => (count, cap),
            other => panic!("{other:?}"),
        };
        assert_eq!(over(store.capture_replay(&all_failed(), "a", "t1", 2, 2_000).await), (3, 2));
        let ids = ReplaySelection::SessionIds(vec!["A".into(), "B".into(), "W".into()]);
        assert_eq!(over(store.capture_replay(&ids, "a", "t2", 2, 2_000).await), (3, 2));
        let group = failure_group_id("payment data", "no payment data for this order after # s");
        assert_eq!(
            over(store.capture_replay(&ReplaySelection::Group(group.clone()), "a", "t3", 2, 2_000).await),
            (3, 2)
        );
        assert!(matches!(store.confirm_replay("t1", "a", "r", 2_001).await, Err(ReplayError::UnknownToken)));
        assert!(store.replay_job(1, 2_001).await.unwrap().is_none());

        // At the cap it is taken; the sessionIDs not failed are named.
        assert_eq!(
            store.capture_replay(&ReplaySelection::Group(group), "a", "t4", 3, 2_000).await.unwrap().count,
            3
        );
        let ids = ReplaySelection::SessionIds(vec!["A".into(), "A".into(), "W".into(), "NOPE".into()]);
        let dry = store.capture_replay(&ids, "a", "t5", 3, 2_000).await.unwrap();
        assert_eq!(dry.count, 1);
        assert_eq!(
            dry.not_taken,
            [
                NotTaken { session_id: "W".into(), state: Some(State::Waiting) },
                NotTaken { session_id: "NOPE".into(), state: None }
            ]
        );
        // Filters: customs' call in [since, until), one order.
        let filter = |since, until, order_no: Option<&str>| {
            ReplaySelection::Filter(ReplayFilter { since, until, order_no: order_no.map(str::to_owned) })
        };
        let count = async |selection: ReplaySelection, token: &str| {
            store.capture_replay(&selection, "a", token, 10, 2_000).await.unwrap().count
        };
        assert_eq!(count(filter(Some(1_000), Some(1_001), None), "f1").await, 3);
        assert_eq!(count(filter(Some(1_001), None, None), "f2").await, 0);
        assert_eq!(count(filter(None, Some(1_000), None), "f3").await, 0);
        assert_eq!(count(filter(None, None, Some("O-B")), "f4").await, 1);
        assert_eq!(count(filter(None, None, Some("O-W")), "f5").await, 0);
    }
    }

    on_both! {
    async fn a_replay_cut_short_resumes_where_it_was_after_a_restart(f) {
        let store = f.store.clone();
        for sid in ["A", "B", "C"] {
            no_data(&store, sid, 1_000).await;
        }
        store.capture_replay(&all_failed(), "alice", "tok", 10, 2_000).await.unwrap();
        let job = store.confirm_replay("tok", "alice", "r", 2_001).await.unwrap();
        let first = store.replay_chunk(job.id, 1, 2_002).await.unwrap();
        assert_eq!(first, ReplayProgress { replayed: 1, skipped: 0, finished: false });
        store.close().await;

        let store = f.reopen().await;
        assert_eq!(store.adopt_replays(3_000).await.unwrap(), [job.id]);
        let shown = store.replay_job(job.id, 3_000).await.unwrap().unwrap();
        assert_eq!((shown.status, shown.replayed, shown.to_do), (ReplayStatus::Running, 1, 2));
        // Two workers at once (a resumed service and a command) replay nothing twice.
        let (a, b) = tokio::join!(work(&store, job.id, 1, 3_001), work(&store, job.id, 1, 3_001));
        assert_eq!(a.0 + b.0, 2);
        for sid in ["A", "B", "C"] {
            assert_eq!(state_and_replays(&store, sid).await, (State::Waiting, 1), "{sid}");
        }
        assert!(store.adopt_replays(3_002).await.unwrap().is_empty());
        let done = store.replay_job(job.id, 3_002).await.unwrap().unwrap();
        assert_eq!((done.status, done.replayed, done.skipped), (ReplayStatus::Finished, 3, 0));
        // An unconfirmed dry run is no job.
        let dry = store.capture_replay(&all_failed(), "alice", "tok2", 10, 4_000).await.unwrap();
        assert_eq!(dry.count, 0);
        assert!(store.replay_chunk(dry.id, 10, 4_001).await.unwrap().finished);
    }
    }

    on_both! {
    async fn a_replay_goes_on_with_one_live_instance_when_its_own_stops_or_dies(f) {
        use crate::INSTANCE_TTL;
        use crate::tests::instance;
        let a = f.store.as_instance("A");
        let (b, c) = (f.reopen().await.as_instance("B"), f.reopen().await.as_instance("C"));
        for (store, id) in [(&a, "A"), (&b, "B"), (&c, "C")] {
            store.register_instance(&instance(id), 0).await.unwrap();
        }
        for sid in ["S1", "S2"] {
            no_data(&a, sid, 1_000).await;
        }
        a.capture_replay(&all_failed(), "alice", "tok", 10, 2_000).await.unwrap();
        let job = a.confirm_replay("tok", "alice", "r", 2_001).await.unwrap();
        assert_eq!(a.replay_chunk(job.id, 1, 2_002).await.unwrap().replayed, 1);
        // A works it: nobody takes it from a live instance, nor A from itself.
        for store in [&a, &b, &c] {
            assert!(store.adopt_replays(2_003).await.unwrap().is_empty());
        }
        // A dies: the first to look takes it, once.
        let now = INSTANCE_TTL + 3_000;
        for (store, id) in [(&b, "B"), (&c, "C")] {
            assert!(store.instance_heartbeat(id, "{}", now).await.unwrap());
        }
        b.retire_dead_instances(now).await.unwrap();
        let (by_b, by_c) = tokio::join!(b.adopt_replays(now), c.adopt_replays(now));
        let (by_b, by_c) = (by_b.unwrap(), by_c.unwrap());
        assert_eq!(by_b.len() + by_c.len(), 1, "adopted once: {by_b:?} {by_c:?}");
        let (adopter, other) = if by_b.is_empty() { ((&c, "C"), (&b, "B")) } else { ((&b, "B"), (&c, "C")) };
        assert!(other.0.adopt_replays(now + 1).await.unwrap().is_empty());
        // Its adopter stops cleanly before finishing: the other takes it at once.
        adopter.0.instance_stopped(adopter.1, now + 2).await.unwrap();
        assert_eq!(other.0.adopt_replays(now + 2).await.unwrap(), [job.id], "{} after {}", other.1, adopter.1);
        assert_eq!(work(other.0, job.id, 10, now + 3).await.0, 1, "the one A had not done");
        assert!(other.0.adopt_replays(now + 4).await.unwrap().is_empty(), "a finished replay is no one's");
        assert_eq!(state_and_replays(other.0, "S1").await, (State::Waiting, 1));
        assert_eq!(state_and_replays(other.0, "S2").await, (State::Waiting, 1));
    }
    }

    #[tokio::test]
    async fn failures_are_read_through_the_index_of_failed_requests() {
        let (store, _dir) = store().await;
        let mut conn = store.sqlite().acquire().await.unwrap();
        for (sql, index) in [
            // The groups: one pass over the partial index of failed requests' groups.
            (
                "SELECT failed_stage, failed_kind, COUNT(*), MIN(received_at), MAX(received_at),
                        MIN(updated_at), MAX(updated_at)
                 FROM requests INDEXED BY requests_failure_groups
         WHERE state = 'failed' AND failed_stage IS NOT NULL AND failed_kind IS NOT NULL
                 GROUP BY failed_stage, failed_kind",
                "USING COVERING INDEX requests_failure_groups",
            ),
            // A group's example and its members.
            (
                "SELECT session_id, last_error FROM requests INDEXED BY requests_failure_groups
                 WHERE state = 'failed' AND failed_stage = 'a' AND failed_kind = 'b'
                 ORDER BY received_at DESC, session_id DESC LIMIT 1",
                "requests_failure_groups (failed_stage=? AND failed_kind=?)",
            ),
            // Requests failed before the group columns, found once at open.
            (
                "SELECT r.session_id, (SELECT a.step FROM attempts a WHERE a.session_id = r.session_id
                     AND a.outcome = 'failed' ORDER BY a.id DESC LIMIT 1)
                 FROM requests r INDEXED BY requests_failure_groups
                 WHERE r.state = 'failed' AND r.failed_stage IS NULL LIMIT 10",
                "requests_failure_groups (failed_stage=?)",
            ),
            (
                "SELECT COUNT(*) FROM requests WHERE state = 'failed' AND received_at >= 1 AND received_at < 2
                 AND (NULL IS NULL OR order_no = NULL)",
                // An index on state, searched for 'failed'.
                "(state=?",
            ),
        ] {
            let plan = crate::tests::query_plan(&mut conn, sql).await;
            // Only failed requests are read, through an index of failed requests only.
            let requests: Vec<&String> =
                plan.iter().filter(|step| step.contains(" r ") || step.contains(" requests ")).collect();
            assert!(!requests.is_empty() && requests.iter().all(|step| step.contains(index)), "{plan:#?}");
        }
    }
}
