//! `GET /api/alerts`: the recent alerts and how each channel took them, the
//! conditions active now, and the channels (by name and kind: their URLs
//! and secrets are never shown).

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use customs179_alerts::condition::Active;
use customs179_alerts::{AlertKind, Severity};
use customs179_store::AlertRecord;
use serde::{Deserialize, Serialize};

use super::ApiError;
use super::admin::{Caller, authorize};
use crate::context::ApiContext;

pub(crate) fn router() -> Router<ApiContext> {
    Router::new().route("/api/alerts", get(alerts))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsQuery {
    limit: Option<i64>,
}

#[derive(Serialize)]
struct Alerts {
    /// Newest first.
    alerts: Vec<AlertRecord>,
    active: Vec<Active>,
    channels: Vec<ChannelView>,
}

#[derive(Serialize)]
struct ChannelView {
    name: String,
    kind: &'static str,
    kinds: Vec<AlertKind>,
    min_severity: Severity,
    language: &'static str,
    per_minute: u32,
}

async fn alerts(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    query: Result<Query<AlertsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Alerts>, ApiError> {
    authorize(&ctx, &headers, Caller::Viewer)?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit must be 1 to 500, got {limit}")));
    }
    let alerts = ctx.store.recent_alerts(limit).await?;
    let active = ctx.store.active_alerts().await?;
    let channels = ctx
        .config
        .alerts
        .channels
        .iter()
        .map(|c| ChannelView {
            name: c.name.clone(),
            kind: c.target.kind(),
            kinds: c.kinds.clone(),
            min_severity: c.min_severity,
            language: c.language.as_str(),
            per_minute: c.per_minute,
        })
        .collect();
    Ok(Json(Alerts { alerts, active, channels }))
}
