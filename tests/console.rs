//! The operator's console in a real browser (Chromium driven by ChromeDriver, see
//! tests/common/browser.rs) against the real service, the card and customs simulators:
//! it loads in English and, in a browser whose language is Chinese, in Chinese, and the
//! switch is remembered; a request arrives live, over the event stream (no reload), and its
//! countdown runs; a request near its deadline raises the at-risk banner and the tab's title;
//! filters stay in the URL; rows wait while the pointer is over the list; "More" pages
//! through everything; failed requests are replayed, ticked in the list and by group,
//! through the dry run and the confirmation, and delivered; the detail shows the timeline
//! and copies; uploading is paused and resumed from the customs tile with a reason; a
//! viewer's token shows no write buttons; two tabs share one stream (counted by the
//! service: `customs179_events_streams`), with Web Locks and without (the heartbeat); a
//! hidden tab keeps its counts but not its list; the stale banner shows when the service
//! goes away. Screenshots of each view (zh-CN and en, light and dark, and at phone width)
//! go to `target/console-screenshots/sqlite/` and `…/postgres/` (it runs on both stores).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use customs179_sim::customs::{CustomsFaults, CustomsFaultsUpdate};
use customs179_sim::eport::{self, Algo, EportSimOptions};
use serde_json::{Value, json};

mod common;

use common::browser::{Browser, Options, WAIT, browser_tools};
use common::{ALICE, EBP_CODE, Harness, VIEWER, loopback, named_tokens};

const PIN: &str = "88888888";
/// Short, so a pending request is at risk within seconds: 30 s to deliver, at risk with 25 s left.
const DEADLINE_SECS: u64 = 30;
const AT_RISK_SECS: u64 = 25;

/// Before the page's scripts: records, in order, when the page became hidden or visible,
/// when its waiting count first read 1 while hidden, and when the row of S-TWO-TABS first showed.
const RECORD_SEEN: &str = "window.__seen = [];
document.addEventListener('visibilitychange', () => window.__seen.push(document.visibilityState));
new MutationObserver(() => {
  const once = (what, yes) => { if (yes && !window.__seen.includes(what)) window.__seen.push(what); };
  once('waiting 1 while hidden', document.hidden && document.querySelector('#cards .card b')?.textContent === '1');
  once('row', [...(document.getElementById('rows')?.rows || [])].some((tr) => tr.cells[1]?.textContent === 'S-TWO-TABS'));
}).observe(document, { subtree: true, childList: true, characterData: true });";

/// Before the page's scripts: no Web Locks API, as in a page that is no secure context.
const NO_LOCKS: &str = "delete Navigator.prototype.locks;";

/// The views, for screenshots.
const VIEWS: [&str; 5] = ["#health-view", "#chart-view", "#failures-view", "#list-view", "#detail"];

// On SQLite only: on PostgreSQL, under CI's load, its second tab once missed a row for 60 s
// (not yet understood; it passes on a quiet machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_it_live_in_both_languages() {
    let started = Instant::now();
    let Some(tools) = browser_tools() else { return };

    let card = tempfile::tempdir().unwrap();
    let eport = eport::start(EportSimOptions::new(loopback(), Algo::Sm2, PIN, card.path())).await.unwrap();
    let certs = tempfile::tempdir().unwrap();
    std::fs::write(certs.path().join("card.pem"), eport.keys().cert_pem().unwrap()).unwrap();
    let mut options = customs179_sim::customs::CustomsSimOptions::new(loopback(), certs.path(), [EBP_CODE]);
    options.seed = Some(179);
    options.faults = CustomsFaults::default();
    let customs = customs179_sim::customs::start(options).await.unwrap();
    let h = Harness::start(&format!(
        r#"
{tokens}
[signer]
url = "{signer}"
pin = "{PIN}"
timeout_ms = 2000

[customs]
environment = "test"
upload_url = "{upload}"
timeout_ms = 1000
retry_max_secs = 1
give_up_after_secs = 1
deadline_secs = {DEADLINE_SECS}
at_risk_secs = {AT_RISK_SECS}

[payments]
give_up_after_secs = 600
"#,
        tokens = named_tokens(),
        signer = eport.ws_url(),
        upload = customs.upload_url(),
    ))
    .await
    .with_client_timeout(Duration::from_secs(10));
    let shots = screenshots_dir();

    // An operator opens the console in English (the browser's language).
    let browser = Browser::start(&tools).await;
    browser.cdp("Page.addScriptToEvaluateOnNewDocument", json!({ "source": RECORD_SEEN })).await;
    browser.goto(&format!("{}/", h.admin)).await;
    login(&browser, ALICE).await;
    let shown = browser
        .exec("return { lang: document.documentElement.lang, title: document.title, h: document.querySelector('#list-view h2').textContent }", json!([]))
        .await;
    assert_eq!(shown, json!({ "lang": "en", "title": "customs179 console", "h": "Requests" }));
    wait_text(&browser, "#env", "test").await;
    wait_text(&browser, "#who", "alice (operator)").await;
    // Marked, so a reload would show: what follows must come without one.
    browser.exec("window.__noReload = true", json!([])).await;
    browser.wait_until("the stream", "return window.__customs179Events?.connected || null").await;
    assert_eq!(banner(&browser).await["alarm"], false);

    // A request arrives live (no payment data yet: it waits) and its countdown runs.
    h.customs_call("ORDER-LIVE", "S-LIVE").await;
    let first = browser.wait_until_with("the live row", COUNTDOWN, json!(["S-LIVE"])).await;
    let first = first.as_str().unwrap().to_owned();
    assert!(first.ends_with(" left"), "{first}");
    browser
        .wait_until_with(
            "the countdown running",
            &format!(
                "const now = (() => {{ {COUNTDOWN} }})(); return now && now !== arguments[1] ? now : null"
            ),
            json!(["S-LIVE", first]),
        )
        .await;
    assert_eq!(browser.exec("return window.__noReload === true", json!([])).await, true, "the page reloaded");

    // Within seconds it has under 25 s left: the banner names it, the title counts it.
    browser
        .wait_until(
            "the at-risk banner",
            "const b = document.getElementById('risk');
             return b.classList.contains('alarm') && b.textContent.includes('S-LIVE')
               && document.title.startsWith('(1 at risk)') || null",
        )
        .await;
    let risk = banner(&browser).await;
    assert!(risk["text"].as_str().unwrap().starts_with("1 at risk (under 25 s left)"), "{risk}");
    assert_nothing_ran(&browser, "the at-risk banner").await;
    for view in ["#risk", "#list-view"] {
        let element = browser.find(view).await;
        browser.screenshot(Some(&element), &shots.join(format!("en-light-at-risk-{}.png", &view[1..]))).await;
    }
    // Its payment data comes: delivered, live; the banner and the title calm down.
    h.platform_pays("T-LIVE", &["ORDER-LIVE"]).await;
    browser
        .wait_until_with(
            "the row delivered",
            "const row = [...document.querySelectorAll('#rows tr')].find((tr) => tr.cells[1].textContent === arguments[0]);
             return row?.cells[3].textContent === 'delivered' || null",
            json!(["S-LIVE"]),
        )
        .await;
    browser
        .wait_until(
            "the banner calm",
            "return !document.getElementById('risk').classList.contains('alarm') && document.title === 'customs179 console' || null",
        )
        .await;
    assert_eq!(browser.exec("return window.__noReload === true", json!([])).await, true, "the page reloaded");

    // Filters are kept in the URL: a reload keeps them.
    browser.exec("location.hash = 'state=failed'", json!([])).await;
    browser
        .wait_until("the list filtered", "return document.querySelectorAll('#rows tr').length === 0 && !document.getElementById('empty').hidden || null")
        .await;
    browser.goto(&format!("{}/#state=delivered", h.admin)).await;
    browser
        .wait_until_with(
            "the filter after a reload",
            "return document.getElementById('f-state').value === 'delivered'
               && [...document.querySelectorAll('#rows tr')].map((tr) => tr.cells[1].textContent).join() === arguments[0] || null",
            json!(["S-LIVE"]),
        )
        .await;
    browser.click(&browser.find("#f-clear").await).await;
    browser
        .wait_until(
            "the filter cleared",
            "return location.hash === '' && document.getElementById('f-state').value === '' || null",
        )
        .await;
    browser.wait_until("the stream again", "return window.__customs179Events?.connected || null").await;

    // Rows do not move under the pointer: a new request waits, counted, until it leaves.
    browser.pointer_to(&browser.element(ROW_LINK, json!(["S-LIVE"])).await).await;
    h.customs_call("ORDER-HOVER", "S-HOVER").await;
    let marker = browser
        .wait_until("the updates marker", "const m = document.getElementById('updates'); return m.classList.contains('shown') && m.textContent || null")
        .await;
    assert!(marker.as_str().unwrap().starts_with("1 updates"), "{marker}");
    assert_eq!(
        browser.exec(COUNTDOWN, json!(["S-HOVER"])).await,
        Value::Null,
        "the row came under the pointer"
    );
    browser.pointer_away().await;
    browser.wait_until_with("the held row", COUNTDOWN, json!(["S-HOVER"])).await;
    let shown = browser
        .exec("return document.getElementById('updates').classList.contains('shown')", json!([]))
        .await;
    assert_eq!(shown, false, "the marker stays after the update");
    h.platform_pays("T-HOVER", &["ORDER-HOVER"]).await;
    h.wait_for_state("S-HOVER", "delivered", WAIT).await;

    // Customs answers 503 to everything: three requests fail (give_up_after_secs = 1).
    customs.update_faults(&CustomsFaultsUpdate { next_http_5xx: Some(1_000), ..Default::default() }).unwrap();
    for n in 1..=3 {
        h.platform_pays(&format!("T-FAIL-{n}"), &[&format!("ORDER-FAIL-{n}")]).await;
        h.customs_call(&format!("ORDER-FAIL-{n}"), &format!("S-FAIL-{n}")).await;
    }
    for n in 1..=3 {
        h.wait_for_state(&format!("S-FAIL-{n}"), "failed", WAIT).await;
    }
    customs.update_faults(&CustomsFaultsUpdate { next_http_5xx: Some(0), ..Default::default() }).unwrap();

    // One is ticked in the list and replayed through the dry run and the confirmation.
    let pick = browser
        .wait_until_with(
            "S-FAIL-3 failed in the list",
            "const row = [...document.querySelectorAll('#rows tr')].find((tr) => tr.cells[1].textContent === arguments[0]);
             const box = row?.querySelector('input.pick'); return box && !box.disabled ? box : null",
            json!(["S-FAIL-3"]),
        )
        .await;
    browser.click(&pick).await;
    browser.click(&browser.find("#replay-selected").await).await;
    let count = browser
        .wait_until(
            "the dry run's count",
            "return document.getElementById('replay-count')?.textContent || null",
        )
        .await;
    assert_eq!(count, "1");
    browser.type_into(&browser.find("#ask-reason").await, "one to try first").await;
    browser.click(&browser.find("#ask-ok").await).await;
    let progress = browser
        .wait_until(
            "the selection's replay finished",
            "const p = document.getElementById('replay-progress');
             return p.dataset.status === 'finished' ? p.textContent : null",
        )
        .await;
    assert!(progress.as_str().unwrap().contains("1 of 1 replayed"), "{progress}");
    h.wait_for_state("S-FAIL-3", "delivered", WAIT).await;
    let group = browser
        .wait_until(
            "the failure group",
            "const row = [...document.querySelectorAll('#failures-table tbody tr')]
               .find((tr) => tr.cells[2].textContent === '2');
             return row && { id: row.dataset.group, cause: row.cells[1].textContent }",
        )
        .await;
    assert!(group["cause"].as_str().unwrap().contains("503"), "{group}");
    let failures = h.get("/api/failures").await;
    assert_eq!(failures["groups"][0]["id"], group["id"], "{failures:#}");

    // Both languages, light and dark, each view, before the replay (the failures show).
    let detail_link = browser.element(ROW_LINK, json!(["S-FAIL-1"])).await;
    browser.click(&detail_link).await;
    browser.wait_until("the detail", "return document.querySelector('#timeline tbody tr') || null").await;
    shoot_all(&browser, &shots, "en").await;
    switch_language(&browser, "zh-CN").await;
    assert_eq!(
        browser.exec("return document.querySelector('#list-view h2').textContent", json!([])).await,
        "请求"
    );
    shoot_all(&browser, &shots, "zh-CN").await;
    switch_language(&browser, "en").await;

    // The group is replayed: the dry run's count, the confirmation with a reason, the progress.
    browser
        .click(
            &browser
                .element(
                    "return document.querySelector(`#failures-table tr[data-group='${arguments[0]}'] button`)",
                    json!([group["id"]]),
                )
                .await,
        )
        .await;
    let count = browser
        .wait_until(
            "the dry run's count",
            "return document.getElementById('replay-count')?.textContent || null",
        )
        .await;
    assert_eq!(count, "2");
    browser.screenshot(None, &shots.join("en-light-replay-confirmation.png")).await;
    // No reason, no replay.
    browser.click(&browser.find("#ask-ok").await).await;
    wait_text(&browser, "#ask-problem", "A reason is needed.").await;
    browser.type_into(&browser.find("#ask-reason").await, "customs is back").await;
    browser.click(&browser.find("#ask-ok").await).await;
    let progress = browser
        .wait_until(
            "the replay finished",
            "const p = document.getElementById('replay-progress');
             return p.dataset.status === 'finished' ? p.textContent : null",
        )
        .await;
    assert!(progress.as_str().unwrap().contains("2 of 2 replayed"), "{progress}");
    for n in 1..=2 {
        h.wait_for_state(&format!("S-FAIL-{n}"), "delivered", WAIT).await;
    }
    let audit = h.get("/api/audit").await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "alice" && e["reason"] == "customs is back"),
        "{audit:#}"
    );
    browser
        .wait_until("the failures gone", "return document.getElementById('failures-table').hidden || null")
        .await;

    // Keyset paging: two rows a page (`#limit=2`), "More" reads on until the last.
    browser.exec("location.hash = 'limit=2&sort=received'", json!([])).await;
    browser.wait_until("a page of two", "return document.querySelectorAll('#rows tr').length === 2 && !document.getElementById('more').hidden || null").await;
    let all = h.get("/api/requests?limit=500&sort=received").await["requests"].as_array().unwrap().len();
    assert!(all > 4, "{all} requests");
    for shown in (4..=all).step_by(2) {
        browser.click(&browser.find("#more").await).await;
        browser
            .wait_until_with(
                "the next page",
                "return document.querySelectorAll('#rows tr').length >= arguments[0] || null",
                json!([shown]),
            )
            .await;
    }
    if all % 2 == 1 {
        browser.click(&browser.find("#more").await).await;
    }
    browser
        .wait_until_with(
            "every request, newest first, once",
            "const ids = [...document.querySelectorAll('#rows tr')].map((tr) => tr.cells[1].textContent);
             return ids.length === arguments[0] && new Set(ids).size === ids.length && document.getElementById('more').hidden || null",
            json!([all]),
        )
        .await;
    browser.click(&browser.find("#f-clear").await).await;
    browser.wait_until("the filter cleared", "return location.hash === '' || null").await;

    // The detail: timeline with the card's certNo, the signed text, copy.
    browser.click(&browser.element(ROW_LINK, json!(["S-FAIL-1"])).await).await;
    browser
        .wait_until(
            "the detail delivered",
            "return document.querySelector('#detail p')?.textContent.includes('delivered') && document.getElementById('upload-body') || null",
        )
        .await;
    let timeline = browser
        .exec("return [...document.querySelectorAll('#timeline tbody tr')].map((tr) => [tr.cells[1].textContent, tr.cells[5].textContent])", json!([]))
        .await;
    let steps: Vec<&str> = timeline.as_array().unwrap().iter().map(|r| r[0].as_str().unwrap()).collect();
    // The payment data came first (pushed before customs asked), then customs' call.
    assert_eq!(steps[..3], ["payment data", "customs call", "prepare"], "{timeline}");
    assert_eq!(steps.iter().filter(|s| **s == "replay").count(), 1, "{timeline}");
    assert!(
        timeline.as_array().unwrap().iter().any(|r| r[0] == "sign" && r[1] == eport.cert_no().as_str()),
        "{timeline}"
    );
    browser.click(&browser.find("[data-copy=presign]").await).await;
    let note = browser
        .wait_until("copied", "return document.querySelector('#detail .copy-note')?.textContent || null")
        .await;
    assert!(note == "copied" || note == "selected: press Ctrl+C to copy", "{note}");
    assert_nothing_ran(&browser, "after the replay").await;

    // A second tab: one stream for both. The second learns through the first.
    let first_tab = browser.tab().await;
    wait_streams(&h, 1).await;
    let second_tab = browser.new_tab().await;
    browser.goto(&format!("{}/", h.admin)).await;
    login(&browser, ALICE).await;
    h.customs_call("ORDER-TWO-TABS", "S-TWO-TABS").await;
    browser.wait_until_with("the row in the second tab", COUNTDOWN, json!(["S-TWO-TABS"])).await;
    assert_eq!(browser.exec("return window.__customs179Events.leader", json!([])).await, false);
    assert_eq!(streams(&h).await, 1, "two tabs, one stream");
    // The first tab, hidden behind the second, read the stream and passed the row on, and
    // its counts kept coming, but its own list waited until it was shown again.
    browser.switch_to(&first_tab).await;
    let seen = browser
        .wait_until(
            "the row in the first tab",
            "return window.__seen.includes('row') && window.__seen || null",
        )
        .await;
    let at = |what: &str| seen.as_array().unwrap().iter().position(|s| s == what).unwrap_or(usize::MAX);
    assert!(
        at("hidden") < at("waiting 1 while hidden")
            && at("waiting 1 while hidden") < at("visible")
            && at("visible") < at("row"),
        "{seen}"
    );
    // The first tab closes: the second takes the stream over.
    browser.switch_to(&first_tab).await;
    browser.close_tab().await;
    browser.switch_to(&second_tab).await;
    browser
        .wait_until(
            "the second tab leading",
            "return window.__customs179Events.connected && window.__customs179Events.leader || null",
        )
        .await;
    wait_streams(&h, 1).await;
    h.platform_pays("T-TWO-TABS", &["ORDER-TWO-TABS"]).await;
    h.wait_for_state("S-TWO-TABS", "delivered", WAIT).await;

    // The last hour: a bar per minute, the deliveries in them, the p95 and deadline lines.
    let chart = browser
        .exec(
            "const bars = [...document.querySelectorAll('#chart-svg rect.bar')];
             return { bars: bars.length, tall: bars.filter((b) => Number(b.getAttribute('height')) > 0).length,
                      deadline: document.querySelector('#chart-svg .deadline-line-label')?.textContent,
                      p95: !!document.querySelector('#chart-svg .p95-line') }",
            json!([]),
        )
        .await;
    assert_eq!(chart["bars"], 60, "{chart}");
    assert!(chart["tall"].as_u64().unwrap() >= 1, "{chart}");
    assert_eq!(chart["deadline"], "deadline 30 s", "{chart}");
    assert_eq!(chart["p95"], true, "{chart}");

    // Uploading paused from the customs tile, with a reason, and resumed.
    browser.click(&browser.find("[data-tile=customs] [data-action=pause]").await).await;
    browser.click(&browser.find("#ask-ok").await).await;
    wait_text(&browser, "#ask-problem", "A reason is needed.").await;
    browser.type_into(&browser.find("#ask-reason").await, "customs maintenance").await;
    browser.click(&browser.find("#ask-ok").await).await;
    browser
        .wait_until(
            "the uploading banner",
            "return document.querySelector('#banners .banner[data-stage=uploading]')?.textContent.includes('customs maintenance') || null",
        )
        .await;
    let controls = h.controls().await;
    assert_eq!(
        (&controls["uploading"]["paused"], &controls["uploading"]["by"]),
        (&json!(true), &json!("alice")),
        "{controls:#}"
    );
    // The pause is an alert condition: the alerts panel shows it while it lasts.
    browser
        .wait_until(
            "the active alert",
            "return document.querySelector('#alerts-active li[data-kind=uploads_stopped]')?.textContent || null",
        )
        .await;
    browser.click(&browser.find("[data-tile=customs] [data-action=resume]").await).await;
    browser.click(&browser.find("#ask-ok").await).await;
    browser
        .wait_until("the banner gone", "return document.querySelector('#banners .banner') ? null : true")
        .await;
    assert_eq!(h.controls().await["uploading"]["paused"], false);
    let alerts = browser
        .wait_until(
            "the all-clear in the alerts table",
            "const rows = [...document.querySelectorAll('#alerts-table tbody tr')].map((r) => r.textContent);
             return rows.length >= 2 && !document.querySelector('#alerts-active li') ? rows : null",
        )
        .await;
    assert!(alerts[0].as_str().unwrap().contains("all clear"), "{alerts}");
    assert!(alerts[1].as_str().unwrap().contains("customs maintenance (paused by alice)"), "{alerts}");

    // The card's own signing, paused from its tile and resumed: the card's pause, not all signing.
    browser.click(&browser.find("[data-tile=card][data-card=card] [data-action=pause]").await).await;
    browser.type_into(&browser.find("#ask-reason").await, "card swap").await;
    browser.click(&browser.find("#ask-ok").await).await;
    browser
        .wait_until(
            "the card's pause on its tile",
            "return document.querySelector('[data-tile=card][data-card=card]')?.textContent.includes('card swap') || null",
        )
        .await;
    let controls = h.controls().await;
    assert_eq!(controls["signing"]["paused"], false, "{controls:#}");
    assert_eq!(
        (&controls["cards"][0]["signing"]["paused"], &controls["cards"][0]["signing"]["by"]),
        (&json!(true), &json!("alice")),
        "{controls:#}"
    );
    browser.click(&browser.find("[data-tile=card][data-card=card] [data-action=resume]").await).await;
    browser.click(&browser.find("#ask-ok").await).await;
    common::eventually("the card's signing resumed", Duration::from_secs(10), || async {
        let controls = h.controls().await;
        if controls["cards"][0]["signing"]["paused"] == false { Ok(()) } else { Err(format!("{controls:#}")) }
    })
    .await;

    // A viewer: no write button anywhere, though there is something to replay.
    let buttons = write_buttons(&browser).await;
    assert!(buttons.as_array().unwrap().len() >= 3, "an operator has write buttons: {buttons}");
    browser.click(&browser.find("#logout").await).await;
    login(&browser, VIEWER).await;
    wait_text(&browser, "#who", "wall screen (viewer)").await;
    browser.wait_until("the tiles", "return document.querySelector('#tiles .tile') || null").await;
    // The instance and the card it drives (its name is host:pid).
    let instance = browser
        .wait_until(
            "the instances tile",
            "return document.querySelector('[data-tile=instances] [data-instance]')?.textContent || null",
        )
        .await;
    assert!(instance.as_str().unwrap().contains("running since"), "{instance}");
    let driver = browser
        .wait_until(
            "the card's driver",
            "return document.querySelector('[data-tile=card] [data-driver]')?.textContent || null",
        )
        .await;
    assert!(driver.as_str().unwrap().starts_with("driven by "), "{driver}");
    browser.click(&browser.element(ROW_LINK, json!(["S-LIVE"])).await).await;
    browser.wait_until("the viewer's detail", "return document.querySelector('#timeline') || null").await;
    assert_eq!(write_buttons(&browser).await, json!([]), "a viewer sees write buttons");
    browser.screenshot(None, &shots.join("en-light-viewer.png")).await;

    // Phone width.
    browser.set_window_size(390, 844).await;
    browser.screenshot(None, &shots.join("en-light-phone.png")).await;
    browser.color_scheme("dark").await;
    browser.screenshot(None, &shots.join("en-dark-phone.png")).await;
    let console = severe(&browser).await;
    assert!(console.is_empty(), "the page logged errors: {console:#?}");
    browser.quit().await;

    // A browser whose language is Chinese opens the console in Chinese; the switch is
    // remembered over a reload.
    // It also has no Web Locks, as a page on plain http to a LAN address has none: the
    // tabs elect their leader with a heartbeat instead.
    let browser = Browser::start_with(&tools, &Options { lang: "zh-CN", ..Options::default() }).await;
    browser.cdp("Page.addScriptToEvaluateOnNewDocument", json!({ "source": NO_LOCKS })).await;
    wait_streams(&h, 0).await;
    browser.goto(&format!("{}/", h.admin)).await;
    let language = browser.exec("return navigator.language", json!([])).await;
    login(&browser, ALICE).await;
    let shown = browser
        .exec("return { lang: document.documentElement.lang, title: document.title, h: document.querySelector('#list-view h2').textContent, env: document.getElementById('env').textContent }", json!([]))
        .await;
    assert_eq!(shown["lang"], "zh-CN", "navigator.language {language}: {shown}");
    assert_eq!(shown["title"], "customs179 控制台", "{shown}");
    assert_eq!(shown["h"], "请求", "{shown}");
    wait_text(&browser, "#env", "测试环境").await;
    let election = browser
        .wait_until(
            "a leader by heartbeat",
            "const e = window.__customs179Events; return e?.connected && e.election",
        )
        .await;
    assert_eq!(election, "heartbeat");
    let first_tab = browser.tab().await;
    browser.new_tab().await;
    browser.cdp("Page.addScriptToEvaluateOnNewDocument", json!({ "source": NO_LOCKS })).await;
    browser.goto(&format!("{}/", h.admin)).await;
    login(&browser, ALICE).await;
    h.customs_call("ORDER-HEARTBEAT", "S-HEARTBEAT").await;
    browser.wait_until_with("the row in the second tab", COUNTDOWN, json!(["S-HEARTBEAT"])).await;
    let second = browser.exec("return window.__customs179Events", json!([])).await;
    assert_eq!((&second["election"], &second["leader"]), (&json!("heartbeat"), &json!(false)), "{second}");
    assert_eq!(streams(&h).await, 1, "two tabs, one stream, without Web Locks too");
    h.platform_pays("T-HEARTBEAT", &["ORDER-HEARTBEAT"]).await;
    h.wait_for_state("S-HEARTBEAT", "delivered", WAIT).await;
    browser.close_tab().await;
    browser.switch_to(&first_tab).await;
    wait_text(&browser, "title", "customs179 控制台").await;
    switch_language(&browser, "en").await;
    browser.goto(&format!("{}/", h.admin)).await;
    browser.wait_until("English again", "return document.documentElement.lang === 'en' && document.querySelector('#list-view h2').textContent === 'Requests' || null").await;

    // The service goes away: the page says its figures may be stale.
    browser.wait_until("the stream", "return window.__customs179Events?.connected || null").await;
    browser.wait_until("no stale banner", "return document.getElementById('stale').hidden || null").await;
    h.stop().await;
    browser
        .wait_until(
            "the stale banner",
            "const b = document.getElementById('stale'); return !b.hidden && b.textContent.startsWith('The live stream is lost') || null",
        )
        .await;
    browser.quit().await;

    customs.stop().await;
    eport.stop().await;
    eprintln!("console test: {:.1} s", started.elapsed().as_secs_f64());
}

/// The countdown of a sessionID's row (`arguments[0]`), once it shows one.
const COUNTDOWN: &str = "const row = [...document.querySelectorAll('#rows tr')]
  .find((tr) => tr.cells[1].textContent === arguments[0]);
return row?.querySelector('.countdown')?.textContent || null";
const ROW_LINK: &str = "return [...document.querySelectorAll('#rows tr')]
  .find((tr) => tr.cells[1].textContent === arguments[0])?.cells[1].querySelector('a')";

/// The visible buttons that would change something: replay, pause, resume, selection.
async fn write_buttons(browser: &Browser) -> Value {
    browser
        .exec(
            "return [...document.querySelectorAll('button, input[type=checkbox].pick')]
               .filter((b) => b.offsetParent !== null && !b.disabled)
               .map((b) => b.textContent || b.className)
               .filter((text) => /replay|pause|resume|pick/i.test(text))",
            json!([]),
        )
        .await
}

async fn login(browser: &Browser, token: &str) {
    browser
        .wait_until(
            "the login form",
            "return getComputedStyle(document.getElementById('login')).display === 'flex'",
        )
        .await;
    browser.type_into(&browser.find("#token").await, token).await;
    browser.click(&browser.find("#login button").await).await;
    browser
        .wait_until(
            "the status and the list",
            "return document.querySelector('#cards .card') && document.querySelector('#tiles .tile') || null",
        )
        .await;
}

async fn wait_text(browser: &Browser, css: &str, text: &str) {
    browser
        .wait_until_with(
            &format!("{css} showing {text:?}"),
            "return document.querySelector(arguments[0])?.textContent === arguments[1] || null",
            json!([css, text]),
        )
        .await;
}

async fn banner(browser: &Browser) -> Value {
    browser
        .exec(
            "const b = document.getElementById('risk');
             return { alarm: b.classList.contains('alarm'), text: b.textContent, title: document.title }",
            json!([]),
        )
        .await
}

async fn switch_language(browser: &Browser, lang: &str) {
    browser
        .exec(
            "const s = document.getElementById('lang'); s.value = arguments[0];
             s.dispatchEvent(new Event('change'))",
            json!([lang]),
        )
        .await;
    browser
        .wait_until_with(
            "the language",
            "return document.documentElement.lang === arguments[0] || null",
            json!([lang]),
        )
        .await;
}

/// Each view and the whole page, light and dark.
async fn shoot_all(browser: &Browser, dir: &std::path::Path, lang: &str) {
    for scheme in ["light", "dark"] {
        browser.color_scheme(scheme).await;
        let dark = browser.exec("return matchMedia('(prefers-color-scheme: dark)').matches", json!([])).await;
        assert_eq!(dark, scheme == "dark", "{scheme}");
        browser.exec("window.scrollTo(0, 0)", json!([])).await;
        browser.screenshot(None, &dir.join(format!("{lang}-{scheme}-page.png"))).await;
        for view in VIEWS {
            let element = browser.find(view).await;
            browser
                .screenshot(Some(&element), &dir.join(format!("{lang}-{scheme}-{}.png", &view[1..])))
                .await;
        }
    }
    browser.color_scheme("").await;
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"), PathBuf::from);
    // One folder per store: the two runs go at once.
    let store = match common::postgres::backend() {
        common::postgres::Backend::Sqlite => "sqlite",
        common::postgres::Backend::Postgres => "postgres",
    };
    let dir = target.join("console-screenshots").join(store);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `customs179_events_streams` of /metrics.
async fn streams(h: &Harness) -> i64 {
    let (_, text) = h.metrics(Some(ALICE)).await;
    let line = text
        .lines()
        .find(|l| l.starts_with("customs179_events_streams "))
        .unwrap_or_else(|| panic!("{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

async fn wait_streams(h: &Harness, wanted: i64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let open = streams(h).await;
        if open == wanted {
            return;
        }
        assert!(Instant::now() < deadline, "{open} streams open, not {wanted}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn severe(browser: &Browser) -> Vec<Value> {
    browser
        .console()
        .await
        .into_iter()
        .filter(|e| e["level"] == "SEVERE" && !e["message"].as_str().unwrap_or("").contains("favicon.ico"))
        .collect()
}

/// Nothing from data became an attribute or ran, and the page kept its policy (the checks
/// of tests/browser.rs, which feeds hostile data; here the console's own views are checked).
async fn assert_nothing_ran(browser: &Browser, when: &str) {
    let state = browser
        .exec(
            "const bad = [];
             for (const e of document.querySelectorAll('*')) {
               for (const a of e.attributes) if (/^on/i.test(a.name) || a.name === 'style') bad.push(`${e.tagName} ${a.name}`);
             }
             return { bad, scripts: [...document.scripts].map((s) => s.getAttribute('src')) }",
            json!([]),
        )
        .await;
    assert_eq!(state, json!({ "bad": [], "scripts": ["/app.js"] }), "{when}");
}

/// A text named twice in one language's table would silently replace the first (a JavaScript
/// object literal keeps the last), breaking the view that used it.
#[test]
fn no_text_is_named_twice_in_a_language() {
    let source = include_str!("../web/i18n.js");
    for table in ["const en = {", "const zh = {"] {
        let start = source.find(table).unwrap_or_else(|| panic!("{table} in i18n.js"));
        let body = &source[start..];
        let body = &body[..body.find("\n};").unwrap()];
        let mut seen = std::collections::HashSet::new();
        for line in body.lines() {
            // Top-level keys are indented by two spaces exactly.
            let Some(key) = line.strip_prefix("  ").filter(|l| !l.starts_with(' ')) else { continue };
            let Some((key, _)) = key.split_once(':') else { continue };
            if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                assert!(seen.insert(key.to_owned()), "{key} is named twice in {table}");
            }
        }
        assert!(seen.len() > 50, "{table}: {} keys read", seen.len());
    }
}
