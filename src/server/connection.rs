//! One connection's lifetime: it must deliver its first request head within `header_read_timeout` (the
//! protocol detection of hyper-util's `auto` has no timer of its own), and it is closed once no request
//! has been in progress for `idle_timeout` (on HTTP/2 a GOAWAY, however diligently it answers PINGs).
//! A request counts as in progress until its response body has been sent or dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::watch;
use tokio::time::Instant;

use super::caps::ConnectionPermit;

/// Requests in progress on one connection, and since when it has had none.
pub struct Activity {
    opened: Instant,
    in_progress: AtomicUsize,
    /// Requests begun so far (only whether it is zero matters).
    begun: AtomicU64,
    /// When the last request in progress ended, in milliseconds after `opened`.
    quiet_since_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            opened: Instant::now(),
            in_progress: AtomicUsize::new(0),
            begun: AtomicU64::new(0),
            quiet_since_ms: AtomicU64::new(0),
        })
    }

    /// A request has arrived; it is in progress until the guard is dropped.
    pub fn begin(self: &Arc<Activity>) -> RequestGuard {
        self.begun.fetch_add(1, Ordering::Relaxed);
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        RequestGuard(Arc::clone(self))
    }

    /// What to do when the connection's timer fires at `now`.
    fn check(&self, now: Instant, first_request: Duration, idle: Duration) -> Timer {
        if self.begun.load(Ordering::Relaxed) == 0 {
            let deadline = self.opened + first_request;
            return if now >= deadline { Timer::NoFirstRequest } else { Timer::Rearm(deadline) };
        }
        if self.in_progress.load(Ordering::Acquire) > 0 {
            return Timer::Rearm(now + idle);
        }
        let quiet_since = self.opened + Duration::from_millis(self.quiet_since_ms.load(Ordering::Relaxed));
        let deadline = quiet_since + idle;
        if now >= deadline { Timer::Idle } else { Timer::Rearm(deadline) }
    }
}

enum Timer {
    NoFirstRequest,
    Idle,
    Rearm(Instant),
}

/// Held by a request (and then by its response body) while it is in progress.
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        // Saturating: the elapsed time fits u64 milliseconds for half a billion years.
        let ms = u64::try_from(activity.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.quiet_since_ms.store(ms, Ordering::Relaxed);
        activity.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request in progress until it has been sent or dropped.
pub struct Tracked<B> {
    inner: B,
    _guard: RequestGuard,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, guard: RequestGuard) -> Tracked<B> {
        Tracked { inner, _guard: guard }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The deadlines a connection lives by.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub first_request: Duration,
    pub idle: Duration,
}

/// Drives `conn` to its end: closed at once when no first request arrives in time, shut down gracefully
/// when idle or when the server shuts down. The permit (its place under the connection caps) is held
/// until then.
pub async fn drive<C>(
    conn: C,
    activity: Arc<Activity>,
    deadlines: Deadlines,
    mut shutdown: watch::Receiver<bool>,
    peer: std::net::SocketAddr,
    permit: ConnectionPermit,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    // Given back only after the connection (and any response body it still holds) is dropped, so the
    // shutdown drain, which waits for every place to return, finds every request settled.
    let _permit = permit;
    let mut conn = std::pin::pin!(conn);
    // Whichever comes first; a check before the first request only moves the timer on.
    let timer = tokio::time::sleep_until(activity.opened + deadlines.first_request.min(deadlines.idle));
    let mut timer = std::pin::pin!(timer);
    let mut closing = *shutdown.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = timer.as_mut(), if !closing => match activity.check(Instant::now(), deadlines.first_request, deadlines.idle) {
                Timer::NoFirstRequest => {
                    return tracing::debug!(%peer, "no request head in time; connection closed");
                }
                Timer::Idle => {
                    tracing::debug!(%peer, "connection idle; closing it");
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                Timer::Rearm(at) => timer.as_mut().reset(at),
            },
        }
    }
}
