//! `customs179 demo`: the whole system in one process, with simulators for
//! the card and for customs, so a new user sees it work in one command.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use customs179_service::Service;
use customs179_service::config::{Config, LogFormat, LogTo};
use customs179_sim::customs::{self as customs_sim, CallOptions, CustomsFaults, CustomsSimOptions};
use customs179_sim::eport::{self as eport_sim, Algo, EportSimOptions, Faults};
use serde_json::{Value, json};

use super::Failure;

const EBP_CODE: &str = "DEMO000001";
const PIN: &str = "88888888";
/// Requests for these orders never get payment data: they end as failed.
const UNKNOWN_PREFIX: &str = "DEMO-UNKNOWN-";
/// The demo gives up on missing payment data after this long.
const GIVE_UP_SECS: u64 = 15;

/// Runs the whole system in one process: the service with a fresh SQLite database under
/// --data-dir, an EportClient simulator (a software SM2 card), a customs simulator, sample
/// payment records and a customs caller.
///
/// The caller asks a few times per second about sample orders. Some orders' payment data
/// arrives a few seconds late; some orders are unknown, and the demo gives up on them after
/// about 15 s, so they end as "failed: no payment data": that is expected. Faults are
/// injected along the way: customs answers 5xx twice, one customs answer is lost after
/// storing (delivered later via 20006), and the card reader fails once (50070).
///
/// The terminal shows a live summary. The admin token is written to a file in the data
/// directory; the status page is at the admin address. Runs until Ctrl-C, or with
/// --exit-when-done until every request has ended (exit 0 when each ended as expected,
/// 1 otherwise).
#[derive(clap::Args)]
pub struct Args {
    /// Where customs calls (the intake endpoint).
    #[arg(long, default_value = "127.0.0.1:8080")]
    intake_listen: SocketAddr,
    /// The admin API and status page.
    #[arg(long, default_value = "127.0.0.1:8179")]
    admin_listen: SocketAddr,
    /// Holds the database (made afresh), the simulated card and the admin token.
    #[arg(long, default_value = "demo-data")]
    data_dir: PathBuf,
    /// Customs calls per second.
    #[arg(long, default_value_t = 3.0)]
    rate: f64,
    /// Stop calling after this many requests (default: until Ctrl-C).
    #[arg(long)]
    requests: Option<u64>,
    /// Exit once every request has ended, with a final table (needs --requests).
    #[arg(long, requires = "requests")]
    exit_when_done: bool,
}

pub fn run(args: Args) -> Result<(), Failure> {
    if !(args.rate > 0.0 && args.rate <= 1000.0) {
        return Err(Failure::BadInput("--rate must be above 0 and at most 1000".into()));
    }
    // Errors only: the live summary owns the terminal; the status page has the details.
    super::serve::init_logging(LogFormat::Text, "error", &LogTo::Stderr)?;
    super::block_on(demo(args))
}

fn bad(what: &str) -> impl FnOnce(String) -> Failure + '_ {
    move |e| Failure::BadInput(format!("{what}: {e}"))
}

async fn demo(args: Args) -> Result<(), Failure> {
    let dir = &args.data_dir;
    let card_dir = dir.join("card");
    std::fs::create_dir_all(&card_dir).map_err(|e| bad("cannot create the data directory")(e.to_string()))?;
    let db = dir.join("customs179.sqlite");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(PathBuf::from(format!("{}{suffix}", db.display())));
    }
    let token = format!("demo-{}", uuid_hex());
    let token_file = dir.join("admin-token");
    write_secret(&token_file, &token).map_err(|e| bad("cannot write the admin token")(e.to_string()))?;

    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut eport = EportSimOptions::new(loopback, Algo::Sm2, PIN, &card_dir);
    eport.faults = Faults { reader_error_50070: 1, ..Faults::default() };
    let eport = eport_sim::start(eport)
        .await
        .map_err(|e| bad("cannot start the EportClient simulator")(e.to_string()))?;
    let mut customs = CustomsSimOptions::new(loopback, &card_dir, [EBP_CODE]);
    customs.faults = CustomsFaults { next_http_5xx: 2, next_lost: 1, ..CustomsFaults::default() };
    customs.seed = Some(179);
    let customs = customs_sim::start(customs)
        .await
        .map_err(|e| bad("cannot start the customs simulator")(e.to_string()))?;

    let config = format!(
        r#"
        [intake]
        listen = "{intake}"
        [admin]
        listen = "{admin}"
        token = "{token}"
        [store]
        path = {db}
        [enterprise]
        ebp_code = "{EBP_CODE}"
        [signer]
        url = "{signer}"
        pin = "{PIN}"
        timeout_ms = 5000
        [customs]
        environment = "test"
        upload_url = "{upload}"
        timeout_ms = 3000
        retry_max_secs = 5
        [payments]
        give_up_after_secs = {GIVE_UP_SECS}
        "#,
        intake = args.intake_listen,
        admin = args.admin_listen,
        db = Value::String(db.display().to_string()),
        signer = eport.ws_url(),
        upload = customs.upload_url(),
    );
    let config = Config::from_toml_str(&config, std::iter::empty())
        .map_err(|e| bad("demo configuration")(e.to_string()))?;
    let service = Service::start(config).await.map_err(|e| Failure::BadInput(e.to_string()))?;
    let intake_url = format!("http://{}/platDataOpen", service.intake_addr());
    let admin_url = format!("http://{}", service.admin_addr());
    println!("customs179 demo");
    println!("  intake (customs calls)  {intake_url}");
    println!("  admin API, status page  {admin_url}/");
    println!("  admin token in          {}", token_file.display());
    println!("  database                {}", db.display());
    println!("  EportClient simulator   {} (certNo {})", eport.ws_url(), eport.cert_no());
    println!("  customs simulator       {}", customs.upload_url());
    println!();

    let client = reqwest::Client::new();
    let admin = Admin { client: client.clone(), url: admin_url, token };
    let caller = tokio::spawn(call_customs(intake_url, admin.clone(), args.rate, args.requests));
    let outcome = watch(&admin, caller, args.exit_when_done).await;
    let stopped = service.shutdown().await.map_err(|e| Failure::Check(e.to_string()));
    customs.stop().await;
    eport.stop().await;
    outcome.and(stopped)
}

#[derive(Clone)]
struct Admin {
    client: reqwest::Client,
    url: String,
    token: String,
}

impl Admin {
    async fn get(&self, path: &str) -> Result<Value, String> {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        response.json().await.map_err(|e| e.to_string())
    }

    async fn push_payment(&self, order_no: &str, n: u64) {
        let record = sample_record(order_no, n);
        let sent = self
            .client
            .post(format!("{}/api/payments", self.url))
            .bearer_auth(&self.token)
            .json(&record)
            .send()
            .await;
        if let Err(e) = sent {
            eprintln!("demo: cannot push the payment of {order_no}: {e}");
        }
    }
}

/// Plays customs: one call every 1/rate s. Most orders' payments are pushed
/// first; every 5th arrives 3 s after the call; every 7th order is unknown.
async fn call_customs(intake_url: String, admin: Admin, rate: f64, requests: Option<u64>) -> u64 {
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut n = 0;
    while requests.is_none_or(|limit| n < limit) {
        n += 1;
        let started = Instant::now();
        let order_no =
            if n % 7 == 0 { format!("{UNKNOWN_PREFIX}{n:05}") } else { format!("DEMO-ORDER-{n:05}") };
        if n % 7 != 0 {
            if n % 5 == 0 {
                let (admin, order_no) = (admin.clone(), order_no.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    admin.push_payment(&order_no, n).await;
                });
            } else {
                admin.push_payment(&order_no, n).await;
            }
        }
        let (url, order) = (intake_url.clone(), order_no);
        tokio::spawn(async move {
            if let Err(e) = customs_sim::call(CallOptions::new(url, order)).await {
                eprintln!("demo: customs' call failed: {e}");
            }
        });
        tokio::time::sleep(period.saturating_sub(started.elapsed())).await;
    }
    n
}

fn sample_record(order_no: &str, n: u64) -> Value {
    json!({
        "payExchangeInfoHead": {
            "initalRequest": format!("<xml><out_trade_no>{order_no}</out_trade_no><total_fee>{}</total_fee></xml>", 100 + n),
            "initalResponse": "<xml><return_code><![CDATA[SUCCESS]]></return_code></xml>",
            "payCode": "312226T001",
            "payTransactionId": format!("DEMO-PAY-{n:08}"),
            "totalAmount": format!("{}.{:02}", 1 + n % 90, n % 100),
            "currency": "142",
            "verDept": "3",
            "payType": "1",
            "tradingTime": "20261129120000",
            "note": "customs179 demo"
        },
        "payExchangeInfoLists": [{
            "orderNo": order_no,
            "goodsInfo": [{ "gname": "演示商品 demo goods", "itemLink": format!("https://shop.example/item/{n}") }],
            "recpAccount": "OSA571908863132601",
            "recpCode": "",
            "recpName": "DEMO RECEIVER LIMITED"
        }]
    })
}

/// Shows the live summary until Ctrl-C or SIGTERM, or until every request ended.
async fn watch(
    admin: &Admin,
    caller: tokio::task::JoinHandle<u64>,
    exit_when_done: bool,
) -> Result<(), Failure> {
    let terminal = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut shown_lines = 0;
    let mut last_plain = Instant::now() - Duration::from_secs(60);
    let mut stop = std::pin::pin!(super::serve::stop_signal()?);
    loop {
        tokio::select! {
            () = &mut stop => {
                println!("\nstopping");
                return Ok(());
            }
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let Ok(status) = admin.get("/api/status").await else { continue };
        let count = |state: &str| status["states"][state].as_i64().unwrap_or(0);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let received: i64 =
            ["waiting", "ready", "signed", "delivered", "failed"].iter().map(|s| count(s)).sum();
        let lines = [
            format!("received {received:>6}   ({:.1}/s)", received as f64 / secs),
            format!("waiting for data {:>6}", count("waiting")),
            format!("ready to sign {:>6}   signed {:>6}", count("ready"), count("signed")),
            format!("delivered {:>6}   ({:.1}/s)", count("delivered"), count("delivered") as f64 / secs),
            format!("late {:>6}   failed {:>6}", status["late"].as_i64().unwrap_or(0), count("failed")),
            pause_line(&status),
        ];
        if terminal {
            if shown_lines > 0 {
                print!("\x1b[{shown_lines}A");
            }
            for line in &lines {
                println!("\x1b[2K  {line}");
            }
            shown_lines = lines.len();
        } else if last_plain.elapsed() >= Duration::from_secs(5) {
            println!("{}", lines[..5].join(" | "));
            last_plain = Instant::now();
        }
        let _ = std::io::stdout().flush();
        let open = count("waiting") + count("ready") + count("signed");
        if exit_when_done && caller.is_finished() && open == 0 && received > 0 {
            return final_table(admin).await;
        }
    }
}

fn pause_line(status: &Value) -> String {
    let mut paused = Vec::new();
    for stage in ["signing", "uploading"] {
        if let Some(reason) = status[stage]["reason"].as_str() {
            paused.push(format!("{stage} PAUSED: {reason}"));
        }
    }
    if paused.is_empty() { "signing and uploading running".to_owned() } else { paused.join("; ") }
}

/// Every request ended as expected: known orders delivered, unknown ones failed for lack of data.
async fn final_table(admin: &Admin) -> Result<(), Failure> {
    let mut requests = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(after) => format!("/api/requests?limit=500&after={after}"),
            None => "/api/requests?limit=500".to_owned(),
        };
        let page =
            admin.get(&path).await.map_err(|e| Failure::Check(format!("cannot read the requests: {e}")))?;
        requests.extend(page["requests"].as_array().cloned().unwrap_or_default());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    let mut table: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut unexpected = Vec::new();
    for request in &requests {
        let order = request["order_no"].as_str().unwrap_or_default();
        let state = request["state"].as_str().unwrap_or_default();
        let error = request["last_error"].as_str().unwrap_or_default();
        let unknown = order.starts_with(UNKNOWN_PREFIX);
        let kind = if unknown { "unknown order" } else { "known order" };
        *table.entry((kind.to_owned(), state.to_owned())).or_default() += 1;
        let expected = if unknown {
            state == "failed" && error.contains("no payment data")
        } else {
            state == "delivered"
        };
        if !expected {
            unexpected.push(format!(
                "{} ({order}): {state} {error}",
                request["session_id"].as_str().unwrap_or_default()
            ));
        }
    }
    let late = requests.iter().filter(|r| r["late"].as_bool() == Some(true)).count();
    println!("\n| requests | state | count |\n|---|---|---|");
    for ((kind, state), count) in &table {
        println!("| {kind} | {state} | {count} |");
    }
    println!("| all | late | {late} |");
    if unexpected.is_empty() {
        println!("\nevery request ended as expected ({} requests)", requests.len());
        Ok(())
    } else {
        Err(Failure::Check(format!("requests that did not end as expected:\n{}", unexpected.join("\n"))))
    }
}

fn uuid_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Writes a file only its owner can read.
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(secret.as_bytes())
}
