//! The admin listener: the platform's payments API and the operators' API.

use axum::Router;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

use super::ApiError;
use crate::config::Secret;
use crate::context::ApiContext;

pub(crate) fn router(ctx: ApiContext) -> Router {
    Router::new()
        .merge(super::payments::router(&ctx))
        .merge(super::requests::router())
        .merge(super::controls::router())
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
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|token| Secret::new(token.trim()))
        .ok_or(ApiError::Unauthorized)?;
    let admin = &ctx.config.admin.token;
    let payments = ctx.config.payments.token.as_ref().filter(|_| caller == Caller::PaymentsPusher);
    if presented == *admin || payments.is_some_and(|token| presented == *token) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}
