//! The per-request pipeline between the front-ends (`crate::server`: HTTP
//! connections, the uwsgi listener) and the handlers. What happens to each
//! request, in order:
//!
//! 1. tell the front-end a request began (`FrontEnd::request_started`:
//!    the connection is busy, for its watchdog);
//! 2. the head checks RFC 9112 asks for and the parser does not make
//!    (`head`: Host, the target's authority replacing Host, target forms,
//!    transfer codings);
//! 3. refuse what breaks a limit: target too long (414), header fields too
//!    large (431);
//! 4. route by host and path (no route → 404);
//! 5. refuse a declared body over the route's `max_body_size` (413);
//! 6. try-files, then the route's handler;
//! 7. add `Server`, let the front-end have its last word
//!    (`FrontEnd::finish`: `Connection: close` while draining...), and wrap
//!    the body so that when it is finished (or the client is gone) the
//!    access-log line is written and the front-end hears the request ended.
//!
//! Every answer portico gives itself comes from `crate::request::refusal`,
//! which also logs the refusals. The per-worker state handlers need is
//! `Services`.

mod head;
mod services;

use std::convert::Infallible;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use tokio::time::Instant;

use crate::cgi;
use crate::config::{Handler, Limits};
use crate::log::Entry;
use crate::request::answer::status_page;
use crate::request::body::{Body, Fault, RequestBody, CLIENT_CLOSED};
use crate::request::refusal::{self, Refusal, Scope};
use crate::request::sendfile::SendQueue;
use crate::request::spool::Buffering;
use crate::request::{HandlerContext, Peer};
use crate::static_files::{self, StaticRequest};
use head::Early;
pub use services::{Services, ServicesError};

/// What the service needs from the front-end a request came through.
pub trait FrontEnd: 'static {
    /// A request begins: the connection is busy.
    fn request_started(&self);
    /// The request ended (answered, or its client went away).
    fn request_finished(&self);
    /// Where file bodies may be written straight to the socket with
    /// `sendfile`, when the connection allows it (plain HTTP/1).
    fn sendfile(&self) -> Option<&Arc<SendQueue>>;
    /// The front-end's last word on a response before it is logged and sent.
    fn finish(&self, version: http::Version, response: &mut Response<Body>);
}

static SERVER: HeaderValue = HeaderValue::from_static("portico");

/// One connection's (or uwsgi request's) view of the service.
pub struct RequestContext<F> {
    pub services: Rc<Services>,
    pub front: F,
    pub peer: Peer,
}

pub async fn handle<F: FrontEnd>(
    mut req: Request<RequestBody>,
    ctx: Rc<RequestContext<F>>,
) -> Result<Response<LoggedBody<F>>, Infallible> {
    ctx.front.request_started();
    let version = req.version();
    // Before the log fields: an absolute-form target's authority replaces Host.
    let early = head::check(&mut req);
    let log = ctx
        .services
        .access_log
        .enabled()
        .then(|| Box::new(LogFields::new(&req)));
    // The request's line and its end, from now on: if hyper drops this
    // future before a response exists (the client reset its HTTP/2 stream,
    // or closed its connection), the access log says 499 and the
    // front-end hears the request ended.
    let mut logged = LoggedBody {
        inner: Body::empty(),
        bytes: 0,
        log,
        ctx,
    };
    logged.set_status(CLIENT_CLOSED);
    let ctx = &logged.ctx;
    let mut response = match early {
        Ok(()) => {
            let sendfile = ctx
                .front
                .sendfile()
                .filter(|_| version <= http::Version::HTTP_11);
            respond(req, &ctx.services, ctx.peer, sendfile).await
        }
        Err(early) => answer_early(early, &ctx.peer),
    };
    response
        .headers_mut()
        .insert(header::SERVER, SERVER.clone());
    ctx.front.finish(version, &mut response);
    logged.set_status(response.status().as_u16());
    Ok(response.map(|body| {
        logged.inner = body;
        logged
    }))
}

/// Steps 3 to 6; `sendfile` is set when file bodies may go out with it.
async fn respond(
    req: Request<RequestBody>,
    services: &Services,
    peer: Peer,
    sendfile: Option<&Arc<SendQueue>>,
) -> Response<Body> {
    let limits = &services.limits;
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let path = req.uri().path();
    if let Some(refusal) = over_head_limits(&req, limits) {
        let route = services
            .router
            .find(host, path)
            .map(|m| m.route.prefix.as_str());
        return refusal::refuse(&refusal, scope(route, &peer));
    }
    let Some(matched) = services.router.find(host, path) else {
        return status_page(StatusCode::NOT_FOUND);
    };
    let route = matched.route;
    if let Some(len) = crate::request::headers::declared_length(req.headers())
        .filter(|&len| len > route.max_body_size)
    {
        let refusal = Refusal::BodyTooLarge {
            declared: Some(len),
            limit: route.max_body_size,
        };
        return refusal::refuse(&refusal, scope(Some(&route.prefix), &peer));
    }
    if let Some(opts) = &route.static_files {
        let static_req = StaticRequest {
            method: req.method(),
            headers: req.headers(),
            path,
            query: req.uri().query(),
            rel: matched.rel,
        };
        let outcome = static_files::decide(opts, &services.static_cache, &static_req);
        // try-files: a missing file goes on to the route's handler.
        if !(outcome.is_not_found() && route.handler.is_some()) {
            return static_files::render(outcome, &static_req, sendfile);
        }
    }
    let ctx = HandlerContext {
        script_name: if route.prefix == "/" {
            ""
        } else {
            &route.prefix
        },
        max_body_size: route.max_body_size,
        buffering: Buffering {
            on: route.request_buffering,
            memory: limits.body_buffer_size,
            temp_dir: &services.body_temp_dir,
        },
        peer,
        sendfile,
    };
    match &route.handler {
        // Boxed, so that every request's future is not as large as theirs.
        Some(Handler::Cgi(opts)) => Box::pin(cgi::serve(opts, &services.cgi, &ctx, req)).await,
        Some(Handler::Wsgi(opts)) => match &services.wsgi {
            Some(wsgi) => wsgi.serve(opts, &ctx, &services.static_cache, req).await,
            None => status_page(StatusCode::INTERNAL_SERVER_ERROR),
        },
        Some(Handler::Proxy(opts)) => {
            Box::pin(
                services
                    .proxy
                    .serve(opts, &ctx, &services.static_cache, req),
            )
            .await
        }
        None => status_page(StatusCode::NOT_FOUND),
    }
}

/// A target longer than `max_uri_length` (414) or a header block larger
/// than `max_header_size` (431).
fn over_head_limits(req: &Request<RequestBody>, limits: &Limits) -> Option<Refusal> {
    let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > limits.max_uri_length {
        return Some(Refusal::TargetTooLong {
            len: target_len,
            limit: limits.max_uri_length,
        });
    }
    let header_len = header_bytes(req.headers());
    if header_len > limits.max_header_bytes {
        return Some(Refusal::HeaderTooLarge {
            len: header_len,
            limit: limits.max_header_bytes,
        });
    }
    None
}

/// The answer to a request the head checks stopped (before routing).
fn answer_early(early: Early, peer: &Peer) -> Response<Body> {
    match early {
        Early::Refuse(refusal) => refusal::refuse(&refusal, scope(None, peer)),
        Early::ServerOptions => {
            let mut res = Response::new(Body::empty());
            *res.status_mut() = StatusCode::NO_CONTENT;
            res.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
            res
        }
    }
}

fn scope<'a>(route: Option<&'a str>, peer: &'a Peer) -> Scope<'a> {
    Scope {
        route,
        peer: peer.ip_text.as_str(),
    }
}

/// Size of the header block as sent on the wire (`name: value\r\n` each).
fn header_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// The request fields the access log needs, copied only when it is on.
struct LogFields {
    /// For the duration; not read when nothing is logged (a clock read per
    /// request is measurable at this rate).
    started: Instant,
    method: String,
    target: String,
    version: http::Version,
    status: u16,
    referer: Option<String>,
    user_agent: Option<String>,
    host: Option<String>,
    /// Set when the request body failed: the logged status says so
    /// (408, 400, 499) whatever the response was.
    body_fault: Option<Arc<Fault>>,
}

impl LogFields {
    fn new(req: &Request<RequestBody>) -> Self {
        let text = |name| {
            req.headers()
                .get(name)
                .map(|v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        LogFields {
            started: Instant::now(),
            method: req.method().to_string(),
            target: req
                .uri()
                .path_and_query()
                .map_or_else(|| req.uri().to_string(), |pq| pq.to_string()),
            version: req.version(),
            status: 0,
            referer: text(header::REFERER),
            user_agent: text(header::USER_AGENT),
            host: text(header::HOST).or_else(|| req.uri().authority().map(|a| a.to_string())),
            body_fault: req.body().fault(),
        }
    }
}

/// The response body as hyper sends it: counts bytes, and when dropped
/// (finished, or the client went away) writes the access-log line and tells
/// the connection the request is over.
pub struct LoggedBody<F: FrontEnd> {
    inner: Body,
    bytes: u64,
    log: Option<Box<LogFields>>,
    ctx: Rc<RequestContext<F>>,
}

impl<F: FrontEnd> http_body::Body for LoggedBody<F> {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll {
            if let Some(data) = frame.data_ref() {
                self.bytes += data.len() as u64;
            }
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<F: FrontEnd> LoggedBody<F> {
    fn set_status(&mut self, status: u16) {
        if let Some(log) = self.log.as_mut() {
            log.status = status;
        }
    }
}

impl<F: FrontEnd> Drop for LoggedBody<F> {
    fn drop(&mut self) {
        if let Some(f) = self.log.take() {
            self.ctx.services.access_log.write(&Entry {
                remote: self.ctx.peer.addr,
                method: &f.method,
                target: &f.target,
                version: f.version,
                status: f
                    .body_fault
                    .as_ref()
                    .and_then(|fault| fault.log_status())
                    .unwrap_or(f.status),
                bytes: self.bytes,
                duration: f.started.elapsed(),
                referer: f.referer.as_deref(),
                user_agent: f.user_agent.as_deref(),
                host: f.host.as_deref(),
            });
        }
        self.ctx.front.request_finished();
    }
}

/// An access-log line for a request refused before it reached a handler
/// (malformed, or its head timed out).
pub fn log_refused(services: &Services, peer: &Peer, status: u16) {
    services.access_log.write(&Entry {
        remote: peer.addr,
        method: "-",
        target: "-",
        version: http::Version::HTTP_11,
        status,
        bytes: 0,
        duration: std::time::Duration::ZERO,
        referer: None,
        user_agent: None,
        host: None,
    });
}
