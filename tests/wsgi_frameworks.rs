//! Real frameworks from PyPI, installed into .venv by scripts/test: a Flask
//! app (form post, file upload, streaming response, session cookie) and a
//! Django project (admin login with CSRF, static files beside the app).

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::raw::{connect, read_head};
use crate::util::wsgi::{copy_fixtures, venv, venv_python};
use crate::util::{get, request, Resp, Server, TestDir};

fn serve_flask(t: &TestDir, extra: &[&str]) -> Server {
    copy_fixtures(t);
    let venv = venv();
    let mut args = vec![
        "flaskapp:app",
        "--venv",
        venv.to_str().unwrap(),
        "--threads",
        "2",
    ];
    args.extend_from_slice(extra);
    t.serve(&args)
}

/// `name=value` of each Set-Cookie, joined for a Cookie header.
fn cookies(res: &Resp) -> String {
    res.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn flask_form_post() {
    let t = TestDir::new();
    let server = serve_flask(&t, &[]);
    let res = request(
        server.addr,
        "POST",
        "/form",
        &[("content-type", "application/x-www-form-urlencoded")],
        b"name=caf%C3%A9&lang=fr".to_vec(),
    );
    assert_eq!(res.status, 200, "{}", server.logs());
    assert_eq!(res.text(), "hello café, fr");
}

/// A multipart body with a `note` field and `file` as `data.bin`; returns
/// it with its Content-Type.
fn multipart(file: &[u8]) -> (Vec<u8>, String) {
    let boundary = "----porticoBoundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi there\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"data.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (body, format!("multipart/form-data; boundary={boundary}"))
}

#[test]
fn flask_file_upload() {
    let t = TestDir::new();
    let server = serve_flask(&t, &[]);
    let file: Vec<u8> = (0..300_000u32).map(|i| (i % 256) as u8).collect();
    let (body, ctype) = multipart(&file);
    let res = request(
        server.addr,
        "POST",
        "/upload",
        &[("content-type", ctype.as_str())],
        body,
    );
    assert_eq!(res.status, 200, "{}", server.logs());
    let want_sha = {
        let out = Command::new(venv_python())
            .args(["-c", "import sys,hashlib; print(hashlib.sha256(bytes(i % 256 for i in range(300000))).hexdigest())"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(res.text(), format!("data.bin 300000 {want_sha} hi there"));
}

/// Regression: the default body limit was 1 MiB on app routes, so an
/// upload that works under gunicorn (no limit) answered 413.
#[test]
fn flask_3_mib_upload_with_default_settings() {
    let t = TestDir::new();
    let server = serve_flask(&t, &[]);
    let (body, ctype) = multipart(&vec![7u8; 3 << 20]);
    let res = request(
        server.addr,
        "POST",
        "/upload",
        &[("content-type", ctype.as_str())],
        body,
    );
    assert_eq!(res.status, 200, "{}", server.logs());
    assert!(
        res.text().starts_with(&format!("data.bin {} ", 3 << 20)),
        "{}",
        res.text()
    );
}

#[test]
fn flask_upload_over_a_configured_limit_is_413_and_the_log_names_the_key() {
    let t = TestDir::new();
    let server = serve_flask(&t, &["--max-body-size", "1m"]);
    let (body, ctype) = multipart(&vec![7u8; 3 << 20]);
    let len = body.len();
    let res = request(
        server.addr,
        "POST",
        "/upload",
        &[("content-type", ctype.as_str())],
        body,
    );
    assert_eq!(res.status, 413, "{}", server.logs());
    let line = format!(
        "413 on route / from 127.0.0.1: request body of {len} bytes is over max_body_size \
         1048576 (raise `max_body_size` on the route or --max-body-size)"
    );
    let logged = server.stderr.wait_for(Duration::from_secs(5), |lines| {
        lines.iter().any(|l| l.contains(&line))
    });
    assert!(logged, "no line `{line}`\n{}", server.logs());
}

#[test]
fn flask_streaming_response_arrives_in_parts() {
    let t = TestDir::new();
    let server = serve_flask(&t, &[]);
    // Warm up: Flask sets itself up on its first request.
    assert_eq!(get(server.addr, "/count", &[]).status, 200);
    let mut s = connect(server.addr);
    let start = Instant::now();
    s.write_all(b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (head, mut seen) = read_head(&mut s, Duration::from_secs(5));
    assert_eq!(head.status, 200);
    let first_at = start.elapsed();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1024];
    while !seen.windows(6).any(|w| w == b"part2;") {
        let k = std::io::Read::read(&mut s, &mut buf).unwrap();
        assert!(k > 0);
        seen.extend_from_slice(&buf[..k]);
    }
    let all_at = start.elapsed();
    assert!(
        first_at < Duration::from_millis(300),
        "first part after {first_at:?}"
    );
    assert!(
        all_at >= Duration::from_millis(550),
        "all parts after {all_at:?}"
    );
}

#[test]
fn flask_session_cookie_round_trips() {
    let t = TestDir::new();
    let server = serve_flask(&t, &[]);
    let res = get(server.addr, "/count", &[]);
    assert_eq!(res.text(), "1");
    let cookie = cookies(&res);
    assert!(cookie.starts_with("session="), "{cookie}");
    let res = get(server.addr, "/count", &[("cookie", cookie.as_str())]);
    assert_eq!(res.text(), "2");
    let res = get(server.addr, "/count", &[("cookie", cookies(&res).as_str())]);
    assert_eq!(res.text(), "3");
}

fn manage(project: &Path, args: &[&str]) {
    let out = Command::new(venv_python())
        .arg("manage.py")
        .args(args)
        .current_dir(project)
        .env("DJANGO_SUPERUSER_PASSWORD", "portico-pass-123")
        .output()
        .expect("run manage.py");
    assert!(
        out.status.success(),
        "manage.py {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of `name="csrfmiddlewaretoken" value="..."` in a page.
fn csrf_token(html: &str) -> String {
    let at = html
        .find("name=\"csrfmiddlewaretoken\"")
        .unwrap_or_else(|| panic!("no CSRF field in:\n{html}"));
    let rest = &html[at..];
    let v = rest.find("value=\"").unwrap() + 7;
    rest[v..v + rest[v..].find('"').unwrap()].to_string()
}

#[test]
fn django_admin_login_with_csrf_and_static_files() {
    let t = TestDir::new();
    copy_fixtures(&t);
    let project = t.join("djangoproj");
    manage(&project, &["migrate", "--noinput", "-v", "0"]);
    manage(
        &project,
        &[
            "createsuperuser",
            "--noinput",
            "--username",
            "admin",
            "--email",
            "admin@example.com",
        ],
    );
    manage(&project, &["collectstatic", "--noinput", "-v", "0"]);
    let venv = venv();
    let collected = project.join("collected");
    let static_arg = format!("/static={}", collected.display());
    let server = t.serve(&[
        "mysite.wsgi:application",
        "--chdir",
        project.to_str().unwrap(),
        "--venv",
        venv.to_str().unwrap(),
        "--static",
        &static_arg,
    ]);

    let res = get(server.addr, "/admin/login/?next=/admin/", &[]);
    assert_eq!(res.status, 200, "{}", server.logs());
    let cookie = cookies(&res);
    assert!(cookie.contains("csrftoken="), "{cookie}");
    let token = csrf_token(&res.text());
    let form = format!(
        "csrfmiddlewaretoken={token}&username=admin&password=portico-pass-123&next=%2Fadmin%2F"
    );
    let res = request(
        server.addr,
        "POST",
        "/admin/login/?next=/admin/",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("cookie", cookie.as_str()),
        ],
        form.into_bytes(),
    );
    assert_eq!(res.status, 302, "{}\n{}", res.text(), server.logs());
    assert_eq!(res.header("location"), Some("/admin/"));
    let session = cookies(&res);
    assert!(session.contains("sessionid="), "{session}");
    let res = get(server.addr, "/admin/", &[("cookie", session.as_str())]);
    assert_eq!(res.status, 200);
    assert!(res.text().contains("Site administration"), "{}", res.text());

    let want = std::fs::read(collected.join("admin/css/base.css")).unwrap();
    let res = get(server.addr, "/static/admin/css/base.css", &[]);
    assert_eq!(res.status, 200);
    assert!(res.body == want, "static file differs");
    assert!(res.header("etag").is_some(), "served by the static handler");
}
