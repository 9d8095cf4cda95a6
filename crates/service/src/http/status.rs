//! The status page (`web/index.html`, served at `/`) and the summary it shows.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use customs179_store::{Pause, Stage};
use serde::Serialize;

use super::ApiError;
use super::admin::{Caller, authorize};
use crate::context::{ApiContext, now_ms};

/// Compiled in, so the binary is all there is to deploy.
const PAGE: &str = include_str!("../../../../web/index.html");

pub(crate) fn router() -> Router<ApiContext> {
    Router::new().route("/", get(page)).route("/api/status", get(status))
}

/// The page holds no data: it asks for the admin token and calls the API.
async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(PAGE))
}

#[derive(Serialize)]
struct Status {
    /// Requests per state.
    states: serde_json::Map<String, serde_json::Value>,
    late: i64,
    signing: Option<Pause>,
    uploading: Option<Pause>,
    now: i64,
}

async fn status(State(ctx): State<ApiContext>, headers: HeaderMap) -> Result<Json<Status>, ApiError> {
    authorize(&ctx, &headers, Caller::Admin)?;
    let now = now_ms();
    let states = ctx
        .store
        .count_by_state()
        .await?
        .into_iter()
        .map(|(state, count)| (state.as_str().to_owned(), count.into()))
        .collect();
    Ok(Json(Status {
        states,
        late: ctx.store.count_late(now).await?,
        signing: ctx.store.pause_of(Stage::Signing).await?,
        uploading: ctx.store.pause_of(Stage::Uploading).await?,
        now,
    }))
}
