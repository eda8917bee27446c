//! Refusals: the requests portico answers itself because of a limit, a
//! timeout or a malformed request. Every refusal renders its page through
//! the error-answer catalogue (`crate::request::answer`) and logs one line
//! from here, naming the route, what was seen, the limit, and the key or
//! flag to change:
//!
//! ```text
//! 413 on route /upload from 10.0.0.7: request body of 3145728 bytes is over
//! max_body_size 1048576 (raise `max_body_size` on the route or --max-body-size)
//! ```
//!
//! 1. a caller decides a [`Refusal`] (each variant documents its status);
//! 2. [`refuse`] logs it ([`log`] alone, for a caller that renders the
//!    answer its own way) and renders its page ([`page`]): the catalogue's
//!    page of its status, a sentence for the client, and the fields the
//!    refusal needs.
//!
//! Refusals a client causes (413, 414, 431, 408) log at `info`, those an
//! operator must act on (503, 502, 504, a body that could not be buffered)
//! at `warn`, malformed requests (400,
//! 405, 501) only at `debug` like the HTTP parser's own. A client sending
//! thousands of bad requests a second cannot flood the log: past
//! [`LINES_PER_SECOND`] lines in a second the rest are counted, not
//! written, and the next line written says how many were left out.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::request::answer::ErrorAnswer;
use crate::request::body::{Body, BodyError};

/// Why portico answers a request itself. Each variant's doc names its
/// status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 414: the request target is longer than `limits.max_uri_length`.
    TargetTooLong { len: usize, limit: usize },
    /// 431: the header block is larger than `limits.max_header_size`.
    HeaderTooLarge { len: usize, limit: usize },
    /// 431 (or 414), from the HTTP parser, connection closed: more than
    /// `limits.max_headers` fields, or a head larger than the parser's
    /// buffer (`max_header_size` + `max_uri_length`); the parser does not
    /// say which, nor the size.
    HeadOverParserLimits {
        max_headers: usize,
        max_bytes: usize,
    },
    /// 413, connection closed (the rest of the body is not read): the body
    /// is larger than the route's `max_body_size`; `declared` is its
    /// `Content-Length`, `None` when it had none and grew past the limit.
    BodyTooLarge { declared: Option<u64>, limit: u64 },
    /// 500, connection closed: a request body being buffered
    /// (`request_buffering`) could not be written to a temporary file in
    /// `body_temp_dir`; `error` says why (a full disk, the directory gone).
    BodyNotBuffered { dir: String, error: String },
    /// 408, connection closed: the request head was not complete
    /// `limits.header_timeout` after its first byte.
    HeadTimeout { after: Duration },
    /// 503 with `Retry-After`: all `cgi_max_processes` slots of the route
    /// are busy.
    CgiBusy { slots: usize },
    /// 502: no server of the upstream pool could be reached.
    NoUpstream { upstream: String },
    /// 502: an upstream server failed before a complete response head;
    /// `detail` names the server and what happened.
    UpstreamFailed { upstream: String, detail: String },
    /// 504: an upstream server was silent (or stalled) past one of its
    /// timeouts; `key` names it (`read_timeout`, `send_timeout`,
    /// `connect_timeout`).
    UpstreamTimeout {
        upstream: String,
        server: String,
        after: Duration,
        key: &'static str,
    },
    /// 504: a CGI script wrote nothing for `cgi_timeout`; its process
    /// group was killed.
    ScriptSilent { script: String, after: Duration },
    /// 400: a missing or repeated `Host` in HTTP/1.1, or one that is not
    /// `host[:port]` (RFC 9112 §3.2).
    BadHost(&'static str),
    /// 400: a request target the server does not take (`*` outside
    /// OPTIONS, authority-form outside CONNECT).
    BadTarget(&'static str),
    /// 405 with `Allow`: CONNECT (portico does not tunnel).
    Connect,
    /// 501, connection closed: a transfer coding other than `chunked`
    /// (RFC 9112 §6.1); the body's framing is unknown.
    UnknownTransferCoding,
    /// 400, connection closed: `chunked` applied more than once.
    ChunkedTwice,
    /// The request body failed, the client's doing (connection closed: the
    /// rest of the body is unread): 408 when no byte came for
    /// `limits.body_timeout`, 400 when its framing broke or the client went
    /// away inside it (logged 499; nobody reads that answer).
    Body(BodyError),
}

/// The methods portico's handlers answer, for `Allow`.
const ALLOW: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// How loudly a refusal is logged.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Level {
    Debug,
    Info,
    Warn,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::TargetTooLong { .. } => StatusCode::URI_TOO_LONG,
            Refusal::HeaderTooLarge { .. } | Refusal::HeadOverParserLimits { .. } => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Refusal::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BodyNotBuffered { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Refusal::HeadTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Refusal::CgiBusy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::NoUpstream { .. } | Refusal::UpstreamFailed { .. } => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout { .. } | Refusal::ScriptSilent { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Refusal::BadHost(_) | Refusal::BadTarget(_) | Refusal::ChunkedTwice => {
                StatusCode::BAD_REQUEST
            }
            Refusal::Connect => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::UnknownTransferCoding => StatusCode::NOT_IMPLEMENTED,
            Refusal::Body(err) => err.status(),
        }
    }

    /// The connection cannot carry another request after this answer.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Refusal::BodyTooLarge { .. }
                | Refusal::BodyNotBuffered { .. }
                | Refusal::HeadTimeout { .. }
                | Refusal::HeadOverParserLimits { .. }
                | Refusal::UnknownTransferCoding
                | Refusal::ChunkedTwice
                | Refusal::Body(_)
        )
    }

    fn level(&self) -> Level {
        match self {
            Refusal::TargetTooLong { .. }
            | Refusal::HeaderTooLarge { .. }
            | Refusal::HeadOverParserLimits { .. }
            | Refusal::BodyTooLarge { .. }
            | Refusal::HeadTimeout { .. }
            | Refusal::Body(BodyError::Timeout(_)) => Level::Info,
            Refusal::CgiBusy { .. }
            | Refusal::NoUpstream { .. }
            | Refusal::UpstreamFailed { .. }
            | Refusal::UpstreamTimeout { .. }
            | Refusal::ScriptSilent { .. }
            | Refusal::BodyNotBuffered { .. } => Level::Warn,
            Refusal::BadHost(_)
            | Refusal::BadTarget(_)
            | Refusal::Connect
            | Refusal::UnknownTransferCoding
            | Refusal::ChunkedTwice
            | Refusal::Body(_) => Level::Debug,
        }
    }

    /// What to change, for the operator; `None` when no setting applies.
    fn fix(&self) -> Option<String> {
        Some(match self {
            Refusal::TargetTooLong { .. } => "raise `limits.max_uri_length`".into(),
            Refusal::HeaderTooLarge { .. } => "raise `limits.max_header_size`".into(),
            Refusal::HeadOverParserLimits { .. } => {
                "raise `limits.max_headers`, `limits.max_header_size` or `limits.max_uri_length`"
                    .into()
            }
            Refusal::BodyTooLarge { .. } => {
                "raise `max_body_size` on the route or --max-body-size".into()
            }
            Refusal::BodyNotBuffered { .. } => {
                "check that `body_temp_dir` (--body-temp-dir) exists, is writable and has room"
                    .into()
            }
            Refusal::HeadTimeout { .. } => {
                "raise `limits.header_timeout` or --header-timeout".into()
            }
            Refusal::CgiBusy { .. } => "raise `cgi_max_processes` on the route".into(),
            Refusal::NoUpstream { .. } => {
                "check that its servers are up; see `connect_timeout`, `max_fails` and \
                 `fail_timeout` of the upstream"
                    .into()
            }
            Refusal::UpstreamFailed { .. } => "see the upstream server's own log".into(),
            Refusal::UpstreamTimeout { key, .. } => format!("raise `{key}` of the upstream"),
            Refusal::ScriptSilent { .. } => "raise `cgi_timeout` on the route".into(),
            Refusal::Body(BodyError::Timeout(_)) => {
                "raise `limits.body_timeout` or --body-timeout".into()
            }
            _ => return None,
        })
    }

    /// A sentence for the client, below the status line of the page.
    fn client_text(&self) -> String {
        match self {
            Refusal::TargetTooLong { limit, .. } => {
                format!("The request target is longer than this server accepts ({limit} bytes).")
            }
            Refusal::HeaderTooLarge { limit, .. } => format!(
                "The request header fields are larger than this server accepts ({limit} bytes)."
            ),
            Refusal::HeadOverParserLimits { .. } => {
                "The request head is larger than this server accepts.".into()
            }
            Refusal::BodyTooLarge { limit, .. } => {
                format!("The request body is larger than this server accepts ({limit} bytes).")
            }
            Refusal::BodyNotBuffered { .. } => "The request body could not be stored.".into(),
            Refusal::HeadTimeout { .. } => "The request head did not arrive in time.".into(),
            Refusal::CgiBusy { .. } => "The server is busy; retry in a moment.".into(),
            Refusal::NoUpstream { .. } | Refusal::UpstreamFailed { .. } => {
                "The server behind this one could not answer.".into()
            }
            Refusal::UpstreamTimeout { .. } | Refusal::ScriptSilent { .. } => {
                "The server behind this one did not answer in time.".into()
            }
            Refusal::BadHost(why) | Refusal::BadTarget(why) => format!("{why}."),
            Refusal::Connect => "CONNECT is not supported.".into(),
            Refusal::UnknownTransferCoding => {
                "Only the chunked transfer coding is supported.".into()
            }
            Refusal::ChunkedTwice => "The chunked transfer coding was applied twice.".into(),
            Refusal::Body(BodyError::Timeout(_)) => {
                "The request body did not arrive in time.".into()
            }
            Refusal::Body(_) => "The request body is malformed or incomplete.".into(),
        }
    }
}

/// What was seen and the limit it broke, for the log line.
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TargetTooLong { len, limit } => write!(
                f,
                "request target of {len} bytes is over max_uri_length {limit}"
            ),
            Refusal::HeaderTooLarge { len, limit } => write!(
                f,
                "header block of {len} bytes is over max_header_size {limit}"
            ),
            Refusal::HeadOverParserLimits {
                max_headers,
                max_bytes,
            } => write!(
                f,
                "request head over the HTTP parser's limits: more than max_headers {max_headers} \
                 fields, or more than {max_bytes} bytes (max_header_size + max_uri_length)"
            ),
            Refusal::BodyTooLarge {
                declared: Some(len),
                limit,
            } => write!(
                f,
                "request body of {len} bytes is over max_body_size {limit}"
            ),
            Refusal::BodyTooLarge {
                declared: None,
                limit,
            } => write!(
                f,
                "request body without a length grew past max_body_size {limit}"
            ),
            Refusal::BodyNotBuffered { dir, error } => write!(
                f,
                "the request body could not be buffered in a temporary file in {dir}: {error}"
            ),
            Refusal::HeadTimeout { after } => write!(
                f,
                "request head not complete within header_timeout {}",
                seconds(*after)
            ),
            Refusal::CgiBusy { slots } => write!(
                f,
                "all {slots} CGI process slots are busy (cgi_max_processes {slots})"
            ),
            Refusal::NoUpstream { upstream } => {
                write!(f, "no server of upstream `{upstream}` could be reached")
            }
            Refusal::UpstreamFailed { upstream, detail } => write!(
                f,
                "upstream `{upstream}` failed before a complete response head ({detail})"
            ),
            Refusal::UpstreamTimeout {
                upstream,
                server,
                after,
                key,
            } => write!(
                f,
                "upstream `{upstream}` server {server} made no progress for {key} {}",
                seconds(*after)
            ),
            Refusal::ScriptSilent { script, after } => write!(
                f,
                "CGI script {script} wrote nothing for cgi_timeout {}; its process group was \
                 killed",
                seconds(*after)
            ),
            Refusal::BadHost(why) | Refusal::BadTarget(why) => f.write_str(why),
            Refusal::Connect => f.write_str("CONNECT request"),
            Refusal::UnknownTransferCoding => {
                f.write_str("transfer coding other than chunked (answered 501)")
            }
            Refusal::ChunkedTwice => f.write_str("chunked transfer coding applied twice"),
            Refusal::Body(err) => write!(f, "{err}"),
        }
    }
}

/// `10s`, `1.5s`: durations as the config writes them.
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// Where a refusal happened, for its log line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scope<'a> {
    /// The route's prefix (`/` for the root route); `None` before routing.
    pub route: Option<&'a str>,
    /// The client's address as text ("" when unknown).
    pub peer: &'a str,
}

/// Logs `refusal` and renders its page.
pub fn refuse(refusal: &Refusal, scope: Scope<'_>) -> Response<Body> {
    log(refusal, scope);
    page(refusal)
}

/// The one log line of a refusal (rate-limited, see the module doc).
pub fn log(refusal: &Refusal, scope: Scope<'_>) {
    let level = refusal.level();
    let enabled = match level {
        Level::Debug => tracing::enabled!(tracing::Level::DEBUG),
        Level::Info => tracing::enabled!(tracing::Level::INFO),
        Level::Warn => tracing::enabled!(tracing::Level::WARN),
    };
    if !enabled {
        return;
    }
    let left_out = if level == Level::Debug {
        Some(0)
    } else {
        WINDOW
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(Instant::now())
    };
    let Some(left_out) = left_out else {
        return;
    };
    let line = line(refusal, scope, left_out);
    match level {
        Level::Debug => tracing::debug!("{line}"),
        Level::Info => tracing::info!("{line}"),
        Level::Warn => tracing::warn!("{line}"),
    }
}

/// `413 on route /upload from 10.0.0.7: <what> (<fix>)`.
fn line(refusal: &Refusal, scope: Scope<'_>, left_out: u64) -> String {
    use fmt::Write;
    let mut line = refusal.status().as_str().to_string();
    if let Some(route) = scope.route {
        let _ = write!(line, " on route {route}");
    }
    if !scope.peer.is_empty() {
        let _ = write!(line, " from {}", scope.peer);
    }
    let _ = write!(line, ": {refusal}");
    if let Some(fix) = refusal.fix() {
        let _ = write!(line, " ({fix})");
    }
    if left_out > 0 {
        let _ = write!(
            line,
            "; {left_out} more refusal(s) were not logged, past {LINES_PER_SECOND} a second"
        );
    }
    line
}

/// The page of a refusal: the catalogue's page with a sentence for the
/// client, and the headers the refusal needs (`Connection: close` when the
/// connection cannot go on, `Retry-After`, `Allow`). HTTP/2 drops
/// `Connection` itself.
pub fn page(refusal: &Refusal) -> Response<Body> {
    answer(refusal).into_response()
}

/// A refusal as raw HTTP/1.1 bytes, for a front-end that answers outside
/// the HTTP layer (the 408 of a head that never completed); the
/// connection is closed after it.
pub fn http1_bytes(refusal: &Refusal) -> Vec<u8> {
    answer(refusal)
        .with(header::CONNECTION, HeaderValue::from_static("close"))
        .with(header::SERVER, HeaderValue::from_static("portico"))
        .http1_bytes()
}

fn answer(refusal: &Refusal) -> ErrorAnswer {
    let mut answer = ErrorAnswer::explained(refusal.status(), &refusal.client_text());
    if refusal.closes_connection() {
        answer = answer.with(header::CONNECTION, HeaderValue::from_static("close"));
    }
    match refusal {
        Refusal::CgiBusy { .. } => answer.with(header::RETRY_AFTER, HeaderValue::from_static("1")),
        Refusal::Connect => answer.with(header::ALLOW, HeaderValue::from_static(ALLOW)),
        _ => answer,
    }
}

/// Refusal lines written per second and process, at most; the others are
/// counted and reported with the next line written.
pub const LINES_PER_SECOND: u32 = 20;

static WINDOW: Mutex<Window> = Mutex::new(Window::new());

/// A one-second window of refusal lines.
struct Window {
    start: Option<Instant>,
    written: u32,
    /// Lines left out since the last one written.
    left_out: u64,
}

impl Window {
    const fn new() -> Self {
        Window {
            start: None,
            written: 0,
            left_out: 0,
        }
    }

    /// Whether a line may be written at `now`; if so, how many were left
    /// out before it.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        let expired = self
            .start
            .is_none_or(|start| now.saturating_duration_since(start) >= Duration::from_secs(1));
        if expired {
            self.start = Some(now);
            self.written = 0;
        }
        if self.written >= LINES_PER_SECOND {
            self.left_out += 1;
            return None;
        }
        self.written += 1;
        Some(std::mem::take(&mut self.left_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_line_names_route_what_limit_and_key() {
        let refusal = Refusal::BodyTooLarge {
            declared: Some(3_145_728),
            limit: 1_048_576,
        };
        let scope = Scope {
            route: Some("/upload"),
            peer: "10.0.0.7",
        };
        assert_eq!(
            line(&refusal, scope, 0),
            "413 on route /upload from 10.0.0.7: request body of 3145728 bytes is over \
             max_body_size 1048576 (raise `max_body_size` on the route or --max-body-size)"
        );
        let timeout = Refusal::HeadTimeout {
            after: Duration::from_secs(10),
        };
        assert_eq!(
            line(&timeout, Scope::default(), 3),
            "408: request head not complete within header_timeout 10s (raise \
             `limits.header_timeout` or --header-timeout); 3 more refusal(s) were not logged, \
             past 20 a second"
        );
    }

    #[test]
    fn pages_carry_what_the_refusal_needs() {
        let busy = page(&Refusal::CgiBusy { slots: 4 });
        assert_eq!(busy.status(), 503);
        assert_eq!(busy.headers()["retry-after"], "1");
        assert!(!busy.headers().contains_key("connection"));
        let big = page(&Refusal::BodyTooLarge {
            declared: None,
            limit: 10,
        });
        assert_eq!(big.status(), 413);
        assert_eq!(big.headers()["connection"], "close");
        assert_eq!(page(&Refusal::Connect).headers()["allow"], ALLOW);
        let raw = String::from_utf8(http1_bytes(&Refusal::HeadTimeout {
            after: Duration::from_secs(1),
        }))
        .unwrap();
        assert!(raw.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{raw}");
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{raw}"
        );
    }

    #[test]
    fn a_flood_of_refusals_writes_a_bounded_number_of_lines() {
        let mut window = Window::new();
        let t0 = Instant::now();
        let written = (0..10_000)
            .filter(|i| window.admit(t0 + Duration::from_micros(*i)).is_some())
            .count();
        assert_eq!(written, LINES_PER_SECOND as usize);
        // The next second's first line reports what was left out.
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(
            window.admit(later),
            Some(10_000 - u64::from(LINES_PER_SECOND))
        );
        assert_eq!(window.admit(later), Some(0));
    }
}
