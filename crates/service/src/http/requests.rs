//! Reading the queue: `GET /api/requests` and `GET /api/requests/{sessionID}`.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use customs179_store::{ListFilter, RequestDetail, RequestPage, State as QueueState};
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::admin::{Caller, authorize};
use crate::context::{ApiContext, now_ms};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;

pub(crate) fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/requests", get(list))
        .route("/api/requests/{session_id}", get(detail))
        .route("/api/requests/{session_id}/replay", post(replay))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    order_no: Option<String>,
    session_id: Option<String>,
    limit: Option<i64>,
    after: Option<String>,
}

/// Newest first, keyset paging: pass the answer's `next` as `after`.
async fn list(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RequestPage>, ApiError> {
    authorize(&ctx, &headers, Caller::Viewer)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let state = match query.state.as_deref().filter(|s| !s.is_empty()) {
        Some(text) => Some(QueueState::parse(text).ok_or_else(|| {
            let known: Vec<_> = QueueState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::BadRequest(format!("unknown state {text:?}; known: {}", known.join(", ")))
        })?),
        None => None,
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let filter = ListFilter {
        state,
        order_no: query.order_no.filter(|s| !s.is_empty()),
        session_id: query.session_id.filter(|s| !s.is_empty()),
        after: query.after.filter(|s| !s.is_empty()),
        limit,
    };
    Ok(Json(ctx.store.list_requests(&filter, now_ms()).await?))
}

async fn detail(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    Path(session_id): Path<String>,
) -> Result<Json<RequestDetail>, ApiError> {
    authorize(&ctx, &headers, Caller::Viewer)?;
    ctx.store
        .request_detail(&session_id, now_ms())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("customs never asked for sessionID {session_id:?}")))
}

#[derive(Serialize)]
struct Replayed {
    session_id: String,
    /// The state it was in.
    was: QueueState,
}

/// A failed or delivered request is prepared again from its payment record
/// (a new guid and serviceTime), signed and uploaded; its history stays.
async fn replay(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    Path(session_id): Path<String>,
) -> Result<Json<Replayed>, ApiError> {
    let actor = authorize(&ctx, &headers, Caller::Operator)?;
    let now = now_ms();
    match ctx.store.replay(&session_id, now).await? {
        None => Err(ApiError::NotFound(format!("customs never asked for sessionID {session_id:?}"))),
        Some(Err(state)) => Err(ApiError::Conflict(vec![format!(
            "request {session_id} is {}: only failed or delivered requests can be replayed",
            state.as_str()
        )])),
        Some(Ok(was)) => {
            tracing::warn!(session_id, was = was.as_str(), actor = actor.name, "operator replayed a request");
            ctx.store.audit(&actor.name, "replay", Some(&session_id), None, 1, now).await?;
            ctx.prepare.sweep();
            Ok(Json(Replayed { session_id, was }))
        }
    }
}
