//! The intake endpoint customs calls (spec 1.1), through real sockets and a
//! real SQLite file: the service runs in-process, the test reads the database
//! itself.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use customs179_service::Service;
use customs179_service::config::Config;
use serde_json::Value;
use sqlx::Connection;
use tempfile::TempDir;

mod common;

use common::{TestDb, http_client, listed_requests, now_ms, open_db, stored_session_ids_in, url_encode};

const ADMIN_TOKEN: &str = "intake-tests-admin-token-0123456789";
const INTAKE_PATH: &str = "/platDataOpen";
const JSON_UTF8: &str = "application/json;charset=utf-8";

// ---------------------------------------------------------------------------
// Helpers.

/// A service's configuration: both listeners on free loopback ports, the
/// lines of `[store]`, and extra lines for `[intake]` and `[customs]`.
fn config_text(store: &str, intake: &str, customs: &str) -> String {
    format!(
        r#"
[intake]
listen = "127.0.0.1:0"
path = "{INTAKE_PATH}"
{intake}

[admin]
listen = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[store]
{store}

[enterprise]
ebp_code = "1234567890"

[signer]
pin = "88888888"

[customs]
environment = "test"
{customs}
"#
    )
}

/// A running service and its database: a SQLite file in its directory, or a PostgreSQL
/// schema when the test runs on PostgreSQL.
struct Running {
    service: Service,
    db: TestDb,
    _dir: TempDir,
}

impl Running {
    fn intake_url(&self) -> String {
        format!("http://{}{INTAKE_PATH}", self.service.intake_addr())
    }

    /// Every stored request: (session_id, order_no, received_at, deadline_at).
    async fn stored_requests(&self) -> Vec<(String, String, i64, i64)> {
        self.db
            .rows("SELECT session_id, order_no, received_at, deadline_at FROM requests ORDER BY session_id")
            .await
    }

    async fn count_requests(&self) -> i64 {
        self.db.rows::<(i64,)>("SELECT COUNT(*) FROM requests").await[0].0
    }
}

async fn start_service(store: &str, intake: &str, customs: &str) -> Service {
    let config = Config::from_toml_str(&config_text(store, intake, customs), std::iter::empty()).unwrap();
    Service::start(config).await.unwrap()
}

async fn start(intake: &str, customs: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("customs179.db");
    let (store, schema) = common::store_toml(&db).await;
    let service = start_service(&store, intake, customs).await;
    Running { service, db: TestDb { path: db, schema }, _dir: dir }
}

fn client() -> reqwest::Client {
    http_client(Some(Duration::from_secs(15)))
}

/// An `openReq` as customs sends it, serviceTime as a number.
fn open_req(session_id: &str, order_no: &str) -> String {
    serde_json::json!({ "orderNo": order_no, "sessionID": session_id, "serviceTime": now_ms() }).to_string()
}

/// What the service answered.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    /// The body as JSON (`Value::Null` when it is not JSON).
    json: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or_else(|| panic!("no string code in {self:?}"))
    }

    fn message(&self) -> &str {
        self.json["message"].as_str().unwrap_or_else(|| panic!("no string message in {self:?}"))
    }

    fn is_ok(&self) -> bool {
        self.status == 200 && self.json["code"] == "10000"
    }
}

async fn read_answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.bytes().await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer { status, content_type, json }
}

/// POSTs `openReq=<value>` as a form, as customs does.
async fn try_post_open_req(client: &reqwest::Client, url: &str, value: &str) -> reqwest::Result<Answer> {
    let response = client.post(url).form(&[("openReq", value)]).send().await?;
    Ok(read_answer(response).await)
}

async fn post_open_req(client: &reqwest::Client, url: &str, value: &str) -> Answer {
    try_post_open_req(client, url, value).await.unwrap()
}

/// POSTs raw bytes with the given Content-Type.
async fn post_raw(client: &reqwest::Client, url: &str, content_type: &str, body: Vec<u8>) -> Answer {
    let response = client.post(url).header("content-type", content_type).body(body).send().await.unwrap();
    read_answer(response).await
}

/// Asserts the exact shape of customs' success answer.
fn assert_accepted(answer: &Answer) {
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.content_type.as_deref(), Some(JSON_UTF8), "{answer:?}");
    assert_eq!(answer.code(), "10000", "{answer:?}");
    assert_eq!(answer.message(), "", "{answer:?}");
    let object = answer.json.as_object().unwrap();
    assert_eq!(object.len(), 3, "only code, message and serviceTime: {answer:?}");
    let service_time = answer.json["serviceTime"].as_i64().expect("serviceTime is a JSON integer");
    assert!((service_time - now_ms()).abs() < 10_000, "serviceTime {service_time} is not now: {answer:?}");
}

/// Asserts a refusal in customs' answer shape: a failure code, and a message.
fn assert_refused(answer: &Answer, status: u16, message_contains: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(answer.content_type.as_deref(), Some(JSON_UTF8), "{answer:?}");
    assert_eq!(answer.code(), "20000", "{answer:?}");
    assert!(
        answer.message().contains(message_contains),
        "the message should name the problem ({message_contains:?}): {answer:?}"
    );
    assert!(answer.json["serviceTime"].is_i64(), "{answer:?}");
}

/// Waits until `condition` holds, failing after `timeout`.
async fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------
// 1. The answer and the stored row.

both_stores! {
async fn a_well_formed_request_is_answered_10000_and_stored_with_its_deadline() {
    let running = start("", "deadline_secs = 77").await;
    let client = client();
    let value = r#"{"orderNo":"SO-1","sessionID":"fe2374-8fnejf97-32839218","serviceTime":1533271903898}"#;

    let before = now_ms();
    let response = client
        .post(running.intake_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("user-agent", "Apache-HttpClient/4.5.3 (Java/1.8.0_60)")
        .body(format!("openReq={}", url_encode(value)))
        .send()
        .await
        .unwrap();
    let answer = read_answer(response).await;
    let after = now_ms();
    assert_accepted(&answer);

    let rows: Vec<(String, String, String, i64, i64, i64, String)> = running
        .db
        .rows("SELECT session_id, order_no, open_req, customs_time, received_at, deadline_at, state FROM requests")
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (session_id, order_no, raw, customs_time, received_at, deadline_at, state) = &rows[0];
    assert_eq!(session_id, "fe2374-8fnejf97-32839218");
    assert_eq!(order_no, "SO-1");
    assert_eq!(raw, value, "openReq is kept exactly as received");
    assert_eq!(*customs_time, 1533271903898);
    assert!((before..=after).contains(received_at), "received_at {received_at} not in {before}..={after}");
    assert_eq!(*deadline_at, received_at + 77 * 1000);
    assert_eq!(state, "waiting");

    running.service.shutdown().await.unwrap();
}
}

// ---------------------------------------------------------------------------
// 2. Variants customs' clients send.

both_stores! {
async fn service_time_as_a_string_declared_charsets_and_unknown_orders_are_accepted() {
    let running = start("", "").await;
    let client = client();
    let url = running.intake_url();

    // serviceTime as a string of digits.
    let answer = post_open_req(
        &client,
        &url,
        r#"{"orderNo":"SO-2","sessionID":"S-string","serviceTime":"1533271903898"}"#,
    )
    .await;
    assert_accepted(&answer);

    // ISO-8859-1 declared, UTF-8 bytes sent, percent-encoded and raw: stored as UTF-8.
    let value = r#"{"orderNo":"订单1","sessionID":"S-latin1-encoded","serviceTime":1533271903898}"#;
    let answer = post_raw(
        &client,
        &url,
        "application/x-www-form-urlencoded; charset=ISO-8859-1",
        format!("openReq={}", url_encode(value)).into_bytes(),
    )
    .await;
    assert_accepted(&answer);
    let value = r#"{"orderNo":"订单1","sessionID":"S-latin1-raw","serviceTime":1533271903898}"#;
    let answer = post_raw(
        &client,
        &url,
        "application/x-www-form-urlencoded; charset=ISO-8859-1",
        format!("openReq={value}").into_bytes(),
    )
    .await;
    assert_accepted(&answer);

    // No charset and no Content-Type at all (customs' client may send neither).
    let value = open_req("S-no-content-type", "SO-3");
    let response = client.post(&url).body(format!("openReq={}", url_encode(&value))).send().await.unwrap();
    assert_accepted(&read_answer(response).await);

    let rows = running.stored_requests().await;
    let orders: Vec<(&str, &str)> = rows.iter().map(|r| (r.0.as_str(), r.1.as_str())).collect();
    assert_eq!(
        orders,
        [
            ("S-latin1-encoded", "订单1"),
            ("S-latin1-raw", "订单1"),
            ("S-no-content-type", "SO-3"),
            ("S-string", "SO-2")
        ]
    );
    let customs_time: Vec<(i64,)> = running.db.rows("SELECT customs_time FROM requests WHERE session_id = 'S-string'").await;
    assert_eq!(customs_time, [(1533271903898,)]);
    // No payment data exists for any of these orders: all answered 10000 anyway, all waiting.
    let payments: Vec<(i64,)> = running.db.rows("SELECT COUNT(*) FROM payments").await;
    assert_eq!(payments, [(0,)]);
    let states: Vec<(String,)> = running.db.rows("SELECT DISTINCT state FROM requests").await;
    assert_eq!(states, [("waiting".to_owned(),)]);

    running.service.shutdown().await.unwrap();
}
}

// ---------------------------------------------------------------------------
// 3. Malformed requests.

both_stores! {
async fn malformed_requests_are_refused_with_a_message_and_not_stored() {
    let running = start("", "").await;
    let client = client();
    let url = running.intake_url();
    let form = "application/x-www-form-urlencoded";

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("no openReq field", b"orderNo=SO1&sessionID=S1".to_vec(), "openReq is missing"),
        ("empty body", Vec::new(), "openReq is missing"),
        ("openReq twice", b"openReq=%7B%7D&openReq=%7B%7D".to_vec(), "more than once"),
        ("openReq not UTF-8", b"openReq=%FF".to_vec(), "not valid UTF-8"),
        ("openReq not JSON", b"openReq=orderNo%3DSO1".to_vec(), "not valid JSON"),
        (
            "openReq truncated JSON",
            format!("openReq={}", url_encode(r#"{"orderNo":"SO1""#)).into_bytes(),
            "not valid JSON",
        ),
        (
            "missing sessionID",
            format!("openReq={}", url_encode(r#"{"orderNo":"SO1","serviceTime":1533271903898}"#))
                .into_bytes(),
            "sessionID",
        ),
        (
            "missing orderNo",
            format!("openReq={}", url_encode(r#"{"sessionID":"S1","serviceTime":1533271903898}"#))
                .into_bytes(),
            "orderNo",
        ),
        (
            "missing serviceTime",
            format!("openReq={}", url_encode(r#"{"sessionID":"S1","orderNo":"SO1"}"#)).into_bytes(),
            "serviceTime",
        ),
        (
            "empty sessionID",
            format!("openReq={}", url_encode(r#"{"sessionID":"","orderNo":"SO1","serviceTime":1}"#))
                .into_bytes(),
            "sessionID is empty",
        ),
        (
            "empty orderNo",
            format!("openReq={}", url_encode(r#"{"sessionID":"S1","orderNo":"","serviceTime":1}"#))
                .into_bytes(),
            "orderNo is empty",
        ),
        (
            "serviceTime not digits",
            format!("openReq={}", url_encode(r#"{"sessionID":"S1","orderNo":"SO1","serviceTime":"x"}"#))
                .into_bytes(),
            "serviceTime",
        ),
        (
            // PostgreSQL's text cannot hold a NUL; no store takes an id with a control character.
            "a NUL in sessionID",
            format!("openReq={}", url_encode(r#"{"sessionID":"S\u0000x","orderNo":"SO1","serviceTime":1}"#))
                .into_bytes(),
            "sessionID holds a control character",
        ),
        (
            "a line break in orderNo",
            format!("openReq={}", url_encode(r#"{"sessionID":"S1","orderNo":"SO\n1","serviceTime":1}"#))
                .into_bytes(),
            "orderNo holds a control character",
        ),
        (
            "JSON array",
            format!("openReq={}", url_encode(r#"[{"sessionID":"S1","orderNo":"SO1","serviceTime":1}]"#))
                .into_bytes(),
            "must be a JSON object",
        ),
    ];
    for (what, body, message) in cases {
        let answer = post_raw(&client, &url, form, body).await;
        assert!((400..500).contains(&answer.status), "{what}: a client error expected: {answer:?}");
        assert_ne!(answer.json["code"], "10000", "{what}: {answer:?}");
        assert_refused(&answer, answer.status, message);
    }
    assert_eq!(running.count_requests().await, 0, "nothing malformed is stored");

    running.service.shutdown().await.unwrap();
}
}

// ---------------------------------------------------------------------------
// 4. The same sessionID twice.

both_stores! {
async fn a_repeated_session_id_is_answered_10000_and_stored_once() {
    let running = start("", "").await;
    let client = client();
    let url = running.intake_url();

    assert_accepted(&post_open_req(&client, &url, &open_req("S-dup", "SO-first")).await);
    assert_accepted(&post_open_req(&client, &url, &open_req("S-dup", "SO-second")).await);

    let rows = running.stored_requests().await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("S-dup", "SO-first"), "the first one is kept");

    running.service.shutdown().await.unwrap();
}
}

// ---------------------------------------------------------------------------
// 5. What is not a customs call.

both_stores! {
async fn other_paths_are_404_and_other_methods_405() {
    let running = start("", "").await;
    let client = client();
    let base = format!("http://{}", running.service.intake_addr());
    let form_body = format!("openReq={}", url_encode(&open_req("S-elsewhere", "SO1")));

    for path in ["/", "/platDataOpen/", "/platdataopen", "/other", "/api/requests"] {
        let response = client
            .post(format!("{base}{path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body.clone())
            .send()
            .await
            .unwrap();
        assert_refused(&read_answer(response).await, 404, "");
    }
    let response = client.get(running.intake_url()).send().await.unwrap();
    assert_refused(&read_answer(response).await, 405, "POST");
    let response = client.put(running.intake_url()).body(form_body).send().await.unwrap();
    assert_refused(&read_answer(response).await, 405, "POST");

    assert_eq!(running.count_requests().await, 0);
    running.service.shutdown().await.unwrap();
}
}

both_stores! {
async fn a_body_over_max_body_bytes_is_413_and_one_at_the_limit_is_accepted() {
    const LIMIT: usize = 256;
    let running = start(&format!("max_body_bytes = {LIMIT}"), "").await;
    let client = client();
    let url = running.intake_url();
    let form = "application/x-www-form-urlencoded";

    // A well-formed call padded with an unknown key to exactly `len` bytes.
    let body_of = |session_id: &str, len: usize| {
        let prefix =
            format!(r#"{{"orderNo":"SO1","sessionID":"{session_id}","serviceTime":1533271903898,"pad":""#);
        let bare = format!("openReq={}{}", url_encode(&prefix), url_encode(r#""}"#));
        assert!(bare.len() <= len);
        let value = format!(r#"{prefix}{}"}}"#, "x".repeat(len - bare.len()));
        let body = format!("openReq={}", url_encode(&value));
        assert_eq!(body.len(), len);
        body.into_bytes()
    };

    let answer = post_raw(&client, &url, form, body_of("S-at-limit", LIMIT)).await;
    assert_accepted(&answer);
    let answer = post_raw(&client, &url, form, body_of("S-over-limit", LIMIT + 1)).await;
    assert_refused(&answer, 413, "");
    let answer = post_raw(&client, &url, form, body_of("S-far-over-limit", 64 * 1024)).await;
    assert_refused(&answer, 413, "");

    assert_eq!(running.db.stored_session_ids().await, HashSet::from(["S-at-limit".to_owned()]));
    running.service.shutdown().await.unwrap();
}
}

both_stores! {
async fn callers_outside_allow_from_are_403_and_inside_are_served() {
    let client = client();

    let refusing = start(r#"allow_from = ["10.0.0.0/8"]"#, "").await;
    let answer = post_open_req(&client, &refusing.intake_url(), &open_req("S-refused", "SO1")).await;
    assert_refused(&answer, 403, "not allowed");
    // Refused before routing: other paths and methods too.
    let response =
        client.get(format!("http://{}/other", refusing.service.intake_addr())).send().await.unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(refusing.count_requests().await, 0);
    refusing.service.shutdown().await.unwrap();

    let allowing = start(r#"allow_from = ["10.0.0.0/8", "127.0.0.0/8"]"#, "").await;
    let answer = post_open_req(&client, &allowing.intake_url(), &open_req("S-allowed", "SO1")).await;
    assert_accepted(&answer);
    assert_eq!(allowing.db.stored_session_ids().await, HashSet::from(["S-allowed".to_owned()]));
    allowing.service.shutdown().await.unwrap();
}
}

both_stores! {
/// Behind a load balancer every connection comes from it: the caller is who its
/// `X-Forwarded-For` names, and only a trusted proxy's header counts.
async fn behind_a_trusted_proxy_allow_from_checks_the_forwarded_caller() {
    let client = client();
    let post_from = async |url: &str, session_id: &str, forwarded: Option<&str>| {
        let form = [("openReq", open_req(session_id, "SO1"))];
        let mut request = client.post(url).form(&form);
        if let Some(forwarded) = forwarded {
            request = request.header("X-Forwarded-For", forwarded);
        }
        read_answer(request.send().await.unwrap()).await
    };
    // The test's connections come from 127.0.0.1: here, the proxy.
    let proxied = start(
        r#"allow_from = ["203.0.113.0/24"]
trusted_proxies = ["127.0.0.1"]"#,
        "",
    )
    .await;
    let url = proxied.intake_url();
    assert_accepted(&post_from(&url, "S-customs", Some("203.0.113.7")).await);
    // What the caller wrote before the proxy's own entry proves nothing.
    assert_refused(
        &post_from(&url, "S-spoofed", Some("203.0.113.7, 198.51.100.9")).await,
        403,
        "not allowed",
    );
    assert_refused(&post_from(&url, "S-silent", None).await, 403, "not allowed");
    assert_refused(
        &post_from(&url, "S-garbled", Some("<script>alert(1)</script>")).await,
        403,
        "not allowed",
    );
    assert_eq!(proxied.db.stored_session_ids().await, HashSet::from(["S-customs".to_owned()]));
    proxied.service.shutdown().await.unwrap();

    // From a peer that is no trusted proxy, the header is anyone's: ignored.
    let direct = start(
        r#"allow_from = ["203.0.113.0/24"]
trusted_proxies = ["10.0.0.2"]"#,
        "",
    )
    .await;
    let answer = post_from(&direct.intake_url(), "S-forged", Some("203.0.113.7")).await;
    assert_refused(&answer, 403, "not allowed");
    assert_eq!(direct.count_requests().await, 0);
    direct.service.shutdown().await.unwrap();
}
}

// ---------------------------------------------------------------------------
// 6. Durable across a restart.

both_stores! {
async fn stored_requests_survive_a_restart_and_are_listed_by_the_admin_api() {
    const N: usize = 25;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("customs179.db");
    let (store, schema) = common::store_toml(&db).await;
    let client = client();

    let service = start_service(&store, "", "").await;
    let url = format!("http://{}{INTAKE_PATH}", service.intake_addr());
    let expected: HashSet<String> = (0..N).map(|i| format!("S-restart-{i}")).collect();
    for session_id in &expected {
        assert_accepted(&post_open_req(&client, &url, &open_req(session_id, "SO-restart")).await);
    }
    service.shutdown().await.unwrap();

    let service = start_service(&store, "", "").await;
    let admin = format!("http://{}", service.admin_addr());
    let listed = listed_requests(&client, &admin, ADMIN_TOKEN).await;
    let listed_ids: HashSet<String> =
        listed.iter().map(|r| r["session_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(listed_ids, expected);
    assert_eq!(listed.len(), N);
    for request in &listed {
        assert_eq!(request["state"], "waiting", "{request}");
        assert_eq!(request["order_no"], "SO-restart", "{request}");
    }
    // The admin API wants its token.
    let response = client.get(format!("{admin}/api/requests")).send().await.unwrap();
    assert_eq!(response.status(), 401);

    // And the restarted service takes new calls.
    let url = format!("http://{}{INTAKE_PATH}", service.intake_addr());
    assert_accepted(&post_open_req(&client, &url, &open_req("S-after-restart", "SO1")).await);
    service.shutdown().await.unwrap();
    assert_eq!(stored_session_ids_in(&db, schema.as_ref()).await.len(), N + 1);
}
}

// ---------------------------------------------------------------------------
// 7. Never 10000 for what could not be stored.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_cannot_be_written_is_503_never_10000() {
    let running = start("", "").await;
    let client = client();
    let url = running.intake_url();

    // The service's database must exist and be migrated before it is locked.
    assert_accepted(&post_open_req(&client, &url, &open_req("S-before-lock", "SO1")).await);

    let mut lock = open_db(&running.db.path).await;
    let exclusive = lock.begin_with("BEGIN EXCLUSIVE").await.unwrap();

    let started = Instant::now();
    let answer = post_open_req(&client, &url, &open_req("S-while-locked", "SO1")).await;
    let waited = started.elapsed();
    assert_refused(&answer, 503, "");
    assert!(!answer.message().is_empty(), "{answer:?}");
    assert!(waited >= Duration::from_millis(1500), "the write should wait for the lock first ({waited:?})");

    exclusive.commit().await.unwrap();
    lock.close().await.unwrap();

    assert_accepted(&post_open_req(&client, &url, &open_req("S-after-lock", "SO1")).await);
    assert_eq!(
        running.db.stored_session_ids().await,
        HashSet::from(["S-before-lock".to_owned(), "S-after-lock".to_owned()]),
        "the refused request must not be stored"
    );
    running.service.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------
// 8. Concurrency.

both_stores! {
async fn two_hundred_concurrent_requests_are_all_answered_and_stored() {
    const N: usize = 200;
    let running = start("", "").await;
    let client = client();
    let url = running.intake_url();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let session_id = format!("S-concurrent-{i:03}");
            let answer = post_open_req(&client, &url, &open_req(&session_id, &format!("SO-{i}"))).await;
            (session_id, answer)
        });
    }
    let mut answered = HashSet::new();
    while let Some(result) = tasks.join_next().await {
        let (session_id, answer) = result.unwrap();
        assert_accepted(&answer);
        answered.insert(session_id);
    }
    assert_eq!(answered.len(), N);
    assert_eq!(running.db.stored_session_ids().await, answered);

    running.service.shutdown().await.unwrap();
}
}

// ---------------------------------------------------------------------------
// 9. Graceful shutdown.

both_stores! {
async fn shutdown_keeps_every_request_answered_10000() {
    const SENDERS: usize = 8;
    let running = start("", "").await;
    let client = client();
    let url = running.intake_url();
    let answered_count = Arc::new(AtomicUsize::new(0));

    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..SENDERS {
        let (client, url, answered_count) = (client.clone(), url.clone(), answered_count.clone());
        senders.spawn(async move {
            let mut answered = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            for i in 0.. {
                if Instant::now() > deadline {
                    break;
                }
                let session_id = format!("S-shutdown-{sender}-{i}");
                match try_post_open_req(&client, &url, &open_req(&session_id, "SO1")).await {
                    Ok(answer) if answer.is_ok() => {
                        answered.push(session_id);
                        answered_count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(answer) => {
                        assert_ne!(answer.json["code"], "10000", "{answer:?}");
                        break;
                    }
                    Err(_) => break, // the service is gone
                }
            }
            answered
        });
    }

    wait_until("some answered requests", Duration::from_secs(10), || {
        answered_count.load(Ordering::Relaxed) >= 50
    })
    .await;
    tokio::time::timeout(Duration::from_secs(10), running.service.shutdown())
        .await
        .expect("shutdown finishes while calls are in flight")
        .unwrap();

    let mut answered = HashSet::new();
    while let Some(result) = senders.join_next().await {
        answered.extend(result.unwrap());
    }
    assert!(answered.len() >= 50, "{}", answered.len());
    let stored = running.db.stored_session_ids().await;
    let lost: Vec<&String> = answered.difference(&stored).collect();
    assert!(lost.is_empty(), "answered 10000 but not stored: {lost:?}");
}
}
