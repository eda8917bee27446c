//! HTTP/1.1 keep-alive and pipelining, HTTP/2 with prior knowledge (h2c),
//! and the headers every response carries.

use std::io::Write;
use std::time::Duration;

use crate::util::fixture::HELLO;
use crate::util::raw::{connect, get_request, read_responses};
use crate::util::{client, get, TestDir};

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let mut c = connect(s.addr);
    for path in ["/hello.txt", "/style.css", "/hello.txt"] {
        c.write_all(&get_request(path, &[])).unwrap();
        let ex = read_responses(&mut c, 1, Duration::from_secs(5));
        assert!(
            !ex.closed,
            "connection closed after {path}: {ex:?}\n{}",
            s.logs()
        );
        assert_eq!(ex.first().status, 200, "{path}");
    }
}

#[test]
fn pipelined_requests_get_responses_in_order() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let mut c = connect(s.addr);
    let mut both = get_request("/hello.txt", &[]);
    both.extend(get_request("/style.css", &[]));
    both.extend(get_request("/missing", &[]));
    c.write_all(&both).unwrap();
    let ex = read_responses(&mut c, 3, Duration::from_secs(5));
    assert_eq!(ex.responses.len(), 3, "{:?}\n{}", ex, s.logs());
    assert_eq!(ex.responses[0].status, 200);
    assert_eq!(ex.responses[0].text(), HELLO);
    assert_eq!(ex.responses[1].status, 200);
    assert!(ex.responses[1].text().contains("color"));
    assert_eq!(ex.responses[2].status, 404);
}

#[test]
fn connection_close_is_honoured() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let mut c = connect(s.addr);
    c.write_all(&get_request("/hello.txt", &["Connection: close"]))
        .unwrap();
    let ex = read_responses(&mut c, 2, Duration::from_secs(3));
    assert_eq!(ex.first().status, 200);
    assert!(
        ex.closed,
        "server kept the connection after Connection: close"
    );
}

#[test]
fn http10_request_is_answered() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let ex = crate::util::raw(s.addr, b"GET /hello.txt HTTP/1.0\r\n\r\n");
    assert_eq!(ex.first().status, 200);
    assert_eq!(ex.first().text(), HELLO);
    assert!(
        ex.first().version.starts_with("HTTP/1."),
        "{}",
        ex.first().version
    );
}

#[test]
fn h2c_with_prior_knowledge() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let res = client::get_h2c(s.addr, "/hello.txt");
    assert_eq!(res.version, http::Version::HTTP_2);
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), HELLO);
    assert_eq!(res.header("server"), Some("portico"));
}

#[test]
fn h2c_with_curl_prior_knowledge() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--http2-prior-knowledge",
            "-o",
            "-",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .arg(s.url("/hello.txt"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("\n2 200"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with(HELLO));
}

#[test]
fn every_response_has_date_and_server() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    for path in ["/hello.txt", "/missing", "/docs"] {
        let res = get(s.addr, path, &[]);
        assert_eq!(res.header("server"), Some("portico"), "{path}");
        let date = res
            .header("date")
            .unwrap_or_else(|| panic!("no Date on {path}"));
        let when = httpdate::parse_http_date(date).expect("IMF-fixdate");
        let age = std::time::SystemTime::now()
            .duration_since(when)
            .unwrap_or_default();
        assert!(age < Duration::from_secs(60), "Date {date} is off");
    }
    // Refusals decided by portico carry them too.
    let ex = crate::util::raw(
        s.addr,
        format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000)).as_bytes(),
    );
    assert_eq!(ex.first().status, 414);
    assert_eq!(ex.first().header("server"), Some("portico"));
    assert!(ex.first().header("date").is_some());
}

/// RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status
/// code to any HTTP/1.1 request message that lacks a Host header field and
/// to any that contains more than one Host header field line".
#[test]
fn duplicate_host_header_is_400() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let ex = crate::util::raw(
        s.addr,
        b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\nHost: evil.example.com\r\n\r\n",
    );
    assert_eq!(ex.first().status, 400, "gunicorn corpus invalid/042");
}

#[test]
fn missing_host_in_http11_is_400() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let ex = crate::util::raw(s.addr, b"GET /hello.txt HTTP/1.1\r\n\r\n");
    assert_eq!(ex.first().status, 400);
    // HTTP/1.0 needs no Host.
    let ex = crate::util::raw(s.addr, b"GET /hello.txt HTTP/1.0\r\n\r\n");
    assert_eq!(ex.first().status, 200);
}

/// RFC 9112 §3.2.4: the asterisk-form is only used for OPTIONS.
#[test]
fn asterisk_target_outside_options_is_400() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let ex = crate::util::raw(s.addr, b"GET * HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(
        ex.first().status,
        400,
        "gunicorn corpus rfc9112_target_asterisk_non_options_01"
    );
}

/// RFC 9112 §3.2.3: the authority-form is only used for CONNECT.
#[test]
fn authority_form_target_outside_connect_is_400() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    let ex = crate::util::raw(
        s.addr,
        b"GET localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n",
    );
    assert_eq!(
        ex.first().status,
        400,
        "gunicorn corpus rfc9112_target_authority_non_connect_01"
    );
}
