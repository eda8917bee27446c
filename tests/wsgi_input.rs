//! `wsgi.input`: every read method, EOF at CONTENT_LENGTH (pipelined bytes
//! stay the next request's), chunked bodies (measured when buffered),
//! without request buffering `100 Continue` only when the app reads, and
//! the body size limit on streamed bodies. Request buffering itself:
//! tests/buffering.rs.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json as j, Value};

use crate::util::raw::{connect, read_head, read_responses};
use crate::util::wsgi::{json, serve_app};
use crate::util::TestDir;

fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

fn chunked(path: &str, chunks: &[&[u8]]) -> Vec<u8> {
    let mut req =
        format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    for c in chunks {
        req.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        req.extend_from_slice(c);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    req
}

/// Sends `request` and returns the JSON of each of `n` responses.
fn exchange(addr: SocketAddr, request: &[u8], n: usize) -> Vec<Value> {
    let mut s = connect(addr);
    s.write_all(request).unwrap();
    let ex = read_responses(&mut s, n, Duration::from_secs(5));
    assert_eq!(
        ex.responses.len(),
        n,
        "got {:?}",
        String::from_utf8_lossy(&ex.bytes)
    );
    ex.responses
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text());
            json(&r.body)
        })
        .collect()
}

fn parts(addr: SocketAddr, request: &[u8]) -> Value {
    exchange(addr, request, 1).remove(0)["parts"].clone()
}

#[test]
fn read_n_read_all_readline_readlines_and_iteration() {
    let t = TestDir::new();
    let server = serve_app(&t, "inputs:application", &[]);
    let a = server.addr;
    let body = b"line one\nline two\nlast";
    assert_eq!(
        parts(a, &post("/read-n", body)),
        j!(["lin", "e on", "e\nline two\nlast", ""])
    );
    assert_eq!(
        parts(a, &post("/read-all", body)),
        j!(["line one\nline two\nlast", ""])
    );
    assert_eq!(
        parts(a, &post("/readline", body)),
        j!(["line", " one\n", "line two\n", "last"])
    );
    // readlines(5) stops once 5 bytes are read: just the first line.
    assert_eq!(
        parts(a, &post("/readlines", body)),
        j!(["line one\n", "|", "line two\n", "last"])
    );
    assert_eq!(
        parts(a, &post("/iter", body)),
        j!(["line one\n", "line two\n", "last"])
    );
}

/// A request without a body reads nothing every way, also between requests
/// with bodies on the same Python thread (they share one empty stream).
#[test]
fn a_request_without_a_body_reads_empty_every_way() {
    let t = TestDir::new();
    let server = serve_app(&t, "inputs:application", &[]);
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").into_bytes();
    let mut req = Vec::new();
    for path in ["/read-n", "/read-all", "/readline", "/iter"] {
        req.extend(get(path));
        req.extend(post("/read-all", b"body"));
    }
    let got = exchange(server.addr, &req, 8);
    let empty = [
        j!(["", "", "", ""]),
        j!(["", ""]),
        j!(["", "", "", ""]),
        j!([]),
    ];
    for (i, want) in empty.iter().enumerate() {
        assert_eq!(&got[2 * i]["parts"], want, "GET #{i}");
        assert_eq!(got[2 * i]["content_length"], Value::Null);
        assert_eq!(got[2 * i + 1]["parts"], j!(["body", ""]), "POST #{i}");
    }
}

#[test]
fn input_ends_at_content_length_and_pipelined_bytes_stay_a_request() {
    let t = TestDir::new();
    let server = serve_app(&t, "inputs:application", &[]);
    let mut req = post("/read-all", b"hello");
    req.extend(post("/read-all", b"abc"));
    let got = exchange(server.addr, &req, 2);
    assert_eq!(got[0]["parts"], j!(["hello", ""]));
    assert_eq!(got[1]["parts"], j!(["abc", ""]));

    // A large body is buffered in a temporary file (or, without request
    // buffering, streams from the socket as the app reads); it must end at
    // Content-Length all the same.
    let t2 = TestDir::new();
    let streaming = serve_app(&t2, "inputs:application", &["--no-request-buffering"]);
    for addr in [server.addr, streaming.addr] {
        let big = vec![b'z'; 200 * 1024];
        let mut req = post("/read-all", &big);
        req.extend(post("/read-all", b"next"));
        let got = exchange(addr, &req, 2);
        assert_eq!(got[0]["parts"][0].as_str().unwrap().len(), big.len());
        assert_eq!(got[0]["parts"][1], "");
        assert_eq!(got[1]["parts"], j!(["next", ""]));
    }
}

#[test]
fn chunked_body_is_read_to_its_end_with_input_terminated() {
    let t = TestDir::new();
    let server = serve_app(&t, "inputs:application", &[]);
    let got = exchange(
        server.addr,
        &chunked("/read-all", &[b"hello ", b"chunked ", b"world"]),
        1,
    );
    assert_eq!(got[0]["parts"], j!(["hello chunked world", ""]));
    assert_eq!(got[0]["terminated"], true);
    // Buffered, so measured: the app gets its length, as behind nginx.
    assert_eq!(got[0]["content_length"], "19", "{}", got[0]);
    assert_eq!(got[0]["transfer_encoding"], Value::Null, "{}", got[0]);
    // Streamed, the length is unknown: none is made up.
    let t2 = TestDir::new();
    let streaming = serve_app(&t2, "inputs:application", &["--no-request-buffering"]);
    let got = exchange(
        streaming.addr,
        &chunked("/read-all", &[b"hello ", b"chunked ", b"world"]),
        1,
    );
    assert_eq!(got[0]["parts"], j!(["hello chunked world", ""]));
    assert_eq!(got[0]["content_length"], Value::Null, "{}", got[0]);
    assert_eq!(got[0]["transfer_encoding"], "chunked", "{}", got[0]);
    let got = exchange(
        server.addr,
        &chunked("/readline", &[b"ab", b"cd\nef", b"\n"]),
        1,
    );
    assert_eq!(got[0]["parts"], j!(["abcd", "\n", "ef\n", ""]));
}

/// Without request buffering; with it, the 100 goes out when portico
/// starts reading (tests/buffering.rs).
#[test]
fn expect_100_continue_is_answered_only_when_the_app_reads() {
    let t = TestDir::new();
    let server = serve_app(&t, "inputs:application", &["--no-request-buffering"]);

    let mut s = connect(server.addr);
    s.write_all(
        b"POST /read-all HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\
          Expect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let (interim, _) = read_head(&mut s, Duration::from_secs(3));
    assert_eq!(interim.status, 100, "the app reads: 100 Continue first");
    s.write_all(b"hello").unwrap();
    let ex = read_responses(&mut s, 1, Duration::from_secs(5));
    let res = ex.first();
    assert_eq!(res.status, 200);
    assert_eq!(json(&res.body)["parts"], j!(["hello", ""]));

    // The app never reads: the final answer comes without any 100.
    let mut s = connect(server.addr);
    s.write_all(
        b"POST /never-read HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\
          Expect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let ex = read_responses(&mut s, 1, Duration::from_secs(3));
    assert!(
        ex.bytes.starts_with(b"HTTP/1.1 200"),
        "expected the final 200 with no 100 Continue before it, got {:?}",
        String::from_utf8_lossy(&ex.bytes)
    );
}

#[test]
fn chunked_body_over_max_body_size_is_413() {
    let t = TestDir::new();
    let server = serve_app(&t, "inputs:application", &["--max-body-size", "1k"]);
    let chunk = [b'q'; 1000];
    let req = chunked("/read-all", &[&chunk, &chunk, &chunk, &chunk]);
    let mut s = connect(server.addr);
    s.write_all(&req).unwrap();
    let ex = read_responses(&mut s, 1, Duration::from_secs(5));
    assert_eq!(ex.first().status, 413, "{}", server.logs());
    // Under the limit still works.
    let got = exchange(server.addr, &chunked("/read-all", &[&chunk[..500]]), 1);
    assert_eq!(got[0]["parts"][0].as_str().unwrap().len(), 500);
}

#[test]
fn a_slow_upload_holds_neither_the_gil_nor_other_requests() {
    let t = TestDir::new();
    let server = serve_app(&t, "inputs:application", &["--threads", "2"]);
    let mut slow = connect(server.addr);
    slow.write_all(b"POST /read-all HTTP/1.1\r\nHost: localhost\r\nContent-Length: 200000\r\n\r\n")
        .unwrap();
    slow.write_all(&[b'a'; 1000]).unwrap();
    // The app is now blocked in wsgi.input.read() waiting for the rest.
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..3 {
        let start = std::time::Instant::now();
        let got = exchange(server.addr, &post("/read-all", b"quick"), 1);
        assert_eq!(got[0]["parts"], j!(["quick", ""]));
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "another request waited {:?} behind a slow upload",
            start.elapsed()
        );
    }
    slow.write_all(&vec![b'a'; 199_000]).unwrap();
    let ex = read_responses(&mut slow, 1, Duration::from_secs(5));
    assert_eq!(
        json(&ex.first().body)["parts"][0].as_str().unwrap().len(),
        200_000
    );
}

#[test]
fn a_client_leaving_mid_upload_frees_the_python_thread() {
    let t = TestDir::new();
    let server = serve_app(&t, "inputs:application", &["--threads", "1"]);
    {
        let mut s = connect(server.addr);
        s.write_all(
            b"POST /read-all HTTP/1.1\r\nHost: localhost\r\nContent-Length: 200000\r\n\r\n",
        )
        .unwrap();
        s.write_all(&[b'a'; 1000]).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    // The only Python thread must give up on the dead upload and serve again.
    let start = std::time::Instant::now();
    let got = exchange(server.addr, &post("/read-all", b"after"), 1);
    assert_eq!(got[0]["parts"], j!(["after", ""]));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "next request waited {:?}",
        start.elapsed()
    );
    assert_eq!(server.workers().len(), 1);
}
