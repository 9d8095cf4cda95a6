//! Signing throughput against the EportClient simulator (release build, real sockets, a real
//! SQLite file with full sync). Prints markdown tables for BENCHMARKS.md.
//!
//! 1. `SignerClient` alone, sequential calls, the card answering at once: what the client,
//!    the WebSocket and the local verification of each signature cost.
//! 2. `SignerClient` alone with the card taking 50 ms a signature: what the simulated card
//!    itself allows (its timer rounds each wait up), the ceiling for the service.
//! 3. The whole service, the card taking 50 ms a signature: N requests prepared while signing
//!    is paused, then signing resumed; the time until all are "signed" gives signatures/s and
//!    the card's busy share: the time the simulated card spent on Sign calls (its latency and
//!    the signing, as it measures them) over the elapsed time, which must be at least 95 %:
//!    the card is the bottleneck and must not wait on the database. Exits 1 below that. A second table
//!    shows where the time went, from when each sign request reached the simulator.
//!
//! `cargo bench --bench signing`; `BENCH_SIGNS` (2,000), `BENCH_REQUESTS` (100) and
//! `BENCH_LATENCY_MS` (50) change the sizes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use customs179_core::SignatureVerifier;
use customs179_eport::SignerClient;
use customs179_sim::eport::{self, Algo, EportSimOptions, Faults, RunningEportSim};
use customs179_store::{Stage, Store};
use serde_json::Value;

#[path = "../tests/common/mod.rs"]
mod common;

const PIN: &str = "88888888";
const MIN_BUSY_SHARE: f64 = 0.95;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn start_sim(dir: &Path, algo: Algo, latency_ms: u64) -> RunningEportSim {
    let mut options = EportSimOptions::new(([127, 0, 0, 1], 0).into(), algo, PIN, dir);
    options.faults = Faults { latency_ms, ..Faults::default() };
    eport::start(options).await.expect("the simulator starts")
}

struct Row {
    path: &'static str,
    algo: &'static str,
    latency_ms: u64,
    signatures: u64,
    elapsed: Duration,
    busy_share: Option<f64>,
}

/// A pre-sign string of realistic size (about 2 KB), different for each `i`.
fn presign_text(i: u64) -> String {
    let goods: Vec<String> = (0..12)
        .map(|g| {
            format!(r#"{{"gname":"保温杯 500ml 第{g}件","itemLink":"https://shop.example/item/{i}/{g}"}}"#)
        })
        .collect();
    format!(
        r#""sessionID":"BENCH-{i:08}"||"payExchangeInfoHead":{{"guid":"9D55BA71-55DE-41F4-8B50-C36C83B3B{i:03}","initalRequest":"https://pay.example/gateway?out_trade_no=T{i}","initalResponse":"ok","ebpCode":"BENCH","payCode":"312226T001","payTransactionId":"T{i}","totalAmount":88.5,"currency":"142","verDept":"3","payType":"1","tradingTime":"20240315103000","note":""}}||"payExchangeInfoLists":[{{"orderNo":"SO{i}","goodsInfo":[{}],"recpAccount":"6222000011112222","recpCode":"","recpName":"Example Shop Ltd"}}]||"serviceTime":"1710469800000""#,
        goods.join(",")
    )
}

/// Sequential signatures through one `SignerClient`, the card taking `latency_ms` for each.
async fn client_alone(algo: Algo, signs: u64, latency_ms: u64) -> Row {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = start_sim(dir.path(), algo, latency_ms).await;
    let client = SignerClient::new(sim.ws_url(), Duration::from_secs(5));
    client.identity().await.expect("connects");
    let texts: Vec<String> = (0..signs).map(presign_text).collect();
    let verifier = SignatureVerifier::from_bytes(sim.keys().cert_der()).expect("certificate");
    let busy_before = sim.stats().busy_micros;
    let start = Instant::now();
    let mut last = None;
    for text in &texts {
        last = Some(client.sign(text, PIN).await.expect("signed"));
    }
    let elapsed = start.elapsed();
    let last = last.expect("at least one signature");
    verifier.verify(texts[texts.len() - 1].as_bytes(), &last.sign_value).expect("verifies");
    let stats = sim.stats();
    assert_eq!((stats.connections, stats.signatures), (1, signs), "{stats:?}");
    sim.stop().await;
    Row {
        path: "SignerClient, sequential calls",
        algo: algo.name(),
        latency_ms,
        signatures: signs,
        elapsed,
        busy_share: busy_share(latency_ms, stats.busy_micros - busy_before, elapsed),
    }
}

/// The share of `elapsed` the card spent on Sign calls, when it has a latency to keep it busy.
fn busy_share(latency_ms: u64, busy_micros: u64, elapsed: Duration) -> Option<f64> {
    (latency_ms > 0).then(|| busy_micros as f64 / 1e6 / elapsed.as_secs_f64())
}

/// How many requests are in `state`.
async fn count(h: &common::Harness, state: &str) -> usize {
    let page = h.get(&format!("/api/requests?state={state}&limit=500")).await;
    page["requests"].as_array().map_or(0, Vec::len)
}

/// Where the service's time went, from when each sign request reached the card.
struct Timeline {
    /// Resume → the first sign request.
    first: Duration,
    /// Between consecutive sign requests (each includes one card latency).
    intervals: Vec<Duration>,
    /// The last sign request → all requests seen signed.
    last: Duration,
}

impl Timeline {
    fn print(&self, latency_ms: u64) {
        let mut sorted = self.intervals.clone();
        sorted.sort_unstable();
        let at = |q: f64| sorted.get(((sorted.len() as f64 - 1.0) * q).round() as usize).copied();
        let ms =
            |d: Option<Duration>| d.map_or("–".to_owned(), |d| format!("{:.2} ms", d.as_secs_f64() * 1e3));
        let median = at(0.5).unwrap_or_default();
        // Intervals well above the usual one: the signer between two claims.
        let slow: Vec<Duration> =
            self.intervals.iter().filter(|d| **d > median + Duration::from_millis(3)).copied().collect();
        let excess: Duration = slow.iter().map(|d| *d - median).sum();
        let over_latency: Duration =
            self.intervals.iter().map(|d| d.saturating_sub(Duration::from_millis(latency_ms))).sum();
        println!();
        println!("Where the service's time went (sign requests as the card saw them):");
        println!();
        println!("| | |");
        println!("|---|---:|");
        println!("| resume → first sign request | {} |", ms(Some(self.first)));
        println!(
            "| interval between sign requests: median / p90 / max | {} / {} / {} |",
            ms(Some(median)),
            ms(at(0.9)),
            ms(at(1.0))
        );
        println!(
            "| intervals over the median + 3 ms: count, excess | {}, {} |",
            slow.len(),
            ms(Some(excess))
        );
        println!("| total of intervals beyond the card latency | {} |", ms(Some(over_latency)));
        println!("| last sign request → all seen signed | {} |", ms(Some(self.last)));
    }
}

/// Records when the simulator's count of sign requests moves, until told to stop.
fn sample_sign_requests(sim: Arc<RunningEportSim>, stop: Arc<AtomicBool>) -> Vec<Instant> {
    let mut seen = sim.stats().sign_requests;
    let mut at = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let now = sim.stats().sign_requests;
        if now != seen {
            // One entry per request; requests are serialised, so a jump of more than one
            // within 50 µs would itself be a finding.
            for _ in seen..now {
                at.push(Instant::now());
            }
            seen = now;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    at
}

/// N requests prepared while signing is paused, then resumed: the time until all are signed.
async fn whole_service(requests: u64, latency_ms: u64) -> (Row, Timeline) {
    assert!(requests <= 500, "counted with one list call of at most 500");
    let card = tempfile::tempdir().expect("temp dir");
    let sim = Arc::new(start_sim(card.path(), Algo::Sm2, latency_ms).await);
    let h = common::Harness::start(&format!(
        r#"
        [signer]
        url = "{url}"
        pin = "{PIN}"
        timeout_ms = 5000
        [customs]
        environment = "test"
        # Nothing listens there: uploads just retry.
        upload_url = "http://127.0.0.1:9/ceb2grab/grab/realTimeDataUpload"
        "#,
        url = sim.ws_url(),
    ))
    .await;
    // Paused while the requests are prepared, so that signing starts with all of them waiting.
    let store = Store::open(&h.db).await.expect("store");
    store.pause(Stage::Signing, "bench: preparing requests", 0).await.expect("pause");
    store.close().await;
    for i in 0..requests {
        h.customs_call(&format!("SO-{i}"), &format!("S-{i}")).await;
    }
    let records: Vec<Value> =
        (0..requests).map(|i| common::payment_record(&format!("T-{i}"), &[&format!("SO-{i}")])).collect();
    let (status, answer) = h.push_payments(Value::Array(records).to_string()).await;
    assert_eq!(status.as_u16(), 201, "{answer}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&h, "ready").await < requests as usize {
        assert!(Instant::now() < deadline, "requests not prepared within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (sim, stop) = (sim.clone(), stop_sampling.clone());
        tokio::task::spawn_blocking(move || sample_sign_requests(sim, stop))
    };
    let busy_before = sim.stats().busy_micros;
    let start = Instant::now();
    let (status, answer) = h.post("/api/control/signing/resume", "").await;
    assert!(status.is_success(), "resume: {status} {answer}");
    let expected = Duration::from_millis(latency_ms * requests);
    let deadline = start + expected * 4 + Duration::from_secs(30);
    while count(&h, "signed").await < requests as usize {
        assert!(Instant::now() < deadline, "not all signed: {:?}", sim.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    stop_sampling.store(true, Ordering::Relaxed);
    let seen = sampler.await.expect("the sampler");
    let stats = sim.stats();
    assert_eq!((stats.signatures, stats.sign_requests), (requests, requests), "{stats:?}");
    assert_eq!(seen.len() as u64, requests);
    h.stop().await;
    let timeline = Timeline {
        first: seen[0] - start,
        intervals: seen.windows(2).map(|w| w[1] - w[0]).collect(),
        last: start + elapsed - seen[seen.len() - 1],
    };
    let row = Row {
        path: "service: resume → all signed",
        algo: Algo::Sm2.name(),
        latency_ms,
        signatures: requests,
        elapsed,
        busy_share: busy_share(latency_ms, stats.busy_micros - busy_before, elapsed),
    };
    (row, timeline)
}

#[tokio::main]
async fn main() {
    let signs = env_or("BENCH_SIGNS", 2_000);
    let requests = env_or("BENCH_REQUESTS", 100);
    let latency_ms = env_or("BENCH_LATENCY_MS", 50);
    let _ = rustls::crypto::ring::default_provider().install_default();

    let mut rows = Vec::new();
    for algo in [Algo::Sm2, Algo::Rsa] {
        rows.push(client_alone(algo, signs, 0).await);
    }
    // What the simulated card itself allows at this latency: the ceiling for the service.
    rows.push(client_alone(Algo::Sm2, requests, latency_ms).await);
    let (service, timeline) = whole_service(requests, latency_ms).await;
    rows.push(service);

    println!(
        "| path | card | card latency | signatures | elapsed | signatures/s | mean per signature | card busy |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        let secs = row.elapsed.as_secs_f64();
        println!(
            "| {} | {} | {} ms | {} | {:.2} s | {:.1} | {:.2} ms | {} |",
            row.path,
            row.algo,
            row.latency_ms,
            row.signatures,
            secs,
            row.signatures as f64 / secs,
            secs * 1_000.0 / row.signatures as f64,
            row.busy_share.map_or("–".to_owned(), |share| format!("{:.1} %", share * 100.0)),
        );
    }
    timeline.print(latency_ms);
    let service = rows.last().expect("the service row");
    let ceiling = &rows[rows.len() - 2];
    let per_signature = |row: &Row| row.elapsed.as_secs_f64() / row.signatures as f64;
    println!();
    println!(
        "The service signed at {:.1} % of the rate SignerClient alone reaches with the same card latency.",
        per_signature(ceiling) / per_signature(service) * 100.0
    );
    let share = service.busy_share.unwrap_or(0.0);
    if share < MIN_BUSY_SHARE {
        eprintln!(
            "FAILED: the card was busy {:.1} % of the time, below {:.0} %",
            share * 100.0,
            MIN_BUSY_SHARE * 100.0
        );
        std::process::exit(1);
    }
}
