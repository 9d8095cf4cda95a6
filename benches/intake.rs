//! Intake under load: customs calls at a fixed rate against a real service
//! (release build, real SQLite file with full sync), then a check that every
//! answered request is committed. Prints a table for BENCHMARKS.md.
//!
//! `cargo bench --bench intake` runs 1,000 requests/s for 60 s;
//! `BENCH_RATE` and `BENCH_SECS` change that; `BENCH_STORE=postgres` runs it on
//! PostgreSQL (a schema of its own in `POSTGRES_TEST_URL`, as the tests do).
//! `BENCH_INSTANCES=N` (1 or 2, PostgreSQL only) calls through Debian's HAProxy
//! (`deploy/several/haproxy.cfg`) in front of N `serve` processes on one
//! database, instead of one service in this process.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

#[path = "../tests/common/mod.rs"]
mod common;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let backend = match std::env::var("BENCH_STORE").as_deref() {
        Ok("postgres") => common::postgres::Backend::Postgres,
        Ok("sqlite") | Err(_) => common::postgres::Backend::Sqlite,
        Ok(other) => {
            eprintln!("BENCH_STORE={other:?}: expected sqlite or postgres");
            std::process::exit(2);
        }
    };
    common::postgres::on_store(backend, run(backend)).await
}

async fn run(backend: common::postgres::Backend) {
    let rate = env_or("BENCH_RATE", 1_000);
    let secs = env_or("BENCH_SECS", 60);
    let instances = env_or("BENCH_INSTANCES", 0);
    let target = Target::start(backend, instances).await;
    let url = target.url();
    let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().expect("client");

    let latencies = Arc::new(Mutex::new(Vec::with_capacity((rate * secs) as usize)));
    let answered = Arc::new(Mutex::new(Vec::with_capacity((rate * secs) as usize)));
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let total = rate * secs;
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        // Open loop: request i is due at start + i × period, whatever the
        // answers before it took; latency counts from when it was due, so a
        // stall is not hidden (no coordinated omission).
        let due = start + period * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let (client, url, latencies, answered, failures) =
            (client.clone(), url.clone(), latencies.clone(), answered.clone(), failures.clone());
        tasks.spawn(async move {
            let session_id = format!("BENCH-{i:08}");
            let open_req =
                format!(r#"{{"orderNo":"SO{i}","sessionID":"{session_id}","serviceTime":1533271903898}}"#);
            let result = client.post(&url).form(&[("openReq", open_req)]).send().await;
            let ok = match result {
                Ok(response) if response.status().is_success() => {
                    response.text().await.map(|body| body.contains(r#""code":"10000""#)).unwrap_or(false)
                }
                _ => false,
            };
            let elapsed = due.elapsed();
            if ok {
                latencies.lock().await.push(elapsed);
                answered.lock().await.push(session_id);
            } else {
                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let wall = start.elapsed();
    // Every answer came after its commit: what was answered is in the file now.
    let stored = target.stored_session_ids().await;
    target.stop().await;

    let mut latencies = latencies.lock().await.clone();
    latencies.sort();
    let pct =
        |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p) as usize).copied().unwrap_or_default();
    let answered = answered.lock().await.clone();
    let missing = answered.iter().filter(|session_id| !stored.contains(*session_id)).count();
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    println!("| intake benchmark | value |");
    println!("|---|---|");
    println!("| store | {backend:?} |");
    match instances {
        0 => println!("| service | one, in the load generator's process |"),
        n => println!("| service | {n} `serve` process(es) behind HAProxy |"),
    }
    println!("| target rate | {rate} requests/s for {secs} s |");
    println!(
        "| achieved rate | {:.0} requests/s ({} in {:.1} s) |",
        answered.len() as f64 / wall.as_secs_f64(),
        answered.len(),
        wall.as_secs_f64()
    );
    println!("| answered 10000 | {} |", answered.len());
    println!("| failed or not 10000 | {} |", failures.load(std::sync::atomic::Ordering::Relaxed));
    println!(
        "| p50 / p90 / p99 / max answer time | {} / {} / {} / {} |",
        ms(pct(0.50)),
        ms(pct(0.90)),
        ms(pct(0.99)),
        ms(pct(1.0))
    );
    println!("| rows in the database | {} |", stored.len());
    println!("| answered but not stored | {missing} |");
    if missing > 0 {
        std::process::exit(1);
    }
}

const SECTIONS: &str = "[signer]\npin = \"88888888\"\n[customs]\nenvironment = \"test\"\n";

/// Where the calls go: one service in this process, or `serve` processes behind HAProxy.
enum Target {
    InProcess(Box<common::Harness>),
    Balanced {
        instances: Vec<common::serve::ServeProcess>,
        proxy: common::haproxy::Haproxy,
        schema: common::postgres::Schema,
        _dir: tempfile::TempDir,
    },
}

impl Target {
    async fn start(backend: common::postgres::Backend, instances: u64) -> Target {
        if instances == 0 {
            return Target::InProcess(Box::new(common::Harness::start(SECTIONS).await));
        }
        if backend != common::postgres::Backend::Postgres || instances > 2 {
            eprintln!("BENCH_INSTANCES={instances}: 1 or 2, with BENCH_STORE=postgres");
            std::process::exit(2);
        }
        let dir = tempfile::tempdir().expect("a directory");
        let schema = common::postgres::Schema::create().await;
        let mut started = Vec::new();
        for _ in 0..instances {
            let mut serve =
                common::serve::ServeProcess::configure(dir.path(), SECTIONS).on_schema(Some(&schema));
            serve.start().await;
            started.push(serve);
        }
        let last = started.len() - 1;
        let proxy = common::haproxy::Haproxy::start(dir.path(), [&started[0].intake, &started[last].intake]);
        // Until both of HAProxy's health checks passed.
        tokio::time::sleep(Duration::from_secs(1)).await;
        Target::Balanced { instances: started, proxy, schema, _dir: dir }
    }

    fn url(&self) -> String {
        match self {
            Target::InProcess(h) => format!("{}/platDataOpen", h.intake),
            Target::Balanced { proxy, .. } => proxy.url.clone(),
        }
    }

    async fn stored_session_ids(&self) -> std::collections::HashSet<String> {
        match self {
            Target::InProcess(h) => h.stored_session_ids().await,
            Target::Balanced { schema, .. } => {
                common::stored_session_ids_in(std::path::Path::new("/nonexistent"), Some(schema)).await
            }
        }
    }

    async fn stop(self) {
        match self {
            Target::InProcess(h) => h.stop().await,
            Target::Balanced { mut instances, proxy, schema, _dir } => {
                drop(proxy);
                for serve in &mut instances {
                    serve.terminate(Duration::from_secs(30)).await;
                }
                schema.drop_now().await;
            }
        }
    }
}
