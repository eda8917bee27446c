//! One request's way to a response head, across servers if need be:
//!
//! 1. pick a server (`Pool::pick`; never one already tried);
//! 2. take an idle connection to it, or open one (`connect_timeout`); a
//!    failed connect marks a failure and goes on to the next server;
//! 3. send the request and wait for the response head; the wait ends after
//!    `read_timeout` without a byte moving either way, not counting time in
//!    which the request body waits for the client (→ 504, not retried);
//! 4. on a failure before the head: a request hyper hands back unsent is
//!    sent again anywhere; one that may have reached the app is sent again
//!    only when its method is idempotent and it has no body (bodies stream
//!    and are never kept for a second try). A failure on a reused
//!    keep-alive connection is the server closing it, not a server fault:
//!    the retry takes a fresh connection and the server is not blamed;
//! 5. a failure caused by the client's body (`Progress::client_fault`: no
//!    bytes for `--body-timeout`, malformed chunked framing, the client
//!    gone) is the client's: answered with its status (408, 400), never
//!    retried, never counted against the server.
//!
//! Attempts that go on to another server log a warning here; the failure
//! the client is answered with is logged once, with its answer
//! (`crate::request::refusal`).
//!
//! A uwsgi server gets one request per connection through
//! `crate::uwsgi::send`; the body is lent to each attempt and taken back
//! when the attempt failed before reaching the app.

use std::cell::RefCell;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, Uri};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::{Lent, OutgoingBody, Progress};
use super::client::{self, Activity, Conn, ConnectError};
use super::error::ProxyError;
use super::headers;
use super::pool::{Lease, Pool};
use crate::config::UpstreamUrl;
use crate::request::body::Body;
use crate::request::gateway_env::Var;
use crate::uwsgi;

/// What a body-less idempotent request needs to be sent again.
pub struct Replay {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
}

impl Replay {
    fn build(&self) -> Request<OutgoingBody> {
        let mut req = Request::new(OutgoingBody::empty());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// What a uwsgi server needs besides the body: the request as CGI vars.
pub struct UwsgiRequest {
    pub vars: Vec<Var>,
    /// The body has no declared length, which the uwsgi protocol needs.
    pub length_unknown: bool,
}

pub enum UpstreamResponse {
    Http(Response<Incoming>),
    /// The uwsgi client's response, its body already streaming.
    Uwsgi(Response<Body>),
}

pub struct Exchanged {
    pub response: UpstreamResponse,
    /// The server and the connection the response arrives on.
    pub lease: Lease,
}

pub async fn exchange(
    pool: &Rc<Pool>,
    mut req: Request<OutgoingBody>,
    replay: Option<Replay>,
    progress: &Progress,
    client_key: &[u8],
    uwsgi_request: Option<&UwsgiRequest>,
) -> Result<Exchanged, ProxyError> {
    let cfg = &pool.config;
    // A client without Host (HTTP/1.0) and no `proxy_host`: each attempt
    // names its server.
    let host_missing = !req.headers().contains_key(http::header::HOST);
    let mut tried = vec![false; pool.servers.len()];
    let mut fresh_only = false;
    while let Some(i) = pool.pick(&tried, client_key) {
        let server = &pool.servers[i];
        let label = server.label.as_str();
        let mut lease = Lease::new(pool.clone(), i);
        if let Some(target) = uwsgi_target(&server.config.url) {
            let Some(u) = uwsgi_request else {
                return Err(ProxyError::NoServer(cfg.name.clone()));
            };
            if u.length_unknown {
                return Err(ProxyError::LengthRequired(label.to_string()));
            }
            let (parts, body) = req.into_parts();
            let lent = Rc::new(RefCell::new(body));
            let timeouts = uwsgi::Timeouts {
                connect: cfg.connect_timeout,
                send: cfg.send_timeout,
                read: cfg.read_timeout,
            };
            let sent = uwsgi::send(&target, u.vars.clone(), Lent(lent.clone()), &timeouts).await;
            let body =
                Rc::try_unwrap(lent).map_or_else(|_| OutgoingBody::empty(), RefCell::into_inner);
            req = Request::from_parts(parts, body);
            let err = match sent {
                Ok(response) => {
                    pool.succeeded(i);
                    return Ok(Exchanged {
                        response: UpstreamResponse::Uwsgi(response),
                        lease,
                    });
                }
                Err(err) => err,
            };
            if let Some(fault) = progress.client_fault.take() {
                return Err(ProxyError::ClientBody(fault));
            }
            if progress.too_large.get() {
                return Err(ProxyError::BodyTooLarge);
            }
            tried[i] = true;
            pool.failed(i, &err.to_string());
            if !err.reached_upstream() {
                tracing::warn!("upstream `{}`: {err}; trying the next server", cfg.name);
                continue;
            }
            match &replay {
                Some(replay) if err.status() != http::StatusCode::GATEWAY_TIMEOUT => {
                    tracing::warn!(
                        "upstream `{}`: {err}; retrying the idempotent request",
                        cfg.name
                    );
                    req = replay.build();
                    continue;
                }
                // Logged with the answer (`crate::request::refusal`).
                _ => return Err(ProxyError::Uwsgi(err)),
            }
        }
        let conn = match open(pool, i, fresh_only).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(
                    "upstream `{}` server {label}: {e}; trying the next server",
                    cfg.name
                );
                tried[i] = true;
                pool.failed(i, &e.to_string());
                continue;
            }
        };
        let reused = conn.reused;
        let activity = conn.activity.clone();
        let mut sender = conn.sender;
        if host_missing {
            headers::set_host(req.headers_mut(), &server.config.url);
        }
        let sent = sender.try_send_request(req);
        lease.conn = Some(Conn {
            sender,
            activity: activity.clone(),
            reused,
        });
        let Some(outcome) = head_within(sent, &activity, progress, cfg.read_timeout).await else {
            lease.discard();
            pool.failed(i, "read timeout");
            return Err(ProxyError::Timeout {
                server: label.to_string(),
                after: cfg.read_timeout,
                what: "read_timeout",
            });
        };
        let mut err = match outcome {
            Ok(response) => {
                pool.succeeded(i);
                return Ok(Exchanged {
                    response: UpstreamResponse::Http(response),
                    lease,
                });
            }
            Err(err) => err,
        };
        lease.discard();
        // The client's body failing is the client's fault: no server is
        // blamed, nothing is retried.
        if let Some(fault) = progress.client_fault.take() {
            return Err(ProxyError::ClientBody(fault));
        }
        if progress.too_large.get() {
            return Err(ProxyError::BodyTooLarge);
        }
        let message = err.error().to_string();
        if reused {
            fresh_only = true;
        } else {
            tried[i] = true;
            pool.failed(i, &message);
        }
        if let Some(unsent) = err.take_message() {
            tracing::debug!("upstream {label}: request not sent ({message}); sending it again");
            req = unsent;
            continue;
        }
        if is_timeout(err.error()) {
            return Err(ProxyError::Timeout {
                server: label.to_string(),
                after: cfg.send_timeout,
                what: "send_timeout",
            });
        }
        match &replay {
            Some(replay) if !progress.started.get() => {
                tracing::warn!(
                    "upstream `{}` server {label}: {message}; retrying the idempotent request",
                    cfg.name
                );
                req = replay.build();
            }
            _ => {
                return Err(ProxyError::Exchange {
                    server: label.to_string(),
                    message,
                });
            }
        }
    }
    Err(ProxyError::NoServer(cfg.name.clone()))
}

/// An idle connection to server `i` that is still usable, or a new one.
async fn open(pool: &Pool, i: usize, fresh_only: bool) -> Result<Conn, ConnectError> {
    let server = &pool.servers[i];
    let cfg = &pool.config;
    if !fresh_only {
        while let Some(mut conn) = server.idle.take() {
            // Ready at once unless the previous response's end is still
            // being processed by the connection task.
            let ready = tokio::time::timeout(cfg.connect_timeout, conn.sender.ready()).await;
            if matches!(ready, Ok(Ok(()))) {
                return Ok(conn);
            }
        }
    }
    client::connect(&server.config.url, cfg.connect_timeout, cfg.send_timeout).await
}

/// Waits for the response head; `None` once neither the upstream socket nor
/// the client's request body has moved a byte for `limit`. While the body
/// waits for the client's next bytes the upstream is waiting for them too,
/// so that time is not counted (`--body-timeout` bounds it).
async fn head_within<F: Future>(
    fut: F,
    activity: &Activity,
    progress: &Progress,
    limit: Duration,
) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let deadline = || {
        let last = Instant::from_std(activity.last()).max(progress.last.get());
        match progress.waiting_on_client.get() {
            true => Instant::now().max(last) + limit,
            false => last + limit,
        }
    };
    loop {
        let until = deadline();
        tokio::select! {
            out = &mut fut => return Some(out),
            _ = tokio::time::sleep_until(until) => {
                if Instant::now() >= deadline() {
                    return None;
                }
            }
        }
    }
}

fn uwsgi_target(url: &UpstreamUrl) -> Option<uwsgi::Target> {
    match url {
        UpstreamUrl::Uwsgi { host, port } if host.contains(':') => {
            Some(uwsgi::Target::Tcp(format!("[{host}]:{port}")))
        }
        UpstreamUrl::Uwsgi { host, port } => Some(uwsgi::Target::Tcp(format!("{host}:{port}"))),
        UpstreamUrl::UwsgiUnix(path) => Some(uwsgi::Target::Unix(path.clone())),
        _ => None,
    }
}

fn is_timeout(err: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        source = e.source();
    }
    false
}
