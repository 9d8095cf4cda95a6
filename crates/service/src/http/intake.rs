//! The endpoint customs calls (`platDataOpen`, spec 1.1).
//!
//! A well-formed request is committed to SQLite before customs hears
//! `10000`. Commits are grouped: one writer task takes every request that
//! arrived while the previous commit was syncing and commits them in one
//! transaction, so intake stays fast under load without weakening durability.

use std::net::SocketAddr;
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

/// Refuses callers outside `[intake] allow_from`, before anything else.
async fn allow_from(
    State(state): State<IntakeState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(allowed) = &state.ctx.config.intake.allow_from {
        let ip = peer.ip().to_canonical();
        if !allowed.iter().any(|net| net.contains(&ip)) {
            tracing::warn!(%peer, "intake: caller not in allow_from");
            state.ctx.metrics.intake("refused", Duration::ZERO);
            return answer(StatusCode::FORBIDDEN, CODE_FAILED, "caller not allowed");
        }
    }
    next.run(request).await
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
