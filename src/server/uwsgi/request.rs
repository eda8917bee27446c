//! A uwsgi packet's vars → the HTTP request the router and handlers take:
//!
//! 1. method from `REQUEST_METHOD` (required);
//! 2. target from `REQUEST_URI` (as the client sent it), else `PATH_INFO`
//!    (re-encoded) and `QUERY_STRING`;
//! 3. version from `SERVER_PROTOCOL` (HTTP/1.1 when absent);
//! 4. headers from `HTTP_*` (`HTTP_X_FOO` → `x-foo`, repeated vars
//!    appended), `CONTENT_TYPE`, `CONTENT_LENGTH` (the body's framing: the
//!    only length believed; `HTTP_CONTENT_LENGTH` and
//!    `HTTP_TRANSFER_ENCODING` are dropped; of several `HTTP_HOST`, the
//!    first); a Host from `SERVER_NAME` and
//!    `SERVER_PORT` when the front sent no `HTTP_HOST`;
//! 5. the client as the front saw it: `REMOTE_ADDR`/`REMOTE_PORT`, `HTTPS`
//!    (or `REQUEST_SCHEME`/`UWSGI_SCHEME` = https) become the request's
//!    [`Peer`]; `SERVER_NAME`/`SERVER_PORT` travel as a [`ServerVars`]
//!    request extension to the WSGI environ.
//!
//! Other vars (`DOCUMENT_ROOT`, `SCRIPT_NAME`...) are ignored: portico's own
//! route decides `SCRIPT_NAME`.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use crate::request::gateway_env::Var;
use crate::request::{Peer, ServerVars};
use crate::uwsgi::codec::ProtocolError;

/// The request the packet describes, without its body.
#[derive(Debug)]
pub struct Decided {
    pub request: Request<()>,
    /// Bytes of body following the packet.
    pub content_length: u64,
    /// The client as the front server saw it.
    pub peer: Peer,
}

/// Bytes that cannot appear raw in a request target.
const TARGET_SET: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'<').add(b'>').add(b'`');
/// `PATH_INFO` is decoded; `?` and `#` in it are part of the path.
const PATH_SET: &AsciiSet = &TARGET_SET.add(b'?').add(b'#').add(b'%');

/// Steps 1–5. `socket` is the connection's own view, used for what the
/// front did not say.
pub fn decide(vars: Vec<Var>, socket: Peer) -> Result<Decided, ProtocolError> {
    let bad = |m: String| ProtocolError::BadRequest(m);
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    let mut method = None;
    let (mut request_uri, mut path_info, mut query) = (None, None, None);
    let mut version = Version::HTTP_11;
    let mut headers = http::HeaderMap::new();
    let mut content_length = 0;
    let (mut remote_addr, mut remote_port) = (None, None);
    let mut https = false;
    let mut server = ServerVars::default();
    for (key, value) in vars {
        match key.as_str() {
            "REQUEST_METHOD" => {
                method = Some(
                    Method::from_bytes(&value)
                        .map_err(|_| bad(format!("REQUEST_METHOD {:?}", text(&value))))?,
                )
            }
            "REQUEST_URI" if !value.is_empty() => request_uri = Some(value),
            "PATH_INFO" => path_info = Some(value),
            "QUERY_STRING" => query = Some(value),
            "SERVER_PROTOCOL" => {
                version = match &value[..] {
                    b"HTTP/1.0" => Version::HTTP_10,
                    b"HTTP/0.9" => Version::HTTP_09,
                    b"HTTP/2" | b"HTTP/2.0" => Version::HTTP_2,
                    b"HTTP/3" | b"HTTP/3.0" => Version::HTTP_3,
                    _ => Version::HTTP_11,
                }
            }
            "CONTENT_LENGTH" if !value.is_empty() => {
                content_length = crate::request::headers::content_length(&value)
                    .ok_or_else(|| bad(format!("CONTENT_LENGTH {:?}", text(&value))))?;
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(content_length));
            }
            "CONTENT_TYPE" if !value.is_empty() => {
                let v = HeaderValue::from_bytes(&value)
                    .map_err(|_| bad("CONTENT_TYPE holds a forbidden byte".into()))?;
                headers.insert(header::CONTENT_TYPE, v);
            }
            "REMOTE_ADDR" => remote_addr = Some(value),
            "REMOTE_PORT" => {
                remote_port = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|p| p.parse().ok())
            }
            "HTTPS" => https |= matches!(&value[..], b"on" | b"ON" | b"1"),
            "REQUEST_SCHEME" | "UWSGI_SCHEME" => https |= value.eq_ignore_ascii_case(b"https"),
            "SERVER_NAME" if !value.is_empty() => server.name = Some(text(&value)),
            "SERVER_PORT" if !value.is_empty() => server.port = Some(text(&value)),
            _ => {
                let Some(field) = key.strip_prefix("HTTP_") else {
                    continue;
                };
                let name = field.replace('_', "-").to_ascii_lowercase();
                if matches!(
                    name.as_str(),
                    "content-length" | "content-type" | "transfer-encoding"
                ) {
                    continue;
                }
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| bad(format!("{key} is not a header name")))?;
                let value = HeaderValue::from_bytes(&value)
                    .map_err(|_| bad(format!("{key} holds a forbidden byte")))?;
                // nginx may send HTTP_HOST both as a param ($host, checked)
                // and as the client's header: the first one wins.
                if name == header::HOST && headers.contains_key(header::HOST) {
                    continue;
                }
                headers.append(name, value);
            }
        }
    }
    let method = method.ok_or_else(|| bad("no REQUEST_METHOD".into()))?;
    let target = match request_uri {
        Some(uri) => encode_target(&uri, TARGET_SET),
        None => {
            let path = path_info
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| b"/".to_vec());
            let mut t = encode_target(&path, PATH_SET);
            if let Some(q) = query.filter(|q| !q.is_empty()) {
                t.push('?');
                t.push_str(&encode_target(&q, TARGET_SET));
            }
            t
        }
    };
    let uri: Uri = target
        .parse()
        .map_err(|e| bad(format!("target {target:?}: {e}")))?;
    // What an HTTP request line may carry (RFC 9112 §3.2): origin form,
    // absolute form, or `*`; `REQUEST_URI = "x"` would reach the router
    // with a path that does not start with `/`.
    let origin = uri.path().starts_with('/') && uri.authority().is_none();
    let absolute = uri.scheme().is_some();
    if !(origin || absolute || uri == "*") {
        return Err(bad(format!("target {target:?} is not a request target")));
    }
    if !headers.contains_key(header::HOST) {
        if let Some(name) = &server.name {
            let host = match server.port.as_deref() {
                None | Some("80") | Some("443") => name.clone(),
                Some(port) => format!("{name}:{port}"),
            };
            if let Ok(v) = HeaderValue::from_str(&host) {
                headers.insert(header::HOST, v);
            }
        }
    }
    let addr = match remote_addr {
        None => socket.addr,
        Some(ip) => std::str::from_utf8(&ip)
            .ok()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, remote_port.unwrap_or(0))),
    };
    let peer = Peer::new(addr, socket.local, https, None);
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    request.extensions_mut().insert(server);
    Ok(Decided {
        request,
        content_length,
        peer,
    })
}

/// Bytes as a request target: what cannot appear raw is percent-encoded
/// (non-ASCII bytes included), the rest is kept as sent.
fn encode_target(bytes: &[u8], set: &'static AsciiSet) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => utf8_percent_encode(text, set).to_string(),
        Err(_) => percent_encoding::percent_encode(bytes, set).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uwsgi::codec::tests::vars;

    fn socket() -> Peer {
        Peer::new(None, None, false, Some(3))
    }

    #[test]
    fn nginx_vars() {
        let d = decide(
            vars(&[
                ("QUERY_STRING", "a=1"),
                ("REQUEST_METHOD", "POST"),
                ("CONTENT_TYPE", "text/plain"),
                ("CONTENT_LENGTH", "5"),
                ("REQUEST_URI", "/x%20y?a=1"),
                ("PATH_INFO", "/x y"),
                ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
                ("SERVER_PROTOCOL", "HTTP/1.0"),
                ("REQUEST_SCHEME", "https"),
                ("HTTPS", "on"),
                ("REMOTE_ADDR", "10.0.0.7"),
                ("REMOTE_PORT", "5555"),
                ("SERVER_PORT", "8443"),
                ("SERVER_NAME", "example.com"),
                ("HTTP_X_CUSTOM", "one"),
                ("HTTP_X_CUSTOM", "two"),
                ("HTTP_CONTENT_LENGTH", "999"),
            ]),
            socket(),
        )
        .unwrap();
        let r = &d.request;
        assert_eq!(r.method(), Method::POST);
        assert_eq!(r.uri(), "/x%20y?a=1");
        assert_eq!(r.version(), Version::HTTP_10);
        assert_eq!(r.headers()["content-length"], "5");
        assert_eq!(r.headers()["content-type"], "text/plain");
        assert_eq!(r.headers()["host"], "example.com:8443");
        let custom: Vec<_> = r.headers().get_all("x-custom").iter().collect();
        assert_eq!(custom, ["one", "two"]);
        assert_eq!(d.content_length, 5);
        assert_eq!(d.peer.addr, Some("10.0.0.7:5555".parse().unwrap()));
        assert!(d.peer.tls);
        assert_eq!(d.peer.raw_fd, None);
        let server = r.extensions().get::<ServerVars>().unwrap();
        assert_eq!(server.name.as_deref(), Some("example.com"));
        assert_eq!(server.port.as_deref(), Some("8443"));
    }

    #[test]
    fn path_info_and_query_without_request_uri() {
        let d = decide(
            vars(&[
                ("REQUEST_METHOD", "GET"),
                ("PATH_INFO", "/a b?c"),
                ("QUERY_STRING", "q=1"),
                ("HTTP_HOST", "h"),
            ]),
            socket(),
        )
        .unwrap();
        assert_eq!(d.request.uri(), "/a%20b%3Fc?q=1");
        assert_eq!(d.request.headers()["host"], "h");
        assert_eq!(d.content_length, 0);
        assert!(!d.request.headers().contains_key("content-length"));
    }

    #[test]
    fn refusals() {
        assert!(decide(vars(&[("PATH_INFO", "/")]), socket()).is_err());
        assert!(decide(vars(&[("REQUEST_METHOD", "G T")]), socket()).is_err());
        assert!(decide(
            vars(&[("REQUEST_METHOD", "GET"), ("CONTENT_LENGTH", "-1")]),
            socket()
        )
        .is_err());
        assert!(decide(
            vars(&[("REQUEST_METHOD", "GET"), ("HTTP_X", "a\r\nb")]),
            socket()
        )
        .is_err());
        // Found by the uwsgi_packet fuzz target: a target without its `/`.
        for target in ["REQUEST_METHOD", "example.com:80", "a/b"] {
            let v = vars(&[("REQUEST_METHOD", "GET"), ("REQUEST_URI", target)]);
            assert!(decide(v, socket()).is_err(), "{target}");
        }
        let v = vars(&[("REQUEST_METHOD", "OPTIONS"), ("REQUEST_URI", "*")]);
        assert_eq!(decide(v, socket()).unwrap().request.uri(), "*");
    }
}
