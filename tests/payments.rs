//! The payments API, request matching and the puller, through real sockets
//! and a real SQLite file: the service runs in-process, customs' calls go to
//! its intake, the platform's records to its admin listener.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus, Uri};
use customs179_core::PreSign;
use reqwest::StatusCode;
use serde_json::{Value, json};

mod common;

use common::{ADMIN_TOKEN, EBP_CODE, Harness, payment_record as record};

const PAYMENTS_TOKEN: &str = "payments-token-0123456789";
const PULL_TOKEN: &str = "pull-secret-token";

/// Starts a service whose `[payments]` section holds `payments` (TOML lines).
async fn start(payments: &str) -> Harness {
    Harness::start(&format!(
        r#"
[signer]
# Nothing listens there: requests stay "ready", never signed.
url = "ws://127.0.0.1:1/"
pin = "12345678"

[customs]
environment = "test"

[payments]
{payments}
"#
    ))
    .await
}

impl Harness {
    async fn post_payments_as(&self, token: Option<&str>, body: impl Into<String>) -> (StatusCode, Value) {
        self.post_as(token, "/api/payments", body).await
    }

    async fn post_payments(&self, body: impl Into<String>) -> (StatusCode, Value) {
        self.push_payments(body).await
    }
}

/// The problems of a 422 answer as (pointer, message) pairs.
fn problems(body: &Value) -> Vec<(String, String)> {
    body["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems list in {body}"))
        .iter()
        .map(|p| {
            let pointer = p["pointer"].as_str().unwrap_or_else(|| panic!("no pointer in {p}"));
            let message = p["message"].as_str().unwrap_or_else(|| panic!("no message in {p}"));
            assert!(!message.is_empty(), "{p}");
            (pointer.to_owned(), message.to_owned())
        })
        .collect()
}

fn has_pointer(problems: &[(String, String)], pointer: &str) -> bool {
    problems.iter().any(|(p, _)| p == pointer)
}

fn stored(stored: u64, unchanged: u64) -> Value {
    json!({"stored": stored, "unchanged": unchanged})
}

/// Checks an upload's guid and pre-sign string; returns the guid.
fn check_upload(detail: &Value, session_id: &str, orders: &[&str]) -> String {
    let uploads = detail["uploads"].as_array().unwrap();
    assert_eq!(uploads.len(), 1, "{detail:#}");
    let upload = &uploads[0];
    let guid = upload["guid"].as_str().unwrap().to_owned();
    assert_eq!(guid.chars().count(), 36, "{guid}");
    assert!(!guid.chars().any(char::is_lowercase), "{guid}");
    assert!(guid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{guid}");
    let text = upload["presign"].as_str().unwrap();
    let presign = PreSign::parse(text).unwrap();
    assert!(text.contains(&format!("\"sessionID\":\"{session_id}\"")), "{text}");
    assert_eq!(presign.session_id(), session_id);
    assert!(presign.head_json().contains(&format!("\"ebpCode\":\"{EBP_CODE}\"")), "{text}");
    assert!(presign.head_json().contains(&format!("\"guid\":\"{guid}\"")), "{text}");
    assert_eq!(presign.service_time(), upload["service_time"].to_string());
    for order_no in orders {
        assert!(presign.lists_json().contains(&format!("\"orderNo\":\"{order_no}\"")), "{text}");
    }
    assert!(!detail["payment"].is_null(), "{detail:#}");
    guid
}

/// When the request's "prepare" attempt was recorded (ms).
fn prepared_at(detail: &Value) -> i64 {
    detail["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["step"] == "prepare")
        .unwrap_or_else(|| panic!("no prepare attempt: {detail:#}"))["at"]
        .as_i64()
        .unwrap()
}

/// The preparer also sweeps every second; being prepared well within that
/// shows it was woken by the commit rather than found by a sweep.
const AT_ONCE_MS: i64 = 600;

both_stores! {
async fn tokens_are_required_and_the_payments_token_only_pushes() {
    let h = start(&format!("token = \"{PAYMENTS_TOKEN}\"")).await;
    let body = record("T-AUTH-1", &["SO-AUTH-1"]).to_string();

    for token in [None, Some("wrong-token-0123456789"), Some("")] {
        let (status, answer) = h.post_payments_as(token, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}: {answer}");
        let (status, _) = h.get_as(token, "/api/requests").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        let (status, _) = h.get_as(token, "/api/requests/S-AUTH").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
    }
    // Not a bearer token at all.
    let response = h
        .client
        .get(format!("{}/api/requests", h.admin))
        .header("authorization", format!("Basic {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let (status, answer) = h.post_payments_as(Some(PAYMENTS_TOKEN), body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer, stored(1, 0));
    let (status, _) = h.get_as(Some(PAYMENTS_TOKEN), "/api/requests").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = h.get_as(Some(PAYMENTS_TOKEN), "/api/requests/S-AUTH").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, answer) = h.post_payments_as(Some(ADMIN_TOKEN), body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer, stored(0, 1));
    let (status, page) = h.get_as(Some(ADMIN_TOKEN), "/api/requests").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["requests"], json!([]));
    h.stop().await;
}
}

both_stores! {
async fn invalid_bodies_are_refused_with_every_problem_and_store_nothing() {
    let h = start("max_body_bytes = 4096").await;
    let good = record("T-VAL-1", &["SO-VAL-1"]);

    // Several problems in one record, each with its pointer.
    let mut bad = good.clone();
    bad["payExchangeInfoHead"]["currency"] = json!("CNY");
    bad["payExchangeInfoHead"].as_object_mut().unwrap().remove("payCode");
    bad["payExchangeInfoLists"][0]["goodsInfo"][0]["gname"] = json!("");
    let (status, answer) = h.post_payments(bad.to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let found = problems(&answer);
    assert_eq!(found.len(), 3, "{answer:#}");
    for pointer in [
        "/payExchangeInfoHead/currency",
        "/payExchangeInfoHead/payCode",
        "/payExchangeInfoLists/0/goodsInfo/0/gname",
    ] {
        assert!(has_pointer(&found, pointer), "{pointer} not in {answer:#}");
    }

    // In an array, pointers start with the record's index; the good first
    // record is not stored either.
    let (status, answer) = h.post_payments(json!([good, bad]).to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let found = problems(&answer);
    assert_eq!(found.len(), 3, "{answer:#}");
    assert!(found.iter().all(|(p, _)| p.starts_with("/1/")), "{answer:#}");
    assert!(has_pointer(&found, "/1/payExchangeInfoHead/currency"), "{answer:#}");
    assert!(has_pointer(&found, "/1/payExchangeInfoLists/0/goodsInfo/0/gname"), "{answer:#}");

    // A guid is the service's to make, for every upload.
    let mut with_guid = good.clone();
    with_guid["payExchangeInfoHead"]["guid"] = json!("0D7B3C2A-6F1E-4B8A-9C5D-2E4F6A8B0C1D");
    let (status, answer) = h.post_payments(with_guid.to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let found = problems(&answer);
    assert_eq!(found.len(), 1, "{answer:#}");
    assert_eq!(found[0].0, "/payExchangeInfoHead/guid");
    assert!(found[0].1.contains("a new guid is generated for every upload"), "{answer:#}");

    // Another platform's ebpCode.
    let mut other_ebp = good.clone();
    other_ebp["payExchangeInfoHead"]["ebpCode"] = json!("OTHER0000001");
    let (status, answer) = h.post_payments(other_ebp.to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let found = problems(&answer);
    assert_eq!(found.len(), 1, "{answer:#}");
    assert_eq!(found[0].0, "/payExchangeInfoHead/ebpCode");
    assert!(found[0].1.contains(EBP_CODE), "{answer:#}");

    // A NUL in an id or a free text (PostgreSQL's text cannot hold one; neither store takes it).
    let mut with_nul = good.clone();
    with_nul["payExchangeInfoLists"][0]["orderNo"] = json!("SO-VAL-1\u{0}");
    with_nul["payExchangeInfoHead"]["note"] = json!("note\u{0}");
    let (status, answer) = h.post_payments(with_nul.to_string()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let found = problems(&answer);
    assert_eq!(found.len(), 2, "{answer:#}");
    assert!(found.iter().all(|(_, message)| message.contains("NUL character")), "{answer:#}");
    assert!(has_pointer(&found, "/payExchangeInfoLists/0/orderNo"), "{answer:#}");

    // Not JSON, nothing at all, an empty array.
    for body in ["this is not json", "", "[]", "{\"payExchangeInfoHead\":"] {
        let (status, answer) = h.post_payments(body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body:?}: {answer}");
        let found = problems(&answer);
        assert_eq!(found.len(), 1, "{body:?}: {answer:#}");
        assert_eq!(found[0].0, "", "{body:?}: {answer:#}");
    }

    // Over [payments] max_body_bytes: well-formed, but too large.
    let copies: Vec<Value> = (0..12).map(|_| good.clone()).collect();
    let large = json!(copies).to_string();
    assert!(large.len() > 4096, "{}", large.len());
    let (status, answer) = h.post_payments(large).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");

    // None of the above stored anything.
    let (status, answer) = h.post_payments(good.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer, stored(1, 0));
    h.stop().await;
}
}

both_stores! {
async fn storing_a_record_again_changes_nothing() {
    let h = start("").await;
    let first = record("T-IDEM-1", &["SO-IDEM-1"]);
    let second = record("T-IDEM-2", &["SO-IDEM-2"]);

    let (status, answer) = h.post_payments(first.to_string()).await;
    assert_eq!((status, answer), (StatusCode::CREATED, stored(1, 0)));
    let (status, answer) = h.post_payments(first.to_string()).await;
    assert_eq!((status, answer), (StatusCode::OK, stored(0, 1)));
    // The same record written differently (the amount as the string "88.50") is the same record.
    let reworded = first.to_string().replace("\"totalAmount\":88.5", "\"totalAmount\":\"88.50\"");
    assert_ne!(reworded, first.to_string());
    let (status, answer) = h.post_payments(reworded).await;
    assert_eq!((status, answer), (StatusCode::OK, stored(0, 1)));

    let (status, answer) = h.post_payments(json!([first, second]).to_string()).await;
    assert_eq!((status, answer), (StatusCode::CREATED, stored(1, 1)));
    // Whitespace around the array is JSON like any other.
    let (status, answer) = h.post_payments(format!("\n  {}\n", json!([second, first]))).await;
    assert_eq!((status, answer), (StatusCode::OK, stored(0, 2)));
    h.stop().await;
}
}

both_stores! {
async fn conflicting_records_are_refused_all_or_nothing() {
    let h = start("").await;
    let paid = record("T-CONF-1", &["SO-CONF-1"]);
    let (status, answer) = h.post_payments(paid.to_string()).await;
    assert_eq!((status, answer), (StatusCode::CREATED, stored(1, 0)));

    // The same payment with other content.
    let mut changed = paid.clone();
    changed["payExchangeInfoHead"]["totalAmount"] = json!(99);
    let (status, answer) = h.post_payments(changed.to_string()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let conflicts = answer["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{answer}");
    assert!(conflicts[0].as_str().unwrap().contains("T-CONF-1"), "{answer}");

    // Another payment for an order already paid.
    let double = record("T-CONF-2", &["SO-CONF-1"]);
    let (status, answer) = h.post_payments(double.to_string()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let conflicts = answer["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{answer}");
    let conflict = conflicts[0].as_str().unwrap();
    assert!(conflict.contains("SO-CONF-1") && conflict.contains("T-CONF-1"), "{answer}");

    // All or nothing: a fine new record next to a conflicting one is not stored.
    let fine = record("T-CONF-3", &["SO-CONF-3"]);
    let (status, answer) = h.post_payments(json!([fine, double]).to_string()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let (status, answer) = h.post_payments(json!([fine, changed]).to_string()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let (status, answer) = h.post_payments(fine.to_string()).await;
    assert_eq!((status, answer), (StatusCode::CREATED, stored(1, 0)));

    // The refused payment's order was not taken either: it can still be
    // paid, and the first payment still stands as it was.
    let (status, answer) = h.post_payments(paid.to_string()).await;
    assert_eq!((status, answer), (StatusCode::OK, stored(0, 1)));
    h.stop().await;
}
}

both_stores! {
async fn requests_are_prepared_the_moment_their_record_is_there() {
    let h = start("").await;

    // The request first: it waits, then is prepared when the record comes.
    h.customs_call("SO-MATCH-1", "S-MATCH-1").await;
    let detail = h.detail("S-MATCH-1").await;
    assert_eq!(detail["state"], "waiting", "{detail:#}");
    assert!(detail["payment"].is_null(), "{detail:#}");
    assert_eq!(detail["uploads"], json!([]));
    let posted_at = customs179_service::now_ms();
    let (status, answer) = h.post_payments(record("T-MATCH-1", &["SO-MATCH-1"]).to_string()).await;
    assert_eq!((status, answer), (StatusCode::CREATED, stored(1, 0)));
    let detail = h.wait_for_state("S-MATCH-1", "ready", Duration::from_secs(2)).await;
    assert!(prepared_at(&detail) - posted_at < AT_ONCE_MS, "not prepared at once: {detail:#}");
    let first = check_upload(&detail, "S-MATCH-1", &["SO-MATCH-1"]);
    assert_eq!(detail["payment"]["payExchangeInfoHead"]["payTransactionId"], "T-MATCH-1");

    // The record first: the request is prepared as soon as it arrives.
    let (status, _) = h.post_payments(record("T-MATCH-2", &["SO-MATCH-2"]).to_string()).await;
    assert_eq!(status, StatusCode::CREATED);
    let asked_at = customs179_service::now_ms();
    h.customs_call("SO-MATCH-2", "S-MATCH-2").await;
    let detail = h.wait_for_state("S-MATCH-2", "ready", Duration::from_secs(2)).await;
    assert!(prepared_at(&detail) - asked_at < AT_ONCE_MS, "not prepared at once: {detail:#}");
    let second = check_upload(&detail, "S-MATCH-2", &["SO-MATCH-2"]);

    // One payment of two orders serves both requests, each with its own guid,
    // each upload listing both orders.
    let (status, _) = h.post_payments(record("T-MATCH-3", &["SO-MATCH-3A", "SO-MATCH-3B"]).to_string()).await;
    assert_eq!(status, StatusCode::CREATED);
    h.customs_call("SO-MATCH-3A", "S-MATCH-3A").await;
    h.customs_call("SO-MATCH-3B", "S-MATCH-3B").await;
    let both = ["SO-MATCH-3A", "SO-MATCH-3B"];
    let detail = h.wait_for_state("S-MATCH-3A", "ready", Duration::from_secs(2)).await;
    let third_a = check_upload(&detail, "S-MATCH-3A", &both);
    let detail = h.wait_for_state("S-MATCH-3B", "ready", Duration::from_secs(2)).await;
    let third_b = check_upload(&detail, "S-MATCH-3B", &both);

    let mut guids = vec![first, second, third_a, third_b];
    guids.sort();
    guids.dedup();
    assert_eq!(guids.len(), 4, "{guids:?}");

    let (status, page) = h.get_as(Some(ADMIN_TOKEN), "/api/requests?state=ready").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["requests"].as_array().unwrap().len(), 4, "{page:#}");
    let (_, page) = h.get_as(Some(ADMIN_TOKEN), "/api/requests?state=waiting").await;
    assert_eq!(page["requests"], json!([]), "{page:#}");
    h.stop().await;
}
}

both_stores! {
async fn a_request_whose_data_never_comes_is_given_up() {
    let h = start("give_up_after_secs = 1").await;
    h.customs_call("SO-NEVER-1", "S-NEVER-1").await;
    assert_eq!(h.detail("S-NEVER-1").await["state"], "waiting");
    let detail = h.wait_for_state("S-NEVER-1", "failed", Duration::from_secs(10)).await;
    let error = detail["last_error"].as_str().unwrap_or_else(|| panic!("{detail:#}"));
    assert!(error.contains("no payment data"), "{error}");
    assert_eq!(detail["uploads"], json!([]));

    // Data that comes too late does not revive it.
    let (status, _) = h.post_payments(record("T-NEVER-1", &["SO-NEVER-1"]).to_string()).await;
    assert_eq!(status, StatusCode::CREATED);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.detail("S-NEVER-1").await["state"], "failed");
    h.stop().await;
}
}

/// A stand-in for the platform's pull URL: answers what the test says, and
/// remembers every call.
#[derive(Clone, Default)]
struct Platform(Arc<Mutex<PlatformState>>);

#[derive(Default)]
struct PlatformState {
    status: u16,
    body: String,
    /// (raw path and query, Authorization header) of every call.
    calls: Vec<(String, Option<String>)>,
}

impl Platform {
    /// Starts serving on a free port; returns the `pull_url` to configure.
    async fn start(status: u16, body: &str) -> (Platform, String) {
        let platform = Platform::default();
        platform.answer(status, body);
        let app = axum::Router::new().fallback(answer).with_state(platform.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (platform, format!("http://{addr}/orders/{{orderNo}}"))
    }

    fn answer(&self, status: u16, body: &str) {
        let mut state = self.0.lock().unwrap();
        state.status = status;
        state.body = body.to_owned();
    }

    fn calls(&self) -> Vec<(String, Option<String>)> {
        self.0.lock().unwrap().calls.clone()
    }
}

async fn answer(State(platform): State<Platform>, uri: Uri, headers: HeaderMap) -> (AxumStatus, String) {
    let mut state = platform.0.lock().unwrap();
    let authorization = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned());
    let path = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str()).to_owned();
    state.calls.push((path, authorization));
    (AxumStatus::from_u16(state.status).unwrap(), state.body.clone())
}

fn pull_config(pull_url: &str) -> String {
    format!("pull_url = \"{pull_url}\"\npull_interval_secs = 1\npull_token = \"{PULL_TOKEN}\"")
}

both_stores! {
async fn pulled_records_are_fetched_until_the_platform_has_them() {
    let (platform, pull_url) = Platform::start(404, "").await;
    let h = start(&pull_config(&pull_url)).await;
    let order_no = "SO 7/2024";
    h.customs_call(order_no, "S-PULL-1").await;

    let detail = h
        .wait_until("S-PULL-1", Duration::from_secs(10), |d| {
            d["last_error"].as_str().is_some_and(|e| e.contains("404"))
        })
        .await;
    assert_eq!(detail["state"], "waiting", "{detail:#}");
    // Let a few more 404s come: they are noted in last_error, never in the history.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let detail = h.detail("S-PULL-1").await;
    assert!(platform.calls().len() >= 2, "{:?}", platform.calls());
    assert_eq!(detail["attempts"].as_array().unwrap().len(), 0, "{detail:#}");

    platform.answer(200, &record("T-PULL-1", &[order_no]).to_string());
    let detail = h.wait_for_state("S-PULL-1", "ready", Duration::from_secs(10)).await;
    check_upload(&detail, "S-PULL-1", &[order_no]);
    assert_eq!(detail["payment"]["payExchangeInfoHead"]["payTransactionId"], "T-PULL-1");

    let calls = platform.calls();
    assert!(calls.len() >= 2, "{calls:?}");
    for (path, authorization) in &calls {
        assert_eq!(path, "/orders/SO%207%2F2024");
        assert_eq!(authorization.as_deref(), Some(format!("Bearer {PULL_TOKEN}").as_str()));
    }
    // Stored as if pushed: pushing it again changes nothing.
    let (status, answer) = h.post_payments(record("T-PULL-1", &[order_no]).to_string()).await;
    assert_eq!((status, answer), (StatusCode::OK, stored(0, 1)));
    h.stop().await;
}
}

both_stores! {
async fn an_invalid_pulled_record_fails_the_request() {
    let mut invalid = record("T-PULL-2", &["SO-PULL-2"]);
    invalid["payExchangeInfoHead"]["currency"] = json!("CNY");
    invalid["payExchangeInfoLists"][0]["goodsInfo"][0]["gname"] = json!("");
    let (platform, pull_url) = Platform::start(200, &invalid.to_string()).await;
    let h = start(&pull_config(&pull_url)).await;
    h.customs_call("SO-PULL-2", "S-PULL-2").await;

    let detail = h.wait_for_state("S-PULL-2", "failed", Duration::from_secs(10)).await;
    let error = detail["last_error"].as_str().unwrap();
    assert!(error.contains("/payExchangeInfoHead/currency"), "{error}");
    assert!(error.contains("/payExchangeInfoLists/0/goodsInfo/0/gname"), "{error}");
    assert_eq!(detail["uploads"], json!([]));
    assert_eq!(platform.calls().len(), 1);
    // Nothing of it was stored.
    let (status, answer) = h.post_payments(record("T-PULL-2", &["SO-PULL-2"]).to_string()).await;
    assert_eq!((status, answer), (StatusCode::CREATED, stored(1, 0)));
    h.stop().await;
}
}

both_stores! {
async fn a_failing_platform_is_asked_again() {
    let (platform, pull_url) = Platform::start(500, "internal error").await;
    let h = start(&pull_config(&pull_url)).await;
    h.customs_call("SO-PULL-3", "S-PULL-3").await;

    let detail = h
        .wait_until("S-PULL-3", Duration::from_secs(10), |d| {
            d["last_error"].as_str().is_some_and(|e| e.contains("500"))
        })
        .await;
    assert_eq!(detail["state"], "waiting", "{detail:#}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while platform.calls().len() < 2 {
        assert!(Instant::now() < deadline, "not asked again: {:?}", platform.calls());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.detail("S-PULL-3").await["state"], "waiting");

    platform.answer(200, &record("T-PULL-3", &["SO-PULL-3"]).to_string());
    h.wait_for_state("S-PULL-3", "ready", Duration::from_secs(10)).await;
    h.stop().await;
}
}
