//! HTTP/1.1 connections to upstream servers: connect (TCP or unix socket,
//! bounded by `connect_timeout`), a socket wrapper that enforces
//! `send_timeout` and records when bytes last moved (for `read_timeout`),
//! and the per-server pool of idle keep-alive connections.
//!
//! hyper's client `conn` API rather than hyper-util's pooled `Client`: that
//! one needs `Send` bodies and a `Send` executor, while a worker runs every
//! connection on its own thread (a `LocalSet`), and request bodies stream
//! straight from the client connection. The pool here is a `Vec` per server,
//! most recently used first out.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Sleep;

use super::body::OutgoingBody;
use crate::config::UpstreamUrl;

/// An idle connection older than this is closed rather than reused.
const IDLE_MAX: Duration = Duration::from_secs(30);

/// When bytes last moved on a connection (either way), readable from the
/// request side while hyper's connection task owns the socket.
#[derive(Debug, Default)]
pub struct Activity(AtomicU64);

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

impl Activity {
    pub fn touch(&self) {
        let ms = base().elapsed().as_millis() as u64;
        self.0.store(ms, Ordering::Relaxed);
    }

    pub fn last(&self) -> Instant {
        base() + Duration::from_millis(self.0.load(Ordering::Relaxed))
    }
}

/// An open connection ready for a request.
pub struct Conn {
    pub sender: SendRequest<OutgoingBody>,
    pub activity: Arc<Activity>,
    /// It served a request before: the server may have closed it meanwhile.
    pub reused: bool,
}

/// Idle connections of one server, most recently used last.
#[derive(Default)]
pub struct IdleConns(std::cell::RefCell<Vec<(Conn, Instant)>>);

impl IdleConns {
    pub fn take(&self) -> Option<Conn> {
        let mut idle = self.0.borrow_mut();
        while let Some((mut conn, since)) = idle.pop() {
            if !conn.sender.is_closed() && since.elapsed() < IDLE_MAX {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    pub fn put(&self, conn: Conn, keep: usize) {
        if conn.sender.is_closed() || keep == 0 {
            return;
        }
        let mut idle = self.0.borrow_mut();
        if idle.len() >= keep {
            idle.remove(0);
        }
        idle.push((conn, Instant::now()));
    }
}

/// Why no connection was made.
#[derive(Debug)]
pub enum ConnectError {
    Io(io::Error),
    Timeout,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Io(e) => write!(f, "connect failed: {e}"),
            ConnectError::Timeout => f.write_str("connect timed out"),
        }
    }
}

/// Opens a new HTTP/1.1 connection; its driver runs as a local task (with
/// upgrades, so a `101` response can become a tunnel).
pub async fn connect(
    url: &UpstreamUrl,
    connect_timeout: Duration,
    send_timeout: Duration,
) -> Result<Conn, ConnectError> {
    let opened = tokio::time::timeout(connect_timeout, async {
        let stream = match url {
            UpstreamUrl::Http { host, port } | UpstreamUrl::Uwsgi { host, port } => {
                let s = TcpStream::connect((host.as_str(), *port)).await?;
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }
            UpstreamUrl::HttpUnix(path) | UpstreamUrl::UwsgiUnix(path) => {
                Stream::Unix(UnixStream::connect(Path::new(path)).await?)
            }
        };
        let activity = Arc::new(Activity::default());
        activity.touch();
        let io = TimedIo {
            inner: stream,
            send_timeout,
            stalled: None,
            activity: activity.clone(),
        };
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(io::Error::other)?;
        tokio::task::spawn_local(async move {
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!("upstream connection closed: {err}");
            }
        });
        Ok::<_, io::Error>(Conn {
            sender,
            activity,
            reused: false,
        })
    })
    .await;
    match opened {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(ConnectError::Io(e)),
        Err(_) => Err(ConnectError::Timeout),
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// The upstream socket: a write that stays blocked for `send_timeout` fails
/// with `TimedOut`; every byte moved touches `activity`.
struct TimedIo {
    inner: Stream,
    send_timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    activity: Arc<Activity>,
}

impl AsyncRead for TimedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = match &mut self.inner {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        };
        if buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl TimedIo {
    /// Runs a write; arms the stall timer while it is pending.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(&mut Stream, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match op(&mut self.inner, cx) {
            Poll::Ready(result) => {
                self.stalled = None;
                self.activity.touch();
                Poll::Ready(result)
            }
            Poll::Pending => {
                let limit = self.send_timeout;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                ready!(timer.as_mut().poll(cx));
                self.stalled = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "send_timeout: the upstream stopped reading",
                )))
            }
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().timed(cx, |s, cx| match s {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, data),
        })
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().timed(cx, |s, cx| match s {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
