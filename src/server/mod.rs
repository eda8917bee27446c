//! The serving side of a worker: listeners, TLS, hyper connections, limits
//! and graceful drain. A worker runs one single-threaded tokio runtime that
//! owns all its connections (no locks or cross-thread hops on the request
//! path); several workers share the listening sockets, and `balance` keeps
//! one from taking every new connection.

pub mod balance;
mod client_socket;
mod conn;
mod drain;
mod front;
mod lifecycle;
pub mod listener;
mod park;
mod send_timeout;
#[cfg(test)]
mod test_conn;
mod tls;
pub mod uwsgi;
mod watchdog;

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioTimer;
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

pub use listener::BoundListener;

use crate::config::{Config, Protocol};
use crate::recycle::Parent;
use crate::request::Peer;
use crate::service::{Services, ServicesError};
use crate::wsgi::WsgiRuntime;
use drain::Drain;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Services(#[from] ServicesError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("listener {addr}: {source}")]
    Listener {
        addr: String,
        source: std::io::Error,
    },
}

/// Executor for HTTP/2 stream tasks: they stay on this worker's thread,
/// each bounded by the send timeout (`send_timeout`).
#[derive(Clone, Copy)]
struct LocalExec {
    send_timeout: Duration,
}

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: std::future::Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(send_timeout::watch_stream(fut, self.send_timeout));
    }
}

/// The HTTP/1 settings, the same on hyper's builder and on hyper-util's
/// (which mirrors its methods without sharing a trait).
macro_rules! http1_settings {
    ($b:expr, $limits:expr) => {
        $b.keep_alive(true)
            // Body chunks must reach the socket by reference, never copied
            // into hyper's buffer: `crate::request::sendfile` depends on it.
            .writev(true)
            .half_close(false)
            // hyper's buffer caps the whole request head: room for the
            // longest target plus the header block, so our own checks answer
            // 414 and 431 precisely below that.
            .max_buf_size($limits.max_header_bytes + $limits.max_uri_length)
            .max_headers($limits.max_headers)
            .timer(TokioTimer::new())
            .header_read_timeout(None);
    };
}

/// State shared by every connection of a worker: the service behind them,
/// and what only connections need.
pub struct Shared {
    services: Rc<Services>,
    /// HTTP/1.1 and HTTP/2, told apart by the first bytes.
    http: auto::Builder<LocalExec>,
    /// The same HTTP/1 settings, for connections known to speak HTTP/1:
    /// hyper's own connection hands back the socket and its unread bytes
    /// when the connection parks. Also for TLS connections that agreed on
    /// `http/1.1` (or on nothing).
    http1: http1::Builder,
    /// HTTP/2 alone, for TLS connections that agreed on `h2`.
    tls_http2: auto::Builder<LocalExec>,
    /// Turns true when the worker begins to drain.
    shutdown: watch::Receiver<bool>,
    /// Set (before `shutdown` turns) when the worker begins to drain.
    drain: Cell<Option<Drain>>,
    drain_grace: Duration,
    open_connections: HeapCount,
    /// Connections served by hyper (open and not parked), which holds
    /// buffers for each.
    in_hyper: HeapCount,
    all_closed: Notify,
    /// This worker's seat at the accept balance (none in a single process).
    balance: Option<balance::Balance>,
}

impl Shared {
    fn new(
        config: &Config,
        shutdown: watch::Receiver<bool>,
        wsgi: Option<WsgiRuntime>,
    ) -> Result<Self, ServerError> {
        let limits = &config.limits;
        let mut http = auto::Builder::new(LocalExec {
            send_timeout: limits.send_timeout,
        });
        http1_settings!(http.http1(), limits);
        let mut http1 = http1::Builder::new();
        http1_settings!(http1, limits);
        http.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .max_header_list_size(limits.max_header_bytes as u32)
            .max_pending_accept_reset_streams(64);
        Ok(Shared {
            services: Rc::new(Services::new(config, wsgi)?),
            http1,
            tls_http2: http.clone().http2_only(),
            http,
            shutdown,
            drain: Cell::new(None),
            drain_grace: config.drain_grace,
            open_connections: HeapCount::default(),
            in_hyper: HeapCount::default(),
            all_closed: Notify::new(),
            balance: balance::Balance::inherited(),
        })
    }

    fn connection_opened(&self) {
        self.open_connections.up();
        if let Some(balance) = &self.balance {
            balance.set_open(self.open_connections.get());
        }
    }

    fn connection_closed(&self) {
        self.open_connections.down();
        if let Some(balance) = &self.balance {
            balance.set_open(self.open_connections.get());
        }
        self.all_closed.notify_waiters();
    }
}

impl Shared {
    fn limits(&self) -> &crate::config::Limits {
        &self.services.limits
    }

    /// The drain begins: what each connection reads when `shutdown` turns.
    fn begin_drain(&self) {
        self.drain.set(Some(Drain {
            since: tokio::time::Instant::now(),
            grace: self.drain_grace,
        }));
    }

    /// The drain, once it has begun.
    fn drain(&self) -> Option<Drain> {
        self.drain.get()
    }

    /// The worker is draining: HTTP/1 responses say `Connection: close`.
    fn draining(&self) -> bool {
        self.drain.get().is_some()
    }
}

/// A count of things holding heap memory, which hands the freed heap back
/// to the system once a burst of them has mostly ended: glibc keeps it
/// otherwise (a worker that once served 10,000 connections would stay at
/// its peak RSS).
#[derive(Default)]
struct HeapCount {
    now: Cell<usize>,
    /// The most at once since memory was last handed back.
    peak: Cell<usize>,
}

impl HeapCount {
    /// Bursts smaller than this are not worth a `malloc_trim` (it walks the heap).
    const TRIM_AFTER_PEAK: usize = 1024;

    fn get(&self) -> usize {
        self.now.get()
    }

    fn up(&self) {
        let now = self.now.get() + 1;
        self.now.set(now);
        self.peak.set(self.peak.get().max(now));
    }

    fn down(&self) {
        let now = self.now.get() - 1;
        self.now.set(now);
        let peak = self.peak.get();
        if peak >= Self::TRIM_AFTER_PEAK && now <= peak / 4 {
            self.peak.set(now);
            // SAFETY: malloc_trim only releases free memory of the allocator
            // and is safe to call at any time.
            unsafe { nix::libc::malloc_trim(0) };
        }
    }
}

/// Runs a worker on already-bound listeners until SIGTERM/SIGINT/SIGQUIT
/// (or, without a master, a recycle: `--max-requests`), then drains
/// in-flight requests for at most the graceful timeout. `parent` is told
/// once the worker accepts connections, and asked for a replacement when
/// the worker wants to be recycled.
pub fn run_worker(
    config: &Config,
    listeners: Vec<BoundListener>,
    wsgi: Option<WsgiRuntime>,
    parent: Rc<dyn Parent>,
) -> Result<(), ServerError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ServerError::Runtime)?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let (stop, shutdown) = watch::channel(false);
        let recycle = wsgi.as_ref().map(WsgiRuntime::recycle_signal);
        let shared = Rc::new(Shared::new(config, shutdown, wsgi)?);
        let permits = Arc::new(Semaphore::new(config.limits.max_connections));
        // Without a master, this process holds the only copy of its
        // listening sockets: closing them would reset what is queued.
        let sole_holder: Vec<std::os::fd::RawFd> = match parent.supervised() {
            true => Vec::new(),
            false => listeners.iter().map(BoundListener::raw_fd).collect(),
        };
        for (bound, listener_config) in listeners.into_iter().zip(&config.listeners) {
            let tls = listener_config
                .tls
                .as_ref()
                .map(tls::acceptor)
                .transpose()?;
            let accepting = Accepting::new(bound)?;
            tokio::task::spawn_local(accept_loop(
                accepting,
                listener_config.protocol,
                tls,
                shared.clone(),
                permits.clone(),
            ));
        }
        let signals = lifecycle::WorkerSignals::install();
        if let Some(balance) = &shared.balance {
            balance.set_accepting(true);
        }
        parent.ready();
        // The master asks only ready workers to reopen their logs; one that
        // was starting during a SIGUSR1 catches up here.
        lifecycle::reopen_logs(&shared, &config.log, false);
        // A task of its own: this future is polled again on every tick of
        // the LocalSet (every request), its signal streams would be too.
        let stop_requested = tokio::task::spawn_local(lifecycle::serve_until_stopped(
            signals,
            recycle,
            parent,
            shared.clone(),
            config.log.clone(),
        ));
        let _ = stop_requested.await;
        if let Some(balance) = &shared.balance {
            balance.set_accepting(false);
        }
        tracing::info!(
            "shutting down: {} open connection(s), waiting up to {:?} (idle ones {:?})",
            shared.open_connections.get(),
            config.graceful_timeout,
            config.drain_grace
        );
        for &fd in &sole_holder {
            if let Err(err) = listener::stop_new_connections(fd) {
                tracing::warn!("cannot stop new connections before closing a listener: {err}");
            }
        }
        start_drain(&shared, &stop);
        drain_connections(&shared, config.graceful_timeout).await;
        Ok(())
    })
}

/// The worker stops taking work: its listeners close, its connections
/// drain (`drain`).
fn start_drain(shared: &Shared, stop: &watch::Sender<bool>) {
    shared.begin_drain();
    let _ = stop.send(true);
}

/// Waits until every connection has closed, at most `timeout`; the ones
/// still open are then dropped with the runtime.
async fn drain_connections(shared: &Shared, timeout: Duration) {
    let all_closed = async {
        while shared.open_connections.get() > 0 {
            shared.all_closed.notified().await;
        }
    };
    if tokio::time::timeout(timeout, all_closed).await.is_err() {
        tracing::warn!(
            "graceful timeout reached with {} connection(s) still open; closing them",
            shared.open_connections.get()
        );
    }
}

enum Accepting {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Accepting {
    fn new(bound: BoundListener) -> Result<Self, ServerError> {
        let addr = bound.display_addr();
        let err = |source| ServerError::Listener { addr, source };
        match bound {
            BoundListener::Tcp(l) => TcpListener::from_std(l).map(Accepting::Tcp).map_err(err),
            BoundListener::Unix(l, _) => {
                UnixListener::from_std(l).map(Accepting::Unix).map_err(err)
            }
        }
    }
}

async fn accept_loop(
    listener: Accepting,
    protocol: Protocol,
    tls: Option<TlsAcceptor>,
    shared: Rc<Shared>,
    permits: Arc<Semaphore>,
) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        // Past max_connections we stop accepting; the kernel backlog holds
        // new clients until a connection closes.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
            _ = shutdown.changed() => return,
        };
        if let Some(balance) = &shared.balance {
            balance.wait_turn(|| shared.open_connections.get()).await;
        }
        let accepted = tokio::select! {
            accepted = accept(&listener) => accepted,
            _ = shutdown.changed() => {
                drop(permit);
                return serve_queued(listener, protocol, tls, shared, permits);
            }
        };
        match accepted {
            Ok((stream, addr)) => spawn_connection(stream, addr, protocol, &tls, &shared, permit),
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::error!(
                    "accept failed: {err}; raise the open-file limit (ulimit -n) if this repeats"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves an accepted connection on a task of its own, which gives back
/// its permit and its count when the connection ends.
fn spawn_connection(
    stream: Stream,
    addr: Option<std::net::SocketAddr>,
    protocol: Protocol,
    tls: &Option<TlsAcceptor>,
    shared: &Rc<Shared>,
    permit: OwnedSemaphorePermit,
) {
    let shared = shared.clone();
    let tls = tls.clone();
    shared.connection_opened();
    tokio::task::spawn_local(async move {
        serve_stream(stream, addr, protocol, tls, shared.clone()).await;
        drop(permit);
        shared.connection_closed();
    });
}

/// The worker drains and its listener closes (dropped here). Connections
/// the kernel already completed wait in the listener's queue and would be
/// reset with it, though their clients may have sent a request: they are
/// served instead (each answer says `Connection: close`).
fn serve_queued(
    listener: Accepting,
    protocol: Protocol,
    tls: Option<TlsAcceptor>,
    shared: Rc<Shared>,
    permits: Arc<Semaphore>,
) {
    let queued = std::iter::from_fn(|| listener.accept_now()).map_while(Result::ok);
    for (stream, addr) in queued {
        // Past max_connections, the rest are reset as before.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            return;
        };
        spawn_connection(stream, addr, protocol, &tls, &shared, permit);
    }
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Accepting {
    /// A connection waiting in the queue, without waiting for one (`None`:
    /// the queue is empty). The reactor may not know yet of connections
    /// the kernel has queued, so this asks the kernel.
    fn accept_now(&self) -> Option<std::io::Result<(Stream, Option<std::net::SocketAddr>)>> {
        use nix::sys::socket::{accept4, SockFlag};
        use std::os::fd::{AsRawFd, FromRawFd};
        use std::os::unix::net::UnixStream as StdUnix;
        let fd = match self {
            Accepting::Tcp(l) => l.as_raw_fd(),
            Accepting::Unix(l) => l.as_raw_fd(),
        };
        let raw = match accept4(fd, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK) {
            Ok(raw) => raw,
            Err(nix::errno::Errno::EAGAIN) => return None,
            Err(err) => return Some(Err(err.into())),
        };
        Some(match self {
            Accepting::Tcp(_) => {
                // SAFETY: `raw` is a connected TCP socket we just accepted and own.
                let std = unsafe { std::net::TcpStream::from_raw_fd(raw) };
                let addr = std.peer_addr().ok();
                let _ = std.set_nodelay(true);
                tokio::net::TcpStream::from_std(std).map(|s| (Stream::Tcp(s), addr))
            }
            Accepting::Unix(_) => {
                // SAFETY: as above, a unix socket.
                let std = unsafe { StdUnix::from_raw_fd(raw) };
                tokio::net::UnixStream::from_std(std).map(|s| (Stream::Unix(s), None))
            }
        })
    }
}

async fn accept(listener: &Accepting) -> std::io::Result<(Stream, Option<std::net::SocketAddr>)> {
    match listener {
        Accepting::Tcp(l) => {
            let (s, addr) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((Stream::Tcp(s), Some(addr)))
        }
        Accepting::Unix(l) => l.accept().await.map(|(s, _)| (Stream::Unix(s), None)),
    }
}

/// The connection's future, boxed per kind of connection. A plain
/// function, not an async one: an async fn keeps room in its own state for
/// every future it creates, even one moved into a box at once, and this
/// state is in the task each connection spawns (it measured 5 KiB).
fn serve_stream(
    stream: Stream,
    addr: Option<std::net::SocketAddr>,
    protocol: Protocol,
    tls: Option<TlsAcceptor>,
    shared: Rc<Shared>,
) -> Pin<Box<dyn Future<Output = ()>>> {
    use std::os::fd::AsRawFd;
    let (raw_fd, local) = match &stream {
        Stream::Tcp(s) => (s.as_raw_fd(), s.local_addr().ok()),
        Stream::Unix(s) => (s.as_raw_fd(), None),
    };
    let mut peer = Peer::new(addr, local, tls.is_some(), Some(raw_fd));
    if protocol == Protocol::Uwsgi {
        return match stream {
            Stream::Tcp(s) => Box::pin(uwsgi::serve(s, peer, shared.services.clone())),
            Stream::Unix(s) => Box::pin(uwsgi::serve(s, peer, shared.services.clone())),
        };
    }
    let Some(acceptor) = tls else {
        return match stream {
            Stream::Tcp(s) => Box::pin(conn::serve(s, peer, shared)),
            Stream::Unix(s) => Box::pin(conn::serve(s, peer, shared)),
        };
    };
    // Bytes written straight to the socket would corrupt the TLS stream.
    peer.raw_fd = None;
    match stream {
        Stream::Tcp(s) => Box::pin(serve_tls(s, acceptor, peer, shared)),
        Stream::Unix(s) => Box::pin(serve_tls(s, acceptor, peer, shared)),
    }
}

/// The TLS handshake (bounded by the header timeout), then the connection.
async fn serve_tls<S>(socket: S, acceptor: TlsAcceptor, peer: Peer, shared: Rc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let timeout = shared.limits().header_timeout;
    match tokio::time::timeout(timeout, acceptor.accept(socket)).await {
        Ok(Ok(tls_stream)) => conn::serve(tls_stream, peer, shared).await,
        Ok(Err(err)) => tracing::debug!(peer = ?peer.addr, "TLS handshake failed: {err}"),
        Err(_) => tracing::debug!(peer = ?peer.addr, "TLS handshake timed out"),
    }
}

/// Checks at start-up what a worker would otherwise find only later: the TLS
/// certificates and keys load, and the access log can be opened.
pub fn check(config: &Config) -> Result<(), ServerError> {
    for listener in &config.listeners {
        if let Some(files) = &listener.tls {
            tls::acceptor(files)?;
        }
    }
    crate::log::AccessLog::open(&config.log)
        .map_err(|err| ServerError::Services(ServicesError::AccessLog(err)))?;
    Ok(())
}
