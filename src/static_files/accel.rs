//! Files named by an app's or upstream's response (`X-Accel-Redirect`,
//! `X-Sendfile`), served by the static handler in its place: the Python
//! thread or upstream connection is free while the file goes out.

use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::{decide, render, Cache, StaticRequest};
use crate::config::StaticOptions;
use crate::request::answer::status_page;
use crate::request::body::Body;
use crate::request::sendfile::SendQueue;

/// A file a response names in place of its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedFile {
    /// Named by `X-Accel-Redirect` (a URL path under the root), not by
    /// `X-Sendfile` (an absolute file path).
    pub accel: bool,
    pub target: HeaderValue,
}

/// The file an app's or upstream's response names, if any: its
/// `X-Accel-Redirect`, else its `X-Sendfile`.
pub fn named_file(headers: &HeaderMap) -> Option<NamedFile> {
    let (accel, target) = [("x-accel-redirect", true), ("x-sendfile", false)]
        .into_iter()
        .find_map(|(name, accel)| headers.get(name).map(|v| (accel, v.clone())))?;
    Some(NamedFile { accel, target })
}

/// `X-Accel-Redirect: /path` (under the root) or `X-Sendfile: /abs/path`
/// (inside the root): the static handler serves it with ranges and
/// validators; the app's other headers are kept. `request` is the client's
/// method and headers (for ranges and conditionals); `sendfile` is set when
/// the body may go out with the syscall.
pub fn named_file_response(
    root: &std::path::Path,
    cache: &Cache,
    sendfile: Option<&Arc<SendQueue>>,
    accel: bool,
    target: &HeaderValue,
    request: (&http::Method, &http::HeaderMap),
    app_headers: http::HeaderMap,
) -> Response<Body> {
    let (request_method, request_headers) = request;
    let Ok(target) = target.to_str() else {
        return status_page(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let rel = if accel {
        Some(target.to_string())
    } else {
        std::path::Path::new(target)
            .strip_prefix(root)
            .ok()
            .and_then(|p| p.to_str())
            .map(|p| format!("/{}", percent_encoding::utf8_percent_encode(p, PATH_SET)))
    };
    let Some(rel) = rel else {
        tracing::error!("X-Sendfile {target:?} is outside the route's sendfile_root; answered 500");
        return status_page(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let opts = StaticOptions {
        root: root.to_path_buf(),
        index: Vec::new(),
        autoindex: false,
        dotfiles: true,
        symlinks_outside_root: false,
        precompressed: false,
        expires: None,
    };
    let method = if request_method == http::Method::HEAD {
        http::Method::HEAD
    } else {
        http::Method::GET
    };
    let static_req = StaticRequest {
        method: &method,
        headers: request_headers,
        path: &rel,
        query: None,
        rel: &rel,
    };
    let outcome = decide(&opts, cache, &static_req);
    let mut response = render(outcome, &static_req, sendfile);
    if response.status() == StatusCode::NOT_FOUND {
        tracing::error!(
            "X-Accel-Redirect/X-Sendfile names {target:?}, which is not a file under {}",
            root.display()
        );
    }
    for (name, value) in app_headers.iter() {
        let ours = matches!(
            name.as_str(),
            "x-accel-redirect" | "x-sendfile" | "content-length" | "content-encoding"
        ) || response.headers().contains_key(name);
        if !ours {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
}

/// Characters of a file path that must be escaped to stay one URL path.
const PATH_SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'\\');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_accel_redirect_wins_over_x_sendfile() {
        let mut headers = HeaderMap::new();
        assert_eq!(named_file(&headers), None);
        headers.insert("x-sendfile", HeaderValue::from_static("/srv/files/a"));
        assert_eq!(
            named_file(&headers),
            Some(NamedFile {
                accel: false,
                target: HeaderValue::from_static("/srv/files/a"),
            })
        );
        headers.insert("X-Accel-Redirect", HeaderValue::from_static("/b"));
        assert_eq!(
            named_file(&headers),
            Some(NamedFile {
                accel: true,
                target: HeaderValue::from_static("/b"),
            })
        );
    }
}
