//! The listener side: one uwsgi request per connection (as nginx's
//! `uwsgi_pass` and uWSGI use it), in order:
//!
//! 1. read the packet within the header timeout (`codec`); any refusal
//!    closes the connection with a log line, nothing reaches a handler;
//! 2. turn its vars into an HTTP request (`request`); the client it names
//!    (`REMOTE_ADDR`...) becomes the request's peer;
//! 3. run it through the same service as an HTTP request
//!    (`crate::service::handle`: limits, routes, static, CGI, WSGI, access
//!    log; this front-end's side of it is `UwsgiFront`),
//!    while a pump moves the `CONTENT_LENGTH` body bytes from the socket to
//!    the handler through a small channel (bounded memory);
//! 4. write the response as HTTP/1.1 (status line, fields, body) — the
//!    form every uwsgi front expects. Writing needs no parser, so hyper is
//!    not involved: the body ends with the connection (or its
//!    Content-Length, added when the size is known), `Connection: close`.
//!    A front that takes no byte for `--send-timeout` is cut off, as an
//!    HTTP client would be; the body timeout applies to the request body
//!    as on HTTP (`crate::request::body::RequestBody`);
//! 5. shut our side down, and give the front a moment to finish sending a
//!    body nobody read, so that closing does not reset the connection under
//!    the response it is still reading.

use std::future::Future;
use std::io::Write as _;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

pub mod request;

use crate::request::body::{Body, ChannelBody, RequestBody};
use crate::request::sendfile::SendQueue;
use crate::request::Peer;
use crate::service::{self, FrontEnd, LoggedBody, RequestContext, Services};
use crate::uwsgi::codec::{self, ProtocolError};

/// How long an unread request body may take to arrive after the response.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest piece of request body read from the socket at once.
const CHUNK: u64 = 64 * 1024;

/// Serves one accepted uwsgi connection until it closes.
pub async fn serve<S>(socket: S, socket_peer: Peer, services: Rc<Services>)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let limits = &services.limits;
    let (mut rd, wr) = tokio::io::split(socket);
    let mut wr = SendTimed::new(wr, limits.send_timeout);
    // 1. The packet.
    let limit = limits.max_header_bytes + limits.max_uri_length;
    let read = tokio::time::timeout(limits.header_timeout, codec::read_packet(&mut rd, limit));
    let vars = match read.await {
        Ok(Ok(vars)) => vars,
        Ok(Err(err)) => return refuse(&socket_peer, &err),
        Err(_) => return refuse(&socket_peer, &ProtocolError::Timeout),
    };
    // 2. The request.
    let decided = match request::decide(vars, socket_peer) {
        Ok(d) => d,
        Err(err) => return refuse(&socket_peer, &err),
    };
    // 3. Handler and body pump, side by side.
    let (tx, rx) = mpsc::channel(1);
    let body = ChannelBody::new(rx, decided.content_length);
    let req = decided
        .request
        .map(|()| RequestBody::channel(body, limits.body_timeout));
    let head_only = req.method() == Method::HEAD;
    let ctx = Rc::new(RequestContext {
        services: services.clone(),
        front: UwsgiFront,
        peer: decided.peer,
    });
    let respond = async move {
        let Ok(response) = service::handle(req, ctx).await;
        // 4. The response, 5. our side shut down.
        let written = write_response(&mut wr, response, head_only).await;
        let _ = wr.shutdown().await;
        written
    };
    let mut pump = pin!(pump(&mut rd, tx, decided.content_length));
    let mut respond = pin!(respond);
    let mut pumping = true;
    let written = loop {
        tokio::select! {
            written = &mut respond => break written,
            _ = &mut pump, if pumping => pumping = false,
        }
    };
    match written {
        Err(err) if err.kind() == std::io::ErrorKind::TimedOut => tracing::info!(
            peer = ?decided.peer.addr,
            "uwsgi: the front took no response bytes for {:?}; connection closed \
             (--send-timeout / [limits] send_timeout)",
            limits.send_timeout
        ),
        Err(err) => tracing::debug!(peer = ?decided.peer.addr, "uwsgi response cut: {err}"),
        Ok(()) => {}
    }
    if pumping {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, pump).await;
    }
}

/// A uwsgi connection carries one request, which ends with it; its
/// timeouts are this front-end's own (the packet's header timeout, the
/// send timeout of `SendTimed`, the request body's timeout), and its
/// responses are written by `write_response`, never with `sendfile`.
struct UwsgiFront;

impl FrontEnd for UwsgiFront {
    fn request_started(&self) {}

    fn request_finished(&self) {}

    fn sendfile(&self) -> Option<&std::sync::Arc<SendQueue>> {
        None
    }

    fn finish(&self, _: http::Version, _: &mut Response<Body>) {}
}

fn refuse(peer: &Peer, err: &ProtocolError) {
    match err {
        ProtocolError::Closed => tracing::debug!(peer = ?peer.addr, "uwsgi: {err}"),
        _ => tracing::warn!(peer = ?peer.addr, "uwsgi request refused, connection closed: {err}"),
    }
}

/// Moves `len` body bytes from the socket to the handler. When the handler
/// drops the body unread, the rest is read and discarded.
async fn pump<R: AsyncRead + Unpin>(
    rd: &mut R,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    len: u64,
) {
    let mut rd = rd.take(len);
    let mut tx = Some(tx);
    while rd.limit() > 0 {
        let mut buf = BytesMut::with_capacity(rd.limit().min(CHUNK) as usize);
        let result = match rd.read_buf(&mut buf).await {
            Ok(0) => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the front server closed the connection inside the request body",
            )),
            other => other.map(|_| buf.freeze()),
        };
        let failed = result.is_err();
        if let Some(sender) = &tx {
            if sender.send(result).await.is_err() {
                tx = None;
            }
        }
        if failed {
            return;
        }
    }
}

/// The socket towards the front: a write, flush or shutdown that makes no
/// progress for `limit` fails with `TimedOut`.
struct SendTimed<W> {
    inner: W,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<W> SendTimed<W> {
    fn new(inner: W, limit: Duration) -> Self {
        SendTimed {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Times `poll`: the stall timer runs while it is pending.
    fn timed<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut W>, &mut Context<'_>) -> Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>>
    where
        W: Unpin,
    {
        if let Poll::Ready(result) = poll(Pin::new(&mut self.inner), cx) {
            self.stalled = None;
            return Poll::Ready(result);
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        std::task::ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "send timeout: the front stopped reading",
        )))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for SendTimed<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().timed(cx, |w, cx| w.poll_write(cx, data))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().timed(cx, |w, cx| w.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().timed(cx, |w, cx| w.poll_shutdown(cx))
    }
}

/// Step 4. A first body chunk that is ready at once goes out with the head,
/// in one write.
async fn write_response<W: AsyncWrite + Unpin>(
    wr: &mut W,
    response: Response<LoggedBody<UwsgiFront>>,
    head_only: bool,
) -> std::io::Result<()> {
    let (parts, mut body) = response.into_parts();
    let status = parts.status;
    let no_body = head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut out = render_head(&parts, body.size_hint().exact(), no_body);
    if no_body {
        return wr.write_all(&out).await;
    }
    match body.frame().now_or_never() {
        Some(None) => return wr.write_all(&out).await,
        Some(Some(frame)) => {
            if let Ok(data) = frame?.into_data() {
                out.extend_from_slice(&data);
            }
        }
        None => {}
    }
    wr.write_all(&out).await?;
    drop(out);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            wr.write_all(&data).await?;
        }
    }
    wr.flush().await
}

/// Status line and fields. Framing fields are ours: Transfer-Encoding and
/// Connection are dropped (the body ends with the connection), a
/// Content-Length is added when the size is known.
fn render_head(parts: &http::response::Parts, exact: Option<u64>, no_body: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let reason = parts
        .extensions
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| r.as_bytes())
        .or_else(|| parts.status.canonical_reason().map(str::as_bytes))
        .unwrap_or(b"");
    let _ = write!(out, "HTTP/1.1 {} ", parts.status.as_u16());
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if *name == header::TRANSFER_ENCODING || *name == header::CONNECTION {
            continue;
        }
        push_field(&mut out, name.as_str(), value);
    }
    if !no_body && !parts.headers.contains_key(header::CONTENT_LENGTH) {
        if let Some(len) = exact {
            push_field(&mut out, "content-length", &HeaderValue::from(len));
        }
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &HeaderValue) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_front_that_takes_no_byte_for_the_send_timeout_is_cut_off() {
        let limit = Duration::from_secs(60);
        // The front never reads: 16 bytes fit, then every write waits.
        let (ours, _front) = tokio::io::duplex(16);
        let mut wr = SendTimed::new(ours, limit);
        let started = Instant::now();
        let err = wr.write_all(&[b'x'; 64]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), limit);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_front_that_keeps_reading_is_not_cut_off() {
        let (ours, mut front) = tokio::io::duplex(16);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            while got.len() < 64 {
                tokio::time::sleep(Duration::from_secs(50)).await;
                let n = front.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        let mut wr = SendTimed::new(ours, Duration::from_secs(60));
        wr.write_all(&[b'x'; 64]).await.unwrap();
        assert_eq!(reader.await.unwrap(), vec![b'x'; 64]);
    }
}
