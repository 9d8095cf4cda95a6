//! The status page (`web/index.html` at `/`, its script `web/app.js` at
//! `/app.js` and style `web/app.css` at `/app.css`) and the summary it shows.
//! The page has no inline script or style: the admin listener's
//! Content-Security-Policy (`admin::CONTENT_SECURITY_POLICY`) forbids both.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::routing::get;
use axum::{Json, Router};
use customs179_store::{CardPause, Pause, Stage};
use serde::Serialize;

use super::ApiError;
use super::admin::{Caller, authorize};
use crate::context::{ApiContext, now_ms};

/// The console's files, compiled in, so the binary is all there is to
/// deploy: (path served, content type, contents). `web/app.js` imports the
/// other modules by these paths; nothing comes from another origin.
pub(crate) const ASSETS: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", PAGE),
    ("/app.js", JS, SCRIPT),
    ("/app.css", "text/css; charset=utf-8", include_str!("../../../../web/app.css")),
    ("/api.js", JS, include_str!("../../../../web/api.js")),
    ("/i18n.js", JS, include_str!("../../../../web/i18n.js")),
    ("/dom.js", JS, include_str!("../../../../web/dom.js")),
    ("/events.js", JS, include_str!("../../../../web/events.js")),
    ("/health.js", JS, include_str!("../../../../web/health.js")),
    ("/list.js", JS, include_str!("../../../../web/list.js")),
    ("/chart.js", JS, include_str!("../../../../web/chart.js")),
    ("/failures.js", JS, include_str!("../../../../web/failures.js")),
    ("/alerts.js", JS, include_str!("../../../../web/alerts.js")),
    ("/detail.js", JS, include_str!("../../../../web/detail.js")),
    ("/dialog.js", JS, include_str!("../../../../web/dialog.js")),
];
const JS: &str = "text/javascript; charset=utf-8";
const PAGE: &str = include_str!("../../../../web/index.html");
const SCRIPT: &str = include_str!("../../../../web/app.js");

pub(crate) fn router() -> Router<ApiContext> {
    let mut router = Router::new().route("/api/status", get(status));
    for &(path, content_type, body) in ASSETS {
        // Not cached: a new binary may bring a new page or script.
        router = router.route(
            path,
            get(move || async move {
                ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-store")], body)
            }),
        );
    }
    router
}

/// The summary of `GET /api/status`, also sent by `GET /api/events`.
#[derive(Serialize)]
pub(crate) struct Status {
    now: i64,
    /// Requests per state, exact (kept in counter rows).
    states: serde_json::Map<String, serde_json::Value>,
    /// Pending with less than `[customs] at_risk_secs` left before the deadline.
    at_risk: i64,
    at_risk_secs: u64,
    /// Delivered after the deadline, or pending past it.
    late: i64,
    /// Pending past the deadline (a part of `late`).
    past_deadline: i64,
    /// How long the oldest pending request has waited since customs' call, ms.
    oldest_pending_ms: Option<i64>,
    last_hour: LastHour,
    signing: Option<Pause>,
    uploading: Option<Pause>,
    cards: Vec<CardStatus>,
    customs: CustomsStatus,
    tasks: Vec<crate::health::TaskHealth>,
    /// The instances on the database, with their heartbeats: those running,
    /// and those stopped in the last [`INSTANCES_STOPPED_SHOWN`] ms.
    instances: Vec<customs179_store::InstanceView>,
}

/// How long a stopped instance stays in the status.
const INSTANCES_STOPPED_SHOWN: i64 = 3_600_000;

/// A card as its signer last saw it, and its own pauses (all signing
/// paused is `signing` of the status).
#[derive(Serialize)]
struct CardStatus {
    #[serde(flatten)]
    seen: crate::live::CardView,
    /// The card's signing paused (a refused PIN, its breaker, its
    /// certificate, an operator): why, since when, by whom.
    paused: Option<Pause>,
    /// The card's uploads paused: customs refused its certNo (20004).
    uploads_stopped: Option<Pause>,
}

#[derive(Serialize)]
struct CustomsStatus {
    environment: &'static str,
    #[serde(flatten)]
    seen: crate::live::CustomsView,
    /// Uploads stopped after a 20004, with its reason.
    stopped: Option<Pause>,
}

/// The last hour's deliveries.
#[derive(Serialize, Default, Debug, PartialEq)]
struct LastHour {
    /// Deliveries in each minute, oldest first (60 values; the last is the current minute).
    delivered_per_minute: Vec<u64>,
    delivered: usize,
    /// Customs' call to delivered, ms.
    p50_ms: Option<i64>,
    p95_ms: Option<i64>,
    p99_ms: Option<i64>,
    deadline_ms: i64,
}

const MINUTE_MS: i64 = 60_000;

impl LastHour {
    fn of(deliveries: &[(i64, i64)], now: i64, deadline_ms: i64) -> LastHour {
        let this_minute = now.div_euclid(MINUTE_MS);
        let mut per_minute = vec![0u64; 60];
        let mut took: Vec<i64> = Vec::with_capacity(deliveries.len());
        for &(delivered_at, received_at) in deliveries {
            let ago = this_minute - delivered_at.div_euclid(MINUTE_MS);
            if let Ok(ago) = usize::try_from(ago)
                && ago < 60
            {
                per_minute[59 - ago] += 1;
                took.push(delivered_at - received_at);
            }
        }
        took.sort_unstable();
        let rank = |q: f64| -> Option<i64> {
            let n = took.len();
            (n > 0).then(|| took[((n as f64 * q).ceil() as usize).clamp(1, n) - 1])
        };
        LastHour {
            delivered: took.len(),
            p50_ms: rank(0.50),
            p95_ms: rank(0.95),
            p99_ms: rank(0.99),
            delivered_per_minute: per_minute,
            deadline_ms,
        }
    }
}

async fn status(State(ctx): State<ApiContext>, headers: HeaderMap) -> Result<Json<Status>, ApiError> {
    authorize(&ctx, &headers, Caller::Viewer)?;
    Ok(Json(current(&ctx).await?))
}

/// The summary as it stands now.
pub(crate) async fn current(ctx: &ApiContext) -> Result<Status, ApiError> {
    let now = now_ms();
    let states = ctx
        .store
        .count_by_state()
        .await?
        .into_iter()
        .map(|(state, count)| (state.as_str().to_owned(), count.into()))
        .collect();
    let customs = &ctx.config.customs;
    let deadline_ms = i64::try_from(customs.deadline_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    // From the start of the minute an hour ago, so that the first bar is whole.
    let hour_ago = (now.div_euclid(MINUTE_MS) - 59) * MINUTE_MS;
    let deliveries = ctx.store.deliveries_since(hour_ago).await?;
    let uploading = ctx.store.pause_of(Stage::Uploading).await?;
    let signing = ctx.store.pause_of(Stage::Signing).await?;
    let card_pauses = ctx.store.card_pauses().await?;
    let own = |card: &str, stage: Stage| CardPause::find(&card_pauses, card, stage).cloned();
    let instances = ctx.store.instances(now, INSTANCES_STOPPED_SHOWN).await?;
    let others = crate::live::customs_of_others(&ctx.instance.id, &instances);
    Ok(Status {
        now,
        states,
        at_risk: ctx.store.count_at_risk(now, customs.at_risk_ms()).await?,
        at_risk_secs: customs.at_risk_secs,
        late: ctx.store.count_late(now).await?,
        past_deadline: ctx.store.count_past_deadline(now).await?,
        oldest_pending_ms: ctx.store.oldest_pending().await?.map(|received| now - received),
        last_hour: LastHour::of(&deliveries, now, deadline_ms),
        signing: signing.clone(),
        cards: crate::live::system_cards(ctx, now)
            .await?
            .into_iter()
            .map(|seen| CardStatus {
                paused: own(&seen.name, Stage::Signing),
                uploads_stopped: own(&seen.name, Stage::Uploading),
                seen,
            })
            .collect(),
        customs: CustomsStatus {
            environment: customs.environment.as_str(),
            seen: ctx.live.customs(now, &others),
            stopped: uploading.clone(),
        },
        uploading,
        tasks: ctx.health.report(),
        instances,
    })
}

#[cfg(test)]
mod last_hour_tests {
    use super::*;

    #[test]
    fn the_last_hour_is_counted_per_minute_with_percentiles() {
        let now = 100 * MINUTE_MS + 30_000;
        let deliveries: Vec<(i64, i64)> = (1..=100)
            .map(|i| (now - i * 1_000, now - i * 1_000 - i * 100))
            .chain([(now - 2 * 3_600_000, 0)])
            .collect();
        let hour = LastHour::of(&deliveries, now, 120_000);
        assert_eq!(hour.delivered, 100, "the one from two hours ago is out");
        assert_eq!(hour.delivered_per_minute.len(), 60);
        // 30 in this minute (1..=30 s ago), 60 in the one before, 10 before that.
        assert_eq!(&hour.delivered_per_minute[57..], [10, 60, 30]);
        assert_eq!((hour.p50_ms, hour.p95_ms, hour.p99_ms), (Some(5_000), Some(9_500), Some(9_900)));
        assert_eq!(LastHour::of(&[], now, 120_000).p99_ms, None);
    }
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
            health: Arc::default(),
            live: Arc::default(),
            instance: Arc::new(crate::workers::instance::Instance::new()),
            stopping: crate::workers::Shutdown::new().1,
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
        assert!(String::from_utf8_lossy(&html).contains("<title>customs179 console</title>"));

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
        assert_eq!(body["past_deadline"], 0);
        assert_eq!(body["signing"], serde_json::Value::Null);
        assert_eq!(body["uploading"]["reason"], "customs answered 20004");
    }

    /// The console asks who holds its token, to show an operator's buttons only to operators.
    #[tokio::test]
    async fn whoami_tells_the_token_name_and_role() {
        let dir = tempfile::tempdir().unwrap();
        let mut ctx = context(dir.path()).await;
        let mut config = (*ctx.config).clone();
        config.admin.tokens.push(crate::config::AdminToken {
            name: "wall screen".into(),
            token: crate::config::Secret::new("wall-screen-viewer-token"),
            role: crate::config::Role::Viewer,
        });
        ctx.config = Arc::new(config);
        let app = crate::http::admin::router(ctx);
        for (token, name, role) in
            [(TOKEN, "admin", "operator"), ("wall-screen-viewer-token", "wall screen", "viewer")]
        {
            let request = Request::get("/api/whoami").header("authorization", format!("Bearer {token}"));
            let answer = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
            let body: serde_json::Value =
                serde_json::from_slice(&axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap())
                    .unwrap();
            assert_eq!(body, serde_json::json!({ "name": name, "role": role }));
        }
        let request = Request::get("/api/whoami").header("authorization", "Bearer not-a-token-at-all");
        let answer = app.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    }

    /// A supervisor must be able to trust /healthz: a task that stopped beating or died is 503.
    #[tokio::test]
    async fn healthz_is_503_when_a_task_is_stale_or_dead() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path()).await;
        ctx.health.register("signer", std::time::Duration::from_millis(50));
        ctx.health.register("uploader", std::time::Duration::from_secs(60));
        let app = crate::http::admin::router(ctx.clone());
        let health = async |app: &axum::Router| {
            let answer =
                app.clone().oneshot(Request::get("/healthz").body(Body::empty()).unwrap()).await.unwrap();
            let status = answer.status();
            let body = axum::body::to_bytes(answer.into_body(), 1 << 20).await.unwrap();
            (status, serde_json::from_slice::<serde_json::Value>(&body).unwrap())
        };
        assert_eq!(health(&app).await.0, StatusCode::OK);

        tokio::time::sleep(std::time::Duration::from_millis(80)).await;
        let (status, body) = health(&app).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["tasks"][0]["name"], "signer");
        assert_eq!(body["tasks"][0]["state"], "stale");

        ctx.health.beat("signer");
        assert_eq!(health(&app).await.0, StatusCode::OK);
        ctx.health.ended("uploader", "it panicked".into());
        let (status, body) = health(&app).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            (&body["tasks"][1]["state"], &body["tasks"][1]["ended"]),
            (&"dead".into(), &"it panicked".into())
        );
    }

    /// The headers every admin answer carries, whoever made it.
    #[tokio::test]
    async fn every_admin_answer_carries_the_security_headers() {
        let dir = tempfile::tempdir().unwrap();
        let app = crate::http::admin::router(context(dir.path()).await);
        let admin = format!("Bearer {TOKEN}");
        let admin = Some(admin.as_str());
        let cases = [
            ("GET", "/", None, StatusCode::OK, Some("text/html; charset=utf-8")),
            ("GET", "/app.js", None, StatusCode::OK, Some("text/javascript; charset=utf-8")),
            ("GET", "/app.css", None, StatusCode::OK, Some("text/css; charset=utf-8")),
            ("GET", "/list.js", None, StatusCode::OK, Some("text/javascript; charset=utf-8")),
            ("GET", "/api/whoami", admin, StatusCode::OK, Some("application/json")),
            ("GET", "/api/whoami", None, StatusCode::UNAUTHORIZED, Some("application/json")),
            ("GET", "/api/status", admin, StatusCode::OK, Some("application/json")),
            ("GET", "/api/status", None, StatusCode::UNAUTHORIZED, Some("application/json")),
            ("GET", "/api/requests/nobody", admin, StatusCode::NOT_FOUND, Some("application/json")),
            ("GET", "/healthz", None, StatusCode::OK, Some("application/json")),
            ("GET", "/no/such/page", None, StatusCode::NOT_FOUND, None),
            ("DELETE", "/", None, StatusCode::METHOD_NOT_ALLOWED, None),
        ];
        for (method, path, token, status, content_type) in cases {
            let mut request = Request::builder().method(method).uri(path);
            if let Some(token) = token {
                request = request.header("authorization", token);
            }
            let response = app.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
            let what = format!("{method} {path}");
            assert_eq!(response.status(), status, "{what}");
            let headers = response.headers();
            let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
            if let Some(content_type) = content_type {
                assert_eq!(header("content-type").as_deref(), Some(content_type), "{what}");
            }
            let csp = header("content-security-policy").unwrap_or_else(|| panic!("{what}: no CSP"));
            assert_eq!(csp, crate::http::admin::CONTENT_SECURITY_POLICY, "{what}");
            assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"), "{what}");
            assert_eq!(header("referrer-policy").as_deref(), Some("no-referrer"), "{what}");
        }

        // The policy itself: this listener only, no inline script or style, no framing.
        let csp = crate::http::admin::CONTENT_SECURITY_POLICY;
        let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
        for wanted in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
            "require-trusted-types-for 'script'",
        ] {
            assert!(directives.contains(&wanted), "{wanted:?} missing from {csp:?}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(!csp.contains('*') && !csp.contains("http"), "no other origin: {csp}");
    }

    /// What the policy forbids, the page must not need: no inline script, handler or style.
    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = super::PAGE.to_ascii_lowercase();
        assert_eq!(page.matches("<script").count(), 1, "one script element");
        assert!(page.contains(r#"<script type="module" src="/app.js"></script>"#));
        assert!(!page.contains("<style") && !page.contains("style="), "no inline style");
        assert!(!has_handler_attribute(&page), "no inline event handlers");
        let scripts =
            super::ASSETS.iter().filter(|(_, content_type, _)| content_type.starts_with("text/javascript"));
        for &(path, _, script) in scripts {
            let script = script.to_ascii_lowercase();
            for sink in [
                "innerhtml",
                "outerhtml",
                "insertadjacenthtml",
                "document.write",
                "eval(",
                "new function",
                ".style.",
            ] {
                assert!(!script.contains(sink), "{path} uses {sink}");
            }
            for import in script.match_indices(" from \"").map(|(at, _)| &script[at + 7..]) {
                let target = &import[..import.find('"').unwrap()];
                let target = target.strip_prefix('.').unwrap_or(target);
                assert!(
                    super::ASSETS.iter().any(|(served, _, _)| *served == target),
                    "{path} imports {target}, which is not served"
                );
            }
        }
        let css = super::ASSETS.iter().find(|(path, _, _)| *path == "/app.css").unwrap().2;
        assert!(!css.contains("url(") && !css.contains("@import"), "the style reaches nothing");
    }

    /// ` onclick=`, ` onload=`…: an attribute starting with "on".
    fn has_handler_attribute(page: &str) -> bool {
        page.match_indices(" on").any(|(at, _)| {
            let rest = &page[at + 3..];
            let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
            !name.is_empty() && rest[name.len()..].trim_start().starts_with('=')
        })
    }
}
