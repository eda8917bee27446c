//! Static files: resolve a URL safely, decide an [`Outcome`], render it.
//!
//! `decide` runs these steps, in order (each in its own file):
//! 1. path safety (`resolve`): decode once, normalise lexically inside the
//!    root, hide dotfiles, then check the real path is inside the root —
//!    through the worker's open-file cache (`cache`), which remembers that
//!    answer, the open file and its headers for a few seconds;
//! 2. method: GET and HEAD only, else 405 with `Allow`. Checked after the
//!    lookup so a POST to a path with no file is a 404, which try-files
//!    hands to the app, while a POST to a real file is a 405;
//! 3. directory: without a trailing `/` → 301 to add it; with one → the
//!    first index file, else an autoindex listing (`listing`), else 404;
//! 4. only regular files: FIFOs, sockets, devices → 404, never opened;
//! 5. precompressed sibling chosen by Accept-Encoding (`encoding`);
//! 6. open (O_NONBLOCK, O_NOFOLLOW) and take the validators from the open
//!    file: strong ETag and Last-Modified (`conditional`); done in step 1's
//!    lookup, so a cache hit reuses the handle and the formatted headers;
//! 7. preconditions in RFC 9110 §13.2.2 order → 412 or 304 (`conditional`);
//! 8. Range, if GET and If-Range allows it → 206 / multipart / 416 (`ranges`);
//! 9. the body streams from the open file in chunks (`file_body`), or is
//!    the cached bytes of a small file.
//!
//! `render` then turns every outcome, errors included, into a response in
//! one place; `serve` is `render(decide(..))`. Nothing here panics or fails
//! outward: every failure is a [`StaticError`] with a documented status.
//!
//! Policies: `Vary: Accept-Encoding` goes on every file response (200, 206,
//! 304, 416) whenever `precompressed` is on, whether or not this file has a
//! sibling today, so a cache stays right when siblings are added later. A
//! precompressed variant answers a multi-range request with the whole
//! variant: parts of a compressed stream are useless to a client and the
//! Content-Encoding of a multipart body would be ambiguous.

mod accel;
mod cache;
mod conditional;
mod encoding;
mod error;
mod file_body;
mod listing;
pub(crate) mod ranges;
pub(crate) mod resolve;
#[cfg(test)]
mod tests;

use std::ops::Range;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::config::StaticOptions;
use crate::request::answer::ErrorAnswer;
use crate::request::body::Body;

pub use accel::{named_file, named_file_response, NamedFile};
pub use cache::Cache;
use conditional::{http_date, Precondition, Validators};
use encoding::{AcceptEncoding, Coding};
pub use error::StaticError;
use file_body::FileBody;
use ranges::RangeDecision;
use resolve::Node;

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

/// The headers describing the representation being sent.
#[derive(Debug)]
pub struct Representation {
    /// Of the original file, also when a compressed variant is sent.
    content_type: HeaderValue,
    coding: Option<Coding>,
    /// Length of the selected (maybe compressed) file.
    len: u64,
    /// Shared with the cache entry when no coding applies.
    validators: Rc<Validators>,
    cache_control: Option<HeaderValue>,
    expires: Option<HeaderValue>,
    vary: bool,
}

/// Which bytes of the file a 200/206 carries.
#[derive(Debug)]
pub enum Part {
    Whole,
    Single(Range<u64>),
    Multi { boundary: String },
}

/// The decision for one request; `render` turns it into a response.
#[derive(Debug)]
pub enum Outcome {
    /// 200 or 206: the file (or parts of it) from an open handle.
    File {
        rep: Representation,
        part: Part,
        body: FileBody,
    },
    /// 304.
    NotModified(Representation),
    /// 412.
    PreconditionFailed,
    /// 416 with `Content-Range: bytes */len`.
    RangeNotSatisfiable(Representation),
    /// 301 to the directory URL with its trailing slash.
    Redirect(HeaderValue),
    /// 200 autoindex page.
    Listing(String),
    /// 4xx/5xx as documented on each variant.
    Error(StaticError),
}

impl Outcome {
    /// No such file here: try-files hands the request to the app instead.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Outcome::Error(e) if e.is_not_found())
    }
}

/// `range` of an already open file as a streamed body (for
/// `wsgi.file_wrapper`, which hands portico an open file).
pub fn file_range_body(
    file: std::fs::File,
    range: Range<u64>,
    sendfile: Option<&std::sync::Arc<crate::request::sendfile::SendQueue>>,
) -> Body {
    let source = file_body::Source::File(std::sync::Arc::new(file));
    let mut body = FileBody::single(source, range);
    body.send_with(sendfile);
    Body::stream(body)
}

/// `render(decide(..))`, for the unit tests.
#[cfg(test)]
pub fn serve(opts: &StaticOptions, cache: &Cache, req: &StaticRequest<'_>) -> Response<Body> {
    render(decide(opts, cache, req), req, None)
}

/// Steps 1–9 of the module doc; never fails outward. `cache` is the
/// worker's (one per thread: it is not `Sync`).
pub fn decide(opts: &StaticOptions, cache: &Cache, req: &StaticRequest<'_>) -> Outcome {
    match decide_inner(opts, cache, req) {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Error(e),
    }
}

fn decide_inner(
    opts: &StaticOptions,
    cache: &Cache,
    req: &StaticRequest<'_>,
) -> Result<Outcome, StaticError> {
    // 1. path safety
    let rel = resolve::parse_rel(req.rel, opts.dotfiles)?;
    let found = cache.locate(
        &opts.root,
        resolve::join(&opts.root, &rel.path),
        opts.symlinks_outside_root,
    )?;
    // 2. method
    if req.method != Method::GET && req.method != Method::HEAD {
        return Err(StaticError::MethodNotAllowed);
    }
    // 3. directory
    let found = if found.is_dir() {
        // The raw path decides: relative links in an index page resolve
        // against the URL the browser shows, which must end in `/`.
        if !req.path.ends_with('/') {
            return Ok(Outcome::Redirect(redirect_location(req)?));
        }
        match find_index(opts, cache, &found)? {
            Some(index) => index,
            None if opts.autoindex => {
                let html = listing::render(&found.path, req.path, rel.is_root, opts.dotfiles)?;
                return Ok(Outcome::Listing(html));
            }
            None => return Err(StaticError::NoIndex),
        }
    } else if rel.trailing_slash {
        // `/file.txt/` names a directory; the kernel would say ENOTDIR.
        return Err(StaticError::NotFound);
    } else {
        found
    };
    // 4. only regular files
    if !found.is_file() {
        return Err(StaticError::NotRegular);
    }
    serve_file(opts, cache, req, found)
}

/// Steps 5–9 for a regular file inside the root.
fn serve_file(
    opts: &StaticOptions,
    cache: &Cache,
    req: &StaticRequest<'_>,
    found: Rc<Node>,
) -> Result<Outcome, StaticError> {
    let original = found.file.as_ref().ok_or(StaticError::NotRegular)?;
    let content_type = original.content_type.clone();
    // 5. precompressed sibling
    let (found, coding) = choose_variant(opts, cache, req.headers, found);
    // 6. the handle opened at lookup, validators from it (the path may have
    //    changed since)
    let file = found.file.as_ref().ok_or(StaticError::NotRegular)?;
    let len = file.len;
    let validators = match coding {
        None => file.validators.clone(),
        Some(c) => Rc::new(Validators::new(file.mtime, len, Some(c.token()))),
    };
    let (cache_control, expires) = match opts.expires {
        Some(d) => (
            Some(HeaderValue::from_str(&format!("max-age={}", d.as_secs()))),
            SystemTime::now().checked_add(d).and_then(http_date),
        ),
        None => (None, None),
    };
    let rep = Representation {
        content_type,
        coding,
        len,
        validators,
        cache_control: cache_control.and_then(Result::ok),
        expires: expires.and_then(|e| HeaderValue::from_str(&e).ok()),
        vary: opts.precompressed,
    };
    // 7. preconditions
    match conditional::evaluate(req.headers, &rep.validators) {
        Precondition::Failed => return Ok(Outcome::PreconditionFailed),
        Precondition::NotModified => return Ok(Outcome::NotModified(rep)),
        Precondition::Proceed => {}
    }
    // 8. ranges: GET only, and only if If-Range (when present) matches
    let range = if req.method == Method::GET
        && conditional::if_range_allows(req.headers, &rep.validators)
    {
        req.headers.get(header::RANGE)
    } else {
        None
    };
    // 9. body
    let outcome = match ranges::decide(range, len) {
        RangeDecision::Unsatisfiable => Outcome::RangeNotSatisfiable(rep),
        RangeDecision::Partial(r) if r.len() == 1 => {
            let r = r[0].clone();
            Outcome::File {
                body: FileBody::single(file.source(), r.clone()),
                part: Part::Single(r),
                rep,
            }
        }
        RangeDecision::Partial(r) if rep.coding.is_none() => {
            let boundary = new_boundary();
            let ct = rep
                .content_type
                .to_str()
                .unwrap_or("application/octet-stream");
            Outcome::File {
                body: FileBody::multipart(file.source(), &r, len, ct, &boundary),
                part: Part::Multi { boundary },
                rep,
            }
        }
        RangeDecision::Full | RangeDecision::Partial(_) => Outcome::File {
            body: FileBody::single(file.source(), 0..len),
            part: Part::Whole,
            rep,
        },
    };
    Ok(outcome)
}

/// Step 3: the first configured index that is a regular file. A missing
/// name is skipped; any other failure (403, 500) is the answer.
fn find_index(
    opts: &StaticOptions,
    cache: &Cache,
    dir: &Node,
) -> Result<Option<Rc<Node>>, StaticError> {
    for name in opts.index.iter().filter(|n| resolve::is_plain_name(n)) {
        match cache.locate(
            &opts.root,
            dir.lexical.join(name),
            opts.symlinks_outside_root,
        ) {
            Ok(f) if f.is_file() => return Ok(Some(f)),
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Step 5: the best acceptable sibling that exists and passes the same
/// checks as the original (a sibling symlinked out of the root is skipped).
fn choose_variant(
    opts: &StaticOptions,
    cache: &Cache,
    headers: &HeaderMap,
    found: Rc<Node>,
) -> (Rc<Node>, Option<Coding>) {
    if !opts.precompressed || !headers.contains_key(header::ACCEPT_ENCODING) {
        return (found, None);
    }
    for coding in AcceptEncoding::from_headers(headers).ranked() {
        let mut name = found.lexical.clone().into_os_string();
        name.push(".");
        name.push(coding.extension());
        match cache.locate(&opts.root, PathBuf::from(name), opts.symlinks_outside_root) {
            Ok(v) if v.is_file() => return (v, Some(coding)),
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::debug!(error = %e, "precompressed sibling skipped"),
        }
    }
    (found, None)
}

/// Content-Type from the extension of the name the URL used. Textual types
/// get `charset=utf-8`: the web's default and what our sites are written in.
fn content_type_for(path: &std::path::Path) -> HeaderValue {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let textual = mime.type_() == mime_guess::mime::TEXT
        || matches!(mime.suffix(), Some(s) if s == mime_guess::mime::JSON || s == mime_guess::mime::XML)
        || matches!(
            mime.essence_str(),
            "application/javascript"
                | "application/ecmascript"
                | "application/json"
                | "application/xml"
                | "application/x-javascript"
        );
    let value = if textual {
        HeaderValue::from_str(&format!("{}; charset=utf-8", mime.essence_str()))
    } else {
        HeaderValue::from_str(mime.essence_str())
    };
    value.unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// Step 3: the request path plus `/`, query kept. Leading slashes (and
/// backslashes, which browsers read as slashes) collapse to one `/` so
/// `//evil.example` can never become a scheme-relative redirect.
fn redirect_location(req: &StaticRequest<'_>) -> Result<HeaderValue, StaticError> {
    let trimmed = req.path.trim_start_matches(['/', '\\']);
    let path = if trimmed.is_empty() {
        "/".to_string()
    } else {
        format!("/{trimmed}/")
    };
    let location = match req.query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    HeaderValue::from_str(&location).map_err(|_| StaticError::BadPath("unprintable path"))
}

/// A multipart boundary no file is likely to contain: 64 random bits from
/// the std hasher's per-process random keys.
fn new_boundary() -> String {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(SystemTime::now());
    format!("portico-{bits:016x}")
}

/// Every response is built here.
/// Accept-Ranges, Content-Length, -Type, ETag, Last-Modified,
/// Cache-Control, Expires, Vary, Content-Encoding, Server.
const RESPONSE_HEADERS: usize = 10;

/// `sendfile` is the connection's queue when it can `sendfile` (plain
/// HTTP/1): file bytes from a handle then go that way, not through a buffer.
pub fn render(
    outcome: Outcome,
    req: &StaticRequest<'_>,
    sendfile: Option<&std::sync::Arc<crate::request::sendfile::SendQueue>>,
) -> Response<Body> {
    let head = req.method == Method::HEAD;
    let mut res = Response::new(Body::empty());
    // Room for a file's headers and `Server`: no regrowing per response.
    *res.headers_mut() = http::HeaderMap::with_capacity(RESPONSE_HEADERS);
    let h = res.headers_mut();
    let status = match outcome {
        Outcome::File {
            rep,
            part,
            mut body,
        } => {
            body.send_with(sendfile);
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            representation_headers(h, &rep);
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            let status = match part {
                Part::Whole => {
                    h.insert(header::CONTENT_TYPE, rep.content_type);
                    StatusCode::OK
                }
                Part::Single(r) => {
                    h.insert(header::CONTENT_TYPE, rep.content_type);
                    let cr = format!("bytes {}-{}/{}", r.start, r.end - 1, rep.len);
                    put(h, header::CONTENT_RANGE, &cr);
                    StatusCode::PARTIAL_CONTENT
                }
                Part::Multi { boundary } => {
                    let ct = format!("multipart/byteranges; boundary={boundary}");
                    put(h, header::CONTENT_TYPE, &ct);
                    StatusCode::PARTIAL_CONTENT
                }
            };
            if !head {
                *res.body_mut() = match body.into_full() {
                    Ok(bytes) => Body::full(bytes),
                    Err(stream) => Body::stream(*stream),
                };
            }
            status
        }
        Outcome::NotModified(rep) => {
            validator_and_cache_headers(h, &rep);
            StatusCode::NOT_MODIFIED
        }
        Outcome::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        Outcome::RangeNotSatisfiable(rep) => {
            put(h, header::ACCEPT_RANGES, "bytes");
            put(h, header::CONTENT_RANGE, &format!("bytes */{}", rep.len));
            if rep.vary {
                put(h, header::VARY, "accept-encoding");
            }
            StatusCode::RANGE_NOT_SATISFIABLE
        }
        Outcome::Redirect(location) => {
            h.insert(header::LOCATION, location);
            StatusCode::MOVED_PERMANENTLY
        }
        Outcome::Listing(html) => {
            put(h, header::CONTENT_TYPE, "text/html; charset=utf-8");
            put(h, header::CACHE_CONTROL, "no-cache");
            put(h, header::CONTENT_LENGTH, &html.len().to_string());
            if !head {
                *res.body_mut() = Body::full(html);
            }
            StatusCode::OK
        }
        Outcome::Error(e) => return error_response(&e, head),
    };
    *res.status_mut() = status;
    res
}

/// The catalogue's page of the error's status (logged when an operator
/// must see it); a 405 says which methods are allowed.
fn error_response(e: &StaticError, head: bool) -> Response<Body> {
    e.log();
    let mut answer = ErrorAnswer::new(e.status());
    if matches!(e, StaticError::MethodNotAllowed) {
        answer = answer.with(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    match head {
        true => answer.into_head_response(),
        false => answer.into_response(),
    }
}

/// Content-Encoding plus the headers a 304 also carries.
fn representation_headers(h: &mut HeaderMap, rep: &Representation) {
    if let Some(c) = rep.coding {
        put(h, header::CONTENT_ENCODING, c.token());
    }
    validator_and_cache_headers(h, rep);
}

/// ETag, Last-Modified, Cache-Control, Expires, Vary (RFC 9110 §15.4.5 asks
/// a 304 for those a 200 would carry).
fn validator_and_cache_headers(h: &mut HeaderMap, rep: &Representation) {
    match &rep.validators.etag_value {
        Some(etag) => {
            h.insert(header::ETAG, etag.clone());
        }
        None => put(h, header::ETAG, &rep.validators.etag),
    }
    if let Some(lm) = &rep.validators.last_modified_value {
        h.insert(header::LAST_MODIFIED, lm.clone());
    }
    if let Some(cc) = &rep.cache_control {
        h.insert(header::CACHE_CONTROL, cc.clone());
    }
    if let Some(exp) = &rep.expires {
        h.insert(header::EXPIRES, exp.clone());
    }
    if rep.vary {
        h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

/// Inserts a header we built ourselves; all are ASCII, but a bad one is
/// logged and skipped rather than allowed to panic.
fn put(h: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(v) => {
            h.insert(name, v);
        }
        Err(_) => tracing::error!(header = %name, value, "static: unencodable header skipped"),
    }
}
