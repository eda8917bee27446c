//! Decide what the script's header block means (RFC 3875 §6.2), then render
//! every outcome, errors included, into a response in one place.
//!
//! `decide`, in order:
//! 1. an nph script: its status line and fields, as written;
//! 2. `Location: /path` and no other field → local redirect (the handler
//!    serves the new path itself);
//! 3. any other `Location` (absolute URL, or a local one with more fields)
//!    → client redirect: the script's `Status`, else 302; its body, if any,
//!    goes along;
//! 4. otherwise a document: the script's `Status`, else 200.

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Response, StatusCode, Version};
use hyper::ext::ReasonPhrase;

use super::error::CgiError;
use super::head::Head;
use super::output::Output;
use crate::request::answer::status_page;
use crate::request::body::Body;

#[derive(Debug)]
pub enum Outcome {
    /// The script's own answer: document, client redirect or nph.
    Respond(Answer),
    /// Serve this path and query internally.
    LocalRedirect(PathAndQuery),
}

/// The status line and fields of the script's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// Reason phrase the script chose ("" for the standard one).
    pub reason: Vec<u8>,
    pub headers: HeaderMap,
    /// nph: the connection closes after the response.
    pub close: bool,
}

pub fn decide(head: Head, nph: bool) -> Outcome {
    let script_status = head.status.is_some();
    let (status, reason) = head.status.unwrap_or((StatusCode::OK, Vec::new()));
    if nph {
        return Outcome::Respond(Answer {
            status,
            reason,
            headers: head.headers,
            close: true,
        });
    }
    if let Some(location) = &head.location {
        if head.fields == 1 {
            if let Some(local) = local_path(location) {
                return Outcome::LocalRedirect(local);
            }
        }
        let redirect = !script_status;
        return Outcome::Respond(Answer {
            status: if redirect { StatusCode::FOUND } else { status },
            reason: if redirect { Vec::new() } else { reason },
            headers: head.headers,
            close: false,
        });
    }
    Outcome::Respond(Answer {
        status,
        reason,
        headers: head.headers,
        close: false,
    })
}

/// `/path?query` (not `//host/...`, which is a network-path reference).
fn local_path(location: &HeaderValue) -> Option<PathAndQuery> {
    let bytes = location.as_bytes();
    if !bytes.starts_with(b"/") || bytes.starts_with(b"//") {
        return None;
    }
    // A fragment means nothing to the server.
    let end = bytes.iter().position(|&b| b == b'#').unwrap_or(bytes.len());
    PathAndQuery::try_from(&bytes[..end]).ok()
}

/// Renders the script's answer; the body streams from `output`.
pub fn render(answer: Answer, output: Output, head_only: bool, version: Version) -> Response<Body> {
    let Answer {
        status,
        reason,
        headers,
        close,
    } = answer;
    let body = if head_only {
        output.drain();
        Body::empty()
    } else {
        output.into_body()
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    if !reason.is_empty() && status.canonical_reason().map(str::as_bytes) != Some(&reason[..]) {
        if let Ok(phrase) = ReasonPhrase::try_from(reason) {
            res.extensions_mut().insert(phrase);
        }
    }
    // HTTP/2 has no Connection field (and no connection to close per stream).
    if close && version < Version::HTTP_2 {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// A client redirect portico answers without a script (no output to stream).
pub fn render_redirect(location: &PathAndQuery) -> Response<Body> {
    let mut res = status_page(StatusCode::FOUND);
    if let Ok(v) = HeaderValue::from_str(location.as_str()) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

/// A directory URL without its slash: 301 to add it (query kept).
pub fn render_add_slash(path: &str, query: Option<&str>) -> Response<Body> {
    let mut res = status_page(StatusCode::MOVED_PERMANENTLY);
    let location = match query {
        Some(q) => format!("{path}/?{q}"),
        None => format!("{path}/"),
    };
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

/// Every error that is not a refusal (those are `crate::request::refusal`'s), as
/// its documented status.
pub fn render_error(err: &CgiError) -> Response<Body> {
    status_page(err.status())
}

#[cfg(test)]
mod tests {
    use super::super::head::parse;
    use super::*;

    fn outcome(block: &[u8]) -> Outcome {
        decide(parse(block, false).unwrap(), false)
    }

    fn respond(block: &[u8]) -> (u16, HeaderMap) {
        match outcome(block) {
            Outcome::Respond(a) => (a.status.as_u16(), a.headers),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn document_defaults_to_200() {
        let (status, headers) = respond(b"Content-Type: text/html\n\n");
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "text/html");
        assert_eq!(respond(b"Status: 418 Teapot\n\n").0, 418);
    }

    #[test]
    fn local_redirect_only_alone() {
        match outcome(b"Location: /cgi-bin/x?y=1#frag\n\n") {
            Outcome::LocalRedirect(p) => assert_eq!(p.as_str(), "/cgi-bin/x?y=1"),
            other => panic!("{other:?}"),
        }
        // With another field it is a client redirect.
        let (status, headers) = respond(b"Location: /x\nContent-Type: text/plain\n\n");
        assert_eq!(status, 302);
        assert_eq!(headers["location"], "/x");
        // A network-path reference is not local.
        assert_eq!(respond(b"Location: //evil.example/\n\n").0, 302);
    }

    #[test]
    fn client_redirects() {
        let (status, headers) = respond(b"Location: https://example.com/\n\n");
        assert_eq!(status, 302);
        assert_eq!(headers["location"], "https://example.com/");
        let (status, _) = respond(
            b"Status: 301 Moved\nLocation: https://example.com/\nContent-Type: text/html\n\n",
        );
        assert_eq!(status, 301);
    }

    #[test]
    fn nph_keeps_its_status_and_closes() {
        let head = parse(b"HTTP/1.0 203 Whatever\r\nX-A: b\r\n\r\n", true).unwrap();
        match decide(head, true) {
            Outcome::Respond(a) => {
                assert_eq!(a.status, 203);
                assert_eq!(a.reason, b"Whatever");
                assert!(a.close);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_keep_their_extras() {
        let page = |err: CgiError| crate::request::refusal::page(&err.refusal("s").unwrap());
        let res = page(CgiError::Busy(4));
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["retry-after"], "1");
        let res = page(CgiError::Spool(
            crate::request::spool::SpoolError::TooLarge { limit: 10 },
        ));
        assert_eq!(res.status(), 413);
        assert_eq!(res.headers()["connection"], "close");
        assert!(CgiError::NotFound.refusal("s").is_none());
    }
}
