//! Operator controls: `GET /api/control` shows the global pauses;
//! `POST /api/control/{stage}/resume` clears one.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use customs179_store::{Pause, Stage};
use serde::Serialize;

use super::ApiError;
use super::admin::{Caller, authorize};
use crate::context::ApiContext;

pub(crate) fn router() -> Router<ApiContext> {
    Router::new().route("/api/control", get(show)).route("/api/control/{stage}/resume", post(resume))
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
    authorize(&ctx, &headers, Caller::Admin)?;
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
) -> Result<Json<Resumed>, ApiError> {
    authorize(&ctx, &headers, Caller::Admin)?;
    let stage = Stage::parse(&stage)
        .ok_or_else(|| ApiError::NotFound(format!("no stage {stage:?}; stages: signing, uploading")))?;
    let cleared = ctx.store.resume(stage).await?;
    if let Some(pause) = &cleared {
        tracing::warn!(stage = stage.as_str(), reason = pause.reason, "operator resumed");
    }
    match stage {
        Stage::Signing => ctx.sign.notify_one(),
        Stage::Uploading => ctx.upload.notify_one(),
    }
    Ok(Json(Resumed { stage, cleared }))
}
