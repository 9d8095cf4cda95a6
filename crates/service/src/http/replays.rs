//! Failures by cause and bulk replays: `GET /api/failures` groups the failed
//! requests by stage and kind; `POST /api/replays` makes a dry run (a count
//! and a token bound to the requests captured) or confirms one, which then
//! runs in the background; `GET /api/replays/{id}` shows how far it got.
//! Only failed requests are ever taken in bulk; a delivered request is
//! replayed one at a time (`POST /api/requests/{id}/replay`).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use customs179_core::may_be_id;
use customs179_store::{
    DryRun, FailureGroup, REPLAY_CAP, REPLAY_CHUNK, ReplayError, ReplayFilter, ReplayJob, ReplaySelection,
    Store,
};
use serde::{Deserialize, Serialize};

use super::admin::{Caller, authorize};
use super::{ApiError, id_param, stored_text};
use crate::context::{ApiContext, now_ms};

pub(crate) fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/failures", get(failures))
        .route("/api/replays", post(replays))
        .route("/api/replays/{id}", get(job))
}

#[derive(Serialize)]
struct Failures {
    /// Failed requests in all.
    total: i64,
    /// The largest group first.
    groups: Vec<FailureGroup>,
}

async fn failures(State(ctx): State<ApiContext>, headers: HeaderMap) -> Result<Json<Failures>, ApiError> {
    authorize(&ctx, &headers, Caller::Viewer)?;
    let groups = ctx.store.failure_groups().await?;
    Ok(Json(Failures { total: groups.iter().map(|g| g.count).sum(), groups }))
}

/// `{"session_ids": [...]}`, `{"group": ID}` or `{"filter": {...}}` with
/// `"dry_run": true`; or `{"confirm": TOKEN, "reason": "..."}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    session_ids: Option<Vec<String>>,
    group: Option<String>,
    filter: Option<FilterBody>,
    #[serde(default)]
    dry_run: bool,
    confirm: Option<String>,
    /// Required with `confirm`; ignored with a dry run.
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterBody {
    /// "failed", or absent: bulk replays take failed requests only.
    state: Option<String>,
    /// Customs called at or after (unix ms).
    since: Option<i64>,
    /// Customs called before (unix ms).
    until: Option<i64>,
    order_no: Option<String>,
}

#[derive(Serialize)]
struct DryRunAnswer {
    dry_run: bool,
    #[serde(flatten)]
    captured: DryRun,
}

async fn replays(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let actor = authorize(&ctx, &headers, Caller::Operator)?;
    let body: ReplayBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be {{\"session_ids\": [...]}}, {{\"group\": ID}} or {{\"filter\": {{...}}}} with \
             \"dry_run\": true, or {{\"confirm\": TOKEN, \"reason\": \"...\"}}: {e}"
        ))
    })?;
    let now = now_ms();
    if let Some(token) = &body.confirm {
        if body.session_ids.is_some() || body.group.is_some() || body.filter.is_some() || body.dry_run {
            return Err(ApiError::BadRequest(
                "a confirmation takes the token and a reason only: it replays what its dry run captured"
                    .into(),
            ));
        }
        let reason = body.reason.as_deref().map(str::trim).filter(|r| !r.is_empty()).ok_or_else(|| {
            ApiError::BadRequest(
                "a bulk replay needs a reason: {\"confirm\": TOKEN, \"reason\": \"...\"}".into(),
            )
        })?;
        stored_text("reason", reason)?;
        if !may_be_id(token) {
            return Err(refusal(ReplayError::UnknownToken));
        }
        let job = ctx.store.confirm_replay(token, &actor.name, reason, now).await.map_err(refusal)?;
        tracing::warn!(
            replay = job.id,
            count = job.count,
            actor = actor.name,
            reason,
            "operator confirmed a bulk replay"
        );
        tokio::spawn(work(ctx.clone(), job.id));
        return Ok((StatusCode::ACCEPTED, Json(job)).into_response());
    }
    let selection = selection_of(body)?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let captured =
        ctx.store.capture_replay(&selection, &actor.name, &token, REPLAY_CAP, now).await.map_err(refusal)?;
    tracing::info!(replay = captured.id, count = captured.count, actor = actor.name, "bulk replay: dry run");
    Ok(Json(DryRunAnswer { dry_run: true, captured }).into_response())
}

/// The one selection of a dry run.
fn selection_of(body: ReplayBody) -> Result<ReplaySelection, ApiError> {
    let ReplayBody { session_ids, group, filter, dry_run, .. } = body;
    let given =
        usize::from(session_ids.is_some()) + usize::from(group.is_some()) + usize::from(filter.is_some());
    if given != 1 {
        return Err(ApiError::BadRequest(
            "give one of session_ids, group or filter (with \"dry_run\": true), or confirm a dry run's token"
                .into(),
        ));
    }
    if !dry_run {
        return Err(ApiError::BadRequest(
            "a bulk replay starts with a dry run: add \"dry_run\": true, then confirm its token with \
             {\"confirm\": TOKEN, \"reason\": \"...\"}"
                .into(),
        ));
    }
    if let Some(ids) = session_ids {
        if ids.is_empty() {
            return Err(ApiError::BadRequest("session_ids is empty".into()));
        }
        if let Some(bad) = ids.iter().find(|id| !may_be_id(id)) {
            return Err(ApiError::BadRequest(format!("session_ids holds {bad:?}, with a control character")));
        }
        return Ok(ReplaySelection::SessionIds(ids));
    }
    if let Some(group) = group {
        if !may_be_id(&group) {
            return Err(ApiError::BadRequest(format!("group {group:?} holds a control character")));
        }
        return Ok(ReplaySelection::Group(group));
    }
    let FilterBody { state, since, until, order_no } =
        filter.unwrap_or(FilterBody { state: None, since: None, until: None, order_no: None });
    if let Some(state) = state.filter(|s| s != "failed") {
        return Err(ApiError::BadRequest(format!(
            "a bulk replay takes failed requests only, not {state:?}; a delivered request is replayed one at a \
             time: POST /api/requests/{{sessionID}}/replay"
        )));
    }
    if let (Some(since), Some(until)) = (since, until)
        && since >= until
    {
        return Err(ApiError::BadRequest(format!("since ({since}) must be before until ({until})")));
    }
    let order_no = id_param("order_no", order_no.filter(|o| !o.is_empty()))?;
    Ok(ReplaySelection::Filter(ReplayFilter { since, until, order_no }))
}

fn refusal(e: ReplayError) -> ApiError {
    match e {
        ReplayError::UnknownToken => ApiError::NotFound(e.to_string()),
        ReplayError::OverCap { .. } | ReplayError::TokenUsed { .. } | ReplayError::TokenExpired { .. } => {
            ApiError::Conflict(vec![e.to_string()])
        }
        ReplayError::Store(e) => ApiError::Store(e),
    }
}

async fn job(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ReplayJob>, ApiError> {
    authorize(&ctx, &headers, Caller::Viewer)?;
    let not_found = || ApiError::NotFound(format!("no replay {id:?}"));
    let number: i64 = id.parse().map_err(|_| not_found())?;
    ctx.store.replay_job(number, now_ms()).await?.map(Json).ok_or_else(not_found)
}

/// Works a confirmed replay through in the background (see [`work_through`]),
/// and has the preparer look at what came back to `waiting`.
pub(crate) async fn work(ctx: ApiContext, id: i64) {
    work_through(&ctx.store, id, || ctx.prepare.sweep()).await;
}

/// Works replay `id` through, [`REPLAY_CHUNK`] requests per transaction,
/// calling `replayed` after each chunk that replayed some. Ends when nothing
/// is left, or when the database closes (a stop) or keeps refusing: what is
/// left is adopted ([`adopt_orphans`]) by the next instance to look once this
/// one has stopped, this one at its next start included.
async fn work_through(store: &Store, id: i64, replayed: impl Fn()) {
    let mut errors = 0u32;
    loop {
        match store.replay_chunk(id, REPLAY_CHUNK, now_ms()).await {
            Ok(progress) => {
                errors = 0;
                if progress.replayed > 0 {
                    replayed();
                }
                if progress.finished {
                    tracing::info!(replay = id, "bulk replay finished");
                    return;
                }
                tokio::task::yield_now().await;
            }
            Err(e) if e.is_closed() => {
                tracing::warn!(replay = id, "bulk replay cut short by the stop; the next start resumes it");
                return;
            }
            Err(e) => {
                errors += 1;
                if errors >= 30 {
                    tracing::error!(replay = id, error = %e, "bulk replay given up for now; the next start resumes it");
                    return;
                }
                tracing::warn!(replay = id, error = %e, "bulk replay: database error, trying again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Adopts the confirmed replays that no live instance works (a stop or a
/// crash cut them short) and works them through in the background. The
/// service calls it at its start and at each heartbeat: on several instances
/// a replay whose instance died goes on within seconds, elsewhere.
pub(crate) async fn adopt_orphans(ctx: &ApiContext) {
    match ctx.store.adopt_replays(now_ms()).await {
        Ok(ids) if ids.is_empty() => {}
        Ok(ids) => {
            let ctx = ctx.clone();
            tokio::spawn(async move { resume(&ctx.store, ids, || ctx.prepare.sweep()).await });
        }
        Err(e) => tracing::warn!(error = %e, "cannot look for bulk replays to resume"),
    }
}

async fn resume(store: &Store, ids: Vec<i64>, replayed: impl Fn()) {
    for id in ids {
        tracing::warn!(replay = id, "resuming a bulk replay cut short by a stop or a crash");
        work_through(store, id, &replayed).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use customs179_core::OpenReq;
    use customs179_store::{NewRequest, ReplayStatus};

    use super::*;

    #[tokio::test]
    async fn a_start_resumes_a_replay_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).await.unwrap();
        let requests: Vec<NewRequest> = (0..3)
            .map(|i| {
                let raw = format!(r#"{{"orderNo":"O-{i}","sessionID":"S-{i}","serviceTime":1}}"#);
                NewRequest { open_req: OpenReq::parse(&raw).unwrap(), raw, received_at: 10, deadline_at: 20 }
            })
            .collect();
        store.insert_requests(&requests).await.unwrap();
        store
            .give_up_waiting(10, &customs179_store::Outcome::new("no_payment_data", "no payment data"), 30)
            .await
            .unwrap();
        let selection = ReplaySelection::Filter(ReplayFilter::default());
        store.capture_replay(&selection, "alice", "token", 10, 40).await.unwrap();
        let job = store.confirm_replay("token", "alice", "resent", 50).await.unwrap();
        // The process stopped here: confirmed, nothing replayed yet.
        let sweeps = AtomicUsize::new(0);
        let adopted = store.adopt_replays(now_ms()).await.unwrap();
        assert_eq!(adopted, [job.id]);
        resume(&store, adopted, || {
            sweeps.fetch_add(1, Ordering::Relaxed);
        })
        .await;
        let done = store.replay_job(job.id, now_ms()).await.unwrap().unwrap();
        assert_eq!((done.status, done.replayed, done.skipped), (ReplayStatus::Finished, 3, 0));
        assert_eq!(sweeps.load(Ordering::Relaxed), 1, "one chunk, one sweep");
        assert!(store.adopt_replays(now_ms()).await.unwrap().is_empty());
    }
}
