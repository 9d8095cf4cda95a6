//! `customs179 serve`: the long-running service.

use std::path::PathBuf;

use customs179_service::Service;
use customs179_service::config::{Config, LogFormat, LogTo};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use super::Failure;

/// Runs the service: the intake endpoint customs calls, the payments and admin API, and the workers.
///
/// Every CUSTOMS179_<SECTION>_<KEY> environment variable overrides its key of the
/// configuration file. Stops gracefully on SIGTERM or Ctrl-C (exit 0; on Windows also
/// Ctrl-Break and the console closing): no new calls are
/// accepted, and every request being committed is committed first, within [shutdown]
/// timeout_secs. A bad configuration, or a database another serve is using, exits 2; a task
/// of the service that dies stops it with exit 1, for the supervisor to restart it.
#[derive(clap::Args)]
pub struct Args {
    /// The TOML configuration file (see config/customs179.example.toml).
    #[arg(long)]
    config: PathBuf,
}

pub fn run(args: Args) -> Result<(), Failure> {
    let config = super::load_config(&args.config)?;
    init_logging(config.log.format, &config.log.level, &config.log.to)?;
    super::block_on(async {
        // Listen for signals before any port is bound, so that a stop right
        // after the start is graceful too.
        let stop = stop_signal()?;
        serve(config, stop, |_| {}).await
    })
}

/// Where a running service is, for the Windows service control manager.
pub(crate) enum Phase {
    /// Started: every port bound, every worker running.
    Running,
    /// Asked to stop, or broken: finishing what is being committed.
    Stopping,
}

/// Runs the service until `stop` resolves or one of its tasks dies, telling `phase` how far it is.
pub(crate) async fn serve(
    config: Config,
    stop: impl std::future::Future<Output = ()>,
    mut phase: impl FnMut(Phase),
) -> Result<(), Failure> {
    let service = Service::start(config).await.map_err(|e| Failure::BadInput(e.to_string()))?;
    phase(Phase::Running);
    // A task that died leaves the service broken: stop, and exit non-zero
    // so that the supervisor (systemd, the service control manager) starts it again.
    let failed = tokio::select! {
        () = stop => None,
        reason = service.failed() => Some(reason),
    };
    phase(Phase::Stopping);
    tracing::info!("stopping: finishing what is being committed");
    let stopped = service.shutdown().await.map_err(|e| Failure::Check(e.to_string()));
    match failed {
        Some(reason) => Err(Failure::Check(format!("customs179 stopped because {reason}"))),
        None => stopped,
    }
}

/// Logs to stderr or daily files, filtered by `level` (a tracing filter) and,
/// whatever it says, with other crates' events capped at info: below that they
/// print what they carry, and the WebSocket crate's frames carry the card's PIN.
pub(crate) fn init_logging(format: LogFormat, level: &str, to: &LogTo) -> Result<(), Failure> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = EnvFilter::try_new(level)
        .map_err(|e| Failure::BadInput(format!("log.level {level:?} is not a tracing filter: {e}")))?;
    let ours_or_info = tracing_subscriber::filter::filter_fn(|meta| {
        meta.target().starts_with("customs179") || *meta.level() <= tracing::Level::INFO
    });
    let layer = match to {
        LogTo::Stderr => tracing_subscriber::fmt::layer()
            .with_writer(BoxMakeWriter::new(std::io::stderr))
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        LogTo::Files { dir, max_files } => {
            // The appender would make it at the first line, after complaining on stderr.
            std::fs::create_dir_all(dir)
                .map_err(|e| Failure::BadInput(format!("log.dir {}: {e}", dir.display())))?;
            let files = tracing_appender::rolling::RollingFileAppender::builder()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix("customs179")
                .filename_suffix("log")
                .max_log_files(*max_files)
                .build(dir)
                .map_err(|e| Failure::BadInput(format!("log.dir {}: {e}", dir.display())))?;
            tracing_subscriber::fmt::layer().with_writer(BoxMakeWriter::new(files)).with_ansi(false)
        }
    };
    let layer = match format {
        LogFormat::Json => layer.json().boxed(),
        LogFormat::Text => layer.boxed(),
    };
    // Global filters, not per-layer ones: a per-layer filter keeps, per thread, what it
    // decided between a callsite's `enabled` and its event, and a library that only asks
    // (sqlx's query logger, `tracing::enabled!`, on the PostgreSQL driver's thread: ours)
    // left that state behind, so the next event of the thread was dropped, warnings and
    // errors included ("SIGNING PAUSED at start" on PostgreSQL).
    tracing_subscriber::registry().with(filter).with(ours_or_info).with(layer).init();
    Ok(())
}

/// SIGTERM and SIGINT (Ctrl-C) on Unix; on Windows Ctrl-C, Ctrl-Break, the
/// console window closing and the system shutting down. The handlers are
/// installed when this is called; the future resolves on the first signal.
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
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close, ctrl_shutdown};
        let listen = |e: std::io::Error| Failure::BadInput(format!("cannot listen for Ctrl-C: {e}"));
        let (mut c, mut brk) = (ctrl_c().map_err(listen)?, ctrl_break().map_err(listen)?);
        let (mut close, mut shutdown) = (ctrl_close().map_err(listen)?, ctrl_shutdown().map_err(listen)?);
        Ok(async move {
            tokio::select! {
                _ = c.recv() => {}
                _ = brk.recv() => {}
                _ = close.recv() => {}
                _ = shutdown.recv() => {}
            }
        })
    }
}
