//! Alerts end to end: a service whose `[[alerts]]` point at a local receiver that plays the
//! webhook, WeCom, DingTalk and Feishu robots, checks each body and signature as the robots
//! would (with the formulas of their documentation, computed here), and answers as the test
//! tells it at runtime. One alert per condition and one all-clear; a failing channel retried
//! without delaying signing; an alert pending at a SIGKILL delivered after the restart; the
//! certificate's expiry and an unreachable signer told; no secret anywhere at trace level.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use customs179_sim::eport::{self, Algo, EportSimOptions};
use customs179_sim::keys::CertValidity;
use hmac::{KeyInit as _, Mac as _};
use serde_json::{Value, json};

mod common;

use common::serve::ServeProcess;
use common::{ADMIN_TOKEN, Harness, closed_port, eventually, free_addr};

const WAIT: Duration = Duration::from_secs(30);
const HOOK_SECRET: &str = "hook-secret-5f1e9c";
const WECOM_KEY: &str = "wecom-key-77aa31";
const DING_TOKEN: &str = "ding-token-42bd0e";
const DING_SECRET: &str = "SECding-secret-91c3";
const FEISHU_HOOK: &str = "feishu-hook-0c7f62";
const FEISHU_SECRET: &str = "feishu-secret-3a8d";
const SECRETS: [&str; 6] = [HOOK_SECRET, WECOM_KEY, DING_TOKEN, DING_SECRET, FEISHU_HOOK, FEISHU_SECRET];

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// How the receiver answers a channel.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Ok,
    Status(u16),
    /// HTTP 200 with a non-zero errcode (code for Feishu), and an errmsg that echoes the
    /// robot's key, as a hostile or careless robot might.
    Refuse,
}

/// One message the receiver took, checked.
#[derive(Clone, Debug)]
struct Received {
    channel: String,
    /// The message's text (the webhook's `text`).
    text: String,
    /// The webhook's JSON alert.
    alert: Option<Value>,
}

#[derive(Default)]
struct Inbox {
    answers: HashMap<String, Answer>,
    /// Every request, whatever was answered.
    attempts: Vec<String>,
    /// The ones answered with success.
    delivered: Vec<Received>,
    problems: Vec<String>,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Inbox>>);

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let receiver = Receiver::default();
        let app =
            Router::new().route("/{channel}/{key}", axum::routing::post(take)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, addr)
    }

    fn answer(&self, channel: &str, answer: Answer) {
        self.0.lock().unwrap().answers.insert(channel.to_owned(), answer);
    }

    fn delivered(&self) -> Vec<Received> {
        let inbox = self.0.lock().unwrap();
        assert!(inbox.problems.is_empty(), "the receiver found problems: {:#?}", inbox.problems);
        inbox.delivered.clone()
    }

    fn attempts(&self, channel: &str) -> usize {
        self.0.lock().unwrap().attempts.iter().filter(|c| *c == channel).count()
    }

    /// Waits until `n` messages were delivered to `channel`; returns them.
    async fn wait_for(&self, channel: &str, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got: Vec<Received> = self.delivered().into_iter().filter(|r| r.channel == channel).collect();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{channel}: {} of {n} message(s) within {within:?}: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Checks one request as its robot would, records it, and answers as told.
async fn take(
    State(receiver): State<Receiver>,
    Path((channel, key)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let checked = check(&channel, &key, &query, &headers, &body);
    let mut inbox = receiver.0.lock().unwrap();
    inbox.attempts.push(channel.clone());
    let answer = inbox.answers.get(&channel).copied().unwrap_or(Answer::Ok);
    let received = match checked {
        Ok(received) => received,
        Err(problem) => {
            inbox.problems.push(format!("{channel}: {problem}"));
            return (StatusCode::BAD_REQUEST, "refused".into());
        }
    };
    let (ok, fail) = if channel == "feishu" {
        (
            json!({"code": 0, "msg": "success"}),
            json!({"code": 19021, "msg": format!("sign match fail: {key}")}),
        )
    } else {
        (
            json!({"errcode": 0, "errmsg": "ok"}),
            json!({"errcode": 310000, "errmsg": format!("keywords not in content, key {key}")}),
        )
    };
    match answer {
        Answer::Ok => {
            inbox.delivered.push(received);
            (StatusCode::OK, ok.to_string())
        }
        Answer::Status(status) => (StatusCode::from_u16(status).unwrap(), format!("down, key {key}")),
        Answer::Refuse => (StatusCode::OK, fail.to_string()),
    }
}

fn check(
    channel: &str,
    key: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Received, String> {
    let json: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let now = common::now_ms();
    let text_of =
        |json: &Value, pointer: &str| json.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
    let received = |text: Option<String>, alert: Option<Value>| {
        let text = text.ok_or_else(|| format!("no text in {json}"))?;
        Ok(Received { channel: channel.to_owned(), text, alert })
    };
    match channel {
        "webhook" => {
            let signature = headers.get("x-customs179-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
            let expected: String =
                hmac(HOOK_SECRET.as_bytes(), body).iter().map(|b| format!("{b:02x}")).collect();
            if signature != format!("sha256={expected}") {
                return Err(format!("bad signature {signature:?}"));
            }
            received(text_of(&json, "/text"), Some(json["alert"].clone()))
        }
        "wecom" => {
            if key != WECOM_KEY {
                return Err("wrong key".into());
            }
            if json["msgtype"] != "text" {
                return Err(format!("not a text message: {json}"));
            }
            let text = text_of(&json, "/text/content");
            if text.as_ref().is_some_and(|t| t.len() > 2_048) {
                return Err("longer than 2,048 bytes".into());
            }
            received(text, None)
        }
        "dingtalk" => {
            let timestamp: i64 = query.get("timestamp").and_then(|t| t.parse().ok()).ok_or("no timestamp")?;
            if (now - timestamp).abs() > 60_000 {
                return Err(format!("timestamp {timestamp} is not now"));
            }
            // Axum's Query has already URL-decoded the sign.
            let expected = base64::engine::general_purpose::STANDARD
                .encode(hmac(DING_SECRET.as_bytes(), format!("{timestamp}\n{DING_SECRET}").as_bytes()));
            if query.get("sign") != Some(&expected) || key != DING_TOKEN {
                return Err(format!("bad sign {:?}", query.get("sign")));
            }
            received(text_of(&json, "/text/content"), None)
        }
        "feishu" => {
            let timestamp: i64 =
                text_of(&json, "/timestamp").and_then(|t| t.parse().ok()).ok_or("no timestamp")?;
            if (now / 1000 - timestamp).abs() > 60 {
                return Err(format!("timestamp {timestamp} is not now"));
            }
            let expected = base64::engine::general_purpose::STANDARD
                .encode(hmac(format!("{timestamp}\n{FEISHU_SECRET}").as_bytes(), b""));
            if json["sign"] != expected.as_str() || json["msg_type"] != "text" || key != FEISHU_HOOK {
                return Err(format!("bad sign or type: {json}"));
            }
            received(text_of(&json, "/content/text"), None)
        }
        other => Err(format!("unknown channel {other}")),
    }
}

/// `[[alerts]]` for the four HTTP channels at `receiver`, and thresholds that keep the
/// conditions the test does not drive quiet.
fn channels(receiver: SocketAddr, extra_alerting: &str) -> String {
    format!(
        r#"
[alerting]
signer_unreachable_secs = 3600
{extra_alerting}

[[alerts]]
kind = "webhook"
url = "http://{receiver}/webhook/hook"
secret = "{HOOK_SECRET}"
language = "en"

[[alerts]]
kind = "wecom"
url = "http://{receiver}/wecom/{WECOM_KEY}"

[[alerts]]
kind = "dingtalk"
url = "http://{receiver}/dingtalk/{DING_TOKEN}?access_token={DING_TOKEN}"
secret = "{DING_SECRET}"

[[alerts]]
kind = "feishu"
url = "http://{receiver}/feishu/{FEISHU_HOOK}"
secret = "{FEISHU_SECRET}"
"#
    )
}

/// A signer nobody answers at, and customs that is never reached.
fn unreachable_card_and_customs() -> String {
    format!(
        "[signer]\nurl = \"ws://127.0.0.1:{}/\"\npin = \"1\"\n[customs]\nenvironment = \"test\"\n\
         upload_url = \"http://127.0.0.1:{}/upload\"\n",
        closed_port(),
        closed_port()
    )
}

const HTTP_CHANNELS: [&str; 4] = ["webhook", "wecom", "dingtalk", "feishu"];

both_stores! {
async fn every_channel_gets_one_alert_per_condition_and_one_all_clear() {
    let (receiver, addr) = Receiver::start().await;
    let h = Harness::start(&format!("{}{}", unreachable_card_and_customs(), channels(addr, ""))).await;
    let (status, _) =
        h.post("/api/control/signing/pause", json!({"reason": "card swap at 3 a.m."}).to_string()).await;
    assert_eq!(status, 200);
    for channel in HTTP_CHANNELS {
        let got = receiver.wait_for(channel, 1, WAIT).await;
        assert!(got[0].text.contains("card swap at 3 a.m. (paused by admin)"), "{channel}: {}", got[0].text);
    }
    let webhook = &receiver.wait_for("webhook", 1, WAIT).await[0];
    assert!(webhook.text.contains("CRITICAL: signing is paused"), "in English: {}", webhook.text);
    let alert = webhook.alert.as_ref().unwrap();
    assert_eq!((alert["kind"].as_str(), alert["event"].as_str()), (Some("signing_paused"), Some("raised")));
    assert_eq!(alert["source"], common::EBP_CODE);
    let wecom = &receiver.wait_for("wecom", 1, WAIT).await[0];
    assert!(wecom.text.contains("严重: 加签已暂停"), "in Chinese by default: {}", wecom.text);

    // It lasts: nothing more is sent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.delivered().len(), 4, "{:#?}", receiver.delivered());

    let (status, _) = h.post("/api/control/signing/resume", "{}").await;
    assert_eq!(status, 200);
    for channel in HTTP_CHANNELS {
        let got = receiver.wait_for(channel, 2, WAIT).await;
        assert_eq!(got.len(), 2, "{channel}: {got:#?}");
    }
    let cleared = receiver.wait_for("webhook", 2, WAIT).await[1].clone();
    assert!(cleared.text.contains("RESOLVED: signing has resumed"), "{}", cleared.text);
    assert_eq!(cleared.alert.unwrap()["event"], "cleared");

    // A receiver has the message before the service has written down its answer.
    let all_sent = json!([
        {"channel": "dingtalk", "state": "sent"},
        {"channel": "feishu", "state": "sent"},
        {"channel": "webhook", "state": "sent"},
        {"channel": "wecom", "state": "sent"}
    ]);
    let alerts = eventually("every delivery recorded as sent", WAIT, || async {
        let alerts = h.get("/api/alerts").await;
        let listed = alerts["alerts"].as_array().cloned().unwrap_or_default();
        let recorded = listed.len() == 2
            && listed.iter().all(|alert| {
                let states: Vec<Value> = alert["deliveries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| json!({"channel": d["channel"], "state": d["state"]}))
                    .collect();
                Value::Array(states) == all_sent
            });
        if recorded { Ok(alerts) } else { Err(format!("{alerts:#}")) }
    })
    .await;
    assert_eq!(alerts["active"], json!([]));
    assert_eq!(alerts["channels"].as_array().unwrap().len(), 4);
    let text = alerts.to_string();
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} in /api/alerts");
    }
    let (status, _) = h.get_as(None, "/api/alerts").await;
    assert_eq!(status, 401);
    let (status, _) = h.get_as(Some(ADMIN_TOKEN), "/api/alerts?limit=0").await;
    assert_eq!(status, 400);
    h.stop().await;
}
}

both_stores! {
async fn each_channel_takes_its_kinds_and_severities_under_its_rate_limit() {
    let (receiver, addr) = Receiver::start().await;
    let channels = format!(
        r#"
[alerting]
signer_unreachable_secs = 3600

[[alerts]]
kind = "webhook"
url = "http://{addr}/webhook/hook"
secret = "{HOOK_SECRET}"
per_minute = 1

[[alerts]]
kind = "wecom"
url = "http://{addr}/wecom/{WECOM_KEY}"
kinds = ["late", "uploads_stopped"]

[[alerts]]
kind = "feishu"
url = "http://{addr}/feishu/{FEISHU_HOOK}"
secret = "{FEISHU_SECRET}"
min_severity = "critical"
"#
    );
    let h = Harness::start(&format!("{}{channels}", unreachable_card_and_customs())).await;
    let (status, _) = h.post("/api/control/signing/pause", json!({"reason": "rate test"}).to_string()).await;
    assert_eq!(status, 200);
    receiver.wait_for("webhook", 1, WAIT).await;
    receiver.wait_for("feishu", 1, WAIT).await;
    let (status, _) = h.post("/api/control/signing/resume", "{}").await;
    assert_eq!(status, 200);
    receiver.wait_for("feishu", 2, WAIT).await;
    // The webhook takes one message a minute: the all-clear waits, untried.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.attempts("webhook"), 1);
    assert_eq!(receiver.attempts("wecom"), 0, "wecom takes late and uploads_stopped only");
    let alerts = h.get("/api/alerts").await;
    let cleared = &alerts["alerts"][0];
    assert_eq!(cleared["event"], "cleared", "{alerts:#}");
    let webhook =
        cleared["deliveries"].as_array().unwrap().iter().find(|d| d["channel"] == "webhook").unwrap();
    assert_eq!((&webhook["state"], &webhook["attempts"]), (&json!("pending"), &json!(0)), "{alerts:#}");
    let channels: Vec<&str> =
        cleared["deliveries"].as_array().unwrap().iter().map(|d| d["channel"].as_str().unwrap()).collect();
    assert_eq!(channels, ["feishu", "webhook"], "{alerts:#}");
    h.stop().await;
}
}

both_stores! {
async fn a_failing_channel_is_retried_and_never_delays_signing() {
    let (receiver, addr) = Receiver::start().await;
    receiver.answer("wecom", Answer::Status(500));
    receiver.answer("dingtalk", Answer::Refuse);
    receiver.answer("feishu", Answer::Refuse);
    let (card_dir, card_addr) = (tempfile::tempdir().unwrap(), free_addr());
    let card =
        eport::start(EportSimOptions::new(card_addr, Algo::Sm2, "pin-1", card_dir.path())).await.unwrap();
    let h = Harness::start(&format!(
        "[signer]\nurl = \"{}\"\npin = \"pin-1\"\n[customs]\nenvironment = \"test\"\n\
         upload_url = \"http://127.0.0.1:{}/upload\"\n{}",
        card.ws_url(),
        closed_port(),
        channels(addr, "")
    ))
    .await;
    let (status, _) =
        h.post("/api/control/uploading/pause", json!({"reason": "customs maintenance"}).to_string()).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + WAIT;
    while receiver.attempts("wecom") == 0
        || receiver.attempts("dingtalk") == 0
        || receiver.attempts("feishu") == 0
    {
        assert!(Instant::now() < deadline, "the failing channels were never tried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // While three channels fail, requests are signed at once.
    let started = Instant::now();
    for i in 0..5 {
        h.customs_call(&format!("SO-{i}"), &format!("S-{i}")).await;
        h.platform_pays(&format!("T-{i}"), &[&format!("SO-{i}")]).await;
    }
    for i in 0..5 {
        h.wait_for_state(&format!("S-{i}"), "signed", WAIT).await;
    }
    assert!(started.elapsed() < Duration::from_secs(5), "signing took {:?}", started.elapsed());
    receiver.wait_for("webhook", 1, WAIT).await;

    // Each channel's failure is written down after its answer came, in its own time.
    let alerts = eventually("every failed attempt recorded", WAIT, || async {
        let alerts = h.get("/api/alerts").await;
        let deliveries = alerts["alerts"][0]["deliveries"].as_array().cloned().unwrap_or_default();
        let tried = ["wecom", "dingtalk", "feishu"]
            .iter()
            .all(|c| deliveries.iter().any(|d| d["channel"] == *c && d["last_code"].is_string()));
        if tried { Ok(alerts) } else { Err(format!("{alerts:#}")) }
    })
    .await;
    let deliveries = &alerts["alerts"][0]["deliveries"];
    let of = |channel: &str| {
        deliveries.as_array().unwrap().iter().find(|d| d["channel"] == channel).unwrap().clone()
    };
    assert_eq!(of("wecom")["state"], "pending", "{alerts:#}");
    assert_eq!(of("wecom")["last_code"], "HTTP 500", "{alerts:#}");
    assert!(of("dingtalk")["last_code"].as_str().unwrap().contains("310000"), "{alerts:#}");
    assert!(of("feishu")["last_code"].as_str().unwrap().contains("19021"), "{alerts:#}");
    assert!(
        !alerts.to_string().contains(DING_TOKEN) && !alerts.to_string().contains(FEISHU_HOOK),
        "{alerts:#}"
    );

    // The robots recover: the pending alert is delivered at the next attempt.
    for channel in ["wecom", "dingtalk", "feishu"] {
        receiver.answer(channel, Answer::Ok);
    }
    for channel in ["wecom", "dingtalk", "feishu"] {
        let got = receiver.wait_for(channel, 1, WAIT).await;
        assert!(got[0].text.contains("customs maintenance"), "{}", got[0].text);
        assert!(receiver.attempts(channel) >= 2);
    }
    h.stop().await;
    card.stop().await;
}
}

both_stores! {
async fn an_alert_pending_at_a_kill_is_delivered_after_the_restart() {
    let (receiver, addr) = Receiver::start().await;
    for channel in HTTP_CHANNELS {
        receiver.answer(channel, Answer::Status(503));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut serve = ServeProcess::configure(
        dir.path(),
        &format!("{}{}", unreachable_card_and_customs(), channels(addr, "")),
    )
        .on_current_store()
        .await
    .keep_ports();
    serve.start().await;
    let (status, _) =
        serve.api.post("/api/control/signing/pause", json!({"reason": "before the kill"}).to_string()).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + WAIT;
    while HTTP_CHANNELS.iter().any(|c| receiver.attempts(c) == 0) {
        assert!(Instant::now() < deadline, "never tried: {}", serve.log_tail());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    serve.kill();
    for channel in HTTP_CHANNELS {
        receiver.answer(channel, Answer::Ok);
    }
    serve.start().await;
    for channel in HTTP_CHANNELS {
        let got = receiver.wait_for(channel, 1, WAIT).await;
        assert!(got[0].text.contains("before the kill"), "{}", got[0].text);
    }
    // The condition survived too: it is not raised a second time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.delivered().len(), 4, "{:#?}", receiver.delivered());
    let alerts = serve.api.get("/api/alerts").await;
    assert_eq!(alerts["alerts"].as_array().unwrap().len(), 1, "{alerts:#}");
    assert_eq!(alerts["active"][0]["kind"], "signing_paused");
    let metrics = serve
        .api
        .client
        .get(format!("{}/metrics", serve.api.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("customs179_alert_deliveries_total{outcome=\"sent\"} 4"), "{metrics}");
    assert!(!metrics.contains("customs179_alerts_total{"), "this process raised nothing itself: {metrics}");
    serve.kill();
}
}

both_stores! {
async fn the_certificate_s_expiry_and_an_unreachable_signer_are_told_and_cleared() {
    let (receiver, addr) = Receiver::start().await;
    let (card_dir, card_addr) = (tempfile::tempdir().unwrap(), free_addr());
    let mut options = EportSimOptions::new(card_addr, Algo::Sm2, "pin-1", card_dir.path());
    options.cert_validity = Some(CertValidity::ending_in_days(5).unwrap());
    let card = eport::start(options).await.unwrap();
    let h = Harness::start(&format!(
        "[signer]\nurl = \"{}\"\npin = \"pin-1\"\n[customs]\nenvironment = \"test\"\n{}",
        card.ws_url(),
        channels(addr, "").replace("signer_unreachable_secs = 3600", "signer_unreachable_secs = 1"),
    ))
    .await;
    let got = receiver.wait_for("webhook", 1, WAIT).await;
    let alert = got[0].alert.clone().unwrap();
    assert_eq!(
        (alert["kind"].as_str(), alert["level"].as_str()),
        (Some("certificate"), Some("7")),
        "{alert:#}"
    );
    assert_eq!(alert["severity"], "warning");
    assert!(got[0].text.contains("expires within 7 day(s)"), "{}", got[0].text);
    assert!(got[0].text.contains("4 day(s) left"), "{}", got[0].text);

    // The card's EportClient goes away: told after a second; back: cleared.
    card.stop().await;
    let got = receiver.wait_for("webhook", 2, WAIT).await;
    assert_eq!(got[1].alert.as_ref().unwrap()["kind"], "signer_unreachable", "{got:#?}");
    let mut options = EportSimOptions::new(card_addr, Algo::Sm2, "pin-1", card_dir.path());
    options.cert_validity = Some(CertValidity::ending_in_days(400).unwrap());
    let renewed = eport::start(options).await.unwrap();
    let got = receiver.wait_for("webhook", 4, Duration::from_secs(90)).await;
    let events: Vec<(String, String)> = got[2..]
        .iter()
        .map(|r| {
            let alert = r.alert.as_ref().unwrap();
            (alert["kind"].as_str().unwrap().to_owned(), alert["event"].as_str().unwrap().to_owned())
        })
        .collect();
    assert!(events.contains(&("signer_unreachable".into(), "cleared".into())), "{events:?}");
    assert!(events.contains(&("certificate".into(), "cleared".into())), "a renewed certificate: {events:?}");
    h.stop().await;
    renewed.stop().await;
}
}

both_stores! {
async fn requests_at_risk_late_and_failed_and_customs_errors_are_told() {
    let (receiver, addr) = Receiver::start().await;
    let (card_dir, card_addr) = (tempfile::tempdir().unwrap(), free_addr());
    let card =
        eport::start(EportSimOptions::new(card_addr, Algo::Sm2, "pin-1", card_dir.path())).await.unwrap();
    // Customs cannot be reached: every upload fails, the request runs out of time, then fails.
    let h = Harness::start(&format!(
        "[signer]\nurl = \"{}\"\npin = \"pin-1\"\n[customs]\nenvironment = \"test\"\n\
         upload_url = \"http://127.0.0.1:{}/upload\"\ntimeout_ms = 500\nretry_max_secs = 1\n\
         deadline_secs = 3\nat_risk_secs = 2\ngive_up_after_secs = 5\n{}",
        card.ws_url(),
        closed_port(),
        channels(addr, "customs_errors = 2\nwindow_secs = 4"),
    ))
    .await;
    h.customs_call("SO-1", "S-1").await;
    h.platform_pays("T-1", &["SO-1"]).await;
    h.wait_for_state("S-1", "failed", WAIT).await;
    let kinds_of = |got: &[Received]| -> Vec<(String, String)> {
        got.iter()
            .map(|r| {
                let alert = r.alert.as_ref().unwrap();
                (alert["kind"].as_str().unwrap().to_owned(), alert["event"].as_str().unwrap().to_owned())
            })
            .collect()
    };
    let wanted = [
        ("at_risk", "raised"),
        ("at_risk", "cleared"),
        ("late", "raised"),
        ("late", "cleared"),
        ("customs_errors", "raised"),
        ("requests_failed", "raised"),
        ("requests_failed", "cleared"),
    ];
    let deadline = Instant::now() + WAIT;
    let got = loop {
        let got = kinds_of(
            &receiver.delivered().into_iter().filter(|r| r.channel == "webhook").collect::<Vec<_>>(),
        );
        if wanted.iter().all(|(k, e)| got.contains(&((*k).to_owned(), (*e).to_owned()))) {
            break got;
        }
        assert!(Instant::now() < deadline, "not all told: {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (kind, event) in wanted {
        let n = got.iter().filter(|(k, e)| k == kind && e == event).count();
        assert_eq!(n, 1, "{kind} {event} once: {got:?}");
    }
    let position = |kind: &str, event: &str| got.iter().position(|(k, e)| k == kind && e == event).unwrap();
    assert!(position("at_risk", "raised") < position("at_risk", "cleared"));
    assert!(position("late", "raised") < position("late", "cleared"));
    let webhook = receiver.delivered();
    let late = webhook.iter().find(|r| r.alert.as_ref().is_some_and(|a| a["kind"] == "late")).unwrap();
    assert_eq!(late.alert.as_ref().unwrap()["count"], 1, "{late:?}");
    assert!(late.text.contains("1 request(s) past the deadline"), "{}", late.text);
    h.stop().await;
    card.stop().await;
}
}

both_stores! {
async fn at_trace_level_no_channel_secret_appears_in_the_log_the_api_or_the_page() {
    let (receiver, addr) = Receiver::start().await;
    // Robots that refuse and echo their key back, so that the errors carry it.
    receiver.answer("wecom", Answer::Status(500));
    receiver.answer("dingtalk", Answer::Refuse);
    receiver.answer("feishu", Answer::Refuse);
    let dir = tempfile::tempdir().unwrap();
    let mut serve = ServeProcess::configure(
        dir.path(),
        &format!(
            "{}{}{MAIL_CHANNEL}\n[log]\nlevel = \"trace\"\n",
            unreachable_card_and_customs(),
            channels(addr, ""),
            MAIL_CHANNEL = mail_channel(closed_port()),
        ),
    )
        .on_current_store()
        .await;
    serve.start().await;
    let (status, _) =
        serve.api.post("/api/control/signing/pause", json!({"reason": "secrets test"}).to_string()).await;
    assert_eq!(status, 200);
    receiver.wait_for("webhook", 1, WAIT).await;
    let deadline = Instant::now() + WAIT;
    while ["wecom", "dingtalk", "feishu"].iter().any(|c| receiver.attempts(c) < 2)
        || !serve.log().contains("channel=\"mail\"")
    {
        assert!(Instant::now() < deadline, "not retried: {}", serve.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut seen = vec![serve.log()];
    for path in ["/api/alerts", "/api/status", "/api/audit"] {
        seen.push(serve.api.get(path).await.to_string());
    }
    let page =
        serve.api.client.get(format!("{}/", serve.api.admin)).send().await.unwrap().text().await.unwrap();
    seen.push(page);
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_customs179"))
        .args(["check", "--config"])
        .arg(&serve.config)
        .output()
        .unwrap();
    seen.push(common::output_text(&check));
    serve.terminate(WAIT).await;
    seen.push(serve.log());
    assert!(seen[0].contains("alerts: not delivered"), "the failures are logged: {}", seen[0]);
    for text in &seen {
        for secret in SECRETS.iter().chain([&MAIL_PASSWORD]) {
            assert!(!text.contains(secret), "{secret} appears in:\n{text}");
        }
    }
}
}

const MAIL_PASSWORD: &str = "mail-password-6e2b";

/// A mail channel whose server is not there: its failures are logged, without the password.
fn mail_channel(port: u16) -> String {
    format!(
        "\n[[alerts]]\nkind = \"mail\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         username = \"alerts\"\npassword = \"{MAIL_PASSWORD}\"\nfrom = \"alerts@example.com\"\nto = [\"ops@example.com\"]\n"
    )
}

#[tokio::test]
async fn alert_test_sends_a_test_message_through_each_channel() {
    let (receiver, addr) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("customs179.toml");
    let toml = common::service_toml(
        common::loopback(),
        common::loopback(),
        &dir.path().join("db.sqlite"),
        "",
        &format!("{}{}", unreachable_card_and_customs(), channels(addr, "")),
    );
    std::fs::write(&config, toml).unwrap();
    let run = |extra: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_customs179"));
        command.args(["alert-test", "--config"]).arg(&config).args(extra);
        tokio::task::spawn_blocking(move || command.output().unwrap())
    };
    let all = run(&[]).await.unwrap();
    assert_eq!(all.status.code(), Some(0), "{}", common::output_text(&all));
    for channel in HTTP_CHANNELS {
        let got = receiver.wait_for(channel, 1, WAIT).await;
        assert!(got[0].text.contains("测试消息") || got[0].text.contains("test message"), "{}", got[0].text);
    }
    assert!(common::stdout(&all).contains("wecom (wecom): sent"), "{}", common::stdout(&all));

    receiver.answer("dingtalk", Answer::Refuse);
    let refused = run(&["--channel", "dingtalk"]).await.unwrap();
    let text = common::output_text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{text}");
    assert!(text.contains("dingtalk (dingtalk): NOT SENT: errcode 310000"), "{text}");
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert_eq!(receiver.attempts("webhook"), 1, "--channel sends through that one only");

    let unknown = run(&["--channel", "pager"]).await.unwrap();
    assert_eq!(unknown.status.code(), Some(2), "{}", common::output_text(&unknown));
    assert!(common::output_text(&unknown).contains("no [[alerts]] entry is named \"pager\""));
}
