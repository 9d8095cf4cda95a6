//! Crash safety at full size: the chaos run of `tests/common/chaos.rs` (the real service
//! SIGKILLed and restarted while customs calls, the card and customs simulated in this process)
//! with the numbers by default: 5,000 calls at 25/s, 20 ms a signature, customs
//! answering 10 % HTTP 503 and losing 5 % of its answers after storing, 10 kills. Prints the
//! results as markdown tables for BENCHMARKS.md and exits 1 when a promise was broken.
//!
//! `cargo bench --bench chaos -- --requests 5000 --kills 10 --seed 42`; `--help` lists the
//! options.

use std::path::PathBuf;
use std::process::ExitCode;

use common::chaos::{self, ChaosOptions};

#[path = "../tests/common/mod.rs"]
mod common;

const USAGE: &str = "\
usage: cargo bench --bench chaos -- [OPTIONS]

  --requests N    customs' calls (5000)
  --rate R        calls per second (25)
  --kills K       SIGKILLs of the service, each followed by a restart (10)
  --latency-ms L  the simulated card's time per signature (20)
  --seed S        repeats a run's draws: kill and push moments, customs' faults (from the clock)
  --keep DIR      keeps the database and the service's logs in DIR (a new directory)
  --help          this text";

/// The options given on the command line over the full-size defaults.
fn parse(args: impl Iterator<Item = String>) -> Result<ChaosOptions, String> {
    let mut options = ChaosOptions::full_size(chaos::random_seed());
    for (arg, value) in common::bench_args(args, &[])? {
        let number = |what: &str| format!("{arg} takes {what}, not {value:?}");
        match arg.as_str() {
            "--requests" => options.requests = value.parse().map_err(|_| number("a count"))?,
            "--rate" => options.rate_per_s = value.parse().map_err(|_| number("calls per second"))?,
            "--kills" => options.kills = value.parse().map_err(|_| number("a count"))?,
            "--latency-ms" => options.sign_latency_ms = value.parse().map_err(|_| number("milliseconds"))?,
            "--seed" => options.seed = value.parse().map_err(|_| number("a number"))?,
            "--keep" => options.keep_in = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown option {arg}")),
        }
    }
    if options.requests == 0 || !(options.rate_per_s.is_finite() && options.rate_per_s > 0.0) {
        return Err("--requests and --rate must be positive".to_owned());
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match common::bench_options(parse, USAGE) {
        Ok(options) => options,
        Err(exit) => return exit,
    };
    let seed = options.seed;
    println!(
        "chaos run: {} calls at {}/s, {} kills, seed {seed} (--seed {seed} draws the same moments again)",
        options.requests, options.rate_per_s, options.kills
    );
    if let Some(dir) = &options.keep_in {
        println!("database and logs (serve-*-N.log, one per start) in {}", dir.display());
    }
    let report = chaos::run(options).await;
    println!();
    println!("{}", report.table());
    let problems = report.problems();
    if problems.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!("FAILED (seed {seed}):");
    for problem in &problems {
        eprintln!("- {problem}");
    }
    ExitCode::FAILURE
}
