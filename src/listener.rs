//! The accept loop: how many connections the server holds, how long one may take to say
//! what it wants, and how HTTP/2 connections are kept honest.
//!
//! hyper reads a connection's first bytes to tell HTTP/1 from HTTP/2 before any of its own
//! timers run, and an HTTP/2 connection has no header-read timer at all, so a client that
//! connects and sends nothing (or half a preface) would hold a socket forever. Each
//! connection therefore gets a watchdog: no complete request head within the header-read
//! timeout, whatever the protocol, and the connection is closed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::Version;
use axum::response::Response;
use hyper::body::{Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::context::REQUEST_ID_HEADER;
use crate::error::{Code, Problem, PROBLEM_JSON};

/// Request heads are small; 64 KiB is room for long URLs and many headers, and caps what a
/// client can make the server buffer before it has even been authenticated.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How the accept loop treats connections.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The time from accepting a connection (or, on HTTP/1, from the end of the previous
    /// answer) to a complete request head.
    pub header_read_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// An HTTP/2 connection is pinged this often, and closed when a ping goes unanswered
    /// for as long.
    pub http2_keep_alive: Duration,
    /// An HTTP/2 connection with no open stream for this long is closed.
    pub http2_idle_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain: Duration,
    /// How long a write to a client may make no progress before the connection is closed.
    pub write_stall: Duration,
}

/// 90 % of the process's open-file limit: the rest is left for the database, log and
/// uploaded files, so that accepting connections can never starve them.
pub fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and reads nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !ok || limit.rlim_cur == libc::RLIM_INFINITY {
        return 1 << 20;
    }
    let files = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX);
    (files / 10 * 9).max(1)
}

/// Serves `app` on an already bound listener until `shutdown` resolves, then stops
/// accepting and lets in-flight requests finish (for at most `limits.drain`).
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    limits: Limits,
    metrics: crate::metrics::Metrics,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .keep_alive_interval(limits.http2_keep_alive)
        .keep_alive_timeout(limits.http2_keep_alive);
    let open = Arc::new(AtomicUsize::new(0));
    let refusals = Arc::new(tokio::sync::Semaphore::new(REFUSALS_IN_FLIGHT));
    // Every connection task holds a sender: when the last is gone, all have finished.
    let (alive, mut all_done) = tokio::sync::mpsc::channel::<()>(1);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(slot) = Slot::take(&open, limits.max_connections) else {
            metrics.connection_refused();
            // Refusing holds a descriptor for a moment; under a flood, past a few dozen
            // refusals in flight the connection is closed without an answer.
            if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(permit);
                });
            }
            continue;
        };
        let held = Held(Arc::new(slot));
        let _ = stream.set_nodelay(true);
        let watch = Arc::new(Watch::new());
        let app = app.clone();
        let on_request = Arc::clone(&watch);
        let for_requests = held.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                let extensions = request.extensions_mut();
                extensions.insert(ConnectInfo::<SocketAddr>(peer));
                extensions.insert(for_requests.clone());
                let streams = on_request.request_arrived(request.version());
                let answer = app.clone().oneshot(request.map(Body::new));
                async move {
                    let response = answer.await?;
                    Ok::<_, Infallible>(match streams {
                        Some(open) => response.map(|body| Body::new(Counted { body, open })),
                        None => response,
                    })
                }
            },
        );
        let connection = builder
            .serve_connection_with_upgrades(
                TokioIo::new(WriteStall::new(stream, limits.write_stall)),
                service,
            )
            .into_owned();
        let limits = limits.clone();
        let alive = alive.clone();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            watch.guard(connection, &limits, stopping).await;
            drop((held, alive));
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(alive);
    if tokio::time::timeout(limits.drain, all_done.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            "some connections were still busy after {:?}; stopping without them",
            limits.drain
        );
    }
}

/// Refusals at the connection cap that may be answered at once; beyond, a connection is
/// closed unanswered.
const REFUSALS_IN_FLIGHT: usize = 64;

/// A connection's place under the cap, in each of its requests' extensions: a socket
/// upgraded from it (a realtime WebSocket) keeps the place for as long as it is open.
#[derive(Clone)]
pub struct Held(#[allow(dead_code)] Arc<Slot>);

/// One of the open connections the cap allows; given back when dropped.
pub struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(Arc::clone(open)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the watchdog of one connection knows about it.
struct Watch {
    born: Instant,
    /// A complete request head has arrived.
    spoke: AtomicBool,
    /// The connection speaks HTTP/2 (known from its first request).
    http2: AtomicBool,
    /// HTTP/2 requests whose answers are not yet fully sent.
    streams: Arc<Streams>,
}

#[derive(Default)]
struct Streams {
    open: AtomicUsize,
    /// When the last answer finished, in milliseconds since the connection was accepted.
    idle_since_ms: AtomicU64,
}

impl Watch {
    fn new() -> Self {
        Watch {
            born: Instant::now(),
            spoke: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            streams: Arc::default(),
        }
    }

    /// Notes a request head; on HTTP/2, counts the stream until its answer is sent.
    fn request_arrived(&self, version: Version) -> Option<StreamGuard> {
        self.spoke.store(true, Ordering::Release);
        if version != Version::HTTP_2 {
            return None;
        }
        self.http2.store(true, Ordering::Release);
        self.streams.open.fetch_add(1, Ordering::AcqRel);
        Some(StreamGuard {
            streams: Arc::clone(&self.streams),
            born: self.born,
        })
    }

    /// Drives the connection, and drops it (closing the socket) when it breaks the rules:
    /// no request head within the header-read timeout, or an HTTP/2 connection with no
    /// open stream for too long.
    async fn guard<C>(
        &self,
        connection: C,
        limits: &Limits,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) where
        C: GracefulConnection,
        C::Error: std::fmt::Display,
    {
        tokio::pin!(connection);
        let head_deadline = self.born + limits.header_read_timeout;
        let mut deadline = head_deadline.min(self.born + limits.http2_idle_timeout);
        let mut closing = false;
        loop {
            tokio::select! {
                ended = connection.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = tokio::time::sleep_until(deadline) => {}
                _ = stopping.changed(), if !closing => {
                    // The server is stopping: finish what is in flight, take nothing new.
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                    deadline = Instant::now() + limits.drain;
                    continue;
                }
            }
            let now = Instant::now();
            if closing {
                tracing::debug!("connection closed: it did not finish in time");
                return;
            }
            if !self.spoke.load(Ordering::Acquire) {
                if now >= head_deadline {
                    tracing::debug!(
                        "connection closed: no request head within the header-read timeout"
                    );
                    return;
                }
                deadline = head_deadline;
                continue;
            }
            if !self.http2.load(Ordering::Acquire) {
                // Past its first request, an HTTP/1 connection is left to hyper's timer,
                // which restarts after every answer.
                deadline = now + Duration::from_secs(365 * 86_400);
                continue;
            }
            if self.streams.open.load(Ordering::Acquire) > 0 {
                deadline = now + limits.http2_idle_timeout;
                continue;
            }
            let idle_since = self.born
                + Duration::from_millis(self.streams.idle_since_ms.load(Ordering::Acquire));
            if idle_since + limits.http2_idle_timeout <= now {
                // GOAWAY first, so that a request crossing it can be retried safely.
                tracing::debug!("HTTP/2 connection closing: no open stream for too long");
                connection.as_mut().graceful_shutdown();
                closing = true;
                deadline = now + IDLE_CLOSE_GRACE;
                continue;
            }
            deadline = idle_since + limits.http2_idle_timeout;
        }
    }
}

/// How long an idle HTTP/2 connection told to go away may take to finish.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// An HTTP/2 stream counted open until its answer's body is done with.
struct StreamGuard {
    streams: Arc<Streams>,
    born: Instant,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.streams.idle_since_ms.fetch_max(now, Ordering::AcqRel);
        self.streams.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body that keeps its stream counted open while it is being sent.
struct Counted {
    body: Body,
    #[allow(dead_code)] // held for its Drop
    open: StreamGuard,
}

impl hyper::body::Body for Counted {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A socket whose writes may make no progress for at most `limit`: a client that stops
/// reading its answers (a stream, a WebSocket) cannot hold the connection, and the task
/// that produces them, forever. Once the limit passes, the write fails and hyper closes.
struct WriteStall<T> {
    io: T,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteStall<T> {
    fn new(io: T, limit: Duration) -> Self {
        WriteStall {
            io,
            limit,
            stalled: None,
        }
    }

    /// Called when a write made no progress: pending until the stall outlasts the limit.
    fn stall<R>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<R>> {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<R>>,
    ) -> Poll<std::io::Result<R>> {
        match poll {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stall(cx),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteStall<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteStall<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.progress(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.progress(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.progress(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_shutdown(cx);
        self.progress(cx, poll)
    }
}

/// Answers a connection beyond the cap with a 503 problem and closes it. The request is
/// not read, only drained briefly so that closing does not reset the answer away.
async fn refuse(mut stream: TcpStream) {
    let request_id = uuid::Uuid::now_v7().simple().to_string();
    let code = Code::ServiceUnavailable;
    let problem = Problem {
        kind: format!("/docs/errors#{}", code.as_str()),
        title: code.title().to_owned(),
        status: code.status().as_u16(),
        detail: "The server is at its connection limit; try again shortly.".to_owned(),
        code: code.as_str().to_owned(),
        request_id: request_id.clone(),
        errors: Default::default(),
    };
    let body = serde_json::to_string(&problem).expect("a problem always serializes");
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {PROBLEM_JSON}\r\n\
         content-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\
         {REQUEST_ID_HEADER}: {request_id}\r\n\r\n{body}",
        body.len()
    );
    let written = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    // Read what the client has sent, briefly: closing with unread bytes would reset the
    // connection and could destroy the answer before the client reads it. Brief, because
    // under a flood every refused connection holds a file descriptor until this ends.
    let _ = tokio::time::timeout(Duration::from_millis(100), async {
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < MAX_HEAD_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_taken_and_given_back() {
        let open = Arc::new(AtomicUsize::new(0));
        let a = Slot::take(&open, 2).unwrap();
        let _b = Slot::take(&open, 2).unwrap();
        assert!(Slot::take(&open, 2).is_none());
        drop(a);
        assert!(Slot::take(&open, 2).is_some());
    }

    #[tokio::test]
    async fn a_write_that_makes_no_progress_fails_after_the_stall_limit() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut io = WriteStall::new(near, Duration::from_millis(200));
        // Progress resets the clock: a reader that keeps up is never cut off.
        for _ in 0..5 {
            io.write_all(&[1; 64]).await.unwrap();
            let mut buf = [0; 64];
            far.read_exact(&mut buf).await.unwrap();
        }
        io.write_all(&[1; 64]).await.unwrap();
        let started = std::time::Instant::now();
        let stalled = tokio::time::timeout(Duration::from_secs(5), io.write_all(&[1; 64]))
            .await
            .expect("the write gives up by itself");
        assert_eq!(stalled.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn the_default_cap_leaves_room_for_other_files() {
        let n = default_max_connections();
        assert!(n >= 1);
    }
}
