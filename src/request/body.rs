//! The body types of a handler: [`Body`] for the responses every handler
//! returns, [`RequestBody`] for the requests it takes.
//!
//! An enum rather than a boxed trait object so the common cases (no body, one
//! buffer) cost no allocation; streams (files, multipart ranges, later app
//! output) go through the boxed variant.
//!
//! Every handler reads the client's body through [`RequestBody`], which
//! enforces `--body-timeout` and says whose fault a failed read is: a
//! [`BodyError`] is always the client's (timeout, malformed framing, gone),
//! never the app's or an upstream's. What went wrong is also kept in a
//! [`Fault`] cell the access log reads, so the logged status says what
//! happened whatever the handler managed to answer.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::request::read_timer::ReadTimer;
use bytes::Bytes;
use http::StatusCode;
use http_body::{Body as _, Frame, SizeHint};
use tokio::sync::mpsc;

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

/// Why a request body could not be read to its end: always the client's
/// doing. Each variant names the status it answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// 408 (connection closed): no body byte for `--body-timeout` while a
    /// handler waited for one.
    #[error("no request-body bytes for {}", seconds(*.0))]
    Timeout(Duration),
    /// 400 (connection closed): the body's framing is broken (a bad chunk
    /// size or extension, a chunk without its CRLF).
    #[error("malformed request body: {0}")]
    Malformed(String),
    /// The client closed or reset the connection (or its HTTP/2 stream)
    /// inside the body. Nobody reads the answer; logged as 499, nginx's
    /// "client closed request".
    #[error("the client went away inside the request body ({0})")]
    Gone(String),
}

impl BodyError {
    /// The status a handler answers with (when no response started yet).
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Malformed(_) | BodyError::Gone(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The status the access log shows for the request.
    pub fn log_status(&self) -> u16 {
        match self {
            BodyError::Gone(_) => CLIENT_CLOSED,
            other => other.status().as_u16(),
        }
    }

    /// Classifies a transport error: broken framing (hyper's decoder
    /// reports it as `InvalidData` or `InvalidInput`) is malformed,
    /// anything else (EOF, reset, an HTTP/2 stream error) means the client
    /// is gone.
    fn from_transport(err: &(dyn std::error::Error + 'static)) -> Self {
        use std::io::ErrorKind::{InvalidData, InvalidInput};
        let mut source = Some(err);
        while let Some(e) = source {
            let io = e.downcast_ref::<std::io::Error>();
            if io.is_some_and(|io| matches!(io.kind(), InvalidData | InvalidInput)) {
                return BodyError::Malformed(e.to_string());
            }
            source = e.source();
        }
        BodyError::Gone(err.to_string())
    }
}

/// Request trailers are refused. In HTTP/1 hyper reads a trailer section
/// up to the next CRLF and lets bytes a lenient front would take for the
/// next request disappear into it (a bare LF after `0\r\n`, found by the
/// `proxy_chunked` fuzz target): a request-smuggling surface. No handler
/// has a use for them (WSGI and CGI cannot see them; the proxy drops them),
/// so a body that carries any is a bad request.
fn trailers_refused() -> BodyError {
    BodyError::Malformed("request trailers are not accepted".into())
}

/// nginx's status for a client that closed its connection before the answer.
pub const CLIENT_CLOSED: u16 = 499;

/// `60s`, or `500ms` for a limit under a second.
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// What went wrong with a request body, set once by the body and read by
/// the access log (the handler may be on another thread, or long gone).
#[derive(Debug, Default)]
pub struct Fault(AtomicU8);

impl Fault {
    const TIMEOUT: u8 = 1;
    const MALFORMED: u8 = 2;
    const GONE: u8 = 3;

    /// The first fault is the one that counts.
    fn set(&self, err: &BodyError) {
        let code = match err {
            BodyError::Timeout(_) => Self::TIMEOUT,
            BodyError::Malformed(_) => Self::MALFORMED,
            BodyError::Gone(_) => Self::GONE,
        };
        let _ = self.0.compare_exchange(0, code, Relaxed, Relaxed);
    }

    /// The status the access log shows, when the body failed.
    pub fn log_status(&self) -> Option<u16> {
        match self.0.load(Relaxed) {
            Self::TIMEOUT => Some(StatusCode::REQUEST_TIMEOUT.as_u16()),
            Self::MALFORMED => Some(StatusCode::BAD_REQUEST.as_u16()),
            Self::GONE => Some(CLIENT_CLOSED),
            _ => None,
        }
    }
}

/// Where a request body comes from: hyper's, or bytes a front-end's task
/// reads and hands over through a small channel (the uwsgi listener: the
/// `CONTENT_LENGTH` bytes following a packet).
enum Source {
    Http(hyper::body::Incoming),
    Channel(ChannelBody),
}

/// The request body every handler takes. `Send`, so a Python thread can
/// read it (the timer works from any thread: it was made on the I/O
/// thread's runtime, whose driver fires it).
///
/// `--body-timeout` counts only while someone waits for bytes (nginx's
/// `client_body_timeout`: between two reads, not the whole upload): it is
/// armed when a read finds nothing and disarmed when bytes arrive, so a
/// handler that does not read (an app busy before its first `read()`)
/// never times its client out.
///
/// A request without a body holds nothing (`None`): every request's body
/// is moved around a few times, and most requests have none, so a body's
/// state is one pointer until there is one.
pub struct RequestBody(Option<Box<Streaming>>);

struct Streaming {
    source: Source,
    timer: ReadTimer,
    /// Once failed, every later read fails the same way: a body that broke
    /// off must never look complete.
    failed: Option<BodyError>,
    fault: Arc<Fault>,
}

impl RequestBody {
    /// hyper's body for a request; `limit` is `--body-timeout`. Call on the
    /// worker's runtime.
    #[inline]
    pub fn http(body: hyper::body::Incoming, limit: Duration) -> Self {
        match body.is_end_stream() {
            true => RequestBody(None),
            false => Self::streaming(Source::Http(body), limit),
        }
    }

    /// A body fed through a channel (the bytes after a uwsgi packet);
    /// `limit` is `--body-timeout`.
    pub fn channel(body: ChannelBody, limit: Duration) -> Self {
        match body.is_end_stream() {
            true => RequestBody(None),
            false => Self::streaming(Source::Channel(body), limit),
        }
    }

    fn streaming(source: Source, limit: Duration) -> Self {
        RequestBody(Some(Box::new(Streaming {
            source,
            timer: ReadTimer::new(limit),
            failed: None,
            fault: Arc::default(),
        })))
    }

    /// The cell the access log reads; `None` when there is no body.
    pub fn fault(&self) -> Option<Arc<Fault>> {
        self.0.as_ref().map(|s| s.fault.clone())
    }
}

impl Streaming {
    fn poll_source(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.source {
            Source::Http(b) => Pin::new(b).poll_frame(cx).map(|f| {
                f.map(|r| match r {
                    Ok(frame) if frame.is_trailers() => Err(trailers_refused()),
                    r => r.map_err(|e| BodyError::from_transport(&e)),
                })
            }),
            Source::Channel(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|e| BodyError::Gone(e.to_string())))),
        }
    }

    fn fail(&mut self, err: BodyError) -> BodyError {
        self.fault.set(&err);
        self.failed = Some(err.clone());
        err
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(err) = &self.failed {
            return Poll::Ready(Some(Err(err.clone())));
        }
        match self.poll_source(cx) {
            Poll::Pending if self.timer.expired(cx) => {
                let err = self.fail(BodyError::Timeout(self.timer.limit()));
                Poll::Ready(Some(Err(err)))
            }
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(self.fail(err)))),
            ready => {
                self.timer.progress();
                ready
            }
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut().0.as_mut() {
            None => Poll::Ready(None),
            Some(body) => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self.0.as_ref().map(|b| &b.source) {
            None => true,
            Some(Source::Http(b)) => b.is_end_stream(),
            Some(Source::Channel(b)) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.0.as_ref().map(|b| &b.source) {
            None => SizeHint::with_exact(0),
            Some(Source::Http(b)) => b.size_hint(),
            Some(Source::Channel(b)) => b.size_hint(),
        }
    }
}

/// A request body a front-end's own task reads from the socket and hands
/// over through a channel (the uwsgi listener's pump): `remaining` bytes,
/// a closed channel before them is a cut body.
pub struct ChannelBody {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    remaining: u64,
}

impl ChannelBody {
    /// `remaining` bytes, as the pump sends them on `rx`.
    pub(crate) fn new(rx: mpsc::Receiver<std::io::Result<Bytes>>, remaining: u64) -> Self {
        ChannelBody { rx, remaining }
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(data))) => {
                self.remaining = self.remaining.saturating_sub(data.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(err))) => {
                self.remaining = 0;
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                self.remaining = 0;
                Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed inside the request body",
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::time::Instant;

    /// A body of `len` bytes fed by the returned sender, as a uwsgi
    /// connection's pump feeds it.
    fn fed(len: u64, limit: Duration) -> (RequestBody, mpsc::Sender<std::io::Result<Bytes>>) {
        let (tx, rx) = mpsc::channel(4);
        let body = ChannelBody::new(rx, len);
        (RequestBody::channel(body, limit), tx)
    }

    #[tokio::test(start_paused = true)]
    async fn no_byte_for_the_body_timeout_is_a_timeout_that_sticks() {
        let limit = Duration::from_secs(60);
        let (mut body, tx) = fed(10, limit);
        let fault = body.fault().expect("a body is watched");
        tx.send(Ok(Bytes::from_static(b"abc"))).await.unwrap();
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "abc"
        );
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(err, BodyError::Timeout(limit));
        assert_eq!(started.elapsed(), limit, "fires at the limit, not before");
        assert_eq!(err.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(fault.log_status(), Some(408));
        // Bytes arriving late do not make the body look whole.
        tx.send(Ok(Bytes::from_static(b"defghij"))).await.unwrap();
        assert_eq!(body.frame().await.unwrap().unwrap_err(), err);
    }

    #[tokio::test(start_paused = true)]
    async fn each_byte_restarts_the_wait_and_time_between_reads_is_not_counted() {
        let limit = Duration::from_secs(60);
        let (mut body, tx) = fed(3, limit);
        let feeder = tokio::spawn(async move {
            for byte in [b"a", b"b", b"c"] {
                tokio::time::sleep(Duration::from_secs(59)).await;
                tx.send(Ok(Bytes::from_static(byte))).await.unwrap();
            }
        });
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            got.extend_from_slice(
                &frame
                    .expect("59 s between bytes is in time")
                    .into_data()
                    .unwrap(),
            );
            // A handler busy for longer than the limit between two reads
            // is not the client's slowness.
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        assert_eq!(got, b"abc");
        assert_eq!(body.fault().unwrap().log_status(), None);
        feeder.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_gone_mid_body_is_499_and_a_body_less_request_is_not_watched() {
        let (mut body, tx) = fed(10, Duration::from_secs(60));
        tx.send(Err(std::io::ErrorKind::UnexpectedEof.into()))
            .await
            .unwrap();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(matches!(err, BodyError::Gone(_)), "{err:?}");
        assert_eq!(err.log_status(), CLIENT_CLOSED);
        assert_eq!(body.fault().unwrap().log_status(), Some(499));
        let (empty, _tx) = fed(0, Duration::from_secs(60));
        assert!(empty.fault().is_none());
    }

    #[test]
    fn broken_framing_is_malformed_and_other_transport_errors_are_gone() {
        /// hyper's shape: its error, with the decoder's io::Error as source.
        #[derive(Debug)]
        struct Wrapped(std::io::Error);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error reading a body from connection")
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let framing = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid chunk size: overflow",
        );
        assert!(matches!(
            BodyError::from_transport(&Wrapped(framing)),
            BodyError::Malformed(m) if m.contains("overflow")
        ));
        let digit = std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "Invalid chunk size line: missing size digit",
        );
        assert!(matches!(
            BodyError::from_transport(&Wrapped(digit)),
            BodyError::Malformed(_)
        ));
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert!(matches!(
            BodyError::from_transport(&eof),
            BodyError::Gone(_)
        ));
        assert_eq!(seconds(Duration::from_millis(1500)), "1500ms");
        assert_eq!(seconds(Duration::from_secs(60)), "60s");
    }
}
