//! A real browser for the console's tests: Debian's Chromium, driven by its ChromeDriver over
//! the W3C WebDriver HTTP API (plain reqwest calls, no npm, no extra crate).
//!
//! `.ci/run` installs `chromium` and `chromium-driver`. Without them a browser test fails,
//! unless `CUSTOMS179_SKIP_BROWSER=1` is set, when it says loudly that it did not run.
//! `CUSTOMS179_CHROMIUM` and `CUSTOMS179_CHROMEDRIVER` override `/usr/bin/chromium` and
//! `/usr/bin/chromedriver`.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use super::{closed_port, http_client};

/// Generous: the machine may be busy; a pass takes seconds.
pub const WAIT: Duration = Duration::from_secs(60);

/// How a browser starts: its language (`--lang` and the Accept-Language preference, so
/// `navigator.languages` is it) and its window size.
pub struct Options {
    pub lang: &'static str,
    pub width: u32,
    pub height: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options { lang: "en-US", width: 1280, height: 1000 }
    }
}

/// Chromium and its ChromeDriver.
pub struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

/// The browser, or `None` (the test skips) when it is missing and `CUSTOMS179_SKIP_BROWSER=1`.
pub fn browser_tools() -> Option<Tools> {
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
pub struct Browser {
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
pub const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    pub async fn start(tools: &Tools) -> Browser {
        Browser::start_with(tools, &Options::default()).await
    }

    pub async fn start_with(tools: &Tools, options: &Options) -> Browser {
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
            format!("--window-size={},{}", options.width, options.height),
            format!("--lang={}", options.lang),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "goog:chromeOptions": {
                "binary": tools.chromium,
                "args": args,
                "prefs": { "intl.accept_languages": options.lang },
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        }}});
        let url = format!("http://{}/session", browser.addr);
        let session = browser.request(reqwest::Method::POST, &url, Some(capabilities)).await;
        let id = session["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {session}"));
        browser.session = format!("http://{}/session/{id}", browser.addr);
        browser
    }

    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        log[log.floor_char_boundary(start)..].to_owned()
    }

    /// One WebDriver command; its `value`. A WebDriver error fails the test.
    pub async fn request(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Value {
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

    pub async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.request(method, &format!("{}{path}", self.session), body).await
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; its result.
    pub async fn exec(&self, script: &str, args: Value) -> Value {
        self.command(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": script, "args": args })))
            .await
    }

    /// A Chrome DevTools Protocol command, through ChromeDriver.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
        .await
    }

    pub async fn find(&self, css: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        )
        .await
    }

    /// The element a script returns; it must return one.
    pub async fn element(&self, script: &str, args: Value) -> Value {
        let element = self.exec(script, args.clone()).await;
        assert!(element.get(ELEMENT_KEY).is_some(), "no element for {args}: {script}");
        element
    }

    pub fn element_path(element: &Value) -> String {
        format!("/element/{}", element[ELEMENT_KEY].as_str().unwrap())
    }

    pub async fn click(&self, element: &Value) {
        let path = format!("{}/click", Self::element_path(element));
        self.command(reqwest::Method::POST, &path, Some(json!({}))).await;
    }

    pub async fn type_into(&self, element: &Value, text: &str) {
        let path = format!("{}/value", Self::element_path(element));
        self.command(reqwest::Method::POST, &path, Some(json!({ "text": text }))).await;
    }

    /// Polls `script` until it returns something other than null or false.
    pub async fn wait_until(&self, what: &str, script: &str) -> Value {
        self.wait_until_with(what, script, json!([])).await
    }

    pub async fn wait_until_with(&self, what: &str, script: &str, args: Value) -> Value {
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
    pub async fn console(&self) -> Vec<Value> {
        let log = self.command(reqwest::Method::POST, "/se/log", Some(json!({ "type": "browser" }))).await;
        log.as_array().cloned().unwrap_or_default()
    }

    /// A PNG of the window (`element`: of that element only), written to `path`.
    pub async fn screenshot(&self, element: Option<&Value>, path: &Path) {
        let what = element
            .map_or_else(|| "/screenshot".to_owned(), |e| format!("{}/screenshot", Self::element_path(e)));
        let png = self.command(reqwest::Method::GET, &what, None).await;
        let png = png.as_str().unwrap_or_else(|| panic!("no screenshot: {png}"));
        let png = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, png).unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// `prefers-color-scheme` as the page sees it: "dark", "light" or "" (the system's).
    pub async fn color_scheme(&self, scheme: &str) {
        let features = json!([{ "name": "prefers-color-scheme", "value": scheme }]);
        self.cdp("Emulation.setEmulatedMedia", json!({ "features": features })).await;
    }

    /// Opens a new tab and switches to it; its handle.
    pub async fn new_tab(&self) -> String {
        let tab = self.command(reqwest::Method::POST, "/window/new", Some(json!({ "type": "tab" }))).await;
        let handle = tab["handle"].as_str().unwrap().to_owned();
        self.switch_to(&handle).await;
        handle
    }

    pub async fn switch_to(&self, handle: &str) {
        self.command(reqwest::Method::POST, "/window", Some(json!({ "handle": handle }))).await;
    }

    /// The handle of the current tab.
    pub async fn tab(&self) -> String {
        self.command(reqwest::Method::GET, "/window", None).await.as_str().unwrap().to_owned()
    }

    /// Closes the current tab (switch to another afterwards).
    pub async fn close_tab(&self) {
        self.command(reqwest::Method::DELETE, "/window", None).await;
    }

    /// Moves the pointer onto the middle of `element` (WebDriver actions).
    pub async fn pointer_to(&self, element: &Value) {
        let origin = json!({ ELEMENT_KEY: element[ELEMENT_KEY] });
        self.pointer(json!({ "type": "pointerMove", "duration": 0, "origin": origin, "x": 0, "y": 0 })).await;
    }

    /// Moves the pointer to the window's top left corner.
    pub async fn pointer_away(&self) {
        self.pointer(json!({ "type": "pointerMove", "duration": 0, "origin": "viewport", "x": 1, "y": 1 }))
            .await;
    }

    async fn pointer(&self, action: Value) {
        let actions = json!({ "actions": [{
            "type": "pointer", "id": "mouse", "parameters": { "pointerType": "mouse" }, "actions": [action],
        }]});
        self.command(reqwest::Method::POST, "/actions", Some(actions)).await;
    }

    pub async fn set_window_size(&self, width: u32, height: u32) {
        let rect = json!({ "width": width, "height": height });
        self.command(reqwest::Method::POST, "/window/rect", Some(rect)).await;
    }

    pub async fn quit(mut self) {
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
