//! Path safety, symlinks, special files and directories.

use super::*;

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
    assert_eq!(serve(&opts, &Cache::new(), &req).status(), 404);
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
    let res = serve(&site.opts, &site.cache, &req);
    assert_eq!(res.status(), 301);
    assert_eq!(res.headers()[LOCATION], "/static/");
    assert_eq!(get(&site, "/", &[]).await.body, b"home");
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
