//! Every refusal logs one line naming the route, what was seen, the limit
//! and the key or flag to change (413, 414, 431, 408, 502, 504; CGI's 503
//! is in tests/cgi.rs), CGI bodies chunked or not are buffered up to
//! `max_body_size`, and a flood of bad requests writes a bounded number of
//! lines.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::util::raw::{connect, get_request, read_responses};
use crate::util::wsgi::json;
use crate::util::{raw, Server, TestDir};

/// Waits for a stderr line holding `text`.
fn logged(s: &Server, text: &str) -> bool {
    s.stderr.wait_for(Duration::from_secs(5), |lines| {
        lines.iter().any(|l| l.contains(text))
    })
}

#[track_caller]
fn assert_logged(s: &Server, text: &str) {
    assert!(logged(s, text), "no line with `{text}`\n{}", s.logs());
}

#[test]
fn target_too_long_and_header_block_too_large_name_their_keys() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let long = format!("/{}", "a".repeat(9000));
    assert_eq!(raw(s.addr, &get_request(&long, &[])).first().status, 414);
    assert_logged(
        &s,
        "414 on route / from 127.0.0.1: request target of 9001 bytes is over max_uri_length \
         8192 (raise `limits.max_uri_length`)",
    );
    let big = format!("X-Big: {}", "b".repeat(17_000));
    let ex = raw(s.addr, &get_request("/hello.txt", &[&big]));
    assert_eq!(ex.first().status, 431);
    assert_logged(
        &s,
        "431 on route / from 127.0.0.1: header block of 17026 bytes is over max_header_size \
         16384 (raise `limits.max_header_size`)",
    );
    // Past what the HTTP parser takes: it refuses, we name the keys.
    let fields: Vec<String> = (0..120).map(|i| format!("X-H{i}: v")).collect();
    let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
    let ex = raw(s.addr, &get_request("/hello.txt", &refs));
    assert_eq!(ex.first().status, 431);
    assert_logged(
        &s,
        "431 from 127.0.0.1: request head over the HTTP parser's limits: more than max_headers \
         100 fields, or more than 24576 bytes (max_header_size + max_uri_length) (raise \
         `limits.max_headers`, `limits.max_header_size` or `limits.max_uri_length`)",
    );
}

#[test]
fn a_slow_head_names_header_timeout() {
    let t = TestDir::new();
    let s = t.serve_site(&["--header-timeout", "1"]);
    let mut c = connect(s.addr);
    c.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .unwrap();
    let ex = read_responses(&mut c, 1, Duration::from_secs(4));
    assert_eq!(ex.first().status, 408, "{}", s.logs());
    assert_logged(
        &s,
        "408 from 127.0.0.1: request head not complete within header_timeout 1s (raise \
         `limits.header_timeout` or --header-timeout)",
    );
}

#[test]
fn proxy_502_and_504_name_the_upstream_and_the_timeout() {
    let t = TestDir::new();
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // A server that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming().flatten() {
            held.push(conn);
        }
    });
    t.write(
        "p.toml",
        format!(
            "[[listen]]\naddress = \"127.0.0.1:0\"\n\
             [[upstream]]\nname = \"down\"\nservers = [{{ url = \"http://{dead}\" }}]\n\
             [[upstream]]\nname = \"slow\"\nread_timeout = \"1s\"\n\
             servers = [{{ url = \"http://{silent_addr}\" }}]\n\
             [[route]]\npath = \"/down\"\nproxy = \"down\"\n\
             [[route]]\npath = \"/slow\"\nproxy = \"slow\"\n"
        ),
    );
    let s = t.serve(&["-c", "p.toml"]);
    assert_eq!(raw(s.addr, &get_request("/down", &[])).first().status, 502);
    assert_logged(
        &s,
        "502 on route /down from 127.0.0.1: no server of upstream `down` could be reached \
         (check that its servers are up; see `connect_timeout`, `max_fails` and \
         `fail_timeout` of the upstream)",
    );
    assert_eq!(raw(s.addr, &get_request("/slow", &[])).first().status, 504);
    assert_logged(
        &s,
        &format!(
            "504 on route /slow from 127.0.0.1: upstream `slow` server http://{silent_addr} made \
             no progress for read_timeout 1s (raise `read_timeout` of the upstream)"
        ),
    );
}

fn cgi_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cgi-bin")
}

/// Sends a chunked POST of `total` bytes in 64 KiB chunks (stopping when
/// the server stops reading) and reads the answer.
fn chunked_upload(addr: std::net::SocketAddr, path: &str, total: usize) -> Vec<u8> {
    let mut c = connect(addr);
    c.write_all(
        format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let chunk = vec![b'y'; 64 * 1024];
    let mut sent = 0;
    while sent < total {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if c.write_all(&framed).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = c.write_all(b"0\r\n\r\n");
    read_responses(&mut c, 1, Duration::from_secs(20)).bytes
}

/// CGI with default limits: bodies, with a Content-Length or chunked, are
/// buffered (a temporary file past 16 KiB) and reach the script whole past
/// the old 1 MiB chunked limit; a chunked one past `max_body_size` is 413
/// naming that key; the old `max_buffered_body_size` flag still starts,
/// with a warning.
#[test]
fn cgi_takes_large_bodies_chunked_or_not_up_to_max_body_size() {
    let t = TestDir::new();
    let dir = cgi_fixtures();
    let s = t.serve(&[
        "--cgi",
        &format!("/cgi-bin={}", dir.display()),
        "--max-body-size",
        "4m",
        "--max-buffered-body-size",
        "1m",
    ]);
    assert_logged(
        &s,
        "`limits.max_buffered_body_size` (--max-buffered-body-size) no longer",
    );
    let body = vec![b'x'; 3 << 20];
    let mut c = connect(s.addr);
    c.write_all(
        format!(
            "POST /cgi-bin/echo.pl HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    c.write_all(&body).unwrap();
    let ex = read_responses(&mut c, 1, Duration::from_secs(20));
    let res = ex.first();
    assert_eq!(res.status, 200, "{}", s.logs());
    assert_eq!(res.header("x-content-length"), Some("3145728"));
    assert_eq!(res.body, body);

    // Chunked, 3 MiB: measured, so the script gets CONTENT_LENGTH.
    let bytes = chunked_upload(s.addr, "/cgi-bin/echo.pl", 3 << 20);
    let res = crate::util::raw::parse_all(&bytes).remove(0);
    assert_eq!(res.status, 200, "{}", s.logs());
    assert_eq!(res.header("x-content-length"), Some("3145728"));
    assert!(res.body.iter().all(|&b| b == b'y') && res.body.len() == 3 << 20);

    // Past max_body_size: 413, naming the key.
    let bytes = chunked_upload(s.addr, "/cgi-bin/echo.pl", 6 << 20);
    let ex = crate::util::raw::parse_all(&bytes);
    assert_eq!(ex.first().map(|r| r.status), Some(413), "{}", s.logs());
    assert_logged(
        &s,
        "413 on route /cgi-bin from 127.0.0.1: request body without a length grew past \
         max_body_size 4194304 (raise `max_body_size` on the route or --max-body-size)",
    );
    // A small chunked body is still measured and passed.
    let mut c = connect(s.addr);
    c.write_all(
        b"POST /cgi-bin/env.py HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
    )
    .unwrap();
    let ex = read_responses(&mut c, 1, Duration::from_secs(10));
    let env = json(&ex.first().body);
    assert_eq!(env["CONTENT_LENGTH"], "5", "{env}");
}

/// A client sending bad requests as fast as it can gets each one refused,
/// but the error log gets at most 20 refusal lines a second; the next line
/// says how many were left out.
#[test]
fn a_flood_of_refusals_writes_a_bounded_number_of_lines() {
    let t = TestDir::new();
    let s = t.serve_site(&["--max-body-size", "1k"]);
    let started = Instant::now();
    let mut refused = 0;
    for _ in 0..300 {
        let ex = raw(
            s.addr,
            b"POST /hello.txt HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n",
        );
        refused += usize::from(ex.first().status == 413);
    }
    let windows = started.elapsed().as_secs() as usize + 1;
    assert_eq!(refused, 300);
    // Lines arrive through a pipe: wait until they stop growing.
    let count = || {
        s.stderr
            .lines()
            .iter()
            .filter(|l| l.contains("413 on route /"))
            .count()
    };
    std::thread::sleep(Duration::from_millis(300));
    let lines = count();
    assert!(
        (1..=20 * windows).contains(&lines),
        "{lines} refusal lines for 300 refusals in {windows} second(s)"
    );
    // After a quiet second, the next line reports what was left out.
    std::thread::sleep(Duration::from_millis(1100));
    let mut c = connect(s.addr);
    c.write_all(b"POST /hello.txt HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n")
        .unwrap();
    let mut sink = Vec::new();
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = c.read_to_end(&mut sink);
    assert_logged(&s, "more refusal(s) were not logged, past 20 a second");
}
