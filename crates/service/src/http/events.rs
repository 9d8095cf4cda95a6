//! `GET /api/events`: what the page shows, kept current without polling.
//!
//! A `text/event-stream` answer, meant to be read with `fetch()` and an
//! `Authorization` header (a browser's `EventSource` cannot send one). Each
//! event is `event: NAME` and one `data:` line of JSON:
//!
//! - `snapshot` `{"status": …}`: first, and again whenever the stream cannot
//!   say exactly which requests changed (it fell behind, the other instances'
//!   changes could not all be heard, or a command changed requests or
//!   controls): the reader then reads its list again;
//! - `status`: the summary of `GET /api/status`, once a second;
//! - `requests` `{"requests": [summary, …]}`: the requests changed since the
//!   previous event (by any instance), each once, as it stands now.
//!
//! One task per stream wakes once a second; it ends when the reader goes
//! away or the service stops.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use customs179_store::Watch;
use http_body::Frame;
use serde::Serialize;
use tokio::sync::mpsc;

use super::ApiError;
use super::admin::{Caller, authorize};
use super::status::{self, Status};
use crate::context::{ApiContext, now_ms};

/// How often counts and health are sent, and changed requests gathered.
const TICK: Duration = Duration::from_secs(1);
/// Changed requests per `requests` event.
const REQUESTS_PER_EVENT: usize = 500;
/// Events waiting for a slow reader; beyond, the stream waits for it (and
/// starts again from a snapshot once it has fallen behind the changes).
const BACKLOG: usize = 8;

pub(crate) fn router() -> Router<ApiContext> {
    Router::new().route("/api/events", get(events))
}

async fn events(State(ctx): State<ApiContext>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&ctx, &headers, Caller::Viewer)?;
    // Watching before the snapshot is read: no change falls between the two.
    let mut changes = ctx.store.watch_requests();
    changes.ready().await;
    let version = ctx.store.changes().await?;
    // A database that cannot be read is refused now, not as a silent stream.
    let first = status::current(&ctx).await?;
    let (events, stream) = mpsc::channel(BACKLOG);
    tokio::spawn(feed(ctx, changes, version, first, events));
    let mut response = Body::new(EventBody(stream)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // A reverse proxy must pass each event on at once (nginx buffers otherwise).
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

#[derive(Serialize)]
struct Snapshot {
    status: Status,
}

#[derive(Serialize)]
struct Requests {
    requests: Vec<customs179_store::RequestSummary>,
}

/// One stream's task: the snapshot, then a round every [`TICK`].
async fn feed(
    ctx: ApiContext,
    mut changes: Watch,
    mut version: i64,
    first: Status,
    events: mpsc::Sender<Bytes>,
) {
    let _counted = ctx.metrics.events_stream();
    if events.send(event("snapshot", &Snapshot { status: first })).await.is_err() {
        return;
    }
    let mut stopping = ctx.stopping.clone();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stopping.requested() => return,
            () = events.closed() => return,
        }
        let (changed, mut resync) = changes.gather();
        // Moved by whoever changed controls or replayed: another process's
        // changes are known by it only.
        match ctx.store.changes().await {
            Ok(now) if now != version => {
                version = now;
                resync = true;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "events: cannot read the database; the stream waits");
                continue;
            }
        }
        let status = match status::current(&ctx).await {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(error = %e, "events: cannot read the summary; the stream waits");
                continue;
            }
        };
        let sent = if resync {
            // The reader reads its list again: the changed requests are in it.
            events.send(event("snapshot", &Snapshot { status })).await
        } else {
            match send_requests(&ctx, &events, &changed).await {
                Ok(()) => events.send(event("status", &status)).await,
                Err(Gone) => return,
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// The reader went away.
struct Gone;

async fn send_requests(
    ctx: &ApiContext,
    events: &mpsc::Sender<Bytes>,
    changed: &[String],
) -> Result<(), Gone> {
    for chunk in changed.chunks(REQUESTS_PER_EVENT) {
        let requests = match ctx.store.summaries(chunk, now_ms()).await {
            Ok(requests) => requests,
            Err(e) => {
                // Not silently lost: the next round sends a snapshot.
                tracing::warn!(error = %e, "events: cannot read changed requests");
                return Ok(());
            }
        };
        events.send(event("requests", &Requests { requests })).await.map_err(|_| Gone)?;
    }
    Ok(())
}

/// One event in the text/event-stream format. serde_json writes no raw
/// newline, so the JSON is one `data:` line whatever the values hold.
fn event(name: &str, data: &impl Serialize) -> Bytes {
    // The summaries hold strings and numbers only: writing them cannot fail.
    let json = serde_json::to_string(data).unwrap_or_else(|_| "null".to_owned());
    Bytes::from(format!("event: {name}\ndata: {json}\n\n"))
}

/// The answer's body: the events, as the stream's task sends them.
struct EventBody(mpsc::Receiver<Bytes>);

impl http_body::Body for EventBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|event| event.map(|bytes| Ok(Frame::data(bytes))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_data_line_whatever_its_values_hold() {
        let bytes = event("requests", &serde_json::json!({"last_error": "line one\nline two\r\n"}));
        let text = std::str::from_utf8(&bytes).unwrap();
        assert_eq!(text, "event: requests\ndata: {\"last_error\":\"line one\\nline two\\r\\n\"}\n\n");
    }
}
