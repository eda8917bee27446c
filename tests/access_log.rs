//! The access log: one line per request, combined or JSON, to stdout or a file.

use std::time::Duration;

use crate::util::{get, raw, Server, TestDir};

fn file_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn three_requests(s: &Server) {
    assert_eq!(
        get(
            s.addr,
            "/hello.txt",
            &[
                ("user-agent", "test-agent/1.0"),
                ("referer", "http://r.example/")
            ]
        )
        .status,
        200
    );
    assert_eq!(get(s.addr, "/missing", &[]).status, 404);
    assert_eq!(
        get(s.addr, "/digits.txt", &[("range", "bytes=0-9")]).status,
        206
    );
}

#[test]
fn combined_lines_to_a_file() {
    let t = TestDir::new();
    let log = t.join("access.log");
    let s = t.serve_site(&["--access-log", log.to_str().unwrap()]);
    three_requests(&s);
    let lines = file_lines(&log, 3);
    assert_eq!(lines.len(), 3, "{lines:?}\n{}", s.logs());
    let first = &lines[0];
    assert!(first.starts_with("127.0.0.1 - - ["), "{first}");
    assert!(
        first.contains(
            "\"GET /hello.txt HTTP/1.1\" 200 13 \"http://r.example/\" \"test-agent/1.0\""
        ),
        "{first}"
    );
    // Date looks like 10/Oct/2000:13:55:36 +0000.
    let date = first.split('[').nth(1).unwrap().split(']').next().unwrap();
    assert_eq!(date.len(), 26, "{date}");
    assert!(date.ends_with(" +0000"), "{date}");
    assert!(
        lines[1].contains("\"GET /missing HTTP/1.1\" 404 "),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("\"GET /digits.txt HTTP/1.1\" 206 10 "),
        "{}",
        lines[2]
    );
    // Not on stdout when going to a file.
    assert!(!s.stdout.text().contains("GET /hello.txt"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(file_lines(&log, 3).len(), 3, "exactly one line per request");
}

#[test]
fn json_lines_parse() {
    let t = TestDir::new();
    let log = t.join("access.json");
    let s = t.serve_site(&[
        "--access-log",
        log.to_str().unwrap(),
        "--access-log-format",
        "json",
    ]);
    three_requests(&s);
    let h2 = crate::util::client::get_h2c(s.addr, "/hello.txt");
    assert_eq!(h2.status, 200);
    let lines = file_lines(&log, 4);
    assert_eq!(lines.len(), 4, "{lines:?}");
    let v: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert_eq!(v[0]["method"], "GET");
    assert_eq!(v[0]["uri"], "/hello.txt");
    assert_eq!(v[0]["status"], 200);
    assert_eq!(v[0]["bytes_sent"], 13);
    assert_eq!(v[0]["protocol"], "HTTP/1.1");
    assert_eq!(v[0]["user_agent"], "test-agent/1.0");
    assert_eq!(v[0]["referer"], "http://r.example/");
    assert_eq!(v[0]["remote_addr"], "127.0.0.1");
    assert!(v[0]["duration_ms"].is_number());
    assert!(httpdate::parse_http_date(v[0]["time"].as_str().unwrap()).is_ok());
    assert_eq!(v[1]["status"], 404);
    assert_eq!(v[2]["status"], 206);
    assert_eq!(v[2]["bytes_sent"], 10);
    assert_eq!(v[3]["protocol"], "HTTP/2.0");
}

#[test]
fn stdout_is_the_default_and_off_is_silent() {
    let t = TestDir::new();
    let s = t.serve_site(&[]);
    three_requests(&s);
    let ok = s.stdout.wait_for(Duration::from_secs(5), |l| {
        l.iter().filter(|l| l.contains("\"GET ")).count() >= 3
    });
    assert!(ok, "{}", s.logs());
    let t2 = TestDir::new();
    let s2 = t2.serve_site(&["--access-log", "off"]);
    three_requests(&s2);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!s2.stdout.text().contains("GET"), "{}", s2.stdout.text());
}

#[test]
fn refused_requests_are_logged_too() {
    let t = TestDir::new();
    let log = t.join("access.log");
    let s = t.serve_site(&["--access-log", log.to_str().unwrap()]);
    let ex = raw(
        s.addr,
        b"GET /x HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n",
    );
    assert_eq!(ex.first().status, 400);
    let lines = file_lines(&log, 1);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(" 400 "), "{}", lines[0]);
}

#[test]
fn access_log_from_config_file_is_relative_to_it() {
    let t = TestDir::new();
    t.site();
    t.write(
        "conf/p.toml",
        "[log]\naccess_log = \"logs.txt\"\naccess_log_format = \"json\"\n\
         [[route]]\npath = \"/\"\nstatic = \"../site\"\n",
    );
    let s = t.serve(&["-c", "conf/p.toml", "-b", "127.0.0.1:0"]);
    assert_eq!(get(s.addr, "/hello.txt", &[]).status, 200);
    let lines = file_lines(&t.join("conf/logs.txt"), 1);
    assert_eq!(lines.len(), 1, "{}", s.logs());
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["uri"], "/hello.txt");
}

#[test]
fn write_errors_are_reported_without_flooding_the_error_log() {
    let t = TestDir::new();
    let s = t.serve_site(&["--access-log", "/dev/full"]);
    for _ in 0..300 {
        assert_eq!(get(s.addr, "/hello.txt", &[]).status, 200);
    }
    assert!(
        s.stderr.wait_for(Duration::from_secs(5), |lines| lines
            .iter()
            .any(|l| l.contains("access log write failed"))),
        "the first failure must be reported\n{}",
        s.logs()
    );
    let warnings = s
        .stderr
        .lines()
        .iter()
        .filter(|l| l.contains("access log"))
        .count();
    assert!(
        warnings <= 3,
        "{warnings} warnings for 300 failed writes\n{}",
        s.logs()
    );
}

/// A request whose client goes away before its answer exists: one line,
/// 499 (nginx's "client closed request").
fn wait_for_499(s: &Server, target: &str) -> bool {
    let wanted = format!("\"GET {target} HTTP/");
    s.stdout.wait_for(Duration::from_secs(10), |lines| {
        lines
            .iter()
            .any(|l| l.contains(&wanted) && l.contains("\" 499 "))
    })
}

#[test]
fn a_client_closing_before_its_answer_is_logged_499() {
    use std::io::Write;
    let t = TestDir::new();
    let s = crate::util::wsgi::serve_app(&t, "loadapp:application", &[]);
    let mut c = raw::connect(s.addr);
    c.write_all(&raw::get_request("/gone?sleep=1", &[]))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(c);
    assert!(wait_for_499(&s, "/gone?sleep=1"), "{}", s.logs());
}

/// hyper drops the request's future when the client resets its HTTP/2
/// stream: the request is logged, and its connection is not left counting
/// it as in flight (it would never be idle, so never closed).
#[test]
fn an_http2_stream_reset_before_its_answer_is_logged_499_and_ends_the_request() {
    let t = TestDir::new();
    let s = crate::util::wsgi::serve_app(&t, "loadapp:application", &["--keepalive-timeout", "2"]);
    crate::util::client::runtime().block_on(async {
        let tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        let conn = tokio::spawn(conn);
        let req = http::Request::get(format!("http://{}/reset?sleep=1", s.addr))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        // Dropped unanswered: the client sends RST_STREAM(CANCEL).
        let answer = tokio::time::timeout(Duration::from_millis(300), send.send_request(req)).await;
        assert!(answer.is_err(), "answered before the reset: {answer:?}");
        // Idle now: closed by the server at its keep-alive timeout.
        let closed = tokio::time::timeout(Duration::from_secs(8), conn).await;
        assert!(
            closed.is_ok(),
            "the connection was never idle: the reset request still counts\n{}",
            s.logs()
        );
    });
    assert!(wait_for_499(&s, "/reset?sleep=1"), "{}", s.logs());
}
