//! Uploading, end to end: the service runs in-process with a real SQLite file; customs' first
//! calls come from the customs simulator's caller (real `openReq` form posts with customs' user
//! agent) to its intake, the platform's records go to its payments API, the card is the
//! EportClient simulator on a real WebSocket, and uploads go to the customs simulator, whose
//! report shows what customs received (and would have swallowed).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use customs179_core::UploadBody;
use customs179_sim::customs::{
    self, CallOptions, CustomsFaults, CustomsFaultsUpdate, CustomsSimOptions, FaultKind, Report,
    RunningCustomsSim,
};
use customs179_sim::eport::{self, Algo, EportSimOptions, RunningEportSim};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

mod common;

use common::{ADMIN_TOKEN, EBP_CODE, Harness, loopback};

const PIN: &str = "88888888";
/// The service's own limit on one upload; the simulator's timeouts are longer.
const CUSTOMS_TIMEOUT_MS: u64 = 1_000;
const WAIT: Duration = Duration::from_secs(20);

/// The card: an EportClient simulator with an SM2 key kept in `dir`.
async fn start_eport(dir: &Path) -> RunningEportSim {
    eport::start(EportSimOptions::new(loopback(), Algo::Sm2, PIN, dir))
        .await
        .expect("the card simulator starts")
}

/// A certificate directory registering the card of `eport` (its certificate only).
fn registered_certs(eport: &RunningEportSim) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("card.pem"), eport.keys().cert_pem().unwrap()).unwrap();
    dir
}

/// A customs simulator at `addr` registering the certificates of `certs` and our ebpCode.
async fn start_customs(addr: SocketAddr, certs: &Path, faults: CustomsFaults) -> RunningCustomsSim {
    let mut options = CustomsSimOptions::new(addr, certs, [EBP_CODE]);
    options.faults = faults;
    options.seed = Some(179);
    customs::start(options).await.expect("the customs simulator starts")
}

/// A service signing with the card at `signer_url` and uploading to `upload_url`;
/// `customs` holds more `[customs]` lines.
async fn start(signer_url: &str, upload_url: &str, customs: &str) -> Harness {
    Harness::start(&format!(
        r#"
[signer]
url = "{signer_url}"
pin = "{PIN}"
timeout_ms = 2000

[customs]
environment = "test"
upload_url = "{upload_url}"
timeout_ms = {CUSTOMS_TIMEOUT_MS}
retry_max_secs = 2
{customs}
"#
    ))
    .await
    .with_client_timeout(Duration::from_secs(10))
}

impl Harness {
    /// Customs asks for `order_no`'s payment data, as customs does; returns its sessionID.
    async fn customs_asks(&self, order_no: &str) -> String {
        let options = CallOptions::new(format!("{}/platDataOpen", self.intake), order_no);
        let summary = customs::call(options).await.expect("customs reaches the intake");
        assert!(summary.all_ok(), "customs' call must be answered 10000: {summary:?}");
        summary.results[0].session_id.clone()
    }

    /// Customs asks for order `SO-{n}` and the platform pays it; returns the sessionID.
    async fn request(&self, n: &str) -> String {
        let order_no = format!("SO-{n}");
        let session_id = self.customs_asks(&order_no).await;
        self.platform_pays(&format!("T-{n}"), &[&order_no]).await;
        session_id
    }

    /// Waits until every request is in `state`; returns their details in the same order.
    async fn wait_all(&self, session_ids: &[String], state: &str, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut details = Vec::new();
        for session_id in session_ids {
            let left = deadline.saturating_duration_since(Instant::now());
            details.push(self.wait_for_state(session_id, state, left).await);
        }
        details
    }
}

/// Everything an ordinary test needs: the card, customs (registering the card and our
/// ebpCode) and the service between them.
struct Rig {
    h: Harness,
    customs: RunningCustomsSim,
    eport: RunningEportSim,
    _certs: TempDir,
    _card: TempDir,
}

impl Rig {
    async fn start(faults: CustomsFaults, customs_toml: &str) -> Rig {
        let card = tempfile::tempdir().unwrap();
        let eport = start_eport(card.path()).await;
        let certs = registered_certs(&eport);
        let customs = start_customs(loopback(), certs.path(), faults).await;
        assert_eq!(customs.cert_nos(), [eport.cert_no().as_str()], "customs registers the card");
        let h = start(&eport.ws_url(), &customs.upload_url(), customs_toml).await;
        Rig { h, customs, eport, _certs: certs, _card: card }
    }

    async fn stop(self) {
        self.h.stop().await;
        self.customs.stop().await;
        self.eport.stop().await;
    }
}

/// The uploads customs received for `session_id`, in the order it handled them.
fn received<'a>(report: &'a Report, session_id: &str) -> Vec<&'a customs::ReceivedUpload> {
    report.uploads.iter().filter(|u| u.session_id.as_deref() == Some(session_id)).collect()
}

/// How many uploads customs stored, per sessionID.
fn stored_per_session(report: &Report) -> BTreeMap<String, usize> {
    let mut stored = BTreeMap::new();
    for upload in report.uploads.iter().filter(|u| u.stored) {
        *stored.entry(upload.session_id.clone().unwrap_or_default()).or_default() += 1;
    }
    stored
}

/// A request's history as (step, outcome, detail).
fn history(detail: &Value) -> Vec<(String, String, String)> {
    detail["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempts: {detail:#}"))
        .iter()
        .map(|a| {
            (
                a["step"].as_str().unwrap().to_owned(),
                a["outcome"].as_str().unwrap().to_owned(),
                a["detail"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

/// The upload steps of a request's history as (outcome, detail).
fn upload_steps(detail: &Value) -> Vec<(String, String)> {
    history(detail).into_iter().filter(|(step, ..)| step == "upload").map(|(_, o, d)| (o, d)).collect()
}

/// The stored upload body of a request's current upload, taken apart: (sessionID, guid).
fn stored_body_ids(detail: &Value) -> (String, String) {
    let upload = &detail["uploads"][0];
    let body = upload["upload_body"].as_str().unwrap_or_else(|| panic!("no upload body: {detail:#}"));
    let parsed = UploadBody::parse(body).unwrap_or_else(|e| panic!("{e:?}: {body}"));
    assert_eq!(
        parsed.presign.as_str(),
        upload["presign"].as_str().unwrap(),
        "the body carries the pre-sign bytes"
    );
    let head: Value = serde_json::from_str(parsed.presign.head_json()).unwrap();
    let guid = head["guid"].as_str().unwrap().to_owned();
    assert_eq!(upload["guid"], guid.as_str(), "the stored guid is the one in the body");
    (parsed.presign.session_id(), guid)
}

/// Checks what customs stored for a delivered request is its current stored upload body,
/// signed by the card and free of violations.
fn assert_customs_stored(report: &Report, detail: &Value, eport: &RunningEportSim) {
    let session_id = detail["session_id"].as_str().unwrap();
    let (body_session_id, guid) = stored_body_ids(detail);
    assert_eq!(body_session_id, session_id);
    let stored: Vec<_> = received(report, session_id).into_iter().filter(|u| u.stored).collect();
    assert_eq!(stored.len(), 1, "{session_id} stored exactly once: {report:#?}");
    let upload = stored[0];
    assert_eq!(upload.guid.as_deref(), Some(guid.as_str()), "customs stored the body we stored");
    assert_eq!(upload.cert_no.as_deref(), Some(eport.cert_no().as_str()));
    assert_eq!(upload.ebp_code.as_deref(), Some(EBP_CODE));
    assert!(upload.violations.is_empty(), "{session_id}: {:?}", upload.violations);
}

both_stores! {
async fn requests_are_signed_uploaded_and_stored_by_customs() {
    let rig = Rig::start(CustomsFaults::default(), "").await;
    let h = &rig.h;
    // Customs asks before the platform's data comes, and after.
    let a1 = h.request("A1").await;
    let b1 = h.customs_asks("SO-B1").await;
    h.platform_pays("T-B", &["SO-B1", "SO-B2"]).await;
    let b2 = h.customs_asks("SO-B2").await;
    h.platform_pays("T-A2", &["SO-A2"]).await;
    let a2 = h.customs_asks("SO-A2").await;
    let sessions = [a1, b1, b2, a2].map(String::from);

    let details = h.wait_all(&sessions, "delivered", WAIT).await;
    let report = rig.customs.report();
    assert_eq!(report.totals.received, 4, "one upload each: {report:#?}");
    assert_eq!(report.totals.stored, 4);
    assert_eq!(report.totals.by_code.get("10000"), Some(&4));
    assert_eq!(report.totals.with_violations, 0, "{report:#?}");
    let mut guids = Vec::new();
    for detail in &details {
        assert_eq!(detail["late"], false, "{detail:#}");
        assert!(detail["delivered_at"].as_i64().is_some(), "{detail:#}");
        assert_eq!(detail["last_error"], Value::Null, "{detail:#}");
        assert_eq!(detail["uploads"].as_array().unwrap().len(), 1, "{detail:#}");
        let steps: Vec<(String, String)> = history(detail).into_iter().map(|(s, o, _)| (s, o)).collect();
        let expected = [("prepare", "prepared"), ("sign", "signed"), ("upload", "delivered")]
            .map(|(s, o)| (s.to_owned(), o.to_owned()));
        assert_eq!(steps, expected, "{detail:#}");
        let (_, _, answer) = history(detail).pop().unwrap();
        assert!(answer.starts_with("HTTP 200: ") && answer.contains("\"10000\""), "{answer}");
        assert_customs_stored(&report, detail, &rig.eport);
        guids.push(detail["uploads"][0]["guid"].as_str().unwrap().to_owned());
    }
    guids.sort();
    guids.dedup();
    assert_eq!(guids.len(), 4, "each request has its own guid, even two of one payment");
    // The two requests of one payment carry the same record.
    assert_eq!(details[1]["payment"], details[2]["payment"]);
    assert_eq!(details[1]["payment"]["payExchangeInfoHead"]["payTransactionId"], "T-B");
    rig.stop().await;
}
}

both_stores! {
async fn under_injected_faults_every_request_is_delivered_and_stored_once() {
    let faults = CustomsFaults {
        http_5xx: 0.1,
        code_20000: 0.1,
        timeout_before_store: 0.05,
        lost_after_store: 0.05,
        timeout_ms: 1_500,
        ..CustomsFaults::default()
    };
    assert!(faults.timeout_ms > CUSTOMS_TIMEOUT_MS, "the service gives up first");
    let rig = Rig::start(faults, "").await;
    let h = &rig.h;
    let mut sessions = Vec::new();
    for n in 0..20 {
        sessions.push(h.request(&format!("F{n}")).await);
    }
    let details = h.wait_all(&sessions, "delivered", Duration::from_secs(30)).await;

    // Timeouts are recorded when customs receives them, so the report is complete now.
    let report = rig.customs.report();
    let stored = stored_per_session(&report);
    assert_eq!(stored.len(), 20, "{stored:?}");
    assert!(stored.values().all(|&n| n == 1), "every sessionID stored exactly once: {stored:?}");
    assert!(report.uploads.iter().any(|u| u.fault.is_some()), "the run met faults: {:?}", report.totals);
    assert_eq!(report.totals.with_violations, 0);
    let mut retried = 0;
    for detail in &details {
        let session_id = detail["session_id"].as_str().unwrap();
        assert_customs_stored(&report, detail, &rig.eport);
        let at_customs = received(&report, session_id);
        let steps = upload_steps(detail);
        assert_eq!(steps.len(), at_customs.len(), "one history entry per upload customs received: {steps:?}");
        for (upload, (outcome, answer)) in at_customs.iter().zip(&steps) {
            let expected: (&str, &str) = match (upload.fault, upload.code.as_deref()) {
                (Some(FaultKind::Http5xx), _) => ("retry", "HTTP 503"),
                (Some(FaultKind::Code20000), _) => ("retry", "\"20000\""),
                (Some(FaultKind::TimeoutBeforeStore), _) => ("retry", "timed out"),
                (Some(FaultKind::LostAfterStore), _) => ("retry", "no answer from customs"),
                (None, Some("10000")) => ("delivered", "\"10000\""),
                (None, Some("20006")) => ("already stored by an earlier attempt", "\"20006\""),
                other => panic!("unexpected upload {other:?}: {upload:?}"),
            };
            assert_eq!(outcome, expected.0, "{session_id}: {upload:?} / {answer}");
            assert!(answer.contains(expected.1), "{session_id}: {answer:?} should mention {:?}", expected.1);
        }
        retried += usize::from(steps.len() > 1);
        assert_eq!(detail["uploads"].as_array().unwrap().len(), 1, "retries resend the same upload");
        for upload in &at_customs {
            assert_eq!(upload.guid, at_customs[0].guid, "the same body every time");
        }
    }
    assert!(retried > 0, "some requests were retried");
    rig.stop().await;
}
}

both_stores! {
async fn an_answer_lost_after_storing_ends_delivered_through_20006() {
    let rig = Rig::start(CustomsFaults { next_lost: 1, ..CustomsFaults::default() }, "").await;
    let h = &rig.h;
    let session_id = h.request("LOST").await;
    let detail = h.wait_for_state(&session_id, "delivered", WAIT).await;
    let steps = upload_steps(&detail);
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_eq!(steps[0].0, "retry");
    assert!(steps[0].1.contains("no answer from customs"), "{steps:?}");
    assert_eq!(steps[1].0, "already stored by an earlier attempt");
    assert!(steps[1].1.contains("20006"), "{steps:?}");
    assert_eq!(detail["late"], false);

    let report = rig.customs.report();
    let uploads = received(&report, &session_id);
    assert_eq!(uploads.len(), 2, "{report:#?}");
    assert_eq!(uploads[0].fault, Some(FaultKind::LostAfterStore));
    assert!(uploads[0].stored);
    assert_eq!(uploads[1].code.as_deref(), Some("20006"));
    assert!(!uploads[1].stored);
    assert_customs_stored(&report, &detail, &rig.eport);
    // 20006 on a retry is no anomaly.
    let (_, metrics) = h.metrics(Some(ADMIN_TOKEN)).await;
    assert!(metrics.contains("\ncustoms179_anomalies_total 0\n"), "{metrics}");
    rig.stop().await;
}
}

both_stores! {
async fn a_20004_stops_uploads_until_resumed() {
    let card = tempfile::tempdir().unwrap();
    let eport = start_eport(card.path()).await;
    // Customs first knows no certificate: every upload is answered 20004.
    let no_certs = tempfile::tempdir().unwrap();
    let wrong = start_customs(loopback(), no_certs.path(), CustomsFaults::default()).await;
    let addr = wrong.addr();
    let h = start(&eport.ws_url(), &wrong.upload_url(), "").await;

    let first = h.request("R1").await;
    let deadline = Instant::now() + WAIT;
    let controls = loop {
        let controls = h.controls().await;
        if controls["uploading"]["paused"] == true {
            break controls;
        }
        assert!(Instant::now() < deadline, "uploading never paused: {controls:#}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let reason = controls["uploading"]["reason"].as_str().unwrap_or_else(|| panic!("{controls:#}"));
    assert!(reason.contains("20004"), "{reason}");
    assert_eq!(controls["signing"]["paused"], false);
    let (_, metrics) = h.metrics(Some(ADMIN_TOKEN)).await;
    assert!(metrics.contains("customs179_paused{stage=\"uploading\"} 1\n"), "{metrics}");

    let report = wrong.report();
    assert_eq!(report.uploads.len(), 1, "{report:#?}");
    assert_eq!(report.uploads[0].code.as_deref(), Some("20004"));
    let detail = h.detail(&first).await;
    assert_eq!(detail["state"], "signed", "{detail:#}");
    let steps = upload_steps(&detail);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0].0, "retry");
    assert!(steps[0].1.contains("20004"), "{steps:?}");

    // More requests are signed, but nothing goes to customs while paused.
    let mut sessions = vec![first];
    sessions.push(h.request("R2").await);
    sessions.push(h.request("R3").await);
    h.wait_all(&sessions, "signed", WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(wrong.report().uploads.len(), 1, "no upload while paused");
    for session_id in &sessions {
        assert_eq!(h.detail(session_id).await["state"], "signed");
    }

    // The registration is fixed: customs, at the same address, now knows the card.
    wrong.stop().await;
    let certs = registered_certs(&eport);
    let right = start_customs(addr, certs.path(), CustomsFaults::default()).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(right.report().uploads.is_empty(), "still paused until an operator resumes");

    let (status, resumed) = h.post("/api/control/uploading/resume", String::new()).await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["stage"], "uploading", "{resumed}");
    assert!(resumed["cleared"]["reason"].as_str().unwrap().contains("20004"), "{resumed}");
    let details = h.wait_all(&sessions, "delivered", WAIT).await;
    let controls = h.controls().await;
    assert_eq!(controls["uploading"]["paused"], false, "{controls:#}");
    let report = right.report();
    assert_eq!(report.totals.stored, 3, "{report:#?}");
    for detail in &details {
        assert_customs_stored(&report, detail, &eport);
    }
    let steps = upload_steps(&details[0]);
    assert_eq!(steps.iter().map(|(o, _)| o.as_str()).collect::<Vec<_>>(), ["retry", "delivered"]);
    h.stop().await;
    right.stop().await;
    eport.stop().await;
}
}

both_stores! {
async fn a_failed_request_is_delivered_by_a_replay() {
    let faults = CustomsFaults { next_http_5xx: 1_000, ..CustomsFaults::default() };
    let rig = Rig::start(faults, "give_up_after_secs = 1").await;
    let h = &rig.h;
    let session_id = h.request("REPLAY").await;
    let failed = h.wait_for_state(&session_id, "failed", WAIT).await;
    let reason = failed["last_error"].as_str().unwrap_or_else(|| panic!("{failed:#}"));
    assert!(reason.contains("gave up after 1 s"), "{reason}");
    assert!(reason.contains("HTTP 503"), "the reason holds the last answer: {reason}");
    let steps = upload_steps(&failed);
    assert!(steps.len() >= 2, "retried before giving up: {steps:?}");
    assert_eq!(steps.last().unwrap().0, "failed");
    let uploads_before = rig.customs.report().uploads.len();
    assert!(uploads_before >= 1);
    assert_eq!(rig.customs.report().totals.stored, 0);

    // Found by customs' answer code; each attempt says its code and how long it took.
    assert_eq!(failed["code"], "HTTP 503", "{failed:#}");
    for query in ["code=HTTP%20503", "code=HTTP%20503&state=failed&sort=deadline"] {
        let listed = h.get(&format!("/api/requests?{query}")).await;
        assert_eq!(listed["requests"][0]["session_id"], session_id.as_str(), "{query}: {listed:#}");
    }
    assert_eq!(h.get("/api/requests?code=HTTP%20503&state=waiting").await["requests"], json!([]));
    let attempts = failed["attempts"].as_array().unwrap();
    for upload in attempts.iter().filter(|a| a["step"] == "upload") {
        assert_eq!(upload["code"], "HTTP 503", "{upload:#}");
        assert!(upload["took_ms"].as_i64().is_some_and(|ms| (0..10_000).contains(&ms)), "{upload:#}");
    }
    let signed = attempts.iter().find(|a| a["step"] == "sign").unwrap();
    assert_eq!(signed["cert_no"], rig.eport.cert_no().as_str(), "{signed:#}");
    assert!(signed["took_ms"].as_i64().is_some(), "{signed:#}");
    let timeline = failed["timeline"].as_array().unwrap();
    let steps: Vec<&str> = timeline.iter().map(|e| e["step"].as_str().unwrap()).collect();
    assert_eq!(steps[..2], ["customs call", "payment data"], "{timeline:#?}");
    assert_eq!(timeline.len(), attempts.len() + 2, "{timeline:#?}");
    assert!(timeline.windows(2).all(|w| w[0]["at"].as_i64() <= w[1]["at"].as_i64()), "{timeline:#?}");

    // Only a failed or delivered request can be replayed; this one is failed.
    rig.customs.update_faults(&CustomsFaultsUpdate { next_http_5xx: Some(0), ..Default::default() }).unwrap();
    let (status, replayed) = h.post(&format!("/api/requests/{session_id}/replay"), String::new()).await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    assert_eq!(replayed["was"], "failed", "{replayed}");
    let delivered = h.wait_for_state(&session_id, "delivered", WAIT).await;
    assert_eq!(delivered["code"], Value::Null, "nothing is wrong any more: {delivered:#}");
    assert_eq!(delivered["attempts"].as_array().unwrap().last().unwrap()["code"], "10000");

    let uploads = delivered["uploads"].as_array().unwrap();
    assert_eq!(uploads.len(), 2, "a replay adds an upload and keeps the old one: {delivered:#}");
    assert_ne!(uploads[0]["guid"], uploads[1]["guid"], "a new guid");
    assert!(uploads.iter().all(|u| u["upload_body"].is_string()), "both were signed");
    let history = history(&delivered);
    let before =
        history.iter().position(|(step, ..)| step == "replay").expect("the replay is in the history");
    assert_eq!(history[before].1, "replayed");
    assert!(history[..before].iter().any(|(s, o, _)| s == "upload" && o == "failed"), "{history:?}");
    let after: Vec<(&str, &str)> =
        history[before + 1..].iter().map(|(s, o, _)| (s.as_str(), o.as_str())).collect();
    assert_eq!(after, [("prepare", "prepared"), ("sign", "signed"), ("upload", "delivered")]);

    let report = rig.customs.report();
    assert_eq!(report.uploads.len(), uploads_before + 1, "{report:#?}");
    assert_customs_stored(&report, &delivered, &rig.eport);
    let old_guid = uploads[1]["guid"].as_str().unwrap();
    assert!(
        report.uploads[..uploads_before].iter().all(|u| u.guid.as_deref() == Some(old_guid) && !u.stored),
        "the earlier attempts carried the old upload: {report:#?}"
    );
    rig.stop().await;
}
}

both_stores! {
/// ARCHITECTURE.md: a replay restarts the request's give-up clock. The uploader measures
/// `give_up_after_secs` from customs' call (`received_at`), which a replay does not change,
/// so after a replay one transient failure fails the request again at once.
async fn a_replayed_request_survives_a_transient_failure() {
    let faults = CustomsFaults { next_http_5xx: 1_000, ..CustomsFaults::default() };
    let rig = Rig::start(faults, "give_up_after_secs = 3").await;
    let h = &rig.h;
    let session_id = h.request("REPLAY-BLIP").await;
    h.wait_for_state(&session_id, "failed", WAIT).await;
    // One more 503 after the replay, well within a fresh give-up period.
    rig.customs.update_faults(&CustomsFaultsUpdate { next_http_5xx: Some(1), ..Default::default() }).unwrap();
    let (status, replayed) = h.post(&format!("/api/requests/{session_id}/replay"), String::new()).await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    let detail =
        h.wait_until(&session_id, WAIT, |d| d["state"] == "delivered" || d["state"] == "failed").await;
    assert_eq!(detail["state"], "delivered", "retried after the replay: {detail:#}");
    rig.stop().await;
}
}

both_stores! {
async fn metrics_count_what_happened_and_healthz_needs_no_token() {
    let rig = Rig::start(CustomsFaults::default(), "").await;
    let h = &rig.h;
    let mut sessions = Vec::new();
    for n in 0..3 {
        sessions.push(h.request(&format!("M{n}")).await);
    }
    h.wait_all(&sessions, "delivered", WAIT).await;

    let (status, metrics) = h.metrics(Some(ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{metrics}");
    for line in [
        "customs179_intake_requests_total{outcome=\"stored\"} 3",
        "customs179_queue_requests{state=\"delivered\"} 3",
        "customs179_queue_requests{state=\"signed\"} 0",
        "customs179_customs_answers_total{code=\"10000\"} 3",
        "customs179_delivery_seconds_count 3",
        "customs179_late_total 0",
        "customs179_anomalies_total 0",
        "customs179_paused{stage=\"uploading\"} 0",
        "customs179_paused{stage=\"signing\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in:\n{metrics}");
    }
    // Three calls one after another: one to three group commits.
    let commits = metrics
        .lines()
        .find_map(|l| l.strip_prefix("customs179_intake_commit_seconds_count "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(matches!(commits, Some(1..=3)), "{metrics}");
    assert_eq!(h.metrics(None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(h.metrics(Some("wrong-token")).await.0, StatusCode::UNAUTHORIZED);

    let response = h.client.get(format!("{}/healthz", h.admin)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    rig.stop().await;
}
}
