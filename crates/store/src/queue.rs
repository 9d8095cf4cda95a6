//! The queue's states and every transition between them, in one place.
//!
//! ```text
//! waiting ──(payment data)──▶ ready ──(signed)──▶ signed ──(customs stored it)──▶ delivered
//!    │                          │                   │
//!    └──────────────────────────┴───────────────────┴──(gave up, with reason)──▶ failed
//! ```
//!
//! Work waiting in a state is claimed with a lease by one statement; a
//! claim bumps `generation`, and every later write is guarded by it.

use customs179_core::{Guid, OpenReq, PreSign};
use sqlx::Row;

use crate::backend::{Dialect, for_each_connection, on_db};
use crate::controls::ControlWrites as _;
use crate::replays::failure_kind;
use crate::{Millis, Store, StoreError};

/// Where a customs request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Received; its payment data has not come yet.
    Waiting,
    /// Prepared (guid, serviceTime and pre-sign string fixed): to be signed.
    Ready,
    /// Signed and verified: to be uploaded.
    Signed,
    /// Customs stored it.
    Delivered,
    /// Given up, with the reason in `last_error`.
    Failed,
}

impl State {
    pub const ALL: [State; 5] =
        [State::Waiting, State::Ready, State::Signed, State::Delivered, State::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Ready => "ready",
            State::Signed => "signed",
            State::Delivered => "delivered",
            State::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// A customs request as intake received it.
#[derive(Debug, Clone)]
pub struct NewRequest {
    pub open_req: OpenReq,
    /// The `openReq` JSON exactly as received, for audit.
    pub raw: String,
    pub received_at: Millis,
    pub deadline_at: Millis,
}

/// A request whose payment data is there and that can be prepared.
#[derive(Debug, Clone)]
pub struct Pending {
    pub session_id: String,
    pub generation: i64,
    pub payment_id: i64,
    pub record: customs179_core::PaymentRecord,
}

/// The upload fixed when a request is prepared.
#[derive(Debug, Clone)]
pub struct PreparedUpload {
    pub guid: Guid,
    pub service_time: Millis,
    pub presign: PreSign,
}

/// A request claimed for one step, valid while the generation matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub session_id: String,
    pub order_no: String,
    pub generation: i64,
    /// Attempts at this step so far, this one included.
    pub attempts: i64,
    pub received_at: Millis,
    pub deadline_at: Millis,
    /// When customs called, or when an operator last replayed the request:
    /// where the give-up clocks start.
    pub waiting_since: Millis,
}

/// A request claimed for upload, with the exact body that was signed.
#[derive(Debug, Clone)]
pub struct UploadJob {
    pub claim: Claim,
    pub upload_id: i64,
    pub upload_body: String,
}

/// What came of an upload that customs stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// 10000.
    Stored,
    /// 20006: an earlier attempt got through.
    AlreadyStored,
}

/// What an attempt came to: its text (an error, customs' answer as
/// received), the code it is found by (customs' answer code, or a kind of
/// error of ours; OPERATIONS.md lists them), and how long its step took,
/// where that was timed (a signature, an upload, a pull).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome<'a> {
    pub code: &'a str,
    pub text: &'a str,
    pub took_ms: Option<Millis>,
}

impl<'a> Outcome<'a> {
    pub fn new(code: &'a str, text: &'a str) -> Outcome<'a> {
        Outcome { code, text, took_ms: None }
    }

    pub fn took(self, took_ms: Millis) -> Outcome<'a> {
        Outcome { took_ms: Some(took_ms), ..self }
    }
}

/// What a replay sets (`$1` is now): back to `waiting`, its give-up clocks
/// restarted, so the queue takes it after live work. One replay or many.
pub(crate) const BACK_TO_WAITING: &str =
    "state = 'waiting', generation = generation + 1, lease_until = NULL, attempts = 0,
     waiting_since = $1, next_attempt_at = $1, last_error = NULL, last_code = NULL, delivered_at = NULL,
     updated_at = $1";

/// What releasing the lease of a holder known to be gone sets (`$1` is now):
/// the generation moves on, so that nothing the holder might still write
/// applies, and the claim cut short is no attempt (crashes must not lengthen
/// the backoff of the work they interrupted).
pub(crate) const RELEASED: &str =
    "lease_until = NULL, lease_owner = NULL, generation = generation + 1, updated_at = $1,
     attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END";

/// A request claimed for signing, with the exact text to sign.
#[derive(Debug, Clone)]
pub struct SigningJob {
    pub claim: Claim,
    pub upload_id: i64,
    pub presign: String,
}

/// Requests in one `INSERT` at most (SQLite allows 32,766 parameters, PostgreSQL 65,535; a
/// request binds 9).
const INSERT_CHUNK: usize = 1_000;

/// The writes of a request's steps that other statements share, on a connection of
/// either database (inside a transaction).
pub(crate) trait QueueWrites {
    /// Inserts requests in one statement, so that a batch costs one round trip to the
    /// database, not one per request. Returns, per request, whether it was new.
    async fn insert_chunk(&mut self, d: Dialect, chunk: &[NewRequest]) -> Result<Vec<bool>, StoreError>;

    /// Appends to a request's history.
    async fn record_attempt(&mut self, entry: &Entry<'_>) -> Result<(), StoreError>;
}

/// `($1, …, $6, 'waiting', $7, $8, $9), ($10, …)`: the rows of [`QueueWrites::insert_chunk`].
/// On SQLite the parameters are anonymous (`?`), bound in order: SQLite finds a named one by
/// walking the list of names, at parsing and at each bind, so that a batch of n requests
/// would cost n² steps, and the largest batches (those of a service behind its callers) the
/// most.
fn insert_rows(d: Dialect, requests: usize) -> String {
    let param = |n: usize| match d {
        Dialect::Sqlite => "?".to_owned(),
        Dialect::Postgres => format!("${n}"),
    };
    (0..requests)
        .map(|i| {
            let p: Vec<String> = (1..=9).map(|n| param(i * 9 + n)).collect();
            format!("({}, 'waiting', {})", p[..6].join(", "), p[6..].join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

for_each_connection! { impl QueueWrites {
    async fn insert_chunk(&mut self, d: Dialect, chunk: &[NewRequest]) -> Result<Vec<bool>, StoreError> {
        let rows = insert_rows(d, chunk.len());
        let sql = format!(
            "INSERT INTO requests (session_id, order_no, open_req, customs_time, received_at, deadline_at,
                                   state, waiting_since, next_attempt_at, updated_at)
             VALUES {rows}
             ON CONFLICT (session_id) DO NOTHING
             RETURNING session_id"
        );
        let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
        for request in chunk {
            query = query
                .bind(&request.open_req.session_id)
                .bind(&request.open_req.order_no)
                .bind(&request.raw)
                .bind(i64::try_from(request.open_req.service_time).unwrap_or(i64::MAX))
                .bind(request.received_at)
                .bind(request.deadline_at)
                .bind(request.received_at)
                .bind(request.received_at)
                .bind(request.received_at);
        }
        let mut new: std::collections::HashSet<String> = query.fetch_all(&mut *self).await?.into_iter().collect();
        // A sessionID twice in one chunk is new only the first time.
        Ok(chunk.iter().map(|request| new.remove(&request.open_req.session_id)).collect())
    }

    async fn record_attempt(&mut self, entry: &Entry<'_>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO attempts (session_id, upload_id, step, at, outcome, detail, code, took_ms)
             VALUES ($1, COALESCE($2, (SELECT upload_id FROM requests WHERE session_id = $3)), $4, $5, $6, $7, $8, $9)",
        )
        .bind(entry.session_id)
        .bind(entry.upload_id)
        .bind(entry.session_id)
        .bind(entry.step)
        .bind(entry.at)
        .bind(entry.outcome)
        .bind(entry.detail)
        .bind(entry.code)
        .bind(entry.took_ms)
        .execute(self)
        .await?;
        Ok(())
    }
}}

impl Store {
    /// Records a batch of customs requests in one transaction; a sessionID
    /// already stored is left as it is. Returns, per request, whether it
    /// was new.
    pub async fn insert_requests(&self, batch: &[NewRequest]) -> Result<Vec<bool>, StoreError> {
        on_db!(self, pool, d => {
            let inserted = if batch.is_empty() {
                Vec::new()
            } else if batch.len() <= INSERT_CHUNK {
                // One statement is its own transaction, committed (and synced) by the time it
                // has returned its rows: two round trips to SQLite's thread fewer than BEGIN and
                // COMMIT around it, which every customs call in the batch waits for.
                match &self.intake {
                    Some(intake) => intake.acquire().await?.insert_chunk(d, batch).await?,
                    None => pool.acquire().await?.insert_chunk(d, batch).await?,
                }
            } else {
                let mut tx = pool.begin().await?;
                let mut inserted = Vec::with_capacity(batch.len());
                for chunk in batch.chunks(INSERT_CHUNK) {
                    inserted.extend(tx.insert_chunk(d, chunk).await?);
                }
                tx.commit().await?;
                inserted
            };
            self.changed(|| {
                batch
                    .iter()
                    .zip(&inserted)
                    .filter(|(_, new)| **new)
                    .map(|(r, _)| r.open_req.session_id.clone())
                    .collect()
            });
            Ok(inserted)
        })
    }

    /// Waiting requests whose order now has a payment record: of the given
    /// orders only, or (None) of every order, which costs a scan of all
    /// waiting requests.
    pub async fn pending_preparation(
        &self,
        orders: Option<&[String]>,
        limit: i64,
    ) -> Result<Vec<Pending>, StoreError> {
        on_db!(self, pool, d => {
            const COLUMNS: &str = "SELECT r.session_id, r.generation, p.id, p.record
             FROM requests r
             JOIN payment_orders po ON po.order_no = r.order_no
             JOIN payments p ON p.id = po.payment_id
             WHERE r.state = 'waiting'";
            let rows = match orders {
                Some(orders) => {
                    let orders = serde_json::to_string(orders).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    // From the orders given (requests_by_order), not every waiting request in
                    // deadline order, which SQLite otherwise walks: intake asks this after each
                    // commit, while thousands wait.
                    let sql = format!(
                        "{} AND r.order_no IN ({}) ORDER BY r.deadline_at LIMIT $2",
                        COLUMNS.replace("WHERE r.state", &format!("WHERE {}", d.unindexed("r.state"))),
                        d.json_strings("$1")
                    );
                    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(orders).bind(limit).fetch_all(pool).await?
                }
                None => {
                    let sql = format!("{COLUMNS} ORDER BY r.deadline_at LIMIT $1");
                    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(limit).fetch_all(pool).await?
                }
            };
            rows.into_iter()
                .map(|row| {
                    let record: String = row.get(3);
                    Ok(Pending {
                        session_id: row.get(0),
                        generation: row.get(1),
                        payment_id: row.get(2),
                        record: crate::payments::read_record(&record)?,
                    })
                })
                .collect()
        })
    }

    /// waiting → ready: fixes the upload of a request. False when the request
    /// moved on meanwhile (another worker prepared it, or it failed).
    pub async fn prepare(
        &self,
        pending: &Pending,
        upload: &PreparedUpload,
        now: Millis,
    ) -> Result<bool, StoreError> {
        on_db!(self, pool, d => {
            let mut tx = pool.begin().await?;
            let upload_id: i64 = sqlx::query_scalar(
                "INSERT INTO uploads (session_id, payment_id, guid, service_time, presign, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(&pending.session_id)
            .bind(pending.payment_id)
            .bind(upload.guid.as_str())
            .bind(upload.service_time)
            .bind(upload.presign.as_str())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let change = sqlx::query(
                "UPDATE requests
             SET state = 'ready', upload_id = $1, generation = generation + 1, lease_until = NULL,
                 attempts = 0, next_attempt_at = $2, last_error = NULL, last_code = NULL, updated_at = $3
             WHERE session_id = $4 AND state = 'waiting' AND generation = $5",
            )
            .bind(upload_id)
            .bind(now)
            .bind(now)
            .bind(&pending.session_id)
            .bind(pending.generation);
            let entry = Entry::new(&pending.session_id, "prepare", "prepared", now).upload(upload_id);
            guarded!(self, &pending.session_id, tx, change, Some(entry))
        })
    }

    /// Claims up to `limit` waiting requests whose next pull is due, earliest
    /// deadline first, each for `lease` ms.
    pub async fn claim_pulls(
        &self,
        now: Millis,
        lease: Millis,
        limit: i64,
    ) -> Result<Vec<Claim>, StoreError> {
        self.claim(State::Waiting, now, lease, limit).await
    }

    /// Claims up to `limit` prepared requests for signing, earliest deadline first.
    pub async fn claim_signing(
        &self,
        now: Millis,
        lease: Millis,
        limit: i64,
    ) -> Result<Vec<SigningJob>, StoreError> {
        on_db!(self, pool, d => {
            let claims = self.claim(State::Ready, now, lease, limit).await?;
            let mut jobs = Vec::with_capacity(claims.len());
            for claim in claims {
                let (upload_id, presign): (i64, String) = sqlx::query_as(
                    "SELECT u.id, u.presign FROM requests r JOIN uploads u ON u.id = r.upload_id WHERE r.session_id = $1",
                )
                .bind(&claim.session_id)
                .fetch_one(pool)
                .await?;
                jobs.push(SigningJob { claim, upload_id, presign });
            }
            Ok(jobs)
        })
    }

    /// ready → signed: keeps which card signed, its signature and the upload body
    /// assembled from the signed bytes; `took_ms` is how long the card took.
    /// False when the claim was lost.
    // Each argument is one fact of the signature as made; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub async fn signed(
        &self,
        job: &SigningJob,
        card: &str,
        cert_no: &str,
        sign_value: &str,
        upload_body: &str,
        took_ms: Millis,
        now: Millis,
    ) -> Result<bool, StoreError> {
        on_db!(self, pool, d => {
            let mut tx = pool.begin().await?;
            // Kept only if the guarded change below applies.
            sqlx::query(
                "UPDATE uploads SET card = $1, cert_no = $2, sign_value = $3, upload_body = $4, signed_at = $5
                 WHERE id = $6",
            )
            .bind(card)
            .bind(cert_no)
            .bind(sign_value)
            .bind(upload_body)
            .bind(now)
            .bind(job.upload_id)
            .execute(&mut *tx)
            .await?;
            let change = sqlx::query(
                "UPDATE requests
             SET state = 'signed', generation = generation + 1, lease_until = NULL, attempts = 0,
                 next_attempt_at = $1, last_error = NULL, last_code = NULL, updated_at = $2
             WHERE session_id = $3 AND generation = $4 AND state = 'ready' AND upload_id = $5",
            )
            .bind(now)
            .bind(now)
            .bind(&job.claim.session_id)
            .bind(job.claim.generation)
            .bind(job.upload_id);
            let entry =
                Entry::new(&job.claim.session_id, "sign", "signed", now).upload(job.upload_id).took(took_ms);
            guarded!(self, &job.claim.session_id, tx, change, Some(entry))
        })
    }

    /// Claims up to `limit` signed requests for upload, earliest deadline first.
    pub async fn claim_uploads(
        &self,
        now: Millis,
        lease: Millis,
        limit: i64,
    ) -> Result<Vec<UploadJob>, StoreError> {
        on_db!(self, pool, d => {
            let claims = self.claim(State::Signed, now, lease, limit).await?;
            let mut jobs = Vec::with_capacity(claims.len());
            for claim in claims {
                let (upload_id, body): (i64, Option<String>) = sqlx::query_as(
                    "SELECT u.id, u.upload_body FROM requests r JOIN uploads u ON u.id = r.upload_id
                     WHERE r.session_id = $1",
                )
                .bind(&claim.session_id)
                .fetch_one(pool)
                .await?;
                let upload_body = body.ok_or_else(|| {
                    StoreError::Corrupt(format!("signed request {} has no upload body", claim.session_id))
                })?;
                jobs.push(UploadJob { claim, upload_id, upload_body });
            }
            Ok(jobs)
        })
    }

    /// signed → delivered, recording customs' answer (its code and text as
    /// received). False when the claim was lost.
    pub async fn delivered(
        &self,
        job: &UploadJob,
        delivery: Delivery,
        answer: &Outcome<'_>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        on_db!(self, pool, d => {
            let tx = pool.begin().await?;
            let change = sqlx::query(
                "UPDATE requests
             SET state = 'delivered', generation = generation + 1, lease_until = NULL, delivered_at = $1,
                 last_error = NULL, last_code = NULL, updated_at = $2
             WHERE session_id = $3 AND generation = $4 AND state = 'signed'",
            )
            .bind(now)
            .bind(now)
            .bind(&job.claim.session_id)
            .bind(job.claim.generation);
            let outcome = match delivery {
                Delivery::Stored => "delivered",
                Delivery::AlreadyStored if job.claim.attempts <= 1 => {
                    "already stored on a first attempt (anomaly)"
                }
                Delivery::AlreadyStored => "already stored by an earlier attempt",
            };
            let entry =
                Entry::new(&job.claim.session_id, "upload", outcome, now).upload(job.upload_id).of(answer);
            guarded!(self, &job.claim.session_id, tx, change, Some(entry))
        })
    }

    /// failed or delivered → waiting: the request is prepared again from its
    /// payment record (a new guid and serviceTime), signed and uploaded; all
    /// earlier uploads and attempts stay. Returns the state it was in, or
    /// None when there is no such request; an error names a state that
    /// cannot be replayed.
    pub async fn replay(
        &self,
        session_id: &str,
        now: Millis,
    ) -> Result<Option<Result<State, State>>, StoreError> {
        on_db!(self, pool, d => {
            // Reads, then writes: take the write lock first, or SQLite refuses the
            // upgrade at once when another writer is busy, ignoring busy_timeout.
            let mut tx = pool.begin_with(d.begin_writing()).await?;
            let current: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT state FROM requests WHERE session_id = $1{}",
                d.for_update()
            )))
            .bind(session_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(current) = current else { return Ok(None) };
            let current = State::parse(&current)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown state {current:?}")))?;
            if !matches!(current, State::Failed | State::Delivered) {
                return Ok(Some(Err(current)));
            }
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE requests SET {BACK_TO_WAITING} WHERE session_id = $2"
            )))
            .bind(now)
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
            let was = format!("was {}", current.as_str());
            tx.record_attempt(&Entry::new(session_id, "replay", "replayed", now).detail(&was)).await?;
            tx.bump_changes().await?;
            tx.commit().await?;
            self.changed(|| vec![session_id.to_owned()]);
            Ok(Some(Ok(current)))
        })
    }

    /// Releases every lease, for a process that knows their holders are all
    /// gone (see [`Store::open_exclusive`]). The generation moves on too, so
    /// that nothing a holder might still write could apply. The claim that
    /// was cut short does not count as an attempt: crashes must not lengthen
    /// the backoff of the work they interrupted.
    pub(crate) async fn release_all_leases(&self, now: Millis) -> Result<u64, StoreError> {
        on_db!(self, pool, d => {
            let released = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE requests SET {RELEASED} WHERE lease_until IS NOT NULL"
            )))
            .bind(now)
            .execute(pool)
            .await?;
            Ok(released.rows_affected())
        })
    }

    /// The one claim statement: due work in `state`, not leased by a live
    /// worker, claimed for this store's instance, in the queue's order: work that can still make its deadline
    /// first (earliest deadline first), then late work, then replays (a
    /// replay restarts `waiting_since`), so that replays never delay live work.
    async fn claim(
        &self,
        state: State,
        now: Millis,
        lease: Millis,
        limit: i64,
    ) -> Result<Vec<Claim>, StoreError> {
        on_db!(self, pool, d => {
            let sql = format!(
                "UPDATE requests
             SET lease_until = $1 + $2, lease_owner = $5, generation = generation + 1, attempts = attempts + 1,
                 updated_at = $1
             WHERE session_id IN (
                 SELECT session_id FROM requests
                 WHERE state = $3 AND next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until <= $1)
                 ORDER BY CASE WHEN waiting_since > received_at THEN 2 WHEN deadline_at < $1 THEN 1 ELSE 0 END,
                          deadline_at
                 LIMIT $4{})
             RETURNING session_id, order_no, generation, attempts, received_at, deadline_at, waiting_since",
                d.skip_locked()
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(lease)
            .bind(state.as_str())
            .bind(limit)
            .bind(self.instance.as_deref())
            .fetch_all(pool)
            .await?;
            let mut claims: Vec<Claim> = rows
                .into_iter()
                .map(|row| Claim {
                    session_id: row.get(0),
                    order_no: row.get(1),
                    generation: row.get(2),
                    attempts: row.get(3),
                    received_at: row.get(4),
                    deadline_at: row.get(5),
                    waiting_since: row.get(6),
                })
                .collect();
            // RETURNING gives no order; keep the claim's.
            claims.sort_by_key(|c| (queue_rank(c, now), c.deadline_at));
            if !claims.is_empty() {
                self.changed(|| claims.iter().map(|c| c.session_id.clone()).collect());
            }
            Ok(claims)
        })
    }

    /// Gives a claimed request back to its state, to be tried again at
    /// `next_attempt_at`, and records the failed attempt. False when the
    /// claim was lost.
    pub async fn retry_later(
        &self,
        claim: &Claim,
        step: &str,
        next_attempt_at: Millis,
        problem: &Outcome<'_>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        self.release(claim, next_attempt_at, problem, Some(step), now).await
    }

    /// Like [`Store::retry_later`] for an expected "not yet" (the platform
    /// has no record yet): noted in `last_error`, not in the history, which
    /// a day of polling would flood; and the attempt count restarts, so that
    /// a failure after many polls backs off from the start.
    pub async fn poll_again(
        &self,
        claim: &Claim,
        next_attempt_at: Millis,
        note: &Outcome<'_>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        self.release(claim, next_attempt_at, note, None, now).await
    }

    async fn release(
        &self,
        claim: &Claim,
        next_attempt_at: Millis,
        problem: &Outcome<'_>,
        history_step: Option<&str>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        on_db!(self, pool, d => {
            let tx = pool.begin().await?;
            let change = sqlx::query(
                "UPDATE requests SET lease_until = NULL, next_attempt_at = $1, last_error = $2, last_code = $3,
                                 updated_at = $4, attempts = CASE WHEN $5 THEN attempts ELSE 0 END
             WHERE session_id = $6 AND generation = $7",
            )
            .bind(next_attempt_at)
            .bind(problem.text)
            .bind(problem.code)
            .bind(now)
            .bind(history_step.is_some())
            .bind(&claim.session_id)
            .bind(claim.generation);
            let entry = history_step.map(|step| Entry::new(&claim.session_id, step, "retry", now).of(problem));
            guarded!(self, &claim.session_id, tx, change, entry)
        })
    }

    /// Any state but delivered → failed, with the reason. False when the
    /// claim was lost.
    pub async fn fail(
        &self,
        claim: &Claim,
        step: &str,
        reason: &Outcome<'_>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        on_db!(self, pool, d => {
            let tx = pool.begin().await?;
            let change = sqlx::query(
                "UPDATE requests SET state = 'failed', lease_until = NULL, last_error = $1, last_code = $2,
                                 updated_at = $3, generation = generation + 1, failed_stage = $4, failed_kind = $5
             WHERE session_id = $6 AND generation = $7 AND state <> 'delivered'",
            )
            .bind(reason.text)
            .bind(reason.code)
            .bind(now)
            .bind(step)
            .bind(failure_kind(reason.text, &claim.session_id, &claim.order_no))
            .bind(&claim.session_id)
            .bind(claim.generation);
            let entry = Entry::new(&claim.session_id, step, "failed", now).of(reason);
            guarded!(self, &claim.session_id, tx, change, Some(entry))
        })
    }

    /// waiting → failed for requests waiting since `waiting_since` or
    /// earlier whose payment data never came. Returns their sessionIDs.
    pub async fn give_up_waiting(
        &self,
        waiting_since: Millis,
        reason: &Outcome<'_>,
        now: Millis,
    ) -> Result<Vec<String>, StoreError> {
        on_db!(self, pool, d => {
            let mut tx = pool.begin().await?;
            const STEP: &str = "payment data";
            let gave_up: Vec<(String, String)> = sqlx::query_as(
                "UPDATE requests SET state = 'failed', lease_until = NULL, last_error = $1, last_code = $2,
                                 updated_at = $3, generation = generation + 1, failed_stage = $4
             WHERE state = 'waiting' AND waiting_since <= $5
             RETURNING session_id, order_no",
            )
            .bind(reason.text)
            .bind(reason.code)
            .bind(now)
            .bind(STEP)
            .bind(waiting_since)
            .fetch_all(&mut *tx)
            .await?;
            for (session_id, order_no) in &gave_up {
                // The kind may hold the request's own ids, generalised: one statement per request.
                sqlx::query("UPDATE requests SET failed_kind = $1 WHERE session_id = $2")
                    .bind(failure_kind(reason.text, session_id, order_no))
                    .bind(session_id)
                    .execute(&mut *tx)
                    .await?;
                tx.record_attempt(&Entry::new(session_id, STEP, "failed", now).of(reason)).await?;
            }
            let gave_up: Vec<String> = gave_up.into_iter().map(|(session_id, _)| session_id).collect();
            tx.commit().await?;
            if !gave_up.is_empty() {
                self.changed(|| gave_up.clone());
            }
            Ok(gave_up)
        })
    }

    /// The earliest time at which waiting work becomes due, for workers
    /// that sleep until then.
    pub async fn next_due(&self, state: State) -> Result<Option<Millis>, StoreError> {
        on_db!(self, pool, d => {
            let due: Option<Millis> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT MIN({}(next_attempt_at, COALESCE(lease_until, 0))) FROM requests WHERE state = $1",
                d.greatest()
            )))
            .bind(state.as_str())
            .fetch_one(pool)
            .await?;
            Ok(due)
        })
    }
}

/// Where a claim stands in the queue's order (see [`Store::claim`]): on
/// time, late, replayed.
fn queue_rank(claim: &Claim, now: Millis) -> u8 {
    if claim.waiting_since > claim.received_at {
        2
    } else if claim.deadline_at < now {
        1
    } else {
        0
    }
}

/// One line of a request's history.
pub(crate) struct Entry<'a> {
    session_id: &'a str,
    /// The upload it concerns; the request's current one when None.
    upload_id: Option<i64>,
    step: &'a str,
    outcome: &'a str,
    detail: Option<&'a str>,
    code: Option<&'a str>,
    took_ms: Option<Millis>,
    at: Millis,
}

impl<'a> Entry<'a> {
    pub fn new(session_id: &'a str, step: &'a str, outcome: &'a str, at: Millis) -> Entry<'a> {
        Entry { session_id, upload_id: None, step, outcome, detail: None, code: None, took_ms: None, at }
    }

    pub fn upload(self, upload_id: i64) -> Entry<'a> {
        Entry { upload_id: Some(upload_id), ..self }
    }

    pub fn detail(self, detail: &'a str) -> Entry<'a> {
        Entry { detail: Some(detail), ..self }
    }

    /// Its text, code and duration.
    pub(crate) fn of(self, outcome: &Outcome<'a>) -> Entry<'a> {
        Entry { detail: Some(outcome.text), code: Some(outcome.code), took_ms: outcome.took_ms, ..self }
    }

    pub(crate) fn code(self, code: &'a str) -> Entry<'a> {
        Entry { code: Some(code), ..self }
    }

    fn took(self, took_ms: Millis) -> Entry<'a> {
        Entry { took_ms: Some(took_ms), ..self }
    }
}

/// Applies one change of request `session_id` guarded by a claim's generation
/// or the request's state, inside transaction `tx`. When it matched, `entry`
/// (if any) is added to its history, everything done in `tx` is committed and
/// the watchers are told; when it did not (the claim was lost, the request
/// moved on), nothing of `tx` is kept. Evaluates to whether it matched.
macro_rules! guarded {
    ($store:expr, $session_id:expr, $tx:expr, $change:expr, $entry:expr) => {{
        let mut tx = $tx;
        let entry: Option<Entry<'_>> = $entry;
        let applied = $change.execute(&mut *tx).await?.rows_affected() == 1;
        if applied {
            if let Some(entry) = entry {
                tx.record_attempt(&entry).await?;
            }
            tx.commit().await?;
            $store.changed(|| vec![$session_id.to_owned()]);
        }
        Ok(applied)
    }};
}
use guarded;
