//! Limits: 414, 431, 408 (slowloris), idle keep-alive close, 413, and
//! --max-connections.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::util::raw::{closes_within, connect, get_request, read_responses};
use crate::util::{raw, request, TestDir};

#[test]
fn target_too_long_is_414() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let long = format!("/{}", "a".repeat(9000));
    let ex = raw(s.addr, &get_request(&long, &[]));
    assert_eq!(ex.first().status, 414, "{}", s.logs());
    // Just under the limit is routed normally.
    let ok = format!("/{}", "a".repeat(8000));
    assert_eq!(raw(s.addr, &get_request(&ok, &[])).first().status, 404);
}

#[test]
fn target_longer_than_the_whole_head_buffer_is_refused() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let long = format!("/{}", "a".repeat(40_000));
    let ex = raw(s.addr, &get_request(&long, &[]));
    match ex.responses.first() {
        Some(r) => assert!(r.status == 414 || r.status == 431, "{}", r.status),
        None => assert!(ex.closed, "neither refused nor closed"),
    }
}

#[test]
fn header_block_too_large_is_431() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let big = format!("X-Big: {}", "b".repeat(17_000));
    let ex = raw(s.addr, &get_request("/hello.txt", &[&big]));
    assert_eq!(ex.first().status, 431, "{}", s.logs());
    // Past hyper's own buffer too.
    let huge = format!("X-Big: {}", "b".repeat(40_000));
    let ex = raw(s.addr, &get_request("/hello.txt", &[&huge]));
    assert_eq!(ex.first().status, 431, "{}", s.logs());
    // Many small fields adding up past the limit.
    let many: Vec<String> = (0..60)
        .map(|i| format!("X-F{i}: {}", "v".repeat(300)))
        .collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(
        raw(s.addr, &get_request("/hello.txt", &refs))
            .first()
            .status,
        431
    );
}

#[test]
fn too_many_header_fields_is_431() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let fields: Vec<String> = (0..120).map(|i| format!("X-H{i}: v")).collect();
    let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
    let ex = raw(s.addr, &get_request("/hello.txt", &refs));
    assert_eq!(ex.first().status, 431, "{}", s.logs());
    // 90 fields (plus Host) are fine.
    let refs: Vec<&str> = fields[..90].iter().map(String::as_str).collect();
    assert_eq!(
        raw(s.addr, &get_request("/hello.txt", &refs))
            .first()
            .status,
        200
    );
}

#[test]
fn max_headers_from_config_file() {
    let t = TestDir::new();
    t.site();
    t.write(
        "p.toml",
        "[limits]\nmax_headers = 5\n[[route]]\npath = \"/\"\nstatic = \"site\"\n",
    );
    let s = t.serve(&["-c", "p.toml", "-b", "127.0.0.1:0"]);
    let fields: Vec<String> = (0..8).map(|i| format!("X-H{i}: v")).collect();
    let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
    assert_eq!(
        raw(s.addr, &get_request("/hello.txt", &refs))
            .first()
            .status,
        431
    );
    assert_eq!(
        raw(s.addr, &get_request("/hello.txt", &refs[..2]))
            .first()
            .status,
        200
    );
}

#[test]
fn slowloris_half_a_head_gets_408_then_close() {
    let t = TestDir::new();
    let s = t.serve_site(&["--header-timeout", "1"]);
    let mut c = connect(s.addr);
    let started = Instant::now();
    c.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .unwrap();
    let ex = read_responses(&mut c, 1, Duration::from_secs(4));
    let waited = started.elapsed();
    assert_eq!(ex.first().status, 408, "{}", s.logs());
    assert!(
        waited >= Duration::from_millis(900),
        "408 too early: {waited:?}"
    );
    assert!(
        closes_within(&mut c, Duration::from_secs(2)),
        "not closed after 408"
    );
}

#[test]
fn slowloris_trickling_bytes_does_not_extend_the_header_timeout() {
    let t = TestDir::new();
    let s = t.serve_site(&["--header-timeout", "1"]);
    let mut c = connect(s.addr);
    let started = Instant::now();
    let mut answered = false;
    for b in b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nX-A: aaaaaaaaaaaaaaaa" {
        if c.write_all(&[*b]).is_err() {
            answered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let ex = read_responses(&mut c, 1, Duration::from_secs(2));
    assert!(
        answered || ex.closed || !ex.responses.is_empty(),
        "{}",
        s.logs()
    );
    if let Some(r) = ex.responses.first() {
        assert_eq!(r.status, 408);
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn idle_keep_alive_connection_is_closed_after_keepalive_timeout() {
    let t = TestDir::new();
    let s = t.serve_site(&["--keepalive-timeout", "1", "--header-timeout", "1"]);
    let mut c = connect(s.addr);
    c.write_all(&get_request("/hello.txt", &[])).unwrap();
    let ex = read_responses(&mut c, 1, Duration::from_secs(3));
    assert_eq!(ex.first().status, 200);
    let idle = Instant::now();
    assert!(
        closes_within(&mut c, Duration::from_secs(4)),
        "idle connection still open after 4s with --keepalive-timeout 1"
    );
    assert!(
        idle.elapsed() >= Duration::from_millis(800),
        "closed too early"
    );
}

#[test]
fn connection_without_any_request_is_closed_quietly() {
    let t = TestDir::new();
    let s = t.serve_site(&["--header-timeout", "1"]);
    let mut c = connect(s.addr);
    let ex = read_responses(&mut c, 1, Duration::from_secs(4));
    assert!(ex.closed, "silent connection not closed: {ex:?}");
    assert!(
        ex.responses.is_empty(),
        "nothing should be sent to a silent client"
    );
}

#[test]
fn body_over_max_body_size_is_413() {
    let t = TestDir::new();
    let s = t.serve_site(&["--max-body-size", "1k"]);
    let res = request(s.addr, "POST", "/hello.txt", &[], vec![b'x'; 2000]);
    assert_eq!(res.status, 413, "{}", s.logs());
    // Declared but not sent: refused from the head alone.
    let ex = raw(
        s.addr,
        b"PUT /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000000\r\n\r\n",
    );
    assert_eq!(ex.first().status, 413);
    // At the limit the request reaches the handler (405: static is read-only).
    let res = request(s.addr, "POST", "/hello.txt", &[], vec![b'x'; 1024]);
    assert_eq!(res.status, 405);
}

#[test]
fn route_max_body_size_overrides_the_default() {
    let t = TestDir::new();
    t.site();
    t.write(
        "p.toml",
        "[limits]\nmax_body_size = \"100\"\n[[route]]\npath = \"/\"\nstatic = \"site\"\n\
         [[route]]\npath = \"/docs\"\nstatic = \"site/docs\"\nmax_body_size = \"10k\"\n",
    );
    let s = t.serve(&["-c", "p.toml", "-b", "127.0.0.1:0"]);
    assert_eq!(request(s.addr, "POST", "/x", &[], vec![0; 500]).status, 413);
    assert_eq!(
        request(s.addr, "POST", "/docs/guide.txt", &[], vec![0; 500]).status,
        405
    );
    assert_eq!(
        request(s.addr, "POST", "/docs/guide.txt", &[], vec![0; 20_000]).status,
        413
    );
}

#[test]
fn max_connections_holds_the_third_connection_until_one_closes() {
    let t = TestDir::new();
    let s = t.serve_site(&["--max-connections", "2"]);
    let mut first = connect(s.addr);
    let mut second = connect(s.addr);
    for c in [&mut first, &mut second] {
        c.write_all(&get_request("/hello.txt", &[])).unwrap();
        assert_eq!(
            read_responses(c, 1, Duration::from_secs(3)).first().status,
            200
        );
    }
    let mut third = connect(s.addr);
    third.write_all(&get_request("/hello.txt", &[])).unwrap();
    let ex = read_responses(&mut third, 1, Duration::from_millis(800));
    assert!(
        ex.responses.is_empty() && !ex.closed,
        "third connection served: {ex:?}"
    );
    drop(first);
    let ex = read_responses(&mut third, 1, Duration::from_secs(5));
    assert_eq!(ex.first().status, 200, "{}", s.logs());
    // The worker is fine afterwards.
    drop(second);
    assert_eq!(
        raw(s.addr, &get_request("/hello.txt", &[])).first().status,
        200
    );
}

/// Regression: the connection watchdog arms its timer for the phase it sees
/// and is not woken when the phase changes. A connection that waited before
/// its first request keeps the header-timeout timer (10s here), so it is
/// closed ~10s after accept instead of 1s after its response.
#[test]
fn keepalive_timeout_applies_when_the_connection_waited_before_its_first_request() {
    let t = TestDir::new();
    let s = t.serve_site(&["--keepalive-timeout", "1", "--header-timeout", "10"]);
    let mut c = connect(s.addr);
    std::thread::sleep(Duration::from_millis(300));
    c.write_all(&get_request("/hello.txt", &[])).unwrap();
    assert_eq!(
        read_responses(&mut c, 1, Duration::from_secs(3))
            .first()
            .status,
        200
    );
    assert!(
        closes_within(&mut c, Duration::from_secs(3)),
        "idle connection not closed within 3s of its response with --keepalive-timeout 1"
    );
}

/// Regression (same cause): a partial second request on a kept-alive
/// connection gets its 408 only after the keep-alive timer (30s here) has
/// run out, not after --header-timeout.
#[test]
fn slowloris_on_a_kept_alive_connection_gets_408_after_header_timeout() {
    let t = TestDir::new();
    let s = t.serve_site(&["--keepalive-timeout", "30", "--header-timeout", "1"]);
    let mut c = connect(s.addr);
    c.write_all(&get_request("/hello.txt", &[])).unwrap();
    assert_eq!(
        read_responses(&mut c, 1, Duration::from_secs(3))
            .first()
            .status,
        200
    );
    // Idle for longer than the header timeout (allowed: keep-alive is 30s),
    // so the watchdog is asleep on the keep-alive deadline.
    std::thread::sleep(Duration::from_millis(1500));
    c.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .unwrap();
    let ex = read_responses(&mut c, 1, Duration::from_secs(4));
    assert!(
        ex.responses.first().is_some_and(|r| r.status == 408) || ex.closed,
        "no 408 within 4s with --header-timeout 1 on a kept-alive connection: {ex:?}"
    );
}
