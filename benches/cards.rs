//! Several cards through the whole service (release build, real sockets, a real SQLite file):
//! each card is its own EportClient simulator taking 200 ms a signature, and uploads go to the
//! customs simulator, which registers every card's certificate and verifies every signature.
//! Prints markdown tables for BENCHMARKS.md and exits 1 when a goal is missed.
//!
//! 1. Throughput with 1, 2 and 4 cards: `--per-card` requests for each card prepared while
//!    signing is paused, then signing resumed; the time until all are delivered gives
//!    signatures/s. Goal: N cards sign at least 95 % of N times what one card signs.
//! 2. A burst: `--burst` customs calls as fast as the intake takes them, their payment data
//!    already pushed, with 4 cards: how many are delivered within 120 s of their call (from
//!    the request's `received_at` to its `delivered_at`). Goal: all of them.
//!
//! `cargo bench --bench cards`; `--help` lists the options.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use customs179_sim::customs::{self, CustomsSimOptions, RunningCustomsSim};
use customs179_sim::eport::{self, Algo, EportSimOptions, Faults, RunningEportSim};
use serde_json::Value;
use tempfile::TempDir;

#[path = "../tests/common/mod.rs"]
mod common;

use common::{EBP_CODE, Harness, loopback};

const PIN: &str = "88888888";
/// What customs allows from its call to the upload (announcement No.179).
const CUSTOMS_DEADLINE_MS: i64 = 120_000;
/// The share of N × one card's rate that N cards must reach.
const MIN_SCALING: f64 = 0.95;
/// Payment records per push, well under the default body limit.
const PUSH_BATCH: usize = 100;
/// Customs' calls in flight at once during the burst.
const CALLERS: usize = 32;

const USAGE: &str = "\
usage: cargo bench --bench cards -- [OPTIONS]

  --per-card N     requests per card in the throughput runs (50)
  --latency-ms L   each simulated card's time per signature (200)
  --burst N        customs' calls in the burst (1000)
  --burst-cards K  cards during the burst (4)
  --help           this text";

struct Options {
    per_card: usize,
    latency_ms: u64,
    burst: usize,
    burst_cards: usize,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options { per_card: 50, latency_ms: 200, burst: 1_000, burst_cards: 4 };
    for (arg, value) in common::bench_args(args, &[])? {
        let count: usize = value
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{arg} takes a positive whole number, not {value:?}"))?;
        match arg.as_str() {
            "--per-card" => options.per_card = count,
            "--latency-ms" => options.latency_ms = count as u64,
            "--burst" => options.burst = count,
            "--burst-cards" => options.burst_cards = count,
            _ => return Err(format!("unknown option {arg}")),
        }
    }
    Ok(options)
}

/// Simulated cards, customs registering all their certificates, and the service using them all.
struct Setup {
    cards: Vec<RunningEportSim>,
    customs: RunningCustomsSim,
    service: Harness,
    _dirs: Vec<TempDir>,
}

impl Setup {
    async fn start(cards: usize, latency_ms: u64) -> Setup {
        let certs = tempfile::tempdir().expect("temp dir");
        let mut dirs = Vec::new();
        let mut sims = Vec::new();
        let mut signers = String::new();
        for i in 0..cards {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut options = EportSimOptions::new(loopback(), Algo::Sm2, PIN, dir.path());
            options.faults = Faults { latency_ms, ..Faults::default() };
            let sim = eport::start(options).await.expect("the card simulator starts");
            std::fs::write(certs.path().join(format!("card-{i}.pem")), sim.keys().cert_pem().expect("pem"))
                .expect("certificate written");
            signers += &format!(
                "[[signer]]\nname = \"card-{i}\"\nurl = \"{}\"\npin = \"{PIN}\"\ntimeout_ms = 5000\n\n",
                sim.ws_url()
            );
            sims.push(sim);
            dirs.push(dir);
        }
        let mut options = CustomsSimOptions::new(loopback(), certs.path(), [EBP_CODE]);
        options.seed = Some(179);
        let customs = customs::start(options).await.expect("the customs simulator starts");
        let service = Harness::start(&format!(
            "{signers}[customs]\nenvironment = \"test\"\nupload_url = \"{}\"\n",
            customs.upload_url()
        ))
        .await;
        dirs.push(certs);
        Setup { cards: sims, customs, service, _dirs: dirs }
    }

    /// Waits until `n` requests are in `state` (by the database's own counts), or `deadline`;
    /// whether they all were.
    async fn wait_for(&self, state: &str, n: usize, deadline: Instant) -> bool {
        let mut conn = common::open_db(&self.service.db).await;
        while count(&mut conn, state).await < n {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// The platform pushes the payment data of orders `O-{prefix}-0..n`.
    async fn platform_pays(&self, prefix: &str, n: usize) {
        let orders: Vec<String> = (0..n).map(|i| format!("O-{prefix}-{i}")).collect();
        for (batch, chunk) in orders.chunks(PUSH_BATCH).enumerate() {
            let records: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, order)| common::payment_record(&format!("T-{prefix}-{batch}-{i}"), &[order]))
                .collect();
            let (status, answer) = self.service.push_payments(Value::Array(records).to_string()).await;
            assert_eq!(status.as_u16(), 201, "{answer}");
        }
    }

    /// Customs asks for orders `O-{prefix}-0..n`, `CALLERS` calls at a time.
    async fn customs_calls(&self, prefix: &str, n: usize) {
        let next = Arc::new(AtomicUsize::new(0));
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..CALLERS.min(n) {
            let (api, next, prefix) = (self.service.api.clone(), next.clone(), prefix.to_owned());
            callers.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    api.customs_call(&format!("O-{prefix}-{i}"), &format!("S-{prefix}-{i}")).await;
                }
            });
        }
        while let Some(done) = callers.join_next().await {
            done.expect("a caller");
        }
    }

    /// What customs stored and whether every upload it received was clean.
    fn customs_problems(&self, expected: usize) -> Vec<String> {
        let totals = self.customs.report().totals;
        let mut problems = Vec::new();
        if totals.stored != expected as u64 {
            problems.push(format!("customs stored {} uploads, not {expected}", totals.stored));
        }
        if totals.with_violations > 0 {
            problems.push(format!("{} uploads broke a rule or did not verify", totals.with_violations));
        }
        problems
    }

    async fn stop(self) {
        self.service.stop().await;
        self.customs.stop().await;
        for card in self.cards {
            card.stop().await;
        }
    }
}

/// How many requests are in `state`, from the database's own counts.
async fn count(conn: &mut sqlx::SqliteConnection, state: &str) -> usize {
    let n: Option<i64> = sqlx::query_scalar("SELECT n FROM state_counts WHERE state = ?")
        .bind(state)
        .fetch_optional(conn)
        .await
        .expect("state counts");
    n.map_or(0, |n| n as usize)
}

struct Throughput {
    cards: usize,
    signatures: usize,
    elapsed: Duration,
    per_card: Vec<u64>,
    busy_share: f64,
}

impl Throughput {
    fn rate(&self) -> f64 {
        self.signatures as f64 / self.elapsed.as_secs_f64()
    }
}

/// `per_card` × `cards` requests prepared while signing is paused, then signing resumed: the
/// time until all are delivered.
async fn throughput(
    cards: usize,
    per_card: usize,
    latency_ms: u64,
    problems: &mut Vec<String>,
) -> Throughput {
    let setup = Setup::start(cards, latency_ms).await;
    let n = per_card * cards;
    let (status, answer) =
        setup.service.post("/api/control/signing/pause", r#"{"reason": "bench: preparing requests"}"#).await;
    assert!(status.is_success(), "pause: {status} {answer}");
    setup.platform_pays("t", n).await;
    setup.customs_calls("t", n).await;
    let prepared = setup.wait_for("ready", n, Instant::now() + Duration::from_secs(60)).await;
    assert!(prepared, "requests not prepared within 60 s");
    let busy_before: u64 = setup.cards.iter().map(|c| c.stats().busy_micros).sum();
    let start = Instant::now();
    let (status, answer) = setup.service.post("/api/control/signing/resume", "").await;
    assert!(status.is_success(), "resume: {status} {answer}");
    let expected = Duration::from_millis(latency_ms * per_card as u64);
    if !setup.wait_for("delivered", n, start + expected * 4 + Duration::from_secs(30)).await {
        problems.push(format!("{cards} cards: not all {n} requests delivered"));
    }
    let elapsed = start.elapsed();
    let stats: Vec<_> = setup.cards.iter().map(RunningEportSim::stats).collect();
    let busy: u64 = stats.iter().map(|s| s.busy_micros).sum::<u64>() - busy_before;
    problems.extend(setup.customs_problems(n).into_iter().map(|p| format!("{cards} cards: {p}")));
    setup.stop().await;
    Throughput {
        cards,
        signatures: n,
        elapsed,
        per_card: stats.iter().map(|s| s.signatures).collect(),
        busy_share: busy as f64 / 1e6 / (elapsed.as_secs_f64() * cards as f64),
    }
}

struct Burst {
    cards: usize,
    calls: usize,
    calling: Duration,
    /// Call (`received_at`) → `delivered_at` of each delivered request, sorted, in ms.
    delays_ms: Vec<i64>,
    /// The first call → the last delivery.
    span: Duration,
    per_card: Vec<u64>,
}

/// `calls` customs calls at once, their payment data already there: when each was delivered.
async fn burst(cards: usize, calls: usize, latency_ms: u64, problems: &mut Vec<String>) -> Burst {
    let setup = Setup::start(cards, latency_ms).await;
    setup.platform_pays("b", calls).await;
    let start = Instant::now();
    setup.customs_calls("b", calls).await;
    let calling = start.elapsed();
    // Waits a little past the deadline of the last call, so that late deliveries are counted.
    let all = setup.wait_for("delivered", calls, Instant::now() + Duration::from_secs(125)).await;
    let span = start.elapsed();
    let mut conn = common::open_db(&setup.service.db).await;
    let mut delays_ms: Vec<i64> =
        sqlx::query_scalar("SELECT delivered_at - received_at FROM requests WHERE delivered_at IS NOT NULL")
            .fetch_all(&mut conn)
            .await
            .expect("delivery times");
    delays_ms.sort_unstable();
    let late = delays_ms.iter().filter(|d| **d > CUSTOMS_DEADLINE_MS).count();
    if !all || late > 0 {
        problems.push(format!(
            "burst: {} of {calls} delivered within 120 s of their call",
            delays_ms.len() - late
        ));
    }
    problems.extend(setup.customs_problems(calls).into_iter().map(|p| format!("burst: {p}")));
    let per_card = setup.cards.iter().map(|c| c.stats().signatures).collect();
    setup.stop().await;
    Burst { cards, calls, calling, delays_ms, span, per_card }
}

fn per_card(signatures: &[u64]) -> String {
    signatures.iter().map(u64::to_string).collect::<Vec<_>>().join(" / ")
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match common::bench_options(parse, USAGE) {
        Ok(options) => options,
        Err(exit) => return exit,
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut problems = Vec::new();

    let mut runs = Vec::new();
    for cards in [1, 2, 4] {
        runs.push(throughput(cards, options.per_card, options.latency_ms, &mut problems).await);
    }
    let one_card = runs[0].rate();
    println!(
        "Throughput, each card taking {} ms a signature ({} requests per card, resume → all delivered):",
        options.latency_ms, options.per_card
    );
    println!();
    println!(
        "| cards | signatures | elapsed | signatures/s | of N × one card | signatures per card | cards busy |"
    );
    println!("|---:|---:|---:|---:|---:|---|---:|");
    for run in &runs {
        let scaling = run.rate() / (one_card * run.cards as f64);
        println!(
            "| {} | {} | {:.2} s | {:.2} | {:.1} % | {} | {:.1} % |",
            run.cards,
            run.signatures,
            run.elapsed.as_secs_f64(),
            run.rate(),
            scaling * 100.0,
            per_card(&run.per_card),
            run.busy_share * 100.0
        );
        if scaling < MIN_SCALING {
            problems.push(format!(
                "{} cards signed at {:.1} % of {} × one card, below {:.0} %",
                run.cards,
                scaling * 100.0,
                run.cards,
                MIN_SCALING * 100.0
            ));
        }
    }

    let burst = burst(options.burst_cards, options.burst, options.latency_ms, &mut problems).await;
    let delays = &burst.delays_ms;
    let at = |q: f64| {
        delays
            .get(((delays.len() as f64 - 1.0) * q).round() as usize)
            .map_or("–".to_owned(), |ms| format!("{:.1} s", *ms as f64 / 1e3))
    };
    let within = delays.iter().filter(|d| **d <= CUSTOMS_DEADLINE_MS).count();
    println!();
    println!(
        "A burst of {} customs calls ({} at a time), {} cards taking {} ms a signature:",
        burst.calls, CALLERS, burst.cards, options.latency_ms
    );
    println!();
    println!("| | |");
    println!("|---|---:|");
    println!("| all calls answered in | {:.2} s |", burst.calling.as_secs_f64());
    println!("| delivered within 120 s of their call | {within} of {} |", burst.calls);
    println!(
        "| call → delivered: p50 / p90 / p99 / max | {} / {} / {} / {} |",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
    println!("| first call → last delivered | {:.2} s |", burst.span.as_secs_f64());
    println!("| signatures per card | {} |", per_card(&burst.per_card));

    if problems.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!("FAILED:");
    for problem in &problems {
        eprintln!("- {problem}");
    }
    ExitCode::FAILURE
}
