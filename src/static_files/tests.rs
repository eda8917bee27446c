//! End-to-end tests of `decide` + `render` on temporary directories, no sockets.

use std::fs;
use std::path::Path;
use std::time::Duration;

use http::header::*;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;

use super::*;

struct Site {
    _dir: tempfile::TempDir,
    opts: StaticOptions,
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
    let res = serve(&site.opts, &req);
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
    decide(&site.opts, &req)
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

// ---- path safety ----

#[tokio::test]
async fn traversal_attempts_never_escape() {
    let site = Site::new();
    site.write("ok.txt", b"ok");
    for (path, status) in [
        ("/../etc/passwd", 400),
        ("/%2e%2e/", 400),
        ("/%2e%2e/etc/passwd", 400),
        ("/%2e%2e%2fetc%2fpasswd", 404),
        ("/..%5c..%5cetc%5cpasswd", 400),
        ("/a%00b", 400),
        ("/ok.txt%00.png", 400),
        ("/sub/../../etc/passwd", 400),
        ("/%252e%252e/etc/passwd", 404),
    ] {
        let r = get(&site, path, &[]).await;
        assert_eq!(r.status, status, "{path}");
        assert!(!r.body.starts_with(b"root:"), "{path}");
    }
    // Dot segments that stay inside the root are fine.
    assert_eq!(get(&site, "/x/../ok.txt", &[]).await.body, b"ok");
}

#[tokio::test]
async fn dotfiles_are_hidden_unless_enabled() {
    let mut site = Site::new();
    site.write(".env", b"SECRET");
    site.write(".git/config", b"cfg");
    assert_eq!(get(&site, "/.env", &[]).await.status, 404);
    assert_eq!(get(&site, "/.git/config", &[]).await.status, 404);
    assert_eq!(get(&site, "/%2eenv", &[]).await.status, 404);
    assert!(decide_for(&site, "/.env").is_not_found());
    site.opts.dotfiles = true;
    assert_eq!(get(&site, "/.env", &[]).await.body, b"SECRET");
}

#[tokio::test]
async fn symlinks_inside_served_outside_forbidden() {
    let mut site = Site::new();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret.txt"), b"secret").unwrap();
    site.write("real.txt", b"real");
    std::os::unix::fs::symlink(site.root().join("real.txt"), site.root().join("in.txt")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        site.root().join("out.txt"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), site.root().join("outdir")).unwrap();
    assert_eq!(get(&site, "/in.txt", &[]).await.body, b"real");
    let r = get(&site, "/out.txt", &[]).await;
    assert_eq!(r.status, 403);
    assert!(!r.body.starts_with(b"secret"));
    assert_eq!(get(&site, "/outdir/secret.txt", &[]).await.status, 403);
    site.opts.symlinks_outside_root = true;
    assert_eq!(get(&site, "/out.txt", &[]).await.body, b"secret");
    assert_eq!(get(&site, "/outdir/secret.txt", &[]).await.body, b"secret");
}

#[tokio::test]
async fn fifo_is_refused_without_blocking() {
    let site = Site::new();
    let fifo = site.root().join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let r = get(&site, "/pipe", &[]).await;
    assert_eq!(r.status, 404);
    let r = get(&site, "/dev-null-link", &[]).await;
    assert_eq!(r.status, 404);
    std::os::unix::fs::symlink("/dev/null", site.root().join("null")).unwrap();
    let mut opts = site.opts.clone();
    opts.symlinks_outside_root = true;
    let h = HeaderMap::new();
    let req = StaticRequest {
        method: &Method::GET,
        headers: &h,
        path: "/null",
        query: None,
        rel: "/null",
    };
    assert_eq!(serve(&opts, &req).status(), 404);
}

#[tokio::test]
async fn file_with_trailing_slash_is_not_found() {
    let site = Site::new();
    site.write("f.txt", b"x");
    assert_eq!(get(&site, "/f.txt/", &[]).await.status, 404);
    assert_eq!(get(&site, "/f.txt/x", &[]).await.status, 404);
}

#[tokio::test]
async fn unreadable_file_is_forbidden() {
    use std::os::unix::fs::PermissionsExt;
    let site = Site::new();
    site.write("locked.txt", b"x");
    let p = site.root().join("locked.txt");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
    // root ignores mode bits; only check when the open really fails.
    if fs::File::open(&p).is_err() {
        assert_eq!(get(&site, "/locked.txt", &[]).await.status, 403);
    }
}

// ---- directories ----

#[tokio::test]
async fn directory_redirects_and_index() {
    let site = Site::new();
    site.write("docs/index.html", b"<h1>docs</h1>");
    let r = get(&site, "/docs?x=1&y=2", &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header(LOCATION), "/docs/?x=1&y=2");
    let r = get(&site, "/docs/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"<h1>docs</h1>");
    assert_eq!(r.header(CONTENT_TYPE), "text/html; charset=utf-8");
    // No open redirect from a path with leading slashes.
    let r = get(&site, "//docs", &[]).await;
    assert_eq!(r.header(LOCATION), "/docs/");
    let r = get(&site, "/docs%20", &[]).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn empty_file_ignores_range() {
    let site = Site::new();
    site.write("empty", b"");
    let r = get(&site, "/empty", &[(RANGE, "bytes=0-")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header(CONTENT_LENGTH), "0");
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn directory_without_index() {
    let mut site = Site::new();
    site.write("empty/a.txt", b"a");
    let out = decide_for(&site, "/empty/");
    assert!(out.is_not_found());
    assert_eq!(get(&site, "/empty/", &[]).await.status, 404);
    site.opts.autoindex = true;
    let r = get(&site, "/empty/", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header(CONTENT_TYPE), "text/html; charset=utf-8");
    let html = String::from_utf8(r.body).unwrap();
    assert!(html.contains("href=\"a.txt\""));
    assert!(html.contains("href=\"../\""));
    let r = request(&site, Method::HEAD, "/empty/", &[]).await;
    assert!(r.body.is_empty());
    assert_eq!(r.header(CONTENT_LENGTH), html.len().to_string());
}

#[tokio::test]
async fn autoindex_escapes_names() {
    let mut site = Site::new();
    site.opts.autoindex = true;
    site.write("d/<img src=x onerror=alert(1)>.txt", b"x");
    site.write("d/.hidden", b"x");
    let html = String::from_utf8(get(&site, "/d/", &[]).await.body).unwrap();
    assert!(!html.contains("<img"));
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;.txt"));
    assert!(!html.contains(".hidden"));
}

#[tokio::test]
async fn index_symlinked_outside_is_forbidden() {
    let site = Site::new();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("i.html"), b"secret").unwrap();
    fs::create_dir(site.root().join("d")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("i.html"),
        site.root().join("d/index.html"),
    )
    .unwrap();
    assert_eq!(get(&site, "/d/", &[]).await.status, 403);
}

#[tokio::test]
async fn root_of_route() {
    let site = Site::new();
    site.write("index.html", b"home");
    // A route mounted at `/static` with rel "" redirects to `/static/`.
    let h = HeaderMap::new();
    let req = StaticRequest {
        method: &Method::GET,
        headers: &h,
        path: "/static",
        query: None,
        rel: "",
    };
    let res = serve(&site.opts, &req);
    assert_eq!(res.status(), 301);
    assert_eq!(res.headers()[LOCATION], "/static/");
    assert_eq!(get(&site, "/", &[]).await.body, b"home");
}

// ---- conditional requests ----

async fn validators(site: &Site, path: &str) -> (String, String) {
    let r = get(site, path, &[]).await;
    (
        r.header(ETAG).to_string(),
        r.header(LAST_MODIFIED).to_string(),
    )
}

#[tokio::test]
async fn conditional_requests() {
    let mut site = Site::new();
    site.opts.expires = Some(Duration::from_secs(60));
    site.opts.precompressed = true;
    site.write("f.txt", b"content");
    let (etag, lm) = validators(&site, "/f.txt").await;
    let old = "Thu, 01 Jan 1998 00:00:00 GMT";

    let r = get(&site, "/f.txt", &[(IF_NONE_MATCH, &etag)]).await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header(ETAG), etag);
    assert_eq!(r.header(LAST_MODIFIED), lm);
    assert_eq!(r.header(CACHE_CONTROL), "max-age=60");
    assert!(r.headers.contains_key(EXPIRES));
    assert_eq!(r.header(VARY), "accept-encoding");

    // If-None-Match wins over If-Modified-Since.
    let r = get(
        &site,
        "/f.txt",
        &[(IF_NONE_MATCH, "\"other\""), (IF_MODIFIED_SINCE, &lm)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        get(&site, "/f.txt", &[(IF_MODIFIED_SINCE, &lm)])
            .await
            .status,
        304
    );
    assert_eq!(
        get(&site, "/f.txt", &[(IF_MODIFIED_SINCE, old)])
            .await
            .status,
        200
    );
    let r = request(&site, Method::HEAD, "/f.txt", &[(IF_NONE_MATCH, "*")]).await;
    assert_eq!(r.status, 304);

    // If-Match / If-Unmodified-Since.
    assert_eq!(
        get(&site, "/f.txt", &[(IF_MATCH, "\"other\"")])
            .await
            .status,
        412
    );
    assert_eq!(get(&site, "/f.txt", &[(IF_MATCH, &etag)]).await.status, 200);
    assert_eq!(
        get(&site, "/f.txt", &[(IF_UNMODIFIED_SINCE, old)])
            .await
            .status,
        412
    );
    assert_eq!(
        get(&site, "/f.txt", &[(IF_UNMODIFIED_SINCE, &lm)])
            .await
            .status,
        200
    );
    // If-Match wins over If-Unmodified-Since.
    let r = get(
        &site,
        "/f.txt",
        &[(IF_MATCH, &etag), (IF_UNMODIFIED_SINCE, old)],
    )
    .await;
    assert_eq!(r.status, 200);
    // 412 is checked before 304.
    let r = get(
        &site,
        "/f.txt",
        &[(IF_MATCH, "\"other\""), (IF_NONE_MATCH, &etag)],
    )
    .await;
    assert_eq!(r.status, 412);
    let r = get(
        &site,
        "/f.txt",
        &[(IF_MATCH, &etag), (IF_NONE_MATCH, &etag)],
    )
    .await;
    assert_eq!(r.status, 304);
    // A 304 beats Range.
    let r = get(
        &site,
        "/f.txt",
        &[(IF_NONE_MATCH, &etag), (RANGE, "bytes=0-1")],
    )
    .await;
    assert_eq!(r.status, 304);
}

// ---- ranges ----

#[tokio::test]
async fn single_ranges() {
    let site = Site::new();
    site.write("f.bin", b"0123456789");
    let r = get(&site, "/f.bin", &[(RANGE, "bytes=2-4")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"234");
    assert_eq!(r.header(CONTENT_RANGE), "bytes 2-4/10");
    assert_eq!(r.header(CONTENT_LENGTH), "3");
    let r = get(&site, "/f.bin", &[(RANGE, "bytes=-5")]).await;
    assert_eq!((r.status.as_u16(), r.body.as_slice()), (206, &b"56789"[..]));
    assert_eq!(r.header(CONTENT_RANGE), "bytes 5-9/10");
    let r = get(&site, "/f.bin", &[(RANGE, "bytes=5-")]).await;
    assert_eq!((r.status.as_u16(), r.body.as_slice()), (206, &b"56789"[..]));
    // Malformed → ignored.
    let r = get(&site, "/f.bin", &[(RANGE, "bytes=x-y")]).await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 10));
    // Unsatisfiable.
    let r = get(&site, "/f.bin", &[(RANGE, "bytes=10-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header(CONTENT_RANGE), "bytes */10");
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn multiple_ranges_are_multipart() {
    let site = Site::new();
    site.write("f.txt", b"0123456789");
    let r = get(&site, "/f.txt", &[(RANGE, "bytes=0-1, 7-")]).await;
    assert_eq!(r.status, 206);
    let ct = r.header(CONTENT_TYPE);
    let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
    let expected = format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 0-1/10\r\n\r\n01\
         \r\n--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes 7-9/10\r\n\r\n789\
         \r\n--{boundary}--\r\n"
    );
    assert_eq!(String::from_utf8(r.body.clone()).unwrap(), expected);
    assert_eq!(r.header(CONTENT_LENGTH), expected.len().to_string());
    assert!(r.headers.get(CONTENT_RANGE).is_none());
    // Overlapping ranges coalesce into one part.
    let r = get(&site, "/f.txt", &[(RANGE, "bytes=0-3, 2-5")]).await;
    assert_eq!(r.header(CONTENT_RANGE), "bytes 0-5/10");
    assert_eq!(r.body, b"012345");
}

#[tokio::test]
async fn if_range() {
    let site = Site::new();
    site.write("f.txt", b"0123456789");
    let (etag, lm) = validators(&site, "/f.txt").await;
    let r = get(&site, "/f.txt", &[(RANGE, "bytes=0-1"), (IF_RANGE, &etag)]).await;
    assert_eq!((r.status.as_u16(), r.body.as_slice()), (206, &b"01"[..]));
    let r = get(&site, "/f.txt", &[(RANGE, "bytes=0-1"), (IF_RANGE, &lm)]).await;
    assert_eq!(r.status, 206);
    let r = get(
        &site,
        "/f.txt",
        &[(RANGE, "bytes=0-1"), (IF_RANGE, "\"stale\"")],
    )
    .await;
    assert_eq!((r.status.as_u16(), r.body.len()), (200, 10));
    let weak = format!("W/{etag}");
    let r = get(&site, "/f.txt", &[(RANGE, "bytes=0-1"), (IF_RANGE, &weak)]).await;
    assert_eq!(r.status, 200);
    let r = get(
        &site,
        "/f.txt",
        &[
            (RANGE, "bytes=0-1"),
            (IF_RANGE, "Thu, 01 Jan 1998 00:00:00 GMT"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn large_file_offsets_are_u64() {
    // A sparse 3 GiB file: nothing is written, offsets past 2^31 and 2^32 work.
    let site = Site::new();
    let p = site.root().join("big.bin");
    let f = fs::File::create(&p).unwrap();
    let len: u64 = 3 << 30;
    f.set_len(len).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, b"end", len - 3).unwrap();
    let r = request(&site, Method::HEAD, "/big.bin", &[]).await;
    assert_eq!(r.header(CONTENT_LENGTH), len.to_string());
    let r = get(&site, "/big.bin", &[(RANGE, "bytes=-3")]).await;
    assert_eq!(r.body, b"end");
    assert_eq!(
        r.header(CONTENT_RANGE),
        format!("bytes {}-{}/{len}", len - 3, len - 1)
    );
    let r = get(&site, "/big.bin", &[(RANGE, "bytes=2147483648-2147483650")]).await;
    assert_eq!(r.body, [0, 0, 0]);
}

// ---- precompressed ----

#[tokio::test]
async fn precompressed_variants() {
    let mut site = Site::new();
    site.opts.precompressed = true;
    site.write("app.js", b"plain-js");
    site.write("app.js.gz", b"gz-bytes");
    site.write("app.js.br", b"br-bytes!");
    let plain = get(&site, "/app.js", &[]).await;
    assert_eq!(plain.body, b"plain-js");
    assert!(plain.headers.get(CONTENT_ENCODING).is_none());
    assert_eq!(plain.header(VARY), "accept-encoding");

    let r = get(&site, "/app.js", &[(ACCEPT_ENCODING, "gzip, deflate, br")]).await;
    assert_eq!(r.body, b"br-bytes!");
    assert_eq!(r.header(CONTENT_ENCODING), "br");
    assert!(r.header(CONTENT_TYPE).contains("javascript"));
    assert_eq!(r.header(VARY), "accept-encoding");
    assert_ne!(r.header(ETAG), plain.header(ETAG));

    let r = get(&site, "/app.js", &[(ACCEPT_ENCODING, "br;q=0.5, gzip")]).await;
    assert_eq!(r.header(CONTENT_ENCODING), "gzip");
    assert_eq!(r.body, b"gz-bytes");
    // zstd preferred but missing: falls to the next acceptable.
    let r = get(&site, "/app.js", &[(ACCEPT_ENCODING, "zstd, gzip;q=0.9")]).await;
    assert_eq!(r.header(CONTENT_ENCODING), "gzip");
    let r = get(&site, "/app.js", &[(ACCEPT_ENCODING, "zstd")]).await;
    assert_eq!(r.body, b"plain-js");

    // Ranges apply to the chosen variant.
    let r = get(
        &site,
        "/app.js",
        &[(ACCEPT_ENCODING, "gzip"), (RANGE, "bytes=0-1")],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"gz");
    assert_eq!(r.header(CONTENT_RANGE), "bytes 0-1/8");
    // Several ranges of a compressed variant: the whole variant.
    let r = get(
        &site,
        "/app.js",
        &[(ACCEPT_ENCODING, "gzip"), (RANGE, "bytes=0-1,4-5")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"gz-bytes");

    // 304 for the variant's own ETag only.
    let gz_etag = get(&site, "/app.js", &[(ACCEPT_ENCODING, "gzip")])
        .await
        .header(ETAG)
        .to_string();
    let r = get(
        &site,
        "/app.js",
        &[(ACCEPT_ENCODING, "gzip"), (IF_NONE_MATCH, &gz_etag)],
    )
    .await;
    assert_eq!(r.status, 304);
    assert_eq!(r.header(VARY), "accept-encoding");
    let r = get(&site, "/app.js", &[(IF_NONE_MATCH, &gz_etag)]).await;
    assert_eq!(r.status, 200);

    // Off: siblings ignored.
    site.opts.precompressed = false;
    let r = get(&site, "/app.js", &[(ACCEPT_ENCODING, "br")]).await;
    assert_eq!(r.body, b"plain-js");
    assert!(r.headers.get(VARY).is_none());
}

#[tokio::test]
async fn precompressed_sibling_outside_root_is_skipped() {
    let mut site = Site::new();
    site.opts.precompressed = true;
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("x.gz"), b"outside").unwrap();
    site.write("a.css", b"inside");
    std::os::unix::fs::symlink(outside.path().join("x.gz"), site.root().join("a.css.gz")).unwrap();
    let r = get(&site, "/a.css", &[(ACCEPT_ENCODING, "gzip")]).await;
    assert_eq!(r.body, b"inside");
    assert!(r.headers.get(CONTENT_ENCODING).is_none());
}

#[tokio::test]
async fn precompressed_index() {
    let mut site = Site::new();
    site.opts.precompressed = true;
    site.write("d/index.html", b"plain");
    site.write("d/index.html.gz", b"gzipped");
    let r = get(&site, "/d/", &[(ACCEPT_ENCODING, "gzip")]).await;
    assert_eq!(r.body, b"gzipped");
    assert_eq!(r.header(CONTENT_TYPE), "text/html; charset=utf-8");
}

#[tokio::test]
async fn never_panics_on_odd_input() {
    let mut site = Site::new();
    site.opts.autoindex = true;
    site.opts.precompressed = true;
    site.write("f", b"x");
    for path in [
        "",
        "/",
        "//",
        "/%",
        "/%zz",
        "/%ff%fe",
        "/..",
        "/.",
        "/./..",
        "/a/b/c/../../..",
        "/f/..",
        "/%2f",
        "/%5c",
        "/%00",
    ] {
        let _ = get(
            &site,
            path,
            &[(RANGE, "bytes=-0"), (ACCEPT_ENCODING, ";;;,q=,*;q=9")],
        )
        .await;
        let _ = get(
            &site,
            path,
            &[(IF_RANGE, "W/"), (IF_MATCH, "\""), (IF_NONE_MATCH, "W/\"")],
        )
        .await;
    }
}

#[test]
fn redirect_location_is_never_scheme_relative() {
    let h = HeaderMap::new();
    let loc = |path: &'static str, query: Option<&'static str>| {
        let req = StaticRequest {
            method: &Method::GET,
            headers: &h,
            path,
            query,
            rel: "",
        };
        redirect_location(&req)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(loc("/a/b", None), "/a/b/");
    assert_eq!(loc("//evil.example", None), "/evil.example/");
    assert_eq!(loc("/\\evil.example", Some("q=1")), "/evil.example/?q=1");
    assert_eq!(loc("", None), "/");
}
