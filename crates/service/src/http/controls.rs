//! Operator controls: `GET /api/control` shows the global pauses and every
//! card's own (why, since when, by whom); `POST /api/control/{stage}/pause`
//! (with a reason) and `POST /api/control/{stage}/resume` set and clear a
//! global one, `POST /api/control/cards/{card}/{stage}/pause|resume` one
//! card's. Every action is audited under the token's name; `GET /api/audit`
//! lists them.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use customs179_store::{AuditEntry, CardPause, Pause, Stage};
use serde::{Deserialize, Serialize};

use super::admin::{Caller, authorize};
use super::{ApiError, stored_text};
use crate::context::{ApiContext, now_ms};

pub(crate) fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/control", get(show))
        .route("/api/control/{stage}/pause", post(pause))
        .route("/api/control/{stage}/resume", post(resume))
        .route("/api/control/cards/{card}/{stage}/pause", post(pause))
        .route("/api/control/cards/{card}/{stage}/resume", post(resume))
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
    let reason = reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    if let Some(reason) = &reason {
        stored_text("reason", reason)?;
    }
    Ok(reason)
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

impl StageStatus {
    fn of(pause: Option<Pause>) -> StageStatus {
        StageStatus { paused: pause.is_some(), pause }
    }
}

#[derive(Serialize)]
struct Controls {
    signing: StageStatus,
    uploading: StageStatus,
    /// Every configured card's own pauses, in the configuration's order.
    cards: Vec<CardControls>,
}

#[derive(Serialize)]
struct CardControls {
    name: String,
    signing: StageStatus,
    uploading: StageStatus,
}

async fn show(State(ctx): State<ApiContext>, headers: HeaderMap) -> Result<Json<Controls>, ApiError> {
    authorize(&ctx, &headers, Caller::Viewer)?;
    let pauses = ctx.store.card_pauses().await?;
    let own = |card: &str, stage| StageStatus::of(CardPause::find(&pauses, card, stage).cloned());
    let cards = ctx
        .config
        .signers
        .iter()
        .map(|s| CardControls {
            name: s.name.clone(),
            signing: own(&s.name, Stage::Signing),
            uploading: own(&s.name, Stage::Uploading),
        })
        .collect();
    Ok(Json(Controls {
        signing: StageStatus::of(ctx.store.pause_of(Stage::Signing).await?),
        uploading: StageStatus::of(ctx.store.pause_of(Stage::Uploading).await?),
        cards,
    }))
}

/// What an action stops or lets go: a stage on every card, or on one.
#[derive(Clone, Copy)]
enum Target<'a> {
    All(Stage),
    Card(&'a str, Stage),
}

impl Target<'_> {
    fn stage(self) -> Stage {
        match self {
            Target::All(stage) | Target::Card(_, stage) => stage,
        }
    }

    fn card(self) -> Option<String> {
        match self {
            Target::All(_) => None,
            Target::Card(card, _) => Some(card.to_owned()),
        }
    }

    /// "resume signing", "pause uploading on card b".
    fn action(self, verb: &str) -> String {
        match self {
            Target::All(stage) => format!("{verb} {}", stage.as_str()),
            Target::Card(card, stage) => format!("{verb} {} on card {card}", stage.as_str()),
        }
    }

    async fn pause_of(self, ctx: &ApiContext) -> Result<Option<Pause>, ApiError> {
        Ok(match self {
            Target::All(stage) => ctx.store.pause_of(stage).await?,
            Target::Card(card, stage) => ctx.store.card_pause_of(card, stage).await?,
        })
    }
}

/// A configured card's name, or 404.
fn card_of<'a>(ctx: &'a ApiContext, card: &str) -> Result<&'a str, ApiError> {
    ctx.config.signers.iter().find(|s| s.name == card).map(|s| s.name.as_str()).ok_or_else(|| {
        let names: Vec<&str> = ctx.config.signers.iter().map(|s| s.name.as_str()).collect();
        ApiError::NotFound(format!("no card {card:?}; cards: {}", names.join(", ")))
    })
}

#[derive(Serialize)]
struct Resumed {
    stage: Stage,
    /// The card, when one card's stage was resumed.
    #[serde(skip_serializing_if = "Option::is_none")]
    card: Option<String>,
    /// The pause that was cleared; absent when the stage was not paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    cleared: Option<Pause>,
}

/// `/api/control/{stage}/…` or `/api/control/cards/{card}/{stage}/…`.
#[derive(Deserialize)]
struct ControlPath {
    card: Option<String>,
    stage: String,
}

impl ControlPath {
    fn target<'a>(&self, ctx: &'a ApiContext) -> Result<Target<'a>, ApiError> {
        let stage = stage_of(&self.stage)?;
        Ok(match &self.card {
            None => Target::All(stage),
            Some(card) => Target::Card(card_of(ctx, card)?, stage),
        })
    }
}

async fn resume(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    Path(path): Path<ControlPath>,
    body: Bytes,
) -> Result<Json<Resumed>, ApiError> {
    let actor = authorize(&ctx, &headers, Caller::Operator)?;
    resume_target(&ctx, &actor.name, path.target(&ctx)?, &body).await
}

async fn resume_target(
    ctx: &ApiContext,
    actor: &str,
    target: Target<'_>,
    body: &Bytes,
) -> Result<Json<Resumed>, ApiError> {
    let reason = reason_of(body)?;
    let stage = target.stage();
    let cleared = match target {
        Target::All(stage) => ctx.store.resume(stage).await?,
        Target::Card(card, stage) => ctx.store.resume_card(card, stage).await?,
    };
    if let Some(pause) = &cleared {
        tracing::warn!(
            stage = stage.as_str(),
            card = target.card(),
            actor,
            reason = pause.reason,
            "operator resumed"
        );
    }
    let action = target.action("resume");
    ctx.store.audit(actor, &action, None, reason.as_deref(), i64::from(cleared.is_some()), now_ms()).await?;
    wake(ctx, stage);
    if matches!(target, Target::Card(..)) {
        // A card's uploads resumed lets it sign again.
        ctx.sign.notify_one();
    }
    Ok(Json(Resumed { stage, card: target.card(), cleared }))
}

#[derive(Serialize)]
struct Paused {
    stage: Stage,
    #[serde(skip_serializing_if = "Option::is_none")]
    card: Option<String>,
    /// The pause in force: this one, or an earlier one, whose reason is kept.
    pause: Option<Pause>,
}

/// An operator stops a stage (a card to change, customs' maintenance), on
/// every card or on one: a reason is required, and shown with the operator's name.
async fn pause(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    Path(path): Path<ControlPath>,
    body: Bytes,
) -> Result<Json<Paused>, ApiError> {
    let actor = authorize(&ctx, &headers, Caller::Operator)?;
    pause_target(&ctx, &actor.name, path.target(&ctx)?, &body).await
}

async fn pause_target(
    ctx: &ApiContext,
    actor: &str,
    target: Target<'_>,
    body: &Bytes,
) -> Result<Json<Paused>, ApiError> {
    let reason = reason_of(body)?
        .ok_or_else(|| ApiError::BadRequest("a pause needs a reason: {\"reason\": \"...\"}".into()))?;
    let now = now_ms();
    match target {
        Target::All(stage) => ctx.store.pause_as(stage, &reason, Some(actor), now).await?,
        Target::Card(card, stage) => ctx.store.pause_card(card, stage, &reason, Some(actor), now).await?,
    }
    tracing::warn!(stage = target.stage().as_str(), card = target.card(), actor, reason, "operator paused");
    ctx.store.audit(actor, &target.action("pause"), None, Some(&reason), 1, now).await?;
    Ok(Json(Paused { stage: target.stage(), card: target.card(), pause: target.pause_of(ctx).await? }))
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
