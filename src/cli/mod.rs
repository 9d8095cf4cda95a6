//! The command line: one module per subcommand, each returning a [`Failure`]
//! that decides the exit code (0 ok, 1 a check failed, 2 bad input or config).

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod alert_test;
mod cert;
mod check;
mod demo;
mod doctor;
mod presign;
mod replay;
mod resume;
mod serve;
mod service;
mod sign;
mod sim;
mod status;
mod verify;

#[derive(Parser)]
#[command(
    name = "customs179",
    version,
    about = "Answers customs 179 payment-data requests: signs with the customs IC card and uploads, byte-exact."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Demo(demo::Args),
    AlertTest(alert_test::Args),
    Cert(cert::Args),
    Check(check::Args),
    Doctor(doctor::Args),
    Serve(serve::Args),
    Service(service::Args),
    Status(status::Args),
    Sign(sign::Args),
    Resume(resume::Args),
    Replay(replay::Args),
    Presign(presign::Args),
    Verify(verify::Args),
    Sim(sim::Args),
}

/// Why a command did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// A check ran and said no (exit 1).
    Check(String),
    /// The input or configuration could not be used (exit 2).
    BadInput(String),
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::AlertTest(args) => alert_test::run(args),
        Command::Cert(args) => cert::run(args),
        Command::Check(args) => check::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Service(args) => service::run(args),
        Command::Status(args) => status::run(args),
        Command::Sign(args) => sign::run(args),
        Command::Resume(args) => resume::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Presign(args) => presign::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Sim(args) => sim::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("{}", failure.message());
            ExitCode::from(failure.exit_code())
        }
    }
}

impl Failure {
    /// 1 for a failed check, 2 for bad input or configuration.
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Check(_) => 1,
            Failure::BadInput(_) => 2,
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::Check(message) | Failure::BadInput(message) => message,
        }
    }
}

/// Reads a whole input named on the command line; `-` (or nothing) is stdin.
fn read_input(path: Option<&Path>) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    match path {
        None => std::io::stdin().read_to_end(&mut bytes).map(drop),
        Some(p) if p == Path::new("-") => std::io::stdin().read_to_end(&mut bytes).map(drop),
        Some(p) => std::fs::read(p).map(|read| bytes = read),
    }
    .map_err(|e| Failure::BadInput(format!("cannot read {}: {e}", display_input(path))))?;
    Ok(bytes)
}

/// A whole text input, without the byte order mark Windows editors may begin it with.
fn read_text(path: Option<&Path>) -> Result<String, Failure> {
    let text = String::from_utf8(read_input(path)?)
        .map_err(|_| Failure::BadInput(format!("{} is not UTF-8 text", display_input(path))))?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    })
}

fn display_input(path: Option<&Path>) -> String {
    match path {
        Some(p) if p != Path::new("-") => p.display().to_string(),
        _ => "standard input".to_owned(),
    }
}

/// Runs a command's async part on a fresh runtime.
fn block_on<T>(work: impl std::future::Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    tokio::runtime::Runtime::new()
        .map_err(|e| Failure::BadInput(format!("cannot start the async runtime: {e}")))?
        .block_on(work)
}

/// Who acts when a command changes the queue, for the audit log: the
/// command line, and the OS user when known.
fn cli_actor() -> String {
    match std::env::var("USER").or_else(|_| std::env::var("USERNAME")) {
        Ok(user) if !user.is_empty() => format!("command line ({user})"),
        _ => "command line".to_owned(),
    }
}

/// The cards a command works on: the one `--card` names, or every card.
fn chosen_cards<'a>(
    config: &'a customs179_service::config::Config,
    card: Option<&str>,
) -> Result<Vec<&'a customs179_service::config::SignerConfig>, Failure> {
    let Some(card) = card else { return Ok(config.signers.iter().collect()) };
    match config.signers.iter().find(|s| s.name == card) {
        Some(signer) => Ok(vec![signer]),
        None => Err(Failure::BadInput(format!(
            "no card {card:?} in the configuration; cards: {}",
            card_names(config)
        ))),
    }
}

/// The one card a command signs with: the one `--card` names, or the only one.
fn one_card<'a>(
    config: &'a customs179_service::config::Config,
    card: Option<&str>,
) -> Result<&'a customs179_service::config::SignerConfig, Failure> {
    match (card, config.signers.as_slice()) {
        (None, [only]) => Ok(only),
        (None, _) => Err(Failure::BadInput(format!(
            "several cards are configured: choose one with --card ({})",
            card_names(config)
        ))),
        (Some(card), _) => Ok(chosen_cards(config, Some(card))?.remove(0)),
    }
}

fn card_names(config: &customs179_service::config::Config) -> String {
    config.signers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// Loads a configuration with its environment overrides; every problem is bad input.
fn load_config(path: &Path) -> Result<customs179_service::config::Config, Failure> {
    customs179_service::config::Config::load(path)
        .map_err(|errors| Failure::BadInput(format!("invalid configuration {}:\n{errors}", path.display())))
}

/// Loads a configuration (exit 2 when it is bad) and opens its database.
async fn open_store(
    path: &Path,
) -> Result<(customs179_service::config::Config, customs179_store::Store), Failure> {
    let config = load_config(path)?;
    let location = config.store.location();
    let store = customs179_store::Store::open_at(&location)
        .await
        .map_err(|e| Failure::Check(format!("cannot open the database {}: {e}", location.describe())))?;
    Ok((config, store))
}
