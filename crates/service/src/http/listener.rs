//! How both listeners hold their connections, so that no client can starve
//! them: reading a request has deadlines (headers from its first byte, the
//! body from its headers), a connection waits for its next request for a
//! limited time, open connections are capped (at the cap those idle
//! longest are closed to make room), and a stop ends within a deadline.
//!
//! Only the reading of a request is timed: responses that stream for long
//! are not cut. HTTP/1.1 only.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::config::ConnectionLimits;
use crate::health::Health;
use crate::workers::Shutdown;

/// How often deadlines are checked.
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// The least time between two log lines about the connection cap.
const CAP_LOG_EVERY: Duration = Duration::from_secs(10);
/// At the cap, room is made for this share of it at once (at least one connection): finding
/// the connections to close reads every open one, and a service behind its callers, whose
/// clients open a connection per call, would otherwise do that at every accept.
const ROOM_SHARE: usize = 64;

/// What one connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request (since the connection opened or its last answer).
    Idle,
    /// Bytes of a request came; its headers are not all there yet.
    ReadingHead,
    /// The headers are there; the body is coming. Not yet received: a stop
    /// or the cap may close it.
    ReadingBody,
    /// The request is received and being answered.
    Answering,
}

impl Phase {
    /// The order in which connections are closed to make room: those not
    /// sending a request first, then those sending one, never a received
    /// request unless there is nothing else.
    fn expendable(self) -> u8 {
        match self {
            Phase::Idle | Phase::ReadingHead => 0,
            Phase::ReadingBody => 1,
            Phase::Answering => 2,
        }
    }
}

/// A connection as the watchdog and the cap see it.
struct Connection {
    state: Mutex<(Phase, Instant)>,
    close: Notify,
}

impl Connection {
    fn phase(&self) -> (Phase, Instant) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, phase: Phase) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = (phase, Instant::now());
    }

    /// Bytes arrived: a request begins, if none was in progress.
    fn read_some(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.0 == Phase::Idle {
            *state = (Phase::ReadingHead, Instant::now());
        }
    }
}

/// Keeps its connection out of [`Phase::Idle`] while a request is handled.
struct BusyGuard(Arc<Connection>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.set(Phase::Idle);
    }
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    open: HashMap<u64, Arc<Connection>>,
    /// Of `open`, those closed to make room that have not ended yet: no longer counted
    /// against the cap, nor chosen again.
    closing: HashSet<u64>,
    closed_at_cap: u64,
    logged_at: Option<Instant>,
}

impl Registry {
    /// Whether a new connection needs room made for it.
    fn full(&self, max: usize) -> bool {
        self.open.len() - self.closing.len() >= max
    }

    /// Closes the connection idle longest to make room (see [`Phase::expendable`]), and with
    /// it up to a [`ROOM_SHARE`]th of the cap more of those not sending a request, idle
    /// longest first: one look at every connection for many accepts.
    fn make_room(&mut self, what: &str, max: usize) {
        let mut candidates: Vec<((u8, Instant), u64)> = self
            .open
            .iter()
            .filter(|(id, _)| !self.closing.contains(*id))
            .map(|(id, c)| {
                let (phase, since) = c.phase();
                ((phase.expendable(), since), *id)
            })
            .collect();
        let room = (max / ROOM_SHARE).max(1);
        if room < candidates.len() {
            candidates.select_nth_unstable_by_key(room, |(key, _)| *key);
            candidates.truncate(room);
        }
        candidates.sort_unstable_by_key(|(key, _)| *key);
        // Beyond the first, only connections without a request under way.
        let victims = candidates
            .into_iter()
            .enumerate()
            .take_while(|(n, ((expendable, _), _))| *n == 0 || *expendable == 0);
        for (_, (_, id)) in victims {
            self.open[&id].close.notify_one();
            self.closing.insert(id);
            self.closed_at_cap += 1;
        }
        if self.logged_at.is_none_or(|at| at.elapsed() >= CAP_LOG_EVERY) {
            tracing::warn!(
                listener = what,
                max_connections = max,
                closed = self.closed_at_cap,
                "connection limit reached: closing the connections idle longest to make room"
            );
            self.logged_at = Some(Instant::now());
            self.closed_at_cap = 0;
        }
    }
}

/// Which listener, and how much it holds.
pub(crate) struct Listener {
    /// Its task's name, in logs and in `/healthz`.
    pub name: &'static str,
    /// The connection cap in force (see [`ConnectionLimits::max_connections`]).
    pub max_connections: usize,
    /// How long requests in flight may take to finish once the stop came.
    pub stop_within: Duration,
}

/// Serves `router` on `listener` until `shutdown`, then lets requests in
/// flight finish for at most `stop_within` before closing what is left.
pub(crate) async fn serve(
    Listener { name: what, max_connections, stop_within }: Listener,
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    health: Arc<Health>,
    mut shutdown: Shutdown,
) {
    let registry = Arc::new(Mutex::new(Registry::default()));
    let beat = move || health.beat(what);
    let watchdog = tokio::spawn(watch(registry.clone(), limits.clone(), beat, shutdown.clone()));
    let body_timeout = Duration::from_secs(limits.body_timeout_secs);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.requested() => break,
        };
        // Reap finished connection tasks as we go.
        while connections.try_join_next().is_some() {}
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: make room and go on.
                tracing::warn!(listener = what, error = %e, "cannot accept a connection");
                registry.lock().unwrap_or_else(PoisonError::into_inner).make_room(what, max_connections);
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection =
            Arc::new(Connection { state: Mutex::new((Phase::Idle, Instant::now())), close: Notify::new() });
        let id = {
            let mut registry = registry.lock().unwrap_or_else(PoisonError::into_inner);
            if registry.full(max_connections) {
                registry.make_room(what, max_connections);
            }
            registry.next_id += 1;
            let id = registry.next_id;
            registry.open.insert(id, connection.clone());
            id
        };
        let (router, registry, shutdown) = (router.clone(), registry.clone(), shutdown.clone());
        connections.spawn(async move {
            serve_connection(stream, remote, router, connection, body_timeout, shutdown).await;
            let mut registry = registry.lock().unwrap_or_else(PoisonError::into_inner);
            registry.open.remove(&id);
            registry.closing.remove(&id);
        });
    }
    drop(listener);
    let finished =
        tokio::time::timeout(stop_within, async { while connections.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tracing::warn!(
            listener = what,
            open = connections.len(),
            "stop deadline reached: closing the connections left"
        );
        connections.shutdown().await;
    }
    watchdog.abort();
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    router: Router,
    connection: Arc<Connection>,
    body_timeout: Duration,
    mut shutdown: Shutdown,
) {
    let io = TokioIo::new(Tracked { stream, connection: connection.clone() });
    let tracker = connection.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let (router, tracker) = (router.clone(), tracker.clone());
        async move {
            let received = request.body().is_end_stream();
            tracker.set(if received { Phase::Answering } else { Phase::ReadingBody });
            let busy = BusyGuard(tracker.clone());
            let mut request = request.map(|body| Body::new(DeadlineBody::new(body, body_timeout, tracker)));
            request.extensions_mut().insert(ConnectInfo(remote));
            let response = router.oneshot(request).await?;
            // Not idle until the whole answer is sent: a long stream is not idle.
            Ok::<_, std::convert::Infallible>(
                response.map(|body| Body::new(AnswerBody { inner: body, _busy: busy })),
            )
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Header deadlines are kept by the watchdog, from a request's first byte.
    builder.header_read_timeout(None).keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = connection.close.notified() => return,
        () = shutdown.requested() => {}
    }
    // Stopping: a connection without a received request closes now; one
    // answering finishes (the listener's stop deadline bounds that).
    if connection.phase().0 != Phase::Answering {
        return;
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn => {}
        () = connection.close.notified() => {}
    }
}

/// Closes connections that overstay: idle too long, or too slow with their
/// headers. Its rounds are the listener's heartbeat.
async fn watch(
    registry: Arc<Mutex<Registry>>,
    limits: ConnectionLimits,
    beat: impl Fn(),
    mut shutdown: Shutdown,
) {
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    let header = Duration::from_secs(limits.header_timeout_secs);
    while !shutdown.sleep(WATCH_EVERY).await {
        beat();
        let registry = registry.lock().unwrap_or_else(PoisonError::into_inner);
        for connection in registry.open.values() {
            let overstayed = match connection.phase() {
                (Phase::Idle, since) => since.elapsed() >= idle,
                (Phase::ReadingHead, since) => since.elapsed() >= header,
                // The body's deadline is kept by the body itself.
                (Phase::ReadingBody | Phase::Answering, _) => false,
            };
            if overstayed {
                connection.close.notify_one();
            }
        }
    }
}

/// The socket, noting when bytes arrive.
struct Tracked {
    stream: TcpStream,
    connection: Arc<Connection>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.connection.read_some();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The body of a request, failing once its deadline passes: a client
/// sending slowly gets an error instead of holding the handler. Its end
/// marks the request received.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    connection: Arc<Connection>,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration, connection: Arc<Connection>) -> DeadlineBody {
        DeadlineBody { inner, deadline: Box::pin(tokio::time::sleep(timeout)), timeout, connection }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
struct BodyTooSlow(Duration);

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if frame.is_none() || this.inner.is_end_stream() {
                this.connection.set(Phase::Answering);
            }
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTooSlow(this.timeout).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer's body, keeping its connection marked busy until it is sent.
struct AnswerBody {
    inner: Body,
    _busy: BusyGuard,
}

impl http_body::Body for AnswerBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry of connections in these phases, each one a second older than the next.
    fn registry(phases: &[Phase]) -> Registry {
        let now = Instant::now();
        let mut registry = Registry::default();
        for (n, phase) in phases.iter().enumerate() {
            let since = now - Duration::from_secs((phases.len() - n) as u64);
            let connection = Connection { state: Mutex::new((*phase, since)), close: Notify::new() };
            registry.open.insert(n as u64, Arc::new(connection));
        }
        registry
    }

    /// The connections closed to make room, by their place in [`registry`]'s phases.
    fn closing(registry: &Registry) -> Vec<u64> {
        let mut ids: Vec<u64> = registry.closing.iter().copied().collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn room_is_made_for_a_share_of_the_cap_from_the_idle_longest() {
        // Two answering connections, the oldest, then 130 idle ones.
        let mut phases = vec![Phase::Answering; 2];
        phases.extend([Phase::Idle; 130]);
        let mut registry = registry(&phases);
        assert!(registry.full(128));
        registry.make_room("intake", 128);
        assert_eq!(closing(&registry), [2, 3], "128 / 64: the two idle longest");
        assert_eq!(registry.closing.len(), 2);
        // Those closing count no more, and are not chosen again.
        registry.make_room("intake", 128);
        assert_eq!(closing(&registry), [2, 3, 4, 5]);
        assert!(registry.full(128), "132 open, 4 of them closing");
        registry.make_room("intake", 128);
        assert!(!registry.full(128), "132 open, 6 of them closing");
    }

    #[test]
    fn a_request_under_way_is_closed_only_when_nothing_else_is_left_and_only_one() {
        let mut registry = registry(&[Phase::Answering, Phase::ReadingBody, Phase::Answering]);
        registry.make_room("intake", 128);
        assert_eq!(closing(&registry), [1], "the body being read before answers");
        registry.make_room("intake", 128);
        assert_eq!(closing(&registry), [0, 1], "then the oldest answer, one at a time");
    }
}
