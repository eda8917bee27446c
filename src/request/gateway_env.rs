//! Request → CGI/1.1 meta-variables (RFC 3875 §4.1), shared by every gateway
//! that hands a request to a program: CGI now, the WSGI environ and the uwsgi
//! protocol later. Only what is common to them lives here; each gateway adds
//! its own (CGI: `GATEWAY_INTERFACE`, `SCRIPT_FILENAME`, `PATH`...).
//!
//! Steps, in order:
//! 1. the request line: `REQUEST_METHOD`, `REQUEST_URI`, `QUERY_STRING`
//!    (empty when none), `SERVER_PROTOCOL`;
//! 2. where it is mounted: `SCRIPT_NAME`, `PATH_INFO` (decoded bytes, as the
//!    RFC says; empty when the script is the whole path);
//! 3. the two ends: `SERVER_NAME` (Host without its port, else the local
//!    address), `SERVER_PORT`, `REMOTE_ADDR`, `REMOTE_PORT`, `HTTPS=on`;
//! 4. the body: `CONTENT_LENGTH` only when there is a body (its length is the
//!    caller's to know: a chunked body is measured after de-chunking), and
//!    with it `CONTENT_TYPE` when the client sent one;
//! 5. `HTTP_*` for every other header, by the one rule of [`field_var`]:
//!    repeated fields merged with `, ` (`Cookie` with `; `, RFC 9113
//!    §8.2.3), names holding `_` dropped (they would collide with the `-`
//!    names once mapped: header smuggling), `Proxy` never exported
//!    (httpoxy), `Authorization` only where the gateway passes it.
//!    Without a Host field (HTTP/2), `HTTP_HOST` comes from `:authority`.
//!
//! Values are bytes: header values and decoded paths need not be UTF-8, and
//! a process environment is bytes on Linux anyway.

use std::borrow::Cow;
use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Version};

use crate::log::version_text;
use crate::request::headers::PROXY;
use crate::request::HandlerContext;

/// One meta-variable: its name and its value as bytes.
pub type Var = (String, Vec<u8>);

/// The request as a gateway sees it: the fields the variables come from. A
/// local redirect builds one of these for the new path without a new
/// `http::Request`.
pub struct GatewayRequest<'a> {
    pub method: &'a Method,
    /// The path as received, still percent-encoded (for `REQUEST_URI`).
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub version: Version,
    /// `:authority` (HTTP/2) or the absolute-form authority, when present.
    pub authority: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

impl<'a> GatewayRequest<'a> {
    pub fn from_parts(parts: &'a http::request::Parts) -> Self {
        GatewayRequest {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            version: parts.version,
            authority: parts.uri.authority().map(|a| a.as_str()),
            headers: &parts.headers,
        }
    }
}

/// What the gateway decided about the request before asking for variables.
pub struct Mapping<'a> {
    /// The URL path of the program or app, decoded (`/cgi-bin/env.sh`); ""
    /// for an app mounted at `/`.
    pub script_name: &'a [u8],
    /// The decoded rest of the path ("" or starting with `/`).
    pub path_info: &'a [u8],
    /// Length of the body the program will read, if it gets one.
    pub content_length: Option<u64>,
    /// Export `Authorization` as `HTTP_AUTHORIZATION`.
    pub pass_authorization: bool,
}

pub const SERVER_SOFTWARE: &str = concat!("portico/", env!("CARGO_PKG_VERSION"));

/// The meta-variables of steps 1–5, in that order.
pub fn meta_variables(
    req: &GatewayRequest<'_>,
    map: &Mapping<'_>,
    ctx: &HandlerContext<'_>,
) -> Vec<Var> {
    let mut vars: Vec<Var> = Vec::with_capacity(24 + req.headers.keys_len());
    let mut set = |name: &str, value: &[u8]| vars.push((name.to_string(), value.to_vec()));

    // 1. The request line.
    set("REQUEST_METHOD", req.method.as_str().as_bytes());
    let uri = match req.query {
        Some(q) => format!("{}?{q}", req.path),
        None => req.path.to_string(),
    };
    set("REQUEST_URI", uri.as_bytes());
    set("QUERY_STRING", req.query.unwrap_or("").as_bytes());
    set("SERVER_PROTOCOL", version_text(req.version).as_bytes());
    set("SERVER_SOFTWARE", SERVER_SOFTWARE.as_bytes());

    // 2. HandlerContext.
    set("SCRIPT_NAME", map.script_name);
    set("PATH_INFO", map.path_info);

    // 3. The two ends.
    let mut port_buf = itoa::Buffer::new();
    let server = ServerAt {
        host: host_field(req),
        local: ctx.peer.local,
        https: ctx.peer.tls,
    };
    let (server_name, server_port) = server.name_port(PortFrom::Local, &mut port_buf);
    set("SERVER_NAME", server_name.as_bytes());
    set("SERVER_PORT", server_port.as_bytes());
    // On a unix socket there is no client address: an empty REMOTE_ADDR
    // (the RFC wants the variable set), no REMOTE_PORT.
    match ctx.peer.addr {
        Some(addr) => {
            set("REMOTE_ADDR", ctx.peer.ip_text.as_str().as_bytes());
            set("REMOTE_PORT", addr.port().to_string().as_bytes());
        }
        None => set("REMOTE_ADDR", b""),
    }
    if ctx.peer.tls {
        set("HTTPS", b"on");
    }

    // 4. The body.
    if let Some(len) = map.content_length {
        set("CONTENT_LENGTH", len.to_string().as_bytes());
        if let Some(ct) = req.headers.get(header::CONTENT_TYPE) {
            set("CONTENT_TYPE", ct.as_bytes());
        }
    }

    // 5. Every other header.
    vars.extend(http_vars(req, map.pass_authorization));
    vars
}

/// What a request field becomes among a gateway's variables: the one rule
/// of step 5, which CGI, the uwsgi client and the WSGI environ all apply
/// (docs/internals.md, *Gateway variables*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldVar {
    /// Never exported. `Proxy`: a program would read `HTTP_PROXY` as its
    /// outgoing proxy (httpoxy). A name holding `_`: `X-User_Id` would
    /// become the same variable as `X-User-Id`, so a client could forge a
    /// field a front proxy set (header smuggling).
    Dropped,
    /// `Content-Type` and `Content-Length`: `CONTENT_TYPE` and
    /// `CONTENT_LENGTH`, never `HTTP_CONTENT_*` (RFC 3875 §4.1.18, PEP
    /// 3333); each gateway sets them from what it knows of the body.
    Body,
    /// `Authorization`: `HTTP_AUTHORIZATION` where the gateway passes
    /// credentials on, which is its one documented exception. CGI does
    /// not unless the route says `cgi_pass_authorization = true` (RFC 3875
    /// §4.1.18 lets a server withhold fields that carry credentials, and
    /// Apache's `CGIPassAuth` is off by default too); WSGI apps and uwsgi
    /// upstreams always get it (PEP 3333 exports every client field, and
    /// Flask/Django log users in with it).
    Authorization,
    /// `HTTP_` + the name ([`env_name`]), repeated fields joined with
    /// [`merge_separator`].
    Http,
}

/// The rule of step 5 for one field name.
#[inline]
pub fn field_var(name: &HeaderName) -> FieldVar {
    if *name == header::CONTENT_TYPE || *name == header::CONTENT_LENGTH {
        FieldVar::Body
    } else if *name == header::AUTHORIZATION {
        FieldVar::Authorization
    } else if *name == PROXY || name.as_str().contains('_') {
        FieldVar::Dropped
    } else {
        FieldVar::Http
    }
}

/// What joins the values of a repeated field in one variable: `; ` for
/// `Cookie` (RFC 9113 §8.2.3: how HTTP/2 splits it), `, ` for the rest
/// (RFC 9110 §5.3).
#[inline]
pub fn merge_separator(name: &HeaderName) -> &'static [u8] {
    if *name == header::COOKIE {
        b"; "
    } else {
        b", "
    }
}

/// `HTTP_*` variables (step 5), one per field name, repeated fields merged.
pub fn http_vars(req: &GatewayRequest<'_>, pass_authorization: bool) -> Vec<Var> {
    let mut out = Vec::with_capacity(req.headers.keys_len() + 1);
    for name in req.headers.keys() {
        match field_var(name) {
            FieldVar::Http => {}
            FieldVar::Authorization if pass_authorization => {}
            FieldVar::Authorization | FieldVar::Body | FieldVar::Dropped => continue,
        }
        let separator = merge_separator(name);
        let mut value = Vec::new();
        for (i, v) in req.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                value.extend_from_slice(separator);
            }
            value.extend_from_slice(v.as_bytes());
        }
        out.push((env_name(name.as_str()), value));
    }
    if !req.headers.contains_key(header::HOST) {
        if let Some(authority) = req.authority {
            out.push(("HTTP_HOST".to_string(), authority.as_bytes().to_vec()));
        }
    }
    out
}

/// `x-forwarded-for` → `HTTP_X_FORWARDED_FOR`.
pub fn env_name(header: &str) -> String {
    let mut name = String::with_capacity(header.len() + 5);
    name.push_str("HTTP_");
    name.extend(header.chars().map(|c| match c {
        '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    name
}

/// What `SERVER_NAME` and `SERVER_PORT` are made of.
pub struct ServerAt<'a> {
    /// The Host the client asked for (field, authority, or a trusted
    /// proxy's `X-Forwarded-Host` where the gateway believes one).
    pub host: Option<&'a str>,
    /// The address the request came in on (None on a unix socket).
    pub local: Option<SocketAddr>,
    /// The scheme is https: the default port is 443, not 80.
    pub https: bool,
}

/// Where `SERVER_PORT` comes from: the gateways' one difference, kept
/// because each follows its own specification and tests pin both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortFrom {
    /// The port the request was received on (RFC 3875 §4.1.15: "the TCP/IP
    /// port number on which this request is received from the client"),
    /// else the Host's, else the scheme's default. CGI and uwsgi.
    Local,
    /// The Host's port, else the scheme's default; the local address only
    /// when there is no Host name. WSGI: PEP 3333 rebuilds the request URL
    /// from `HTTP_HOST`, else `SERVER_NAME:SERVER_PORT`, so the two must
    /// name what the client reached (behind a port mapping or a proxy that
    /// is not the listener's port); gunicorn and waitress do the same.
    Host,
}

impl<'a> ServerAt<'a> {
    /// (`SERVER_NAME`, `SERVER_PORT`). The name is the Host's without its
    /// port, else the local IP (IPv4-mapped addresses written as IPv4),
    /// else `localhost`. `buf` holds a port that has to be formatted.
    pub fn name_port(&self, from: PortFrom, buf: &'a mut itoa::Buffer) -> (Cow<'a, str>, &'a str) {
        let default_port = if self.https { "443" } else { "80" };
        let (host_name, host_port) = self.host.map(split_host).unwrap_or((None, None));
        let port = match (from, host_name.is_some(), self.local) {
            (PortFrom::Host, true, _) | (_, _, None) => host_port.unwrap_or(default_port),
            (_, _, Some(local)) => buf.format(local.port()),
        };
        let name = match (host_name, self.local) {
            (Some(name), _) => Cow::Borrowed(name),
            (None, Some(local)) => Cow::Owned(local.ip().to_canonical().to_string()),
            (None, None) => Cow::Borrowed("localhost"),
        };
        (name, port)
    }
}

/// The Host field, else the request's authority.
fn host_field<'a>(req: &GatewayRequest<'a>) -> Option<&'a str> {
    req.headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(req.authority)
        .filter(|h| !h.is_empty())
}

/// `example.com:8080` → (`example.com`, `8080`); `[::1]:80` → (`::1`, `80`).
pub fn split_host(host: &str) -> (Option<&str>, Option<&str>) {
    if let Some(v6) = host.strip_prefix('[') {
        return match v6.split_once(']') {
            Some((addr, rest)) => (Some(addr), rest.strip_prefix(':')),
            None => (None, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) => (Some(name), Some(port)),
        None => (Some(host), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Peer;

    fn peer(tls: bool) -> Peer {
        Peer::new(
            Some("[::ffff:10.1.2.3]:40000".parse().unwrap()),
            Some("127.0.0.1:8080".parse().unwrap()),
            tls,
            None,
        )
    }

    fn vars(req: http::Request<()>, map: &Mapping<'_>, peer: Peer) -> Vec<Var> {
        let (parts, ()) = req.into_parts();
        let ctx = HandlerContext {
            script_name: "/cgi-bin",
            max_body_size: 0,
            buffering: crate::request::spool::Buffering::streaming(),
            peer,
            sendfile: None,
        };
        meta_variables(&GatewayRequest::from_parts(&parts), map, &ctx)
    }

    fn get<'v>(vars: &'v [Var], name: &str) -> Option<&'v str> {
        let mut found = vars.iter().filter(|(n, _)| n == name);
        let first = found.next().map(|(_, v)| std::str::from_utf8(v).unwrap());
        assert!(found.next().is_none(), "{name} set twice");
        first
    }

    const MAP: Mapping<'static> = Mapping {
        script_name: b"/cgi-bin/env",
        path_info: b"/a b",
        content_length: None,
        pass_authorization: false,
    };

    #[test]
    fn rfc_3875_variables() {
        let req = http::Request::builder()
            .uri("/cgi-bin/env/a%20b?x=1&y")
            .header("host", "example.com:8443")
            .body(())
            .unwrap();
        let v = vars(req, &MAP, peer(false));
        assert_eq!(get(&v, "REQUEST_METHOD"), Some("GET"));
        assert_eq!(get(&v, "REQUEST_URI"), Some("/cgi-bin/env/a%20b?x=1&y"));
        assert_eq!(get(&v, "QUERY_STRING"), Some("x=1&y"));
        assert_eq!(get(&v, "SERVER_PROTOCOL"), Some("HTTP/1.1"));
        assert_eq!(get(&v, "SCRIPT_NAME"), Some("/cgi-bin/env"));
        assert_eq!(get(&v, "PATH_INFO"), Some("/a b"));
        assert_eq!(get(&v, "SERVER_NAME"), Some("example.com"));
        assert_eq!(get(&v, "SERVER_PORT"), Some("8080"));
        assert_eq!(get(&v, "REMOTE_ADDR"), Some("10.1.2.3"));
        assert_eq!(get(&v, "REMOTE_PORT"), Some("40000"));
        assert_eq!(get(&v, "HTTP_HOST"), Some("example.com:8443"));
        assert_eq!(get(&v, "HTTPS"), None);
        assert_eq!(get(&v, "CONTENT_LENGTH"), None);
        assert_eq!(get(&v, "CONTENT_TYPE"), None);
    }

    #[test]
    fn empty_query_string_and_server_name_from_local_address() {
        let req = http::Request::builder().uri("/x").body(()).unwrap();
        let v = vars(req, &MAP, peer(true));
        assert_eq!(get(&v, "QUERY_STRING"), Some(""));
        assert_eq!(get(&v, "SERVER_NAME"), Some("127.0.0.1"));
        assert_eq!(get(&v, "HTTPS"), Some("on"));
    }

    #[test]
    fn http2_authority_gives_host() {
        let req = http::Request::builder()
            .uri("https://[::1]:9000/x")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        let v = vars(req, &MAP, peer(true));
        assert_eq!(get(&v, "SERVER_NAME"), Some("::1"));
        assert_eq!(get(&v, "HTTP_HOST"), Some("[::1]:9000"));
        assert_eq!(get(&v, "SERVER_PROTOCOL"), Some("HTTP/2.0"));
        assert_eq!(get(&v, "REQUEST_URI"), Some("/x"));
    }

    #[test]
    fn body_variables_only_with_a_body() {
        let req = http::Request::builder()
            .method("POST")
            .uri("/x")
            .header("content-type", "text/plain")
            .header("content-length", "5")
            .body(())
            .unwrap();
        let map = Mapping {
            content_length: Some(5),
            ..MAP
        };
        let v = vars(req, &map, peer(false));
        assert_eq!(get(&v, "CONTENT_LENGTH"), Some("5"));
        assert_eq!(get(&v, "CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get(&v, "HTTP_CONTENT_LENGTH"), None);
        assert_eq!(get(&v, "HTTP_CONTENT_TYPE"), None);
        // A Content-Type without a body says nothing.
        let req = http::Request::builder()
            .uri("/x")
            .header("content-type", "text/plain")
            .body(())
            .unwrap();
        assert_eq!(get(&vars(req, &MAP, peer(false)), "CONTENT_TYPE"), None);
    }

    #[test]
    fn headers_merge_and_dangerous_ones_are_dropped() {
        let req = http::Request::builder()
            .uri("/x")
            .header("accept", "text/html")
            .header("accept", "text/plain")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("proxy", "http://evil:8080")
            .header("authorization", "Basic eDp5")
            .header("x_forwarded_for", "1.2.3.4")
            .header("x-forwarded-for", "5.6.7.8")
            .header("x-test", "() { :; }; echo pwned")
            .body(())
            .unwrap();
        let v = vars(req, &MAP, peer(false));
        assert_eq!(get(&v, "HTTP_ACCEPT"), Some("text/html, text/plain"));
        assert_eq!(get(&v, "HTTP_COOKIE"), Some("a=1; b=2"));
        assert_eq!(get(&v, "HTTP_PROXY"), None);
        assert_eq!(get(&v, "HTTP_AUTHORIZATION"), None);
        assert_eq!(get(&v, "HTTP_X_FORWARDED_FOR"), Some("5.6.7.8"));
        assert_eq!(get(&v, "HTTP_X_TEST"), Some("() { :; }; echo pwned"));
    }

    #[test]
    fn authorization_when_asked() {
        let req = http::Request::builder()
            .uri("/x")
            .header("authorization", "Basic eDp5")
            .body(())
            .unwrap();
        let map = Mapping {
            pass_authorization: true,
            ..MAP
        };
        let v = vars(req, &map, peer(false));
        assert_eq!(get(&v, "HTTP_AUTHORIZATION"), Some("Basic eDp5"));
    }

    #[test]
    fn unix_socket_peer() {
        let req = http::Request::builder()
            .uri("/x")
            .header("host", "site.test")
            .body(())
            .unwrap();
        let unix = Peer::new(None, None, false, None);
        let v = vars(req, &MAP, unix);
        assert_eq!(get(&v, "REMOTE_ADDR"), Some(""));
        assert_eq!(get(&v, "REMOTE_PORT"), None);
        assert_eq!(get(&v, "SERVER_NAME"), Some("site.test"));
        assert_eq!(get(&v, "SERVER_PORT"), Some("80"));
    }

    #[test]
    fn one_rule_for_every_field() {
        let table = [
            ("content-type", FieldVar::Body),
            ("content-length", FieldVar::Body),
            ("authorization", FieldVar::Authorization),
            ("proxy", FieldVar::Dropped),
            ("x_forwarded_for", FieldVar::Dropped),
            ("x-forwarded-for", FieldVar::Http),
            ("proxy-authorization", FieldVar::Http),
            ("host", FieldVar::Http),
            ("cookie", FieldVar::Http),
        ];
        for (name, want) in table {
            assert_eq!(field_var(&HeaderName::from_static(name)), want, "{name}");
        }
        assert_eq!(merge_separator(&header::COOKIE), b"; ");
        assert_eq!(merge_separator(&header::ACCEPT), b", ");
    }

    #[test]
    fn server_port_from_the_local_address_or_the_host() {
        let local: Option<SocketAddr> = Some("[::ffff:127.0.0.1]:8080".parse().unwrap());
        // (host, local, https) → (name, port) with PortFrom::Local, then Host.
        type Want = (&'static str, &'static str);
        type Case = (Option<&'static str>, Option<SocketAddr>, bool, Want, Want);
        let table: &[Case] = &[
            (Some("a.b:81"), local, false, ("a.b", "8080"), ("a.b", "81")),
            (Some("a.b"), local, true, ("a.b", "8080"), ("a.b", "443")),
            (Some("a.b"), None, false, ("a.b", "80"), ("a.b", "80")),
            (Some("a.b:81"), None, false, ("a.b", "81"), ("a.b", "81")),
            (
                Some("[::1"),
                local,
                false,
                ("127.0.0.1", "8080"),
                ("127.0.0.1", "8080"),
            ),
            (
                None,
                local,
                false,
                ("127.0.0.1", "8080"),
                ("127.0.0.1", "8080"),
            ),
            (None, None, true, ("localhost", "443"), ("localhost", "443")),
        ];
        for &(host, local, https, by_local, by_host) in table {
            let server = ServerAt { host, local, https };
            for (from, want) in [(PortFrom::Local, by_local), (PortFrom::Host, by_host)] {
                let buf = &mut itoa::Buffer::new();
                let (name, port) = server.name_port(from, buf);
                assert_eq!((&*name, port), want, "{host:?} {local:?} {from:?}");
            }
        }
    }

    #[test]
    fn host_splitting() {
        assert_eq!(split_host("a.b:81"), (Some("a.b"), Some("81")));
        assert_eq!(split_host("a.b"), (Some("a.b"), None));
        assert_eq!(split_host("[::1]"), (Some("::1"), None));
        assert_eq!(split_host("[::1]:8"), (Some("::1"), Some("8")));
    }
}
