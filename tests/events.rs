//! `GET /api/events` through a real socket, read as a browser's `fetch()` reads it: a
//! snapshot first, the requests that changed within about a second, counts once a second, a
//! fresh snapshot after a reconnect and when another process changed something.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

mod common;

use common::events::{Events, lists};
use common::{ADMIN_TOKEN, Harness, VIEWER};

/// The tick is 1 s; the rest is room for a loaded machine.
const WITHIN: Duration = Duration::from_secs(3);

fn sections() -> String {
    common::named_tokens() + "[signer]\npin = \"1\"\n[customs]\nenvironment = \"test\"\n"
}

both_stores! {
async fn changes_arrive_within_a_second_and_a_reconnect_starts_from_a_snapshot() {
    let h = Harness::start(&sections()).await;
    assert_eq!(h.get_as(None, "/api/events").await.0, StatusCode::UNAUTHORIZED);

    let mut events = Events::open(&h, VIEWER).await;
    let (name, first) = events.next(WITHIN).await.expect("a snapshot at once");
    assert_eq!(name, "snapshot");
    assert_eq!(first["status"]["states"]["waiting"], 0, "{first:#}");

    h.customs_call("SO-1", "S-1").await;
    let called = Instant::now();
    events.wait_for("requests", WITHIN, |data| lists(data, "S-1", "waiting")).await;
    let took = called.elapsed();
    println!("customs call committed → its event: {took:?}");
    let status = events.wait_for("status", WITHIN, |s| s["states"]["waiting"] == 1).await;
    assert_eq!(status["at_risk_secs"], 60, "the whole summary: {status:#}");

    // Its payment data comes: it is prepared, and the stream says so.
    h.platform_pays("T-1", &["SO-1"]).await;
    events.wait_for("requests", WITHIN, |data| lists(data, "S-1", "ready")).await;

    // Counts come once a second, not more often.
    let mut at = Vec::new();
    while at.len() < 3 {
        if let Some((name, _)) = events.next(WITHIN).await
            && name == "status"
        {
            at.push(Instant::now());
        }
    }
    assert!(at.windows(2).all(|w| w[1] - w[0] >= Duration::from_millis(900)), "{at:?}");

    // A reconnect starts from a fresh snapshot.
    drop(events);
    let mut again = Events::open(&h, ADMIN_TOKEN).await;
    let (name, snapshot) = again.next(WITHIN).await.unwrap();
    assert_eq!(name, "snapshot");
    assert_eq!(snapshot["status"]["states"]["ready"], 1, "{snapshot:#}");
    h.stop().await;
}
}

both_stores! {
async fn what_another_process_changed_comes_as_a_snapshot() {
    let h = Harness::start(&sections()).await;
    let mut events = Events::open(&h, VIEWER).await;
    assert_eq!(events.next(WITHIN).await.unwrap().0, "snapshot");
    // The command line works on the database directly, never through this process.
    let other = h.other_store().await;
    other.pause(customs179_store::Stage::Signing, "card maintenance", common::now_ms()).await.unwrap();
    let snapshot = events
        .wait_for("snapshot", WITHIN, |data| data["status"]["signing"]["reason"] == "card maintenance")
        .await;
    assert!(snapshot["status"]["cards"][0]["paused"].is_null(), "the card's own pause is not all signing's");
    other.close().await;
    h.stop().await;
}
}

both_stores! {
async fn a_stop_ends_the_stream() {
    let h = Harness::start(&sections()).await;
    let mut events = Events::open(&h, VIEWER).await;
    assert_eq!(events.next(WITHIN).await.unwrap().0, "snapshot");
    let started = Instant::now();
    h.stop().await;
    println!("stopped with a stream open in {:?}", started.elapsed());
    // The answer ends properly: no more events, no error.
    loop {
        match tokio::time::timeout(WITHIN, events.response.chunk()).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => break,
            other => panic!("the stream did not end cleanly: {other:?}"),
        }
    }
}
}
