//! Zero-copy file bodies on plain (not TLS) HTTP/1 connections, as nginx's
//! `sendfile on`: a file's bytes go from the page cache to the socket with
//! `sendfile(2)` and never enter user space.
//!
//! hyper owns the connection and only writes the `Bytes` a body yields, so a
//! file body yields *placeholders* instead: slices of a reserved buffer that
//! is never read or written, one per file range, after queueing that range
//! on the connection's [`SendQueue`]. The connection's socket wrapper finds
//! placeholders among the slices hyper writes and sends the queued ranges in
//! their place, in order. hyper sees an ordinary body of the right length, so
//! Content-Length, keep-alive, HEAD and errors work as for any body.
//!
//! This needs hyper to pass body chunks to the socket by reference (vectored
//! writes, which the server forces with `writev(true)`), never to copy them:
//! a copy would send the placeholder's zeros. The integration tests compare
//! served bytes with the files, so a hyper upgrade that changed this would
//! fail them.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;

/// Longest placeholder, hence the most one `sendfile` call is asked to send.
pub const MAX_CHUNK: usize = 1024 * 1024;

/// The reserved buffer. Zeroed memory from the allocator is untouched
/// virtual memory, so it costs no RSS as long as nothing reads it.
fn reserved() -> &'static [u8] {
    static RESERVED: OnceLock<&'static [u8]> = OnceLock::new();
    RESERVED.get_or_init(|| Box::leak(vec![0u8; MAX_CHUNK].into_boxed_slice()))
}

fn is_placeholder(data: &[u8]) -> bool {
    let reserved = reserved().as_ptr_range();
    !data.is_empty() && reserved.contains(&data.as_ptr())
}

/// File ranges a connection's body has handed hyper placeholders for, not
/// yet (fully) sent. `Send` because hyper wants the socket wrapper `Send`;
/// only the connection's own thread touches it.
#[derive(Default, Debug)]
pub struct SendQueue(Mutex<VecDeque<(Arc<File>, Range<u64>)>>);

impl SendQueue {
    /// Queues `range` of `file` (at most [`MAX_CHUNK`] bytes) and returns
    /// the placeholder the body yields for it.
    pub fn push(&self, file: Arc<File>, range: Range<u64>) -> Bytes {
        let len = (range.end - range.start).min(MAX_CHUNK as u64);
        let range = range.start..range.start + len;
        self.lock().push_back((file, range));
        Bytes::from_static(&reserved()[..len as usize])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Arc<File>, Range<u64>)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `bufs` to `socket`, with `sendfile` for the placeholders.
    /// Like a vectored write it may write less than all of `bufs`: the
    /// slices before the first placeholder, or part of that placeholder.
    pub fn poll_write<S: SendfileSocket>(
        &self,
        socket: &mut S,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match bufs.iter().position(|b| is_placeholder(b)) {
            None => socket.poll_write_plain(cx, bufs),
            Some(0) => self.poll_send_front(socket, cx, bufs[0].len()),
            // The head before a file: held back (MSG_MORE) to leave in the
            // same packet as the file's first bytes, as nginx's tcp_nopush.
            Some(first) => socket.poll_write_more(cx, &bufs[..first]),
        }
    }

    /// Sends up to `max` bytes of the front range.
    fn poll_send_front<S: SendfileSocket>(
        &self,
        socket: &mut S,
        cx: &mut Context<'_>,
        max: usize,
    ) -> Poll<io::Result<usize>> {
        let Some((file, range)) = self.lock().front().cloned() else {
            return Poll::Ready(Err(io::Error::other(
                "sendfile: a placeholder with no file range queued",
            )));
        };
        let count = (range.end - range.start).min(max as u64) as usize;
        let sent = std::task::ready!(socket.poll_sendfile(cx, &file, range.start, count))?;
        if sent == 0 {
            // The file shrank: cut the connection rather than send a body
            // shorter than its Content-Length.
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file shrank while sending: byte {} is gone", range.start),
            )));
        }
        let mut queue = self.lock();
        if let Some(front) = queue.front_mut() {
            front.1.start += sent as u64;
            if front.1.start == front.1.end {
                queue.pop_front();
            }
        }
        Poll::Ready(Ok(sent))
    }
}

/// A socket `sendfile` can write to.
pub trait SendfileSocket: tokio::io::AsyncWrite + Unpin + Sized {
    fn poll_write_plain(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write_vectored(std::pin::Pin::new(self), cx, bufs)
    }

    /// Like `poll_write_plain`, telling the kernel more data follows.
    fn poll_write_more(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_plain(cx, bufs)
    }

    /// Sends `count` bytes of `file` from `offset`; returns how many went.
    fn poll_sendfile(
        &mut self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        count: usize,
    ) -> Poll<io::Result<usize>>;
}

/// A tokio socket's readiness API, the same on TCP and unix sockets.
trait Readiness {
    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_write_io(&self, op: impl FnOnce() -> io::Result<usize>) -> io::Result<usize>;
}

/// Runs a non-blocking write syscall once the socket is writable, again
/// when readiness turns out stale (EAGAIN) or a signal interrupted it.
fn poll_write_io<S: Readiness>(
    socket: &S,
    cx: &mut Context<'_>,
    mut op: impl FnMut() -> nix::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        std::task::ready!(socket.poll_ready(cx))?;
        match socket.try_write_io(|| op().map_err(io::Error::from)) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            other => return Poll::Ready(other),
        }
    }
}

macro_rules! sendfile_socket {
    ($socket:ty) => {
        impl Readiness for $socket {
            fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.poll_write_ready(cx)
            }

            fn try_write_io(&self, op: impl FnOnce() -> io::Result<usize>) -> io::Result<usize> {
                self.try_io(tokio::io::Interest::WRITABLE, op)
            }
        }

        impl SendfileSocket for $socket {
            fn poll_write_more(
                &mut self,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                use nix::sys::socket::{sendmsg, MsgFlags};
                let fd = self.as_raw_fd();
                // nix has no name for MSG_MORE.
                let flags =
                    MsgFlags::from_bits_retain(nix::libc::MSG_MORE) | MsgFlags::MSG_NOSIGNAL;
                poll_write_io(self, cx, || sendmsg::<()>(fd, bufs, &[], flags, None))
            }

            fn poll_sendfile(
                &mut self,
                cx: &mut Context<'_>,
                file: &File,
                offset: u64,
                count: usize,
            ) -> Poll<io::Result<usize>> {
                let mut off = i64::try_from(offset).map_err(io::Error::other)?;
                let socket = self.as_fd();
                poll_write_io(self, cx, || {
                    nix::sys::sendfile::sendfile64(socket, file, Some(&mut off), count)
                })
            }
        }
    };
}

sendfile_socket!(tokio::net::TcpStream);
sendfile_socket!(tokio::net::UnixStream);

/// TLS must encrypt the bytes, so file bodies on TLS connections are read
/// into memory as usual and never queued here.
impl<S> SendfileSocket for tokio_rustls::server::TlsStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    fn poll_sendfile(
        &mut self,
        _cx: &mut Context<'_>,
        _file: &File,
        _offset: u64,
        _count: usize,
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::Error::other("sendfile on a TLS connection")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognised_and_ordinary_bytes_are_not() {
        let queue = SendQueue::default();
        let file = Arc::new(tempfile::tempfile().unwrap());
        let p = queue.push(file, 10..(10 + 3 * MAX_CHUNK as u64));
        assert_eq!(
            p.len(),
            MAX_CHUNK,
            "one placeholder covers at most MAX_CHUNK"
        );
        assert!(is_placeholder(&p));
        assert!(is_placeholder(&p[5..]));
        assert!(!is_placeholder(b"hello"));
        assert!(!is_placeholder(&[0u8; 16]));
        assert_eq!(queue.lock().front().unwrap().1, 10..(10 + MAX_CHUNK as u64));
    }
}
