//! End-to-end tests of `decide` + `render` on temporary directories, no
//! sockets (but one through hyper). The fixture and basics live here; path
//! safety and directories in `paths`, caching, ranges and encodings in `caching`.

use std::fs;
use std::path::Path;
use std::time::Duration;

use http::header::*;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;

use super::*;

mod caching;
mod paths;

struct Site {
    _dir: tempfile::TempDir,
    opts: StaticOptions,
    /// One cache for the whole test, as a worker has (no test changes a
    /// file it has already requested: the TTL would hide the change).
    cache: Cache,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        Site {
            _dir: dir,
            opts: StaticOptions {
                root,
                index: vec!["index.html".into()],
                autoindex: false,
                dotfiles: false,
                symlinks_outside_root: false,
                precompressed: false,
                expires: None,
            },
            cache: Cache::new(),
        }
    }

    fn root(&self) -> &Path {
        &self.opts.root
    }

    fn write(&self, rel: &str, content: &[u8]) {
        let p = self.root().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: HeaderName) -> &str {
        self.headers
            .get(&name)
            .unwrap_or_else(|| panic!("no {name}"))
            .to_str()
            .unwrap()
    }
}

async fn request(site: &Site, method: Method, path: &str, headers: &[(HeaderName, &str)]) -> Reply {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.append(k.clone(), HeaderValue::from_str(v).unwrap());
    }
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let req = StaticRequest {
        method: &method,
        headers: &h,
        path,
        query,
        rel: path,
    };
    let res = serve(&site.opts, &site.cache, &req);
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn get(site: &Site, path: &str, headers: &[(HeaderName, &str)]) -> Reply {
    request(site, Method::GET, path, headers).await
}

fn decide_for(site: &Site, path: &str) -> Outcome {
    let h = HeaderMap::new();
    let req = StaticRequest {
        method: &Method::GET,
        headers: &h,
        path,
        query: None,
        rel: path,
    };
    decide(&site.opts, &site.cache, &req)
}

// ---- basics ----

#[tokio::test]
async fn serves_a_file_with_headers() {
    let site = Site::new();
    site.write("hello.txt", b"hello world");
    let r = get(&site, "/hello.txt", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello world");
    assert_eq!(r.header(CONTENT_TYPE), "text/plain; charset=utf-8");
    assert_eq!(r.header(CONTENT_LENGTH), "11");
    assert_eq!(r.header(ACCEPT_RANGES), "bytes");
    assert!(r.header(ETAG).starts_with('"'));
    assert!(r.header(LAST_MODIFIED).ends_with("GMT"));
    assert!(r.headers.get(VARY).is_none());
    assert!(r.headers.get(CACHE_CONTROL).is_none());
}

#[tokio::test]
async fn content_types() {
    let site = Site::new();
    for name in [
        "a.js",
        "a.json",
        "a.svg",
        "a.png",
        "a.unknownext",
        "noext",
        "a.html",
        "a.css",
    ] {
        site.write(name, b"x");
    }
    let ct = |r: Reply| r.header(CONTENT_TYPE).to_string();
    assert!(ct(get(&site, "/a.js", &[]).await).ends_with("javascript; charset=utf-8"));
    assert_eq!(
        ct(get(&site, "/a.json", &[]).await),
        "application/json; charset=utf-8"
    );
    assert_eq!(
        ct(get(&site, "/a.svg", &[]).await),
        "image/svg+xml; charset=utf-8"
    );
    assert_eq!(ct(get(&site, "/a.png", &[]).await), "image/png");
    assert_eq!(
        ct(get(&site, "/a.unknownext", &[]).await),
        "application/octet-stream"
    );
    assert_eq!(
        ct(get(&site, "/noext", &[]).await),
        "application/octet-stream"
    );
    assert_eq!(
        ct(get(&site, "/a.html", &[]).await),
        "text/html; charset=utf-8"
    );
    assert_eq!(
        ct(get(&site, "/a.css", &[]).await),
        "text/css; charset=utf-8"
    );
}

#[tokio::test]
async fn head_has_headers_but_no_body() {
    let site = Site::new();
    site.write("f.txt", b"0123456789");
    let r = request(&site, Method::HEAD, "/f.txt", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header(CONTENT_LENGTH), "10");
    assert!(r.body.is_empty());
    // Range is for GET only.
    let r = request(&site, Method::HEAD, "/f.txt", &[(RANGE, "bytes=0-1")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header(CONTENT_LENGTH), "10");
    let r = request(&site, Method::HEAD, "/missing", &[]).await;
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn other_methods_get_405_with_allow() {
    let site = Site::new();
    site.write("f.txt", b"x");
    for m in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let r = request(&site, m.clone(), "/f.txt", &[]).await;
        assert_eq!(r.status, 405);
        assert_eq!(r.header(ALLOW), "GET, HEAD");
        let r = request(&site, m.clone(), "/", &[]).await;
        assert_eq!(r.status, 405);
        // No file: a 404 that try-files passes on to the app.
        let r = request(&site, m, "/api/login", &[]).await;
        assert_eq!(r.status, 404);
    }
}

#[tokio::test]
async fn names_with_spaces_and_unicode() {
    let site = Site::new();
    site.write("my file.txt", b"space");
    site.write("café/naïve.txt", b"utf8");
    assert_eq!(get(&site, "/my%20file.txt", &[]).await.body, b"space");
    assert_eq!(
        get(&site, "/caf%C3%A9/na%C3%AFve.txt", &[]).await.body,
        b"utf8"
    );
    // Double encoding is decoded once: `%2525` names a file called `%25`.
    site.write("%2e%2e", b"literal");
    assert_eq!(get(&site, "/%252e%252e", &[]).await.body, b"literal");
}

#[tokio::test]
async fn expires_sets_cache_headers() {
    let mut site = Site::new();
    site.opts.expires = Some(Duration::from_secs(3600));
    site.write("f.txt", b"x");
    let r = get(&site, "/f.txt", &[]).await;
    assert_eq!(r.header(CACHE_CONTROL), "max-age=3600");
    assert!(r.header(EXPIRES).ends_with("GMT"));
}

/// Odd paths with odd validators and ranges: each gets the answer its path
/// alone decides (the headers never turn it into a panic or a 5xx).
#[tokio::test]
async fn never_panics_on_odd_input() {
    let mut site = Site::new();
    site.opts.autoindex = true;
    site.opts.precompressed = true;
    site.write("f", b"x");
    // (path, status, Location of a redirect)
    let cases: &[(&str, u16, Option<&str>)] = &[
        ("", 301, Some("/")),
        // The root's listing: a listing has no range and no validators to
        // match.
        ("/", 200, None),
        ("//", 200, None),
        // A `%` that starts no escape is the name `%`, which is not there.
        ("/%", 404, None),
        ("/%zz", 404, None),
        ("/%ff%fe", 404, None),
        ("/..", 400, None),
        ("/./..", 400, None),
        // Dot-segments name a directory: the slash is added to the URL as
        // written.
        ("/.", 301, Some("/./")),
        ("/a/b/c/../../..", 301, Some("/a/b/c/../../../")),
        ("/f/..", 301, Some("/f/../")),
        // An encoded `/` is never a separator, and no name holds one.
        ("/%2f", 404, None),
        ("/%5c", 400, None),
        ("/%00", 400, None),
    ];
    let odd_headers: [&[(HeaderName, &str)]; 2] = [
        &[(RANGE, "bytes=-0"), (ACCEPT_ENCODING, ";;;,q=,*;q=9")],
        &[(IF_RANGE, "W/"), (IF_MATCH, "\""), (IF_NONE_MATCH, "W/\"")],
    ];
    for &(path, status, location) in cases {
        for headers in odd_headers {
            let r = get(&site, path, headers).await;
            assert_eq!(r.status.as_u16(), status, "{path:?} with {headers:?}");
            let got = r.headers.get(LOCATION).map(|v| v.to_str().unwrap());
            assert_eq!(got, location, "{path:?} with {headers:?}");
        }
    }
}

/// Through a real hyper connection: HEAD keeps the GET's Content-Length,
/// and a multi-chunk file arrives whole.
#[tokio::test]
async fn through_hyper() {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let site = Site::new();
    let content: Vec<u8> = (0..(file_body::CHUNK_SIZE * 3 + 7))
        .map(|i| (i % 253) as u8)
        .collect();
    site.write("big.bin", &content);
    let opts = site.opts.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Body is not Send (nor need it be: the server is current-thread), so
    // server and client run as two futures of one task.
    let server = async move {
        for _ in 0..2 {
            let (stream, _) = listener.accept().await.unwrap();
            let opts = opts.clone();
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let opts = opts.clone();
                async move {
                    let path = req.uri().path().to_string();
                    let sreq = StaticRequest {
                        method: req.method(),
                        headers: req.headers(),
                        path: &path,
                        query: req.uri().query(),
                        rel: &path,
                    };
                    Ok::<_, std::convert::Infallible>(serve(&opts, &Cache::new(), &sreq))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    };
    let raw = |req: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        out
    };
    let client = async {
        let head = raw("HEAD /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let get = raw("GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        (head, get)
    };
    let ((), (head, got)) = tokio::join!(server, client);
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}\r\n", content.len())),
        "{head}"
    );
    assert!(head.ends_with("\r\n\r\n"), "{head}");
    let split = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&got[split..], &content[..]);
}
