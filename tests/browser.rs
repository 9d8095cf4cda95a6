//! The status page in a real browser: Debian's Chromium, driven by its ChromeDriver over the
//! W3C WebDriver HTTP API (plain reqwest calls, no npm, no extra crate). Customs calls with
//! hostile sessionIDs and orderNos and platform records with hostile note, recpName and gname
//! go through the whole system (the card and customs are the simulators); an operator opens
//! the page, gives the token, opens the list and a request's detail, replays a request and
//! resumes a pause. Every hostile value must show as text and nothing may run; the page must
//! work under its Content-Security-Policy, which the browser must enforce.
//!
//! `.ci/run` installs `chromium` and `chromium-driver`. Without them this test fails, unless
//! `CUSTOMS179_SKIP_BROWSER=1` is set, when it says loudly that it did not run.
//! `CUSTOMS179_CHROMIUM` and `CUSTOMS179_CHROMEDRIVER` override `/usr/bin/chromium` and
//! `/usr/bin/chromedriver`.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use customs179_sim::eport::{self, Algo, EportSimOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

mod common;

use common::{ADMIN_TOKEN, Api, Harness, closed_port, http_client, loopback, payment_record};

const PIN: &str = "88888888";
/// Generous: the machine may be busy; a pass takes seconds.
const WAIT: Duration = Duration::from_secs(60);

/// Attribute breakers (both quotes), tags with handlers, a cell closed early with a script.
const SESSION_A: &str = r#"x" autofocus onfocus="window.__pwned=1" y=""#;
const ORDER_A: &str = r#"<img src=x onerror="window.__pwned=1">"#;
const SESSION_B: &str = "</td><script>window.__pwned=1</script>";
const ORDER_B: &str = "x' autofocus onfocus='window.__pwned=1' y='";
const NOTE: &str = "</td><script>window.__pwned=1</script><img src=x onerror=window.__pwned=1>";
const RECP_NAME: &str = r#"Shop" autofocus onfocus="window.__pwned=1"#;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
    assert_nothing_ran(&browser, "A's detail").await;

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
    let mut db = common::open_db(&h.db).await;
    sqlx::query("INSERT INTO controls (name, paused_at, reason) VALUES ('uploading', ?, ?)")
        .bind(common::now_ms())
        .bind(&reason)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::Connection::close(db).await.unwrap();
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
    let resume = browser.find("#banners .banner[data-stage=uploading] button").await;
    browser.click(&resume).await;
    browser
        .wait_until("the banner gone", "return document.querySelector('#banners .banner') ? null : true")
        .await;
    let controls = h.controls().await;
    assert_eq!(controls["uploading"]["paused"], false, "{controls:#}");
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

/// Chromium and its ChromeDriver.
struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

/// The browser, or `None` (the test skips) when it is missing and `CUSTOMS179_SKIP_BROWSER=1`.
fn browser_tools() -> Option<Tools> {
    let path = |var: &str, default: &str| {
        std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    let tools = Tools {
        chromium: path("CUSTOMS179_CHROMIUM", "/usr/bin/chromium"),
        chromedriver: path("CUSTOMS179_CHROMEDRIVER", "/usr/bin/chromedriver"),
    };
    let missing: Vec<&Path> = [&tools.chromium, &tools.chromedriver]
        .into_iter()
        .map(PathBuf::as_path)
        .filter(|path| !path.is_file())
        .collect();
    if missing.is_empty() {
        return Some(tools);
    }
    let message = format!(
        "the browser test needs Chromium and ChromeDriver; missing: {missing:?}. \
         Install them with `apt-get install -y chromium chromium-driver` (.ci/run does)"
    );
    if std::env::var("CUSTOMS179_SKIP_BROWSER").as_deref() == Ok("1") {
        // Straight to stderr, past the test harness's capture: a skip must be seen.
        let loud = format!("\n******** SKIPPED: {message}; CUSTOMS179_SKIP_BROWSER=1 is set ********\n");
        let _ = std::io::stderr().write_all(loud.as_bytes());
        return None;
    }
    panic!("{message}, or set CUSTOMS179_SKIP_BROWSER=1 to skip this test");
}

/// ChromeDriver running Chromium (headless, a fresh profile), one WebDriver session.
struct Browser {
    client: reqwest::Client,
    /// `host:port` of ChromeDriver.
    addr: String,
    /// `http://host:port/session/ID`.
    session: String,
    driver: Child,
    dir: TempDir,
    quit: bool,
}

/// How WebDriver names an element in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn start(tools: &Tools) -> Browser {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("chromedriver.log")).unwrap();
        let addr = format!("127.0.0.1:{}", closed_port());
        let port = addr.rsplit(':').next().unwrap();
        let driver = Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", tools.chromedriver.display()));
        let client = http_client(Some(Duration::from_secs(60)));
        let mut browser = Browser { client, addr, session: String::new(), driver, dir, quit: false };

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = browser.client.get(format!("http://{}/status", browser.addr)).send().await;
            if let Ok(response) = ready {
                let status: Value = response.json().await.unwrap_or_default();
                if status["value"]["ready"] == true {
                    break;
                }
            }
            if let Some(status) = browser.driver.try_wait().unwrap() {
                panic!("chromedriver exited with {status}:\n{}", browser.log());
            }
            assert!(Instant::now() < deadline, "chromedriver is not ready:\n{}", browser.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // The flags Chromium needs on these machines (docs of the rust-svc machines): root, no
        // GPU, a closed network.
        let profile = browser.dir.path().join("profile");
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1280,1000".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "goog:chromeOptions": { "binary": tools.chromium, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}});
        let url = format!("http://{}/session", browser.addr);
        let session = browser.request(reqwest::Method::POST, &url, Some(capabilities)).await;
        let id = session["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {session}"));
        browser.session = format!("http://{}/session/{id}", browser.addr);
        browser
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        log[log.floor_char_boundary(start)..].to_owned()
    }

    /// One WebDriver command; its `value`. A WebDriver error fails the test.
    async fn request(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Value {
        let mut request = self.client.request(method.clone(), url);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}\n{}", self.log()));
        let status = response.status();
        let mut answer: Value = response.json().await.unwrap_or_default();
        let value = answer["value"].take();
        assert!(status.is_success(), "WebDriver {method} {url} {body:?}: {status} {value:#}\n{}", self.log());
        value
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.request(method, &format!("{}{path}", self.session), body).await
    }

    async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; its result.
    async fn exec(&self, script: &str, args: Value) -> Value {
        self.command(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": args })))
            .await
    }

    /// A Chrome DevTools Protocol command, through ChromeDriver.
    async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
        .await
    }

    async fn find(&self, css: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        )
        .await
    }

    /// The element a script returns; it must return one.
    async fn element(&self, script: &str, args: Value) -> Value {
        let element = self.exec(script, args.clone()).await;
        assert!(element.get(ELEMENT_KEY).is_some(), "no element for {args}: {script}");
        element
    }

    fn element_path(element: &Value) -> String {
        format!("/element/{}", element[ELEMENT_KEY].as_str().unwrap())
    }

    async fn click(&self, element: &Value) {
        let path = format!("{}/click", Self::element_path(element));
        self.command(reqwest::Method::POST, &path, Some(json!({}))).await;
    }

    async fn type_into(&self, element: &Value, text: &str) {
        let path = format!("{}/value", Self::element_path(element));
        self.command(reqwest::Method::POST, &path, Some(json!({ "text": text }))).await;
    }

    /// Polls `script` until it returns something other than null or false.
    async fn wait_until(&self, what: &str, script: &str) -> Value {
        self.wait_until_with(what, script, json!([])).await
    }

    async fn wait_until_with(&self, what: &str, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.exec(script, args.clone()).await;
            if !value.is_null() && value != false {
                return value;
            }
            if Instant::now() > deadline {
                let page =
                    self.exec("return [document.body.innerText, window.__violations]", json!([])).await;
                let console = self.console().await;
                panic!(
                    "{what}: not there within {WAIT:?}; the page shows:\n{}\npolicy violations: {}\nconsole: {console:#?}",
                    page[0].as_str().unwrap_or(""),
                    page[1]
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The browser's console since the last call.
    async fn console(&self) -> Vec<Value> {
        let log = self.command(reqwest::Method::POST, "/se/log", Some(json!({ "type": "browser" }))).await;
        log.as_array().cloned().unwrap_or_default()
    }

    async fn quit(mut self) {
        self.command(reqwest::Method::DELETE, "", None).await;
        self.quit = true;
    }
}

impl Drop for Browser {
    /// A test that failed half-way still closes Chromium (ChromeDriver does, when its session
    /// is deleted), then stops ChromeDriver.
    fn drop(&mut self) {
        if !self.quit && !self.session.is_empty() {
            let path = self.session.trim_start_matches("http://").trim_start_matches(&self.addr).to_owned();
            if let Ok(mut stream) = std::net::TcpStream::connect(&self.addr) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let request = format!(
                    "DELETE {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    self.addr
                );
                if stream.write_all(request.as_bytes()).is_ok() {
                    let _ = stream.read_to_end(&mut Vec::new());
                }
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
