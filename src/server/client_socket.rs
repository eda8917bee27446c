//! The client's socket as hyper sees it ([`ClientSocket`]). Everything the
//! connection must know about its socket passes here: request bytes
//! arriving (they move the phase the watchdog reads), writes that the
//! socket does not take (a blocked stretch starts the send timeout), file
//! bodies' placeholders (written with `sendfile` from the connection's
//! queue), and hyper's shutdown when the connection only leaves hyper to
//! park (the socket stays open).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conn::ConnState;
use crate::request::sendfile::SendfileSocket;

/// The client's socket as hyper sees it: reports the arrival of request
/// bytes to the connection state, hands hyper first the bytes an earlier
/// hyper connection left unread, records writes and flushes the socket
/// does not take (the send timeout's blocked stretch), sends file bodies'
/// placeholders with `sendfile` from the connection's queue, and keeps the
/// socket open when hyper ends the connection for parking.
pub struct ClientSocket<S> {
    pub(super) inner: S,
    /// Read from the socket by an earlier hyper connection, not used by it:
    /// the beginning of the next request.
    pub(super) unread: Bytes,
    state: Arc<ConnState>,
}

impl<S> ClientSocket<S> {
    pub(super) fn new(inner: S, unread: Bytes, state: Arc<ConnState>) -> Self {
        ClientSocket {
            inner,
            unread,
            state,
        }
    }

    fn parking(&self) -> bool {
        self.state.is_parking()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientSocket<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            let replayed = self.unread.split_to(n);
            buf.put_slice(&replayed);
            self.state.bytes_arrived(&replayed);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.bytes_arrived(&buf.filled()[before..]);
        }
        result
    }
}

impl<S: AsyncWrite + SendfileSocket + Unpin> AsyncWrite for ClientSocket<S> {
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
        let ClientSocket { inner, state, .. } = self.get_mut();
        let result = state.sendfile.poll_write(inner, cx, bufs);
        state.wrote(result.is_pending());
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // TLS takes writes into its buffer and blocks in the flush.
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.state.wrote(result.is_pending());
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.parking() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
