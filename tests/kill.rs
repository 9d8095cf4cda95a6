//! `customs179 serve` as a real process, killed while customs' calls are in
//! flight: every call answered 10000 must be in the database afterwards.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinSet;

mod common;

use common::serve::ServeProcess;
use common::{ADMIN_TOKEN, http_client, listed_requests, now_ms};

/// Distinctive, so that finding it in a log cannot be a coincidence.
const PIN: &str = "pin-7f3a9c1e";
const SENDERS: usize = 6;

// ---------------------------------------------------------------------------
// Helpers.

/// `serve` on the database in `dir` (or a schema of PostgreSQL's, when the test runs on
/// it), not yet started.
async fn serve(dir: &Path) -> ServeProcess {
    ServeProcess::configure(
        dir,
        &format!("[signer]\npin = \"{PIN}\"\n[customs]\nenvironment = \"test\"\n[log]\nlevel = \"info\"\n"),
    )
    .on_current_store()
    .await
}

fn intake_url(serve: &ServeProcess) -> String {
    format!("{}/platDataOpen", serve.intake)
}

fn client() -> reqwest::Client {
    http_client(Some(Duration::from_secs(15)))
}

/// Sends customs calls with unique sessionIDs until one fails, returning the
/// sessionIDs answered HTTP 200 with code 10000.
async fn send_until_failure(
    client: reqwest::Client,
    url: String,
    prefix: String,
    answered_count: Arc<AtomicUsize>,
) -> Vec<String> {
    let mut answered = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0.. {
        if Instant::now() > deadline {
            break;
        }
        let session_id = format!("{prefix}-{i}");
        let open_req =
            serde_json::json!({ "orderNo": "SO-kill", "sessionID": session_id, "serviceTime": now_ms() })
                .to_string();
        let Ok(response) = client.post(&url).form(&[("openReq", open_req)]).send().await else {
            break;
        };
        let status = response.status();
        let Ok(body) = response.bytes().await else {
            break;
        };
        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status == 200 && answer["code"] == "10000" {
            answered.push(session_id);
            answered_count.fetch_add(1, Ordering::Relaxed);
        } else {
            assert_ne!(answer["code"], "10000", "10000 with HTTP {status}");
            break;
        }
    }
    answered
}

/// Starts `SENDERS` senders against `url`.
fn start_senders(
    client: &reqwest::Client,
    url: &str,
    prefix: &str,
) -> (JoinSet<Vec<String>>, Arc<AtomicUsize>) {
    let answered_count = Arc::new(AtomicUsize::new(0));
    let mut senders = JoinSet::new();
    for sender in 0..SENDERS {
        senders.spawn(send_until_failure(
            client.clone(),
            url.to_owned(),
            format!("{prefix}-{sender}"),
            answered_count.clone(),
        ));
    }
    (senders, answered_count)
}

async fn wait_for_answers(answered_count: &AtomicUsize, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while answered_count.load(Ordering::Relaxed) < at_least {
        assert!(Instant::now() < deadline, "fewer than {at_least} calls answered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn join_senders(mut senders: JoinSet<Vec<String>>) -> HashSet<String> {
    let mut answered = HashSet::new();
    let deadline = Duration::from_secs(20);
    while let Some(result) = tokio::time::timeout(deadline, senders.join_next()).await.expect("senders stop")
    {
        answered.extend(result.unwrap());
    }
    answered
}

fn assert_all_stored(answered: &HashSet<String>, stored: &HashSet<String>) {
    let mut lost: Vec<&String> = answered.difference(stored).collect();
    lost.sort();
    assert!(lost.is_empty(), "{} answered 10000 but not stored: {lost:?}", lost.len());
}

// ---------------------------------------------------------------------------

both_stores! {
async fn sigkill_loses_no_answered_request() {
    let dir = tempfile::tempdir().unwrap();
    let client = client();

    let mut serve = serve(dir.path()).await;
    serve.start().await;
    let (senders, answered_count) = start_senders(&client, &intake_url(&serve), "S-kill");
    wait_for_answers(&answered_count, 200).await;
    serve.kill();
    let answered = join_senders(senders).await;
    assert!(answered.len() >= 200, "only {} answered", answered.len());

    let stored = serve.stored_session_ids().await;
    assert_all_stored(&answered, &stored);
    // The counts by state, kept in the same transactions, survived the kill exactly.
    let (kept, counted) = serve.counts_kept_and_counted().await;
    assert_eq!(kept, counted);

    // Restarted on the same database, the service lists them all.
    serve.start().await;
    let listed = listed_requests(&client, &serve.admin, ADMIN_TOKEN).await;
    let listed_ids: HashSet<String> =
        listed.iter().map(|r| r["session_id"].as_str().unwrap().to_owned()).collect();
    assert_all_stored(&answered, &listed_ids);
    // Read again: on PostgreSQL a commit the killed process had sent may still end on the
    // server after the first read (stored, never answered: customs calls again, and the
    // sessionID is already there).
    let stored_now = serve.stored_session_ids().await;
    assert!(stored.is_subset(&stored_now));
    assert_eq!(listed_ids, stored_now, "the admin API lists what the database holds");
    assert!(listed.iter().all(|r| r["state"] == "waiting"));
    let status = serve.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}:\n{}", serve.log());
}
}

both_stores! {
/// A SIGTERM that comes while `serve` is still starting (its ports already
/// listen, so customs' calls are already being answered) must stop it
/// gracefully too.
async fn sigterm_as_soon_as_the_ports_listen_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = serve(dir.path()).await;
    serve.spawn();
    serve.wait_until_listening().await;
    let status = serve.terminate(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", serve.log());
}
}

both_stores! {
async fn sigterm_stops_with_status_0_keeping_every_answered_request() {
    let dir = tempfile::tempdir().unwrap();
    let client = client();

    let mut serve = serve(dir.path()).await;
    serve.start().await;
    let (senders, answered_count) = start_senders(&client, &intake_url(&serve), "S-term");
    wait_for_answers(&answered_count, 50).await;
    let status = serve.terminate(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", serve.log());
    let answered = join_senders(senders).await;
    assert!(answered.len() >= 50, "only {} answered", answered.len());

    assert_all_stored(&answered, &serve.stored_session_ids().await);
    // The log names what it did, and never a secret.
    let log = serve.log();
    let one = answered.iter().next().unwrap();
    assert!(log.contains("customs179 started") && log.contains(one.as_str()), "{log}");
    assert!(!log.contains(PIN) && !log.contains(ADMIN_TOKEN), "a secret is in the log:\n{log}");
    // The port is released: nothing answers any more.
    assert!(tokio::net::TcpStream::connect(serve.intake.trim_start_matches("http://")).await.is_err());
}
}
