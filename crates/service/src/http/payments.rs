//! `POST /api/payments`: the platform pushes payment records.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use customs179_core::{PaymentRecord, Pointer, Problem, RecordRules};
use customs179_store::{PutError, PutOutcome};
use serde_json::value::RawValue;

use super::ApiError;
use super::admin::{Caller, authorize};
use crate::context::{ApiContext, now_ms};

pub(crate) fn router(ctx: &ApiContext) -> Router<ApiContext> {
    Router::new()
        .route("/api/payments", post(put_payments))
        .layer(DefaultBodyLimit::max(ctx.config.payments.max_body_bytes))
}

/// One record or an array of records, all or nothing: 201 when something
/// was stored, 200 when everything was already there, 409 on conflicts,
/// 422 with every problem.
async fn put_payments(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PutOutcome>), ApiError> {
    authorize(&ctx, &headers, Caller::PaymentsPusher)?;
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(ctx.config.payments.max_body_bytes),
        _ => ApiError::BadRequest(rejection.body_text()),
    })?;
    let records = parse_records(&body, &ctx.config.enterprise.ebp_code)?;
    let outcome = ctx.store.put_payments(&records, now_ms()).await.map_err(|e| match e {
        PutError::Conflict(conflicts) => ApiError::Conflict(conflicts),
        PutError::Store(e) => ApiError::Store(e),
    })?;
    if outcome.stored > 0 {
        tracing::info!(stored = outcome.stored, unchanged = outcome.unchanged, "payments: records stored");
        ctx.prepare.orders(records.iter().flat_map(|r| r.order_nos()));
    }
    let status = if outcome.stored > 0 { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(outcome)))
}

/// Validates a body holding one record or an array of them, as the platform
/// sends them: no guid, and an ebpCode (if any) that is ours.
pub(crate) fn parse_records(body: &[u8], ebp_code: &str) -> Result<Vec<PaymentRecord>, ApiError> {
    let invalid = |message: String| ApiError::Invalid(vec![Problem::new(Pointer::root(), message)]);
    let text = std::str::from_utf8(body).map_err(|_| invalid("the body is not UTF-8".to_owned()))?;
    let raw: Box<RawValue> =
        serde_json::from_str(text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let items: Vec<(Box<RawValue>, Pointer)> = if raw.get().starts_with('[') {
        let items: Vec<Box<RawValue>> =
            serde_json::from_str(raw.get()).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        if items.is_empty() {
            return Err(invalid("the array holds no records".to_owned()));
        }
        items.into_iter().enumerate().map(|(i, item)| (item, Pointer::root().index(i))).collect()
    } else {
        vec![(raw, Pointer::root())]
    };
    let mut records = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for (item, at) in &items {
        match PaymentRecord::from_raw(item, at, RecordRules::PLATFORM) {
            Ok(record) => {
                if record.head.ebp_code.as_deref().is_some_and(|code| code != ebp_code) {
                    problems.push(Problem::new(
                        at.key("payExchangeInfoHead").key("ebpCode"),
                        format!("must be this platform's ebpCode {ebp_code:?}, or be left out"),
                    ));
                }
                records.push(record);
            }
            Err(e) => problems.extend(e.0),
        }
    }
    if problems.is_empty() { Ok(records) } else { Err(ApiError::Invalid(problems)) }
}
