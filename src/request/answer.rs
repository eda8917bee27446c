//! The one catalogue of error answers: every page portico writes itself
//! (a refusal, a static file's 404, a WSGI app that raised, a CGI script
//! that failed, a proxy's 502) is built here, so they all look alike and
//! there is one place to change how they look.
//!
//! 1. [`ErrorAnswer::new`] (or [`ErrorAnswer::explained`], with a sentence
//!    for the client) decides the look of a status: the body
//!    `404 Not Found\n`, `Content-Type: text/plain; charset=utf-8` and its
//!    `Content-Length`;
//! 2. [`ErrorAnswer::with`] adds what the caller's answer needs besides
//!    (`Allow`, `Retry-After`, `Connection: close`, `Location`);
//! 3. the answer goes out as a [`Response`] ([`ErrorAnswer::into_response`],
//!    [`status_page`] for a status alone), as its parts (a handler with its
//!    own head type, like WSGI's, takes the fields), or as raw HTTP/1.1
//!    bytes ([`ErrorAnswer::http1_bytes`], for a front-end outside hyper).
//!
//! Custom error pages plug in at step 1: they change the body and its
//! Content-Type for a status, and every caller gets them.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::request::body::Body;

/// The Content-Type of every page of the catalogue.
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// An answer portico gives itself: the status, its headers (the page's own
/// and those the caller added) and the body. The fields are public for a
/// caller that builds its own head from them; `Content-Length` is always
/// the body's length.
#[derive(Debug, Clone)]
pub struct ErrorAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl ErrorAnswer {
    /// The page of `status` alone: `404 Not Found\n`.
    pub fn new(status: StatusCode) -> Self {
        Self::explained(status, "")
    }

    /// The page of `status` with `sentence` (when not empty) on the line
    /// below the status: a refusal says what the client ran into.
    pub fn explained(status: StatusCode, sentence: &str) -> Self {
        let body = Bytes::from(page_text(status, sentence));
        // The page's two fields, the caller's one and `Server`.
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_PLAIN));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        ErrorAnswer {
            status,
            headers,
            body,
        }
    }

    /// Adds a field the answer needs besides the page's own, replacing one
    /// of the same name.
    pub fn with(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    pub fn into_response(self) -> Response<Body> {
        let body = Body::full(self.body.clone());
        self.response_with(body)
    }

    /// The answer to a HEAD request: the same head (its `Content-Length`
    /// included), no body.
    pub fn into_head_response(self) -> Response<Body> {
        self.response_with(Body::empty())
    }

    fn response_with(self, body: Body) -> Response<Body> {
        let mut res = Response::new(body);
        *res.status_mut() = self.status;
        *res.headers_mut() = self.headers;
        res
    }

    /// The answer as raw HTTP/1.1 bytes, field names in title case
    /// (`Content-Length`).
    pub fn http1_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.body.len());
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(self.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            title_case(name.as_str(), &mut out);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// `content-length` → `Content-Length`.
fn title_case(name: &str, out: &mut Vec<u8>) {
    let mut upper = true;
    for b in name.bytes() {
        out.push(if upper { b.to_ascii_uppercase() } else { b });
        upper = b == b'-';
    }
}

/// The page of a status portico decides itself, as a response.
pub fn status_page(status: StatusCode) -> Response<Body> {
    ErrorAnswer::new(status).into_response()
}

/// `413 Payload Too Large` and, when given, a sentence below it.
fn page_text(status: StatusCode, sentence: &str) -> String {
    let reason = status.canonical_reason().unwrap_or("");
    if sentence.is_empty() {
        format!("{} {reason}\n", status.as_str())
    } else {
        format!("{} {reason}\n{sentence}\n", status.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(answer: &ErrorAnswer) -> Vec<(String, String)> {
        answer
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_catalogue_pins_status_fields_and_body() {
        let not_found = ErrorAnswer::new(StatusCode::NOT_FOUND);
        assert_eq!(not_found.status, 404);
        assert_eq!(&not_found.body[..], b"404 Not Found\n");
        assert_eq!(
            fields(&not_found),
            pairs(&[
                ("content-type", "text/plain; charset=utf-8"),
                ("content-length", "14"),
            ])
        );

        let error = ErrorAnswer::new(StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(&error.body[..], b"500 Internal Server Error\n");
        assert_eq!(error.headers["content-length"], "26");

        let busy = ErrorAnswer::explained(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is busy; retry in a moment.",
        )
        .with(header::RETRY_AFTER, HeaderValue::from_static("1"));
        assert_eq!(
            &busy.body[..],
            b"503 Service Unavailable\nThe server is busy; retry in a moment.\n"
        );
        assert_eq!(
            fields(&busy),
            pairs(&[
                ("content-type", "text/plain; charset=utf-8"),
                ("content-length", "63"),
                ("retry-after", "1"),
            ])
        );
    }

    #[test]
    fn every_form_carries_the_same_answer() {
        let answer = ErrorAnswer::new(StatusCode::FORBIDDEN)
            .with(header::CONNECTION, HeaderValue::from_static("close"));
        let res = answer.clone().into_response();
        assert_eq!(res.status(), 403);
        assert_eq!(res.headers(), &answer.headers);
        assert_eq!(
            http_body::Body::size_hint(res.body()).exact(),
            Some(answer.body.len() as u64)
        );
        let head = answer.clone().into_head_response();
        assert_eq!(head.headers()["content-length"], "14");
        assert_eq!(http_body::Body::size_hint(head.body()).exact(), Some(0));
        assert_eq!(
            String::from_utf8(answer.http1_bytes()).unwrap(),
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 14\r\nConnection: close\r\n\r\n403 Forbidden\n"
        );
        let page = status_page(StatusCode::NOT_FOUND);
        assert_eq!(page.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(page.headers()["content-length"], "14");
    }
}
