//! The one error type of the admin API, mapped to responses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use customs179_core::{Problem, may_be_id};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("the payment data breaks {} rule(s)", .0.len())]
    Invalid(Vec<Problem>),
    #[error("{}", .0.join("; "))]
    Conflict(Vec<String>),
    #[error("the database cannot be used: {0}")]
    Store(#[from] customs179_store::StoreError),
}

/// `value` of parameter `name`, when it can be an id ([`may_be_id`]: intake
/// refuses the others, so a lookup of one need not reach the database).
pub(crate) fn id_param(name: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(text) if !may_be_id(&text) => {
            Err(ApiError::BadRequest(format!("{name} holds a control character, which no id does")))
        }
        value => Ok(value),
    }
}

/// Refuses `text` (parameter `name`) when it holds a NUL, which no stored text may.
pub(crate) fn stored_text(name: &str, text: &str) -> Result<(), ApiError> {
    if text.contains('\0') {
        return Err(ApiError::BadRequest(format!(
            "{name} holds a NUL character (U+0000), which no text may"
        )));
    }
    Ok(())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, body) = match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, json!({ "error": message })),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, json!({ "error": message })),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, json!({ "error": message })),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, json!({ "error": message })),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, json!({ "error": message })),
            ApiError::Invalid(problems) => {
                let problems: Vec<_> = problems
                    .iter()
                    .map(|p| json!({ "pointer": p.pointer.as_str(), "message": p.message }))
                    .collect();
                (StatusCode::UNPROCESSABLE_ENTITY, json!({ "error": message, "problems": problems }))
            }
            ApiError::Conflict(conflicts) => {
                (StatusCode::CONFLICT, json!({ "error": "conflict", "conflicts": conflicts }))
            }
            ApiError::Store(e) => {
                tracing::error!(error = %e, "admin API: database error");
                (StatusCode::SERVICE_UNAVAILABLE, json!({ "error": message }))
            }
        };
        (status, Json(body)).into_response()
    }
}
