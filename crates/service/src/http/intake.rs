//! The endpoint customs calls (`platDataOpen`, spec 1.1).
//!
//! A well-formed request is committed to SQLite before customs hears
//! `10000`. Commits are grouped: one writer task takes every request that
//! arrived while the previous commit was syncing and commits them in one
//! transaction, so intake stays fast under load without weakening durability.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use customs179_core::{OpenReq, form_field};
use customs179_store::{NewRequest, Store};
use ipnet::IpNet;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::context::{ApiContext, now_ms};

/// Requests taken into one commit at most.
const MAX_BATCH: usize = 512;

/// customs' success code, and the code of every failure we answer.
const CODE_OK: &str = "10000";
const CODE_FAILED: &str = "20000";

/// Hands requests to the writer task and waits for their commit.
#[derive(Clone)]
pub(crate) struct IntakeWriter {
    jobs: mpsc::Sender<Job>,
}

struct Job {
    request: NewRequest,
    committed: oneshot::Sender<bool>,
}

impl IntakeWriter {
    /// The writer and its task, to be spawned; the task ends when every
    /// `IntakeWriter` is dropped and the last batch is committed. It beats
    /// as "intake writer" at least every second.
    pub fn start(
        store: Store,
        prepare: std::sync::Arc<crate::context::PrepareQueue>,
        health: std::sync::Arc<crate::health::Health>,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> (IntakeWriter, impl std::future::Future<Output = ()> + Send + 'static) {
        let (jobs, mut queue) = mpsc::channel::<Job>(4 * MAX_BATCH);
        let task = async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            loop {
                health.beat("intake writer");
                let received = tokio::select! {
                    received = queue.recv_many(&mut batch, MAX_BATCH) => received,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                };
                if received == 0 {
                    break;
                }
                let requests: Vec<NewRequest> = batch.iter().map(|job| job.request.clone()).collect();
                let started = std::time::Instant::now();
                let result = store.insert_requests(&requests).await;
                metrics.intake_commit(started.elapsed());
                if let Err(e) = &result {
                    tracing::error!(error = %e, requests = batch.len(), "intake: cannot commit customs requests");
                }
                if let Ok(inserted) = &result {
                    let new = batch.iter().zip(inserted).filter(|(_, new)| **new);
                    prepare.orders(new.map(|(job, _)| job.request.open_req.order_no.as_str()));
                }
                let committed = result.is_ok();
                tracing::debug!(requests = batch.len(), committed, "intake: batch written");
                for job in batch.drain(..) {
                    // The caller may have gone (client hung up); the row is stored anyway.
                    let _ = job.committed.send(committed);
                }
            }
        };
        (IntakeWriter { jobs }, task)
    }

    /// True once the request is durably stored.
    async fn commit(&self, request: NewRequest) -> bool {
        let (committed, done) = oneshot::channel();
        if self.jobs.send(Job { request, committed }).await.is_err() {
            return false;
        }
        done.await.unwrap_or(false)
    }
}

#[derive(Clone)]
struct IntakeState {
    ctx: ApiContext,
    writer: IntakeWriter,
}

/// The intake router: only `POST <path>`; 404 elsewhere, 405 for other methods.
pub(crate) fn router(ctx: ApiContext, writer: IntakeWriter) -> Router {
    let path = ctx.config.intake.path.clone();
    let limit = ctx.config.intake.max_body_bytes;
    let state = IntakeState { ctx, writer };
    Router::new()
        .route(&path, post(receive))
        .fallback(|| async { answer(StatusCode::NOT_FOUND, CODE_FAILED, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            answer(StatusCode::METHOD_NOT_ALLOWED, CODE_FAILED, "only POST is served here")
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), allow_from))
        .with_state(state)
}

/// Refuses callers outside `[intake] allow_from`, before anything else. Behind a
/// trusted proxy the caller is who `X-Forwarded-For` names (see [`caller`]).
async fn allow_from(
    State(state): State<IntakeState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let Some(allowed) = &state.ctx.config.intake.allow_from else { return next.run(request).await };
    let forwarded: Vec<&str> = request
        .headers()
        .get_all(FORWARDED_FOR)
        .iter()
        .map(|value| value.to_str().unwrap_or(UNREADABLE))
        .collect();
    let refuse = |why: &str, shown: &dyn std::fmt::Display| {
        tracing::warn!(%peer, caller = %shown, "intake: {why}");
        state.ctx.metrics.intake("refused", Duration::ZERO);
        answer(StatusCode::FORBIDDEN, CODE_FAILED, "caller not allowed")
    };
    match caller(peer.ip(), &forwarded, &state.ctx.config.intake.trusted_proxies) {
        Ok(ip) if allowed.iter().any(|net| net.contains(&ip)) => next.run(request).await,
        Ok(ip) => refuse("caller not in allow_from", &ip),
        // The header as received is hostile: only its length is logged.
        Err(why) => refuse(why, &format!("X-Forwarded-For of {} bytes", forwarded.concat().len())),
    }
}

const FORWARDED_FOR: &str = "x-forwarded-for";
/// What a header value that is not visible ASCII reads as: no address.
const UNREADABLE: &str = "unreadable";

/// Who called: the connection's peer, or, when the peer is one of the trusted
/// proxies, the last address in `X-Forwarded-For` (all its values, in order)
/// that is not a trusted proxy itself: each proxy appends the address it was
/// called from, so the addresses before the last untrusted one were written
/// by whoever called, and prove nothing.
fn caller(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> Result<IpAddr, &'static str> {
    let trusted_ip = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer.to_canonical();
    if !trusted_ip(&peer) {
        return Ok(peer);
    }
    let mut hops = forwarded_for.iter().flat_map(|value| value.split(',')).map(str::trim).rev();
    loop {
        let Some(hop) = hops.next() else {
            return Err("a trusted proxy did not say who called (no X-Forwarded-For)");
        };
        // An address, or an address with its port (`203.0.113.7:5100`, `[2001:db8::7]:5100`).
        let ip = hop
            .parse::<IpAddr>()
            .or_else(|_| hop.parse::<SocketAddr>().map(|addr| addr.ip()))
            .map_err(|_| "a trusted proxy's X-Forwarded-For is unreadable")?;
        let ip = ip.to_canonical();
        if !trusted_ip(&ip) {
            return Ok(ip);
        }
    }
}

async fn receive(State(state): State<IntakeState>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let (outcome, response) = answer_call(&state, body).await;
    state.ctx.metrics.intake(outcome, started.elapsed());
    response
}

/// The answer to one customs call, and its outcome as a metrics label.
async fn answer_call(state: &IntakeState, body: Result<Bytes, BytesRejection>) -> (&'static str, Response) {
    let received_at = now_ms();
    let malformed = |status: StatusCode, message: &str| ("malformed", answer(status, CODE_FAILED, message));
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return malformed(rejection.status(), &rejection.body_text()),
    };
    let raw = match form_field(&body, "openReq") {
        Ok(raw) => raw,
        Err(e) => return malformed(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let open_req = match OpenReq::parse(&raw) {
        Ok(open_req) => open_req,
        Err(e) => return malformed(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let deadline_ms =
        i64::try_from(state.ctx.config.customs.deadline_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let session_id = open_req.session_id.clone();
    let order_no = open_req.order_no.clone();
    let request =
        NewRequest { open_req, raw, received_at, deadline_at: received_at.saturating_add(deadline_ms) };
    if state.writer.commit(request).await {
        tracing::info!(session_id, order_no, "intake: customs request stored");
        ("stored", answer(StatusCode::OK, CODE_OK, ""))
    } else {
        // Never 10000 for a request we could not store: customs must not
        // believe we have it.
        let message = "the request could not be stored; please retry";
        ("unavailable", answer(StatusCode::SERVICE_UNAVAILABLE, CODE_FAILED, message))
    }
}

/// customs' answer shape: `{"code":…,"message":…,"serviceTime":<ms>}`.
fn answer(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "code": code, "message": message, "serviceTime": now_ms() }).to_string();
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json;charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|net| net.parse().unwrap()).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_caller_is_the_peer_unless_the_peer_is_a_trusted_proxy() {
        let proxies = nets(&["10.0.0.2/32", "10.0.1.0/24"]);
        // Anyone can write the header: from an untrusted peer it is ignored.
        assert_eq!(caller(ip("198.51.100.9"), &["203.0.113.7"], &proxies), Ok(ip("198.51.100.9")));
        assert_eq!(caller(ip("198.51.100.9"), &[], &[]), Ok(ip("198.51.100.9")));
        // From a proxy: the address it appended.
        assert_eq!(caller(ip("10.0.0.2"), &["203.0.113.7"], &proxies), Ok(ip("203.0.113.7")));
        // What the caller wrote before it proves nothing.
        assert_eq!(caller(ip("10.0.0.2"), &["1.2.3.4, 203.0.113.7"], &proxies), Ok(ip("203.0.113.7")));
        // Through two proxies (values split over two headers): the last untrusted hop.
        assert_eq!(
            caller(ip("10.0.0.2"), &["1.2.3.4, 203.0.113.7", "10.0.1.5"], &proxies),
            Ok(ip("203.0.113.7"))
        );
        // Ports and IPv4 in IPv6.
        assert_eq!(caller(ip("10.0.0.2"), &["203.0.113.7:5100"], &proxies), Ok(ip("203.0.113.7")));
        assert_eq!(caller(ip("10.0.0.2"), &["[2001:db8::7]:5100"], &proxies), Ok(ip("2001:db8::7")));
        assert_eq!(caller(ip("::ffff:10.0.0.2"), &[" ::ffff:203.0.113.7 "], &proxies), Ok(ip("203.0.113.7")));
    }

    #[test]
    fn a_trusted_proxy_that_does_not_say_who_called_is_no_answer() {
        let proxies = nets(&["10.0.0.2/32", "10.0.1.0/24"]);
        assert!(caller(ip("10.0.0.2"), &[], &proxies).is_err());
        assert!(caller(ip("10.0.0.2"), &[""], &proxies).is_err());
        assert!(caller(ip("10.0.0.2"), &["10.0.1.5"], &proxies).is_err(), "only proxies");
        assert!(caller(ip("10.0.0.2"), &["203.0.113.7, <script>"], &proxies).is_err());
        assert!(caller(ip("10.0.0.2"), &["unknown"], &proxies).is_err());
        assert!(caller(ip("10.0.0.2"), &[UNREADABLE], &proxies).is_err());
    }
}
