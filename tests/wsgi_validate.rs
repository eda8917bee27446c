//! Probe apps wrapped in `wsgiref.validate.validator` (warnings made
//! errors): any complaint raises inside the app, the server answers 500, the
//! test asserts 200 and that the error log holds no AssertionError.

use std::io::{Read, Write};
use std::time::Duration;

use crate::util::raw::{connect, read_head, read_responses};
use crate::util::wsgi::{serve_app, wait_file};
use crate::util::{request, Server, TestDir};

/// Fails when the validator (or Python's "Exception ignored" hook for an
/// iterator collected without close()) complained anywhere in the log.
fn assert_validator_quiet(server: &Server) {
    // Give late complaints (a __del__ on garbage collection) time to land.
    std::thread::sleep(Duration::from_millis(200));
    let err = server.stderr.text();
    for needle in [
        "AssertionError",
        "WSGIWarning",
        "garbage collected without being closed",
        "Traceback",
    ] {
        assert!(
            !err.contains(needle),
            "validator complaint ({needle}):\n{}",
            server.logs()
        );
    }
}

fn validated(t: &TestDir) -> Server {
    serve_app(
        t,
        "validated:application",
        &["--max-body-size", "16m", "--threads", "2"],
    )
}

#[test]
fn validator_get_post_length_and_chunked() {
    let t = TestDir::new();
    let server = validated(&t);
    let res = request(server.addr, "GET", "/hello", &[], Vec::new());
    assert_eq!(res.status, 200, "{}", server.logs());
    assert_eq!(res.text(), "hello\n");

    let res = request(server.addr, "POST", "/echo", &[], b"posted body".to_vec());
    assert_eq!(res.status, 200, "{}", server.logs());
    assert_eq!(res.text(), "posted body");

    let mut s = connect(server.addr);
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .unwrap();
    let ex = read_responses(&mut s, 1, Duration::from_secs(5));
    assert_eq!(ex.first().status, 200, "{}", server.logs());
    assert_eq!(ex.first().text(), "hello world");

    let res = request(server.addr, "GET", "/environ?x=1", &[], Vec::new());
    assert_eq!(res.status, 200, "{}", server.logs());
    let res = request(server.addr, "GET", "/stream?n=3", &[], Vec::new());
    assert_eq!(res.status, 200, "{}", server.logs());
    assert_validator_quiet(&server);
}

#[test]
fn validator_large_bodies_both_ways() {
    let t = TestDir::new();
    let server = validated(&t);
    let body: Vec<u8> = (0..5 << 20).map(|i| (i % 251) as u8).collect();
    let res = request(server.addr, "POST", "/echo", &[], body.clone());
    assert_eq!(res.status, 200, "{}", server.logs());
    assert!(res.body == body, "5 MiB echo differs");

    let res = request(server.addr, "GET", "/big?mib=5", &[], Vec::new());
    assert_eq!(res.status, 200, "{}", server.logs());
    assert_eq!(res.body.len(), 5 << 20);
    assert!(res.body.iter().all(|b| *b == b'x'));
    assert_validator_quiet(&server);
}

#[test]
fn validator_head_runs_the_app_sends_no_body_and_closes() {
    let t = TestDir::new();
    let server = validated(&t);
    let mut s = connect(server.addr);
    s.write_all(b"HEAD /head?tag=h HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (head, rest) = read_head(&mut s, Duration::from_secs(5));
    assert_eq!(head.status, 200, "{}", server.logs());
    assert_eq!(head.header("content-length"), Some("11"));
    assert!(rest.is_empty(), "HEAD got body bytes: {rest:?}");
    // The same connection carries a next request, with nothing in between.
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let ex = read_responses(&mut s, 1, Duration::from_secs(5));
    assert!(
        ex.bytes.starts_with(b"HTTP/1.1 200"),
        "bytes after HEAD: {:?}",
        String::from_utf8_lossy(&ex.bytes)
    );
    assert_eq!(ex.first().text(), "hello\n");
    assert_eq!(
        std::fs::read_to_string(t.join("ran-h")).unwrap(),
        "HEAD",
        "the app must run for HEAD"
    );
    assert!(
        wait_file(&t.join("closed-h"), Duration::from_secs(2)),
        "close() not called for HEAD"
    );
    assert_validator_quiet(&server);
}

#[test]
fn validator_client_disconnect_mid_response_closes_the_iterable() {
    let t = TestDir::new();
    let server = validated(&t);
    let mut s = connect(server.addr);
    s.write_all(b"GET /big?mib=64&tag=gone HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (head, _) = read_head(&mut s, Duration::from_secs(5));
    assert_eq!(head.status, 200);
    let mut buf = vec![0u8; 256 * 1024];
    let _ = s.read(&mut buf);
    drop(s);
    assert!(
        wait_file(&t.join("closed-gone"), Duration::from_secs(5)),
        "close() not called after the client went away\n{}",
        server.logs()
    );
    // The worker keeps serving.
    let res = request(server.addr, "GET", "/hello", &[], Vec::new());
    assert_eq!(res.status, 200);
    assert_validator_quiet(&server);
}

#[test]
fn wsgi_errors_lines_are_logged_tagged_with_the_request() {
    let t = TestDir::new();
    let server = validated(&t);
    let res = request(server.addr, "GET", "/errors?x=1", &[], Vec::new());
    assert_eq!(res.status, 200, "{}", server.logs());
    let ok = server.stderr.wait_for(Duration::from_secs(3), |lines| {
        let has = |text: &str| {
            lines
                .iter()
                .any(|l| l.contains(text) && l.contains("GET /errors?x=1"))
        };
        has("probe says hi") && has("second line")
    });
    assert!(
        ok,
        "wsgi.errors lines missing or untagged:\n{}",
        server.logs()
    );
}
