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
//! One loop does all of this for both kinds of server: each try is an
//! attempt (`attempt_http`, `attempt_uwsgi`) whose failure, an
//! [`AttemptError`], says whether the server was reached and whom it
//! blames; the loop marks, logs and retries from that alone.
//!
//! A uwsgi server gets one request per connection through
//! `crate::uwsgi::send`; the body is shared with each attempt and taken back
//! when the attempt failed before reaching the app.

use std::cell::RefCell;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, Uri};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::{OutgoingBody, Progress, UwsgiAttemptBody};
use super::client::{self, Activity, Conn, ConnectError};
use super::error::{AttemptError, Blame, ProxyError};
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
        let label = pool.servers[i].label.as_str();
        let lease = Lease::new(pool.clone(), i);
        let attempt = match uwsgi_target(&pool.servers[i].config.url) {
            Some(target) => attempt_uwsgi(pool, lease, &target, req, uwsgi_request, progress).await,
            None => {
                let http = HttpAttempt {
                    fresh_only,
                    host_missing,
                };
                attempt_http(pool, i, lease, req, http, progress).await
            }
        };
        let failure = match attempt {
            Ok(exchanged) => {
                pool.succeeded(i);
                return Ok(exchanged);
            }
            Err(failure) => failure,
        };
        if let AttemptError::NotReached { blame, message, .. }
        | AttemptError::Reached { blame, message, .. } = &failure
        {
            match blame {
                Blame::Server => {
                    tried[i] = true;
                    pool.failed(i, message);
                }
                Blame::StaleConnection => fresh_only = true,
            }
        }
        match failure {
            AttemptError::Decided(error) => return Err(error),
            AttemptError::NotReached {
                request,
                message,
                connected: true,
                ..
            } => {
                tracing::debug!("upstream {label}: request not sent ({message}); sending it again");
                req = request;
            }
            AttemptError::NotReached {
                request, message, ..
            } => {
                tracing::warn!(
                    "upstream `{}` server {label}: {message}; trying the next server",
                    cfg.name
                );
                req = request;
            }
            AttemptError::Reached {
                error,
                message,
                replayable,
                ..
            } => match &replay {
                Some(replay) if replayable => {
                    tracing::warn!(
                        "upstream `{}` server {label}: {message}; retrying the idempotent request",
                        cfg.name
                    );
                    req = replay.build();
                }
                // Logged with the answer (`crate::request::refusal`).
                _ => return Err(error),
            },
        }
    }
    Err(ProxyError::NoServer(cfg.name.clone()))
}

/// How an HTTP attempt connects.
struct HttpAttempt {
    /// A reused connection failed before: take a fresh one.
    fresh_only: bool,
    /// Set the server's Host on the request.
    host_missing: bool,
}

/// One try at an HTTP server: a connection (idle or new), the request,
/// the response head within `read_timeout`.
async fn attempt_http(
    pool: &Pool,
    i: usize,
    mut lease: Lease,
    mut req: Request<OutgoingBody>,
    how: HttpAttempt,
    progress: &Progress,
) -> Result<Exchanged, AttemptError> {
    let cfg = &pool.config;
    let server = &pool.servers[i];
    let conn = match open(pool, i, how.fresh_only).await {
        Ok(conn) => conn,
        Err(e) => {
            return Err(AttemptError::NotReached {
                request: req,
                blame: Blame::Server,
                message: e.to_string(),
                connected: false,
            })
        }
    };
    let reused = conn.reused;
    let activity = conn.activity.clone();
    let mut sender = conn.sender;
    if how.host_missing {
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
        return Err(AttemptError::Reached {
            error: ProxyError::Timeout {
                server: server.label.clone(),
                after: cfg.read_timeout,
                what: "read_timeout",
            },
            blame: Blame::Server,
            message: "read timeout".to_string(),
            replayable: false,
        });
    };
    let mut err = match outcome {
        Ok(response) => {
            return Ok(Exchanged {
                response: UpstreamResponse::Http(response),
                lease,
            })
        }
        Err(err) => err,
    };
    lease.discard();
    // The client's body failing is the client's fault: no server is
    // blamed, nothing is retried.
    if let Some(decided) = client_side(progress) {
        return Err(decided);
    }
    // A reused keep-alive connection failing is the server closing it.
    let blame = match reused {
        true => Blame::StaleConnection,
        false => Blame::Server,
    };
    let message = err.error().to_string();
    if let Some(unsent) = err.take_message() {
        return Err(AttemptError::NotReached {
            request: unsent,
            blame,
            message,
            connected: true,
        });
    }
    let (error, replayable) = if is_timeout(err.error()) {
        let error = ProxyError::Timeout {
            server: server.label.clone(),
            after: cfg.send_timeout,
            what: "send_timeout",
        };
        (error, false)
    } else {
        let error = ProxyError::Exchange {
            server: server.label.clone(),
            message: message.clone(),
        };
        (error, !progress.started.get())
    };
    Err(AttemptError::Reached {
        error,
        blame,
        message,
        replayable,
    })
}

/// One try at a uwsgi server: one connection, one request. The body is
/// shared with the try (`UwsgiAttemptBody`) and taken back when the server
/// was not reached.
async fn attempt_uwsgi(
    pool: &Pool,
    lease: Lease,
    target: &uwsgi::Target,
    req: Request<OutgoingBody>,
    uwsgi_request: Option<&UwsgiRequest>,
    progress: &Progress,
) -> Result<Exchanged, AttemptError> {
    let cfg = &pool.config;
    let Some(u) = uwsgi_request else {
        return Err(AttemptError::Decided(ProxyError::NoServer(
            cfg.name.clone(),
        )));
    };
    if u.length_unknown {
        return Err(AttemptError::Decided(ProxyError::LengthRequired(
            lease.server_label().to_string(),
        )));
    }
    let (parts, body) = req.into_parts();
    let shared = Rc::new(RefCell::new(body));
    let timeouts = uwsgi::Timeouts {
        connect: cfg.connect_timeout,
        send: cfg.send_timeout,
        read: cfg.read_timeout,
    };
    let sent = uwsgi::send(
        target,
        u.vars.clone(),
        UwsgiAttemptBody(shared.clone()),
        &timeouts,
    )
    .await;
    let err = match sent {
        Ok(response) => {
            return Ok(Exchanged {
                response: UpstreamResponse::Uwsgi(response),
                lease,
            })
        }
        Err(err) => err,
    };
    if let Some(decided) = client_side(progress) {
        return Err(decided);
    }
    let message = err.to_string();
    if !err.reached_upstream() {
        let body =
            Rc::try_unwrap(shared).map_or_else(|_| OutgoingBody::empty(), RefCell::into_inner);
        return Err(AttemptError::NotReached {
            request: Request::from_parts(parts, body),
            blame: Blame::Server,
            message,
            connected: false,
        });
    }
    let replayable = err.status() != http::StatusCode::GATEWAY_TIMEOUT;
    Err(AttemptError::Reached {
        error: ProxyError::Uwsgi(err),
        blame: Blame::Server,
        message,
        replayable,
    })
}

/// The attempt failed because of the client's body (it broke off or grew
/// past `max_body_size`): the client's answer, no server blamed.
fn client_side(progress: &Progress) -> Option<AttemptError> {
    if let Some(fault) = progress.client_fault.take() {
        return Some(AttemptError::Decided(ProxyError::ClientBody(fault)));
    }
    if progress.too_large.get() {
        return Some(AttemptError::Decided(ProxyError::BodyTooLarge));
    }
    None
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
