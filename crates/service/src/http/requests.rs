//! Reading the queue: `GET /api/requests` and `GET /api/requests/{sessionID}`.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use customs179_core::may_be_id;
use customs179_store::{ListFilter, RequestDetail, RequestPage, Sort, State as QueueState};
use serde::{Deserialize, Serialize};

use super::admin::{Caller, authorize};
use super::{ApiError, id_param};
use crate::context::{ApiContext, now_ms};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 500;
/// Codes are customs' (`20001`, `HTTP 503`) or ours (`signer_unavailable`).
const MAX_CODE_CHARS: usize = 64;

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
    session_prefix: Option<String>,
    /// Received at or after, unix ms.
    since: Option<String>,
    /// Received before, unix ms.
    until: Option<String>,
    late: Option<String>,
    at_risk: Option<String>,
    /// The code of the current problem: customs' answer code or a kind of error.
    code: Option<String>,
    sort: Option<String>,
    limit: Option<i64>,
    after: Option<String>,
}

/// A query parameter given, and not blank.
fn given(value: Option<String>) -> Option<String> {
    value.filter(|s| !s.is_empty())
}

fn flag(name: &str, value: Option<String>) -> Result<bool, ApiError> {
    match given(value).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!("{name} must be true or false, got {other:?}"))),
    }
}

fn millis(name: &str, value: Option<String>) -> Result<Option<i64>, ApiError> {
    given(value)
        .map(|text| {
            text.parse::<i64>().ok().filter(|ms| *ms >= 0).ok_or_else(|| {
                ApiError::BadRequest(format!("{name} must be unix milliseconds, got {text:?}"))
            })
        })
        .transpose()
}

/// Filtered and sorted (newest first by default), keyset paging: pass the
/// answer's `next` as `after`.
async fn list(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RequestPage>, ApiError> {
    authorize(&ctx, &headers, Caller::Viewer)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let state = match given(query.state).as_deref() {
        Some(text) => Some(QueueState::parse(text).ok_or_else(|| {
            let known: Vec<_> = QueueState::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::BadRequest(format!("unknown state {text:?}; known: {}", known.join(", ")))
        })?),
        None => None,
    };
    let sort = match given(query.sort).as_deref() {
        None | Some("received") => Sort::Received,
        Some("deadline") => Sort::Deadline,
        Some(other) => {
            return Err(ApiError::BadRequest(format!("sort must be received or deadline, got {other:?}")));
        }
    };
    let (since, until) = (millis("since", query.since)?, millis("until", query.until)?);
    if let (Some(since), Some(until)) = (since, until)
        && since > until
    {
        return Err(ApiError::BadRequest(format!("since ({since}) is after until ({until})")));
    }
    let code = given(query.code);
    if let Some(code) = &code
        && (code.chars().count() > MAX_CODE_CHARS || code.chars().any(char::is_control))
    {
        return Err(ApiError::BadRequest(format!(
            "code must be at most {MAX_CODE_CHARS} characters without control characters"
        )));
    }
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    let at_risk_ms = ctx.config.customs.at_risk_ms();
    let filter = ListFilter {
        state,
        order_no: id_param("order_no", given(query.order_no))?,
        session_id: id_param("session_id", given(query.session_id))?,
        session_prefix: id_param("session_prefix", given(query.session_prefix))?,
        since,
        until,
        late: flag("late", query.late)?,
        at_risk_within: flag("at_risk", query.at_risk)?.then_some(at_risk_ms),
        code,
        sort,
        after: id_param("after", given(query.after))?,
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
    let detail = match may_be_id(&session_id) {
        true => ctx.store.request_detail(&session_id, now_ms()).await?,
        false => None,
    };
    detail
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
    let replayed = match may_be_id(&session_id) {
        true => ctx.store.replay(&session_id, now).await?,
        false => None,
    };
    match replayed {
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
