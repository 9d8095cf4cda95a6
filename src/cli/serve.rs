//! `customs179 serve`: the long-running service.

use std::path::PathBuf;

use customs179_service::Service;
use customs179_service::config::LogFormat;
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
    let config = super::load_config(&args.config)?;
    init_logging(config.log.format, &config.log.level)?;
    super::block_on(async {
        // Listen for signals before any port is bound, so that a stop right
        // after the start is graceful too.
        let stop = stop_signal()?;
        let service = Service::start(config).await.map_err(|e| Failure::BadInput(e.to_string()))?;
        stop.await;
        tracing::info!("stopping: finishing what is being committed");
        service.shutdown().await.map_err(|e| Failure::Check(e.to_string()))
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

/// SIGTERM and SIGINT (Ctrl-C) where there are signals, Ctrl-C elsewhere. On
/// Unix the handlers are installed when this is called; the future resolves
/// on the first signal.
pub(crate) fn stop_signal() -> Result<impl std::future::Future<Output = ()>, Failure> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind| {
            signal(kind).map_err(|e| Failure::BadInput(format!("cannot listen for signals: {e}")))
        };
        let (mut term, mut int) = (listen(SignalKind::terminate())?, listen(SignalKind::interrupt())?);
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
