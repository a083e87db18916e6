//! The accept loop: the router on a TCP listener, with timeouts and a connection limit.
//!
//! `axum::serve` has neither, so a client that opens connections and sends nothing, or sends a
//! header a byte a minute, holds a task and a file descriptor as long as it likes. Here every
//! connection is bounded by [`ServerLimits`]:
//!
//! - **`max_connections`**: a permit is taken before `accept`, so a connection over the limit
//!   is not refused but waits in the kernel's backlog until one closes.
//! - **`idle_timeout`**: a connection with no request in flight that neither reads nor writes
//!   for this long is closed: a client that connects and sends nothing, a keep-alive connection
//!   between requests, a client that stops reading its response.
//! - **`header_timeout`**: once the first byte of a request arrives, its whole head (request
//!   line and headers) must follow within this long, or the connection is closed.
//! - **`body_timeout`**: the whole request body must arrive within this long of its head. A
//!   handler reading it later gets a [`BodyTimeout`] error (the webhook answers 408).
//!
//! hyper's own `header_read_timeout` is off: its timer also runs while a keep-alive connection
//! waits for its next request, so it cannot tell an idle client from a slow one. Only HTTP/1.1 is
//! served: Alertmanager, Prometheus, curl and browsers speak it, and there is no h2c to bound.
//!
//! Data model: one task per connection, in a `JoinSet` that [`serve`] owns, so dropping the
//! server future closes every connection. Each connection has an [`Activity`] record written by
//! its I/O wrapper ([`Watched`]) and its service (request start and end), and read by a
//! watchdog that closes the connection at its deadline.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::config::ServerConfig;

/// How long each part of a connection may take, and how many are served at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl From<&ServerConfig> for ServerLimits {
    fn from(c: &ServerConfig) -> Self {
        ServerLimits {
            header_timeout: c.header_timeout,
            body_timeout: c.body_timeout,
            idle_timeout: c.idle_timeout,
            max_connections: c.max_connections,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets each
/// connection finish its request in flight, and returns. Accept errors never end it: one
/// about a single connection is skipped, any other (out of file descriptors) is retried after
/// a second.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (closing, closing_rx) = watch::channel(());
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let next = async {
            let permit = Arc::clone(&permits).acquire_owned().await;
            (permit, listener.accept().await)
        };
        let (permit, accepted) = tokio::select! {
            next = next => next,
            Some(ended) = connections.join_next() => {
                if let Err(e) = ended {
                    warn!(error = %e, "an HTTP connection task failed");
                }
                continue;
            }
            () = &mut shutdown => break,
        };
        // The semaphore is never closed.
        let Ok(permit) = permit else { break };
        match accepted {
            Ok((stream, peer)) => {
                connections.spawn(connection(
                    stream,
                    peer,
                    router.clone(),
                    limits,
                    closing_rx.clone(),
                    permit,
                ));
            }
            Err(e) if is_connection_error(&e) => debug!(error = %e, "accept: connection lost"),
            Err(e) => {
                warn!(error = %e, "accept failed; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    drop(listener);
    drop(closing_rx);
    let _ = closing.send(());
    while connections.join_next().await.is_some() {}
}

/// Errors about one connection, which say nothing about the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// One connection: hyper serves it while the watchdog waits for its deadline.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ServerLimits,
    mut closing: watch::Receiver<()>,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let service = {
        let activity = Arc::clone(&activity);
        tower::service_fn(move |request: Request<Incoming>| {
            let in_flight = activity.request_started();
            let request =
                request.map(|body| Body::new(DeadlineBody::new(body, limits.body_timeout)));
            let response = router.clone().oneshot(request);
            async move {
                let response = response.await;
                drop(in_flight);
                Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
            }
        })
    };
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().header_read_timeout(None);
    let conn = builder.serve_connection(io, TowerToHyperService::new(service));
    tokio::pin!(conn);
    let mut draining = false;
    loop {
        let deadline = activity.deadline(&limits);
        let expired = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            () = activity.changed.notified() => {}
            () = expired => {
                if let Some((at, what)) = activity.deadline(&limits)
                    && at <= Instant::now()
                {
                    debug!(%peer, timeout = what, "closing an HTTP connection at its deadline");
                    return;
                }
            }
            _ = closing.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What a connection is doing, as times in milliseconds since it was opened.
struct Activity {
    opened: Instant,
    /// The last read or write that moved bytes.
    last_io: AtomicU64,
    /// When the first byte of the request head being read arrived; [`Activity::NONE`] if none.
    head_started: AtomicU64,
    /// Requests handed to the router and not answered yet.
    in_flight: AtomicUsize,
    /// Wakes the watchdog when its deadline may have moved earlier.
    changed: Notify,
}

impl Activity {
    const NONE: u64 = u64::MAX;

    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_io: AtomicU64::new(0),
            head_started: AtomicU64::new(Activity::NONE),
            in_flight: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(Activity::NONE - 1)
    }

    fn read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self
                .head_started
                .compare_exchange(Activity::NONE, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.head_started.store(Activity::NONE, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
        InFlight(Arc::clone(self))
    }

    /// When the connection is to be closed, and which limit says so; `None` while a request
    /// is in flight (its body has its own deadline).
    fn deadline(&self, limits: &ServerLimits) -> Option<(Instant, &'static str)> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let at = |ms: u64| self.opened + Duration::from_millis(ms);
        match self.head_started.load(Ordering::Relaxed) {
            Activity::NONE => Some((
                at(self.last_io.load(Ordering::Relaxed)) + limits.idle_timeout,
                "idle_timeout",
            )),
            started => Some((at(started) + limits.header_timeout, "header_timeout")),
        }
    }
}

/// A request being handled; dropping it (answered or cancelled) restarts the idle clock.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        activity.wrote();
        activity.changed.notify_one();
    }
}

/// A socket that tells its [`Activity`] whenever bytes move.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The request body did not arrive whole within `server.body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {}", humantime::format_duration(*.0))]
pub struct BodyTimeout(pub Duration);

/// A request body that must arrive whole before a deadline set when its head arrived.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
}

impl DeadlineBody {
    fn new(inner: Incoming, limit: Duration) -> DeadlineBody {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout(this.limit).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
