//! Operator controls: `GET /api/control` shows the global pauses (why,
//! since when, by whom); `POST /api/control/{stage}/pause` (with a reason)
//! and `POST /api/control/{stage}/resume` set and clear one. Every action
//! is audited under the token's name; `GET /api/audit` lists them.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use customs179_store::{AuditEntry, Pause, Stage};
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::admin::{Caller, authorize};
use crate::context::{ApiContext, now_ms};

pub(crate) fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/control", get(show))
        .route("/api/control/{stage}/pause", post(pause))
        .route("/api/control/{stage}/resume", post(resume))
        .route("/api/audit", get(audit))
}

/// What an operator says with an action.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Reason {
    #[serde(default)]
    reason: Option<String>,
}

/// The body of a control action: empty, or `{"reason": "..."}`.
fn reason_of(body: &Bytes) -> Result<Option<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let Reason { reason } = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body must be {{\"reason\": \"...\"}}: {e}")))?;
    Ok(reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()))
}

fn stage_of(stage: &str) -> Result<Stage, ApiError> {
    Stage::parse(stage)
        .ok_or_else(|| ApiError::NotFound(format!("no stage {stage:?}; stages: signing, uploading")))
}

fn wake(ctx: &ApiContext, stage: Stage) {
    match stage {
        Stage::Signing => ctx.sign.notify_one(),
        Stage::Uploading => ctx.upload.notify_one(),
    }
}

#[derive(Serialize)]
struct StageStatus {
    paused: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pause: Option<Pause>,
}

#[derive(Serialize)]
struct Controls {
    signing: StageStatus,
    uploading: StageStatus,
}

async fn show(State(ctx): State<ApiContext>, headers: HeaderMap) -> Result<Json<Controls>, ApiError> {
    authorize(&ctx, &headers, Caller::Viewer)?;
    let status = async |stage| -> Result<StageStatus, ApiError> {
        let pause = ctx.store.pause_of(stage).await?;
        Ok(StageStatus { paused: pause.is_some(), pause })
    };
    Ok(Json(Controls { signing: status(Stage::Signing).await?, uploading: status(Stage::Uploading).await? }))
}

#[derive(Serialize)]
struct Resumed {
    stage: Stage,
    /// The pause that was cleared; absent when the stage was not paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    cleared: Option<Pause>,
}

async fn resume(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    Path(stage): Path<String>,
    body: Bytes,
) -> Result<Json<Resumed>, ApiError> {
    let actor = authorize(&ctx, &headers, Caller::Operator)?;
    let stage = stage_of(&stage)?;
    let reason = reason_of(&body)?;
    let cleared = ctx.store.resume(stage).await?;
    if let Some(pause) = &cleared {
        tracing::warn!(stage = stage.as_str(), actor = actor.name, reason = pause.reason, "operator resumed");
    }
    let action = format!("resume {}", stage.as_str());
    ctx.store
        .audit(&actor.name, &action, None, reason.as_deref(), i64::from(cleared.is_some()), now_ms())
        .await?;
    wake(&ctx, stage);
    Ok(Json(Resumed { stage, cleared }))
}

#[derive(Serialize)]
struct Paused {
    stage: Stage,
    /// The pause in force: this one, or an earlier one, whose reason is kept.
    pause: Option<Pause>,
}

/// An operator stops a stage (a card to change, customs' maintenance): a
/// reason is required, and shown with the operator's name.
async fn pause(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    Path(stage): Path<String>,
    body: Bytes,
) -> Result<Json<Paused>, ApiError> {
    let actor = authorize(&ctx, &headers, Caller::Operator)?;
    let stage = stage_of(&stage)?;
    let reason = reason_of(&body)?
        .ok_or_else(|| ApiError::BadRequest("a pause needs a reason: {\"reason\": \"...\"}".into()))?;
    let now = now_ms();
    ctx.store.pause_as(stage, &reason, Some(&actor.name), now).await?;
    tracing::warn!(stage = stage.as_str(), actor = actor.name, reason, "operator paused");
    ctx.store.audit(&actor.name, &format!("pause {}", stage.as_str()), None, Some(&reason), 1, now).await?;
    Ok(Json(Paused { stage, pause: ctx.store.pause_of(stage).await? }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<i64>,
    before: Option<i64>,
}

#[derive(Serialize)]
struct AuditPage {
    entries: Vec<AuditEntry>,
    /// Pass as `before` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<i64>,
}

/// Every operator action, newest first.
async fn audit(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    authorize(&ctx, &headers, Caller::Viewer)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1_000).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be 1 to 1000, got {limit}")));
    }
    let entries = ctx.store.audit_log(limit, query.before).await?;
    let next = (entries.len() == usize::try_from(limit).unwrap_or(usize::MAX))
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(AuditPage { entries, next }))
}
