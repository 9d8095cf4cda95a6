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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt as _;

    use crate::config::Config;
    use crate::context::ApiContext;

    const TOKEN: &str = "status-test-admin-token";

    async fn context(dir: &std::path::Path) -> ApiContext {
        let toml = format!(
            "[admin]\ntoken = \"{TOKEN}\"\n[store]\npath = {:?}\n[enterprise]\nebp_code = \"E1\"\n\
             [signer]\npin = \"1\"\n[customs]\nenvironment = \"test\"\n",
            dir.join("db.sqlite").display().to_string()
        );
        let config = Config::from_toml_str(&toml, std::iter::empty()).unwrap();
        let store = customs179_store::Store::open(&config.store.path).await.unwrap();
        ApiContext {
            config: Arc::new(config),
            store,
            prepare: Arc::default(),
            sign: Arc::default(),
            upload: Arc::default(),
            metrics: Arc::default(),
            pause_lost: Arc::default(),
        }
    }

    #[tokio::test]
    async fn the_page_is_served_and_the_summary_needs_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path()).await;
        ctx.store.pause(customs179_store::Stage::Uploading, "customs answered 20004", 7).await.unwrap();
        let app = crate::http::admin::router(ctx);

        let page = app.clone().oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let html = axum::body::to_bytes(page.into_body(), 1 << 20).await.unwrap();
        assert!(String::from_utf8_lossy(&html).contains("<title>customs179 status</title>"));

        let anonymous =
            app.clone().oneshot(Request::get("/api/status").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

        let request = Request::get("/api/status").header("authorization", format!("Bearer {TOKEN}"));
        let status = app.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(status.status(), StatusCode::OK);
        let body: serde_json::Value =
            serde_json::from_slice(&axum::body::to_bytes(status.into_body(), 1 << 20).await.unwrap())
                .unwrap();
        assert_eq!(body["states"]["waiting"], 0);
        assert_eq!(body["late"], 0);
        assert_eq!(body["signing"], serde_json::Value::Null);
        assert_eq!(body["uploading"]["reason"], "customs answered 20004");
    }
}
