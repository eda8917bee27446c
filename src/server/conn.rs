//! One client connection, from accept to close:
//!
//! 1. TLS handshake when the listener has a certificate (bounded by the
//!    header timeout);
//! 2. hyper serves HTTP/1.1 or HTTP/2 on it (told apart by the first bytes
//!    on a plain socket, exactly the protocol ALPN agreed on TLS), with
//!    HTTP/1.1 upgrades (the proxy tunnels WebSocket connections);
//! 3. a watchdog (`super::watchdog`) enforces our timeouts, which hyper
//!    alone cannot express:
//!    an idle keep-alive connection is closed quietly after the keep-alive
//!    timeout, and a request head that started arriving but is not complete
//!    within the header timeout (slowloris) gets `408` and the connection is
//!    closed, and a client whose socket takes no response byte for the send
//!    timeout is closed (an HTTP/2 stream whose window stays shut is reset
//!    by `super::send_timeout`);
//! 4. when the worker drains (`super::drain`), an HTTP/2 connection gets
//!    GOAWAY at once; an HTTP/1 one closes after its next response (which
//!    says `Connection: close`), or when idle past the drain grace;
//! 5. a plain HTTP/1 connection idle for a while leaves hyper and waits
//!    parked, without hyper's buffers, for its next request (`super::park`).
//!    hyper's own HTTP/1 connection serves it (no version detection), so
//!    that parking can end it as a drain does and take back the socket
//!    *and* any bytes hyper read but did not use (a pipelined request's
//!    beginning): they are read first when the connection is served again.
//!    Nothing the client sent is lost, whatever the timing.

use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use super::client_socket::ClientSocket;
use super::drain::Drain;
use super::front::HttpFront;
use super::park::{self, Park, Waiting};
use super::tls::Alpn;
use super::watchdog::{Expiry, Phase, PhaseCell, Watchdog};
use super::Shared;
use crate::request::body::RequestBody;
use crate::request::refusal::{self, Refusal};
use crate::request::sendfile::{SendQueue, SendfileSocket};
use crate::request::Peer;
use crate::service::{self, RequestContext};

/// What each request of an HTTP connection carries.
type Ctx = RequestContext<HttpFront>;

/// Shared between the socket wrapper, the service and the watchdog of one
/// connection (all on the same thread).
pub struct ConnState {
    pub(super) phase: PhaseCell,
    in_flight: AtomicUsize,
    /// HTTP/2 frames (pings, window updates) arrive between requests, so the
    /// head timeout only applies to HTTP/1.
    http2: AtomicBool,
    /// File ranges a body handed hyper placeholders for (plain HTTP/1).
    pub sendfile: Arc<SendQueue>,
    /// hyper is ending the connection so that the socket can be parked:
    /// the socket must stay open.
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
    pub(super) fn wrote(&self, blocked: bool) {
        let since = self.write_blocked.load(Relaxed);
        if blocked && since == 0 {
            let now = Instant::now().saturating_duration_since(self.phase.epoch);
            self.write_blocked.store(now.as_nanos() as u64 + 1, Relaxed);
        } else if !blocked && since != 0 {
            self.write_blocked.store(0, Relaxed);
        }
    }

    pub(super) fn is_write_blocked(&self) -> bool {
        self.write_blocked.load(Relaxed) != 0
    }

    /// When the send timeout closes the connection, while its socket takes
    /// no byte.
    pub(super) fn send_deadline(&self) -> Option<Instant> {
        match self.write_blocked.load(Relaxed) {
            0 => None,
            since => Some(self.phase.epoch + Duration::from_nanos(since - 1) + self.send_timeout),
        }
    }

    /// A client whose socket stays blocked this long is closed.
    pub(super) fn send_timeout(&self) -> Duration {
        self.send_timeout
    }

    /// hyper is ending the connection so that the socket can be parked.
    pub(super) fn is_parking(&self) -> bool {
        self.parking.load(Relaxed)
    }

    /// The connection speaks HTTP/2 (its first bytes were the preface).
    pub fn is_http2(&self) -> bool {
        self.http2.load(Relaxed)
    }

    /// A parked connection's next request is waiting: a new hyper
    /// connection reads it at once.
    fn unparked(&self) {
        self.parking.store(false, Relaxed);
        self.write_blocked.store(0, Relaxed);
        self.phase.set(PhaseCell::IDLE_NEW);
    }

    /// When an idle connection is closed (its deadline is past when it is
    /// not idle), given the worker's drain if it has begun.
    pub fn idle_deadline(&self, drain: Option<Drain>) -> Instant {
        match (self.phase.get(), drain) {
            (Phase::Idle { since, limit }, None) => since + limit,
            (Phase::Idle { since, limit }, Some(drain)) => drain.idle_deadline(since, limit),
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

    pub(super) fn bytes_arrived(&self, first: &[u8]) {
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

/// Serves one accepted connection until it closes.
pub async fn serve<S>(mut socket: S, peer: Peer, shared: Rc<Shared>)
where
    S: AsyncRead + AsyncWrite + SendfileSocket + Park + Unpin + Send + 'static,
{
    let state = Arc::new(ConnState::new(shared.limits()));
    let ctx = Rc::new(RequestContext {
        services: shared.services.clone(),
        front: HttpFront {
            shared: shared.clone(),
            state: state.clone(),
            plain: peer.raw_fd.is_some(),
        },
        peer,
    });
    let mut unread = Bytes::new();
    loop {
        // Bytes in hand are a request's beginning: hyper takes them at once.
        let waiting = if unread.is_empty() {
            park::wait_for_request(&mut socket, &state, &shared).await
        } else {
            Waiting::Http1
        };
        if waiting == Waiting::Closed {
            return;
        }
        state.unparked();
        shared.in_hyper.up();
        let ended = match (waiting, socket.alpn()) {
            (Waiting::Http1, _) => with_http1(socket, unread, &ctx, true).await,
            // TLS speaks exactly what ALPN agreed, and never parks.
            (_, Alpn::Http1) => with_http1(socket, unread, &ctx, false).await,
            (_, Alpn::H2) => {
                with_h2(socket, &ctx).await;
                Ended::Closed
            }
            (_, Alpn::NotTls) => {
                with_auto(socket, &ctx).await;
                Ended::Closed
            }
        };
        shared.in_hyper.down();
        match ended {
            Ended::Parked {
                socket: s,
                unread: u,
            } => (socket, unread) = (s, u),
            Ended::Closed => return,
        }
    }
}

/// How a hyper connection ended.
enum Ended<S> {
    /// The connection is open, out of hyper: its socket, and the bytes
    /// hyper read from it but did not use.
    Parked {
        socket: S,
        unread: Bytes,
    },
    Closed,
}

/// How a hyper connection's driver ([`drive`]) ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Drove {
    /// hyper ended the connection for parking, leaving the socket open.
    Parked,
    /// The same, at the idle deadline: the connection closes unless hyper
    /// had read the beginning of a request.
    IdleEnded,
    Closed,
}

/// `serve_http1`'s future, boxed by a plain function: an async fn would
/// keep room for it in its own state, parked connections included.
fn with_http1<'a, S>(
    socket: S,
    unread: Bytes,
    ctx: &'a Rc<Ctx>,
    can_park: bool,
) -> Pin<Box<impl Future<Output = Ended<S>> + 'a>>
where
    S: AsyncRead + AsyncWrite + SendfileSocket + Unpin + Send + 'static,
{
    Box::pin(serve_http1(socket, unread, ctx, can_park))
}

/// The same for `serve_auto`.
fn with_auto<'a, S>(socket: S, ctx: &'a Rc<Ctx>) -> Pin<Box<impl Future<Output = ()> + 'a>>
where
    S: AsyncRead + AsyncWrite + SendfileSocket + Unpin + Send + 'static,
{
    Box::pin(serve_auto(socket, ctx))
}

/// The same for `serve_h2`.
fn with_h2<'a, S>(socket: S, ctx: &'a Rc<Ctx>) -> Pin<Box<impl Future<Output = ()> + 'a>>
where
    S: AsyncRead + AsyncWrite + SendfileSocket + Unpin + Send + 'static,
{
    Box::pin(serve_h2(socket, ctx))
}

/// The service hyper calls for each request.
fn service_for(
    ctx: &Rc<Ctx>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<service::LoggedBody<HttpFront>>,
    Error = std::convert::Infallible,
    Future = impl Future<
        Output = Result<http::Response<service::LoggedBody<HttpFront>>, std::convert::Infallible>,
    >,
> {
    let ctx = ctx.clone();
    let body_timeout = ctx.services.limits.body_timeout;
    // hyper keeps room for this future in every connection it serves; it
    // is kept small (about 2 KiB: the rare handlers' futures
    // are boxed) rather than boxed per request, which measured 700 more
    // instructions per request.
    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        service::handle(
            req.map(|body| RequestBody::http(body, body_timeout)),
            ctx.clone(),
        )
    })
}

/// A connection known to speak HTTP/1, served by hyper's HTTP/1 connection
/// until it closes or parks. Parking ends it as a drain does (idle, it
/// writes nothing) and takes back the socket and hyper's unread bytes.
async fn serve_http1<S>(socket: S, unread: Bytes, ctx: &Rc<Ctx>, can_park: bool) -> Ended<S>
where
    S: AsyncRead + AsyncWrite + SendfileSocket + Unpin + Send + 'static,
{
    let io = TokioIo::new(ClientSocket::new(socket, unread, ctx.front.state.clone()));
    let mut conn = ctx
        .front
        .shared
        .http1
        .serve_connection(io, service_for(ctx))
        .with_upgrades();
    let drove = drive(
        Pin::new(&mut conn),
        |c| c.graceful_shutdown(),
        ctx,
        can_park,
    )
    .await;
    let parts = match (drove, conn.into_parts()) {
        (Drove::Parked | Drove::IdleEnded, Some(parts)) => parts,
        _ => return Ended::Closed,
    };
    let client = parts.io.into_inner();
    // An empty buffer still holds hyper's allocation: let it go.
    let unread = match (parts.read_buf.is_empty(), client.unread.is_empty()) {
        (true, true) => Bytes::new(),
        (false, true) => parts.read_buf,
        (_, false) => [parts.read_buf, client.unread].concat().into(),
    };
    let peer = ctx.peer.addr;
    match (drove, unread.is_empty()) {
        (Drove::IdleEnded, true) => return Ended::Closed,
        (_, true) => tracing::debug!(peer = ?peer, "idle connection parked"),
        // A request's beginning came with the last one (pipelined): it is
        // served at once, within the header timeout.
        (_, false) => tracing::debug!(peer = ?peer, "{} unread bytes served again", unread.len()),
    }
    Ended::Parked {
        socket: client.inner,
        unread,
    }
}

/// A connection that may speak HTTP/2 (or is TLS): hyper-util detects the
/// version. Never parked.
async fn serve_auto<S>(socket: S, ctx: &Rc<Ctx>)
where
    S: AsyncRead + AsyncWrite + SendfileSocket + Unpin + Send + 'static,
{
    let io = TokioIo::new(ClientSocket::new(
        socket,
        Bytes::new(),
        ctx.front.state.clone(),
    ));
    let conn = pin!(ctx
        .front
        .shared
        .http
        .serve_connection_with_upgrades(io, service_for(ctx)));
    drive(conn, |c| c.graceful_shutdown(), ctx, false).await;
}

/// A TLS connection that agreed on `h2`: HTTP/2 alone (hyper-util's auto
/// connection ignores `http2_only` when it serves upgrades; HTTP/2 has
/// none). Never parked.
async fn serve_h2<S>(socket: S, ctx: &Rc<Ctx>)
where
    S: AsyncRead + AsyncWrite + SendfileSocket + Unpin + Send + 'static,
{
    let io = TokioIo::new(ClientSocket::new(
        socket,
        Bytes::new(),
        ctx.front.state.clone(),
    ));
    let conn = pin!(ctx
        .front
        .shared
        .tls_http2
        .serve_connection(io, service_for(ctx)));
    drive(conn, |c| c.graceful_shutdown(), ctx, false).await;
}

/// Runs a hyper connection with our timeouts and the worker's drain, until
/// it closes or (`can_park`) it is ended for parking. `end` is the
/// connection's graceful shutdown: HTTP/1 closes once idle (at once if
/// idle now), HTTP/2 sends GOAWAY and finishes its streams.
async fn drive<C, E>(
    mut conn: Pin<&mut C>,
    end: impl Fn(Pin<&mut C>),
    ctx: &Ctx,
    can_park: bool,
) -> Drove
where
    C: Future<Output = Result<(), E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (shared, state, peer) = (&ctx.front.shared, &ctx.front.state, &ctx.peer);
    let limits = &shared.limits();
    let mut drain = shared.drain();
    let mut shutdown = shutdown_signal(shared.shutdown.clone());
    let mut dog = pin!(Watchdog::new(state, limits.header_timeout, can_park, drain));
    loop {
        tokio::select! {
            // The connection first: bytes that arrived are read (and the
            // phase moves on) before the watchdog judges the phase.
            biased;
            result = conn.as_mut() => {
                if let Err(err) = result {
                    log_connection_error(shared, peer, err.into().as_ref());
                }
                return Drove::Closed;
            }
            _ = &mut shutdown, if drain.is_none() => {
                let begun = shared.drain().expect("the drain is set before shutdown turns");
                drain = Some(begun);
                dog.as_mut().get_mut().drain(begun);
                // HTTP/1 waits: its next response says `Connection: close`,
                // and an idle connection gets the grace (the watchdog).
                if state.is_http2() {
                    end(conn.as_mut());
                }
            }
            expiry = dog.as_mut() => match expiry {
                Expiry::Idle if !can_park => {
                    end(conn.as_mut());
                    // A client that does not let the connection close (an
                    // HTTP/2 peer ignoring GOAWAY) is dropped after a grace period.
                    let _ = tokio::time::timeout(limits.header_timeout, conn.as_mut()).await;
                    return Drove::Closed;
                }
                Expiry::HeadTimeout => {
                    send_request_timeout(shared, peer);
                    return Drove::Closed;
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
                    return Drove::Closed;
                }
                // hyper's HTTP/1 connection, idle: it ends at once and writes
                // nothing; the socket stays open (`ClientSocket::poll_shutdown`)
                // for the caller to take back with what hyper read.
                Expiry::Idle | Expiry::Park => {
                    state.parking.store(true, Relaxed);
                    end(conn.as_mut());
                    let ended = tokio::time::timeout(limits.header_timeout, conn.as_mut()).await;
                    return match (ended, expiry) {
                        (Ok(Ok(())), Expiry::Park) => Drove::Parked,
                        (Ok(Ok(())), _) => Drove::IdleEnded,
                        _ => Drove::Closed,
                    };
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
        Some(e) if e.is_parse_too_large() => {
            service::log_refused(&shared.services, peer, 431);
            let limits = &shared.limits();
            let refusal = Refusal::HeadOverParserLimits {
                max_headers: limits.max_headers,
                max_bytes: limits.max_header_bytes + limits.max_uri_length,
            };
            refusal::log(&refusal, connection_scope(peer));
        }
        Some(e) if e.is_parse() => {
            service::log_refused(&shared.services, peer, 400);
            tracing::debug!(peer = ?peer.addr, "malformed request: {e}");
        }
        _ => tracing::debug!(peer = ?peer.addr, "connection closed: {err}"),
    }
}

/// A refusal before any route was chosen.
fn connection_scope(peer: &Peer) -> refusal::Scope<'_> {
    refusal::Scope {
        route: None,
        peer: peer.ip_text.as_str(),
    }
}

fn send_request_timeout(shared: &Shared, peer: &Peer) {
    let refusal = Refusal::HeadTimeout {
        after: shared.limits().header_timeout,
    };
    if let Some(fd) = peer.raw_fd {
        use nix::sys::socket::{send, MsgFlags};
        // Best effort: the socket buffer is empty between requests, so a
        // non-blocking send of these few bytes either fits or the client is gone.
        let _ = send(
            fd,
            &refusal::http1_bytes(&refusal),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        );
    }
    service::log_refused(&shared.services, peer, 408);
    refusal::log(&refusal, connection_scope(peer));
}
