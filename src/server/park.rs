//! Idle connections without hyper. hyper keeps a write buffer (8 KiB), a
//! read buffer (8 KiB or more) and the last header map for as long as it
//! serves a connection, idle or not: 22 KiB per idle keep-alive connection.
//! So a plain HTTP/1 connection idle for `PARK_AFTER` is *parked*: hyper
//! ends the connection gracefully (idle, it writes nothing) and hands back
//! the socket with any bytes it read but did not use (`super::conn`). With
//! no such bytes, the connection waits here, holding only the socket and
//! its small state, until the client sends the next request; then a new
//! hyper connection serves it (with such bytes, at once, reading them
//! first). New connections also wait here for their first bytes, which
//! tell HTTP/1 from an HTTP/2 preface without a read.
//!
//! While the worker drains, a waiting connection is kept for the drain
//! grace (`super::drain`): a request arriving in it is served.
//!
//! TLS connections are never parked: rustls may already hold decrypted
//! bytes the kernel no longer reports as readable.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::Interest;

use super::conn::ConnState;
use super::tls::Alpn;
use super::Shared;

/// How long a plain HTTP/1 connection stays idle in hyper before it is
/// parked. Long enough that a client between two requests of a burst never
/// pays for a new hyper connection; short next to keep-alive timeouts.
pub const PARK_AFTER: Duration = Duration::from_secs(1);

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A socket a connection can wait on without hyper.
pub trait Park {
    /// Waits until the client sends bytes or closes, and copies the first
    /// bytes into `buf` without consuming them (`Ok(0)`: the client closed).
    /// `None`: this kind of socket cannot be parked.
    async fn peek(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>>;

    /// The protocol a TLS handshake agreed, which is the only one the
    /// connection may speak.
    fn alpn(&self) -> Alpn {
        Alpn::NotTls
    }
}

impl Park for tokio::net::TcpStream {
    async fn peek(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        Some(tokio::net::TcpStream::peek(self, buf).await)
    }
}

impl Park for tokio::net::UnixStream {
    async fn peek(&mut self, buf: &mut [u8]) -> Option<io::Result<usize>> {
        use nix::sys::socket::{recv, MsgFlags};
        let fd = self.as_raw_fd();
        Some(loop {
            if let Err(err) = self.readable().await {
                break Err(err);
            }
            // try_io clears a stale readiness on EWOULDBLOCK, so this loop waits.
            match self.try_io(Interest::READABLE, || {
                recv(fd, buf, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
            }) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                result => break result,
            }
        })
    }
}

impl<S> Park for tokio_rustls::server::TlsStream<S> {
    async fn peek(&mut self, _buf: &mut [u8]) -> Option<io::Result<usize>> {
        None
    }

    fn alpn(&self) -> Alpn {
        super::tls::alpn(self)
    }
}

/// What the bytes waiting on a connection say.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Waiting {
    /// A request that is not an HTTP/2 preface: served by HTTP/1 alone.
    Http1,
    /// An HTTP/2 preface, or too few bytes to tell: hyper-util detects the
    /// version, and the connection is not parked (its connection cannot
    /// hand back the socket).
    Detect,
    /// The socket cannot be parked (TLS): hyper detects, and keeps it.
    Unparkable,
    /// The client closed, or the idle time (or the drain grace) ran out.
    Closed,
}

/// Waits for the next request's first bytes, at most until the idle
/// deadline of the connection's state (shortened to the drain grace when
/// the worker drains).
pub async fn wait_for_request<S: Park>(
    socket: &mut S,
    state: &ConnState,
    shared: &Shared,
) -> Waiting {
    let mut shutdown = shared.shutdown.clone();
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let drain = shared.drain();
        tokio::select! {
            peeked = socket.peek(&mut first) => return match peeked {
                None => Waiting::Unparkable,
                Some(Ok(0)) | Some(Err(_)) => Waiting::Closed,
                Some(Ok(n)) => classify(&first[..n]),
            },
            _ = tokio::time::sleep_until(state.idle_deadline(drain)) => return Waiting::Closed,
            // The drain began: wait again, until its grace.
            changed = shutdown.changed(), if drain.is_none() => if changed.is_err() {
                return Waiting::Closed;
            },
        }
    }
}

fn classify(first: &[u8]) -> Waiting {
    if H2_PREFACE.starts_with(first) {
        Waiting::Detect
    } else {
        Waiting::Http1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_http2_preface_or_its_beginning_needs_detection() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Waiting::Http1);
        assert_eq!(
            classify(b"POST /x HTTP/1.1\r\nHost: a\r\n\r\n"),
            Waiting::Http1
        );
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Waiting::Detect
        );
        assert_eq!(classify(b"PRI * HT"), Waiting::Detect);
        assert_eq!(classify(b"PRIX"), Waiting::Http1);
    }
}
