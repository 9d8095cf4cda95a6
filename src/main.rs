//! `customs179`: answers customs 179 payment-data requests, signs the data
//! with the customs IC card and uploads it.

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
