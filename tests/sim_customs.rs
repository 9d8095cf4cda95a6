//! `customs179 sim customs` as a real process: `serve` stores an upload and reports it, and
//! stops cleanly on a signal; `call` plays customs' first call against a small platform
//! endpoint and sets its exit code from the answers.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::post;
use customs179_core::{PaymentRecord, PreSign, RecordRules, form_field};
use customs179_sim::keys::{Algo, CardKeys};
use serde_json::{Value, json};

mod common;

use common::{Sim, free_addr, http_client};

const EBP_CODE: &str = "4404840022";

fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn client() -> reqwest::Client {
    http_client(Some(Duration::from_secs(15)))
}

fn spawn_serve(addr: SocketAddr, certs: &Path) -> Sim {
    let child = Command::new(env!("CARGO_BIN_EXE_customs179"))
        .args([
            "sim",
            "customs",
            "serve",
            "--listen",
            &addr.to_string(),
            "--ebp-code",
            "1111111111,4404840022",
        ])
        .arg("--certs")
        .arg(certs)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Sim(child)
}

/// A valid upload body for `session_id`, signed by `keys`.
fn upload_body(keys: &CardKeys, session_id: &str) -> String {
    let mut record =
        PaymentRecord::parse(include_str!("data/complete-record.json"), RecordRules::COMPLETE).unwrap();
    record.head.ebp_code = Some(EBP_CODE.to_owned());
    let presign = PreSign::build(&record, session_id, now_ms()).unwrap();
    let sign_value = keys.sign(presign.as_bytes()).unwrap();
    presign.upload_body(keys.cert_no().as_str(), &sign_value).into_string()
}

#[tokio::test]
async fn sim_customs_serve_stores_an_upload_and_reports_it() {
    let keys = CardKeys::generate(Algo::Sm2).unwrap();
    let certs = tempfile::tempdir().unwrap();
    std::fs::write(certs.path().join("card.pem"), keys.cert_pem().unwrap()).unwrap();
    std::fs::write(certs.path().join("README.txt"), "the registered card").unwrap();
    let addr = free_addr();
    let mut sim = spawn_serve(addr, certs.path());
    sim.wait_until_listening(addr).await;

    let http = client();
    let body = upload_body(&keys, "S-CLI-1");
    let answer: Value = http
        .post(format!("http://{addr}/ceb2grab/grab/realTimeDataUpload"))
        .form(&[("payExInfoStr", body.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["code"], "10000", "{answer}");
    assert_eq!(answer["message"], "上传成功");

    let report: Value = http.get(format!("http://{addr}/report")).send().await.unwrap().json().await.unwrap();
    let uploads = report["uploads"].as_array().unwrap();
    assert_eq!(uploads.len(), 1, "{report}");
    assert_eq!(uploads[0]["session_id"], "S-CLI-1");
    assert_eq!(uploads[0]["cert_no"], keys.cert_no().as_str());
    assert_eq!(uploads[0]["code"], "10000");
    assert_eq!(uploads[0]["stored"], true);
    assert_eq!(uploads[0]["violations"], json!([]));
    assert_eq!(report["totals"]["stored"], 1);
    assert_eq!(report["ebp_codes"], json!(["1111111111", EBP_CODE]));

    #[cfg(unix)]
    {
        let (status, stderr) = sim.stop_with("TERM").await;
        assert!(status.success(), "{status}");
        assert!(stderr.contains(&format!("http://{addr}/ceb2grab/grab/realTimeDataUpload")), "{stderr}");
        assert!(stderr.contains("README.txt"), "the skipped file is named: {stderr}");
    }
}

#[test]
fn sim_customs_serve_refuses_a_missing_certs_dir_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_customs179"))
        .args(["sim", "customs", "serve", "--listen", "127.0.0.1:0", "--ebp-code", EBP_CODE, "--certs"])
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing"), "{stderr}");
}

/// A platform endpoint answering `answer`, recording each call's User-Agent and openReq.
async fn platform(answer: &'static str) -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = Router::new().route(
        "/customs179/open",
        post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let record = record.clone();
            async move {
                let agent =
                    headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let open_req = form_field(&body, "openReq")
                    .ok()
                    .and_then(|text| serde_json::from_str(&text).ok())
                    .unwrap_or(Value::Null);
                record.lock().unwrap().push((agent, open_req));
                ([("content-type", "application/json;charset=utf-8")], answer)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/customs179/open"), seen)
}

async fn call(url: &str, extra: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_customs179"))
        .args(["sim", "customs", "call", "--url", url, "--order", "SO-CLI-1"])
        .args(extra)
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sim_customs_call_exits_0_when_every_call_gets_10000() {
    let (url, seen) = platform(r#"{"code":"10000","message":"","serviceTime":1533271903898}"#).await;
    let output = call(&url, &["--count", "3", "--rate", "20"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout.lines().filter(|line| line.contains(" 10000 ")).count(), 3, "{stdout}");
    assert!(stdout.contains("3 calls: 3 answered 10000, 0 failed"), "{stdout}");

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for (agent, open_req) in seen.iter() {
        assert_eq!(agent, "Apache-HttpClient/4.5.3 (Java/1.8.0_60)");
        assert_eq!(open_req["orderNo"], "SO-CLI-1");
        let session_id = open_req["sessionID"].as_str().unwrap();
        assert!(stdout.contains(session_id), "each sessionID is printed: {stdout}");
        assert!(open_req["serviceTime"].is_u64(), "{open_req}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sim_customs_call_exits_1_on_another_code_and_2_when_unreachable() {
    let (url, _) = platform(r#"{"code":"20000","message":"openReq is missing"}"#).await;
    let output = call(&url, &[]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAILED: code 20000"), "{stdout}");

    let closed = free_addr();
    let output = call(&format!("http://{closed}/"), &[]).await;
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unreachable"));

    let output = call(&url, &["--rate", "0"]).await;
    assert_eq!(output.status.code(), Some(2));
}
