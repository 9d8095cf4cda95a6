//! `customs179 status`: the service's summary as a table, for a terminal or a cron check.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::Failure;

/// Prints the running service's summary (`GET /api/status` on its admin listener, with the
/// configuration's first token) as a table: requests per state, at risk and late, the
/// oldest pending request, the last hour, pauses, the card, customs and every task.
///
/// Exits 1 when anything is at risk or late now, a stage is paused, a task is not beating, or
/// the service does not answer; 0 when all is well; 2 for a bad configuration.
#[derive(clap::Args)]
pub struct Args {
    /// The TOML configuration file of the service.
    #[arg(long)]
    config: PathBuf,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let config = super::load_config(&args.config)?;
    let token = config.admin.tokens.first().map(|t| t.token.expose().to_owned()).unwrap_or_default();
    let url = format!("http://{}/api/status", config.admin.listen);
    // reqwest is built without a default crypto provider; ring is ours.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let status = super::block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Failure::Check(e.to_string()))?;
        let answer = client.get(&url).bearer_auth(token).send().await.map_err(|e| {
            Failure::Check(format!("the service does not answer at {url}: {}", without_url(&e)))
        })?;
        if !answer.status().is_success() {
            return Err(Failure::Check(format!("{url} answered HTTP {}", answer.status())));
        }
        answer.json::<Value>().await.map_err(|e| Failure::Check(format!("{url}: {e}")))
    })?;
    let (table, problems) = render(&status);
    print!("{table}");
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::Check(format!("needs attention: {}", problems.join("; "))))
    }
}

fn without_url(e: &reqwest::Error) -> String {
    let text = e.to_string();
    e.url().map_or(text.clone(), |url| text.replace(url.as_str(), "the admin listener"))
}

/// The table, and what needs attention.
fn render(status: &Value) -> (String, Vec<String>) {
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let states = ["waiting", "ready", "signed", "delivered", "failed"];
    let counts: Vec<String> = states.iter().map(|s| format!("{s} {}", n(&status["states"][*s]))).collect();
    lines.push(format!("requests     {}", counts.join(", ")));
    let (at_risk, late) = (n(&status["at_risk"]), n(&status["late"]));
    lines.push(format!(
        "at risk      {at_risk} (under {} s left)   late {late}",
        status["at_risk_secs"].as_u64().unwrap_or(0)
    ));
    if at_risk > 0 {
        problems.push(format!("{at_risk} at risk"));
    }
    if late > 0 {
        problems.push(format!("{late} late"));
    }
    let oldest =
        status["oldest_pending_ms"].as_i64().map_or("none".to_owned(), |ms| format!("{} s", ms / 1000));
    lines.push(format!("oldest       {oldest} pending"));
    let hour = &status["last_hour"];
    let ms = |v: &Value| v.as_i64().map_or("-".to_owned(), |ms| format!("{ms} ms"));
    lines.push(format!(
        "last hour    {} delivered; call to delivered p50 {}, p95 {}, p99 {} (deadline {})",
        n(&hour["delivered"]),
        ms(&hour["p50_ms"]),
        ms(&hour["p95_ms"]),
        ms(&hour["p99_ms"]),
        ms(&hour["deadline_ms"])
    ));
    for stage in ["signing", "uploading"] {
        let pause = &status[stage];
        if pause.is_null() {
            lines.push(format!("{stage:<12} running"));
        } else {
            let by = pause["by"].as_str().map_or(String::new(), |by| format!(" by {by}"));
            lines.push(format!("{stage:<12} PAUSED{by}: {}", pause["reason"].as_str().unwrap_or("")));
            problems.push(format!("{stage} paused"));
        }
    }
    for card in status["cards"].as_array().into_iter().flatten() {
        let days = card["days_left"].as_i64().map_or("?".to_owned(), |d| d.to_string());
        let name = card["name"].as_str().unwrap_or("");
        lines.push(format!(
            "card         {name} {} certNo {} ({}), {days} days left{}",
            if card["connected"] == true { "connected" } else { "not connected" },
            card["cert_no"].as_str().unwrap_or("?"),
            card["algorithm"].as_str().unwrap_or("?"),
            card["last_error"].as_str().map_or(String::new(), |e| format!("; last error: {e}")),
        ));
        for (field, stage) in [("paused", "signing"), ("uploads_stopped", "uploading")] {
            let pause = &card[field];
            if !pause.is_null() {
                let by = pause["by"].as_str().map_or(String::new(), |by| format!(" by {by}"));
                lines.push(format!(
                    "             {stage} on card {name} PAUSED{by}: {}",
                    pause["reason"].as_str().unwrap_or("")
                ));
                problems.push(format!("{stage} paused on card {name}"));
            }
        }
    }
    let customs = &status["customs"];
    let answers: Vec<String> = customs["answers_last_hour"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(code, count)| format!("{code} ×{count}"))
        .collect();
    lines.push(format!(
        "customs      {} environment; last hour: {}",
        customs["environment"].as_str().unwrap_or("?"),
        if answers.is_empty() { "no uploads".to_owned() } else { answers.join(", ") }
    ));
    for task in status["tasks"].as_array().into_iter().flatten() {
        let state = task["state"].as_str().unwrap_or("?");
        if state != "ok" {
            problems.push(format!("task {} {state}", task["name"].as_str().unwrap_or("?")));
        }
    }
    let tasks = status["tasks"].as_array().map_or(0, Vec::len);
    lines.push(format!(
        "tasks        {tasks}, {} not ok",
        problems.iter().filter(|p| p.starts_with("task")).count()
    ));
    (lines.join("\n") + "\n", problems)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::render;

    #[test]
    fn a_quiet_service_needs_nothing_and_a_busy_one_says_what() {
        let quiet = json!({
            "states": {"waiting": 0, "ready": 0, "signed": 0, "delivered": 5, "failed": 0},
            "at_risk": 0, "at_risk_secs": 60, "late": 0, "oldest_pending_ms": null,
            "last_hour": {"delivered": 5, "p50_ms": 900, "p95_ms": 1500, "p99_ms": 1600, "deadline_ms": 120000},
            "signing": null, "uploading": null,
            "cards": [{"name": "card", "connected": true, "cert_no": "0a1b", "algorithm": "SM2", "days_left": 200}],
            "customs": {"environment": "production", "answers_last_hour": {"10000": 5}},
            "tasks": [{"name": "signer", "state": "ok"}]
        });
        let (table, problems) = render(&quiet);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(
            table.contains("delivered 5") && table.contains("p99 1600 ms") && table.contains("10000 ×5"),
            "{table}"
        );

        let mut busy = quiet.clone();
        busy["at_risk"] = json!(2);
        busy["signing"] = json!({"reason": "the card refused", "since": 1, "by": "alice"});
        busy["tasks"] = json!([{"name": "uploader", "state": "stale"}]);
        let (table, problems) = render(&busy);
        assert_eq!(problems, ["2 at risk", "signing paused", "task uploader stale"]);
        assert!(table.contains("signing      PAUSED by alice: the card refused"), "{table}");

        let mut one_card = quiet.clone();
        one_card["cards"][0]["uploads_stopped"] = json!({"reason": "customs answered 20004", "since": 1});
        let (table, problems) = render(&one_card);
        assert_eq!(problems, ["uploading paused on card card"]);
        assert!(table.contains("uploading on card card PAUSED: customs answered 20004"), "{table}");
    }
}
