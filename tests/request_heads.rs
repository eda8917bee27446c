//! Request heads the HTTP parser lets through and RFC 9112 refuses or
//! reads differently: Host values that are not `host[:port]` (400), an
//! absolute-form target whose authority replaces Host for every route
//! kind, and transfer codings other than a single `chunked` (501, 400),
//! refused before any handler with the connection closed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::util::raw::{connect, read_responses, Exchange};
use crate::util::wsgi::{copy_fixtures, json};
use crate::util::{raw, Server, TestDir};

fn cgi_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cgi-bin")
}

/// A raw upstream that records each request head and answers 200 `up`.
fn recording_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match conn.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            seen2
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nup");
        }
    });
    (addr, seen)
}

/// Every route kind under host `a.example` (static `/who`, WSGI `/app`,
/// CGI `/cgi-bin`, proxy `/proxy`), and a default static route that says
/// `default` for any other host.
fn serve_every_kind(t: &TestDir, upstream: SocketAddr) -> Server {
    copy_fixtures(t);
    t.write("a/who.txt", "a.example");
    t.write("other/who.txt", "default");
    t.write(
        "p.toml",
        format!(
            r#"
[[listen]]
address = "127.0.0.1:0"
[[route]]
path = "/"
static = "other"
[[route]]
host = "a.example"
path = "/who"
static = "a"
[[route]]
host = "a.example"
path = "/app"
wsgi = "echo:application"
[[route]]
host = "a.example"
path = "/cgi-bin"
cgi = "{}"
[[route]]
host = "a.example"
path = "/proxy"
proxy = "http://{upstream}"
"#,
            cgi_fixtures().display()
        ),
    );
    t.serve(&["-c", "p.toml"])
}

fn head(target: &str, host: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

#[test]
fn host_values_that_are_not_host_and_port_are_400() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    for bad in [
        "user@localhost",
        "local host",
        "a/b",
        "localhost:abc",
        "localhost:99999",
        "[::1",
        "[::1]x",
        ":8080",
        "a?b",
    ] {
        let ex = raw(s.addr, &head("/hello.txt", bad));
        assert_eq!(ex.first().status, 400, "Host: {bad}\n{}", s.logs());
    }
    for good in [
        "localhost",
        "[::1]:8080",
        "[::1]",
        "www.example.com.",
        "WWW.EXAMPLE.COM",
        "127.0.0.1:8000",
        "a_b.example",
    ] {
        let ex = raw(s.addr, &head("/hello.txt", good));
        assert_eq!(ex.first().status, 200, "Host: {good}\n{}", s.logs());
    }
    // userinfo in an absolute-form target is refused too.
    let ex = raw(
        s.addr,
        b"GET http://user@localhost/hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n",
    );
    assert_eq!(ex.first().status, 400);
}

#[test]
fn host_routes_match_a_trailing_dot_and_any_case() {
    let t = TestDir::new();
    let (upstream, _) = recording_upstream();
    let s = serve_every_kind(&t, upstream);
    for host in ["a.example", "A.Example.", "a.example.:80"] {
        let ex = raw(s.addr, &head("/who/who.txt", host));
        assert_eq!(ex.first().text(), "a.example", "Host: {host}");
    }
}

#[test]
fn the_absolute_form_authority_replaces_host_for_every_route_kind() {
    let t = TestDir::new();
    let (upstream, seen) = recording_upstream();
    let s = serve_every_kind(&t, upstream);
    // Routing.
    let ex = raw(s.addr, &head("http://a.example/who/who.txt", "localhost"));
    assert_eq!(ex.first().text(), "a.example", "{}", s.logs());
    // WSGI.
    let ex = raw(s.addr, &head("http://a.example/app/x", "localhost"));
    let env = json(&ex.first().body);
    assert_eq!(env["headers"]["HTTP_HOST"], "a.example", "{env}");
    // CGI.
    let ex = raw(
        s.addr,
        &head("http://a.example:8080/cgi-bin/env.py", "localhost"),
    );
    let env = json(&ex.first().body);
    assert_eq!(env["HTTP_HOST"], "a.example:8080", "{env}");
    assert_eq!(env["SERVER_NAME"], "a.example", "{env}");
    // Proxy.
    let ex = raw(s.addr, &head("http://a.example/proxy/x", "localhost"));
    assert_eq!(ex.first().text(), "up", "{}", s.logs());
    let upstream_head = seen.lock().unwrap().last().cloned().unwrap();
    assert!(
        upstream_head.contains("\r\nhost: a.example\r\n"),
        "{upstream_head}"
    );
}

/// A POST with `Transfer-Encoding` lines `codings` and a chunked body;
/// reads until `n` responses or the server closes.
fn post_with_codings(addr: SocketAddr, target: &str, codings: &[&str], n: usize) -> Exchange {
    let mut req = format!("POST {target} HTTP/1.1\r\nHost: a.example\r\n");
    for c in codings {
        req.push_str(&format!("Transfer-Encoding: {c}\r\n"));
    }
    req.push_str("\r\n5\r\nhello\r\n0\r\n\r\n");
    let mut c = connect(addr);
    c.write_all(req.as_bytes()).unwrap();
    read_responses(&mut c, n, Duration::from_secs(5))
}

#[test]
fn transfer_codings_other_than_one_chunked_are_refused_on_every_route_kind() {
    let t = TestDir::new();
    let (upstream, seen) = recording_upstream();
    let s = serve_every_kind(&t, upstream);
    for target in ["/who/who.txt", "/app/x", "/cgi-bin/env.py", "/proxy/x"] {
        for (codings, status) in [
            (&["identity, chunked"][..], 501),
            (&["gzip, chunked"][..], 501),
            (&["identity", "chunked"][..], 501),
            (&["chunked", "chunked"][..], 400),
            (&["chunked, chunked"][..], 400),
        ] {
            // Two: a second response must not come, the connection must close.
            let ex = post_with_codings(s.addr, target, codings, 2);
            assert_eq!(ex.responses.len(), 1, "{target} {codings:?}: {ex:?}");
            let res = ex.first();
            assert_eq!(res.status, status, "{target} {codings:?}\n{}", s.logs());
            assert_eq!(res.header("connection"), Some("close"));
            assert!(ex.closed, "{target} {codings:?}: connection left open");
        }
        // One chunked is fine and reaches the handler.
        let ex = post_with_codings(s.addr, target, &["chunked"], 1);
        assert_ne!(ex.first().status, 501, "{target}");
        assert_ne!(ex.first().status, 400, "{target}");
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "only the plain chunked request reached the upstream"
    );
}
