//! The admin listener: the platform's payments API and the operators' API.

use axum::Router;
use axum::extract::State;
use axum::http::header::{self, AUTHORIZATION};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use customs179_store::{CardPause, Stage};

use super::ApiError;
use crate::config::{Role, Secret};
use crate::context::ApiContext;

pub(crate) fn router(ctx: ApiContext) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(super::payments::router(&ctx))
        .merge(super::requests::router())
        .merge(super::export::router())
        .merge(super::controls::router())
        .merge(super::replays::router())
        .merge(super::status::router())
        .merge(super::events::router())
        .merge(super::alerts::router())
        .route("/api/whoami", get(whoami))
        .with_state(ctx)
        // Outermost, so every answer has them: pages, the JSON API, /metrics,
        // /healthz, refusals, 404s and 405s.
        .layer(axum::middleware::map_response(security_headers))
}

/// The console's policy: its scripts and style come from this listener
/// only (`/app.js` and the modules it imports, `/app.css`), never inline,
/// and no other origin is reached. `require-trusted-types-for 'script'` makes the browser refuse
/// HTML strings handed to `innerHTML` and the like, so data can only enter
/// the page as text; no page may frame it.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

/// Headers on every admin answer, replacing any a handler set.
const SECURITY_HEADERS: [(HeaderName, &str); 3] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
];

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Who may call an endpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// Any admin token: reading.
    Viewer,
    /// An operator's token: replays, pauses, resumes.
    Operator,
    /// An operator's token or the payments token.
    PaymentsPusher,
}

/// Who called: the name of the token, under which actions are audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Actor {
    pub name: String,
    /// None for the payments token, which is no admin token.
    pub role: Option<Role>,
}

/// Checks the bearer token against the tokens `caller` admits: 401 without
/// a valid token, 403 for a viewer's token where an operator's is needed.
pub(crate) fn authorize(ctx: &ApiContext, headers: &HeaderMap, caller: Caller) -> Result<Actor, ApiError> {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| Secret::new(token.trim()))
        .ok_or(ApiError::Unauthorized)?;
    if caller == Caller::PaymentsPusher
        && ctx.config.payments.token.as_ref().is_some_and(|token| presented == *token)
    {
        return Ok(Actor { name: "payments".to_owned(), role: None });
    }
    // Every token is compared (each in constant time), so the answer's time
    // does not tell which one nearly matched.
    let found = ctx
        .config
        .admin
        .tokens
        .iter()
        .fold(None, |found, t| if presented == t.token { Some(t) } else { found });
    let token = found.ok_or(ApiError::Unauthorized)?;
    if caller != Caller::Viewer && token.role == Role::Viewer {
        return Err(ApiError::Forbidden(format!("the token {:?} may only read", token.name)));
    }
    Ok(Actor { name: token.name.clone(), role: Some(token.role) })
}

/// `GET /api/whoami` (any admin token): the token's name and role, so the
/// console shows an operator's buttons and hides them from a viewer.
async fn whoami(State(ctx): State<ApiContext>, headers: HeaderMap) -> Result<Response, ApiError> {
    let actor = authorize(&ctx, &headers, Caller::Viewer)?;
    let body = serde_json::json!({ "name": actor.name, "role": actor.role.unwrap_or(Role::Viewer) });
    Ok(axum::Json(body).into_response())
}

/// Liveness, for load balancers and process supervisors (no token): 200
/// when the database answers and every task of the service is alive and
/// beating (a paused worker beats too); 503 otherwise, with what is wrong.
async fn healthz(State(ctx): State<ApiContext>) -> Response {
    let tasks = ctx.health.report();
    // One row read: cheap however many requests the database holds.
    let database = ctx.store.changes().await.err().map(|e| e.to_string());
    let healthy = database.is_none() && tasks.iter().all(|task| task.state == "ok");
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "database": database.as_deref().unwrap_or("ok"),
        "tasks": tasks,
    });
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(body)).into_response()
}

/// Prometheus text format (admin token).
async fn metrics(State(ctx): State<ApiContext>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&ctx, &headers, Caller::Viewer)?;
    let depths = ctx.store.count_by_state().await?;
    let depths: Vec<(&str, i64)> = depths.iter().map(|(state, n)| (state.as_str(), *n)).collect();
    let mut paused = Vec::new();
    for stage in Stage::ALL {
        paused.push((stage.as_str(), ctx.store.pause_of(stage).await?.is_some()));
    }
    let card_pauses = ctx.store.card_pauses().await?;
    let mut cards = Vec::new();
    for signer in &ctx.config.signers {
        for stage in Stage::ALL {
            let paused = CardPause::find(&card_pauses, &signer.name, stage).is_some();
            cards.push((signer.name.as_str(), stage.as_str(), paused));
        }
    }
    let body = ctx.metrics.render(&depths, &paused, &cards);
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
        .into_response())
}
