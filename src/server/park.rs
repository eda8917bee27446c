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
    use tokio::io::AsyncWriteExt;
    use tokio::time::Instant;

    use super::*;
    use crate::server::start_drain;
    use crate::server::test_conn::{closed, connect, local, mem_socket, response, worker, Held};

    const SECOND: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);
    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

    /// The whole connection (`conn::serve` over an in-memory socket, default
    /// limits: keep-alive 75 s): it leaves hyper at `PARK_AFTER`, not
    /// before, and parked, it is closed at the keep-alive deadline counted
    /// from its response, not before.
    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_parks_after_park_after_and_closes_at_the_keepalive_timeout() {
        local(async {
            let (shared, _stop) = worker();
            let mut client = connect(&shared, Held::Parked);
            client.write_all(GET).await.unwrap();
            assert!(response(&mut client).await.is_some(), "an answer");
            let answered = Instant::now();
            tokio::time::sleep(PARK_AFTER - MS).await;
            assert_eq!(shared.in_hyper.get(), 1, "parked before PARK_AFTER");
            tokio::time::sleep(2 * MS).await;
            assert_eq!(shared.in_hyper.get(), 0, "still in hyper after PARK_AFTER");
            let after = closed(&mut client).await - answered;
            assert!(
                after >= 75 * SECOND && after <= 75 * SECOND + 5 * MS,
                "closed {after:?} after its response, not at the keep-alive timeout"
            );
        })
        .await;
    }

    /// `wait_for_request` alone: it ends at the state's idle deadline, at
    /// the drain grace when the drain begins while it waits, and at once
    /// when a request arrives.
    #[tokio::test(start_paused = true)]
    async fn a_parked_wait_ends_at_the_idle_deadline_the_drain_grace_or_a_request() {
        local(async {
            let (shared, stop) = worker();
            let (mut client, mut socket) = mem_socket(true);
            let state = ConnState::new(shared.limits());
            state.request_started();
            state.request_finished();
            let start = Instant::now();
            let waiting = wait_for_request(&mut socket, &state, &shared).await;
            assert_eq!((waiting, start.elapsed()), (Waiting::Closed, 75 * SECOND));

            // A request 30 s in is taken then.
            state.request_started();
            state.request_finished();
            let start = Instant::now();
            let send = async {
                tokio::time::sleep(30 * SECOND).await;
                client.write_all(GET).await.unwrap();
            };
            let (waiting, ()) = tokio::join!(wait_for_request(&mut socket, &state, &shared), send);
            assert_eq!((waiting, start.elapsed()), (Waiting::Http1, 30 * SECOND));

            // The drain begins 10 s in: closed at its grace (1 s) after.
            let (_client, mut socket) = mem_socket(true);
            state.request_started();
            state.request_finished();
            let start = Instant::now();
            let drain = async {
                tokio::time::sleep(10 * SECOND).await;
                start_drain(&shared, &stop);
            };
            let (waiting, ()) = tokio::join!(wait_for_request(&mut socket, &state, &shared), drain);
            assert_eq!((waiting, start.elapsed()), (Waiting::Closed, 11 * SECOND));
        })
        .await;
    }

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
