//! The admin listener: the platform's payments API and the operators' API.

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use customs179_store::Stage;

use super::ApiError;
use crate::config::Secret;
use crate::context::ApiContext;

pub(crate) fn router(ctx: ApiContext) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(super::payments::router(&ctx))
        .merge(super::requests::router())
        .merge(super::controls::router())
        .merge(super::status::router())
        .with_state(ctx)
}

/// Who may call an endpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// Only the admin token.
    Admin,
    /// The admin token or the payments token.
    PaymentsPusher,
}

/// Checks the bearer token against the tokens `caller` admits.
pub(crate) fn authorize(ctx: &ApiContext, headers: &HeaderMap, caller: Caller) -> Result<(), ApiError> {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| Secret::new(token.trim()))
        .ok_or(ApiError::Unauthorized)?;
    let admin = &ctx.config.admin.token;
    let payments = ctx.config.payments.token.as_ref().filter(|_| caller == Caller::PaymentsPusher);
    if presented == *admin || payments.is_some_and(|token| presented == *token) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Liveness and the database: 200 when a query goes through, 503 otherwise.
/// No token: load balancers and process supervisors call it.
async fn healthz(State(ctx): State<ApiContext>) -> Response {
    match ctx.store.count_by_state().await {
        Ok(_) => (StatusCode::OK, axum::Json(serde_json::json!({ "status": "ok" }))).into_response(),
        Err(e) => {
            let body = serde_json::json!({ "status": "unavailable", "error": e.to_string() });
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
        }
    }
}

/// Prometheus text format (admin token).
async fn metrics(State(ctx): State<ApiContext>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&ctx, &headers, Caller::Admin)?;
    let depths = ctx.store.count_by_state().await?;
    let depths: Vec<(&str, i64)> = depths.iter().map(|(state, n)| (state.as_str(), *n)).collect();
    let mut paused = Vec::new();
    for stage in Stage::ALL {
        paused.push((stage.as_str(), ctx.store.pause_of(stage).await?.is_some()));
    }
    let body = ctx.metrics.render(&depths, &paused);
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
        .into_response())
}
