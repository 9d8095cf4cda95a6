//! What `GET /api/export.csv` reads: requests with their outcome, oldest
//! first, in keyset pages, so an export of years of requests never holds
//! more than one page.

use crate::backend::on_db;
use crate::reads::{RequestSummary, SummaryRow};
use crate::{Millis, Store, StoreError};
use customs179_core::CustomsAnswer;

/// Which requests to export, by when customs' call was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportRange {
    /// Received at or after (inclusive).
    pub since: Millis,
    /// Received before (exclusive).
    pub until: Millis,
}

/// Where the next page starts: just after this request, in the export's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportCursor {
    received_at: Millis,
    session_id: String,
}

/// One request and its outcome.
#[derive(Debug, Clone)]
pub struct ExportRow {
    pub summary: RequestSummary,
    /// customs' code in its last answer to an upload of this request (`10000`,
    /// `20006`, …), `HTTP <status>` when that answer had none; None when customs
    /// never answered one (a timeout or no connection is no answer).
    pub customs_answer: Option<String>,
    /// The current upload's guid and the certNo that signed it.
    pub guid: Option<String>,
    pub cert_no: Option<String>,
    /// The payment of the current upload, or the one the order is known to be paid by.
    pub pay_transaction_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ExportPage {
    pub rows: Vec<ExportRow>,
    /// Pass as `after` for the next page; None on the last one.
    pub next: Option<ExportCursor>,
}

/// The requests are read in the order of the `requests_newest` index
/// (`received_at, session_id`, walked forwards), from a bound that index
/// can seek to, so each page costs its own rows only.
const COLUMNS: &str = "r.session_id, r.order_no, r.state, r.received_at, r.deadline_at, r.attempts,
     r.next_attempt_at, r.lease_until, r.last_error, r.last_code, r.delivered_at, u.guid, u.cert_no,
     (SELECT p.pay_transaction_id FROM payments p
      WHERE p.id = COALESCE(u.payment_id, (SELECT o.payment_id FROM payment_orders o WHERE o.order_no = r.order_no)))
        AS pay_transaction_id,
     (SELECT a.detail FROM attempts a
      WHERE a.session_id = r.session_id AND a.step = 'upload' AND a.detail LIKE 'HTTP %'
      ORDER BY a.id DESC LIMIT 1) AS last_answer";

const FIRST_PAGE: &str = "r.received_at >= $1 AND r.received_at < $2";
const LATER_PAGE: &str = "(r.received_at, r.session_id) > ($1, $3) AND r.received_at < $2";

impl Store {
    /// One page of at most `limit` requests received in `range`, oldest
    /// first (by `received_at`, then sessionID), starting after `after`.
    /// Each row is as it stands when its page is read; a request is listed
    /// once however its state changes while the pages are read.
    pub async fn export_page(
        &self,
        range: ExportRange,
        after: Option<&ExportCursor>,
        limit: i64,
        now: Millis,
    ) -> Result<ExportPage, StoreError> {
        on_db!(self, pool, d => {
            let bound = if after.is_some() { LATER_PAGE } else { FIRST_PAGE };
            let sql = format!(
                "SELECT {COLUMNS} FROM requests r LEFT JOIN uploads u ON u.id = r.upload_id
             WHERE {bound}
             ORDER BY r.received_at, r.session_id
             LIMIT $4"
            );
            let limit = limit.max(1);
            // One more than asked, to learn whether another page exists.
            let rows: Vec<ExportDbRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(after.map_or(range.since, |a| a.received_at))
                .bind(range.until)
                .bind(after.map(|a| a.session_id.as_str()))
                .bind(limit + 1)
                .fetch_all(pool)
                .await?;
            let mut rows = rows.into_iter().map(|row| row.export_row(now)).collect::<Result<Vec<_>, _>>()?;
            let keep = usize::try_from(limit).unwrap_or(usize::MAX);
            let more = rows.len() > keep;
            rows.truncate(keep);
            let next = more.then(|| rows.last()).flatten().map(|r| ExportCursor {
                received_at: r.summary.received_at,
                session_id: r.summary.session_id.clone(),
            });
            Ok(ExportPage { rows, next })
        })
    }
}

/// The row of [`COLUMNS`].
#[derive(sqlx::FromRow)]
struct ExportDbRow {
    #[sqlx(flatten)]
    summary: SummaryRow,
    guid: Option<String>,
    cert_no: Option<String>,
    pay_transaction_id: Option<String>,
    last_answer: Option<String>,
}

impl ExportDbRow {
    fn export_row(self, now: Millis) -> Result<ExportRow, StoreError> {
        Ok(ExportRow {
            summary: self.summary.summary(now)?,
            customs_answer: self.last_answer.as_deref().and_then(answer_code),
            guid: self.guid,
            cert_no: self.cert_no,
            pay_transaction_id: self.pay_transaction_id,
        })
    }
}

/// customs' code from an upload attempt's record (`HTTP <status>: <body>`,
/// as the upload client writes it), labelled as the client labels it for
/// its metrics: the code of a 2xx answer that has one, else `HTTP <status>`.
fn answer_code(record: &str) -> Option<String> {
    let (status, body) = record.strip_prefix("HTTP ")?.split_once(':')?;
    let status: u16 = status.parse().ok()?;
    match CustomsAnswer::parse(body.trim()) {
        Some(answer) if (200..300).contains(&status) => Some(answer.code),
        _ => Some(format!("HTTP {status}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::on_both;
    use customs179_core::OpenReq;

    use crate::NewRequest;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).await.unwrap();
        (dir, store)
    }

    #[test]
    fn answer_codes_are_read_from_the_recorded_answer() {
        assert_eq!(answer_code(r#"HTTP 200: {"code":"10000","message":"ok"}"#).as_deref(), Some("10000"));
        assert_eq!(answer_code(r#"HTTP 200: {"code":20006}"#).as_deref(), Some("20006"));
        assert_eq!(answer_code("HTTP 200: not json").as_deref(), Some("HTTP 200"));
        assert_eq!(answer_code(r#"HTTP 502: {"code":"10000"}"#).as_deref(), Some("HTTP 502"));
        assert_eq!(answer_code("HTTP 503: ").as_deref(), Some("HTTP 503"));
        assert_eq!(answer_code("no answer from customs: timed out"), None);
        assert_eq!(answer_code("HTTP x: y"), None);
    }

    on_both! {
    async fn pages_walk_the_range_oldest_first_each_request_once(f) {
        let store = f.store.clone();
        // Three requests in the same millisecond, to page through a tie.
        let times = [1_000, 2_000, 2_000, 2_000, 3_000, 4_000];
        for (i, &at) in times.iter().enumerate() {
            let raw = format!(r#"{{"orderNo":"SO-{i}","sessionID":"S-{i}","serviceTime":1}}"#);
            let open_req = OpenReq::parse(&raw).unwrap();
            let request = NewRequest { open_req, raw, received_at: at, deadline_at: at + 120_000 };
            store.insert_requests(&[request]).await.unwrap();
        }
        let range = ExportRange { since: 2_000, until: 4_000 };
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.export_page(range, after.as_ref(), 2, 5_000).await.unwrap();
            assert!(page.rows.len() <= 2);
            seen.extend(page.rows.iter().map(|r| r.summary.session_id.clone()));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, ["S-1", "S-2", "S-3", "S-4"]);
        let empty = store.export_page(ExportRange { since: 5_000, until: 6_000 }, None, 2, 5_000).await;
        assert!(empty.unwrap().rows.is_empty());
    }
    }

    #[tokio::test]
    async fn pages_seek_through_the_index() {
        let (_dir, store) = store().await;
        for bound in [FIRST_PAGE, LATER_PAGE] {
            let sql = format!(
                "EXPLAIN QUERY PLAN SELECT {COLUMNS} FROM requests r LEFT JOIN uploads u ON u.id = r.upload_id
                 WHERE {bound} ORDER BY r.received_at, r.session_id LIMIT $4"
            );
            let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(0_i64)
                .bind(1_i64)
                .bind("S")
                .bind(10_i64)
                .fetch_all(store.sqlite())
                .await
                .unwrap()
                .iter()
                .map(|row| sqlx::Row::get::<String, _>(row, "detail"))
                .collect();
            let requests = plan.iter().find(|d| d.contains(" r ")).unwrap_or_else(|| panic!("{plan:?}"));
            assert!(requests.starts_with("SEARCH r USING INDEX requests_newest"), "{bound}: {plan:?}");
            assert!(!plan.iter().any(|d| d.contains("TEMP B-TREE")), "{bound}: {plan:?}");
        }
    }
}
