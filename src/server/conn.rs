//! One client connection, from accept to close:
//!
//! 1. TLS handshake when the listener has a certificate (bounded by the
//!    header timeout);
//! 2. hyper serves HTTP/1.1 or HTTP/2 (prior knowledge or ALPN) on it,
//!    with HTTP/1.1 upgrades (the proxy tunnels WebSocket connections);
//! 3. a watchdog enforces our timeouts, which hyper alone cannot express:
//!    an idle keep-alive connection is closed quietly after the keep-alive
//!    timeout, and a request head that started arriving but is not complete
//!    within the header timeout (slowloris) gets `408` and the connection is
//!    closed;
//! 4. on worker shutdown, hyper's graceful shutdown: idle connections close
//!    at once, busy ones after their response;
//! 5. a plain HTTP/1 connection idle for a while leaves hyper and waits
//!    parked, without hyper's buffers, for its next request (`super::park`).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::park::{self, Park, Waiting, PARK_AFTER};
use super::service::{self, RequestContext};
use super::{LocalExec, Shared};
use crate::body::RequestBody;
use crate::sendfile::{SendQueue, SendfileSocket};

/// Where a connection is between requests; drives the watchdog.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// No byte of a next request yet; closed quietly after `limit`.
    Idle { since: Instant, limit: Duration },
    /// Part of a request head arrived; 408 after the header timeout.
    Head { since: Instant },
    /// At least one request is being answered.
    Busy,
}

/// A `Cell` that is `Sync`. hyper wants the socket `Send` when upgrades are
/// on (an upgraded socket is a `Box<dyn Send>`), so the state the socket
/// wrapper shares must be too; it is only ever touched on the worker's
/// thread, so the lock is never contended.
struct SyncCell<T>(Mutex<T>);

impl<T: Copy> SyncCell<T> {
    fn new(value: T) -> Self {
        SyncCell(Mutex::new(value))
    }

    fn get(&self) -> T {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, value: T) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = value;
    }
}

/// Shared between the socket wrapper, the service and the watchdog of one
/// connection (all on the same thread).
pub struct ConnState {
    phase: SyncCell<Phase>,
    in_flight: SyncCell<usize>,
    /// HTTP/2 frames (pings, window updates) arrive between requests, so the
    /// head timeout only applies to HTTP/1.
    http2: SyncCell<bool>,
    keepalive_timeout: Duration,
    /// File ranges a body handed hyper placeholders for (plain HTTP/1).
    pub sendfile: Arc<SendQueue>,
    /// hyper is being told the stream ended, so that the socket can be parked.
    parking: AtomicBool,
    /// The last write did not complete: hyper still holds bytes to send.
    write_blocked: AtomicBool,
}

impl ConnState {
    pub(crate) fn new(header_timeout: Duration, keepalive_timeout: Duration) -> Self {
        ConnState {
            phase: SyncCell::new(Phase::Idle {
                since: Instant::now(),
                limit: header_timeout,
            }),
            in_flight: SyncCell::new(0),
            http2: SyncCell::new(false),
            keepalive_timeout,
            sendfile: Arc::default(),
            parking: AtomicBool::new(false),
            write_blocked: AtomicBool::new(false),
        }
    }

    /// A parked connection's next request is waiting: a new hyper
    /// connection reads it at once.
    fn unparked(&self, header_timeout: Duration) {
        self.parking.store(false, Relaxed);
        self.write_blocked.store(false, Relaxed);
        self.phase.set(Phase::Idle {
            since: Instant::now(),
            limit: header_timeout,
        });
    }

    /// When an idle connection is closed (its deadline is past when it is
    /// not idle).
    pub fn idle_deadline(&self) -> Instant {
        match self.phase.get() {
            Phase::Idle { since, limit } => since + limit,
            _ => Instant::now(),
        }
    }

    pub fn request_started(&self) {
        self.in_flight.set(self.in_flight.get() + 1);
        self.phase.set(Phase::Busy);
    }

    pub fn request_finished(&self) {
        let left = self.in_flight.get().saturating_sub(1);
        self.in_flight.set(left);
        if left == 0 {
            self.phase.set(Phase::Idle {
                since: Instant::now(),
                limit: self.keepalive_timeout,
            });
        }
    }

    fn bytes_arrived(&self, first: &[u8]) {
        if let Phase::Idle { .. } = self.phase.get() {
            if first.starts_with(b"PRI * HTTP/2") {
                self.http2.set(true);
            }
            if !self.http2.get() {
                self.phase.set(Phase::Head {
                    since: Instant::now(),
                });
            }
        }
    }
}

/// What the watchdog decided.
enum Expiry {
    Idle,
    HeadTimeout,
    /// Idle for `PARK_AFTER` with nothing left to write: leave hyper.
    Park,
}

/// Sleeps until the current phase's deadline, re-reading the phase at least
/// every `step` (the shorter timeout). A phase that starts while we sleep has
/// a deadline at least `step` after its start, so it is always noticed before
/// its deadline and enforced on time, without waking per state change.
async fn watchdog(state: &ConnState, header_timeout: Duration, can_park: bool) -> Expiry {
    let mut step = header_timeout.min(state.keepalive_timeout);
    if can_park {
        step = step.min(PARK_AFTER);
    }
    // Not HTTP/2, and nothing left to write for a slow reader (that one is
    // closed at the keep-alive deadline as before).
    let parkable = || can_park && !state.http2.get() && !state.write_blocked.load(Relaxed);
    loop {
        let phase = state.phase.get();
        let now = Instant::now();
        let (deadline, expiry) = match phase {
            Phase::Idle { since, limit } if PARK_AFTER < limit && parkable() => {
                (since + PARK_AFTER, Some(Expiry::Park))
            }
            Phase::Idle { since, limit } => (since + limit, Some(Expiry::Idle)),
            Phase::Head { since } => (since + header_timeout, Some(Expiry::HeadTimeout)),
            Phase::Busy => (now + step, None),
        };
        tokio::time::sleep_until(deadline.min(now + step)).await;
        let Some(expiry) = expiry else { continue };
        let due = state.phase.get() == phase && Instant::now() >= deadline;
        if due && (!matches!(expiry, Expiry::Park) || parkable()) {
            return expiry;
        }
    }
}

/// The socket as hyper sees it: reports the arrival of request bytes to the
/// connection state, sends file bodies' placeholders with `sendfile`, and
/// when the connection parks, shows hyper an end of stream and hands the
/// socket back instead of closing it.
pub struct Watched<S> {
    /// `None` only while being dropped for parking.
    inner: Option<S>,
    state: Arc<ConnState>,
    /// Where the socket goes when hyper lets go of it for parking. hyper
    /// wants its IO `Send`, so this is a (never contended) mutex.
    parked: Arc<Mutex<Option<S>>>,
}

impl<S> Watched<S> {
    fn socket(&mut self) -> &mut S {
        self.inner
            .as_mut()
            .expect("the socket is taken only on drop")
    }

    fn parking(&self) -> bool {
        self.state.parking.load(Relaxed)
    }
}

impl<S> Drop for Watched<S> {
    fn drop(&mut self) {
        if self.parking() {
            *self.parked.lock().unwrap_or_else(|e| e.into_inner()) = self.inner.take();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.parking() {
            // An end of stream between requests: hyper closes cleanly.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = Pin::new(self.socket()).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.bytes_arrived(&buf.filled()[before..]);
        }
        result
    }
}

impl<S: AsyncWrite + SendfileSocket + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_write_vectored(cx, &[std::io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let Watched { inner, state, .. } = self.get_mut();
        let socket = inner.as_mut().expect("the socket is taken only on drop");
        let result = state.sendfile.poll_write(socket, cx, bufs);
        state.write_blocked.store(result.is_pending(), Relaxed);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(S::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.socket()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.parking() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(self.socket()).poll_shutdown(cx)
    }
}

/// What the connection knows about its two ends, for logs and handlers.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// The client (None on a unix socket).
    pub addr: Option<SocketAddr>,
    /// Our address the client connected to (None on a unix socket).
    pub local: Option<SocketAddr>,
    /// The connection is TLS (`HTTPS=on`, `wsgi.url_scheme = https`).
    pub tls: bool,
    /// The plain socket, when writing to it directly is safe (not TLS).
    pub raw_fd: Option<RawFd>,
    /// The client's IP as `REMOTE_ADDR` shows it.
    pub ip_text: IpText,
}

impl Peer {
    pub fn new(
        addr: Option<SocketAddr>,
        local: Option<SocketAddr>,
        tls: bool,
        raw_fd: Option<RawFd>,
    ) -> Self {
        Peer {
            addr,
            local,
            tls,
            raw_fd,
            ip_text: IpText::new(addr.map(|a| a.ip())),
        }
    }
}

/// An IP address as text, formatted once per connection rather than once
/// per request (formatting costs more than the rest of the client view).
/// IPv4-mapped IPv6 addresses show as IPv4; no address is "".
#[derive(Clone, Copy)]
pub struct IpText {
    buf: [u8; IpText::MAX],
    len: u8,
}

impl IpText {
    /// The longest IPv6 text form, `ffff:…:ffff:255.255.255.255`.
    const MAX: usize = 45;

    pub fn new(ip: Option<IpAddr>) -> Self {
        use std::io::Write;
        let mut buf = [0; Self::MAX];
        let mut rest = &mut buf[..];
        if let Some(ip) = ip {
            // Cannot fail: every address fits in MAX bytes.
            let _ = write!(rest, "{}", ip.to_canonical());
        }
        let len = (Self::MAX - rest.len()) as u8;
        IpText { buf, len }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }
}

impl std::fmt::Debug for IpText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Serves one accepted connection until it closes.
pub async fn serve<S>(mut socket: S, peer: Peer, shared: Rc<Shared>)
where
    S: AsyncRead + AsyncWrite + SendfileSocket + Park + Unpin + Send + 'static,
{
    let limits = &shared.limits;
    let state = Arc::new(ConnState::new(
        limits.header_timeout,
        limits.keepalive_timeout,
    ));
    let ctx = Rc::new(RequestContext {
        shared: shared.clone(),
        state: state.clone(),
        peer,
    });
    let parked = Arc::new(Mutex::new(None));
    loop {
        let (http, can_park) = match park::wait_for_request(&socket, &state, &shared).await {
            Waiting::Closed => return,
            Waiting::Http1 => (&shared.http1, true),
            Waiting::Detect => (&shared.http, true),
            Waiting::Unparkable => (&shared.http, false),
        };
        // The bytes are waiting: hyper reads them at once.
        state.unparked(limits.header_timeout);
        shared.in_hyper.up();
        let ended = with_hyper(socket, http, &ctx, &parked, can_park).await;
        shared.in_hyper.down();
        let taken = parked.lock().unwrap_or_else(|e| e.into_inner()).take();
        match (ended, taken) {
            (Ended::Parked, Some(back)) => socket = back,
            _ => return,
        }
    }
}

/// How a hyper connection ended.
enum Ended {
    /// The socket is parked, the connection open.
    Parked,
    Closed,
}

/// `serve_with_hyper`'s future, boxed by a plain function: an async fn
/// would keep room for it in its own state, parked connections included.
fn with_hyper<'a, S>(
    socket: S,
    http: &'a auto::Builder<LocalExec>,
    ctx: &'a Rc<RequestContext>,
    parked: &'a Arc<Mutex<Option<S>>>,
    can_park: bool,
) -> Pin<Box<impl Future<Output = Ended> + 'a>>
where
    S: AsyncRead + AsyncWrite + SendfileSocket + Unpin + Send + 'static,
{
    Box::pin(serve_with_hyper(socket, http, ctx, parked, can_park))
}

/// Serves requests with hyper until the connection closes or parks.
async fn serve_with_hyper<S>(
    socket: S,
    http: &auto::Builder<LocalExec>,
    ctx: &Rc<RequestContext>,
    parked: &Arc<Mutex<Option<S>>>,
    can_park: bool,
) -> Ended
where
    S: AsyncRead + AsyncWrite + SendfileSocket + Unpin + Send + 'static,
{
    let (shared, state, peer) = (&ctx.shared, &ctx.state, &ctx.peer);
    let limits = &shared.limits;
    let io = TokioIo::new(Watched {
        inner: Some(socket),
        state: state.clone(),
        parked: parked.clone(),
    });
    let svc_ctx = ctx.clone();
    // hyper keeps room for this future in every connection it serves; it
    // is kept small (about 2 KiB: the rare handlers' futures
    // are boxed) rather than boxed per request, which measured 700 more
    // instructions per request.
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        service::handle(req.map(RequestBody::Http), svc_ctx.clone())
    });
    let mut conn = pin!(http.serve_connection_with_upgrades(io, svc));
    let mut shutdown = shared.shutdown.clone();
    let mut shutting_down = *shutdown.borrow();
    if shutting_down {
        conn.as_mut().graceful_shutdown();
    }
    let mut dog = pin!(watchdog(state, limits.header_timeout, can_park));
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    log_connection_error(shared, peer, err.as_ref());
                }
                return Ended::Closed;
            }
            _ = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                conn.as_mut().graceful_shutdown();
            }
            expiry = dog.as_mut() => match expiry {
                Expiry::Idle => {
                    conn.as_mut().graceful_shutdown();
                    // A client that does not let the connection close (an
                    // HTTP/2 peer ignoring GOAWAY) is dropped after a grace period.
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = tokio::time::sleep(limits.header_timeout) => {}
                    }
                    return Ended::Closed;
                }
                Expiry::HeadTimeout => {
                    send_request_timeout(shared, peer);
                    return Ended::Closed;
                }
                Expiry::Park => {
                    state.parking.store(true, Relaxed);
                    // hyper reads an end of stream between requests and ends
                    // cleanly, writing nothing; the socket goes to `parked`.
                    let clean = tokio::select! {
                        result = conn.as_mut() => result.is_ok(),
                        _ = tokio::time::sleep(limits.header_timeout) => false,
                    };
                    if !clean {
                        return Ended::Closed;
                    }
                    tracing::debug!(peer = ?peer.addr, "idle connection parked");
                    return Ended::Parked;
                }
            },
        }
    }
}

/// hyper answers malformed requests itself (400, 431, 414) and then reports
/// the error here; log them as the access log would, other errors (resets,
/// broken pipes) only at debug level.
fn log_connection_error(shared: &Shared, peer: &Peer, err: &(dyn std::error::Error + 'static)) {
    match err.downcast_ref::<hyper::Error>() {
        Some(e) if e.is_parse() || e.is_parse_too_large() => {
            let status = if e.is_parse_too_large() { 431 } else { 400 };
            service::log_refused(shared, peer, status);
            tracing::debug!(peer = ?peer.addr, "malformed request: {e}");
        }
        _ => tracing::debug!(peer = ?peer.addr, "connection closed: {err}"),
    }
}

fn send_request_timeout(shared: &Shared, peer: &Peer) {
    const RESPONSE: &[u8] =
        b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\nServer: portico\r\n\r\n";
    if let Some(fd) = peer.raw_fd {
        use nix::sys::socket::{send, MsgFlags};
        // Best effort: the socket buffer is empty between requests, so a
        // non-blocking send of these few bytes either fits or the client is gone.
        let _ = send(
            fd,
            RESPONSE,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        );
    }
    service::log_refused(shared, peer, 408);
    tracing::info!(peer = ?peer.addr, "request head not complete within the header timeout: 408, connection closed");
}
