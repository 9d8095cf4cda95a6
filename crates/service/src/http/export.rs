//! `GET /api/export.csv?since=&until=`: every request received in a range,
//! with its outcome, as a CSV file that opens right in Excel, streamed page
//! by page from the store (OPERATIONS.md, "Exporting requests").
//!
//! - UTF-8 with a byte-order mark (Excel reads a file without one in the
//!   machine's ANSI code page), RFC 4180 quoting, CRLF line ends.
//! - Ids (sessionID, orderNo, guid, certNo, payTransactionId) are written as
//!   the formula `="…"`, which Excel shows as that text, exactly: no
//!   `4.2E+21`, no leading zeros lost, and whatever the id holds (`=1+2`,
//!   `=HYPERLINK(…)`) sits inside a string literal, inert. Excel refuses a
//!   text longer than 255 characters in a formula: such an id is written as
//!   text after a `'`.
//! - Any other cell beginning with `=`, `+`, `-`, `@`, a tab or a carriage
//!   return gets a leading `'`, so that no text from customs or the platform
//!   runs as a formula.
//! - Times are RFC 3339 in Asia/Shanghai (UTC+8, no daylight saving), with
//!   milliseconds and the offset: `2026-12-01T16:03:07.123+08:00`. Excel
//!   keeps them as text; they sort as they read.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use customs179_core::time::{parse_time, shanghai_time};
use customs179_store::{ExportCursor, ExportRange, ExportRow, Millis, Store, StoreError};
use http_body::Frame;
use serde::Deserialize;

use super::ApiError;
use super::admin::{Caller, authorize};
use crate::context::{ApiContext, now_ms};

/// Requests read from the store at a time, and written as one chunk.
const PAGE_ROWS: i64 = 1_000;
/// The first page, read before the answer starts: small, so that the
/// download starts at once (its headers wait for it).
const FIRST_PAGE_ROWS: i64 = 100;

/// The columns, in order (OPERATIONS.md lists what each holds).
const HEADER: [&str; 13] = [
    "sessionID",
    "orderNo",
    "state",
    "received",
    "deadline",
    "delivered",
    "late",
    "attempts",
    "last error",
    "customs answer",
    "guid",
    "certNo",
    "payTransactionId",
];

/// The most UTF-16 units Excel takes in a text constant of a formula.
const EXCEL_FORMULA_TEXT_MAX: usize = 255;

const FORMATS: &str = "give an RFC 3339 time with its offset (2026-12-01T08:00:00+08:00, \
     2026-12-01T00:00:00Z), a date (2026-12-01: midnight in Shanghai) or unix milliseconds";

pub(crate) fn router() -> Router<ApiContext> {
    Router::new().route("/api/export.csv", get(export))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    since: Option<String>,
    until: Option<String>,
}

/// Requests received in `[since, until)`, oldest first. `until` defaults to
/// the moment the export starts, so an export ends however fast customs calls.
async fn export(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    query: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let actor = authorize(&ctx, &headers, Caller::Viewer)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let bound = |name: &str, value: Option<String>| {
        value
            .filter(|text| !text.is_empty())
            .map(|text| {
                parse_time(&text).map_err(|reason| {
                    ApiError::BadRequest(format!("{name} {text:?} is not a time: {reason}; {FORMATS}"))
                })
            })
            .transpose()
    };
    let since = bound("since", query.since)?;
    let until = bound("until", query.until)?;
    if let (Some(since), Some(until)) = (since, until)
        && since > until
    {
        return Err(ApiError::BadRequest(format!(
            "since ({}) is after until ({})",
            shanghai_time(since),
            shanghai_time(until)
        )));
    }
    tracing::info!(actor = actor.name, since, until, "export of requests");
    let now = now_ms();
    let range = ExportRange { since: since.unwrap_or(Millis::MIN), until: until.unwrap_or(now + 1) };
    // The first page is read before answering, so that a database that
    // cannot be read gets a 503 rather than a download cut short.
    let page = ctx.store.export_page(range, None, FIRST_PAGE_ROWS, now).await?;
    let mut first = String::with_capacity(256 + page.rows.len() * 256);
    first.push('\u{feff}');
    push_record(&mut first, HEADER.iter().map(|name| Cow::Borrowed(*name)));
    push_rows(&mut first, &page.rows);
    let body = CsvBody {
        store: ctx.store.clone(),
        range,
        first: Some(Bytes::from(first)),
        after: page.next,
        fetch: None,
    };
    let filename = format!("customs179-requests-{}.csv", filename_time(now));
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8")),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Body::new(body),
    )
        .into_response())
}

type Fetch = Pin<Box<dyn Future<Output = Result<(Bytes, Option<ExportCursor>), StoreError>> + Send>>;

/// The file, one page of requests per chunk, each page read when the
/// client has taken the one before: nothing but a page is ever in memory,
/// and a client that goes away stops the reading.
struct CsvBody {
    store: Store,
    range: ExportRange,
    /// The byte-order mark, the header and the first page.
    first: Option<Bytes>,
    /// Where the next page starts; None once the last page was read.
    after: Option<ExportCursor>,
    fetch: Option<Fetch>,
}

impl http_body::Body for CsvBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        loop {
            if this.fetch.is_none() {
                let Some(after) = this.after.take() else {
                    return Poll::Ready(None);
                };
                let (store, range) = (this.store.clone(), this.range);
                this.fetch = Some(Box::pin(async move {
                    let page = store.export_page(range, Some(&after), PAGE_ROWS, now_ms()).await?;
                    let mut chunk = String::with_capacity(page.rows.len() * 256);
                    push_rows(&mut chunk, &page.rows);
                    Ok((Bytes::from(chunk), page.next))
                }));
            }
            let Some(fetch) = this.fetch.as_mut() else {
                return Poll::Ready(None);
            };
            match fetch.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok((chunk, next))) => {
                    this.fetch = None;
                    this.after = next;
                    if !chunk.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                }
                Poll::Ready(Err(e)) => {
                    // The answer is already under way: the client sees the
                    // file cut short (no last chunk), never a complete one.
                    tracing::error!(error = %e, "export: database error; the file is cut short");
                    this.fetch = None;
                    this.after = None;
                    return Poll::Ready(Some(Err(std::io::Error::other(e.to_string()))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.after.is_none() && self.fetch.is_none()
    }
}

fn push_rows(out: &mut String, rows: &[ExportRow]) {
    for row in rows {
        let r = &row.summary;
        let optional_id = |value: &Option<String>| value.as_deref().map_or(Cow::Borrowed(""), id_cell);
        push_record(
            out,
            [
                id_cell(&r.session_id),
                id_cell(&r.order_no),
                text_cell(r.state.as_str()),
                Cow::Owned(shanghai_time(r.received_at)),
                Cow::Owned(shanghai_time(r.deadline_at)),
                r.delivered_at.map_or(Cow::Borrowed(""), |at| Cow::Owned(shanghai_time(at))),
                Cow::Borrowed(if r.late { "yes" } else { "no" }),
                Cow::Owned(r.attempts.to_string()),
                r.last_error.as_deref().map_or(Cow::Borrowed(""), text_cell),
                row.customs_answer.as_deref().map_or(Cow::Borrowed(""), text_cell),
                optional_id(&row.guid),
                optional_id(&row.cert_no),
                optional_id(&row.pay_transaction_id),
            ],
        );
    }
}

/// One CSV record (RFC 4180): a field holding `,`, `"`, CR or LF is quoted,
/// its quotes doubled; CRLF at the end.
fn push_record<'a>(out: &mut String, fields: impl IntoIterator<Item = Cow<'a, str>>) {
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if field.contains([',', '"', '\r', '\n']) {
            out.push('"');
            out.push_str(&field.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&field);
        }
    }
    out.push_str("\r\n");
}

/// An id as Excel must show it: `="…"` (quotes doubled inside the formula's
/// text), or `'…` when too long for a formula's text.
fn id_cell(value: &str) -> Cow<'static, str> {
    let escaped = value.replace('"', "\"\"");
    if escaped.encode_utf16().count() <= EXCEL_FORMULA_TEXT_MAX {
        Cow::Owned(format!("=\"{escaped}\""))
    } else {
        Cow::Owned(format!("'{value}"))
    }
}

/// Text that must not run as a formula: `'` before a leading `=`, `+`, `-`,
/// `@`, tab or carriage return.
fn text_cell(value: &str) -> Cow<'_, str> {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{value}"))
    } else {
        Cow::Borrowed(value)
    }
}

/// `20261201-160307`, Shanghai time, for the file's name.
fn filename_time(at: Millis) -> String {
    let text = shanghai_time(at);
    let digits = |range: std::ops::Range<usize>| text[range].replace([':', '-'], "");
    format!("{}-{}", digits(0..10), digits(11..19))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_by_shanghai_time() {
        assert_eq!(filename_time(1_796_112_187_123), "20261201-160307");
    }

    #[test]
    fn cells_are_quoted_and_made_inert() {
        let mut out = String::new();
        let cells = ["plain", "a,b", "say \"hi\"", "two\nlines", "cr\r", ""];
        push_record(&mut out, cells.iter().map(|c| Cow::Borrowed(*c)));
        assert_eq!(out, "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",\"cr\r\",\r\n");

        assert_eq!(id_cell("4200000000000000000001"), "=\"4200000000000000000001\"");
        assert_eq!(id_cell("=HYPERLINK(\"x\")"), "=\"=HYPERLINK(\"\"x\"\")\"");
        let long = "1".repeat(256);
        assert_eq!(id_cell(&long), format!("'{long}"));
        assert_eq!(id_cell(&"1".repeat(255)), format!("=\"{}\"", "1".repeat(255)));

        for hostile in ["=1+2", "+86123", "-5", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(text_cell(hostile), format!("'{hostile}"));
        }
        for harmless in ["waiting", "HTTP 503", "10000", "", "a=b"] {
            assert_eq!(text_cell(harmless), harmless);
        }
    }
}
