//! The CGI handler's one error enum and how each variant maps to a status.
//!
//! Steps, in order: pick the status (`status`), log what an operator must
//! see (`log`); `render` in `response` is the only place that turns one into
//! a response.

use std::io;
use std::path::PathBuf;

use http::StatusCode;

use crate::request::refusal::Refusal;

/// Everything that stops a script from answering. Each variant documents
/// its status.
#[derive(Debug, thiserror::Error)]
pub enum CgiError {
    /// 400: the decoded path holds NUL or a backslash, or climbs above the
    /// directory with `..`.
    #[error("bad request path: {0}")]
    BadPath(&'static str),
    /// 404: no executable file on the path (also a dotfile segment, a
    /// directory without an index script, anything not a regular file).
    #[error("no script on this path")]
    NotFound,
    /// 403: the script exists but is not executable by us, the OS refused
    /// access, or a symlink leads outside the CGI directory.
    #[error("script refused: {0}")]
    Forbidden(String),
    /// 503 with `Retry-After`: `cgi_max_processes` scripts already run in
    /// this worker for this route.
    #[error("all {0} CGI process slots busy")]
    Busy(usize),
    /// The body could not be read before the script started (connection
    /// closed): 413 past `max_body_size`, the client's 408/400/499, or 500
    /// when its temporary file could not be written (`SpoolError`).
    #[error(transparent)]
    Spool(crate::request::spool::SpoolError),
    /// The client's body failed while streamed to the script (which is
    /// then killed): 408 (no bytes for `--body-timeout`), 400 (malformed;
    /// or the client is gone, logged 499). The client's fault.
    #[error(transparent)]
    Body(crate::request::body::BodyError),
    /// 500: the script could not be started (bad interpreter, ENOEXEC...).
    #[error("cannot run {path}: {source}")]
    Spawn { path: PathBuf, source: io::Error },
    /// 502: the script's header block is larger than the limit.
    #[error("header block over {0} bytes")]
    HeadTooLarge(usize),
    /// 502: a malformed header line, a bad `Status`, a name or value with
    /// CR, LF or NUL, or no header field at all.
    #[error("bad header from script: {0}")]
    BadHead(String),
    /// 502: the script closed its output before a complete header block.
    #[error("script ended before a complete header block ({0} bytes read)")]
    EndedEarly(usize),
    /// 502: reading the script's output failed.
    #[error("reading script output: {0}")]
    Read(io::Error),
    /// 504: no output for `cgi_timeout`; the process group was killed.
    #[error("no output for {0:?}; process group killed")]
    Timeout(std::time::Duration),
    /// 500: local redirects went round more than the hop limit.
    #[error("more than {0} local redirects")]
    TooManyRedirects(usize),
}

impl CgiError {
    pub fn status(&self) -> StatusCode {
        match self {
            CgiError::BadPath(_) => StatusCode::BAD_REQUEST,
            CgiError::Body(err) => err.status(),
            CgiError::NotFound => StatusCode::NOT_FOUND,
            CgiError::Forbidden(_) => StatusCode::FORBIDDEN,
            CgiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            CgiError::Spool(err) => err.refusal().status(),
            CgiError::Spawn { .. } | CgiError::TooManyRedirects(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            CgiError::HeadTooLarge(_)
            | CgiError::BadHead(_)
            | CgiError::EndedEarly(_)
            | CgiError::Read(_) => StatusCode::BAD_GATEWAY,
            CgiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The errors that are refusals (a limit was reached) are answered and
    /// logged by `crate::request::refusal`, naming the setting to change.
    pub fn refusal(&self, script: &str) -> Option<Refusal> {
        Some(match self {
            CgiError::Busy(slots) => Refusal::CgiBusy { slots: *slots },
            CgiError::Spool(err) => err.refusal(),
            CgiError::Body(err) => Refusal::Body(err.clone()),
            CgiError::Timeout(after) => Refusal::ScriptSilent {
                script: script.to_string(),
                after: *after,
            },
            _ => return None,
        })
    }

    /// Script and server failures are logged with the script and request;
    /// client mistakes are not (any client could fill the log). Refusals
    /// are logged by `crate::request::refusal`.
    pub fn log(&self, script: &str, request: &str) {
        match self {
            CgiError::BadPath(_)
            | CgiError::NotFound
            | CgiError::Spool(_)
            | CgiError::Body(_)
            | CgiError::Busy(_)
            | CgiError::Timeout(_) => {}
            CgiError::Forbidden(_) => {
                tracing::debug!(script, request, error = %self, "CGI script refused")
            }
            _ => tracing::error!(script, request, error = %self, "CGI script failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(CgiError::NotFound.status(), 404);
        assert_eq!(CgiError::Forbidden("x".into()).status(), 403);
        assert_eq!(CgiError::Busy(1).status(), 503);
        let too_large = crate::request::spool::SpoolError::TooLarge { limit: 1 };
        assert_eq!(CgiError::Spool(too_large).status(), 413);
        assert_eq!(CgiError::HeadTooLarge(1).status(), 502);
        assert_eq!(CgiError::EndedEarly(0).status(), 502);
        assert_eq!(
            CgiError::Timeout(std::time::Duration::from_secs(1)).status(),
            504
        );
        assert_eq!(CgiError::TooManyRedirects(10).status(), 500);
        let timeout = crate::request::body::BodyError::Timeout(std::time::Duration::from_secs(60));
        assert_eq!(CgiError::Body(timeout).status(), 408);
    }
}
