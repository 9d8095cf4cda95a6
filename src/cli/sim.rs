//! `customs179 sim`: stand-ins for what customs179 talks to, so the whole flow can be tested
//! and failures rehearsed without a customs IC card (and later without customs).

use std::net::SocketAddr;
use std::path::PathBuf;

use customs179_service::config::LogFormat;
use customs179_sim::eport::{self, Algo, EportSimOptions, Faults};

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
/// A request meets them in this order: drop, hang, then (Sign calls with their arguments)
/// 50070, 50200, latency, wrong PIN.
///
/// Control endpoint (--control ADDR; plain HTTP without auth: keep it on loopback):
///   GET  /faults   the faults in force, e.g.
///                  {"latency_ms":0,"reader_error_50070":0,"reader_error_50200":0,
///                   "wrong_pin":0,"drop":0,"hang":0}
///   POST /faults   a JSON object with any of those fields (Content-Type: application/json);
///                  the fields given replace the current values; answers the faults now in
///                  force; unknown fields are refused (422)
///                  curl -H 'Content-Type: application/json' -d '{"reader_error_50070":2}' http://ADDR/faults
///   GET  /stats    {"connections":N,"requests":N,"sign_requests":N,"signatures":N,
///                   "wrong_pins":N,"locked":false}
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
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AlgoArg {
    Sm2,
    Rsa,
}

pub fn run(args: Args) -> Result<(), Failure> {
    match args.simulator {
        Simulator::Eport(args) => run_eport(args),
    }
}

fn run_eport(args: EportArgs) -> Result<(), Failure> {
    if args.pin.trim().is_empty() {
        return Err(Failure::BadInput("--pin must not be blank: the control refuses a blank passwd".into()));
    }
    super::serve::init_logging(LogFormat::Text, "info")?;
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
        },
    };
    eport::run(options).map_err(|e| Failure::BadInput(format!("the EportClient simulator cannot run: {e}")))
}
