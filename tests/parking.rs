//! Keep-alive connections idle for a second leave hyper and wait parked
//! (src/server/park.rs). Clients must not notice: the next requests are
//! served on the same connection, timeouts still hold, unread responses
//! are not cut, and HTTP/2 connections are left alone.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::util::client::{h2c_connection, h2c_get_ok};
use crate::util::fixture::HELLO;
use crate::util::raw::{
    closes_within, connect, get_request, parse_all, read_responses, RawResponse,
};
use crate::util::{Server, TestDir};

/// Longer than the park delay (1 s).
const PARKED: Duration = Duration::from_millis(1600);

/// One GET on an open connection, answered within 3 s.
fn get_on(c: &mut TcpStream, path: &str) -> RawResponse {
    c.write_all(&get_request(path, &[])).unwrap();
    read_responses(c, 1, Duration::from_secs(3)).first().clone()
}

#[test]
fn a_parked_connection_serves_its_next_requests_and_pipelines() {
    let t = TestDir::new();
    let s = t.serve_site(&["--log-level", "debug"]);
    let mut c = connect(s.addr);
    assert_eq!(get_on(&mut c, "/hello.txt").status, 200);
    for round in 0..2 {
        std::thread::sleep(PARKED);
        // Two requests in one write after parking: both answered, in order.
        let mut two = get_request("/hello.txt", &[]);
        two.extend(get_request("/style.css", &[]));
        c.write_all(&two).unwrap();
        let ex = read_responses(&mut c, 2, Duration::from_secs(3));
        assert_eq!(ex.responses.len(), 2, "round {round}: {ex:?}\n{}", s.logs());
        assert!(!ex.closed, "round {round}: closed");
        assert_eq!(ex.responses[0].text(), HELLO);
        assert_eq!(ex.responses[1].text(), "body { color: black }\n");
    }
    let parked = s.logs().matches("idle connection parked").count();
    assert_eq!(
        parked,
        2,
        "the connection should have parked twice\n{}",
        s.logs()
    );
}

#[test]
fn a_request_head_split_across_the_park_is_served() {
    let t = TestDir::new();
    let s = t.serve_site(&["--header-timeout", "5"]);
    let mut c = connect(s.addr);
    assert_eq!(get_on(&mut c, "/hello.txt").status, 200);
    std::thread::sleep(PARKED);
    c.write_all(b"GET /hello.txt HT").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    c.write_all(b"TP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let ex = read_responses(&mut c, 1, Duration::from_secs(3));
    assert_eq!(ex.first().text(), HELLO, "{}", s.logs());
}

/// Issue 12 item 4: hyper had read the second request's beginning with the
/// first request when the connection parked; those bytes must come back.
#[test]
fn a_pipelined_request_split_across_the_park_is_answered() {
    let t = TestDir::new();
    let s = t.serve_site(&["--header-timeout", "5", "--log-level", "debug"]);
    let mut c = connect(s.addr);
    let mut first = get_request("/hello.txt", &[]);
    first.extend_from_slice(b"GET /style.css HT");
    c.write_all(&first).unwrap();
    let ex = read_responses(&mut c, 1, Duration::from_secs(3));
    assert_eq!(ex.first().text(), HELLO, "{}", s.logs());
    std::thread::sleep(Duration::from_millis(1500));
    c.write_all(b"TP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let ex = read_responses(&mut c, 1, Duration::from_secs(3));
    assert!(
        !ex.responses.is_empty(),
        "the pipelined request was dropped (closed: {}, {} bytes)\n{}",
        ex.closed,
        ex.bytes.len(),
        s.logs()
    );
    assert_eq!(ex.first().text(), "body { color: black }\n");
}

#[test]
fn a_parked_connection_is_closed_at_the_keepalive_timeout() {
    let t = TestDir::new();
    let s = t.serve_site(&["--keepalive-timeout", "3", "--header-timeout", "1"]);
    let mut c = connect(s.addr);
    assert_eq!(get_on(&mut c, "/hello.txt").status, 200);
    let idle = Instant::now();
    assert!(
        closes_within(&mut c, Duration::from_secs(6)),
        "parked connection still open 6s after its response with --keepalive-timeout 3"
    );
    let after = idle.elapsed();
    assert!(
        after >= Duration::from_millis(2700),
        "closed after {after:?}, before the keep-alive timeout (3s)"
    );
}

/// An app answering 8 MiB in one body chunk: its response ends for the
/// app (the connection counts as idle) while megabytes still wait in hyper
/// for a client that does not read.
fn one_chunk_app(t: &TestDir) {
    t.write(
        "onechunk.py",
        "BODY = bytes(range(256)) * 32768\n\n\
         def app(environ, start_response):\n    \
         start_response('200 OK', [('Content-Length', str(len(BODY)))])\n    \
         return [BODY]\n",
    );
}

/// Parking while hyper still holds bytes for the client would lose them.
#[test]
fn a_slow_reader_gets_its_whole_response_across_the_park_delay() {
    let t = TestDir::new();
    one_chunk_app(&t);
    let s = t.serve(&["onechunk:app", "--keepalive-timeout", "30"]);
    let mut c = connect(s.addr);
    c.write_all(&get_request("/", &[])).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let ex = read_responses(&mut c, 1, Duration::from_secs(20));
    let res = ex.first();
    assert_eq!(res.status, 200, "{}", s.logs());
    let expected: Vec<u8> = (0..8 << 20).map(|i| i as u8).collect();
    assert!(
        res.body == expected,
        "body differs ({} of {} bytes)",
        res.body.len(),
        expected.len()
    );
    // Still usable afterwards.
    assert_eq!(get_on(&mut c, "/").status, 200);
}

#[test]
fn a_parked_connection_on_a_unix_socket_serves_its_next_request() {
    let t = TestDir::new();
    t.site();
    let sock = t.join("http.sock");
    let unix = format!("unix:{}", sock.display());
    let s = Server::start_in(
        t.path(),
        &[
            "--static",
            "/=site",
            "-b",
            "127.0.0.1:0",
            "-b",
            &unix,
            "--log-level",
            "debug",
        ],
        2,
    );
    let mut c = UnixStream::connect(&sock).expect("connect to the unix listener");
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    for _ in 0..2 {
        c.write_all(&get_request("/hello.txt", &[])).unwrap();
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        while parse_all(&bytes).is_empty() {
            let n = c.read(&mut buf).unwrap_or(0);
            assert!(
                n > 0,
                "closed or timed out: {:?}\n{}",
                String::from_utf8_lossy(&bytes),
                s.logs()
            );
            bytes.extend_from_slice(&buf[..n]);
        }
        assert_eq!(parse_all(&bytes)[0].text(), HELLO);
        std::thread::sleep(PARKED);
    }
    assert!(s.logs().contains("idle connection parked"), "{}", s.logs());
}

#[test]
fn an_idle_http2_connection_keeps_working_past_the_park_delay() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    crate::util::client::runtime().block_on(async {
        let mut send = h2c_connection(s.addr, "/hello.txt").await;
        tokio::time::sleep(PARKED).await;
        h2c_get_ok(&mut send, s.addr, "/hello.txt").await;
    });
}

/// Not parked, not served forever either: a client that stops reading is
/// closed at the keep-alive deadline, as before parking existed.
#[test]
fn a_client_that_never_reads_is_closed_at_the_keepalive_timeout() {
    let t = TestDir::new();
    one_chunk_app(&t);
    let s = t.serve(&[
        "onechunk:app",
        "--keepalive-timeout",
        "2",
        "--header-timeout",
        "1",
    ]);
    let mut c = connect(s.addr);
    c.write_all(&get_request("/", &[])).unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let ex = read_responses(&mut c, 1, Duration::from_secs(5));
    assert!(
        ex.closed,
        "connection still open 6 s after a 2 s keep-alive timeout"
    );
    assert!(
        ex.bytes.len() < 8 << 20,
        "the whole body arrived ({} bytes): the client was not stalled",
        ex.bytes.len()
    );
}
