//! Helpers shared by the integration tests: an in-process service on loopback ports with its
//! database in a temporary directory, and the calls customs and the platform make to it.

// Each test binary compiles this module and uses a different subset of it.
#![allow(dead_code)]

use std::collections::HashSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use customs179_service::Service;
use customs179_service::config::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

pub mod browser;
pub mod chaos;
pub mod events;
pub mod haproxy;
pub mod postgres;
pub mod serve;

pub const ADMIN_TOKEN: &str = "admin-token-0123456789";
/// Tokens of [`named_tokens`]: an operator named "alice" and a viewer named "wall screen".
pub const ALICE: &str = "alice-operator-token-0123";
pub const VIEWER: &str = "wall-screen-viewer-token-0123";

/// `[[admin.tokens]]` for [`ALICE`] and [`VIEWER`], beside [`ADMIN_TOKEN`] (an operator named "admin").
pub fn named_tokens() -> String {
    format!(
        "[[admin.tokens]]\nname = \"alice\"\ntoken = \"{ALICE}\"\nrole = \"operator\"\n\n\
         [[admin.tokens]]\nname = \"wall screen\"\ntoken = \"{VIEWER}\"\nrole = \"viewer\"\n"
    )
}
pub const EBP_CODE: &str = "EBP4401960ABC";

/// Port 0 on loopback: the OS picks a free port, so tests can run side by side.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A port nothing listens on (bound, read, released).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A client that ignores proxy settings of the machine running the tests; rustls needs a
/// process-wide crypto provider before the first client is built.
pub fn http_client(timeout: Option<Duration>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder().no_proxy();
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder.build().unwrap()
}

/// A loopback address that was free a moment ago, for a child process that must be told
/// its port up front.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], closed_port()))
}

/// A simulator run as a child process; killed if the test fails half-way.
pub struct Sim(pub Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Sim {
    /// Waits until `addr` accepts connections; a slow start is tolerated, an early exit is not.
    pub async fn wait_until_listening(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            if let Some(status) = self.0.try_wait().unwrap() {
                panic!("the simulator exited early with {status}");
            }
            assert!(Instant::now() < deadline, "the simulator did not listen on {addr}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (`INT`, `TERM`) and waits for the exit; returns the status and what
    /// the simulator logged, so the test can check it stopped cleanly.
    #[cfg(unix)]
    pub async fn stop_with(&mut self, signal: &str) -> (std::process::ExitStatus, String) {
        let pid = self.0.id().to_string();
        let signalled = std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status();
        assert!(signalled.unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the simulator did not stop on SIG{signal}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(self.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    }
}

/// Milliseconds since the epoch, the unit of serviceTime and of the stored times.
pub fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// Percent-encodes everything but unreserved characters, as a form encoder does.
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => (b as char).to_string(),
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `CUSTOMS179_*` variables set where the tests run: the developer's own overrides must
/// not reach the binary under test.
pub fn developer_overrides() -> Vec<OsString> {
    std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| name.to_string_lossy().starts_with("CUSTOMS179_"))
        .collect()
}

/// Stdout, which must be UTF-8.
pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Stderr, which must be UTF-8.
pub fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Stdout then stderr, so an assertion can look for a line wherever the binary wrote it.
pub fn output_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

/// The HTTP side of a running service, as customs, the platform and an operator reach it.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    /// `http://ADDR` of the intake listener.
    pub intake: String,
    /// `http://ADDR` of the admin listener.
    pub admin: String,
}

/// One running service, in this process, its database in a directory removed at the end.
pub struct Harness {
    pub service: Service,
    pub api: Api,
    pub db: PathBuf,
    /// The service's schema, when it runs on PostgreSQL.
    pub schema: Option<postgres::Schema>,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Harness {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// The configuration every test service shares: free loopback ports, our admin token and
/// ebpCode, the database at `db`; `intake_keys` are more lines of `[intake]`, `extra_toml`
/// holds the sections each test cares about (`[signer]`, `[customs]`, ...).
pub fn service_toml(
    intake: SocketAddr,
    admin: SocketAddr,
    db: &Path,
    intake_keys: &str,
    extra_toml: &str,
) -> String {
    service_toml_on(intake, admin, &format!("path = {:?}", db.to_str().unwrap()), intake_keys, extra_toml)
}

/// [`service_toml`] with `store` the lines of `[store]`.
pub fn service_toml_on(
    intake: SocketAddr,
    admin: SocketAddr,
    store: &str,
    intake_keys: &str,
    extra_toml: &str,
) -> String {
    format!(
        r#"
[intake]
listen = "{intake}"
{intake_keys}

[admin]
listen = "{admin}"
token = "{ADMIN_TOKEN}"

[store]
{store}

[enterprise]
ebp_code = "{EBP_CODE}"
{extra_toml}
"#
    )
}

/// The lines of `[store]` for a test's service on the store [`postgres::backend`] says:
/// the SQLite file `db`, or a new schema (returned, to drop when the test is done).
pub async fn store_toml(db: &Path) -> (String, Option<postgres::Schema>) {
    match postgres::backend() {
        postgres::Backend::Sqlite => (format!("path = {:?}", db.to_str().unwrap()), None),
        postgres::Backend::Postgres => {
            let schema = postgres::Schema::create().await;
            (format!("url = {:?}", schema.url()), Some(schema))
        }
    }
}

impl Harness {
    /// Starts a service on free loopback ports (see [`service_toml`]).
    pub async fn start(extra_toml: &str) -> Harness {
        Harness::start_with("", extra_toml).await
    }

    /// Like [`Harness::start`], with more lines of `[intake]`.
    pub async fn start_with(intake_keys: &str, extra_toml: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("customs179.sqlite");
        let (store, schema) = store_toml(&db).await;
        let toml = service_toml_on(loopback(), loopback(), &store, intake_keys, extra_toml);
        let config = Config::from_toml_str(&toml, std::iter::empty()).unwrap();
        let service = Service::start(config).await.unwrap();
        Harness {
            api: Api {
                client: http_client(None),
                intake: format!("http://{}", service.intake_addr()),
                admin: format!("http://{}", service.admin_addr()),
            },
            service,
            db,
            schema,
            _dir: dir,
        }
    }

    /// Bounds every call, for tests whose service may hang on a fault it is meant to survive.
    pub fn with_client_timeout(mut self, timeout: Duration) -> Harness {
        self.api.client = http_client(Some(timeout));
        self
    }

    /// Runs `sql` (statements with their values written in, see [`sql_text`]) on the
    /// service's database itself, behind the service's back.
    pub async fn execute(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.schema {
            Some(schema) => {
                let mut conn = schema.connect().await;
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            }
            None => {
                let mut conn = open_db(&self.db).await;
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
        }
    }

    /// Another store on the service's database, as a command would open it.
    pub async fn other_store(&self) -> customs179_store::Store {
        match &self.schema {
            Some(schema) => customs179_store::Store::connect(&schema.url()).await.unwrap(),
            None => customs179_store::Store::open(&self.db).await.unwrap(),
        }
    }

    /// The sessionIDs of every request stored, read from the database itself.
    pub async fn stored_session_ids(&self) -> HashSet<String> {
        stored_session_ids_in(&self.db, self.schema.as_ref()).await
    }

    pub async fn stop(self) {
        self.service.shutdown().await.unwrap();
        if let Some(schema) = &self.schema {
            schema.drop_now().await;
        }
    }
}

impl Api {
    /// GETs an admin path as `token` (none when `None`); the body as JSON, or as a string
    /// when it is not JSON, so refusals can be checked too.
    pub async fn get_as(&self, token: Option<&str>, path: &str) -> (StatusCode, Value) {
        let mut request = self.client.get(format!("{}{path}", self.admin));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.unwrap()).await
    }

    /// GETs an admin path as the admin, which must answer 200 with JSON.
    pub async fn get(&self, path: &str) -> Value {
        let response =
            self.client.get(format!("{}{path}", self.admin)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// POSTs JSON to an admin path as `token` (none when `None`).
    pub async fn post_as(
        &self,
        token: Option<&str>,
        path: &str,
        body: impl Into<String>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.admin))
            .header("content-type", "application/json")
            .body(body.into());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.unwrap()).await
    }

    /// POSTs JSON to an admin path as the admin.
    pub async fn post(&self, path: &str, body: impl Into<String>) -> (StatusCode, Value) {
        self.post_as(Some(ADMIN_TOKEN), path, body).await
    }

    /// The platform's push, as the admin; the answer is left to the caller to judge.
    pub async fn push_payments(&self, body: impl Into<String>) -> (StatusCode, Value) {
        self.post("/api/payments", body).await
    }

    /// The platform pushes a valid record of payment `transaction` for `orders`; it must be stored.
    pub async fn platform_pays(&self, transaction: &str, orders: &[&str]) {
        let (status, answer) = self.push_payments(payment_record(transaction, orders).to_string()).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }

    /// Customs asks for `order_no`'s payment data with a plain `openReq` form post; the intake
    /// must take it (10000) whether or not the payment is known yet.
    pub async fn customs_call(&self, order_no: &str, session_id: &str) {
        let open_req =
            json!({"orderNo": order_no, "sessionID": session_id, "serviceTime": 1_533_271_903_898_u64})
                .to_string();
        let response = self
            .client
            .post(format!("{}/platDataOpen", self.intake))
            .form(&[("openReq", open_req)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["code"], "10000", "{answer}");
    }

    /// `GET /api/requests/{sessionID}`, which must exist.
    pub async fn detail(&self, session_id: &str) -> Value {
        self.get(&format!("/api/requests/{session_id}")).await
    }

    /// `GET /metrics` as `token` (none when `None`): the status and the text.
    pub async fn metrics(&self, token: Option<&str>) -> (StatusCode, String) {
        let mut request = self.client.get(format!("{}/metrics", self.admin));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    pub async fn controls(&self) -> Value {
        self.get("/api/control").await
    }

    /// Polls a request until `done` holds of its detail, failing after `within`: the workers
    /// run on their own, so tests can only watch for the outcome.
    pub async fn wait_until(
        &self,
        session_id: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let detail = self.detail(session_id).await;
            if done(&detail) {
                return detail;
            }
            assert!(Instant::now() < deadline, "{session_id}: not done within {within:?}: {detail:#}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_for_state(&self, session_id: &str, state: &str, within: Duration) -> Value {
        self.wait_until(session_id, within, |d| d["state"] == state).await
    }
}

/// `text` as an SQL string literal, for [`Harness::execute`].
pub fn sql_text(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Looks until `look` finds something, failing after `within` with what it saw last (`what`
/// names the wait): the workers run on their own, so tests can only watch for an outcome.
pub async fn eventually<T, F: std::future::Future<Output = Result<T, String>>>(
    what: &str,
    within: Duration,
    mut look: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match look().await {
            Ok(found) => return found,
            Err(seen) => assert!(Instant::now() < deadline, "{what}: not within {within:?}: {seen}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The status and body of an answer; a body that is not JSON comes back as a string so the
/// assertion message shows it.
async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A connection of the test's own to the service's database, opened read-write: a killed
/// writer may have left a WAL to recover.
pub async fn open_db(db: &Path) -> SqliteConnection {
    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(db)).await.unwrap()
}

/// Every sessionID in the SQLite database `db`, read behind the service's back.
pub async fn stored_session_ids(db: &Path) -> HashSet<String> {
    stored_session_ids_in(db, None).await
}

/// The rows `sql` reads from `schema` when there is one, else from the SQLite file `db`.
pub async fn query_rows<T>(db: &Path, schema: Option<&postgres::Schema>, sql: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    T: Send + Unpin,
{
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match schema {
        Some(schema) => sqlx::query_as(sql).fetch_all(&mut schema.connect().await).await.unwrap(),
        None => {
            let mut conn = open_db(db).await;
            let rows = sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap();
            conn.close().await.unwrap();
            rows
        }
    }
}

/// A service's database as a test reads it behind the service's back: the SQLite file, or
/// the service's PostgreSQL schema.
pub struct TestDb {
    pub path: PathBuf,
    pub schema: Option<postgres::Schema>,
}

impl TestDb {
    /// What `sql` reads (see [`query_rows`]).
    pub async fn rows<T>(&self, sql: &str) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
        T: Send + Unpin,
    {
        query_rows(&self.path, self.schema.as_ref(), sql).await
    }

    pub async fn stored_session_ids(&self) -> HashSet<String> {
        stored_session_ids_in(&self.path, self.schema.as_ref()).await
    }
}

/// The sessionIDs stored in `schema` when there is one, else in the SQLite file `db`.
pub async fn stored_session_ids_in(db: &Path, schema: Option<&postgres::Schema>) -> HashSet<String> {
    let ids: Vec<(String,)> = query_rows(db, schema, "SELECT session_id FROM requests").await;
    ids.into_iter().map(|(session_id,)| session_id).collect()
}

/// Every request the admin API at `admin` lists to `token`, following `next` page by page.
pub async fn listed_requests(client: &reqwest::Client, admin: &str, token: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let url = match &after {
            None => format!("{admin}/api/requests?limit=500"),
            Some(after) => format!("{admin}/api/requests?limit=500&after={}", url_encode(after)),
        };
        let response = client.get(url).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let page: Value = response.json().await.unwrap();
        all.extend(page["requests"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return all,
        }
    }
}

/// A valid platform record (no guid, no ebpCode) for payment `transaction` of `orders`. Its
/// initalResponse holds a newline, quotes and `||` to keep the pre-sign string honest.
pub fn payment_record(transaction: &str, orders: &[&str]) -> Value {
    let lists: Vec<Value> = orders
        .iter()
        .map(|order_no| {
            json!({
                "orderNo": order_no,
                "goodsInfo": [{"gname": "保温杯 500ml", "itemLink": "https://shop.example/item/1"}],
                "recpAccount": "6222000011112222",
                "recpCode": "",
                "recpName": "Example Shop Ltd",
            })
        })
        .collect();
    json!({
        "payExchangeInfoHead": {
            "initalRequest": format!("https://pay.example/gateway?out_trade_no={transaction}&total=88.50"),
            "initalResponse": "ok\n\"quoted\" || not a separator",
            "payCode": "312226T001",
            "payTransactionId": transaction,
            "totalAmount": 88.5,
            "currency": "142",
            "verDept": "3",
            "payType": "1",
            "tradingTime": "20240315103000",
            "note": "",
        },
        "payExchangeInfoLists": lists,
    })
}

/// The customs simulator registering `card`'s certificate (written into `certs`) and our
/// ebpCode, without faults and with a fixed seed.
pub async fn customs_registering(
    card: &customs179_sim::eport::RunningEportSim,
    certs: &Path,
) -> customs179_sim::customs::RunningCustomsSim {
    std::fs::create_dir_all(certs).unwrap();
    std::fs::write(certs.join("card.pem"), card.keys().cert_pem().unwrap()).unwrap();
    let mut options = customs179_sim::customs::CustomsSimOptions::new(loopback(), certs, [EBP_CODE]);
    options.seed = Some(179);
    customs179_sim::customs::start(options).await.expect("the customs simulator starts")
}

/// A bench's arguments as (option, value) pairs, for its `parse`: `--bench` (which `cargo
/// bench` passes to every bench binary) left out, each of `flags` with an empty value, every
/// other option with the argument after it. The empty error of `--help` (see [`bench_options`]).
pub fn bench_args(
    mut args: impl Iterator<Item = String>,
    flags: &[&str],
) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => {}
            "--help" => return Err(String::new()),
            flag if flags.contains(&flag) => pairs.push((arg, String::new())),
            _ => {
                let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
                pairs.push((arg, value));
            }
        }
    }
    Ok(pairs)
}

/// A bench's options, read from its arguments by `parse` (which answers an empty error for
/// `--help`): on `--help` the usage is printed and the bench exits 0; on a bad argument the
/// problem and the usage go to stderr and it exits 2.
pub fn bench_options<O>(
    parse: impl FnOnce(std::iter::Skip<std::env::Args>) -> Result<O, String>,
    usage: &str,
) -> Result<O, std::process::ExitCode> {
    parse(std::env::args().skip(1)).map_err(|message| {
        if message.is_empty() {
            println!("{usage}");
            std::process::ExitCode::SUCCESS
        } else {
            eprintln!("{message}\n\n{usage}");
            std::process::ExitCode::from(2)
        }
    })
}
