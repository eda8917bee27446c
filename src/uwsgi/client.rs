//! The upstream side: send one request to a uwsgi server (uWSGI, another
//! portico's `--uwsgi-socket`) and stream its answer back.
//!
//! For the reverse proxy, the whole API is:
//!
//! ```ignore
//! let target = Target::parse("uwsgi+unix:/run/app.sock")?;   // or uwsgi://10.0.0.5:3031
//! let vars = uwsgi::client::request_vars(&parts, &ctx, Some(body_len));
//! match uwsgi::send(&target, vars, body, &Timeouts::default()).await {
//!     Ok(response) => response,                 // Response<crate::request::body::Body>, streaming
//!     Err(err) => { /* err.status(), err.reached_upstream() */ }
//! }
//! ```
//!
//! `vars` are the CGI meta-variables of [`crate::request::gateway_env`]; the body is
//! sent after the packet and must be exactly `CONTENT_LENGTH` bytes (the
//! uwsgi protocol has no chunked framing: a body of unknown length must be
//! buffered by the caller first; no `CONTENT_LENGTH` means no body).
//!
//! A request goes:
//! 1. encode the packet (vars too large for u16 sizes → [`UwsgiError::Encode`]);
//! 2. connect (TCP or unix) within `connect` ([`UwsgiError::Connect`],
//!    [`UwsgiError::ConnectTimeout`]: the app was not reached, so any
//!    request may be retried on another server);
//! 3. write the packet, then stream the body, each write within `send`;
//!    meanwhile read the response head (an app may answer before it has
//!    read the body); once the body is sent, each read within `read`;
//! 4. parse the head with `httparse` (status line + fields, at most
//!    [`MAX_HEAD`] bytes; `1xx` heads are skipped);
//! 5. return the response; its body streams from the socket (to its
//!    Content-Length, else to EOF; none for HEAD, 204, 304) while the rest
//!    of the request body keeps being sent. Errors after the head cut the
//!    body (the client sees a truncated response, not a clean one).

use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf};

use super::codec::{self, EncodeError, MODIFIER_WSGI};
use crate::request::body::Body;
use crate::request::gateway_env::{self, GatewayRequest, Mapping, Var};
use crate::request::headers;
use crate::request::read_timer::ReadTimer;
use crate::request::HandlerContext;

/// Largest response head accepted from an upstream.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head.
const MAX_FIELDS: usize = 128;
/// Room reserved for each read of the response body.
const READ_RESERVE: usize = 32 * 1024;

/// Where a uwsgi server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `uwsgi://HOST:PORT` (HOST may be a name, resolved at connect).
    Tcp(String),
    /// `uwsgi+unix:PATH` (`uwsgi+unix:///run/x.sock` also accepted).
    Unix(PathBuf),
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        if let Some(path) = url.strip_prefix("uwsgi+unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(format!("`{url}`: no socket path"));
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        if let Some(hostport) = url.strip_prefix("uwsgi://") {
            let hostport = hostport.trim_end_matches('/');
            let port_ok = hostport
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(format!("`{url}`: expected uwsgi://HOST:PORT"));
            }
            return Ok(Target::Tcp(hostport.to_string()));
        }
        Err(format!(
            "`{url}` is not uwsgi://HOST:PORT or uwsgi+unix:PATH"
        ))
    }
}

impl Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(hostport) => write!(f, "uwsgi://{hostport}"),
            Target::Unix(path) => write!(f, "uwsgi+unix:{}", path.display()),
        }
    }
}

/// Per-request time limits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// To establish the connection.
    pub connect: Duration,
    /// For each write of the packet or body to make progress.
    pub send: Duration,
    /// For each read of the response (head or body) to make progress.
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            send: Duration::from_secs(60),
            read: Duration::from_secs(60),
        }
    }
}

/// What went wrong before a response head arrived. Each variant names the
/// status a proxy answers with ([`UwsgiError::status`]) and whether the
/// request may have reached the app ([`UwsgiError::reached_upstream`]).
#[derive(Debug, thiserror::Error)]
pub enum UwsgiError {
    /// The vars do not fit a packet. 502; not sent.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Connection refused, no such socket, name not resolved. 502; not
    /// reached: safe to retry elsewhere.
    #[error("{target}: connect failed: {source}")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    /// No connection within the connect timeout. 504; not reached.
    #[error("{target}: connect timed out")]
    ConnectTimeout { target: String },
    /// Writing the packet or body failed (the upstream closed or reset).
    /// 502; may have reached the app.
    #[error("{target}: sending the request failed: {source}")]
    Send {
        target: String,
        source: std::io::Error,
    },
    /// The client's request body failed or ended short of its
    /// CONTENT_LENGTH. 400 (the client is usually gone); may have reached.
    #[error("{target}: request body: {reason}")]
    Body { target: String, reason: String },
    /// A write or read made no progress within its timeout. 504; may have
    /// reached the app.
    #[error("{target}: {what} timed out")]
    Timeout { target: String, what: &'static str },
    /// Reading the head failed or the connection closed before it was
    /// complete. 502; may have reached the app.
    #[error("{target}: reading the response failed: {source}")]
    Read {
        target: String,
        source: std::io::Error,
    },
    /// The head is not HTTP, too large, or framed in a way uwsgi does not
    /// use (chunked). 502; reached the app.
    #[error("{target}: bad response: {reason}")]
    BadResponse { target: String, reason: String },
}

impl UwsgiError {
    pub fn status(&self) -> StatusCode {
        match self {
            UwsgiError::ConnectTimeout { .. } | UwsgiError::Timeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            UwsgiError::Body { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// False when the app certainly did not see the request (retry is safe).
    pub fn reached_upstream(&self) -> bool {
        !matches!(
            self,
            UwsgiError::Encode(_) | UwsgiError::Connect { .. } | UwsgiError::ConnectTimeout { .. }
        )
    }
}

/// The vars a front server sends for `parts`: the CGI meta-variables
/// (`SCRIPT_NAME` empty, `PATH_INFO` the whole decoded path, the client
/// from `ctx.peer`, Authorization passed), and `REQUEST_SCHEME`.
/// `content_length` is the exact body length to be sent, if any.
pub fn request_vars(
    parts: &http::request::Parts,
    ctx: &HandlerContext<'_>,
    content_length: Option<u64>,
) -> Vec<Var> {
    let path_info: Vec<u8> = percent_encoding::percent_decode_str(parts.uri.path()).collect();
    let map = Mapping {
        script_name: b"",
        path_info: &path_info,
        content_length,
        pass_authorization: true,
    };
    let mut vars = gateway_env::meta_variables(&GatewayRequest::from_parts(parts), &map, ctx);
    let scheme: &[u8] = if ctx.peer.tls { b"https" } else { b"http" };
    vars.push(("REQUEST_SCHEME".into(), scheme.to_vec()));
    vars
}

/// Steps 1–5: sends `vars` and `body` to `target`, returns the response.
pub async fn send<B>(
    target: &Target,
    vars: Vec<Var>,
    body: B,
    timeouts: &Timeouts,
) -> Result<Response<Body>, UwsgiError>
where
    B: http_body::Body<Data = Bytes> + Unpin + 'static,
    B::Error: Display,
{
    let packet = codec::encode(MODIFIER_WSGI, &vars)?;
    let var = |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| &v[..]);
    let content_length = var("CONTENT_LENGTH")
        .and_then(headers::content_length)
        .unwrap_or(0);
    let head_only = var("REQUEST_METHOD") == Some(b"HEAD");
    let request = Exchange {
        target: target.to_string(),
        packet,
        content_length,
        head_only,
        timeouts: *timeouts,
    };
    let connect_err = |source| UwsgiError::Connect {
        target: request.target.clone(),
        source,
    };
    let timed_out = || UwsgiError::ConnectTimeout {
        target: request.target.clone(),
    };
    match target {
        Target::Tcp(hostport) => {
            let connect = tokio::net::TcpStream::connect(hostport.as_str());
            let stream = tokio::time::timeout(timeouts.connect, connect)
                .await
                .map_err(|_| timed_out())?
                .map_err(connect_err)?;
            let _ = stream.set_nodelay(true);
            request.run(stream, body).await
        }
        Target::Unix(path) => {
            let connect = tokio::net::UnixStream::connect(path);
            let stream = tokio::time::timeout(timeouts.connect, connect)
                .await
                .map_err(|_| timed_out())?
                .map_err(connect_err)?;
            request.run(stream, body).await
        }
    }
}

type Upload = Pin<Box<dyn Future<Output = Result<(), UwsgiError>>>>;

struct Exchange {
    target: String,
    packet: Vec<u8>,
    content_length: u64,
    head_only: bool,
    timeouts: Timeouts,
}

impl Exchange {
    /// Steps 3–5 on a connected socket.
    async fn run<S, B>(self, stream: S, body: B) -> Result<Response<Body>, UwsgiError>
    where
        S: AsyncRead + AsyncWrite + Unpin + 'static,
        B: http_body::Body<Data = Bytes> + Unpin + 'static,
        B::Error: Display,
    {
        let (mut rd, wr) = tokio::io::split(stream);
        let mut upload: Option<Upload> = Some(Box::pin(upload(
            wr,
            self.packet,
            body,
            self.content_length,
            self.timeouts.send,
            self.target.clone(),
        )));
        let mut upload_err = None;
        let mut buf = BytesMut::with_capacity(4096);
        let head = loop {
            // While the body is still going up, the upstream may be waiting
            // for it: its silence is not late. The upload's own limits
            // bound that time (`send` for the upstream, the body's timeout
            // for the client).
            let read_timeout = upload.is_none().then_some(self.timeouts.read);
            let read_head = read_head(&mut rd, &mut buf, &self.target, read_timeout);
            let result = match upload.as_mut() {
                None => read_head.await,
                Some(up) => tokio::select! {
                    head = read_head => head,
                    sent = up => {
                        upload = None;
                        match sent {
                            // The client's body broke off: the app cannot
                            // answer a request it got half of.
                            Err(err @ UwsgiError::Body { .. }) => return Err(err),
                            Err(err) => upload_err = Some(err),
                            Ok(()) => {}
                        }
                        continue;
                    }
                },
            };
            match result {
                Ok(head) if head.status.is_informational() => continue,
                Ok(head) => break head,
                // An upload that failed first explains a failed read better.
                Err(err) => return Err(upload_err.unwrap_or(err)),
            }
        };
        let no_body = self.head_only
            || head.status == StatusCode::NO_CONTENT
            || head.status == StatusCode::NOT_MODIFIED;
        let bad = |reason: &str| UwsgiError::BadResponse {
            target: self.target.clone(),
            reason: reason.into(),
        };
        let chunked = head
            .headers
            .get(header::TRANSFER_ENCODING)
            .is_some_and(|v| v.as_bytes() != b"identity");
        if chunked && !no_body {
            return Err(bad(
                "Transfer-Encoding in a uwsgi response is not supported",
            ));
        }
        let length = match head.headers.get(header::CONTENT_LENGTH) {
            None => None,
            Some(v) => Some(
                headers::content_length(v.as_bytes()).ok_or_else(|| bad("bad Content-Length"))?,
            ),
        };
        let mut response = Response::new(Body::empty());
        *response.status_mut() = head.status;
        *response.headers_mut() = head.headers;
        if let Some(reason) = head.reason {
            response.extensions_mut().insert(reason);
        }
        if !no_body && length != Some(0) {
            *response.body_mut() = Body::stream(UpstreamBody {
                rd,
                buf,
                remaining: length,
                upload,
                timer: ReadTimer::new(self.timeouts.read),
            });
        }
        Ok(response)
    }
}

/// Step 3's writer: the packet, then exactly `len` body bytes.
async fn upload<W, B>(
    mut wr: W,
    packet: Vec<u8>,
    mut body: B,
    len: u64,
    send_timeout: Duration,
    target: String,
) -> Result<(), UwsgiError>
where
    W: AsyncWrite + Unpin,
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Display,
{
    write_within(&mut wr, &packet, send_timeout, &target).await?;
    let mut sent = 0u64;
    while sent < len {
        let reason = match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(mut data) = frame.into_data() {
                    data.truncate((len - sent).min(data.len() as u64) as usize);
                    sent += data.len() as u64;
                    write_within(&mut wr, &data, send_timeout, &target).await?;
                }
                continue;
            }
            Some(Err(err)) => err.to_string(),
            None => format!("ended after {sent} of {len} bytes"),
        };
        return Err(UwsgiError::Body { target, reason });
    }
    let _ = wr.flush().await;
    Ok(())
}

async fn write_within<W: AsyncWrite + Unpin>(
    wr: &mut W,
    data: &[u8],
    limit: Duration,
    target: &str,
) -> Result<(), UwsgiError> {
    match tokio::time::timeout(limit, wr.write_all(data)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(UwsgiError::Send {
            target: target.to_string(),
            source,
        }),
        Err(_) => Err(UwsgiError::Timeout {
            target: target.to_string(),
            what: "sending the request",
        }),
    }
}

struct Head {
    status: StatusCode,
    reason: Option<hyper::ext::ReasonPhrase>,
    headers: http::HeaderMap,
}

/// Step 4: reads until a whole head is in `buf`, parses it and leaves the
/// bytes after it in `buf`.
async fn read_head<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    target: &str,
    read_timeout: Option<Duration>,
) -> Result<Head, UwsgiError> {
    let bad = |reason: String| UwsgiError::BadResponse {
        target: target.to_string(),
        reason,
    };
    loop {
        if !buf.is_empty() {
            let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
            let mut parsed = httparse::Response::new(&mut fields);
            match parsed.parse(buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let head = convert(&parsed).map_err(bad)?;
                    buf.advance(n);
                    return Ok(head);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(bad(format!("{e}"))),
            }
        }
        if buf.len() >= MAX_HEAD {
            return Err(bad(format!("head larger than {MAX_HEAD} bytes")));
        }
        buf.reserve(4096);
        let read = rd.read_buf(buf);
        let read = match read_timeout {
            Some(limit) => tokio::time::timeout(limit, read).await,
            None => Ok(read.await),
        };
        match read {
            Err(_) => {
                return Err(UwsgiError::Timeout {
                    target: target.to_string(),
                    what: "waiting for the response",
                })
            }
            Ok(Ok(0)) => {
                return Err(UwsgiError::Read {
                    target: target.to_string(),
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                })
            }
            Ok(Ok(_)) => {}
            Ok(Err(source)) => {
                return Err(UwsgiError::Read {
                    target: target.to_string(),
                    source,
                })
            }
        }
    }
}

fn convert(parsed: &httparse::Response<'_, '_>) -> Result<Head, String> {
    let code = parsed.code.ok_or("no status")?;
    let status = StatusCode::from_u16(code).map_err(|_| format!("status {code}"))?;
    let reason = parsed
        .reason
        .filter(|r| Some(*r) != status.canonical_reason() && !r.is_empty())
        .and_then(|r| hyper::ext::ReasonPhrase::try_from(r.as_bytes().to_vec()).ok());
    let mut headers = http::HeaderMap::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| format!("field name {:?}", field.name))?;
        let value =
            HeaderValue::from_bytes(field.value).map_err(|_| format!("value of {}", field.name))?;
        headers.append(name, value);
    }
    Ok(Head {
        status,
        reason,
        headers,
    })
}

/// Step 5: the response body from the socket, bounded by Content-Length
/// when there is one; drives the rest of the upload while it streams.
struct UpstreamBody<R> {
    rd: ReadHalf<R>,
    /// Body bytes that arrived with the head.
    buf: BytesMut,
    remaining: Option<u64>,
    upload: Option<Upload>,
    timer: ReadTimer,
}

impl<R: AsyncRead + Unpin> http_body::Body for UpstreamBody<R> {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(up) = this.upload.as_mut() {
            if let Poll::Ready(result) = up.as_mut().poll(cx) {
                if let Err(err) = result {
                    tracing::debug!("uwsgi upload ended early: {err}");
                }
                this.upload = None;
            }
        }
        if this.remaining == Some(0) {
            return Poll::Ready(None);
        }
        let data = if !this.buf.is_empty() {
            this.buf.split().freeze()
        } else {
            // Reserve, don't zero, and stay under 64 KiB: a fresh zeroed
            // 64 KiB per read, whose free makes glibc consolidate its heap,
            // showed up in the front's profile.
            this.buf.reserve(READ_RESERVE);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.rd), cx, &mut this.buf) {
                Poll::Pending => {
                    if !this.timer.expired(cx) {
                        return Poll::Pending;
                    }
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "uwsgi upstream sent nothing within the read timeout",
                    ))));
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(Ok(_)) => this.buf.split().freeze(),
            }
        };
        this.timer.progress();
        if data.is_empty() {
            return Poll::Ready(this.remaining.map(|left| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("uwsgi upstream closed with {left} body bytes missing"),
                ))
            }));
        }
        let data = match this.remaining.as_mut() {
            None => data,
            Some(left) => {
                let n = (*left).min(data.len() as u64);
                *left -= n;
                data.slice(..n as usize)
            }
        };
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
