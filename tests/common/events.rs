//! `GET /api/events` read as a browser's `fetch()` reads it, event by event.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use super::Api;

/// An open event stream, parsed event by event.
pub struct Events {
    pub response: reqwest::Response,
    buffer: String,
}

impl Events {
    /// Opens the stream of the service behind `api` as `token`.
    pub async fn open(api: &Api, token: &str) -> Events {
        let response =
            api.client.get(format!("{}/api/events", api.admin)).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream; charset=utf-8");
        Events { response, buffer: String::new() }
    }

    /// The next event as (name, data), or None if none comes within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event: ") {
                        name = value.to_owned();
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push_str(value);
                    }
                }
                return Some((name, serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"))));
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await.ok()?;
            let chunk = chunk.unwrap().expect("the stream ended");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Waits for the first event named `name` whose data `matches`; panics after `within`.
    pub async fn wait_for(
        &mut self,
        name: &str,
        within: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left).await {
                Some((got, data)) if got == name && matches(&data) => return data,
                Some(_) => {}
                None => break,
            }
        }
        panic!("no {name} event as expected within {within:?}");
    }
}

/// Whether a `requests` event lists `session_id` in `state`.
pub fn lists(data: &Value, session_id: &str, state: &str) -> bool {
    data["requests"].as_array().unwrap().iter().any(|r| r["session_id"] == session_id && r["state"] == state)
}
