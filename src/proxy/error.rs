//! Why a proxied request got no upstream response; each variant names the
//! status the client is answered with.

use std::time::Duration;

use http::StatusCode;

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
    ClientBody(crate::body::BodyError),
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
}
