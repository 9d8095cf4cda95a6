//! Starting and stopping the whole service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use customs179_alerts::channel::Channel;
use customs179_eport::SignerClient;
use customs179_store::{Store, StoreError};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::config::Config;
use crate::context::{ApiContext, now_ms};
use crate::customs::CustomsClient;
use crate::health::{Health, SLACK};
use crate::http::{admin, intake, listener};
use crate::workers::{self, Shutdown};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the database {path}: {source}")]
    Store { path: String, source: StoreError },
    #[error("{0}")]
    InUse(StoreError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("cannot set up the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("cannot set up the customs client: {0}")]
    Customs(String),
    #[error("cannot set up the alert channel {name:?}: {source}")]
    AlertChannel { name: String, source: customs179_alerts::channel::ChannelError },
}

/// The running service: both listeners and every worker.
pub struct Service {
    intake_addr: SocketAddr,
    admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    servers: Vec<Task>,
    intake_writer: Task,
    workers: Vec<Task>,
    store: Store,
    instance: Arc<workers::instance::Instance>,
    pause_lost: Arc<std::sync::atomic::AtomicBool>,
    health: Arc<Health>,
    stop_within: Duration,
}

/// What a stop could not finish.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error(
        "a signing pause could not be stored in the database before the stop; it is kept in a file beside \
         the database and applied at the next start"
    )]
    PauseNotStored,
}

impl Service {
    /// Opens the store, binds both listeners and starts the workers.
    pub async fn start(config: Config) -> Result<Service, StartError> {
        // reqwest is built without a default crypto provider; ring is ours.
        // Installing twice (tests start several services) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let location = config.store.location();
        let path = location.describe();
        let (store, released) =
            Store::open_for_service(&location, now_ms()).await.map_err(|source| match source {
                StoreError::InUse(_) => StartError::InUse(source),
                source => StartError::Store { path: path.clone(), source },
            })?;
        if released > 0 {
            tracing::warn!(released, "requests claimed by a process that stopped were released");
        }
        // Holding the SQLite file's lock, this process knows every "PIN in
        // flight" mark in it was left by a process that is gone. On
        // PostgreSQL the marks of an instance are its own, turned into pauses
        // when it is found dead or its card taken over.
        if let customs179_store::Location::Sqlite(_) = location {
            let card_names: Vec<&str> = config.signers.iter().map(|s| s.name.as_str()).collect();
            let marks = store
                .pause_for_pins_in_flight(&card_names, now_ms())
                .await
                .map_err(|source| StartError::Store { path: path.clone(), source })?;
            paused_at_start(&marks);
        }
        let instance = Arc::new(workers::instance::Instance::new());
        let store = store.as_instance(&instance.id);
        // Before a port is bound, as on SQLite at the open: by the time the
        // service answers anyone, what a crashed predecessor on this host left
        // (its claims, its unproven PINs, now pauses) is dealt with.
        let predecessors = instance
            .retire_predecessors(&store)
            .await
            .map_err(|source| StartError::Store { path: path.clone(), source })?;
        for earlier in predecessors {
            if earlier.released > 0 {
                tracing::warn!(
                    released = earlier.released,
                    instance = earlier.name,
                    "requests claimed by a process that stopped were released"
                );
            }
            paused_at_start(&earlier.marks);
        }
        let live = Arc::new(crate::live::Live::new(
            config.signers.iter().map(|s| (s.name.as_str(), s.url.as_str())),
        ));
        let (stop, shutdown) = Shutdown::new();
        let ctx = ApiContext {
            config: Arc::new(config),
            store: store.clone(),
            prepare: Arc::default(),
            sign: Arc::new(Notify::new()),
            upload: Arc::new(Notify::new()),
            metrics: Arc::default(),
            pause_lost: Arc::default(),
            health: Arc::default(),
            live,
            instance: instance.clone(),
            stopping: shutdown.clone(),
        };
        // Everything that can fail is done before a port is bound: a start
        // that fails must not have answered anyone.
        let customs = CustomsClient::new(
            ctx.config.customs.upload_url(),
            Duration::from_millis(ctx.config.customs.timeout_ms),
            ctx.config.customs.ca_file.as_deref(),
        )
        .map_err(|e| StartError::Customs(e.to_string()))?;
        let puller = match ctx.config.payments.pull_url.clone() {
            Some(url) => Some((url, reqwest::Client::builder().build().map_err(StartError::Client)?)),
            None => None,
        };
        let senders = ctx
            .config
            .alerts
            .channels
            .iter()
            .map(|config| {
                let channel = Channel::new(config.clone(), workers::alerts::SEND_TIMEOUT)
                    .map_err(|source| StartError::AlertChannel { name: config.name.clone(), source })?;
                Ok(workers::alerts::Sender { channel, wake: Arc::new(Notify::new()) })
            })
            .collect::<Result<Vec<_>, StartError>>()?;
        let cards: Vec<Arc<workers::sign::Card>> = ctx
            .config
            .signers
            .iter()
            .map(|config| {
                let client = SignerClient::new(config.url.clone(), Duration::from_millis(config.timeout_ms));
                // Task names live as long as the process: the cards are fixed at start.
                let task: &'static str = Box::leak(format!("signer {}", config.name).into_boxed_str());
                Arc::new(workers::sign::Card::new(config.clone(), client, task))
            })
            .collect();
        let open_files = raise_open_file_limit();
        let (intake_cap, admin_cap) = connection_caps(&ctx.config, open_files);
        let intake_listener = bind("intake", ctx.config.intake.listen).await?;
        let admin_listener = bind("admin", ctx.config.admin.listen).await?;
        let intake_addr = local_addr("intake", &intake_listener)?;
        let admin_addr = local_addr("admin", &admin_listener)?;
        let info = instance.info(&intake_addr.to_string(), &admin_addr.to_string());
        store
            .register_instance(&info, now_ms())
            .await
            .map_err(|source| StartError::Store { path: path.clone(), source })?;
        instance.beaten(now_ms());
        let health = ctx.health.clone();
        let (writer, writing) = intake::IntakeWriter::start(
            store.clone(),
            ctx.prepare.clone(),
            health.clone(),
            ctx.metrics.clone(),
        );
        let intake_writer = supervise(&health, "intake writer", SLACK, writing);
        // Requests left waiting by an earlier run are looked at once.
        ctx.prepare.sweep();
        // Bulk replays a stop or a crash cut short go on.
        crate::http::replays::adopt_orphans(&ctx).await;
        let stop_within = Duration::from_secs(ctx.config.shutdown_timeout_secs);
        let servers = vec![
            supervise(
                &health,
                "intake listener",
                SLACK,
                listener::serve(
                    listener::Listener { name: "intake listener", max_connections: intake_cap, stop_within },
                    intake_listener,
                    intake::router(ctx.clone(), writer),
                    ctx.config.intake.connections.clone(),
                    health.clone(),
                    shutdown.clone(),
                ),
            ),
            supervise(
                &health,
                "admin listener",
                SLACK,
                listener::serve(
                    listener::Listener { name: "admin listener", max_connections: admin_cap, stop_within },
                    admin_listener,
                    admin::router(ctx.clone()),
                    ctx.config.admin.connections.clone(),
                    health.clone(),
                    shutdown.clone(),
                ),
            ),
        ];
        let upload_step = Duration::from_millis(ctx.config.customs.timeout_ms);
        let mut workers = vec![
            supervise(&health, "instance", SLACK, workers::instance::run(ctx.clone(), shutdown.clone())),
            supervise(&health, "preparer", SLACK, workers::prepare::run(ctx.clone(), shutdown.clone())),
            supervise(&health, "checkpoints", SLACK, workers::checkpoints(ctx.clone(), shutdown.clone())),
            supervise(
                &health,
                "change watcher",
                SLACK,
                workers::watch_changes(ctx.clone(), shutdown.clone()),
            ),
            supervise(
                &health,
                "uploader",
                SLACK + upload_step,
                workers::upload::run(ctx.clone(), customs, shutdown.clone()),
            ),
        ];
        for card in cards {
            let signing_step =
                Duration::from_millis(card.config.timeout_ms.saturating_mul(2)) + SIGNER_BACKOFF;
            let span = tracing::info_span!("card", card = card.config.name);
            let sign = workers::sign::run(ctx.clone(), card.clone(), shutdown.clone()).instrument(span);
            workers.push(supervise(&health, card.task, SLACK + signing_step, sign));
        }
        let wakes = senders.iter().map(|s| s.wake.clone()).collect();
        let watch = workers::alerts::watch(ctx.clone(), wakes, shutdown.clone());
        workers.push(supervise(&health, "alert watcher", SLACK, watch));
        for sender in senders {
            // Task names live as long as the process: the channels are fixed at start.
            let task: &'static str =
                Box::leak(format!("alerts to {}", sender.channel.config().name).into_boxed_str());
            let send = workers::alerts::send(ctx.clone(), sender, task, shutdown.clone());
            workers.push(supervise(&health, task, SLACK + workers::alerts::SEND_TIMEOUT, send));
        }
        if let Some((pull_url, client)) = puller {
            let pull = workers::pull::run(ctx.clone(), pull_url, client, shutdown.clone());
            workers.push(supervise(&health, "puller", SLACK + workers::pull::TIMEOUT, pull));
        }
        tracing::info!(
            intake = %intake_addr,
            path = ctx.config.intake.path,
            admin = %admin_addr,
            cards = ctx.config.signers.len(),
            store = path,
            instance = instance.name,
            customs = ctx.config.customs.endpoint_description(),
            pull = ctx.config.payments.pull_url.is_some(),
            "customs179 started"
        );
        Ok(Service {
            intake_addr,
            admin_addr,
            stop,
            servers,
            intake_writer,
            workers,
            store,
            instance,
            pause_lost: ctx.pause_lost,
            health,
            stop_within,
        })
    }

    /// Where customs' calls are taken (the bound port when configured as 0).
    pub fn intake_addr(&self) -> SocketAddr {
        self.intake_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Resolves with the reason once a task of the service has died: the
    /// service is broken and should be stopped (and the process restarted).
    pub async fn failed(&self) -> String {
        let mut failure = self.health.failure();
        match failure.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            // The sender lives as long as the service: never reached.
            Err(_) => std::future::pending().await,
        }
    }

    /// Stops accepting, lets requests in flight finish and their commits
    /// land, stops the workers and closes the database, all within
    /// `[shutdown] timeout_secs` (and a little for the database): what is
    /// still running then is dropped, to be taken up by the next start.
    pub async fn shutdown(self) -> Result<(), StopError> {
        self.health.stopping();
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + self.stop_within;
        // The servers held the only senders to the intake writer: it ends
        // once its last batch is committed.
        let tasks = self.servers.into_iter().chain([self.intake_writer]).chain(self.workers);
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, task.wait()).await.is_err() {
                tracing::warn!(task = task.name, "stop deadline reached: the task is dropped");
                task.abort();
            }
        }
        // What it still holds goes to the other instances at once.
        if let Err(e) = self.store.instance_stopped(&self.instance.id, now_ms()).await {
            tracing::warn!(error = %e, "cannot record the stop; the other instances take over in a few seconds");
        }
        self.store.close().await;
        tracing::info!("customs179 stopped");
        if self.pause_lost.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StopError::PauseNotStored);
        }
        Ok(())
    }
}

/// Tells of the pauses that the "PIN in flight" marks of dead processes became.
fn paused_at_start(marks: &[customs179_store::PinInFlight]) {
    if let Some(mark) = marks.first() {
        tracing::error!(
            reason = mark.pause_reason(),
            "SIGNING PAUSED at start: a process stopped while a card may have been checking an unproven PIN"
        );
    }
}

/// A task of the service, watched: its end before the stop is a failure.
struct Task {
    name: &'static str,
    monitor: Option<JoinHandle<()>>,
    abort: tokio::task::AbortHandle,
}

impl Task {
    async fn wait(&mut self) {
        if let Some(monitor) = self.monitor.as_mut() {
            let _ = monitor.await;
            self.monitor = None;
        }
    }

    fn abort(&self) {
        self.abort.abort();
    }
}

/// Spawns `work` as a task named `name` that beats at least every
/// `max_silence`, and watches for its end (a return or a panic).
fn supervise(
    health: &Arc<Health>,
    name: &'static str,
    max_silence: Duration,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) -> Task {
    health.register(name, max_silence);
    let inner = tokio::spawn(work);
    let abort = inner.abort_handle();
    let health = health.clone();
    let monitor = tokio::spawn(async move {
        let how = match inner.await {
            Ok(()) => "it returned".to_owned(),
            Err(e) if e.is_panic() => "it panicked".to_owned(),
            Err(_) => "it was cancelled".to_owned(),
        };
        health.ended(name, how);
    });
    Task { name, monitor: Some(monitor), abort }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { what, addr, source })
}

fn local_addr(what: &'static str, listener: &TcpListener) -> Result<SocketAddr, StartError> {
    let fallback = SocketAddr::from(([0, 0, 0, 0], 0));
    listener.local_addr().map_err(|source| StartError::Bind { what, addr: fallback, source })
}

/// Raises the soft limit of open files to the hard limit where the OS
/// allows (each connection is a file); returns the limit in force, if known.
fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(limit) => Some(limit),
            Err(e) => {
                tracing::warn!(error = %e, "cannot raise the open-file limit");
                rlimit::Resource::NOFILE.get_soft().ok()
            }
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The longest the signer's client waits between reconnections.
const SIGNER_BACKOFF: Duration = Duration::from_secs(10);

/// Files kept for everything but connections: the database, the card, customs, logs.
const FILES_FOR_THE_REST: u64 = 128;

/// Each listener's connection cap, lowered to fit the open-file limit (the
/// intake gets four fifths of what there is): a cap the process cannot reach
/// would let accept() fail instead of closing the connection idle longest.
fn connection_caps(config: &Config, open_files: Option<u64>) -> (usize, usize) {
    let (intake, admin) =
        (config.intake.connections.max_connections, config.admin.connections.max_connections);
    let Some(room) = open_files.map(|limit| limit.saturating_sub(FILES_FOR_THE_REST).max(10)) else {
        return (usize::try_from(intake).unwrap_or(usize::MAX), usize::try_from(admin).unwrap_or(usize::MAX));
    };
    let (fit_intake, fit_admin) = if intake.saturating_add(admin) <= room {
        (intake, admin)
    } else {
        let fit_intake = intake.min(room * 4 / 5).max(1);
        let fit_admin = admin.min(room - fit_intake).max(1);
        tracing::warn!(
            open_files = open_files.unwrap_or(0),
            intake = fit_intake,
            admin = fit_admin,
            "max_connections lowered to fit the open-file limit"
        );
        (fit_intake, fit_admin)
    };
    (usize::try_from(fit_intake).unwrap_or(usize::MAX), usize::try_from(fit_admin).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_dies_before_the_stop_fails_the_service() {
        let health = Arc::new(Health::default());
        let mut failure = health.failure();
        let quiet = supervise(&health, "quiet", SLACK, std::future::pending());
        let mut broken = supervise(&health, "broken", SLACK, async { panic!("a bug") });
        broken.wait().await;
        let reason = failure.wait_for(Option::is_some).await.unwrap().clone().unwrap();
        assert_eq!(reason, "the task broken ended: it panicked");
        let states: Vec<(&str, &str)> = health.report().iter().map(|t| (t.name, t.state)).collect();
        assert_eq!(states, [("broken", "dead"), ("quiet", "ok")]);

        quiet.abort();

        // At the stop, tasks ending (or dropped at the deadline) are no failure.
        let health = Arc::new(Health::default());
        let (go, gone) = tokio::sync::oneshot::channel::<()>();
        let mut returning = supervise(&health, "returning", SLACK, async {
            let _ = gone.await;
        });
        let mut dropped = supervise(&health, "dropped", SLACK, std::future::pending());
        health.stopping();
        let _ = go.send(());
        returning.wait().await;
        dropped.abort();
        dropped.wait().await;
        assert!(health.failure().borrow().is_none());
        assert!(health.report().iter().all(|t| t.state == "ok"), "{:?}", health.report());
    }
}
