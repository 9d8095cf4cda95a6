//! Failures by cause and bulk replays: `GET /api/failures` groups failed requests, a dry run
//! of `POST /api/replays` captures them under a token, its confirmation replays only those
//! still unchanged, once; the command line goes through the same rules.

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

mod common;

use common::serve::ServeProcess;
use common::{ALICE, Api, Harness, VIEWER, output_text, stdout};

const NO_DATA: &str = "no payment data for this order after # s";

/// Requests whose payment never comes fail after a second; nothing is ever signed.
fn sections() -> String {
    common::named_tokens()
        + r#"
[signer]
url = "ws://127.0.0.1:1/"
pin = "12345678"

[customs]
environment = "test"

[payments]
give_up_after_secs = 1
"#
}

impl Api {
    /// Customs calls for an order whose payment never comes; the request fails.
    async fn failed_call(&self, session_id: &str) -> Value {
        self.customs_call(&format!("SO-{session_id}"), session_id).await;
        self.wait_for_state(session_id, "failed", Duration::from_secs(15)).await
    }

    async fn replay_steps(&self, session_id: &str) -> Vec<Value> {
        let detail = self.detail(session_id).await;
        detail["attempts"].as_array().unwrap().iter().filter(|a| a["step"] == "replay").cloned().collect()
    }

    async fn replays_as(&self, token: &str, body: Value) -> (StatusCode, Value) {
        self.post_as(Some(token), "/api/replays", body.to_string()).await
    }

    /// Polls `GET /api/replays/{id}` (as a viewer) until the job has finished.
    async fn finished(&self, id: &Value) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, job) = self.get_as(Some(VIEWER), &format!("/api/replays/{id}")).await;
            assert_eq!(status, StatusCode::OK, "{job}");
            if job["status"] == "finished" {
                return job;
            }
            assert!(Instant::now() < deadline, "replay {id} did not finish: {job:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

both_stores! {
async fn a_confirmed_replay_acts_only_on_what_its_dry_run_captured_and_once() {
    let h = Harness::start(&sections()).await;
    for session_id in ["S-A", "S-B", "S-C"] {
        h.failed_call(session_id).await;
    }
    let (status, answer) =
        h.replays_as(VIEWER, json!({"filter": {"state": "failed"}, "dry_run": true})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a viewer may not even make a dry run: {answer}");
    let (status, dry) = h.replays_as(ALICE, json!({"filter": {"state": "failed"}, "dry_run": true})).await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!((&dry["dry_run"], &dry["count"]), (&json!(true), &json!(3)));
    let token = dry["token"].as_str().unwrap().to_owned();
    let (_, shown) = h.get_as(Some(VIEWER), &format!("/api/replays/{}", dry["id"])).await;
    assert_eq!((&shown["status"], &shown["to_do"]), (&json!("awaiting_confirmation"), &json!(3)));
    assert!(shown.get("token").is_none(), "the token is only for who made the dry run: {shown}");

    // After the dry run: another request fails, and S-A is replayed by hand and fails again.
    h.failed_call("S-D").await;
    let (status, _) = h.post("/api/requests/S-A/replay", "").await;
    assert_eq!(status, StatusCode::OK);
    h.wait_until("S-A", Duration::from_secs(15), |d| {
        d["state"] == "failed" && d["attempts"].as_array().unwrap().iter().any(|a| a["step"] == "replay")
    })
    .await;

    let (status, answer) = h.replays_as(ALICE, json!({"confirm": token})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a reason is required: {answer}");
    let (status, _) = h.replays_as(ALICE, json!({"confirm": token, "reason": "  "})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h.replays_as(VIEWER, json!({"confirm": token, "reason": "x"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, job) =
        h.replays_as(ALICE, json!({"confirm": token, "reason": "the platform resent the data"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!((&job["count"], &job["confirmed_by"]), (&json!(3), &json!("alice")));
    let done = h.finished(&job["id"]).await;
    assert_eq!((&done["replayed"], &done["skipped"], &done["to_do"]), (&json!(2), &json!(1), &json!(0)));
    assert_eq!(done["skipped_session_ids"], json!(["S-A"]), "S-A changed since the dry run");

    for session_id in ["S-B", "S-C"] {
        let steps = h.replay_steps(session_id).await;
        assert_eq!(steps.len(), 1, "{session_id}: {steps:?}");
        assert!(steps[0]["detail"].as_str().unwrap().contains("bulk replay"), "{steps:?}");
    }
    assert_eq!(h.replay_steps("S-A").await.len(), 1, "only the replay by hand");
    assert_eq!(h.replay_steps("S-D").await, Vec::<Value>::new(), "it failed after the dry run");

    // Single use; and neither refusals nor dry runs are actions.
    let (status, answer) = h.replays_as(ALICE, json!({"confirm": token, "reason": "again"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert!(answer.to_string().contains("already used"), "{answer}");
    let (status, _) = h.replays_as(ALICE, json!({"confirm": "not-a-token", "reason": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let entries = h.get("/api/audit").await["entries"].clone();
    let replays: Vec<_> = entries.as_array().unwrap().iter().filter(|e| e["actor"] == "alice").collect();
    assert_eq!(replays.len(), 1, "{entries:#}");
    let entry = replays[0];
    assert_eq!(
        (&entry["action"], &entry["reason"], &entry["count"], &entry["target"]),
        (
            &json!("replay"),
            &json!("the platform resent the data"),
            &json!(3),
            &json!(format!("replays/{}", job["id"]))
        )
    );

    // What a bulk replay refuses.
    for body in [
        json!({"filter": {"state": "delivered"}, "dry_run": true}),
        json!({"filter": {"state": "failed"}}),
        json!({"filter": {}, "group": "x", "dry_run": true}),
        json!({"filter": {"since": 5, "until": 5}, "dry_run": true}),
        json!({"filter": {"sate": "failed"}, "dry_run": true}),
        json!({"session_ids": [], "dry_run": true}),
        json!({"confirm": token, "reason": "x", "dry_run": true}),
        json!({}),
        // No id holds a control character, no text a NUL (PostgreSQL's text cannot).
        json!({"session_ids": ["S-B\u{0}"], "dry_run": true}),
        json!({"group": "g\u{0}", "dry_run": true}),
        json!({"filter": {"order_no": "SO\u{0}"}, "dry_run": true}),
        json!({"confirm": token, "reason": "resent\u{0}"}),
    ] {
        let (status, answer) = h.replays_as(ALICE, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
    }
    let (status, answer) = h.replays_as(ALICE, json!({"confirm": "t\u{0}", "reason": "x"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no such token: {answer}");
    assert_eq!(h.get_as(Some(VIEWER), "/api/replays/999").await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.get_as(Some(VIEWER), "/api/replays/x").await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.get_as(None, "/api/failures").await.0, StatusCode::UNAUTHORIZED);
    h.stop().await;
}
}

both_stores! {
async fn failures_are_grouped_and_a_group_or_a_list_is_replayed() {
    let h = Harness::start(&sections()).await;
    let before = common::now_ms();
    for session_id in ["S-1", "S-2"] {
        h.failed_call(session_id).await;
    }
    // Paid, but never signed: it stays ready.
    h.platform_pays("T-PAID", &["SO-PAID"]).await;
    h.customs_call("SO-PAID", "S-PAID").await;
    h.wait_for_state("S-PAID", "ready", Duration::from_secs(5)).await;

    let (status, failures) = h.get_as(Some(VIEWER), "/api/failures").await;
    assert_eq!(status, StatusCode::OK, "{failures}");
    assert_eq!(failures["total"], 2);
    let groups = failures["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{failures:#}");
    let group = &groups[0];
    assert_eq!(
        (&group["stage"], &group["kind"], &group["count"]),
        (&json!("payment data"), &json!(NO_DATA), &json!(2))
    );
    let (oldest, newest) = (group["oldest"].as_i64().unwrap(), group["newest"].as_i64().unwrap());
    assert!(before <= oldest && oldest <= newest && newest <= common::now_ms(), "{group}");
    assert!(group["first_failed_at"].as_i64().unwrap() >= oldest, "{group}");
    assert_eq!(group["example"]["session_id"], "S-2", "the newest: {group}");
    assert_eq!(h.get("/api/failures").await, failures, "the same on every call, its id too");

    let (status, dry) =
        h.replays_as(ALICE, json!({"session_ids": ["S-1", "S-PAID", "S-NONE"], "dry_run": true})).await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["count"], 1);
    assert_eq!(
        dry["not_taken"],
        json!([{"session_id": "S-PAID", "state": "ready"}, {"session_id": "S-NONE", "state": null}])
    );

    let (status, dry) = h.replays_as(ALICE, json!({"group": group["id"], "dry_run": true})).await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["count"], 2);
    let (status, job) = h.replays_as(ALICE, json!({"confirm": dry["token"], "reason": "data came"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let done = h.finished(&job["id"]).await;
    assert_eq!((&done["replayed"], &done["skipped"]), (&json!(2), &json!(0)));
    assert_eq!(done["selection"], json!({"group": group["id"]}));
    assert_eq!(h.replay_steps("S-1").await.len(), 1);
    assert_eq!(h.replay_steps("S-PAID").await.len(), 0);
    h.stop().await;
}
}

fn replay_command(serve: &ServeProcess, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_customs179"))
        .args(["replay", "--config"])
        .arg(&serve.config)
        .args(args)
        .env("USER", "ops-on-call")
        .output()
        .unwrap()
}

both_stores! {
async fn the_command_line_replays_failed_requests_in_bulk_under_the_same_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = ServeProcess::configure(dir.path(), &sections())
        .on_current_store()
        .await;
    serve.start().await;
    for session_id in ["S-X1", "S-X2"] {
        serve.failed_call(session_id).await;
    }

    let dry = replay_command(&serve, &["--state", "failed", "--dry-run"]);
    assert!(dry.status.success(), "{}", output_text(&dry));
    assert!(stdout(&dry).contains("2 failed request(s) would be replayed"), "{}", output_text(&dry));
    let future = (common::now_ms() + 3_600_000).to_string();
    let none = replay_command(&serve, &["--state", "failed", "--since", &future, "--dry-run"]);
    assert!(stdout(&none).contains("0 failed request(s)"), "{}", output_text(&none));
    let one = replay_command(&serve, &["--session", "S-X1", "--dry-run"]);
    assert!(stdout(&one).contains("S-X1 would be"), "{}", output_text(&one));
    assert_eq!(serve.replay_steps("S-X1").await.len(), 0, "dry runs change nothing");

    for (args, why) in [
        (&["--state", "failed"][..], "a bulk replay needs a reason"),
        (&["--state", "delivered", "--reason", "x"][..], "only failed requests in bulk"),
        (&["--session", "S-X1", "--state", "failed", "--reason", "x"][..], "one or the other"),
        (&["--reason", "x"][..], "one of them"),
        (&["--session", "S-X1", "--since", "1"][..], "--since goes with --state"),
        (&["--state", "failed", "--since", "yesterday", "--reason", "x"][..], "no time"),
    ] {
        let refused = replay_command(&serve, args);
        assert_eq!(refused.status.code(), Some(2), "{why}: {}", output_text(&refused));
    }

    let bulk = replay_command(&serve, &["--state", "failed", "--since", "1h", "--reason", "platform fixed"]);
    assert!(bulk.status.success(), "{}", output_text(&bulk));
    assert!(stdout(&bulk).contains("2 failed request(s) replayed, 0 skipped"), "{}", output_text(&bulk));
    for session_id in ["S-X1", "S-X2"] {
        assert_eq!(serve.replay_steps(session_id).await.len(), 1, "{session_id}");
    }
    let entries = serve.get("/api/audit").await["entries"].clone();
    assert_eq!(entries[0]["actor"], "command line (ops-on-call)");
    assert_eq!((&entries[0]["action"], &entries[0]["count"]), (&json!("replay"), &json!(2)));
    assert_eq!(entries[0]["reason"], "platform fixed");
    assert_eq!(entries.as_array().unwrap().len(), 1, "dry runs are not actions: {entries:#}");
    // The running service took them up: they wait again, and fail again without data.
    serve
        .wait_until("S-X2", Duration::from_secs(15), |d| {
            d["state"] == "failed"
                && d["attempts"].as_array().unwrap().iter().filter(|a| a["step"] == "payment data").count()
                    == 2
        })
        .await;
    let _ = serve.terminate(Duration::from_secs(15)).await;
}
}
