//! The status page in a real browser: Debian's Chromium, driven by its ChromeDriver over the
//! W3C WebDriver HTTP API (plain reqwest calls, no npm, no extra crate). Customs calls with
//! hostile sessionIDs and orderNos and platform records with hostile note, recpName and gname
//! go through the whole system (the card and customs are the simulators); an operator opens
//! the page, gives the token, opens the list and a request's detail, replays a request and
//! resumes a pause. Every hostile value must show as text and nothing may run; the page must
//! work under its Content-Security-Policy, which the browser must enforce. On either store.
//!
//! `.ci/run` installs `chromium` and `chromium-driver`. Without them this test fails, unless
//! `CUSTOMS179_SKIP_BROWSER=1` is set, when it says loudly that it did not run.
//! `CUSTOMS179_CHROMIUM` and `CUSTOMS179_CHROMEDRIVER` override `/usr/bin/chromium` and
//! `/usr/bin/chromedriver`.

use std::time::{Duration, Instant};

use customs179_sim::eport::{self, Algo, EportSimOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};

mod common;

use common::browser::{Browser, WAIT, browser_tools};
use common::{ADMIN_TOKEN, Api, Harness, loopback, payment_record};

const PIN: &str = "88888888";

/// Attribute breakers (both quotes), tags with handlers, a cell closed early with a script.
const SESSION_A: &str = r#"x" autofocus onfocus="window.__pwned=1" y=""#;
const ORDER_A: &str = r#"<img src=x onerror="window.__pwned=1">"#;
const SESSION_B: &str = "</td><script>window.__pwned=1</script>";
const ORDER_B: &str = "x' autofocus onfocus='window.__pwned=1' y='";
const NOTE: &str = "</td><script>window.__pwned=1</script><img src=x onerror=window.__pwned=1>";
const RECP_NAME: &str = r#"Shop" autofocus onfocus="window.__pwned=1"#;
/// C waits at the paused upload, at risk: its ids show in the at-risk banner's links.
const SESSION_C: &str = r#""><svg onload="window.__pwned=1"></svg>"#;
const ORDER_C: &str = "javascript:window.__pwned=1//<b onmouseover=alert(1)>";
const GNAME: &str = r#"<img src=x onerror="window.__pwned=1">保温杯 500ml"#;

/// Collects the page's Content-Security-Policy violations from before its first script runs.
const RECORD_VIOLATIONS: &str = "window.__violations = [];
document.addEventListener('securitypolicyviolation', (e) =>
  window.__violations.push(`${e.effectiveDirective} ${e.blockedURI} ${e.sample || ''}`));";

/// What must hold of the page whatever it shows: nothing ran, no element carries a handler or
/// any other attribute built from data, no element came from data (no img, one script).
const NOTHING_RAN: &str = "const bad = [];
for (const e of document.querySelectorAll('*')) {
  for (const a of e.attributes) {
    if (/^on/i.test(a.name) || a.name === 'autofocus' || a.value.includes('__pwned')) {
      bad.push(`<${e.tagName.toLowerCase()} ${a.name}=${a.value}>`);
    }
  }
}
return {
  pwned: typeof window.__pwned,
  bad,
  images: document.images.length,
  scripts: [...document.scripts].map((s) => s.getAttribute('src')),
  violations: window.__violations,
};";

both_stores! {
async fn hostile_data_renders_as_text_and_runs_nothing() {
    let started = Instant::now();
    let Some(tools) = browser_tools() else { return };

    // The card, customs (registering the card and our ebpCode only) and the service.
    let card = tempfile::tempdir().unwrap();
    let eport = eport::start(EportSimOptions::new(loopback(), Algo::Sm2, PIN, card.path())).await.unwrap();
    let certs = tempfile::tempdir().unwrap();
    let customs = common::customs_registering(&eport, certs.path()).await;
    let h = Harness::start(&format!(
        r#"
[signer]
url = "{signer}"
pin = "{PIN}"
timeout_ms = 2000

[customs]
environment = "test"
upload_url = "{upload}"
timeout_ms = 1000
retry_max_secs = 1
# Every pending request is at risk (under 120 s of its 120 s left): C shows in the banner.
at_risk_secs = 120

[payments]
give_up_after_secs = 1
"#,
        signer = eport.ws_url(),
        upload = customs.upload_url(),
    ))
    .await
    .with_client_timeout(Duration::from_secs(10));

    // A: hostile ids and a hostile record, delivered. B: hostile ids, no data: failed.
    h.customs_call(ORDER_A, SESSION_A).await;
    let mut record = payment_record("T-HOSTILE-A", &[ORDER_A]);
    record["payExchangeInfoHead"]["note"] = json!(NOTE);
    record["payExchangeInfoLists"][0]["recpName"] = json!(RECP_NAME);
    record["payExchangeInfoLists"][0]["goodsInfo"][0]["gname"] = json!(GNAME);
    let (status, answer) = h.push_payments(record.to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    h.customs_call(ORDER_B, SESSION_B).await;
    let a = wait_for(&h, SESSION_A, |d| d["state"] == "delivered").await;
    let b = wait_for(&h, SESSION_B, |d| d["state"] == "failed").await;
    let presign = a["uploads"][0]["presign"].as_str().unwrap().to_owned();
    let upload_body = a["uploads"][0]["upload_body"].as_str().unwrap().to_owned();
    for hostile in [SESSION_A, NOTE, RECP_NAME, GNAME] {
        // The page must show these bytes verbatim; they hold the hostile texts JSON-escaped.
        let escaped = serde_json::to_string(hostile).unwrap();
        assert!(presign.contains(&escaped[1..escaped.len() - 1]), "{hostile} in {presign}");
    }

    // The page as the browser gets it: the policy, and nothing inline to allow.
    let page = h.client.get(format!("{}/", h.admin)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = header(&page, "content-security-policy");
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    for wanted in ["default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"] {
        assert!(directives.contains(&wanted), "{wanted:?} missing from {csp:?}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    assert_eq!(header(&page, "referrer-policy"), "no-referrer");
    let html = page.text().await.unwrap();
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(html.contains(r#"<script type="module" src="/app.js"></script>"#), "{html}");
    let script = h.client.get(format!("{}/app.js", h.admin)).send().await.unwrap();
    assert_eq!(header(&script, "content-type"), "text/javascript; charset=utf-8");
    assert_eq!(header(&script, "content-security-policy"), csp);

    // The operator opens the page: it asks for the token.
    let browser = Browser::start(&tools).await;
    browser.cdp("Page.addScriptToEvaluateOnNewDocument", json!({ "source": RECORD_VIOLATIONS })).await;
    browser.goto(&format!("{}/", h.admin)).await;
    browser
        .wait_until(
            "the login form",
            "return getComputedStyle(document.getElementById('login')).display === 'flex'",
        )
        .await;
    let input = browser.find("#token").await;
    browser.type_into(&input, ADMIN_TOKEN).await;
    browser.click(&browser.find("#login button").await).await;
    browser.wait_until("the list", "return document.querySelectorAll('#rows tr').length === 2 || null").await;
    let token = browser.exec("return sessionStorage.getItem('customs179-token')", json!([])).await;
    assert_eq!(token, ADMIN_TOKEN);
    assert_nothing_ran(&browser, "the list").await;

    // The counts, and each hostile row as text, with its replay button.
    let cards = browser
        .exec(
            "return Object.fromEntries([...document.querySelectorAll('#cards .card')]
               .map((c) => [c.firstChild.textContent, c.querySelector('b').textContent]))",
            json!([]),
        )
        .await;
    assert_eq!(cards["delivered"], "1", "{cards}");
    assert_eq!(cards["failed"], "1", "{cards}");
    assert_eq!(cards["waiting"], "0", "{cards}");
    for (session_id, order_no, state, detail) in
        [(SESSION_A, ORDER_A, "delivered", &a), (SESSION_B, ORDER_B, "failed", &b)]
    {
        let row = browser.exec(ROW, json!([session_id])).await;
        assert_eq!(row["order"], order_no, "{row}");
        assert_eq!(row["state"], state, "{row}");
        assert_eq!(row["error"], detail["last_error"].as_str().unwrap_or(""), "{row}");
        assert_eq!(row["replay"], true, "{row}");
    }

    // A's detail: its history, pre-sign string and upload body, as text.
    let link = browser.element(ROW_LINK, json!([SESSION_A])).await;
    browser.click(&link).await;
    browser
        .wait_until_with(
            "A's detail",
            "return document.querySelector('#detail h2')?.textContent === arguments[0] || null",
            json!([SESSION_A]),
        )
        .await;
    let shown = browser
        .exec(
            "return {
               presign: document.getElementById('presign').textContent,
               body: document.getElementById('upload-body').textContent,
               attempts: document.querySelectorAll('#attempts tbody tr').length,
               summary: document.querySelector('#detail p').textContent,
               text: document.body.innerText,
             }",
            json!([]),
        )
        .await;
    assert_eq!(shown["presign"], presign.as_str());
    assert_eq!(shown["body"], upload_body.as_str());
    assert_eq!(shown["attempts"], a["attempts"].as_array().unwrap().len(), "{a:#}");
    assert!(
        shown["summary"].as_str().unwrap().starts_with(&format!("order {ORDER_A}, delivered")),
        "{shown}"
    );
    let text = shown["text"].as_str().unwrap();
    for hostile in [SESSION_A, ORDER_A, SESSION_B, ORDER_B] {
        assert!(text.contains(hostile), "{hostile:?} not shown as text:\n{text}");
    }
    let timeline =
        browser.exec("return document.querySelectorAll('#timeline tbody tr').length", json!([])).await;
    assert_eq!(timeline, a["timeline"].as_array().unwrap().len(), "{a:#}");
    assert_nothing_ran(&browser, "A's detail").await;

    // The failures view: B's group, its example B's hostile sessionID as text.
    let group = browser
        .wait_until(
            "B's failure group",
            "const row = document.querySelector('#failures-table tbody tr');
             return row && { count: row.cells[2].textContent, example: row.cells[4].textContent }",
        )
        .await;
    assert_eq!(group["count"], "1", "{group}");
    assert_eq!(group["example"], SESSION_B, "{group}");

    // B's detail too: no upload, its history.
    browser.click(&browser.element(ROW_LINK, json!([SESSION_B])).await).await;
    browser
        .wait_until_with(
            "B's detail",
            "return document.querySelector('#detail h2')?.textContent === arguments[0] || null",
            json!([SESSION_B]),
        )
        .await;
    assert_nothing_ran(&browser, "B's detail").await;

    // Replay A from its button: prepared, signed and delivered again.
    browser.click(&browser.element(ROW_REPLAY, json!([SESSION_A])).await).await;
    wait_for(&h, SESSION_A, |d| d["state"] == "delivered" && d["uploads"].as_array().unwrap().len() == 2)
        .await;
    browser
        .wait_until(
            "the list after the replay",
            "return document.querySelectorAll('#rows tr').length === 2 || null",
        )
        .await;
    assert_nothing_ran(&browser, "the list after the replay").await;

    // A pause whose reason carries customs' text (as a 20004 answer's does), hostile too: the
    // banner shows it as text, and its button resumes. Written behind the service's back, as
    // a pause that came from elsewhere (a command, an earlier run) would be.
    let reason = format!("customs answered 20004 (certNo not registered, or not this ebpCode's): {ORDER_A}");
    let elsewhere = h.other_store().await;
    elsewhere.pause(customs179_store::Stage::Uploading, &reason, common::now_ms()).await.unwrap();
    elsewhere.close().await;
    let banner = browser
        .wait_until(
            "the uploading banner",
            "return document.querySelector('#banners .banner[data-stage=uploading]')?.textContent || null",
        )
        .await;
    let banner = banner.as_str().unwrap();
    assert!(banner.starts_with("uploading paused since "), "{banner}");
    assert!(banner.contains(&format!(": {reason} Resume uploading")), "{banner}");
    assert_nothing_ran(&browser, "the pause").await;
    // C comes while uploading is paused: signed, it waits, at risk; the banner names it.
    h.customs_call(ORDER_C, SESSION_C).await;
    let (status, answer) = h.push_payments(payment_record("T-HOSTILE-C", &[ORDER_C]).to_string()).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    wait_for(&h, SESSION_C, |d| d["state"] == "signed").await;
    browser
        .wait_until_with(
            "C in the at-risk banner",
            "const b = document.querySelector('#risk.alarm');
             return b && [...b.querySelectorAll('a')].some((a) => a.textContent === arguments[0]) || null",
            json!([SESSION_C]),
        )
        .await;
    assert_nothing_ran(&browser, "the at-risk banner").await;
    let resume = browser.find("#banners .banner[data-stage=uploading] button").await;
    browser.click(&resume).await;
    // It asks why (optional for a resume); the question is built as text too.
    browser.wait_until("the reason asked", "return document.getElementById('ask')?.open || null").await;
    assert_nothing_ran(&browser, "the question").await;
    browser.type_into(&browser.find("#ask-reason").await, "customs fixed the certificate").await;
    browser.click(&browser.find("#ask-ok").await).await;
    browser
        .wait_until("the banner gone", "return document.querySelector('#banners .banner') ? null : true")
        .await;
    let controls = h.controls().await;
    assert_eq!(controls["uploading"]["paused"], false, "{controls:#}");
    wait_for(&h, SESSION_C, |d| d["state"] == "delivered").await;
    assert_nothing_ran(&browser, "the page after resuming").await;

    // No script error, no violation, in all the page did.
    let severe: Vec<Value> = browser
        .console()
        .await
        .into_iter()
        .filter(|entry| {
            entry["level"] == "SEVERE" && !entry["message"].as_str().unwrap_or("").contains("favicon.ico")
        })
        .collect();
    assert!(severe.is_empty(), "the page logged errors: {severe:#?}");

    // The browser enforces the policy: HTML with a handler, as an injection would bring, is
    // refused, and nothing runs.
    let injected = browser
        .exec(
            "try {
               document.body.insertAdjacentHTML('beforeend', '<img src=\"/x\" onerror=\"window.__inline=1\">');
               const img = document.createElement('img');
               img.setAttribute('onerror', 'window.__inline=1');
               img.setAttribute('src', '/x');
               document.body.append(img);
               return 'inserted';
             } catch (e) { return 'refused: ' + e.message; }",
            json!([]),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = browser
        .exec("return { inline: typeof window.__inline, violations: window.__violations }", json!([]))
        .await;
    assert_eq!(after["inline"], "undefined", "an injected handler ran: {injected} {after}");
    assert!(
        !after["violations"].as_array().unwrap().is_empty(),
        "the injection was not reported as a policy violation: {injected} {after}"
    );

    browser.quit().await;
    h.stop().await;
    customs.stop().await;
    eport.stop().await;
    eprintln!("browser test: {:.1} s", started.elapsed().as_secs_f64());
}
}

/// The row of a sessionID (`arguments[0]`), as its cells' text.
const ROW: &str = "const row = [...document.querySelectorAll('#rows tr')]
  .find((tr) => tr.cells[1].textContent === arguments[0]);
return row && {
  order: row.cells[2].textContent,
  state: row.cells[3].textContent,
  error: row.cells[6].textContent,
  replay: row.cells[7].querySelector('button')?.textContent === 'Replay',
};";
const ROW_LINK: &str = "return [...document.querySelectorAll('#rows tr')]
  .find((tr) => tr.cells[1].textContent === arguments[0])?.cells[1].querySelector('a')";
const ROW_REPLAY: &str = "return [...document.querySelectorAll('#rows tr')]
  .find((tr) => tr.cells[1].textContent === arguments[0])?.cells[7].querySelector('button')";

async fn assert_nothing_ran(browser: &Browser, when: &str) {
    let state = browser.exec(NOTHING_RAN, json!([])).await;
    assert_eq!(state["pwned"], "undefined", "{when}: hostile data ran: {state:#}");
    assert_eq!(state["bad"], json!([]), "{when}: attributes from data: {state:#}");
    assert_eq!(state["images"], 0, "{when}: {state:#}");
    assert_eq!(state["scripts"], json!(["/app.js"]), "{when}: {state:#}");
    assert_eq!(state["violations"], json!([]), "{when}: the page breaks its own policy: {state:#}");
}

/// Polls a request's detail until `done` holds of it.
async fn wait_for(api: &Api, session_id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    let path = format!("/api/requests/{}", path_segment(session_id));
    loop {
        let (status, detail) = api.get_as(Some(ADMIN_TOKEN), &path).await;
        assert_eq!(status, StatusCode::OK, "{session_id}: {detail}");
        if done(&detail) {
            return detail;
        }
        assert!(Instant::now() < deadline, "{session_id}: not done within {WAIT:?}: {detail:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Percent-encodes all but unreserved characters, as `encodeURIComponent` does (and more).
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn header(response: &reqwest::Response, name: &str) -> String {
    let value = response.headers().get(name).unwrap_or_else(|| panic!("no {name} header"));
    value.to_str().unwrap().to_owned()
}
