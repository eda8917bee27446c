//! Test helpers shared by the server's paused-clock tests: a connection in
//! memory served by the real `conn::serve`, a worker's shared state, and
//! readers of what the client sees.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use clap::Parser;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

use super::park::Park;
use super::{conn, Peer, Shared};
use crate::request::sendfile::SendfileSocket;

/// A connection in memory, so that the clock can be paused (with real
/// sockets, paused time jumps ahead while the kernel delivers bytes).
/// It peeks by reading ahead; `parkable: false` behaves as TLS does.
/// A connected pair: the client's end and the server's socket.
pub(super) fn mem_socket(parkable: bool) -> (DuplexStream, MemSocket) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let socket = MemSocket {
        io: server,
        ahead: Vec::new(),
        parkable,
    };
    (client, socket)
}

pub(super) struct MemSocket {
    io: DuplexStream,
    ahead: Vec<u8>,
    parkable: bool,
}

impl AsyncRead for MemSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.ahead.is_empty() {
            let n = self.ahead.len().min(buf.remaining());
            buf.put_slice(&self.ahead[..n]);
            self.ahead.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for MemSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl SendfileSocket for MemSocket {
    fn poll_sendfile(
        &mut self,
        _cx: &mut Context<'_>,
        _file: &std::fs::File,
        _offset: u64,
        _count: usize,
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::Error::other("no sendfile in memory")))
    }
}

impl Park for MemSocket {
    async fn peek(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        if !self.parkable {
            return None;
        }
        if self.ahead.is_empty() {
            let mut chunk = [0u8; 4096];
            match self.io.read(&mut chunk).await {
                Ok(n) => self.ahead.extend_from_slice(&chunk[..n]),
                Err(err) => return Some(Err(err)),
            }
        }
        let n = buf.len().min(self.ahead.len());
        buf[..n].copy_from_slice(&self.ahead[..n]);
        Some(Ok(n))
    }
}

/// How the connection under test is held between requests.
#[derive(Clone, Copy, Debug)]
pub(super) enum Held {
    /// Idle in hyper (shorter than the park delay).
    InHyper,
    /// Parked (idle longer than the park delay).
    Parked,
    /// Never parked, as TLS connections are.
    Unparkable,
}

/// A worker's shared state with no route (every request answers 404,
/// nothing touches the disk) and a 1 s drain grace.
pub(super) fn worker() -> (Rc<Shared>, watch::Sender<bool>) {
    let cli =
        crate::config::Cli::parse_from(["portico", "--access-log", "off", "--drain-grace", "1"]);
    let config = crate::config::load(&cli).expect("config");
    let (stop, shutdown) = watch::channel(false);
    let shared = Shared::new(&config, shutdown, None).expect("shared state");
    (Rc::new(shared), stop)
}

/// Serves one in-memory connection (on a local task); returns the
/// client's end.
pub(super) fn connect(shared: &Rc<Shared>, held: Held) -> DuplexStream {
    let (client, socket) = mem_socket(!matches!(held, Held::Unparkable));
    let peer = Peer::new(None, None, false, None);
    tokio::task::spawn_local(conn::serve(socket, peer, shared.clone()));
    client
}

/// Reads one response: its head (lowercase) and status; `None` if the
/// connection closed first.
pub(super) async fn response(client: &mut (impl AsyncRead + Unpin)) -> Option<(u16, String)> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut res = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head_len) = res.parse(&bytes).expect("a response") {
            let length: usize = res
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .expect("a Content-Length");
            if bytes.len() >= head_len + length {
                let head = String::from_utf8_lossy(&bytes[..head_len]).to_lowercase();
                return Some((res.code.unwrap(), head));
            }
        }
        let n = client.read(&mut chunk).await.expect("read");
        if n == 0 {
            assert!(bytes.is_empty(), "closed inside a response: {bytes:?}");
            return None;
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// Waits for the server to close the connection; when it did.
pub(super) async fn closed(client: &mut (impl AsyncRead + Unpin)) -> Instant {
    let mut chunk = [0u8; 64];
    let n = client.read(&mut chunk).await.expect("read");
    assert_eq!(n, 0, "bytes instead of a close: {:?}", &chunk[..n]);
    Instant::now()
}

pub(super) fn local(
    test: impl std::future::Future<Output = ()>,
) -> impl std::future::Future<Output = ()> {
    let set = tokio::task::LocalSet::new();
    async move { set.run_until(test).await }
}
