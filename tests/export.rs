//! `GET /api/export.csv`: requests with their outcome as a CSV file that opens right in Excel,
//! read back with a real CSV parser. Hostile and awkward ids and texts go through the whole
//! system (customs' calls to the intake, the platform's records, the card and customs
//! simulators for the delivered ones); the file must carry a BOM, keep ids as text, leave no
//! cell that runs as a formula, give times in Shanghai with the offset, filter by `since` and
//! `until`, refuse what is not a time, and stream a long export page by page.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use customs179_sim::eport::{self, Algo, EportSimOptions};
use reqwest::StatusCode;
use serde_json::Value;

mod common;

use common::{ADMIN_TOKEN, Harness, listed_requests, loopback, sql_text};

const PIN: &str = "88888888";
const VIEWER: &str = "wall-screen-viewer-token-0123";
const WAIT: Duration = Duration::from_secs(30);
const BOM: &[u8] = b"\xEF\xBB\xBF";
const HEADER: &str = "sessionID,orderNo,state,received,deadline,delivered,late,attempts,last error,\
                      customs answer,guid,certNo,payTransactionId";

fn sections(signer_url: &str, upload_url: &str) -> String {
    format!(
        r#"
[[admin.tokens]]
name = "wall screen"
token = "{VIEWER}"
role = "viewer"

[signer]
url = "{signer_url}"
pin = "{PIN}"
timeout_ms = 2000

[customs]
environment = "test"
upload_url = "{upload_url}"
timeout_ms = 2000
retry_max_secs = 2
"#
    )
}

/// An export as `token` with `query` (the text after `?`, sent as given).
async fn get_export(h: &Harness, token: Option<&str>, query: &str) -> reqwest::Response {
    let mut request = h.client.get(format!("{}/api/export.csv?{query}", h.admin));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// A successful export's bytes, with the checks every export must pass: its headers, the
/// BOM, the header line, CRLF at the end.
async fn export_bytes(h: &Harness, token: &str, query: &str) -> Vec<u8> {
    let response = get_export(h, Some(token), query).await;
    assert_eq!(response.status(), StatusCode::OK, "?{query}");
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"customs179-requests-")
            && disposition.ends_with(".csv\""),
        "{disposition}"
    );
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers.contains_key("content-security-policy"), "the admin listener's headers are there");
    // Streamed: no length known up front.
    assert_eq!(headers.get("transfer-encoding").map(|v| v.to_str().unwrap()), Some("chunked"));
    assert!(!headers.contains_key("content-length"));
    let bytes = response.bytes().await.unwrap().to_vec();
    assert!(bytes.starts_with(BOM), "a UTF-8 BOM first, for Excel");
    assert!(bytes[BOM.len()..].starts_with(format!("{HEADER}\r\n").as_bytes()), "{:?}", head(&bytes));
    assert!(bytes.ends_with(b"\r\n"), "CRLF line ends, the last line too");
    bytes
}

fn head(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(400)]).into_owned()
}

/// The records after the header, as a CSV parser reads them, each by column name.
fn parse(bytes: &[u8]) -> Vec<BTreeMap<String, String>> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(&bytes[BOM.len()..]);
    let header: Vec<String> = reader.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header.join(","), HEADER);
    reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            assert_eq!(record.len(), header.len(), "{record:?}");
            header.iter().cloned().zip(record.iter().map(str::to_owned)).collect()
        })
        .collect()
}

/// What an id cell says: `="…"` (quotes doubled inside) or, too long for a formula, `'…`.
fn id(cell: &str) -> String {
    if let Some(inner) = cell.strip_prefix("=\"").and_then(|c| c.strip_suffix('"')) {
        assert!(!inner.replace("\"\"", "").contains('"'), "one string literal, nothing else: {cell:?}");
        inner.replace("\"\"", "\"")
    } else if let Some(text) = cell.strip_prefix('\'') {
        text.to_owned()
    } else {
        panic!("not an id cell: {cell:?}")
    }
}

/// No cell runs as a formula in a spreadsheet: a cell beginning with `=` is one string
/// literal (an id), and none begins with `+`, `-`, `@`, a tab or a CR.
fn assert_inert(rows: &[BTreeMap<String, String>]) {
    for row in rows {
        for (column, cell) in row {
            if cell.starts_with('=') {
                id(cell);
            }
            assert!(!cell.starts_with(['+', '-', '@', '\t', '\r']), "{column}: {cell:?} would run");
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmm+08:00`.
fn assert_shanghai_time(cell: &str) {
    let shape = cell.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 => b == b'-',
        10 => b == b'T',
        13 | 16 | 26 => b == b':',
        19 => b == b'.',
        23 => b == b'+',
        _ => b.is_ascii_digit(),
    });
    assert!(shape && cell.len() == 29 && cell.ends_with("+08:00"), "{cell:?}");
}

fn session_ids(rows: &[BTreeMap<String, String>]) -> Vec<String> {
    rows.iter().map(|row| id(&row["sessionID"])).collect()
}

/// The sessionIDs an export with `query` lists, in its order.
async fn exported(h: &Harness, query: &str) -> Vec<String> {
    session_ids(&parse(&export_bytes(h, ADMIN_TOKEN, query).await))
}

/// Percent-encodes a query value (`+` as `%2B`).
fn enc(text: &str) -> String {
    common::url_encode(text)
}

const NUMERIC: &str = "4200000000000000000001";
const HYPERLINK: &str = "=HYPERLINK(\"http://evil.example/\",\"click\")";
const CHINESE_SESSION: &str = "会话-中文";
const CHINESE_ORDER: &str = "订单,甲\"乙\"";
/// 2025-01-01T00:00:00.500 in Shanghai, still 2024-12-31 in UTC.
const NEW_YEAR_MS: i64 = 1_735_660_800_500;

both_stores! {
async fn the_export_opens_right_in_excel() {
    let card = tempfile::tempdir().unwrap();
    let eport = eport::start(EportSimOptions::new(loopback(), Algo::Sm2, PIN, card.path())).await.unwrap();
    let certs = tempfile::tempdir().unwrap();
    let customs = common::customs_registering(&eport, certs.path()).await;
    let h = Harness::start(&sections(&eport.ws_url(), &customs.upload_url()))
        .await
        .with_client_timeout(Duration::from_secs(20));

    // Delivered: customs asks, the platform pays, the card signs, customs stores.
    let delivered = [(NUMERIC, HYPERLINK, "T-1"), (CHINESE_SESSION, CHINESE_ORDER, "T-2")];
    for (session_id, order_no, _) in delivered {
        h.customs_call(order_no, session_id).await;
    }
    for (_, order_no, transaction) in delivered {
        h.platform_pays(transaction, &[order_no]).await;
    }
    // Waiting for payment data that never comes.
    let long_session = "1".repeat(300);
    let waiting: [(&str, &str); 9] = [
        ("0012345", "=1+2"),
        ("S-plus", "+86123"),
        ("S-minus", "-5"),
        ("S-at", "@SUM(A1)"),
        ("S-comma", "a,b"),
        ("S-quote", "say \"hi\""),
        // No id holds a line break (intake refuses it); the error below does.
        ("S-newline", "SO-newline"),
        ("@S=session+1", "SO-plain"),
        (&long_session, "SO-long"),
    ];
    for (session_id, order_no) in waiting {
        h.customs_call(order_no, session_id).await;
    }
    let mut details = HashMap::new();
    for (session_id, _, _) in delivered {
        details.insert(session_id, h.wait_for_state(session_id, "delivered", WAIT).await);
    }

    // The last error is text from customs and the platform; make it as hostile as such text
    // could be, and move one request to a known moment of the past (so it is late too).
    let errors = [
        ("S-minus", "=HYPERLINK(\"http://evil.example/\",\"x\")"),
        ("S-at", "+1"),
        ("S-plus", "-2+3"),
        ("S-quote", "@cmd"),
        ("S-newline", "a problem, \"quoted\"\r\nsecond line"),
    ];
    let mut sql: Vec<String> = errors
        .iter()
        .map(|(session_id, error)| {
            format!("UPDATE requests SET last_error = {} WHERE session_id = {}", sql_text(error), sql_text(session_id))
        })
        .collect();
    sql.push(format!(
        "UPDATE requests SET received_at = {NEW_YEAR_MS}, deadline_at = {} WHERE session_id = 'S-comma'",
        NEW_YEAR_MS + 120_000
    ));
    h.execute(&sql.join(";\n")).await;

    // A viewer may export; the CSV parser reads every request back.
    let bytes = export_bytes(&h, VIEWER, "").await;
    let rows = parse(&bytes);
    assert_eq!(rows.len(), delivered.len() + waiting.len(), "{}", String::from_utf8_lossy(&bytes));
    assert_inert(&rows);
    let by_session: HashMap<String, &BTreeMap<String, String>> =
        rows.iter().map(|row| (id(&row["sessionID"]), row)).collect();

    // Ids are text, exact, whatever they hold.
    assert_eq!(by_session[NUMERIC]["sessionID"], format!("=\"{NUMERIC}\""), "no 4.2E+21");
    assert_eq!(by_session["0012345"]["sessionID"], "=\"0012345\"", "leading zeros kept");
    assert_eq!(
        by_session[long_session.as_str()]["sessionID"],
        format!("'{long_session}"),
        "too long for =\"…\""
    );
    assert_eq!(by_session[NUMERIC]["orderNo"], "=\"=HYPERLINK(\"\"http://evil.example/\"\",\"\"click\"\")\"");
    assert_eq!(by_session["0012345"]["orderNo"], "=\"=1+2\"");
    assert_eq!(by_session["S-plus"]["orderNo"], "=\"+86123\"");
    assert_eq!(by_session["S-minus"]["orderNo"], "=\"-5\"");
    assert_eq!(by_session["S-at"]["orderNo"], "=\"@SUM(A1)\"");
    assert_eq!(by_session["@S=session+1"]["sessionID"], "=\"@S=session+1\"");
    for (session_id, order_no, _) in delivered {
        assert_eq!(id(&by_session[session_id]["orderNo"]), order_no);
    }
    for (session_id, order_no) in waiting {
        assert_eq!(id(&by_session[session_id]["orderNo"]), order_no, "{session_id}");
    }

    // Other texts: a leading = + - @ gets a ', the rest is as it was (quotes, commas, CRLF).
    for (session_id, error) in errors {
        let cell = &by_session[session_id]["last error"];
        if error.starts_with(['=', '+', '-', '@']) {
            assert_eq!(*cell, format!("'{error}"), "{session_id}");
        } else {
            assert_eq!(cell, error, "{session_id}");
        }
    }

    // Outcomes.
    let listed: HashMap<String, Value> = listed_requests(&h.client, &h.admin, ADMIN_TOKEN)
        .await
        .into_iter()
        .map(|r| (r["session_id"].as_str().unwrap().to_owned(), r))
        .collect();
    for (session_id, _, transaction) in delivered {
        let row = by_session[session_id];
        let detail = &details[session_id];
        assert_eq!(row["state"], "delivered");
        assert_eq!(row["late"], if detail["late"] == true { "yes" } else { "no" });
        // (The detail's `attempts` is its history; the list has the count.)
        assert_eq!(row["attempts"], listed[session_id]["step_attempts"].to_string());
        assert_eq!(row["customs answer"], "10000");
        assert_eq!(row["last error"], "");
        assert_eq!(id(&row["guid"]), detail["uploads"][0]["guid"].as_str().unwrap());
        assert_eq!(id(&row["certNo"]), eport.cert_no().as_str());
        assert_eq!(id(&row["payTransactionId"]), transaction);
        for column in ["received", "deadline", "delivered"] {
            assert_shanghai_time(&row[column]);
        }
        assert!(row["received"] <= row["delivered"], "{row:?}");
    }
    for (session_id, _) in waiting {
        let row = by_session[session_id];
        assert_eq!(row["state"], "waiting");
        for column in ["delivered", "customs answer", "guid", "certNo", "payTransactionId"] {
            assert_eq!(row[column], "", "{session_id}: {column}");
        }
        assert_shanghai_time(&row["received"]);
        assert_shanghai_time(&row["deadline"]);
        assert_eq!(row["late"], if session_id == "S-comma" { "yes" } else { "no" }, "{session_id}");
    }

    // Times in Shanghai with the offset: the first day of 2025 there, still 2024 in UTC.
    let new_year = by_session["S-comma"];
    assert_eq!(new_year["received"], "2025-01-01T00:00:00.500+08:00");
    assert_eq!(new_year["deadline"], "2025-01-01T00:02:00.500+08:00");

    // Oldest first.
    let received: Vec<&String> = rows.iter().map(|row| &row["received"]).collect();
    assert!(received.is_sorted(), "{received:?}");
    assert_eq!(id(&rows[0]["sessionID"]), "S-comma");

    // since (inclusive) and until (exclusive), in every accepted form.
    let all = session_ids(&rows);
    assert_eq!(exported(&h, "since=2025-01-01&until=2025-01-02").await, ["S-comma"]);
    assert!(exported(&h, "since=2024-12-31&until=2025-01-01").await.is_empty(), "dates are Shanghai's");
    assert_eq!(exported(&h, &format!("until={}", NEW_YEAR_MS + 1)).await, ["S-comma"]);
    assert!(exported(&h, &format!("until={NEW_YEAR_MS}")).await.is_empty(), "until is exclusive");
    assert_eq!(exported(&h, "until=2024-12-31T16:00:00.501Z").await, ["S-comma"]);
    assert_eq!(exported(&h, &format!("until={}", enc("2025-01-01T00:00:00.501+08:00"))).await, ["S-comma"]);
    // A `+` sent unencoded arrives as a space, and is understood.
    assert_eq!(exported(&h, "until=2025-01-01T00:00:00.501+08:00").await, ["S-comma"]);
    assert_eq!(exported(&h, &format!("since={NEW_YEAR_MS}")).await, all);
    assert_eq!(exported(&h, &format!("since={}", NEW_YEAR_MS + 1)).await, all[1..]);
    assert!(exported(&h, &format!("since={NEW_YEAR_MS}&until={NEW_YEAR_MS}")).await.is_empty());
    // A received time read from an export is a bound of the next one.
    let received_at: HashMap<&String, i64> =
        listed.iter().map(|(session_id, r)| (session_id, r["received_at"].as_i64().unwrap())).collect();
    let (from, to) = (&rows[3], &rows[7]);
    let (from_ms, to_ms) = (received_at[&id(&from["sessionID"])], received_at[&id(&to["sessionID"])]);
    let expected: Vec<String> =
        all.iter().filter(|s| (from_ms..to_ms).contains(&received_at[*s])).cloned().collect();
    assert!(!expected.is_empty());
    let query = format!("since={}&until={}", enc(&from["received"]), enc(&to["received"]));
    assert_eq!(exported(&h, &query).await, expected);
    assert_eq!(exported(&h, &format!("since={}&until={to_ms}", enc(&from["received"]))).await, expected);
    let empty = export_bytes(&h, ADMIN_TOKEN, "since=2099-01-01").await;
    assert_eq!(empty, [BOM, format!("{HEADER}\r\n").as_bytes()].concat(), "the header alone");
    assert_eq!(exported(&h, "since=&until=").await, all, "blank is absent");

    // What is not a time is refused with the reason; so are a range backwards and strangers.
    for (query, reason) in [
        ("since=yesterday", "since \"yesterday\" is not a time"),
        ("until=2026-02-30", "no day 30 in 2026-02"),
        ("since=2026-13-01", "no month 13"),
        ("since=2026-12-01T08:00:00", "no offset"),
        ("since=2026-12-01T08:00:00.5", "no offset"),
        ("until=1.5e12", "until \"1.5e12\" is not a time"),
        ("since=2026-12-02&until=2026-12-01", "is after until"),
        ("from=2026-12-01", "from"),
    ] {
        let response = get_export(&h, Some(VIEWER), query).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let text = response.text().await.unwrap();
        let error: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        let message = error["error"].as_str().or(error.as_str()).unwrap_or_default().to_owned();
        assert!(message.contains(reason), "{query}: {error}");
    }

    // No token, no data.
    assert_eq!(get_export(&h, None, "").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(get_export(&h, Some("not-a-token-at-all-0000"), "").await.status(), StatusCode::UNAUTHORIZED);

    h.stop().await;
    customs.stop().await;
    eport.stop().await;
}
}

both_stores! {
/// More requests than one page: each comes once, in order, ties on the millisecond broken by
/// sessionID, across page boundaries and with a range.
async fn a_long_export_streams_page_by_page() {
    let h = Harness::start(&sections("ws://127.0.0.1:9/", "http://127.0.0.1:9/")).await;
    const N: i64 = 2_345;
    let base = 1_780_000_000_000;
    // Three requests per millisecond, in one statement.
    let rows: Vec<String> = (0..N)
        .map(|i| {
            let at = base + i / 3;
            format!("('B-{i:05}', 'SO-{i}', '{{}}', {at}, {at}, {}, 'failed', {at}, {at}, 'no payment data', {at})", at + 120_000)
        })
        .collect();
    h.execute(&format!(
        "INSERT INTO requests (session_id, order_no, open_req, customs_time, received_at, deadline_at,
                               state, waiting_since, next_attempt_at, last_error, updated_at)
         VALUES {}",
        rows.join(", ")
    ))
    .await;

    let rows = parse(&export_bytes(&h, VIEWER, "").await);
    let expected: Vec<String> = (0..N).map(|i| format!("B-{i:05}")).collect();
    assert_eq!(session_ids(&rows), expected);
    assert_inert(&rows);
    assert!(rows.iter().all(|row| row["state"] == "failed" && row["late"] == "no"));

    let ranged = exported(&h, &format!("since={}&until={}", base + 100, base + 600)).await;
    assert_eq!(ranged, expected[300..1800]);
    h.stop().await;
}
}
