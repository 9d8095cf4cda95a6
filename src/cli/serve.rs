//! `customs179 serve`: the long-running service.

use std::path::PathBuf;

use customs179_service::Service;
use customs179_service::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

use super::Failure;

/// Runs the service: the intake endpoint customs calls, the payments and admin API, and the workers.
///
/// Every CUSTOMS179_<SECTION>_<KEY> environment variable overrides its key of the
/// configuration file. Stops gracefully on SIGTERM or Ctrl-C (exit 0): no new calls are
/// accepted, and every request being committed is committed first. A bad configuration
/// exits 2.
#[derive(clap::Args)]
pub struct Args {
    /// The TOML configuration file (see config/customs179.example.toml).
    #[arg(long)]
    config: PathBuf,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let config = Config::load(&args.config).map_err(|errors| {
        Failure::BadInput(format!("invalid configuration {}:\n{errors}", args.config.display()))
    })?;
    init_logging(config.log.format, &config.log.level)?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| Failure::BadInput(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let service = Service::start(config).await.map_err(|e| Failure::BadInput(e.to_string()))?;
        stop_signal().await;
        tracing::info!("stopping: finishing what is being committed");
        service.shutdown().await;
        Ok(())
    })
}

pub(crate) fn init_logging(format: LogFormat, level: &str) -> Result<(), Failure> {
    let filter = EnvFilter::try_new(level)
        .map_err(|e| Failure::BadInput(format!("log.level {level:?} is not a tracing filter: {e}")))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// Ctrl-C anywhere; SIGTERM too where there are signals.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
