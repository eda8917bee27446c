//! The serving side of a worker: listeners, TLS, hyper connections, limits
//! and graceful drain. A worker runs one single-threaded tokio runtime that
//! owns all its connections (no locks or cross-thread hops on the request
//! path); several workers share the listening sockets and the kernel spreads
//! connections between them.

mod conn;
pub mod listener;
mod park;
mod send_timeout;
mod service;
mod tls;

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioTimer;
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{watch, Notify, Semaphore};
use tokio_rustls::TlsAcceptor;

pub(crate) use conn::ConnState;
pub use conn::Peer;
pub use listener::BoundListener;
pub use service::{body_refusal, status_page, Mount};
pub(crate) use service::{handle, LoggedBody, RequestContext};

use crate::config::{Config, Limits, Protocol};
use crate::log::AccessLog;
use crate::router::Router;
use crate::wsgi::WsgiRuntime;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
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

/// State shared by every connection of a worker.
pub struct Shared {
    router: Router,
    pub(crate) limits: Limits,
    access_log: AccessLog,
    /// HTTP/1.1 and HTTP/2, told apart by the first bytes.
    http: auto::Builder<LocalExec>,
    /// The same, for connections known to speak HTTP/1.
    http1: auto::Builder<LocalExec>,
    shutdown: watch::Receiver<bool>,
    open_connections: HeapCount,
    /// Connections served by hyper (open and not parked), which holds
    /// buffers for each.
    in_hyper: HeapCount,
    all_closed: Notify,
    wsgi: Option<WsgiRuntime>,
    /// The reverse proxy's upstream pools (health, idle connections).
    proxy: crate::proxy::Proxy,
    /// The static handler's open-file cache (per worker, like all of this).
    static_cache: crate::static_files::Cache,
}

impl Shared {
    fn new(
        config: &Config,
        shutdown: watch::Receiver<bool>,
        wsgi: Option<WsgiRuntime>,
    ) -> Result<Self, ServerError> {
        let limits = config.limits.clone();
        let mut http = auto::Builder::new(LocalExec {
            send_timeout: limits.send_timeout,
        });
        http.http1()
            .keep_alive(true)
            // Body chunks must reach the socket by reference, never copied
            // into hyper's buffer: `crate::sendfile` depends on it.
            .writev(true)
            .half_close(false)
            // hyper's buffer caps the whole request head: room for the
            // longest target plus the header block, so our own checks answer
            // 414 and 431 precisely below that.
            .max_buf_size(limits.max_header_bytes + limits.max_uri_length)
            .max_headers(limits.max_headers)
            .timer(TokioTimer::new())
            .header_read_timeout(None);
        http.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .max_header_list_size(limits.max_header_bytes as u32)
            .max_pending_accept_reset_streams(64);
        Ok(Shared {
            router: Router::new(&config.routes),
            limits,
            access_log: AccessLog::open(&config.log).map_err(ServerError::AccessLog)?,
            http1: http.clone().http1_only(),
            http,
            shutdown,
            open_connections: HeapCount::default(),
            in_hyper: HeapCount::default(),
            all_closed: Notify::new(),
            wsgi,
            proxy: crate::proxy::Proxy::new(config),
            static_cache: crate::static_files::Cache::new(),
        })
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

/// Runs a worker on already-bound listeners until SIGTERM/SIGINT (or
/// `--max-requests`), then drains in-flight requests for at most the
/// graceful timeout. `ready` runs once the worker accepts connections.
pub fn run_worker(
    config: &Config,
    listeners: Vec<BoundListener>,
    wsgi: Option<WsgiRuntime>,
    ready: impl FnOnce(),
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
        ready();
        // A task of its own: this future is polled again on every tick of
        // the LocalSet (every request), its signal streams would be too.
        let stop_requested = tokio::task::spawn_local(async move {
            tokio::select! {
                _ = wait_for_stop_signal() => {}
                _ = async { recycle.as_ref()?.notified().await; Some(()) }, if recycle.is_some() => {}
            }
        });
        let _ = stop_requested.await;
        tracing::info!(
            "shutting down: {} open connection(s), waiting up to {:?}",
            shared.open_connections.get(),
            config.graceful_timeout
        );
        let _ = stop.send(true);
        drain(&shared, config.graceful_timeout).await;
        Ok(())
    })
}

/// SIGTERM or SIGINT: the worker stops accepting and drains.
async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop this process with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn drain(shared: &Shared, timeout: Duration) {
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
        let accepted = tokio::select! {
            accepted = accept(&listener) => accepted,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((stream, addr)) => {
                let shared = shared.clone();
                let tls = tls.clone();
                shared.open_connections.up();
                tokio::task::spawn_local(async move {
                    serve_stream(stream, addr, protocol, tls, shared.clone()).await;
                    drop(permit);
                    shared.open_connections.down();
                    shared.all_closed.notify_waiters();
                });
            }
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

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
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
            Stream::Tcp(s) => Box::pin(crate::uwsgi::serve(s, peer, shared)),
            Stream::Unix(s) => Box::pin(crate::uwsgi::serve(s, peer, shared)),
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
    let timeout = shared.limits.header_timeout;
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
    AccessLog::open(&config.log).map_err(ServerError::AccessLog)?;
    Ok(())
}
