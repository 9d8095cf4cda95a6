//! What the admin API and the status page read.

use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::Row;

use crate::backend::{Dialect, on_db};
use crate::queue::State;
use crate::{Millis, Store, StoreError};

/// Which requests to list, and in which order.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<State>,
    pub order_no: Option<String>,
    pub session_id: Option<String>,
    /// SessionIDs beginning with this.
    pub session_prefix: Option<String>,
    /// Received at or after (unix ms).
    pub since: Option<Millis>,
    /// Received before (unix ms).
    pub until: Option<Millis>,
    /// Only late requests: delivered after their deadline, or pending past it.
    pub late: bool,
    /// Only pending requests whose deadline is less than this many ms away (and not past).
    pub at_risk_within: Option<Millis>,
    /// Only requests whose current problem has this code (see [`RequestSummary::code`]).
    pub code: Option<String>,
    pub sort: Sort,
    /// Keyset paging: only requests after this sessionID's in the sort order.
    pub after: Option<String>,
    pub limit: i64,
}

/// The order of a list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sort {
    /// Newest first.
    #[default]
    Received,
    /// Soonest deadline first.
    Deadline,
}

/// One request in a list.
#[derive(Debug, Clone, Serialize)]
pub struct RequestSummary {
    pub session_id: String,
    pub order_no: String,
    pub state: State,
    pub received_at: Millis,
    pub deadline_at: Millis,
    /// Delivered after its deadline, or not delivered and past it.
    pub late: bool,
    /// Attempts at the current step. Named apart from a detail's `attempts`
    /// (the history), which flattens this summary: one JSON key each.
    #[serde(rename = "step_attempts")]
    pub attempts: i64,
    pub next_attempt_at: Millis,
    /// A worker holds the request until then.
    pub claimed_until: Option<Millis>,
    pub last_error: Option<String>,
    /// The code of `last_error`: customs' answer code (`20001`, `HTTP 503`,
    /// `transport`) or a kind of error of ours (`no_payment_data`,
    /// `signer_unavailable`, …); None while nothing is wrong.
    pub code: Option<String>,
    pub delivered_at: Option<Millis>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestPage {
    pub requests: Vec<RequestSummary>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One prepared upload of a request.
#[derive(Debug, Clone, Serialize)]
pub struct UploadView {
    pub id: i64,
    pub guid: String,
    pub service_time: Millis,
    pub presign: String,
    /// SHA-256 of the pre-sign string's UTF-8 bytes, lower-case hex: what to
    /// compare with another system's copy without pasting 20 KB around.
    pub presign_sha256: String,
    /// The card that signed it (its configured name), and the certNo it signed with.
    pub card: Option<String>,
    pub cert_no: Option<String>,
    pub sign_value: Option<String>,
    pub upload_body: Option<String>,
    pub created_at: Millis,
    /// When its signature was made and verified.
    pub signed_at: Option<Millis>,
}

/// One entry of a request's history.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    pub at: Millis,
    pub step: String,
    pub outcome: String,
    /// The error, or customs' answer as received.
    pub detail: Option<String>,
    /// Customs' answer code or a kind of error of ours (as
    /// [`RequestSummary::code`]); None for steps that went well without an answer.
    pub code: Option<String>,
    /// How long the step took: the card's signature, customs' answer, the
    /// platform's; None where it was not timed (or before migration 0011).
    pub took_ms: Option<Millis>,
    pub upload_id: Option<i64>,
    /// The certificate that made a signature (on a `sign` step that signed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_no: Option<String>,
}

/// Everything known about one request.
#[derive(Debug, Clone, Serialize)]
pub struct RequestDetail {
    #[serde(flatten)]
    pub summary: RequestSummary,
    /// The `openReq` JSON exactly as received.
    pub open_req: String,
    pub customs_time: Millis,
    /// The payment record used (or to be used), in its stored form.
    pub payment: Option<Box<RawValue>>,
    /// The current upload first, then earlier ones.
    pub uploads: Vec<UploadView>,
    /// Every attempt at a step, oldest first.
    pub attempts: Vec<AttemptView>,
    /// The whole story in time order: customs' call (step `customs call`),
    /// the payment data's arrival (step `payment data`, outcome `received`,
    /// whenever it came), then every attempt.
    pub timeline: Vec<AttemptView>,
}

const SUMMARY_COLUMNS: &str =
    "session_id, order_no, state, received_at, deadline_at, attempts, next_attempt_at,
     lease_until, last_error, last_code, delivered_at";

/// The row of [`SUMMARY_COLUMNS`].
#[derive(sqlx::FromRow)]
pub(crate) struct SummaryRow {
    session_id: String,
    order_no: String,
    state: String,
    received_at: Millis,
    deadline_at: Millis,
    attempts: i64,
    next_attempt_at: Millis,
    lease_until: Option<Millis>,
    last_error: Option<String>,
    last_code: Option<String>,
    delivered_at: Option<Millis>,
}

impl SummaryRow {
    pub(crate) fn summary(self, now: Millis) -> Result<RequestSummary, StoreError> {
        let state = State::parse(&self.state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown state {:?}", self.state)))?;
        let late = match self.delivered_at {
            Some(at) => at > self.deadline_at,
            None => state != State::Failed && now > self.deadline_at,
        };
        Ok(RequestSummary {
            session_id: self.session_id,
            order_no: self.order_no,
            state,
            received_at: self.received_at,
            deadline_at: self.deadline_at,
            late,
            attempts: self.attempts,
            next_attempt_at: self.next_attempt_at,
            claimed_until: self.lease_until.filter(|&until| until > now),
            last_error: self.last_error,
            code: self.last_code,
            delivered_at: self.delivered_at,
        })
    }
}

/// The row of [`Store::request_detail`]'s first read.
#[derive(sqlx::FromRow)]
struct DetailRow {
    #[sqlx(flatten)]
    summary: SummaryRow,
    open_req: String,
    customs_time: Millis,
    upload_id: Option<i64>,
}

impl Store {
    /// Requests filtered and sorted, one page of at most `filter.limit`. The
    /// statement holds only the filters given, so that SQLite can use the
    /// index made for them (migration 0007; OPERATIONS.md lists them).
    pub async fn list_requests(&self, filter: &ListFilter, now: Millis) -> Result<RequestPage, StoreError> {
        on_db!(self, pool, d => {
            let rows = list_query("", filter, now, d).build_query_as::<SummaryRow>().fetch_all(pool).await?;
            let mut requests = rows.into_iter().map(|row| row.summary(now)).collect::<Result<Vec<_>, _>>()?;
            let more = requests.len() > usize::try_from(filter.limit).unwrap_or(0);
            requests.truncate(usize::try_from(filter.limit).unwrap_or(0));
            let next = more.then(|| requests.last().map(|r| r.session_id.clone())).flatten();
            Ok(RequestPage { requests, next })
        })
    }

    /// The requests of these sessionIDs as they stand, in no particular
    /// order; those unknown are left out.
    pub async fn summaries(
        &self,
        session_ids: &[String],
        now: Millis,
    ) -> Result<Vec<RequestSummary>, StoreError> {
        on_db!(self, pool, d => {
            let ids = serde_json::to_string(session_ids).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let sql =
                format!("SELECT {SUMMARY_COLUMNS} FROM requests WHERE session_id IN ({})", d.json_strings("$1"));
            let rows: Vec<SummaryRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(ids).fetch_all(pool).await?;
            rows.into_iter().map(|row| row.summary(now)).collect()
        })
    }

    /// SQLite's plan for a list, for tests that check an index serves it.
    #[cfg(test)]
    pub(crate) async fn list_plan(&self, filter: &ListFilter) -> Result<Vec<String>, StoreError> {
        on_db!(self, pool, d => {
            let rows = list_query("EXPLAIN QUERY PLAN ", filter, 0, d).build().fetch_all(pool).await?;
            Ok(rows.iter().map(|row| row.get::<String, _>("detail")).collect())
        })
    }

    /// Everything about one request, or None if customs never asked for it.
    pub async fn request_detail(
        &self,
        session_id: &str,
        now: Millis,
    ) -> Result<Option<RequestDetail>, StoreError> {
        on_db!(self, pool, d => {
            let sql = format!(
                "SELECT {SUMMARY_COLUMNS}, open_req, customs_time, upload_id FROM requests WHERE session_id = $1"
            );
            let Some(row) = sqlx::query_as::<_, DetailRow>(sqlx::AssertSqlSafe(sql))
                .bind(session_id)
                .fetch_optional(pool)
                .await?
            else {
                return Ok(None);
            };
            let summary = row.summary.summary(now)?;
            let upload_id = row.upload_id;
            let payment: Option<(String, Millis, String)> = sqlx::query_as(
                "SELECT record, received_at, pay_transaction_id FROM payments WHERE id = COALESCE(
                 (SELECT payment_id FROM uploads WHERE id = $1),
                 (SELECT payment_id FROM payment_orders WHERE order_no = $2))",
            )
            .bind(upload_id)
            .bind(&summary.order_no)
            .fetch_optional(pool)
            .await?;
            let payment_came = payment.as_ref().map(|(_, at, id)| (*at, format!("payTransactionId {id}")));
            let payment = payment
                .map(|(record, _, _)| RawValue::from_string(record))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("a stored payment record is not JSON: {e}")))?;
            let uploads: Vec<UploadView> = sqlx::query(
                "SELECT id, guid, service_time, presign, cert_no, sign_value, upload_body, created_at, signed_at,
                    card
             FROM uploads WHERE session_id = $1 ORDER BY id = $2 DESC, id DESC",
            )
            .bind(session_id)
            .bind(upload_id)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|row| {
                let presign: String = row.get(3);
                UploadView {
                    id: row.get(0),
                    guid: row.get(1),
                    service_time: row.get(2),
                    presign_sha256: sha256_hex(presign.as_bytes()),
                    presign,
                    cert_no: row.get(4),
                    sign_value: row.get(5),
                    upload_body: row.get(6),
                    created_at: row.get(7),
                    signed_at: row.get(8),
                    card: row.get(9),
                }
            })
            .collect();
            let attempts: Vec<AttemptView> = sqlx::query(
                "SELECT at, step, outcome, detail, code, took_ms, upload_id FROM attempts
                 WHERE session_id = $1 ORDER BY id",
            )
            .bind(session_id)
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|row| {
                let (step, outcome, upload_id): (String, String, Option<i64>) =
                    (row.get(1), row.get(2), row.get(6));
                let cert_no = (step == "sign" && outcome == "signed")
                    .then(|| uploads.iter().find(|u| Some(u.id) == upload_id).and_then(|u| u.cert_no.clone()))
                    .flatten();
                AttemptView {
                    at: row.get(0),
                    step,
                    outcome,
                    detail: row.get(3),
                    code: row.get(4),
                    took_ms: row.get(5),
                    upload_id,
                    cert_no,
                }
            })
            .collect();
            let timeline = timeline(summary.received_at, payment_came, &attempts);
            Ok(Some(RequestDetail {
                summary,
                open_req: row.open_req,
                customs_time: row.customs_time,
                payment,
                uploads,
                attempts,
                timeline,
            }))
        })
    }

    /// Requests delivered after their deadline (kept by triggers, migration
    /// 0012), plus those still pending past it (counted over the partial index
    /// of pending requests): never a count over the whole history.
    pub async fn count_late(&self, now: Millis) -> Result<i64, StoreError> {
        on_db!(self, pool, d => {
            let late: i64 = sqlx::query_scalar(
                "SELECT (SELECT CAST(SUM(n) AS BIGINT) FROM late_deliveries)
                  + (SELECT COUNT(*) FROM requests
                     WHERE state IN ('waiting', 'ready', 'signed') AND deadline_at < $1)",
            )
            .bind(now)
            .fetch_one(pool)
            .await?;
            Ok(late)
        })
    }

    /// Pending requests past their deadline (over the partial index of pending requests).
    pub async fn count_past_deadline(&self, now: Millis) -> Result<i64, StoreError> {
        on_db!(self, pool, d => {
            Ok(sqlx::query_scalar(
                "SELECT COUNT(*) FROM requests WHERE state IN ('waiting', 'ready', 'signed') AND deadline_at < $1",
            )
            .bind(now)
            .fetch_one(pool)
            .await?)
        })
    }

    /// Pending requests whose deadline is less than `within` ms away (not yet past).
    pub async fn count_at_risk(&self, now: Millis, within: Millis) -> Result<i64, StoreError> {
        on_db!(self, pool, d => {
            let at_risk: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM requests
                 WHERE state IN ('waiting', 'ready', 'signed') AND deadline_at >= $1 AND deadline_at < $1 + $2",
            )
            .bind(now)
            .bind(within)
            .fetch_one(pool)
            .await?;
            Ok(at_risk)
        })
    }

    /// When the oldest pending request was received, if any is pending.
    pub async fn oldest_pending(&self) -> Result<Option<Millis>, StoreError> {
        on_db!(self, pool, d => {
            // One index lookup per state (requests_by_state), not a scan.
            let oldest: Option<Millis> = sqlx::query_scalar(
                "SELECT MIN(oldest) FROM (
                 SELECT MIN(received_at) AS oldest FROM requests WHERE state = 'waiting'
                 UNION ALL SELECT MIN(received_at) FROM requests WHERE state = 'ready'
                 UNION ALL SELECT MIN(received_at) FROM requests WHERE state = 'signed') AS pending",
            )
            .fetch_one(pool)
            .await?;
            Ok(oldest)
        })
    }

    /// (delivered at, received at) of every request delivered since `since`.
    pub async fn deliveries_since(&self, since: Millis) -> Result<Vec<(Millis, Millis)>, StoreError> {
        on_db!(self, pool, d => {
            Ok(sqlx::query_as(
                "SELECT delivered_at, received_at FROM requests WHERE delivered_at >= $1 ORDER BY delivered_at",
            )
            .bind(since)
            .fetch_all(pool)
            .await?)
        })
    }

    /// How many requests are in each state, for the status page and metrics.
    pub async fn count_by_state(&self) -> Result<Vec<(State, i64)>, StoreError> {
        on_db!(self, pool, d => {
            // Kept by triggers (migration 0004; on PostgreSQL in shards): no scan of the requests table.
            let rows: Vec<(String, i64)> =
                sqlx::query_as("SELECT state, CAST(SUM(n) AS BIGINT) FROM state_counts GROUP BY state")
                    .fetch_all(pool)
                    .await?;
            Ok(State::ALL
                .into_iter()
                .map(|state| {
                    let count = rows.iter().find(|(s, _)| s == state.as_str()).map_or(0, |(_, n)| *n);
                    (state, count)
                })
                .collect())
        })
    }
}

/// The statement of [`Store::list_requests`], after `prefix` (for EXPLAIN).
fn list_query<DB>(prefix: &str, filter: &ListFilter, now: Millis, d: Dialect) -> sqlx::QueryBuilder<DB>
where
    DB: sqlx::Database,
    DB::Arguments: Default,
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let mut query =
        sqlx::QueryBuilder::<DB>::new(format!("{prefix}SELECT {SUMMARY_COLUMNS} FROM requests WHERE 1 = 1"));
    if let Some(state) = filter.state {
        // With a filter that picks a few requests (an order, a sessionID, a prefix of one),
        // `+state` keeps SQLite off the state's index: it would walk every request in the
        // state (the whole history, for delivered) in the sort's order to find those few.
        let few = filter.order_no.is_some() || filter.session_id.is_some() || filter.session_prefix.is_some();
        let state_column = if few { d.unindexed("state") } else { "state".to_owned() };
        query.push(format!(" AND {state_column} = ")).push_bind(state.as_str());
    }
    if let Some(order_no) = &filter.order_no {
        query.push(" AND order_no = ").push_bind(order_no.clone());
    }
    if let Some(session_id) = &filter.session_id {
        query.push(" AND session_id = ").push_bind(session_id.clone());
    }
    if let Some(prefix) = &filter.session_prefix {
        // A range of the primary key; U+10FFFF sorts after every other character.
        query.push(" AND session_id >= ").push_bind(prefix.clone());
        query.push(" AND session_id < ").push_bind(format!("{prefix}\u{10FFFF}"));
    }
    if let Some(since) = filter.since {
        query.push(" AND received_at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        query.push(" AND received_at < ").push_bind(until);
    }
    if filter.late {
        // With a state, only its half of "late" can hold: a failed request is never late, so
        // the statement says so rather than read every failed request to find none.
        match filter.state {
            None => {
                query.push(
                    " AND (delivered_at > deadline_at OR (state IN ('waiting', 'ready', 'signed') AND deadline_at < ",
                );
                query.push_bind(now).push("))");
            }
            Some(State::Delivered) => {
                query.push(" AND delivered_at > deadline_at");
            }
            Some(State::Failed) => {
                query.push(" AND FALSE");
            }
            Some(State::Waiting | State::Ready | State::Signed) => {
                query.push(" AND deadline_at < ").push_bind(now);
            }
        }
    }
    if let Some(code) = &filter.code {
        query.push(" AND last_code = ").push_bind(code.clone());
    }
    if let Some(within) = filter.at_risk_within {
        query.push(" AND state IN ('waiting', 'ready', 'signed') AND deadline_at >= ").push_bind(now);
        query.push(" AND deadline_at < ").push_bind(now.saturating_add(within));
    }
    let (columns, direction, beyond) = match filter.sort {
        Sort::Received => ("received_at", "DESC", "<"),
        Sort::Deadline => ("deadline_at", "ASC", ">"),
    };
    if let Some(after) = &filter.after {
        query.push(format!(" AND ({columns}, session_id) {beyond} (SELECT {columns}, session_id FROM requests WHERE session_id = "));
        query.push_bind(after.clone()).push(")");
    }
    query.push(format!(" ORDER BY {columns} {direction}, session_id {direction} LIMIT "));
    // One more than asked, to learn whether another page exists.
    query.push_bind(filter.limit + 1);
    query
}

/// A request's story in time order (see [`RequestDetail::timeline`]); what
/// happened at the same millisecond keeps its order of happening.
fn timeline(
    received_at: Millis,
    payment_came: Option<(Millis, String)>,
    attempts: &[AttemptView],
) -> Vec<AttemptView> {
    let event = |at: Millis, step: &str, outcome: &str, detail: Option<String>| AttemptView {
        at,
        step: step.to_owned(),
        outcome: outcome.to_owned(),
        detail,
        code: None,
        took_ms: None,
        upload_id: None,
        cert_no: None,
    };
    let mut timeline = Vec::with_capacity(attempts.len() + 2);
    timeline.push(event(received_at, "customs call", "received", None));
    if let Some((at, payment)) = payment_came {
        timeline.push(event(at, "payment data", "received", Some(payment)));
    }
    timeline.extend(attempts.iter().cloned());
    // Stable: equal times keep the order above (the call before what it caused).
    timeline.sort_by_key(|entry| entry.at);
    timeline
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
