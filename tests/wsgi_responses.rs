//! What the app sends back: start_response validation and exc_info,
//! write() order, when the head goes out, streaming and backpressure,
//! Content-Length and chunked framing, close() on every path, errors before
//! and after the head, truncation, `wsgi.file_wrapper`, X-Accel-Redirect.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::util::raw::{connect, read_head, read_responses, Exchange};
use crate::util::wsgi::{copy_fixtures, serve_app, wait_file};
use crate::util::{get, request, rss_kib, Server, TestDir};

fn responses(t: &TestDir) -> Server {
    serve_app(t, "responses:application", &["--threads", "2"])
}

fn raw_get(addr: SocketAddr, target: &str) -> Exchange {
    let mut s = connect(addr);
    s.write_all(format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .unwrap();
    read_responses(&mut s, 1, Duration::from_secs(5))
}

/// Waits for a stderr line holding all of `needles`.
fn logged(server: &Server, needles: &[&str]) -> bool {
    server.stderr.wait_for(Duration::from_secs(3), |lines| {
        lines.iter().any(|l| needles.iter().all(|n| l.contains(n)))
    })
}

#[test]
fn invalid_status_crlf_and_hop_by_hop_headers_are_500_and_logged() {
    let t = TestDir::new();
    let server = responses(&t);
    for path in [
        "/bad-status",
        "/crlf-header",
        "/hop-by-hop",
        "/non-latin1-header",
        "/nul-header",
        "/bad-header-name",
        "/twice",
        "/no-start-response",
        "/yields-str",
    ] {
        let ex = raw_get(server.addr, path);
        let res = ex.first();
        assert_eq!(res.status, 500, "{path}: {}", server.logs());
        let text = String::from_utf8_lossy(&ex.bytes);
        assert!(!text.contains("should not be sent"), "{path}: {text}");
        assert!(!text.to_ascii_lowercase().contains("injected"), "{text}");
        assert!(
            logged(&server, &[&format!("GET {path}")]),
            "{path}: no log line naming the request\n{}",
            server.logs()
        );
    }
    // The worker keeps serving.
    assert_eq!(get(server.addr, "/single", &[]).status, 200);
}

#[test]
fn exc_info_before_headers_replaces_the_response() {
    let t = TestDir::new();
    let server = responses(&t);
    let res = get(server.addr, "/exc-info-before-headers", &[]);
    assert_eq!(res.status, 503, "{}", server.logs());
    assert_eq!(res.header("x-error-page"), Some("app"));
    assert_eq!(res.text(), "the app's own error page");
}

#[test]
fn exc_info_after_headers_reraises_and_cuts_the_connection() {
    let t = TestDir::new();
    let server = responses(&t);
    let ex = raw_get(server.addr, "/exc-info-after-headers");
    let text = String::from_utf8_lossy(&ex.bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("first part"), "{text}");
    assert!(
        ex.responses.is_empty() && ex.closed,
        "the response must be visibly incomplete (no chunked terminator, connection closed): {text:?}"
    );
    assert!(!text.contains("not reached"), "{text}");
    assert!(logged(&server, &["late failure"]), "{}", server.logs());
}

#[test]
fn write_data_comes_before_iterable_data() {
    let t = TestDir::new();
    let server = responses(&t);
    let res = get(server.addr, "/write-order", &[]);
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "one,two,three,four");
}

#[test]
fn head_is_not_sent_before_the_first_body_byte() {
    let t = TestDir::new();
    let server = responses(&t);
    let mut s = connect(server.addr);
    let start = Instant::now();
    s.write_all(b"GET /late-first-chunk?first_delay=0.6 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (head, _) = read_head(&mut s, Duration::from_secs(5));
    let waited = start.elapsed();
    assert_eq!(head.status, 200);
    assert!(
        waited >= Duration::from_millis(550),
        "head arrived after {waited:?}, before the app yielded its first chunk (0.6 s)"
    );
}

/// Reads from `s` until `needle` has arrived; returns when it did.
fn arrival(s: &mut TcpStream, seen: &mut Vec<u8>, needle: &[u8], start: Instant) -> Duration {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        let k = s.read(&mut buf).expect("read");
        assert!(k > 0, "closed before {:?}", String::from_utf8_lossy(needle));
        seen.extend_from_slice(&buf[..k]);
    }
    start.elapsed()
}

#[test]
fn chunks_arrive_as_they_are_produced_with_chunked_encoding() {
    let t = TestDir::new();
    let server = serve_app(&t, "probe:application", &[]);
    let mut s = connect(server.addr);
    let start = Instant::now();
    s.write_all(b"GET /stream?n=2&delay=0.4&tag=s HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (head, mut seen) = read_head(&mut s, Duration::from_secs(5));
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(head.header("content-length"), None);
    let first = arrival(&mut s, &mut seen, b"chunk0", start);
    let second = arrival(&mut s, &mut seen, b"chunk1", start);
    assert!(
        first < Duration::from_millis(250),
        "first chunk took {first:?}"
    );
    assert!(
        second - first >= Duration::from_millis(300),
        "second chunk came {:?} after the first: buffered, not streamed",
        second - first
    );
    assert!(wait_file(&t.join("closed-s"), Duration::from_secs(2)));
}

#[test]
fn a_one_item_list_gets_a_content_length() {
    let t = TestDir::new();
    let server = responses(&t);
    let ex = raw_get(server.addr, "/single");
    let res = ex.first();
    assert_eq!(
        res.header("content-length"),
        Some("17"),
        "{:?}",
        res.headers
    );
    assert_eq!(res.header("transfer-encoding"), None);
    assert_eq!(res.text(), "exactly one chunk");
}

/// A generator's first chunk that is the whole declared body goes out with
/// the head; a chunk past it is dropped and logged; close() runs either way.
#[test]
fn a_first_chunk_holding_the_whole_declared_body_is_sent_whole() {
    let t = TestDir::new();
    let server = responses(&t);
    for target in ["/whole-first-chunk", "/whole-first-chunk?extra=1"] {
        let _ = std::fs::remove_file(t.join("closed-whole"));
        let mut s = connect(server.addr);
        let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        s.write_all(format!("{req}{req}").as_bytes()).unwrap();
        let ex = read_responses(&mut s, 2, Duration::from_secs(5));
        assert_eq!(ex.responses.len(), 2, "{target}: the connection stays open");
        for res in &ex.responses {
            assert_eq!(res.header("content-length"), Some("17"), "{target}");
            assert_eq!(res.header("transfer-encoding"), None, "{target}");
            assert_eq!(res.text(), "exactly one chunk", "{target}");
        }
        assert!(
            wait_file(&t.join("closed-whole"), Duration::from_secs(2)),
            "{target}"
        );
    }
    assert!(
        logged(
            &server,
            &["GET /whole-first-chunk?extra=1", "Content-Length"]
        ),
        "{}",
        server.logs()
    );
    assert!(
        !server.logs().contains("of its 17-byte Content-Length"),
        "a whole body is not short: {}",
        server.logs()
    );
}

/// The app's Content-Length goes out as the one field hyper frames with: a
/// canonical one as written, a repeated or padded one rewritten.
#[test]
fn a_declared_content_length_is_sent_once_and_canonical() {
    let t = TestDir::new();
    let server = responses(&t);
    for query in ["as=17", "as=17&as=17", "as=%2017", "as=017"] {
        let ex = raw_get(server.addr, &format!("/declared-length?{query}"));
        let res = ex.first();
        let lengths: Vec<_> = res
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .map(|(_, value)| value.as_str())
            .collect();
        assert_eq!(lengths, ["17"], "{query}: {:?}", res.headers);
        assert_eq!(res.text(), "exactly one chunk", "{query}");
    }
}

#[test]
fn close_is_called_on_success_and_on_exception() {
    let t = TestDir::new();
    let server = responses(&t);
    let res = get(server.addr, "/late-first-chunk?first_delay=0&tag=ok", &[]);
    assert_eq!(res.text(), "firstsecond");
    assert!(wait_file(&t.join("closed-ok"), Duration::from_secs(2)));
    let _ = raw_get(server.addr, "/raise-after?tag=failed");
    assert!(
        wait_file(&t.join("closed-failed"), Duration::from_secs(2)),
        "close() not called when the iterable raised"
    );
}

#[test]
fn backpressure_keeps_rss_bounded_for_a_slow_reader_then_close_runs() {
    let t = TestDir::new();
    let server = serve_app(&t, "probe:application", &[]);
    let worker = server.wait_workers(1, Duration::from_secs(5))[0];
    let mut s = connect(server.addr);
    s.write_all(b"GET /infinite?tag=bp HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (head, _) = read_head(&mut s, Duration::from_secs(5));
    assert_eq!(head.status, 200);
    // Read a little, slowly, then stop reading while the app could produce
    // its whole GiB.
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..10 {
        let _ = s.read(&mut buf);
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut peak = 0;
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(100));
        peak = peak.max(rss_kib(worker).unwrap_or(0));
    }
    assert!(
        peak < 150 * 1024,
        "worker RSS reached {} MiB while the client stalled",
        peak / 1024
    );
    drop(s);
    assert!(
        wait_file(&t.join("closed-bp"), Duration::from_secs(5)),
        "close() not called after the stalled client left\n{}",
        server.logs()
    );
}

#[test]
fn exception_before_headers_is_500_with_traceback_and_worker_survives() {
    let t = TestDir::new();
    let server = responses(&t);
    let worker = server.wait_workers(1, Duration::from_secs(5));
    let res = get(server.addr, "/raise-before", &[]);
    assert_eq!(res.status, 500);
    assert!(
        !res.text().contains("boom"),
        "traceback leaked to the client"
    );
    assert!(
        logged(&server, &["Traceback"]) && logged(&server, &["boom before headers"]),
        "{}",
        server.logs()
    );
    assert_eq!(get(server.addr, "/single", &[]).status, 200);
    assert_eq!(server.workers(), worker, "the worker must not be replaced");
}

#[test]
fn exception_after_headers_leaves_a_visibly_incomplete_response() {
    let t = TestDir::new();
    let server = responses(&t);
    // Chunked: no terminating chunk, connection closed. With a
    // Content-Length: closed before it is reached.
    for path in ["/raise-after", "/raise-after?cl=1000"] {
        let ex = raw_get(server.addr, path);
        let text = String::from_utf8_lossy(&ex.bytes);
        assert!(ex.responses.is_empty() && ex.closed, "{path}: {text:?}");
    }
    assert_eq!(get(server.addr, "/single", &[]).status, 200);
}

/// Bug found by this test: when the iterable raises right after its first
/// chunks, the cut sometimes overtakes data already yielded: the client gets
/// only the head and the first chunk, or a bare close with no status line.
/// Rare per response, so the test makes 60.
#[test]
fn bytes_yielded_before_an_error_reach_the_client_before_the_cut() {
    let t = TestDir::new();
    let server = responses(&t);
    let mut lost = Vec::new();
    for i in 0..60 {
        let path = if i % 2 == 0 {
            "/raise-after"
        } else {
            "/raise-after?cl=1000"
        };
        let ex = raw_get(server.addr, path);
        let text = String::from_utf8_lossy(&ex.bytes);
        if !(text.starts_with("HTTP/1.1 200") && text.contains(&"b".repeat(100))) {
            lost.push(format!("{path}: {text:?}"));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of 60 responses lost the head or some of the 200 bytes the app yielded before \
         raising:\n{}",
        lost.len(),
        lost.join("\n")
    );
}

#[test]
fn fewer_bytes_than_content_length_close_the_connection_and_log() {
    let t = TestDir::new();
    let server = responses(&t);
    let ex = raw_get(server.addr, "/short");
    assert!(
        ex.responses.is_empty() && ex.closed,
        "{:?}",
        String::from_utf8_lossy(&ex.bytes)
    );
    assert!(
        logged(&server, &["GET /short", "Content-Length"]),
        "{}",
        server.logs()
    );
}

#[test]
fn more_bytes_than_content_length_are_cut_and_logged() {
    let t = TestDir::new();
    let server = responses(&t);
    let mut s = connect(server.addr);
    s.write_all(b"GET /long HTTP/1.1\r\nHost: localhost\r\n\r\nGET /single HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let ex = read_responses(&mut s, 2, Duration::from_secs(3));
    let text = String::from_utf8_lossy(&ex.bytes);
    assert_eq!(ex.first().text(), "12345");
    assert!(
        !text.contains("EXTRA"),
        "excess bytes reached the wire: {text:?}"
    );
    if ex.responses.len() == 2 {
        assert_eq!(ex.responses[1].text(), "exactly one chunk");
    }
    assert!(
        logged(&server, &["GET /long", "Content-Length"]),
        "{}",
        server.logs()
    );
}

#[test]
fn file_wrapper_sends_a_10_mib_file_intact() {
    let t = TestDir::new();
    let data: Vec<u8> = (0..10u32 << 20).map(|i| (i * 7 % 256) as u8).collect();
    t.write("big.bin", &data);
    let server = responses(&t);
    let res = get(server.addr, "/file-wrapper", &[]);
    assert_eq!(res.status, 200, "{}", server.logs());
    assert_eq!(res.header("content-length"), Some("10485760"));
    assert!(res.body == data, "file_wrapper body differs");
}

#[test]
fn file_wrapper_sends_file_likes_and_starts_at_the_file_position() {
    let t = TestDir::new();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 13 % 256) as u8).collect();
    t.write("big.bin", &data);
    let server = responses(&t);
    let res = get(server.addr, "/file-wrapper-bytesio", &[]);
    assert_eq!(res.status, 200, "{}", server.logs());
    assert_eq!(res.body, b"0123456789".repeat(1000));
    let res = get(server.addr, "/file-wrapper-offset", &[]);
    assert_eq!(res.status, 200, "{}", server.logs());
    assert_eq!(res.header("content-length"), Some("99000"));
    assert!(
        res.body == data[1000..],
        "file_wrapper ignored the file position"
    );
}

#[test]
fn http10_client_gets_a_close_delimited_stream() {
    let t = TestDir::new();
    let server = serve_app(&t, "probe:application", &[]);
    let mut s = connect(server.addr);
    s.write_all(b"GET /stream?n=3 HTTP/1.0\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut bytes = Vec::new();
    let closed = s.read_to_end(&mut bytes).is_ok();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        closed,
        "HTTP/1.0 without Content-Length must end by closing: {text:?}"
    );
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("transfer-encoding"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\nchunk0chunk1chunk2"), "{text:?}");
}

#[test]
fn x_accel_redirect_cannot_escape_the_sendfile_root() {
    let t = TestDir::new();
    let server = sendfile_server(&t, true);
    t.write("outside.txt", "SECRET outside the sendfile root");
    for to in ["/../outside.txt", "/%2e%2e/outside.txt", "../outside.txt"] {
        let res = get(server.addr, &format!("/accel?to={to}"), &[]);
        assert!(
            !res.text().contains("SECRET"),
            "X-Accel-Redirect {to} served a file outside the root"
        );
        assert!(res.status >= 400, "{to}: {}", res.status);
    }
}

fn sendfile_server(t: &TestDir, root: bool) -> Server {
    copy_fixtures(t);
    t.write("protected/file.txt", "0123456789abcdef");
    let extra = if root {
        "sendfile_root = \"protected\"\n"
    } else {
        ""
    };
    t.write(
        "portico.toml",
        format!("[[route]]\npath = \"/\"\nwsgi = \"responses:application\"\n{extra}"),
    );
    t.serve(&["-c", "portico.toml", "-b", "127.0.0.1:0"])
}

#[test]
fn x_accel_redirect_serves_the_file_with_ranges_and_etag() {
    let t = TestDir::new();
    let server = sendfile_server(&t, true);
    let res = get(server.addr, "/accel?to=/file.txt", &[]);
    assert_eq!(res.status, 200, "{}", server.logs());
    assert_eq!(res.text(), "0123456789abcdef");
    assert_eq!(res.header("x-app"), Some("kept"));
    assert!(res.header("x-accel-redirect").is_none());
    let etag = res
        .header("etag")
        .expect("ETag on the served file")
        .to_string();

    let res = get(
        server.addr,
        "/accel?to=/file.txt",
        &[("range", "bytes=2-5")],
    );
    assert_eq!(res.status, 206);
    assert_eq!(res.text(), "2345");
    assert_eq!(res.header("content-range"), Some("bytes 2-5/16"));

    let res = get(
        server.addr,
        "/accel?to=/file.txt",
        &[("if-none-match", etag.as_str())],
    );
    assert_eq!(res.status, 304);

    let res = get(server.addr, "/accel?to=/missing.txt", &[]);
    assert_eq!(res.status, 404);

    let res = get(server.addr, "/sendfile", &[]);
    assert_eq!(res.status, 200, "{}", server.logs());
    assert_eq!(res.text(), "0123456789abcdef");
}

#[test]
fn x_accel_redirect_passes_through_without_sendfile_root() {
    let t = TestDir::new();
    let server = sendfile_server(&t, false);
    let res = request(server.addr, "GET", "/accel?to=/file.txt", &[], Vec::new());
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-accel-redirect"), Some("/file.txt"));
    assert_eq!(res.text(), "the app's body, replaced");
}
