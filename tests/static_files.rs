//! The static-file handler through the real server: methods, types,
//! validators and conditional requests, ranges, precompressed siblings,
//! directories, caching headers, path safety, dotfiles, symlinks and names.

use crate::util::fixture::{HELLO, OUTSIDE_SECRET};
use crate::util::raw::get_request;
use crate::util::{get, raw, request, Resp, Server, TestDir};

const DIGITS_LEN: usize = 100;

fn digits() -> String {
    "0123456789".repeat(10)
}

fn ok(s: &Server, path: &str, headers: &[(&str, &str)]) -> Resp {
    let r = get(s.addr, path, headers);
    assert_eq!(r.status, 200, "GET {path} {headers:?}\n{}", s.logs());
    r
}

/// The standard site plus a config file with the given extra route keys.
fn serve_with_route(t: &TestDir, route_keys: &str) -> Server {
    t.site();
    t.write(
        "p.toml",
        format!("[[route]]\npath = \"/\"\nstatic = \"site\"\n{route_keys}\n"),
    );
    t.serve(&["-c", "p.toml", "-b", "127.0.0.1:0"])
}

#[test]
fn get_and_head_serve_a_file() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let r = ok(&s, "/hello.txt", &[]);
    assert_eq!(r.text(), HELLO);
    assert_eq!(r.header("content-length"), Some("13"));
    let h = request(s.addr, "HEAD", "/hello.txt", &[], vec![]);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("13"));
    assert!(h.body.is_empty());
    assert_eq!(h.header("etag"), r.header("etag"));
}

#[test]
fn other_methods_get_405_with_allow() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = request(s.addr, method, "/hello.txt", &[], vec![]);
        assert_eq!(r.status, 405, "{method}");
        let allow = r
            .header("allow")
            .unwrap_or_else(|| panic!("405 without Allow for {method}"));
        let allowed: Vec<String> = allow.split(',').map(|m| m.trim().to_string()).collect();
        assert!(allowed.contains(&"GET".to_string()), "{allow}");
        assert!(allowed.contains(&"HEAD".to_string()), "{allow}");
    }
}

#[test]
fn content_type_with_charset_for_text() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let ct = |p: &str| {
        ok(&s, p, &[])
            .header("content-type")
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(ct("/hello.txt").to_lowercase(), "text/plain; charset=utf-8");
    assert_eq!(ct("/index.html").to_lowercase(), "text/html; charset=utf-8");
    assert!(
        ct("/style.css").starts_with("text/css"),
        "{}",
        ct("/style.css")
    );
    assert!(ct("/data.json").starts_with("application/json"));
    assert!(ct("/app.js").contains("javascript"), "{}", ct("/app.js"));
    assert!(ct("/%ED%95%9C%EA%B8%80.txt").starts_with("text/plain"));
}

#[test]
fn etag_and_last_modified_are_sent() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let r = ok(&s, "/hello.txt", &[]);
    let etag = r.header("etag").expect("ETag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong quoted ETag: {etag}"
    );
    let lm = r.header("last-modified").expect("Last-Modified");
    httpdate::parse_http_date(lm).expect("Last-Modified is an HTTP date");
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    // Stable across requests, different per file.
    assert_eq!(ok(&s, "/hello.txt", &[]).header("etag"), Some(etag));
    assert_ne!(ok(&s, "/style.css", &[]).header("etag"), Some(etag));
}

#[test]
fn if_none_match_gives_304() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let etag = ok(&s, "/hello.txt", &[])
        .header("etag")
        .unwrap()
        .to_string();
    for inm in [
        etag.clone(),
        format!("\"nope\", {etag}"),
        "*".into(),
        format!("W/{etag}"),
    ] {
        let r = get(s.addr, "/hello.txt", &[("if-none-match", &inm)]);
        assert_eq!(r.status, 304, "If-None-Match: {inm}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
    }
    let r = get(s.addr, "/hello.txt", &[("if-none-match", "\"other\"")]);
    assert_eq!(r.status, 200);
    // HEAD too.
    let r = request(
        s.addr,
        "HEAD",
        "/hello.txt",
        &[("if-none-match", &etag)],
        vec![],
    );
    assert_eq!(r.status, 304);
}

#[test]
fn if_modified_since_gives_304() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let lm = ok(&s, "/hello.txt", &[])
        .header("last-modified")
        .unwrap()
        .to_string();
    assert_eq!(
        get(s.addr, "/hello.txt", &[("if-modified-since", &lm)]).status,
        304
    );
    let old = "Sat, 01 Jan 2000 00:00:00 GMT";
    assert_eq!(
        get(s.addr, "/hello.txt", &[("if-modified-since", old)]).status,
        200
    );
    // If-None-Match takes precedence over If-Modified-Since (RFC 9110 13.2.2).
    let r = get(
        s.addr,
        "/hello.txt",
        &[("if-none-match", "\"other\""), ("if-modified-since", &lm)],
    );
    assert_eq!(r.status, 200);
}

#[test]
fn if_match_and_if_unmodified_since_give_412() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let r = ok(&s, "/hello.txt", &[]);
    let etag = r.header("etag").unwrap().to_string();
    let lm = r.header("last-modified").unwrap().to_string();
    assert_eq!(
        get(s.addr, "/hello.txt", &[("if-match", "\"other\"")]).status,
        412
    );
    assert_eq!(
        get(s.addr, "/hello.txt", &[("if-match", &etag)]).status,
        200
    );
    assert_eq!(get(s.addr, "/hello.txt", &[("if-match", "*")]).status, 200);
    let old = "Sat, 01 Jan 2000 00:00:00 GMT";
    assert_eq!(
        get(s.addr, "/hello.txt", &[("if-unmodified-since", old)]).status,
        412
    );
    assert_eq!(
        get(s.addr, "/hello.txt", &[("if-unmodified-since", &lm)]).status,
        200
    );
}

#[test]
fn single_range_is_206() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let all = digits();
    for (range, start, end) in [
        ("bytes=0-4", 0, 4),
        ("bytes=-5", 95, 99),
        ("bytes=97-", 97, 99),
        ("bytes=10-1000", 10, 99),
    ] {
        let r = get(s.addr, "/digits.txt", &[("range", range)]);
        assert_eq!(r.status, 206, "{range}\n{}", s.logs());
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {start}-{end}/{DIGITS_LEN}").as_str()),
            "{range}"
        );
        assert_eq!(r.text(), &all[start..=end], "{range}");
        assert_eq!(
            r.header("content-length"),
            Some((end - start + 1).to_string().as_str())
        );
    }
}

#[test]
fn multiple_ranges_are_multipart_byteranges() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let r = get(s.addr, "/digits.txt", &[("range", "bytes=0-1,20-24")]);
    assert_eq!(r.status, 206, "{}", s.logs());
    let ct = r.header("content-type").unwrap();
    assert!(ct.starts_with("multipart/byteranges"), "{ct}");
    let boundary = ct
        .split("boundary=")
        .nth(1)
        .expect("boundary")
        .trim_matches('"');
    let body = r.text();
    let parts: Vec<&str> = body
        .split(&format!("--{boundary}"))
        .filter(|p| p.contains("Content-Range") || p.contains("content-range"))
        .collect();
    assert_eq!(parts.len(), 2, "{body}");
    let part = |p: &str| {
        let (head, data) = p.split_once("\r\n\r\n").expect("part head");
        (
            head.to_lowercase(),
            data.strip_suffix("\r\n").unwrap_or(data).to_string(),
        )
    };
    let (h0, d0) = part(parts[0]);
    let (h1, d1) = part(parts[1]);
    assert!(h0.contains("content-range: bytes 0-1/100"), "{h0}");
    assert!(h0.contains("content-type: text/plain"), "{h0}");
    assert_eq!(d0, "01");
    assert!(h1.contains("content-range: bytes 20-24/100"), "{h1}");
    assert_eq!(d1, "01234");
    assert!(
        body.trim_end().ends_with(&format!("--{boundary}--")),
        "{body}"
    );
    if let Some(len) = r.header("content-length") {
        assert_eq!(len, r.body.len().to_string());
    }
}

#[test]
fn unsatisfiable_range_is_416_with_star_content_range() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    for range in ["bytes=200-300", "bytes=100-"] {
        let r = get(s.addr, "/digits.txt", &[("range", range)]);
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.header("content-range"), Some("bytes */100"), "{range}");
    }
    // A Range that is not bytes, or malformed, is ignored: 200.
    assert_eq!(
        get(s.addr, "/digits.txt", &[("range", "lines=1-2")]).status,
        200
    );
    assert_eq!(
        get(s.addr, "/digits.txt", &[("range", "bytes=5-2")]).status,
        200
    );
}

#[test]
fn if_range_with_matching_etag_gives_206_else_200() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let etag = ok(&s, "/digits.txt", &[])
        .header("etag")
        .unwrap()
        .to_string();
    let r = get(
        s.addr,
        "/digits.txt",
        &[("range", "bytes=0-4"), ("if-range", &etag)],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.text(), "01234");
    let r = get(
        s.addr,
        "/digits.txt",
        &[("range", "bytes=0-4"), ("if-range", "\"stale\"")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), digits());
    let old = "Sat, 01 Jan 2000 00:00:00 GMT";
    let r = get(
        s.addr,
        "/digits.txt",
        &[("range", "bytes=0-4"), ("if-range", old)],
    );
    assert_eq!(r.status, 200);
}

#[test]
fn precompressed_sibling_chosen_by_accept_encoding() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let pick = |ae: &str| {
        let r = ok(&s, "/app.js", &[("accept-encoding", ae)]);
        let vary = r.header("vary").unwrap_or("").to_lowercase();
        assert!(vary.contains("accept-encoding"), "Vary for `{ae}`: {vary}");
        assert!(
            r.header("content-type")
                .unwrap_or("")
                .contains("javascript"),
            "the type is the original's for `{ae}`"
        );
        (r.header("content-encoding").map(str::to_string), r.text())
    };
    assert_eq!(pick("gzip"), (Some("gzip".into()), "GZIP-VARIANT".into()));
    assert_eq!(pick("br"), (Some("br".into()), "BROTLI-VARIANT".into()));
    assert_eq!(pick("zstd"), (Some("zstd".into()), "ZSTD-VARIANT".into()));
    assert_eq!(
        pick("gzip;q=0.5, br;q=0.9"),
        (Some("br".into()), "BROTLI-VARIANT".into())
    );
    assert_eq!(
        pick("br;q=0, gzip"),
        (Some("gzip".into()), "GZIP-VARIANT".into())
    );
    assert_eq!(
        pick("gzip;q=0.1, zstd;q=0.8, br;q=0.3"),
        (Some("zstd".into()), "ZSTD-VARIANT".into())
    );
    assert_eq!(pick("identity").0, None);
    assert_eq!(pick("deflate").0, None);
    assert_eq!(pick("gzip;q=0, br;q=0, zstd;q=0").0, None);
    let (enc, body) = pick("gzip, br, zstd");
    assert!(enc.is_some(), "some variant for gzip, br, zstd");
    assert_ne!(body, "console.log('identity');\n");
    // No Accept-Encoding: the file itself, still with Vary.
    let r = ok(&s, "/app.js", &[]);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.text(), "console.log('identity');\n");
    assert!(r
        .header("vary")
        .unwrap_or("")
        .to_lowercase()
        .contains("accept-encoding"));
    // Each variant has its own ETag.
    let gz = ok(&s, "/app.js", &[("accept-encoding", "gzip")]);
    assert_ne!(gz.header("etag"), r.header("etag"));
}

#[test]
fn precompressed_off_serves_the_file_itself() {
    let t = TestDir::new();
    let s = serve_with_route(&t, "precompressed = false");
    let r = ok(&s, "/app.js", &[("accept-encoding", "gzip, br, zstd")]);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.text(), "console.log('identity');\n");
}

#[test]
fn directory_index_and_301_without_slash() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    assert_eq!(ok(&s, "/docs/", &[]).text(), "<h1>docs</h1>\n");
    assert_eq!(
        ok(&s, "/", &[]).text(),
        "<!doctype html><title>home</title>\n"
    );
    let r = get(s.addr, "/docs", &[]);
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/docs/"));
    let r = get(s.addr, "/docs?x=1", &[]);
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/docs/?x=1"));
    let r = get(s.addr, "/sub/deep", &[]);
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/sub/deep/"));
}

#[test]
fn redirect_keeps_the_route_prefix() {
    let t = TestDir::new();
    t.site();
    let s = t.serve(&["--static", "/files=site"]);
    let r = get(s.addr, "/files/docs", &[]);
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/files/docs/"));
    assert_eq!(get(s.addr, "/files/docs/", &[]).text(), "<h1>docs</h1>\n");
}

#[test]
fn directory_without_index_is_404_when_autoindex_is_off() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    assert_eq!(get(s.addr, "/noindex/", &[]).status, 404);
    assert_eq!(ok(&s, "/noindex/x.txt", &[]).text(), "x\n");
}

#[test]
fn autoindex_lists_the_directory() {
    let t = TestDir::new();
    let s = serve_with_route(&t, "autoindex = true");
    let r = ok(&s, "/noindex/", &[]);
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));
    let html = r.text();
    assert!(html.contains("x.txt") && html.contains("y.txt"), "{html}");
    let root = ok(&s, "/sub/", &[]).text();
    assert!(root.contains("deep"), "{root}");
    // Hidden names stay hidden in listings; names are escaped.
    t.write("site/noindex/<b>.txt", "tag\n");
    let html = ok(&s, "/noindex/", &[]).text();
    assert!(
        !html.contains("<b>.txt"),
        "unescaped name in listing: {html}"
    );
}

#[test]
fn autoindex_hides_dotfiles() {
    let t = TestDir::new();
    let s = serve_with_route(&t, "autoindex = true\nindex = [\"nothing.html\"]");
    let html = ok(&s, "/", &[]).text();
    assert!(html.contains("hello.txt"), "{html}");
    assert!(
        !html.contains(".secret") && !html.contains(".git"),
        "{html}"
    );
}

#[test]
fn cache_control_from_expires() {
    let t = TestDir::new();
    let s = serve_with_route(&t, "expires = \"1h\"");
    let r = ok(&s, "/hello.txt", &[]);
    let cc = r
        .header("cache-control")
        .expect("Cache-Control with expires");
    assert!(cc.contains("max-age=3600"), "{cc}");
    if let Some(exp) = r.header("expires") {
        httpdate::parse_http_date(exp).expect("Expires is an HTTP date");
    }
    let t2 = TestDir::new();
    let s2 = t2.serve_site(&[]);
    let cc = ok(&s2, "/hello.txt", &[])
        .header("cache-control")
        .map(str::to_string);
    assert!(!cc.unwrap_or_default().contains("max-age=3600"));
}

/// Traversal attempts, sent raw so no client normalises them.
const TRAVERSALS: &[&str] = &[
    "/../outside/secret.txt",
    "/../../../../../../etc/passwd",
    "/docs/../../outside/secret.txt",
    "/%2e%2e/outside/secret.txt",
    "/%2E%2E/outside/secret.txt",
    "/docs/%2e%2e/%2e%2e/outside/secret.txt",
    "/.%2e/outside/secret.txt",
    "/..%2foutside%2fsecret.txt",
    "/docs/..%2F..%2Foutside%2Fsecret.txt",
    "/%2e%2e%2foutside%2fsecret.txt",
    "/..%5coutside%5csecret.txt",
    "/%5c..%5c..%5coutside%5csecret.txt",
    "/..\\outside\\secret.txt",
    "/%252e%252e/outside/secret.txt",
    "/hello.txt%00.png",
    "/%00",
    "/docs/%00/../../outside/secret.txt",
    "//outside/secret.txt",
    "/%c0%ae%c0%ae/outside/secret.txt",
];

#[test]
fn path_traversal_never_leaves_the_root() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    for target in TRAVERSALS {
        let ex = raw(s.addr, &get_request(target, &[]));
        let leaked = String::from_utf8_lossy(&ex.bytes).contains(OUTSIDE_SECRET.trim())
            || String::from_utf8_lossy(&ex.bytes).contains("root:x:0:0");
        assert!(!leaked, "{target} leaked a file outside the root");
        match ex.responses.first() {
            Some(r) => assert!(
                r.status == 400 || r.status == 404,
                "{target}: expected 400 or 404, got {}\n{}",
                r.status,
                s.logs()
            ),
            None => assert!(ex.closed, "{target}: no answer"),
        }
    }
    // Inside the root, `..` that stays inside is harmless either way.
    let ex = raw(s.addr, &get_request("/docs/../hello.txt", &[]));
    let r = ex.first();
    assert!(
        r.status == 200 && r.text() == HELLO || r.status == 400,
        "{}",
        r.status
    );
}

#[test]
fn dotfiles_are_404_unless_enabled() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    for p in [
        "/.secret",
        "/.git/config",
        "/.git/",
        "/%2esecret",
        "/docs/../.secret",
    ] {
        let r = get(s.addr, p, &[]);
        assert!(
            r.status == 404 || (r.status == 400 && p.contains("..")),
            "{p}: {}",
            r.status
        );
        assert!(!r.text().contains("dotfile"), "{p}");
    }
    let t2 = TestDir::new();
    let s2 = serve_with_route(&t2, "dotfiles = true");
    assert_eq!(ok(&s2, "/.secret", &[]).text(), "dotfile\n");
    assert_eq!(ok(&s2, "/.git/config", &[]).text(), "[core]\n");
}

#[test]
fn symlink_inside_the_root_is_served() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    assert_eq!(ok(&s, "/link.txt", &[]).text(), HELLO);
}

#[test]
fn symlink_outside_the_root_is_403() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    for p in ["/escape.txt", "/outdir/secret.txt"] {
        let r = get(s.addr, p, &[]);
        assert_eq!(r.status, 403, "{p}\n{}", s.logs());
        assert!(!r.text().contains("TOP SECRET"));
    }
    let t2 = TestDir::new();
    let s2 = serve_with_route(&t2, "symlinks_outside_root = true");
    assert_eq!(ok(&s2, "/escape.txt", &[]).text(), OUTSIDE_SECRET);
}

#[test]
fn names_with_spaces_and_unicode() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    assert_eq!(ok(&s, "/a%20b.txt", &[]).text(), "a file with a space\n");
    assert_eq!(
        ok(&s, "/%ED%95%9C%EA%B8%80.txt", &[]).text(),
        "유니코드 이름\n"
    );
    // Lowercase hex escapes decode the same.
    assert_eq!(
        ok(&s, "/%ed%95%9c%ea%b8%80.txt", &[]).text(),
        "유니코드 이름\n"
    );
    assert_eq!(
        get(s.addr, "/a+b.txt", &[]).status,
        404,
        "`+` is not a space in a path"
    );
}

#[test]
fn fifo_is_not_served() {
    let t = TestDir::new();
    t.site();
    let fifo = t.join("site/pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let s = t.serve(&["--static", "/=site"]);
    let ex = raw(s.addr, &get_request("/pipe", &[]));
    assert_eq!(ex.first().status, 404, "a FIFO must not be opened");
    // The worker is not stuck on it.
    assert_eq!(ok(&s, "/hello.txt", &[]).text(), HELLO);
}

#[test]
fn static_over_h2c_and_range() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let r = crate::util::client::get_h2c(s.addr, "/digits.txt");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), digits());
}
