//! `customs179 sim`: stand-ins for what customs179 talks to, so the whole flow can be tested
//! and failures rehearsed without a customs IC card or customs.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use customs179_service::config::{LogFormat, LogTo};
use customs179_sim::customs::{self, CallError, CallOptions, CallResult, CustomsFaults, CustomsSimOptions};
use customs179_sim::eport::{self, Algo, EportSimOptions, Faults};
use customs179_sim::keys::CertValidity;

use super::Failure;

/// Runs a simulator of a system customs179 talks to, for tests and rehearsals.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    simulator: Simulator,
}

#[derive(clap::Subcommand)]
enum Simulator {
    Eport(EportArgs),
    Customs(CustomsArgs),
}

/// Runs an EportClient simulator: the card-signing WebSocket, with a software card
///
/// Serves ws://LISTEN/ (any path, no auth) with the frames of the real control:
/// cus-sec_SpcSignDataAsPEM, cus-sec_SpcGetCertNo, cus-sec_SpcGetSignCertAsPEM,
/// cus-sec_SpcGetValidTimeFromCert and cus-sec_SpcVerifySignData. Signatures are real:
/// SM3withSM2 (user id 1234567812345678, raw r||s, 88 base64 characters) or RSA-1024
/// PKCS#1 v1.5 SHA-1 (172 characters) over the UTF-8 bytes of inData.
///
/// The first start makes the card in --state-dir: sign-key.pem (PKCS#8 private key) and
/// sign-cert.pem (self-signed; its 8-byte serial is the 16-digit certNo; valid 10 years).
/// Later starts reuse them, so the certNo stays; a state dir made for the other --algo is
/// refused. Logs where it listens and the certNo to stderr and runs until Ctrl-C or SIGTERM
/// (exit 0). Exits 2 when it cannot start (address in use, unusable state dir).
///
/// The card:
///   - a Sign with another passwd answers ["[sim] 口令错误, 剩余尝试次数 N","Err:Sim61001"];
///     a right PIN resets the count; 3 wrong PINs in a row lock the card: every Sign then
///     answers "Err:Sim61002", even with the right PIN, until the simulator restarts.
///     These texts and tags are invented (the real ones are unpublished) and lie outside
///     the allow-list, as the real unknown answers do.
///   - blank or missing inData / passwd: the real
///     ["参数检查失败,传入的args中必须包含必要的非空白参数:inData","Err:Base50000"].
///   - GetValidTime answers ["YYYY-MM-DD HH:MM:SS","YYYY-MM-DD HH:MM:SS"] in Beijing time;
///     the real format is unpublished.
///   - Verify answers Result true, or false with "Err:Sim62001"; unknown methods
///     "Err:Sim60404"; frames that are not requests "Err:Sim60400".
///
/// Faults (each count is of upcoming calls and goes down by one per use):
///   --latency-ms N           delay before answering each Sign that reaches the card
///   --reader-error-50070 N   Sign answers ["[读卡器底层库]复位读卡器失败:错误码=50070","Err:Custom50070"]
///   --reader-error-50200 N   Sign answers ["打开读卡器失败：错误码=50200","Err:Custom50200"]
///   --wrong-pin N            Sign answers the wrong-PIN failure whatever the PIN (never locks)
///   --drop N                 any request: the connection is closed without an answer
///   --hang N                 any request: never answered, the connection stays open
///   --bad-signature N        Sign with the right PIN answers Result true with a signature
///                            of other bytes (it does not verify)
/// A request meets them in this order: drop, hang, then (Sign calls with their arguments)
/// 50070, 50200, latency, wrong PIN, bad signature.
///
/// Control endpoint (--control ADDR; plain HTTP without auth: keep it on loopback):
///   GET  /faults   the faults in force, e.g.
///                  {"latency_ms":0,"reader_error_50070":0,"reader_error_50200":0,
///                   "wrong_pin":0,"drop":0,"hang":0,"bad_signature":0}
///   POST /faults   a JSON object with any of those fields (Content-Type: application/json);
///                  the fields given replace the current values; answers the faults now in
///                  force; unknown fields are refused (422)
///                  curl -H 'Content-Type: application/json' -d '{"reader_error_50070":2}' http://ADDR/faults
///   GET  /stats    {"connections":N,"requests":N,"sign_requests":N,"signatures":N,
///                   "wrong_pins":N,"locked":false,"busy_micros":N,"reused_ids":N}
///                  requests counts every frame received; signatures the successful Signs;
///                  wrong_pins every wrong-PIN answer, forced ones included.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
struct EportArgs {
    /// The WebSocket address; the real control listens on 127.0.0.1:61232.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:61232")]
    listen: SocketAddr,
    /// The card: sm2 (cards since mid-2022) or rsa (RSA-1024, older cards).
    #[arg(long, value_enum, default_value_t = AlgoArg::Sm2)]
    algo: AlgoArg,
    /// The card's PIN.
    #[arg(long)]
    pin: String,
    /// Where the card's key and certificate are kept (created if missing).
    #[arg(long, value_name = "DIR")]
    state_dir: PathBuf,
    /// Also serve the HTTP control endpoint (faults and stats) on this address.
    #[arg(long, value_name = "ADDR")]
    control: Option<SocketAddr>,
    /// Delay in ms before answering each Sign that reaches the card.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    latency_ms: u64,
    /// The next N Sign calls answer reader error 50070.
    #[arg(long, value_name = "N", default_value_t = 0)]
    reader_error_50070: u64,
    /// The next N Sign calls answer reader error 50200.
    #[arg(long, value_name = "N", default_value_t = 0)]
    reader_error_50200: u64,
    /// The next N Sign calls answer a wrong PIN (without locking the card).
    #[arg(long, value_name = "N", default_value_t = 0)]
    wrong_pin: u64,
    /// Close the connection, unanswered, on the next N requests.
    #[arg(long, value_name = "N", default_value_t = 0)]
    drop: u64,
    /// Never answer the next N requests.
    #[arg(long, value_name = "N", default_value_t = 0)]
    hang: u64,
    /// The next N Signs with the right PIN answer a signature that does not verify.
    #[arg(long, value_name = "N", default_value_t = 0)]
    bad_signature: u64,
    /// The card's certificate expires DAYS whole days from now (negative: expired that
    /// long ago). A card already in --state-dir gets a new certificate (and certNo) if
    /// its own says otherwise. Without it, a new card's certificate is valid ten years.
    #[arg(long, value_name = "DAYS", allow_hyphen_values = true)]
    cert_expires_in_days: Option<i64>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AlgoArg {
    Sm2,
    Rsa,
}

pub fn run(args: Args) -> Result<(), Failure> {
    match args.simulator {
        Simulator::Eport(args) => run_eport(args),
        Simulator::Customs(args) => match args.command {
            CustomsCommand::Serve(args) => run_customs_serve(args),
            CustomsCommand::Call(args) => run_customs_call(args),
        },
    }
}

fn run_eport(args: EportArgs) -> Result<(), Failure> {
    if args.pin.trim().is_empty() {
        return Err(Failure::BadInput("--pin must not be blank: the control refuses a blank passwd".into()));
    }
    super::serve::init_logging(LogFormat::Text, "info", &LogTo::Stderr)?;
    let cert_validity = args
        .cert_expires_in_days
        .map(CertValidity::ending_in_days)
        .transpose()
        .map_err(|e| Failure::BadInput(format!("--cert-expires-in-days: {e}")))?;
    let options = EportSimOptions {
        listen: args.listen,
        algo: match args.algo {
            AlgoArg::Sm2 => Algo::Sm2,
            AlgoArg::Rsa => Algo::Rsa,
        },
        pin: args.pin,
        state_dir: args.state_dir,
        control: args.control,
        faults: Faults {
            latency_ms: args.latency_ms,
            reader_error_50070: args.reader_error_50070,
            reader_error_50200: args.reader_error_50200,
            wrong_pin: args.wrong_pin,
            drop: args.drop,
            hang: args.hang,
            bad_signature: args.bad_signature,
        },
        cert_validity,
    };
    eport::run(options).map_err(|e| Failure::BadInput(format!("the EportClient simulator cannot run: {e}")))
}

/// Plays customs: its upload endpoint (serve) or its first call to the platform (call)
#[derive(clap::Args)]
struct CustomsArgs {
    #[command(subcommand)]
    command: CustomsCommand,
}

#[derive(clap::Subcommand)]
enum CustomsCommand {
    Serve(CustomsServeArgs),
    Call(CustomsCallArgs),
}

/// Runs a customs simulator: the upload endpoint realTimeDataUpload, with customs' answers
///
/// Serves POST http://LISTEN/ceb2grab/grab/realTimeDataUpload like customs: reads the form
/// field payExInfoStr (the body is decoded as UTF-8 whatever charset is declared) and answers
/// HTTP 200 {"code":"…","message":"…","total":0,"serviceTime":<ms>}:
///   10000  上传成功: stored
///   20000  上传失败…: no payExInfoStr, not an upload body, an empty sessionID
///   20004  企业实时数据获取验签证书未在服务系统注册: certNo not among the certificates of
///          --certs, or ebpCode not among --ebp-code
///   20006  上传失败,入库失败 ORA-00001: 违反唯一约束条件 (…): this sessionID was stored before
///
/// Every file of --certs that is a certificate (PEM or DER) is registered under its certNo
/// (lower-case hex of the serial); private keys, bare public keys and other files are skipped
/// with a warning, never loaded.
///
/// It also checks what customs does not tell: it rebuilds the pre-sign string from the raw
/// body, verifies signValue against the registered certificate of certNo, and checks every
/// field rule. Like customs it stores (10000) an upload whose signature does not verify; the
/// violations go into the report. With --strict any violation is answered 20000 with the
/// violations as the message, and nothing is stored.
///
/// Faults. Shares (0 to 1) of uploads, drawn from a generator seeded by --seed (logged and in
/// the report when not given, so a run can be repeated):
///   --http-5xx S               answer HTTP 503 (an HTML page) without storing
///   --code-20000 S             answer 20000 上传失败 without storing
///   --timeout-before-store S   don't store; close the connection unanswered after --timeout-ms
///   --lost-after-store S       of the stored uploads: store, then close the connection unanswered
/// and counts of upcoming uploads (deterministic): --next-http-5xx N, --next-20000 N,
/// --next-timeout N, --next-lost N. Every POST to the upload path counts, malformed or not;
/// before storing, an upload meets next-http-5xx, next-20000, next-timeout, then the shares
/// in the order above; the lost ones apply to stored uploads only.
///
/// Control routes, on the same listener (plain HTTP without auth: keep it on loopback):
///   GET  /report   {"seed":N,"strict":false,"cert_nos":[…],"ebp_codes":[…],
///                   "uploads":[{"time_ms":N,"session_id":"…","guid":"…","cert_no":"…",
///                     "ebp_code":"…","http_status":200,"code":"10000","message":"上传成功",
///                     "fault":null,"violations":[],"stored":true},…],
///                   "totals":{"received":N,"stored":N,"by_code":{"10000":N,…},
///                     "http_5xx":N,"unanswered":N,"with_violations":N}}
///                  http_status and code are null when no answer was sent.
///   GET  /faults   the faults in force: {"http_5xx":0.0,"code_20000":0.0,
///                   "timeout_before_store":0.0,"lost_after_store":0.0,"timeout_ms":15000,
///                   "next_http_5xx":0,"next_20000":0,"next_timeout":0,"next_lost":0}
///   POST /faults   a JSON object with any of those fields (Content-Type: application/json);
///                  the fields given replace the current values; answers the faults now in
///                  force; unknown fields and shares outside 0..1 are refused (422)
///                  curl -H 'Content-Type: application/json' -d '{"next_lost":1}' http://ADDR/faults
///
/// Logs where it listens and each upload to stderr and runs until Ctrl-C or SIGTERM (exit 0).
/// Exits 2 when it cannot start (address in use, unreadable --certs, a bad share).
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
struct CustomsServeArgs {
    /// The address of the upload endpoint and the control routes (not 8179: that is the
    /// service's admin listener by default).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Directory of the registered signing certificates (PEM or DER).
    #[arg(long, value_name = "DIR")]
    certs: PathBuf,
    /// Registered platform codes (ebpCode), comma-separated or repeated.
    #[arg(long = "ebp-code", value_name = "CODE", value_delimiter = ',', required = true)]
    ebp_codes: Vec<String>,
    /// Answer 20000 (and store nothing) to any upload with a violation.
    #[arg(long)]
    strict: bool,
    /// Seed of the generator the fault shares are drawn from.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Share of uploads answered HTTP 503 without storing.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    http_5xx: f64,
    /// Share of uploads answered 20000 without storing.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    code_20000: f64,
    /// Share of uploads not stored and closed unanswered after --timeout-ms.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    timeout_before_store: f64,
    /// Share of stored uploads whose answer is lost (connection closed unanswered).
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    lost_after_store: f64,
    /// How long a timeout fault keeps the client waiting before closing.
    #[arg(long, value_name = "MS", default_value_t = customs::DEFAULT_TIMEOUT_MS)]
    timeout_ms: u64,
    /// The next N uploads are answered HTTP 503.
    #[arg(long, value_name = "N", default_value_t = 0)]
    next_http_5xx: u64,
    /// The next N uploads are answered 20000.
    #[arg(long, value_name = "N", default_value_t = 0)]
    next_20000: u64,
    /// The next N uploads time out.
    #[arg(long, value_name = "N", default_value_t = 0)]
    next_timeout: u64,
    /// The answers to the next N stored uploads are lost.
    #[arg(long, value_name = "N", default_value_t = 0)]
    next_lost: u64,
}

/// Plays customs' first call (platDataOpen) against a platform endpoint
///
/// Sends COUNT form POSTs (application/x-www-form-urlencoded) with one field openReq =
/// {"orderNo":"ORDER","sessionID":"<new upper-case UUID>","serviceTime":<now ms, a number>},
/// User-Agent Apache-HttpClient/4.5.3 (Java/1.8.0_60), at RATE per second (concurrently when
/// answers are slower), redirects not followed. Each answer must be what customs' review
/// demands: HTTP 200, JSON whose code is the string "10000".
///
/// Prints one line per call on stdout (index, sessionID, code or HTTP status, ms, and why it
/// failed) and a summary. Exit 0 when every call was answered 10000, 1 otherwise, 2 for bad
/// arguments or when the first call cannot connect at all.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
struct CustomsCallArgs {
    /// The platform's endpoint as registered with customs (http://, port 80 in production).
    #[arg(long)]
    url: String,
    /// The order number customs asks about.
    #[arg(long, value_name = "NO")]
    order: String,
    /// How many calls, each with a new sessionID.
    #[arg(long, value_name = "N", default_value_t = 1)]
    count: u64,
    /// Calls started per second.
    #[arg(long, value_name = "R", default_value_t = 1.0)]
    rate: f64,
    /// How long to wait for each answer.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    timeout_ms: u64,
}

fn run_customs_serve(args: CustomsServeArgs) -> Result<(), Failure> {
    super::serve::init_logging(LogFormat::Text, "info", &LogTo::Stderr)?;
    let options = CustomsSimOptions {
        listen: args.listen,
        certs_dir: args.certs,
        ebp_codes: args.ebp_codes,
        strict: args.strict,
        faults: CustomsFaults {
            http_5xx: args.http_5xx,
            code_20000: args.code_20000,
            timeout_before_store: args.timeout_before_store,
            lost_after_store: args.lost_after_store,
            timeout_ms: args.timeout_ms,
            next_http_5xx: args.next_http_5xx,
            next_20000: args.next_20000,
            next_timeout: args.next_timeout,
            next_lost: args.next_lost,
        },
        seed: args.seed,
    };
    customs::run(options).map_err(|e| Failure::BadInput(format!("the customs simulator cannot run: {e}")))
}

fn run_customs_call(args: CustomsCallArgs) -> Result<(), Failure> {
    let options = CallOptions {
        url: args.url,
        order_no: args.order,
        count: args.count,
        rate: args.rate,
        timeout: Duration::from_millis(args.timeout_ms),
    };
    let count = options.count;
    let summary = super::block_on(async move {
        customs::call_with(options, |result| print_call(result, count)).await.map_err(|e| match e {
            CallError::Unreachable { .. } => Failure::BadInput(e.to_string()),
            other => Failure::BadInput(format!("cannot call: {other}")),
        })
    })?;
    let _ = writeln!(
        std::io::stdout(),
        "{} calls: {} answered 10000, {} failed; slowest {} ms",
        summary.results.len(),
        summary.passed(),
        summary.failed(),
        summary.slowest_ms()
    );
    if summary.all_ok() {
        Ok(())
    } else {
        Err(Failure::Check(format!("{} of {} calls were not answered 10000", summary.failed(), count)))
    }
}

/// One line per call, written as it completes so a long run shows progress.
fn print_call(result: &CallResult, count: u64) {
    let answer = match (&result.code, result.http_status) {
        (Some(code), Some(200)) => code.clone(),
        (Some(code), Some(status)) => format!("{code} (HTTP {status})"),
        (None, Some(status)) => format!("HTTP {status}"),
        (_, None) => "no answer".to_owned(),
    };
    let mut line =
        format!("{}/{count} {} {answer} {} ms", result.index, result.session_id, result.elapsed_ms);
    if let Some(failure) = &result.failure {
        line.push_str(" FAILED: ");
        line.push_str(failure);
    }
    let mut stdout = std::io::stdout().lock();
    // A closed stdout must not stop the calls: the exit code still tells the outcome.
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}
