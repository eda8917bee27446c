//! Why a proxied request got no upstream response; each variant names the
//! status the client is answered with, and [`ProxyError::refusal`] the
//! refusal line that is logged with it.

use std::time::Duration;

use http::StatusCode;

use crate::config::UpstreamConfig;
use crate::request::refusal::Refusal;
use crate::uwsgi::UwsgiError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Every server that could be tried refused, was down, or did not
    /// accept the connection within `connect_timeout`: 502.
    #[error("no server of upstream `{0}` could be reached")]
    NoServer(String),
    /// The server took the request but failed before a complete response
    /// head (reset, closed, malformed answer), and the request could not be
    /// retried (not idempotent, or its body was already sent): 502.
    #[error("upstream {server}: {message}")]
    Exchange { server: String, message: String },
    /// The server sent nothing for `read_timeout` before the response head,
    /// or a write to it stalled for `send_timeout`: 504.
    #[error("upstream {server}: timed out after {after:?} ({what})")]
    Timeout {
        server: String,
        after: Duration,
        what: &'static str,
    },
    /// The request body grew past the route's `max_body_size` while it was
    /// streamed upstream: 413.
    #[error("request body larger than max_body_size")]
    BodyTooLarge,
    /// A uwsgi server failed after it may have seen the request; the
    /// status is the uwsgi client's (502, 504 on a timeout, 400 when the
    /// client's body broke off).
    #[error(transparent)]
    Uwsgi(crate::uwsgi::UwsgiError),
    /// The client's request body failed: no bytes for `--body-timeout`
    /// (408), malformed framing (400), or the client went away (400,
    /// logged 499). The client's fault: no server is marked down, nothing
    /// is retried.
    #[error(transparent)]
    ClientBody(crate::request::body::BodyError),
    /// A body without a declared length (chunked) for a uwsgi server, whose
    /// protocol needs the length up front: 411.
    #[error("upstream {0}: a request body for a uwsgi server needs a Content-Length")]
    LengthRequired(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoServer(_) | ProxyError::Exchange { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Uwsgi(err) => err.status(),
            ProxyError::LengthRequired(_) => StatusCode::LENGTH_REQUIRED,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ClientBody(fault) => fault.status(),
        }
    }

    /// The refusal portico logs and answers with, from the pool's config
    /// and the route's body limit; `None` for the answers that are the
    /// client's doing (a uwsgi body that broke off, 411), not logged.
    pub fn refusal(&self, pool: &UpstreamConfig, max_body_size: u64) -> Option<Refusal> {
        let upstream = pool.name.clone();
        Some(match self {
            ProxyError::NoServer(name) => Refusal::NoUpstream {
                upstream: name.clone(),
            },
            ProxyError::Exchange { server, message } => Refusal::UpstreamFailed {
                upstream,
                detail: format!("server {server}: {message}"),
            },
            ProxyError::Timeout {
                server,
                after,
                what,
            } => Refusal::UpstreamTimeout {
                upstream,
                server: server.clone(),
                after: *after,
                key: what,
            },
            ProxyError::BodyTooLarge => Refusal::BodyTooLarge {
                declared: None,
                limit: max_body_size,
            },
            ProxyError::Uwsgi(err) => uwsgi_refusal(err, pool)?,
            ProxyError::ClientBody(err) => Refusal::Body(err.clone()),
            ProxyError::LengthRequired(_) => return None,
        })
    }
}

/// How one attempt at one server ended without a response head, and
/// whether the server was reached: the one retry loop
/// (`exchange::exchange`) decides from this alone what comes next.
pub enum AttemptError {
    /// The server never saw the request (the connection failed, or hyper
    /// handed the request back unsent): it comes back whole and goes to
    /// the next try.
    NotReached {
        request: http::Request<super::body::OutgoingBody>,
        blame: Blame,
        message: String,
        /// A connection was open (the request was handed back unsent),
        /// rather than none made.
        connected: bool,
    },
    /// The server may have seen the request: it goes again only rebuilt
    /// from its `Replay` (idempotent, no body), and only when `replayable`;
    /// else the client is answered with `error`.
    Reached {
        error: ProxyError,
        blame: Blame,
        message: String,
        replayable: bool,
    },
    /// The answer is decided whatever other server there is: the client's
    /// body failed or grew too large, or the request cannot go to this
    /// upstream. No server is blamed.
    Decided(ProxyError),
}

/// Who a failed attempt counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The server: a failure is marked (`Pool::failed`) and the server is
    /// not tried again for this request.
    Server,
    /// A reused keep-alive connection the server had closed: no server
    /// fault; the next tries take fresh connections.
    StaleConnection,
}

fn uwsgi_refusal(err: &UwsgiError, pool: &UpstreamConfig) -> Option<Refusal> {
    let timeout = |server: &str, after, key| Refusal::UpstreamTimeout {
        upstream: pool.name.clone(),
        server: server.to_string(),
        after,
        key,
    };
    Some(match err {
        UwsgiError::ConnectTimeout { target } => {
            timeout(target, pool.connect_timeout, "connect_timeout")
        }
        UwsgiError::Timeout { target, what } if what.starts_with("sending") => {
            timeout(target, pool.send_timeout, "send_timeout")
        }
        UwsgiError::Timeout { target, .. } => timeout(target, pool.read_timeout, "read_timeout"),
        UwsgiError::Body { .. } => return None,
        UwsgiError::Encode(_)
        | UwsgiError::Connect { .. }
        | UwsgiError::Send { .. }
        | UwsgiError::Read { .. }
        | UwsgiError::BadResponse { .. } => Refusal::UpstreamFailed {
            upstream: pool.name.clone(),
            detail: err.to_string(),
        },
    })
}
