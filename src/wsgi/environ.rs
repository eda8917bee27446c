//! The WSGI environ (PEP 3333), built per request as a plain dict:
//!
//! 1. the keys every request has go into the Python thread's template
//!    ([`EnvCache`]: a copy of the per-worker base, which holds
//!    `wsgi.version`, `wsgi.multithread`, ..., `SERVER_SOFTWARE` and
//!    placeholders for the others), where only a value that differs from
//!    the last request's is replaced:
//!    - request line: REQUEST_METHOD, SCRIPT_NAME (the route prefix),
//!      PATH_INFO (percent-decoded once, as latin-1), QUERY_STRING,
//!      REQUEST_URI and RAW_URI (the target as sent), SERVER_PROTOCOL;
//!    - who and where: REMOTE_ADDR, SERVER_NAME/SERVER_PORT, HTTP_HOST,
//!      `wsgi.url_scheme` (believing forwarding headers only from trusted
//!      peers; behind a uwsgi front, the client and server it named);
//! 2. the environ is a copy of the template (so it never grows), then gets
//!    the request's own keys: REMOTE_PORT; CONTENT_TYPE and CONTENT_LENGTH,
//!    and HTTP_* for the other headers, repeated fields joined with ", "
//!    (Cookie with "; "), by the gateways' one rule
//!    ([`crate::request::gateway_env::field_var`]): names with `_` dropped
//!    since `X-User_Id` would alias `X-User-Id`, `Proxy` dropped (httpoxy:
//!    `HTTP_PROXY` would be read as the app's outgoing proxy),
//!    `Authorization` passed (apps log users in with it);
//!    `wsgi.input` and `wsgi.errors`.
//!
//! Keys are interned Python strings; values are latin-1 native strings.

use std::borrow::Cow;
use std::net::SocketAddr;

use http::header::{self, HeaderMap};
use http::request::Parts;
use percent_encoding::percent_decode_str;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use super::env_cache::{EnvCache, Fixed};
use crate::log::version_text;
use crate::request::forwarded::ClientView;
use crate::request::gateway_env::{field_var, merge_separator, FieldVar, PortFrom, ServerAt};

/// The keys that never change within a worker.
pub fn base(
    py: Python<'_>,
    multithread: bool,
    multiprocess: bool,
    file_wrapper: Bound<'_, PyAny>,
) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "wsgi.version"), PyTuple::new(py, [1, 0])?)?;
    d.set_item(intern!(py, "wsgi.multithread"), multithread)?;
    d.set_item(intern!(py, "wsgi.multiprocess"), multiprocess)?;
    d.set_item(intern!(py, "wsgi.run_once"), false)?;
    d.set_item(intern!(py, "wsgi.input_terminated"), true)?;
    d.set_item(intern!(py, "wsgi.file_wrapper"), file_wrapper)?;
    d.set_item(
        intern!(py, "SERVER_SOFTWARE"),
        concat!("portico/", env!("CARGO_PKG_VERSION")),
    )?;
    // Placeholders for the keys every request sets: the template and the
    // copies made of it then have their slots and room to spare, so setting
    // them replaces values instead of growing the dict (twice, for a
    // typical request).
    for key in Fixed::KEYS.iter().chain(&OWN_KEYS) {
        d.set_item(PyString::intern(py, key), py.None())?;
    }
    Ok(d.unbind())
}

/// The keys of every request that stay out of the template, set on the
/// request's copy (REMOTE_PORT deleted there when there is no client port).
const OWN_KEYS: [&str; 3] = ["REMOTE_PORT", "wsgi.input", "wsgi.errors"];

/// Everything about a request the environ is made of, besides the streams.
pub struct RequestView<'a> {
    pub parts: &'a Parts,
    /// The route prefix; "" for the root route.
    pub script_name: &'a str,
    pub client: &'a ClientView,
    pub local: Option<SocketAddr>,
}

pub fn build<'py>(
    py: Python<'py>,
    cache: &mut EnvCache,
    req: &RequestView<'_>,
    input: Bound<'py, PyAny>,
    errors: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let parts = req.parts;
    let uri = &parts.uri;
    let path = uri.path();
    let path_info = path.get(req.script_name.len()..).unwrap_or("");

    cache.set(py, Fixed::RequestMethod, parts.method.as_str().as_bytes())?;
    cache.set(py, Fixed::ScriptName, req.script_name.as_bytes())?;
    let decoded: Cow<'_, [u8]> = percent_decode_str(path_info).into();
    cache.set(py, Fixed::PathInfo, &decoded)?;
    // The target is bytes on the wire; PEP 3333 wants them as latin-1.
    let query = uri.query().unwrap_or("");
    cache.set(py, Fixed::QueryString, query.as_bytes())?;
    let origin_form = uri.path_and_query().map_or(path, |pq| pq.as_str());
    cache.set(py, Fixed::RequestUri, origin_form.as_bytes())?;
    // RAW_URI is the target as sent: absolute-form keeps scheme and authority.
    match uri.scheme() {
        Some(_) => cache.set(py, Fixed::RawUri, uri.to_string().as_bytes())?,
        None => cache.set(py, Fixed::RawUri, origin_form.as_bytes())?,
    }
    cache.set(
        py,
        Fixed::ServerProtocol,
        version_text(parts.version).as_bytes(),
    )?;

    let client = req.client;
    cache.set(py, Fixed::RemoteAddr, client.remote_addr.as_bytes())?;
    let scheme = if client.https { "https" } else { "http" };
    cache.set(py, Fixed::UrlScheme, scheme.as_bytes())?;

    let host = client
        .host
        .as_deref()
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .or_else(|| uri.authority().map(|a| a.as_str()));
    let mut port_buf = itoa::Buffer::new();
    let server = ServerAt {
        host,
        local: req.local,
        https: client.https,
    };
    let (mut name, mut port) = server.name_port(PortFrom::Host, &mut port_buf);
    // Behind a uwsgi front, the front's SERVER_NAME/SERVER_PORT win.
    if let Some(front) = parts.extensions.get::<crate::request::ServerVars>() {
        if let Some(front_name) = &front.name {
            name = Cow::Borrowed(front_name);
        }
        if let Some(front_port) = &front.port {
            port = front_port;
        }
    }
    cache.set(py, Fixed::ServerName, name.as_bytes())?;
    cache.set(py, Fixed::ServerPort, port.as_bytes())?;
    if let Some(host) = host {
        cache.set(py, Fixed::HttpHost, host.as_bytes())?;
    }

    // The rest is this request's own.
    let env = cache.environ(py)?;
    if host.is_none() {
        env.del_item(intern!(py, "HTTP_HOST"))?;
    }
    match client.remote_port {
        Some(port) => env.set_item(intern!(py, "REMOTE_PORT"), itoa::Buffer::new().format(port))?,
        None => env.del_item(intern!(py, "REMOTE_PORT"))?,
    }
    add_headers(py, &env, cache, &parts.headers)?;
    env.set_item(intern!(py, "wsgi.input"), input)?;
    env.set_item(intern!(py, "wsgi.errors"), errors)?;
    Ok(env)
}

fn add_headers(
    py: Python<'_>,
    env: &Bound<'_, PyDict>,
    cache: &mut EnvCache,
    headers: &HeaderMap,
) -> PyResult<()> {
    for name in headers.keys() {
        // Host: set above, from the trusted view of the request.
        if *name == header::HOST {
            continue;
        }
        // The gateways' one rule; WSGI passes Authorization on.
        let special = match field_var(name) {
            FieldVar::Dropped => continue,
            FieldVar::Body if *name == header::CONTENT_TYPE => Some(intern!(py, "CONTENT_TYPE")),
            FieldVar::Body => Some(intern!(py, "CONTENT_LENGTH")),
            FieldVar::Authorization | FieldVar::Http => None,
        };
        let mut values = headers.get_all(name).iter();
        let first = values.next().map_or(&[][..], |v| v.as_bytes());
        let mut joined;
        let value = match values.next() {
            None => first,
            Some(second) => {
                let sep = merge_separator(name);
                joined = first.to_vec();
                for v in std::iter::once(second).chain(values) {
                    joined.extend_from_slice(sep);
                    joined.extend_from_slice(v.as_bytes());
                }
                &joined[..]
            }
        };
        let (key, value) = cache.header(py, name, value);
        match special {
            Some(key) => env.set_item(key, value)?,
            None => env.set_item(key, value)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_name_port<'a>(
        host: Option<&'a str>,
        local: Option<SocketAddr>,
        https: bool,
        buf: &'a mut itoa::Buffer,
    ) -> (Cow<'a, str>, &'a str) {
        let server = ServerAt { host, local, https };
        server.name_port(PortFrom::Host, buf)
    }

    #[test]
    fn server_name_from_host() {
        let b = &mut itoa::Buffer::new();
        assert_eq!(
            server_name_port(Some("example.com:8080"), None, false, b),
            ("example.com".into(), "8080")
        );
        let b = &mut itoa::Buffer::new();
        assert_eq!(
            server_name_port(Some("example.com"), None, true, b),
            ("example.com".into(), "443")
        );
        let b = &mut itoa::Buffer::new();
        assert_eq!(
            server_name_port(Some("[::1]:9"), None, false, b),
            ("::1".into(), "9")
        );
        let local = Some("127.0.0.1:5000".parse().unwrap());
        let b = &mut itoa::Buffer::new();
        assert_eq!(
            server_name_port(None, local, false, b),
            ("127.0.0.1".into(), "5000")
        );
    }
}
