//! The operators' identity: tokens with names and roles (401 without a valid token, 403 for a
//! viewer's write), pauses with a reason and the operator's name, and every action in the
//! audit log, through the admin API and the command line.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::json;

mod common;

use common::serve::ServeProcess;
use common::{ADMIN_TOKEN, ALICE, Harness, VIEWER, output_text};

fn sections() -> String {
    common::named_tokens()
        + r#"
[signer]
pin = "1"

[customs]
environment = "test"
"#
}

both_stores! {
async fn viewers_read_operators_act_and_strangers_get_nothing() {
    let h = Harness::start(&sections()).await;
    h.customs_call("SO-1", "S-1").await;
    for path in
        ["/api/status", "/api/control", "/api/requests", "/api/requests/S-1", "/api/audit", "/metrics"]
    {
        assert_eq!(h.get_as(Some(VIEWER), path).await.0, StatusCode::OK, "{path}");
        assert_eq!(h.get_as(Some(ALICE), path).await.0, StatusCode::OK, "{path}");
        assert_eq!(
            h.get_as(Some("not-a-token-at-all-0000"), path).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(h.get_as(None, path).await.0, StatusCode::UNAUTHORIZED, "{path}");
    }
    let writes = [
        ("/api/control/signing/pause", json!({"reason": "x"}).to_string()),
        ("/api/control/signing/resume", String::new()),
        ("/api/requests/S-1/replay", String::new()),
    ];
    for (path, body) in &writes {
        let (status, answer) = h.post_as(Some(VIEWER), path, body.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains("may only read"), "{answer}");
        assert_eq!(h.post_as(None, path, body.clone()).await.0, StatusCode::UNAUTHORIZED, "{path}");
    }
    // A viewer's refused writes changed nothing and are not actions.
    assert_eq!(h.controls().await["signing"]["paused"], false);
    assert_eq!(h.get("/api/audit").await["entries"], json!([]));
    // The platform's push needs an operator or the payments token, not a viewer.
    let (status, _) = h.post_as(Some(VIEWER), "/api/payments", "[]").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    h.stop().await;
}
}

both_stores! {
async fn pauses_carry_a_reason_and_a_name_and_every_action_is_audited() {
    let h = Harness::start(&sections()).await;
    let (status, answer) = h.post_as(Some(ALICE), "/api/control/uploading/pause", "{}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a pause needs a reason: {answer}");
    let (status, _) = h.post_as(Some(ALICE), "/api/control/uploading/pause", "{\"why\": 1}").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let nul = r#"{"reason": "maintenance\u0000"}"#;
    let (status, answer) = h.post_as(Some(ALICE), "/api/control/uploading/pause", nul).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no text holds a NUL: {answer}");

    let (status, answer) = h
        .post_as(
            Some(ALICE),
            "/api/control/uploading/pause",
            json!({"reason": "customs maintenance"}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let uploading = &h.controls().await["uploading"];
    assert_eq!(
        (&uploading["paused"], &uploading["reason"], &uploading["by"]),
        (&json!(true), &json!("customs maintenance"), &json!("alice"))
    );
    assert!(uploading["since"].as_i64().unwrap() > 0);

    let (status, answer) = h
        .post_as(
            Some(ADMIN_TOKEN),
            "/api/control/uploading/resume",
            json!({"reason": "it is back"}).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["cleared"]["by"], "alice");

    let entries = h.get("/api/audit").await["entries"].clone();
    let seen: Vec<(&str, &str, &str)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [("admin", "resume uploading", "it is back"), ("alice", "pause uploading", "customs maintenance")]
    );
    let (status, _) = h.get_as(Some(VIEWER), "/api/audit?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let page = h.get("/api/audit?limit=1").await;
    let older = h.get(&format!("/api/audit?before={}", page["next"])).await;
    assert_eq!(older["entries"][0]["actor"], "alice");
    h.stop().await;
}
}

both_stores! {
async fn the_command_line_audits_its_actions_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = ServeProcess::configure(dir.path(), &sections())
        .on_current_store()
        .await;
    serve.start().await;
    serve.customs_call("SO-1", "S-1").await;
    let (status, _) = serve
        .post_as(Some(ALICE), "/api/control/signing/pause", json!({"reason": "new card"}).to_string())
        .await;
    assert_eq!(status, StatusCode::OK);
    let resume = Command::new(env!("CARGO_BIN_EXE_customs179"))
        .args(["resume", "--config"])
        .arg(&serve.config)
        .args(["signing", "--reason", "card changed"])
        .env("USER", "ops-on-call")
        .output()
        .unwrap();
    assert!(resume.status.success(), "{}", output_text(&resume));
    let entries = serve.get("/api/audit").await["entries"].clone();
    assert_eq!(entries[0]["actor"], "command line (ops-on-call)");
    assert_eq!(entries[0]["action"], "resume signing");
    assert_eq!(entries[0]["reason"], "card changed");
    assert_eq!(entries[0]["count"], 1);

    // `status`: all well (the request waits, with its deadline far off), then a pause.
    let status = |serve: &ServeProcess| {
        Command::new(env!("CARGO_BIN_EXE_customs179"))
            .args(["status", "--config"])
            .arg(&serve.config)
            .output()
            .unwrap()
    };
    let quiet = status(&serve);
    assert_eq!(quiet.status.code(), Some(0), "{}", output_text(&quiet));
    assert!(common::stdout(&quiet).contains("waiting 1"), "{}", output_text(&quiet));
    let (code, _) = serve
        .post_as(Some(ALICE), "/api/control/uploading/pause", json!({"reason": "test"}).to_string())
        .await;
    assert_eq!(code, StatusCode::OK);
    let paused = status(&serve);
    assert_eq!(paused.status.code(), Some(1), "{}", output_text(&paused));
    assert!(output_text(&paused).contains("uploading    PAUSED by alice: test"), "{}", output_text(&paused));
    let _ = serve.terminate(std::time::Duration::from_secs(15)).await;
    let gone = status(&serve);
    assert_eq!(gone.status.code(), Some(1));
    assert!(common::stderr(&gone).contains("does not answer"), "{}", output_text(&gone));
}
}

both_stores! {
async fn lists_take_every_filter_and_refuse_bad_ones() {
    let h = Harness::start(&sections()).await;
    for (order, session) in [("SO-1", "A-1"), ("SO-2", "A-2"), ("SO-3", "B-3")] {
        h.customs_call(order, session).await;
    }
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["session_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&h.get("/api/requests?sort=deadline").await), ["A-1", "A-2", "B-3"]);
    // A request's detail carries each key once (its summary is flattened into it).
    let raw =
        h.client.get(format!("{}/api/requests/A-1", h.admin)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    let raw = raw.text().await.unwrap();
    assert_eq!(raw.matches("\"attempts\":").count(), 1, "{raw}");
    assert_eq!(raw.matches("\"step_attempts\":").count(), 1, "{raw}");
    assert_eq!(ids(&h.get("/api/requests?session_prefix=A-").await), ["A-2", "A-1"]);
    assert_eq!(ids(&h.get("/api/requests?at_risk=true&sort=deadline&limit=2").await), Vec::<String>::new());
    assert_eq!(ids(&h.get("/api/requests?late=false&state=waiting&order_no=SO-3").await), ["B-3"]);
    let since = common::now_ms() - 60_000;
    assert_eq!(ids(&h.get(&format!("/api/requests?since={since}&until=99999999999999")).await).len(), 3);
    for bad in [
        "sort=soonest",
        "late=yes",
        "at_risk=1",
        "since=yesterday",
        "since=-5",
        "since=10&until=5",
        "state=lost",
        "limit=0",
        "colour=red",
        "code=20001%0A",
        // No stored text holds a control character (PostgreSQL's text cannot hold a NUL).
        "order_no=SO-1%00",
        "session_id=A-1%00",
        "session_prefix=A%00",
        "order_no=SO%0A1",
    ] {
        let (status, answer) = h.get_as(Some(VIEWER), &format!("/api/requests?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {answer}");
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()), "{bad}: {answer}");
    }
    for path in ["/api/requests/A-1%00", "/api/requests/A%00/replay"] {
        let (status, answer) = if path.ends_with("replay") {
            h.post(path, "{}").await
        } else {
            h.get_as(Some(VIEWER), path).await
        };
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
    }
    h.stop().await;
}
}
