//! Static files (stub: the full module is being written).

use http::{Response, StatusCode};

use crate::body::Body;
use crate::config::StaticOptions;

/// What the static handler needs from a request.
pub struct StaticRequest<'a> {
    pub method: &'a http::Method,
    pub headers: &'a http::HeaderMap,
    /// The request path as received (still percent-encoded), for redirects.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The part of `path` after the route prefix: "" or starting with `/`,
    /// still percent-encoded.
    pub rel: &'a str,
}

pub fn serve(_opts: &StaticOptions, _req: &StaticRequest<'_>) -> Response<Body> {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::NOT_FOUND;
    res
}
