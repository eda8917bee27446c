//! The body types of a handler: [`Body`] for the responses every handler
//! returns, [`RequestBody`] for the requests it takes.
//!
//! An enum rather than a boxed trait object so the common cases (no body, one
//! buffer) cost no allocation; streams (files, multipart ranges, later app
//! output) go through the boxed variant.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// A boxed stream of body chunks; errors cut the connection (the client sees
/// an incomplete response rather than a clean-looking truncated one).
pub type BoxStream = Pin<Box<dyn http_body::Body<Data = Bytes, Error = std::io::Error>>>;

pub enum Body {
    Empty,
    Full(Option<Bytes>),
    Stream(BoxStream),
}

impl Body {
    pub fn empty() -> Self {
        Body::Empty
    }

    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        if data.is_empty() {
            Body::Empty
        } else {
            Body::Full(Some(data))
        }
    }

    pub fn stream(
        body: impl http_body::Body<Data = Bytes, Error = std::io::Error> + 'static,
    ) -> Self {
        Body::Stream(Box::pin(body))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Body::Stream(s) => s.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(data) => data.is_none(),
            Body::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Body::Stream(s) => s.size_hint(),
        }
    }
}

/// The request body every handler takes: hyper's, or the bytes following a
/// uwsgi packet (`CONTENT_LENGTH` of them, read by the uwsgi connection and
/// handed over through a small channel, like hyper's own body). `Send`, so
/// a Python thread can read it.
pub enum RequestBody {
    Http(hyper::body::Incoming),
    Uwsgi(crate::uwsgi::PacketBody),
}

impl From<hyper::body::Incoming> for RequestBody {
    fn from(body: hyper::body::Incoming) -> Self {
        RequestBody::Http(body)
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            RequestBody::Http(b) => Pin::new(b).poll_frame(cx).map(|f| {
                f.map(|r| match r {
                    Ok(frame) if frame.is_trailers() => Err(trailers_refused()),
                    r => r.map_err(std::io::Error::other),
                })
            }),
            RequestBody::Uwsgi(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Http(b) => b.is_end_stream(),
            RequestBody::Uwsgi(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Http(b) => b.size_hint(),
            RequestBody::Uwsgi(b) => b.size_hint(),
        }
    }
}

/// Request trailers are refused. In HTTP/1 hyper reads a trailer section
/// up to the next CRLF and lets bytes a lenient front would take for the
/// next request disappear into it (a bare LF after `0\r\n`, found by the
/// `proxy_chunked` fuzz target): a request-smuggling surface. No handler
/// has a use for them (WSGI and CGI cannot see them; the proxy drops them),
/// so a body that carries any is a bad request.
fn trailers_refused() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "request trailers are not accepted",
    )
}
