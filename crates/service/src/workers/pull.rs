//! The puller: with `[payments] pull_url`, a waiting request asks the
//! platform for its order's payment record instead of waiting for a push.
//!
//! 200 with a record: stored as if pushed, and the request is prepared at
//! once. 404: asked again after `pull_interval_secs`. Other failures: again
//! with exponential backoff. An invalid record fails the request with the
//! validation problems: retrying would only fetch the same record.

use std::time::Duration;

use customs179_store::{Claim, Outcome, PutError, State};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use super::{Shutdown, backoff, code};
use crate::context::{ApiContext, now_ms};
use crate::http::ApiError;

/// Characters left as they are in the `{orderNo}` of the URL (RFC 3986 unreserved).
const ORDER_NO: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// Pulls in flight at once.
const PARALLEL: i64 = 4;
/// How long one pull may take, and so how long its claim lasts.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);
/// Failed pulls back off exponentially up to this.
const MAX_BACKOFF_MS: i64 = 60_000;

pub(crate) async fn run(ctx: ApiContext, pull_url: String, client: reqwest::Client, mut shutdown: Shutdown) {
    let lease = i64::try_from(TIMEOUT.as_millis()).unwrap_or(i64::MAX) * 2;
    while !shutdown.is_requested() {
        ctx.health.beat("puller");
        let claims = match ctx.store.claim_pulls(now_ms(), lease, PARALLEL).await {
            Ok(claims) => claims,
            Err(e) => {
                tracing::error!(error = %e, "puller: database error");
                Vec::new()
            }
        };
        if claims.is_empty() {
            let due = ctx.store.next_due(State::Waiting).await.ok().flatten();
            let wait = due.map_or(1_000, |due| (due - now_ms()).clamp(10, 1_000));
            shutdown.sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(1_000))).await;
            continue;
        }
        let mut pulls = JoinSet::new();
        for claim in claims {
            let (ctx, client, url) = (ctx.clone(), client.clone(), pull_url.clone());
            let span = super::request_span(&claim);
            pulls.spawn(async move { pull_one(&ctx, &client, &url, &claim).await }.instrument(span));
        }
        pulls.join_all().await;
    }
}

/// What one pull came to.
enum Pulled {
    Record(Vec<customs179_core::PaymentRecord>),
    NotYet,
    Failed(String),
    Invalid(String),
}

async fn pull_one(ctx: &ApiContext, client: &reqwest::Client, pull_url: &str, claim: &Claim) {
    let url = pull_url.replace("{orderNo}", &utf8_percent_encode(&claim.order_no, ORDER_NO).to_string());
    let started = std::time::Instant::now();
    let outcome = fetch(ctx, client, &url, &claim.order_no).await;
    let took_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let now = now_ms();
    let stored = match outcome {
        Pulled::Record(records) => match ctx.store.put_payments(&records, now).await {
            Ok(_) => {
                ctx.prepare.orders(records.iter().flat_map(|r| r.order_nos()));
                tracing::info!(
                    session_id = claim.session_id,
                    order_no = claim.order_no,
                    "puller: payment record fetched"
                );
                Ok(true)
            }
            Err(PutError::Conflict(conflicts)) => {
                let reason = format!(
                    "the platform's payment data conflicts with what is stored: {}",
                    conflicts.join("; ")
                );
                ctx.store
                    .fail(claim, "pull", &Outcome::new(code::PAYMENT_CONFLICT, &reason).took(took_ms), now)
                    .await
            }
            Err(PutError::Store(e)) => Err(e),
        },
        Pulled::NotYet => {
            let next = now + secs_to_ms(ctx.config.payments.pull_interval_secs);
            // Noted in last_error only: a day of polls would flood the history.
            let note = Outcome::new(
                code::NO_PAYMENT_DATA,
                "the platform has no payment data for this order yet (404)",
            );
            ctx.store.poll_again(claim, next, &note.took(took_ms), now).await
        }
        Pulled::Failed(why) => {
            tracing::warn!(
                session_id = claim.session_id,
                order_no = claim.order_no,
                why,
                "puller: pull failed"
            );
            let next = now
                + backoff(secs_to_ms(ctx.config.payments.pull_interval_secs), claim.attempts, MAX_BACKOFF_MS);
            ctx.store
                .retry_later(claim, "pull", next, &Outcome::new(code::PULL_FAILED, &why).took(took_ms), now)
                .await
        }
        Pulled::Invalid(why) => {
            tracing::warn!(
                session_id = claim.session_id,
                order_no = claim.order_no,
                why,
                "puller: invalid record"
            );
            ctx.store.fail(claim, "pull", &Outcome::new(code::INVALID_RECORD, &why).took(took_ms), now).await
        }
    };
    if let Err(e) = stored {
        tracing::error!(session_id = claim.session_id, error = %e, "puller: database error");
        // Give the claim back rather than leave it leased until it expires.
        let next = now + secs_to_ms(ctx.config.payments.pull_interval_secs);
        let why = format!("database error: {e}");
        let _ = ctx.store.retry_later(claim, "pull", next, &Outcome::new(code::DATABASE, &why), now).await;
    }
}

async fn fetch(ctx: &ApiContext, client: &reqwest::Client, url: &str, order_no: &str) -> Pulled {
    let mut request = client.get(url).timeout(TIMEOUT);
    if let Some(token) = &ctx.config.payments.pull_token {
        request = request.bearer_auth(token.expose());
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => return Pulled::Failed(format!("pull failed: {}", without_url(&e))),
    };
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Pulled::NotYet;
    }
    if !status.is_success() {
        return Pulled::Failed(format!("pull failed: HTTP {status}"));
    }
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(e) => {
            return Pulled::Failed(format!("pull failed while reading the answer: {}", without_url(&e)));
        }
    };
    let limit = ctx.config.payments.max_body_bytes;
    if body.len() > limit {
        return Pulled::Invalid(format!(
            "the platform's answer is larger than [payments] max_body_bytes ({limit})"
        ));
    }
    match crate::http::parse_records(&body, &ctx.config.enterprise.ebp_code) {
        Ok(records) if records.iter().any(|r| r.order_nos().any(|o| o == order_no)) => {
            Pulled::Record(records)
        }
        Ok(_) => Pulled::Invalid(format!(
            "the platform's payment data for order {order_no} does not list that order"
        )),
        Err(ApiError::Invalid(problems)) => {
            let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
            Pulled::Invalid(format!("the platform's payment data is invalid: {}", problems.join("; ")))
        }
        Err(e) => Pulled::Invalid(format!("the platform's payment data is invalid: {e}")),
    }
}

/// A reqwest error without its URL, which may carry a token in its query.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "the pull URL");
    }
    text
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_numbers_are_percent_encoded() {
        assert_eq!(
            utf8_percent_encode("SO 1/2?&=测-_.~", ORDER_NO).to_string(),
            "SO%201%2F2%3F%26%3D%E6%B5%8B-_.~"
        );
    }
}
