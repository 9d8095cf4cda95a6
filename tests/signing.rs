//! Signing in the service, end to end: the service runs in-process with a real SQLite file,
//! customs' calls go to its intake, the platform's records to its payments API, and the card
//! is the EportClient simulator on a real WebSocket. Uploads go to a closed port (they just
//! retry): these tests look at signing.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use customs179_core::{SignatureVerifier, UploadBody};
use customs179_sim::eport::{self, Algo, EportSimOptions, Faults, RunningEportSim, TAG_WRONG_PIN};
use reqwest::StatusCode;
use serde_json::{Value, json};

mod common;

use common::Harness;

const PIN: &str = "88888888";
const WRONG_PIN: &str = "13572468";
/// Nothing listens on the discard port: uploads fail and are retried.
const UPLOAD_URL: &str = "http://127.0.0.1:9/ceb2grab/grab/realTimeDataUpload";
const WAIT: Duration = Duration::from_secs(20);

async fn start_sim_at(addr: SocketAddr, dir: &Path, faults: Faults) -> RunningEportSim {
    let mut options = EportSimOptions::new(addr, Algo::Sm2, PIN, dir);
    options.faults = faults;
    eport::start(options).await.expect("the simulator starts")
}

async fn start_sim(dir: &Path, faults: Faults) -> RunningEportSim {
    start_sim_at(SocketAddr::from(([127, 0, 0, 1], 0)), dir, faults).await
}

/// Starts a service that signs through `signer_url` with `pin`.
async fn start(signer_url: &str, pin: &str) -> Harness {
    Harness::start(&format!(
        r#"
[signer]
url = "{signer_url}"
pin = "{pin}"
timeout_ms = 1000

[customs]
environment = "test"
upload_url = "{UPLOAD_URL}"
"#
    ))
    .await
}

impl Harness {
    /// customs asks and the platform pays: the request becomes ready to sign.
    async fn request(&self, n: &str) -> String {
        let session_id = format!("S-{n}");
        self.customs_call(&format!("SO-{n}"), &session_id).await;
        self.platform_pays(&format!("T-{n}"), &[&format!("SO-{n}")]).await;
        session_id
    }

    async fn wait_signed(&self, session_id: &str, within: Duration) -> Value {
        self.wait_until(session_id, within, is_signed).await
    }

    /// Waits until the request's pre-sign string is prepared (state ready or later).
    async fn wait_prepared(&self, session_id: &str) -> Value {
        self.wait_until(session_id, WAIT, |d| d["state"] != "waiting").await
    }
}

/// Signed, or further along (uploads cannot succeed here, but the state would be past signed).
fn is_signed(detail: &Value) -> bool {
    detail["state"] == "signed" || detail["state"] == "delivered"
}

/// The current upload's body carries a signature by the simulator's card over exactly the
/// stored pre-sign string.
fn assert_upload_verifies(detail: &Value, sim: &RunningEportSim) {
    let upload = &detail["uploads"][0];
    let presign = upload["presign"].as_str().unwrap_or_else(|| panic!("no presign: {detail:#}"));
    let body = upload["upload_body"].as_str().unwrap_or_else(|| panic!("no upload body: {detail:#}"));
    let parsed = UploadBody::parse(body).unwrap_or_else(|e| panic!("{e:?}: {body}"));
    assert_eq!(parsed.presign.as_str(), presign, "the body carries the stored pre-sign bytes");
    assert_eq!(parsed.cert_no, sim.cert_no().as_str());
    assert_eq!(upload["cert_no"], parsed.cert_no.as_str());
    assert_eq!(upload["sign_value"], parsed.sign_value.as_str());
    let verifier = SignatureVerifier::from_bytes(sim.keys().cert_der()).unwrap();
    verifier.verify(presign.as_bytes(), &parsed.sign_value).expect("the signature verifies");
    assert_eq!(parsed.presign.session_id(), detail["session_id"].as_str().unwrap());
}

fn sign_attempts(detail: &Value) -> Vec<(String, String)> {
    detail["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["step"] == "sign")
        .map(|a| (a["outcome"].as_str().unwrap().to_owned(), a["detail"].as_str().unwrap_or("").to_owned()))
        .collect()
}

/// Waits until `check` holds of the simulator's counts.
async fn wait_for_sim(sim: &RunningEportSim, within: Duration, check: impl Fn(&eport::Stats) -> bool) {
    let deadline = Instant::now() + within;
    while !check(&sim.stats()) {
        assert!(Instant::now() < deadline, "simulator counts: {:?}", sim.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

both_stores! {
async fn a_request_is_signed_and_its_upload_body_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), Faults::default()).await;
    let h = start(&sim.ws_url(), PIN).await;
    let session_id = h.request("1").await;
    let detail = h.wait_signed(&session_id, WAIT).await;
    assert_upload_verifies(&detail, &sim);
    assert_eq!(detail["uploads"].as_array().unwrap().len(), 1);
    assert_eq!(sign_attempts(&detail), [("signed".to_owned(), String::new())]);
    let stats = sim.stats();
    assert_eq!((stats.connections, stats.sign_requests, stats.signatures), (1, 1, 1));
    let controls = h.controls().await;
    assert_eq!(controls["signing"]["paused"], false, "{controls}");
    h.stop().await;
}
}

both_stores! {
async fn a_reader_error_delays_an_item_which_is_signed_on_retry() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), Faults { reader_error_50070: 1, ..Faults::default() }).await;
    let h = start(&sim.ws_url(), PIN).await;
    let session_id = h.request("50070").await;
    let detail = h.wait_signed(&session_id, WAIT).await;
    assert_upload_verifies(&detail, &sim);
    let attempts = sign_attempts(&detail);
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].0, "retry");
    assert!(attempts[0].1.contains("Err:Custom50070"), "{attempts:?}");
    assert_eq!(attempts[1].0, "signed");
    let at: Vec<i64> = detail["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["step"] == "sign")
        .map(|a| a["at"].as_i64().unwrap())
        .collect();
    assert!(at[1] - at[0] >= 900, "retried after its backoff (about 1 s): {at:?}");
    let stats = sim.stats();
    assert_eq!((stats.sign_requests, stats.signatures, stats.wrong_pins), (2, 1, 0));
    assert_eq!(h.controls().await["signing"]["paused"], false, "a reader error pauses nothing");
    h.stop().await;
}
}

both_stores! {
async fn a_wrong_pin_pauses_signing_until_resumed_and_each_resume_costs_one_try() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), Faults::default()).await;
    let h = start(&sim.ws_url(), WRONG_PIN).await;
    let first = h.request("PIN-1").await;
    wait_for_sim(&sim, WAIT, |s| s.wrong_pins == 1).await;

    // The pause is persisted before the refused item is written back.
    let detail = h.wait_until(&first, WAIT, |d| d["last_error"].is_string()).await;
    assert_eq!(detail["state"], "ready", "{detail:#}");
    let controls = h.controls().await;
    assert_eq!(controls["signing"]["paused"], false, "all signing goes on: {controls}");
    let signing = &controls["cards"][0]["signing"];
    assert_eq!(signing["paused"], true, "the card's own signing pauses: {controls}");
    let reason = signing["reason"].as_str().unwrap_or_else(|| panic!("no reason: {controls}"));
    assert!(reason.contains(TAG_WRONG_PIN), "the card's answer: {reason}");
    assert!(!reason.contains(WRONG_PIN) && !reason.contains(PIN), "no PIN in the reason: {reason}");
    assert!(signing["since"].is_i64(), "{controls}");
    assert_eq!(controls["uploading"]["paused"], false, "{controls}");
    let last_error = detail["last_error"].as_str().unwrap();
    assert!(!last_error.contains(WRONG_PIN), "{last_error}");

    // More work arrives; nothing reaches the card while paused.
    let more = [h.request("PIN-2").await, h.request("PIN-3").await];
    for session_id in &more {
        h.wait_prepared(session_id).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sim.stats().sign_requests, 1, "{:?}", sim.stats());
    for session_id in [&first, &more[0], &more[1]] {
        assert_eq!(h.detail(session_id).await["state"], "ready", "{session_id}");
    }

    // Resuming with the PIN still wrong costs exactly one more try, then pauses again.
    let (status, resumed) = h.post("/api/control/cards/card/signing/resume", String::new()).await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    assert_eq!(resumed["stage"], "signing");
    assert_eq!(resumed["cleared"]["reason"], reason, "{resumed}");
    wait_for_sim(&sim, WAIT, |s| s.wrong_pins == 2).await;
    let deadline = Instant::now() + WAIT;
    while h.controls().await["cards"][0]["signing"]["paused"] != true {
        assert!(Instant::now() < deadline, "paused again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = sim.stats();
    assert_eq!((stats.sign_requests, stats.wrong_pins, stats.signatures), (2, 2, 0), "{stats:?}");
    assert!(!stats.locked, "the card keeps its last try");
    for session_id in [&first, &more[0], &more[1]] {
        assert_eq!(h.detail(session_id).await["state"], "ready", "{session_id}");
    }
    h.stop().await;
}
}

both_stores! {
async fn after_a_refusal_and_a_resume_the_item_is_signed() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), Faults { wrong_pin: 1, ..Faults::default() }).await;
    let h = start(&sim.ws_url(), PIN).await;
    let session_id = h.request("RESUME").await;
    wait_for_sim(&sim, WAIT, |s| s.wrong_pins == 1).await;
    h.wait_until(&session_id, WAIT, |d| d["last_error"].is_string()).await;
    assert_eq!(h.controls().await["cards"][0]["signing"]["paused"], true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(h.detail(&session_id).await["state"], "ready");
    assert_eq!(sim.stats().sign_requests, 1, "nothing retried on its own");

    let (status, resumed) = h.post("/api/control/cards/card/signing/resume", String::new()).await;
    assert_eq!(status, StatusCode::OK, "{resumed}");
    let resumed_at = Instant::now();
    let detail = h.wait_signed(&session_id, WAIT).await;
    assert!(resumed_at.elapsed() < Duration::from_secs(3), "signed soon after the resume");
    assert_upload_verifies(&detail, &sim);
    let controls = h.controls().await;
    assert_eq!(controls["cards"][0]["signing"], json!({"paused": false}), "{controls}");
    let stats = sim.stats();
    assert_eq!((stats.sign_requests, stats.wrong_pins, stats.signatures), (2, 1, 1));
    // A second resume finds nothing to clear.
    let (status, resumed) = h.post("/api/control/cards/card/signing/resume", String::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(resumed.get("cleared").is_none(), "{resumed}");
    h.stop().await;
}
}

both_stores! {
async fn a_thirty_second_signer_outage_delays_items_but_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), Faults::default()).await;
    let addr = sim.ws_addr();
    let cert_no = sim.cert_no().clone();
    let h = start(&sim.ws_url(), PIN).await;
    // Connected and signing before the outage.
    let before = h.request("OUT-0").await;
    h.wait_signed(&before, WAIT).await;
    sim.stop().await;

    let mut sessions = Vec::new();
    for i in 1..=10 {
        sessions.push(h.request(&format!("OUT-{i}")).await);
    }
    for session_id in &sessions {
        h.wait_prepared(session_id).await;
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    // Every item is still ready to sign: none signed, none given up. (Not every one has been
    // tried: each attempt first waits out the client's reconnection backoff, up to 10 s.)
    let mut tried = 0;
    for session_id in &sessions {
        let detail = h.detail(session_id).await;
        assert_eq!(detail["state"], "ready", "{detail:#}");
        if let Some(error) = detail["last_error"].as_str() {
            assert!(error.contains("unavailable"), "{error}");
            tried += 1;
        }
    }
    assert!(tried > 0, "some items were tried during the outage");
    assert_eq!(h.controls().await["signing"]["paused"], false, "an outage pauses nothing");

    // The control comes back on the same address with the same card.
    let sim = start_sim_at(addr, dir.path(), Faults::default()).await;
    assert_eq!(sim.cert_no(), &cert_no);
    let back = Instant::now();
    for session_id in &sessions {
        let detail = h.wait_signed(session_id, Duration::from_secs(75)).await;
        assert_upload_verifies(&detail, &sim);
    }
    let took = back.elapsed();
    eprintln!("{tried} of 10 tried during the outage; all 10 signed {took:?} after the control came back");
    let stats = sim.stats();
    assert_eq!((stats.signatures, stats.wrong_pins), (10, 0), "{stats:?}");
    let signed = h.get("/api/requests?state=signed&limit=500").await;
    assert_eq!(signed["requests"].as_array().unwrap().len(), 11, "{signed:#}");
    h.stop().await;
}
}
