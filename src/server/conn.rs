//! One client connection, from accept to close:
//!
//! 1. TLS handshake when the listener has a certificate (bounded by the
//!    header timeout);
//! 2. hyper serves HTTP/1.1 or HTTP/2 (prior knowledge or ALPN) on it,
//!    with HTTP/1.1 upgrades (the proxy tunnels WebSocket connections);
//! 3. a watchdog enforces our timeouts, which hyper alone cannot express:
//!    an idle keep-alive connection is closed quietly after the keep-alive
//!    timeout, a request head that started arriving but is not complete
//!    within the header timeout (slowloris) gets `408` and the connection is
//!    closed, and a client whose socket takes no response byte for the send
//!    timeout is closed (an HTTP/2 stream whose window stays shut is reset
//!    by `super::send_timeout`);
//! 4. on worker shutdown, hyper's graceful shutdown: idle connections close
//!    at once, busy ones after their response;
//! 5. a plain HTTP/1 connection idle for a while leaves hyper and waits
//!    parked, without hyper's buffers, for its next request (`super::park`).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

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

/// A `Phase` in one atomic word: the kind in the top two bits, the start in
/// the others as nanoseconds after `epoch` (146 years). hyper wants the
/// socket `Send` when upgrades are on (an upgraded socket is a
/// `Box<dyn Send>`), so the state the socket wrapper shares must be `Sync`;
/// it is only ever touched on the worker's thread, so relaxed loads and
/// stores are enough, where a lock would cost every request a few.
struct PhaseCell {
    word: AtomicU64,
    epoch: Instant,
    /// The limit of an idle phase before the first request (or after a
    /// park), and between requests.
    header_timeout: Duration,
    keepalive_timeout: Duration,
}

impl PhaseCell {
    const KIND_SHIFT: u32 = 62;
    const SINCE_MASK: u64 = (1 << Self::KIND_SHIFT) - 1;
    const BUSY: u64 = 0;
    const HEAD: u64 = 1;
    const IDLE_NEW: u64 = 2;
    const IDLE_KEPT: u64 = 3;

    fn new(header_timeout: Duration, keepalive_timeout: Duration) -> Self {
        let cell = PhaseCell {
            word: AtomicU64::new(0),
            epoch: Instant::now(),
            header_timeout,
            keepalive_timeout,
        };
        cell.set(Self::IDLE_NEW);
        cell
    }

    /// Enters the phase of kind `kind`, starting now (busy has no start).
    fn set(&self, kind: u64) {
        let since = match kind {
            Self::BUSY => 0,
            _ => Instant::now()
                .saturating_duration_since(self.epoch)
                .as_nanos() as u64,
        };
        let word = kind << Self::KIND_SHIFT | since & Self::SINCE_MASK;
        self.word.store(word, Relaxed);
    }

    fn get(&self) -> Phase {
        let word = self.word.load(Relaxed);
        let since = self.epoch + Duration::from_nanos(word & Self::SINCE_MASK);
        match word >> Self::KIND_SHIFT {
            Self::BUSY => Phase::Busy,
            Self::HEAD => Phase::Head { since },
            Self::IDLE_NEW => Phase::Idle {
                since,
                limit: self.header_timeout,
            },
            _ => Phase::Idle {
                since,
                limit: self.keepalive_timeout,
            },
        }
    }

    fn is_idle(&self) -> bool {
        self.word.load(Relaxed) >> Self::KIND_SHIFT >= Self::IDLE_NEW
    }
}

/// Shared between the socket wrapper, the service and the watchdog of one
/// connection (all on the same thread).
pub struct ConnState {
    phase: PhaseCell,
    in_flight: AtomicUsize,
    /// HTTP/2 frames (pings, window updates) arrive between requests, so the
    /// head timeout only applies to HTTP/1.
    http2: AtomicBool,
    /// File ranges a body handed hyper placeholders for (plain HTTP/1).
    pub sendfile: Arc<SendQueue>,
    /// hyper is being told the stream ended, so that the socket can be parked.
    parking: AtomicBool,
    /// Since when the socket has taken no byte of what hyper has to send
    /// (the last write or flush did not complete), as nanoseconds after the
    /// phase epoch, plus one; 0 while writes complete.
    write_blocked: AtomicU64,
    /// A client whose socket stays blocked this long is closed.
    send_timeout: Duration,
}

impl ConnState {
    pub(crate) fn new(limits: &crate::config::Limits) -> Self {
        ConnState {
            phase: PhaseCell::new(limits.header_timeout, limits.keepalive_timeout),
            in_flight: AtomicUsize::new(0),
            http2: AtomicBool::new(false),
            sendfile: Arc::default(),
            parking: AtomicBool::new(false),
            write_blocked: AtomicU64::new(0),
            send_timeout: limits.send_timeout,
        }
    }

    /// Records whether a write (or flush) to the client completed: a
    /// blocked stretch starts at the first one that did not, and ends at
    /// the next that did. Only the edges read the clock.
    fn wrote(&self, blocked: bool) {
        let since = self.write_blocked.load(Relaxed);
        if blocked && since == 0 {
            let now = Instant::now().saturating_duration_since(self.phase.epoch);
            self.write_blocked.store(now.as_nanos() as u64 + 1, Relaxed);
        } else if !blocked && since != 0 {
            self.write_blocked.store(0, Relaxed);
        }
    }

    fn is_write_blocked(&self) -> bool {
        self.write_blocked.load(Relaxed) != 0
    }

    /// When the send timeout closes the connection, while its socket takes
    /// no byte.
    fn send_deadline(&self) -> Option<Instant> {
        match self.write_blocked.load(Relaxed) {
            0 => None,
            since => Some(self.phase.epoch + Duration::from_nanos(since - 1) + self.send_timeout),
        }
    }

    /// A parked connection's next request is waiting: a new hyper
    /// connection reads it at once.
    fn unparked(&self) {
        self.parking.store(false, Relaxed);
        self.write_blocked.store(0, Relaxed);
        self.phase.set(PhaseCell::IDLE_NEW);
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
        // One thread only: a load and a store, no locked add.
        self.in_flight
            .store(self.in_flight.load(Relaxed) + 1, Relaxed);
        self.phase.set(PhaseCell::BUSY);
    }

    pub fn request_finished(&self) {
        let left = self.in_flight.load(Relaxed).saturating_sub(1);
        self.in_flight.store(left, Relaxed);
        if left == 0 {
            self.phase.set(PhaseCell::IDLE_KEPT);
        }
    }

    /// The connection speaks HTTP/2 (its first bytes were the preface).
    pub fn is_http2(&self) -> bool {
        self.http2.load(Relaxed)
    }

    fn bytes_arrived(&self, first: &[u8]) {
        if self.phase.is_idle() {
            if first.starts_with(b"PRI * HTTP/2") {
                self.http2.store(true, Relaxed);
            }
            if !self.http2.load(Relaxed) {
                self.phase.set(PhaseCell::HEAD);
            }
        }
    }
}

/// What the watchdog decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expiry {
    Idle,
    HeadTimeout,
    /// Idle for `PARK_AFTER` with nothing left to write: leave hyper.
    Park,
    /// The client's socket took no byte for the send timeout.
    SendTimeout,
}

/// Sleeps until the current phase's deadline, re-reading the phase at least
/// every `step` (the shorter timeout). A phase that starts while we sleep has
/// a deadline at least `step` after its start, so it is always noticed before
/// its deadline and enforced on time, without waking per state change.
///
/// The connection polls it on every wake-up of its task, nearly all of them
/// for hyper: until its timer has fired, it answers from one load without
/// polling the timer.
struct Watchdog<'a> {
    state: &'a ConnState,
    header_timeout: Duration,
    can_park: bool,
    step: Duration,
    sleep: Pin<Box<Sleep>>,
    /// What the timer is set for: the phase then, its deadline, and what
    /// expires at it (nothing while busy).
    armed: Option<(Phase, Instant, Option<Expiry>)>,
    /// The timer was polled since it was set, so it will wake the task.
    registered: bool,
}

impl<'a> Watchdog<'a> {
    fn new(state: &'a ConnState, header_timeout: Duration, can_park: bool) -> Self {
        let mut step = header_timeout
            .min(state.phase.keepalive_timeout)
            .min(state.send_timeout);
        if can_park {
            step = step.min(PARK_AFTER);
        }
        Watchdog {
            state,
            header_timeout,
            can_park,
            step,
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: None,
            registered: false,
        }
    }

    /// Not HTTP/2, and nothing left to write for a slow reader (that one is
    /// closed at the keep-alive deadline as before).
    fn parkable(&self) -> bool {
        self.can_park && !self.state.http2.load(Relaxed) && !self.state.is_write_blocked()
    }

    fn arm(&mut self) {
        let phase = self.state.phase.get();
        let now = Instant::now();
        let (deadline, expiry) = match phase {
            Phase::Idle { since, limit } if PARK_AFTER < limit && self.parkable() => {
                (since + PARK_AFTER, Some(Expiry::Park))
            }
            Phase::Idle { since, limit } => (since + limit, Some(Expiry::Idle)),
            Phase::Head { since } => (since + self.header_timeout, Some(Expiry::HeadTimeout)),
            Phase::Busy => (now + self.step, None),
        };
        // A client that takes no byte is closed at its send deadline, busy
        // or not (what hyper still holds for it would wait forever).
        let (deadline, expiry) = match self.state.send_deadline() {
            Some(send) if expiry.is_none() || send < deadline => (send, Some(Expiry::SendTimeout)),
            _ => (deadline, expiry),
        };
        self.sleep.as_mut().reset(deadline.min(now + self.step));
        self.armed = Some((phase, deadline, expiry));
        self.registered = false;
    }

    /// The timer fired: is what it was set for due (the phase unchanged)?
    fn due(&self, phase: Phase, deadline: Instant, expiry: Option<Expiry>) -> Option<Expiry> {
        let expiry = expiry?;
        let unchanged = match expiry {
            // The same blocked stretch, whatever requests began or ended.
            Expiry::SendTimeout => self.state.send_deadline() == Some(deadline),
            _ => self.state.phase.get() == phase,
        };
        let due = unchanged && Instant::now() >= deadline;
        (due && (!matches!(expiry, Expiry::Park) || self.parkable())).then_some(expiry)
    }
}

impl Future for Watchdog<'_> {
    type Output = Expiry;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Expiry> {
        let this = self.get_mut();
        loop {
            let Some((phase, deadline, expiry)) = this.armed else {
                this.arm();
                continue;
            };
            if this.registered && !this.sleep.is_elapsed() {
                return Poll::Pending;
            }
            // Out of budget, tokio answers before storing the waker.
            let budget = tokio::task::coop::has_budget_remaining();
            if this.sleep.as_mut().poll(cx).is_pending() {
                this.registered = budget;
                return Poll::Pending;
            }
            if let Some(expiry) = this.due(phase, deadline, expiry) {
                return Poll::Ready(expiry);
            }
            this.arm();
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
        state.wrote(result.is_pending());
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(S::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // TLS takes writes into its buffer and blocks in the flush.
        let result = Pin::new(self.socket()).poll_flush(cx);
        self.state.wrote(result.is_pending());
        result
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
    let state = Arc::new(ConnState::new(limits));
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
        state.unparked();
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
    let body_timeout = limits.body_timeout;
    // hyper keeps room for this future in every connection it serves; it
    // is kept small (about 2 KiB: the rare handlers' futures
    // are boxed) rather than boxed per request, which measured 700 more
    // instructions per request.
    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        service::handle(
            req.map(|body| RequestBody::http(body, body_timeout)),
            svc_ctx.clone(),
        )
    });
    let mut conn = pin!(http.serve_connection_with_upgrades(io, svc));
    let mut shutting_down = *shared.shutdown.borrow();
    let mut shutdown = shutdown_signal(shared.shutdown.clone());
    if shutting_down {
        conn.as_mut().graceful_shutdown();
    }
    let mut dog = pin!(Watchdog::new(state, limits.header_timeout, can_park));
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    log_connection_error(shared, peer, err.as_ref());
                }
                return Ended::Closed;
            }
            _ = &mut shutdown, if !shutting_down => {
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
                Expiry::SendTimeout => {
                    // Dropping hyper's connection ends the request in
                    // flight (its access-log line is written) and frees
                    // what fed it (a Python thread, a script, an upstream).
                    tracing::info!(
                        peer = ?peer.addr,
                        "the client took no response bytes for {:?}; connection closed \
                         (--send-timeout / [limits] send_timeout)",
                        limits.send_timeout
                    );
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

/// Resolves when the worker begins its graceful shutdown. The connection
/// polls it on every wake-up of its task: it reads the channel's version
/// (one load) and polls the channel, which takes a lock, only to register
/// its waker once and when the version moved.
fn shutdown_signal(rx: watch::Receiver<bool>) -> impl Future<Output = ()> + Unpin {
    let probe = rx.clone();
    let mut changed = Box::pin(async move {
        let mut rx = rx;
        let _ = rx.changed().await;
    });
    let mut registered = false;
    std::future::poll_fn(move |cx| {
        if registered && !probe.has_changed().unwrap_or(true) {
            return Poll::Pending;
        }
        // Out of budget, tokio answers before storing the waker.
        registered = tokio::task::coop::has_budget_remaining();
        changed.as_mut().poll(cx)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_phase_reads_back_as_set() {
        let cell = PhaseCell::new(Duration::from_secs(5), Duration::from_secs(75));
        let Phase::Idle { since, limit } = cell.get() else {
            panic!("a new connection is idle");
        };
        assert_eq!(limit, Duration::from_secs(5));
        assert!(since <= Instant::now() && cell.is_idle());
        cell.set(PhaseCell::BUSY);
        assert_eq!(cell.get(), Phase::Busy);
        assert!(!cell.is_idle());
        cell.set(PhaseCell::HEAD);
        let head = cell.get();
        assert!(matches!(head, Phase::Head { since: s } if s >= since));
        assert_eq!(cell.get(), head, "the same word reads as the same phase");
        cell.set(PhaseCell::IDLE_KEPT);
        assert!(
            matches!(cell.get(), Phase::Idle { limit, .. } if limit == Duration::from_secs(75))
        );
    }

    fn limits(send_timeout: Duration) -> crate::config::Limits {
        crate::config::Limits {
            max_uri_length: 8192,
            max_header_bytes: 16384,
            max_headers: 100,
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            body_timeout: Duration::from_secs(60),
            send_timeout,
            max_connections: 10,
        }
    }

    /// Runs the watchdog for `secs` of (paused) time; what it decided, if
    /// anything.
    async fn watch_for(dog: Pin<&mut Watchdog<'_>>, secs: u64) -> Option<Expiry> {
        tokio::select! {
            expiry = dog => Some(expiry),
            _ = tokio::time::sleep(Duration::from_secs(secs)) => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_that_takes_no_byte_for_the_send_timeout_is_closed() {
        let state = ConnState::new(&limits(Duration::from_secs(60)));
        state.request_started();
        let mut dog = pin!(Watchdog::new(&state, Duration::from_secs(10), false));
        // A busy connection whose writes complete is never due.
        state.wrote(false);
        assert_eq!(watch_for(dog.as_mut(), 300).await, None);
        // The socket fills; a byte taken at 59 s starts the wait again.
        state.wrote(true);
        assert_eq!(watch_for(dog.as_mut(), 59).await, None);
        state.wrote(false);
        state.wrote(true);
        let blocked = Instant::now();
        assert_eq!(watch_for(dog.as_mut(), 61).await, Some(Expiry::SendTimeout));
        assert_eq!(
            blocked.elapsed(),
            Duration::from_secs(60),
            "at the limit, not after a step"
        );
        // The request having ended changes nothing: what hyper still holds
        // for this client would wait forever.
        let state = ConnState::new(&limits(Duration::from_secs(5)));
        state.request_started();
        let mut dog = pin!(Watchdog::new(&state, Duration::from_secs(10), false));
        state.wrote(true);
        state.request_finished();
        assert_eq!(watch_for(dog.as_mut(), 6).await, Some(Expiry::SendTimeout));
    }
}
