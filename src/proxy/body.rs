//! The two bodies the proxy streams, chunk by chunk with nothing buffered:
//! the client's request body on its way up (counted against
//! `max_body_size`, its progress visible to the exchange), and the
//! upstream's response body on its way down (`read_timeout` between chunks;
//! its connection goes back to the pool once it is read to the end).

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::pool::Lease;
use crate::request::body::{BodyError, RequestBody};
use crate::request::read_timer::ReadTimer;

/// What the exchange needs to know about the request body while hyper's
/// connection task streams it.
#[derive(Debug)]
pub struct Progress {
    /// A chunk was taken from the client: the body cannot be sent again.
    pub started: Cell<bool>,
    /// The body went past `max_body_size` (and was cut).
    pub too_large: Cell<bool>,
    /// When the last chunk arrived from the client; a slow upload is not
    /// the upstream's silence.
    pub last: Cell<Instant>,
    /// The client's body failed (timeout, malformed, gone): the client's
    /// fault, answered with its status, never held against the server.
    pub client_fault: std::cell::RefCell<Option<BodyError>>,
    /// The body waits for the client's next bytes: an upstream that is
    /// silent meanwhile (waiting for the same bytes) is not late.
    pub waiting_on_client: Cell<bool>,
}

/// The client's request body on its way upstream.
pub struct OutgoingBody {
    inner: Option<RequestBody>,
    limit: u64,
    seen: u64,
    progress: Rc<Progress>,
}

impl OutgoingBody {
    pub fn empty() -> Self {
        Self::new(None, u64::MAX).0
    }

    /// `None` for a request without a body.
    pub fn new(inner: Option<RequestBody>, limit: u64) -> (Self, Rc<Progress>) {
        let progress = Rc::new(Progress {
            started: Cell::new(false),
            too_large: Cell::new(false),
            last: Cell::new(Instant::now()),
            client_fault: std::cell::RefCell::new(None),
            waiting_on_client: Cell::new(false),
        });
        let body = OutgoingBody {
            inner: inner.filter(|b| !b.is_end_stream()),
            limit,
            seen: 0,
            progress: progress.clone(),
        };
        (body, progress)
    }
}

impl http_body::Body for OutgoingBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let poll = Pin::new(inner).poll_frame(cx);
        this.progress.waiting_on_client.set(poll.is_pending());
        match poll {
            Poll::Ready(Some(Ok(frame))) => {
                this.progress.started.set(true);
                this.progress.last.set(Instant::now());
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        this.progress.too_large.set(true);
                        this.inner = None;
                        return Poll::Ready(Some(Err(io::Error::other(
                            "request body larger than max_body_size",
                        ))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.progress.started.set(true);
                this.inner = None;
                let err = io::Error::other(e.clone());
                *this.progress.client_fault.borrow_mut() = Some(e);
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or(SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// The upstream's response body on its way to the client.
pub struct UpstreamBody {
    inner: Incoming,
    timer: ReadTimer,
    lease: Lease,
}

impl UpstreamBody {
    pub fn new(inner: Incoming, read_timeout: Duration, mut lease: Lease) -> Self {
        if inner.is_end_stream() {
            lease.release();
        }
        UpstreamBody {
            inner,
            timer: ReadTimer::new(read_timeout),
            lease,
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer.progress();
                if this.inner.is_end_stream() {
                    this.lease.release();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.lease.discard();
                tracing::warn!(
                    "upstream {}: response body cut: {e}",
                    this.lease.server_label()
                );
                Poll::Ready(Some(Err(io::Error::other(e))))
            }
            Poll::Ready(None) => {
                this.lease.release();
                Poll::Ready(None)
            }
            Poll::Pending => {
                if !this.timer.expired(cx) {
                    return Poll::Pending;
                }
                let limit = this.timer.limit();
                this.lease.discard();
                tracing::error!(
                    "upstream {}: nothing received for read_timeout ({limit:?}) within the \
                     response body; cutting the response",
                    this.lease.server_label()
                );
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "upstream read timeout",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A uwsgi server's response body: holds the server's `Lease` (its count
/// of requests in flight) until the body is done.
pub struct UwsgiResponseBody {
    pub inner: crate::request::body::Body,
    /// Held (not read): the server counts the request in flight until dropped.
    pub _lease: Lease,
}

impl http_body::Body for UwsgiResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body as one uwsgi attempt reads it, shared with the retry
/// loop: when the attempt fails before reaching the app, the loop takes the
/// body (untouched) back for the next attempt.
pub struct UwsgiAttemptBody(pub Rc<std::cell::RefCell<OutgoingBody>>);

impl http_body::Body for UwsgiAttemptBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.borrow().is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.borrow().size_hint()
    }
}
