//! The response body type every handler returns.
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
