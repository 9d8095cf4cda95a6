//! The running and stopping both simulators share, so that they start, stop, answer Ctrl-C
//! and survive accept failures the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The background tasks of a started simulator and the signal that ends them. Dropping it
/// sends the signal too, so a simulator dropped without `stop` does not serve on.
pub(crate) struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    /// The receiver is for the tasks: each ends itself when it sees the signal.
    pub(crate) fn new() -> (Background, watch::Receiver<bool>) {
        let (stop, stop_rx) = watch::channel(false);
        (Background { stop, tasks: Vec::new() }, stop_rx)
    }

    pub(crate) fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Sends the signal and waits for every task, so the ports are free when it returns.
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    // A dropped sender means the simulator is gone: stop as well.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Binds `addr` and reads back the address bound, which differs from `addr` for port 0.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Accepts until the stop signal, then waits for the connections, which watch the same
/// signal and end themselves.
pub(crate) async fn accept_loop<F, C>(listener: TcpListener, mut stop: watch::Receiver<bool>, mut serve: F)
where
    F: FnMut(TcpStream, SocketAddr, watch::Receiver<bool>) -> C,
    C: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve(stream, peer, stop.clone()));
                }
                Err(e) => {
                    // Typically out of file descriptors: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    while connections.join_next().await.is_some() {}
}

/// Starts a simulator, serves until `until` completes, then stops it cleanly. `what` names
/// the simulator in the log.
pub(crate) async fn run_until<S, E, Stopped>(
    started: impl Future<Output = Result<S, E>>,
    until: impl Future<Output = ()>,
    what: &str,
    stop: impl FnOnce(S) -> Stopped,
) -> Result<(), E>
where
    Stopped: Future<Output = ()>,
{
    let sim = started.await?;
    until.await;
    tracing::info!("stopping the {what}");
    stop(sim).await;
    Ok(())
}

/// Runs `served` to its end on a runtime of its own, for synchronous callers such as the
/// command line. Must not be called from inside an async runtime.
pub(crate) fn block_on<T, E>(
    served: impl Future<Output = Result<T, E>>,
    runtime_error: impl FnOnce(std::io::Error) -> E,
) -> Result<T, E> {
    let runtime = tokio::runtime::Runtime::new().map_err(runtime_error)?;
    runtime.block_on(served)
}

/// Ctrl-C anywhere; SIGTERM too where there are signals.
pub(crate) async fn stop_signal() {
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
