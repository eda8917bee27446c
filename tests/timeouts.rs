//! Timeouts that blame one party (issue 12, items 5, 7, 8, 10, 11, 16):
//! `--timeout` counts only the app's own time and answers a stuck request
//! itself; `--body-timeout` ends a body the client stopped sending (WSGI,
//! CGI with its slot freed, the proxy without blaming the upstream, the
//! uwsgi listener); `--send-timeout` closes a client that takes no bytes
//! (sendfile, a WSGI stream, TLS, an HTTP/2 stream with a shut window);
//! malformed chunked bodies are the client's 400; a CGI client that aborts
//! its upload kills the script. Real binary, raw sockets, real clients.
//!
//! The body cases run with `--no-request-buffering`, where the app or the
//! script reads the client's body itself; with request buffering (the
//! default) the same failures are answered before either runs
//! (tests/buffering.rs).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::util::raw::{closes_within, connect, parse_one, read_responses};
use crate::util::wsgi::{copy_fixtures, serve_app, wait_file};
use crate::util::{Server, TestDir};

/// tests/fixtures/wsgi/timeouts.py on `-w 1`, once its worker is ready.
fn serve_timeouts(t: &TestDir, extra: &[&str]) -> Server {
    let mut args = extra.to_vec();
    args.extend(["--log-level", "info"]);
    let server = serve_app(t, "timeouts:application", &args);
    wait_ready(&server);
    server
}

fn wait_ready(server: &Server) {
    let ready = server.stderr.wait_for(Duration::from_secs(15), |lines| {
        lines.iter().any(|l| l.contains("ready:"))
    });
    assert!(ready, "workers never ready:\n{}", server.logs());
}

/// One GET on a new connection that asks to be closed: status and body.
fn get_close(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| format!("read: {e}"))?;
    let (res, _) = parse_one(&out)
        .ok_or_else(|| format!("no complete response: {:?}", String::from_utf8_lossy(&out)))?;
    Ok((res.status, res.text()))
}

/// The worker's pid, as the app reports it.
fn app_pid(addr: SocketAddr) -> String {
    let (status, body) = get_close(addr, "/pid").unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// A client requesting `path` every `pause` on new connections until
/// stopped: the bystander whose requests must all succeed.
struct Bystander {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Result<(u16, String), String>>>,
}

impl Bystander {
    fn start(addr: SocketAddr, path: &'static str, pause: Duration) -> Bystander {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut results = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                results.push(get_close(addr, path));
                std::thread::sleep(pause);
            }
            results
        });
        Bystander { stop, thread }
    }

    /// Stops; asserts every answer was a 200 with `body`.
    fn check(self, body: &str, logs: impl Fn() -> String) {
        self.stop.store(true, Ordering::Relaxed);
        let results = self.thread.join().unwrap();
        assert!(
            results.len() >= 3,
            "only {} bystander requests",
            results.len()
        );
        for r in &results {
            assert!(
                matches!(r, Ok((200, b)) if b == body),
                "a bystander request failed: {r:?} (expected 200 {body:?})\n{}",
                logs()
            );
        }
    }
}

/// A client with a small receive buffer (so the server's writes block),
/// `rcvbuf` bytes.
fn small_buffer_client(addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.connect(&addr.into()).unwrap();
    let s: TcpStream = socket.into();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads until EOF (or an error), sleeping `pause` after each read of at
/// most `chunk` bytes: a client that reads slowly.
fn read_slowly(s: &mut TcpStream, chunk: usize, pause: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        std::thread::sleep(pause);
    }
}

/// Reads until EOF or `timeout`; the bytes and whether EOF (or a reset) came.
fn read_to_close(s: &mut TcpStream, timeout: Duration) -> (usize, bool) {
    let deadline = Instant::now() + timeout;
    let mut total = 0;
    let mut buf = vec![0u8; 1 << 20];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (total, true),
            Ok(n) => total += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (total, true),
        }
    }
    (total, false)
}

fn has_line(server: &Server, what: &str, timeout: Duration) -> bool {
    server
        .stdout
        .wait_for(timeout, |lines| lines.iter().any(|l| l.contains(what)))
        || server.stderr.text().contains(what)
}

fn logged(server: &Server, what: &str, timeout: Duration) -> bool {
    server
        .stderr
        .wait_for(timeout, |lines| lines.iter().any(|l| l.contains(what)))
}

// ---- `--timeout`: the app's own time ----

#[test]
fn a_generator_read_by_a_slow_client_runs_past_the_timeout_and_recycles_nothing() {
    let t = TestDir::new();
    let server = serve_timeouts(&t, &["--timeout", "1", "--threads", "2"]);
    let pid = app_pid(server.addr);
    let bystander = Bystander::start(server.addr, "/pid", Duration::from_millis(200));
    let started = Instant::now();
    let mut s = small_buffer_client(server.addr);
    s.write_all(b"GET /big?mib=16 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    // About 4 MB/s: the generator waits on this client for seconds.
    let raw = read_slowly(&mut s, 64 * 1024, Duration::from_millis(15));
    let took = started.elapsed();
    bystander.check(&pid, || server.logs());
    let (res, _) = parse_one(&raw).unwrap_or_else(|| {
        panic!(
            "incomplete response after {} bytes\n{}",
            raw.len(),
            server.logs()
        )
    });
    assert_eq!(res.status, 200);
    assert_eq!(res.body.len(), 16 << 20, "the body was cut");
    assert!(
        took > Duration::from_secs(2),
        "the client was not slow: {took:?}"
    );
    assert!(
        !server.stderr.text().contains("past --timeout"),
        "{}",
        server.logs()
    );
    assert_eq!(app_pid(server.addr), pid, "the worker was recycled");
}

#[test]
fn a_trickled_upload_runs_past_the_timeout_and_recycles_nothing() {
    let t = TestDir::new();
    let server = serve_timeouts(
        &t,
        &["--timeout", "1", "--threads", "2", "--no-request-buffering"],
    );
    let pid = app_pid(server.addr);
    let bystander = Bystander::start(server.addr, "/pid", Duration::from_millis(200));
    // 70 KB (streamed to the app, past the 64 KiB read up front) in seven
    // pieces over about 2.8 s; the app waits in wsgi.input.read().
    let mut s = connect(server.addr);
    s.write_all(
        b"POST /upload?tag=trickle HTTP/1.1\r\nHost: localhost\r\nContent-Length: 70000\r\n\r\n",
    )
    .unwrap();
    for _ in 0..7 {
        std::thread::sleep(Duration::from_millis(400));
        s.write_all(&[b'u'; 10_000]).unwrap();
    }
    let ex = read_responses(&mut s, 1, Duration::from_secs(10));
    bystander.check(&pid, || server.logs());
    assert_eq!(ex.first().status, 200, "{}", server.logs());
    assert_eq!(ex.first().text(), "got 70000");
    assert!(
        !server.stderr.text().contains("past --timeout"),
        "{}",
        server.logs()
    );
    assert_eq!(app_pid(server.addr), pid, "the worker was recycled");
}

#[test]
fn a_stuck_view_is_answered_504_and_logged_while_the_others_finish_then_the_worker_is_replaced() {
    let t = TestDir::new();
    let server = serve_timeouts(&t, &["--timeout", "3", "--threads", "2"]);
    let before = server.wait_workers(1, Duration::from_secs(5));
    let addr = server.addr;
    let started = Instant::now();
    let stuck = std::thread::spawn(move || get_close(addr, "/stuck?why=test"));
    // In flight when the stuck request times out (3 to 4 s from now), and
    // within its own 3 s of app time.
    std::thread::sleep(Duration::from_secs(2));
    let bystander = std::thread::spawn(move || get_close(addr, "/slow?s=2.5"));
    let stuck = stuck.join().unwrap();
    let answered_after = started.elapsed();
    assert_eq!(
        stuck.as_ref().map(|(s, _)| *s),
        Ok(504),
        "{stuck:?}\n{}",
        server.logs()
    );
    assert!(
        answered_after < Duration::from_secs(6),
        "answered after {answered_after:?}"
    );
    let slow = bystander.join().unwrap();
    assert_eq!(
        slow,
        Ok((200, format!("slow done {}", before[0]))),
        "the other request of the worker was harmed\n{}",
        server.logs()
    );
    let logs = server.stderr.text();
    assert!(logs.contains("stuck_in_this_view"), "no stack:\n{logs}");
    assert!(
        logs.contains("GET /stuck?why=test"),
        "no request line:\n{logs}"
    );
    assert!(
        has_line(
            &server,
            "\"GET /stuck?why=test HTTP/1.1\" 504",
            Duration::from_secs(2)
        ),
        "no access-log line:\n{}",
        server.logs()
    );
    // The worker drains and is replaced; its stuck thread goes with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = server.workers();
    while Instant::now() < deadline && (after.len() != 1 || after == before) {
        std::thread::sleep(Duration::from_millis(50));
        after = server.workers();
    }
    assert!(
        after.len() == 1 && after != before,
        "worker not replaced: {after:?}\n{}",
        server.logs()
    );
    assert_eq!(get_close(addr, "/pid").unwrap().0, 200);
}

#[test]
fn a_worker_whose_only_thread_is_stuck_serves_static_files_and_exits_at_the_end_of_its_drain() {
    let t = TestDir::new();
    t.write("public/small.txt", "static\n");
    t.sparse("public/big.bin", 256 << 20);
    let server = serve_timeouts(
        &t,
        &[
            "--timeout",
            "1",
            "--threads",
            "1",
            "--static",
            "/files=public",
            "--graceful-timeout",
            "3",
        ],
    );
    let before = server.wait_workers(1, Duration::from_secs(5));
    let addr = server.addr;
    // A download that outlives the drain: it is what the drain waits for.
    let mut download = small_buffer_client(addr);
    download
        .write_all(b"GET /files/big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let stuck = std::thread::spawn(move || get_close(addr, "/stuck"));
    std::thread::sleep(Duration::from_millis(300));
    // The only Python thread is stuck; static files do not need it.
    let start = Instant::now();
    assert_eq!(
        get_close(addr, "/files/small.txt"),
        Ok((200, "static\n".into()))
    );
    assert!(start.elapsed() < Duration::from_millis(900));
    assert_eq!(stuck.join().unwrap().map(|r| r.0), Ok(504));
    let timed_out = Instant::now();
    // The drain ends at the graceful timeout (3 s) though the thread is
    // still stuck (for 30 s), and the process exits.
    let replaced = || {
        let w = server.workers();
        w.len() == 1 && w != before
    };
    while !replaced() && timed_out.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        replaced(),
        "the stuck worker did not exit:\n{}",
        server.logs()
    );
    assert!(
        timed_out.elapsed() < Duration::from_secs(7),
        "exited after {:?}",
        timed_out.elapsed()
    );
    let (downloaded, closed) = read_to_close(&mut download, Duration::from_secs(10));
    assert!(
        closed && downloaded < 256 << 20,
        "{downloaded} bytes, closed: {closed}"
    );
}

// ---- `--body-timeout` ----

#[test]
fn a_stalled_upload_to_a_wsgi_app_is_408_whatever_the_app_answers() {
    let t = TestDir::new();
    let server = serve_timeouts(&t, &["--body-timeout", "1", "--no-request-buffering"]);
    // Streamed to the app, which catches the OSError and answers 200.
    let mut s = connect(server.addr);
    s.write_all(
        b"POST /upload?tag=stall HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n",
    )
    .unwrap();
    s.write_all(&[b'a'; 10]).unwrap();
    let started = Instant::now();
    let ex = read_responses(&mut s, 1, Duration::from_secs(6));
    let res = ex.first();
    assert_eq!(res.status, 408, "{}", server.logs());
    assert_eq!(res.header("connection"), Some("close"));
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(ex.closed || closes_within(&mut s, Duration::from_secs(2)));
    assert!(wait_file(&t.join("body-stall"), Duration::from_secs(2)));
    let seen = std::fs::read_to_string(t.join("body-stall")).unwrap();
    assert!(seen.starts_with("raised after"), "{seen}");
    assert!(
        has_line(
            &server,
            "\"POST /upload?tag=stall HTTP/1.1\" 408",
            Duration::from_secs(2)
        ),
        "{}",
        server.logs()
    );
    assert!(
        logged(
            &server,
            "408 on route / from 127.0.0.1: no request-body bytes for 1s (raise `limits.body_timeout` or --body-timeout)",
            Duration::from_secs(1)
        ),
        "{}",
        server.logs()
    );
    // A small body (read before the app is called) times out the same way,
    // and the app never runs.
    let mut s = connect(server.addr);
    s.write_all(
        b"POST /upload?tag=small HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nabc",
    )
    .unwrap();
    let ex = read_responses(&mut s, 1, Duration::from_secs(6));
    assert_eq!(ex.first().status, 408);
    assert!(!t.join("body-small").exists());
    assert!(!server.stderr.text().contains("Traceback"));
}

/// The chunked bodies a client can break: (name, bytes after a good first
/// chunk).
const MALFORMED: [(&str, &[u8]); 6] = [
    ("badsize", b"zz\r\nhello\r\n0\r\n\r\n"),
    ("overflow", b"fffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    ("barelf", b"5;ext=1\nhello\r\n0\r\n\r\n"),
    ("nocrlf", b"5\r\nhelloXX0\r\n\r\n"),
    // Request trailers are refused (src/request/body.rs): after a bare LF hyper
    // would read the next request into the trailer section.
    ("trailers", b"0\r\nX-Trailer: 1\r\n\r\n"),
    (
        "hidden",
        b"0\r\n\nGET /hidden HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ),
];

fn chunked_post(path: &str, bad: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
    )
    .into_bytes();
    req.extend_from_slice(bad);
    req
}

#[test]
fn a_malformed_chunked_body_is_400_on_a_wsgi_route_and_the_app_never_sees_it_whole() {
    let t = TestDir::new();
    let server = serve_timeouts(&t, &["--no-request-buffering"]);
    for (name, bad) in MALFORMED {
        let mut s = connect(server.addr);
        s.write_all(&chunked_post(&format!("/upload?tag={name}"), bad))
            .unwrap();
        let ex = read_responses(&mut s, 1, Duration::from_secs(5));
        assert_eq!(ex.first().status, 400, "{name}: {}", server.logs());
        let marker = t.join(&format!("body-{name}"));
        assert!(wait_file(&marker, Duration::from_secs(2)), "{name}");
        let seen = std::fs::read_to_string(&marker).unwrap();
        assert!(
            seen.starts_with("raised after") && seen.contains("malformed"),
            "{name}: the app saw {seen:?}\n{}",
            server.logs()
        );
    }
    assert!(
        !server.stderr.text().contains("Traceback"),
        "{}",
        server.logs()
    );
    assert!(
        !server.stdout.text().contains("/hidden"),
        "a request hidden in a trailer section was served:\n{}",
        server.logs()
    );
    // Malformed requests are logged at debug level, like the HTTP
    // parser's own refusals (src/request/refusal.rs); the access log has them.
    assert!(
        has_line(&server, "HTTP/1.1\" 400", Duration::from_secs(1)),
        "{}",
        server.logs()
    );
}

// ---- CGI ----

fn cgi_fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cgi-bin")
}

/// The fixture scripts at /cgi-bin, at most two at once, with `flags`.
fn serve_cgi(t: &TestDir, flags: &[&str]) -> Server {
    serve_cgi_route(t, "", flags)
}

/// As [`serve_cgi`], with more keys for the route.
fn serve_cgi_route(t: &TestDir, keys: &str, flags: &[&str]) -> Server {
    let config = format!(
        "workers = 1\n[[listen]]\naddress = \"127.0.0.1:0\"\n[[route]]\npath = \"/cgi-bin\"\n\
         cgi = \"{}\"\ncgi_max_processes = 2\n{keys}\n",
        cgi_fixtures().display()
    );
    t.write("cgi.toml", config);
    let mut args = vec!["-c", "cgi.toml"];
    args.extend_from_slice(flags);
    t.serve(&args)
}

fn upload_sink(marks: &Path) -> String {
    format!("/cgi-bin/upload-sink.py?{}", marks.display())
}

fn pgrep(pattern: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn a_stalled_cgi_upload_is_408_kills_the_script_and_frees_its_slot() {
    let t = TestDir::new();
    let server = serve_cgi(&t, &["--body-timeout", "1", "--no-request-buffering"]);
    let uploads: Vec<_> = (0..2)
        .map(|i| {
            let marks = t.join(&format!("stall{i}"));
            let mut s = connect(server.addr);
            let head = format!(
                "POST {} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n",
                upload_sink(&marks)
            );
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&[b'c'; 10]).unwrap();
            (s, marks)
        })
        .collect();
    for (mut s, marks) in uploads {
        let ex = read_responses(&mut s, 1, Duration::from_secs(6));
        assert_eq!(ex.first().status, 408, "{}", server.logs());
        let started = Path::new(&format!("{}-started", marks.display())).to_path_buf();
        assert!(started.exists(), "the script never ran");
        let marks = marks.display().to_string();
        assert!(
            !pgrep(&marks) || {
                std::thread::sleep(Duration::from_millis(500));
                !pgrep(&marks)
            },
            "script still running"
        );
        assert!(
            !Path::new(&format!("{marks}-eof")).exists(),
            "the script saw a clean end of its body"
        );
    }
    // Both slots are free again: two scripts at once run, none is 503.
    let addr = server.addr;
    let next: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || get_close(addr, "/cgi-bin/sleep1.sh")))
        .collect();
    for h in next {
        assert_eq!(h.join().unwrap().map(|r| r.0), Ok(200), "{}", server.logs());
    }
}

#[test]
fn a_cgi_client_aborting_its_upload_kills_the_script_and_is_logged_499() {
    let t = TestDir::new();
    let server = serve_cgi(&t, &["--no-request-buffering"]);
    let marks = t.join("abort");
    let mut s = connect(server.addr);
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000\r\n\r\n",
        upload_sink(&marks)
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&[b'd'; 500]).unwrap();
    let started = std::path::PathBuf::from(format!("{}-started", marks.display()));
    assert!(
        wait_file(&started, Duration::from_secs(5)),
        "{}",
        server.logs()
    );
    drop(s);
    let marks = marks.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(3);
    while pgrep(&marks) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!pgrep(&marks), "the script outlived its client");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !Path::new(&format!("{marks}-eof")).exists(),
        "the script saw a clean end after 500 of 10000 bytes"
    );
    assert!(
        has_line(&server, "HTTP/1.1\" 499", Duration::from_secs(3)),
        "{}",
        server.logs()
    );
}

/// Sends a POST of `len` bytes in two halves with `pause` between them;
/// the response.
fn paused_upload(addr: SocketAddr, path: &str, len: usize, pause: Duration) -> (u16, String) {
    let mut s = connect(addr);
    let head = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len}\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&vec![b'h'; len / 2]).unwrap();
    std::thread::sleep(pause);
    s.write_all(&vec![b'h'; len - len / 2]).unwrap();
    let ex = read_responses(&mut s, 1, Duration::from_secs(10));
    let res = ex.first();
    (res.status, res.text())
}

#[test]
fn a_pause_in_a_cgi_upload_is_not_the_scripts_silence() {
    let t = TestDir::new();
    let server = serve_cgi_route(
        &t,
        "cgi_timeout = \"1s\"\nrequest_buffering = false",
        &["--body-timeout", "10"],
    );
    let marks = t.join("pause");
    // The script waits 2 s for its input: longer than its cgi_timeout, but
    // the silence is the client's.
    let (status, body) = paused_upload(
        server.addr,
        &upload_sink(&marks),
        1000,
        Duration::from_secs(2),
    );
    assert_eq!(
        (status, body.as_str()),
        (200, "got 1000\n"),
        "{}",
        server.logs()
    );
}

#[test]
fn a_malformed_chunked_body_is_400_on_a_cgi_route_and_no_script_runs() {
    let t = TestDir::new();
    let server = serve_cgi(&t, &[]);
    for (name, bad) in MALFORMED {
        let marks = t.join(name);
        let mut s = connect(server.addr);
        s.write_all(&chunked_post(&upload_sink(&marks), bad))
            .unwrap();
        let ex = read_responses(&mut s, 1, Duration::from_secs(5));
        assert_eq!(ex.first().status, 400, "{name}: {}", server.logs());
        assert!(!Path::new(&format!("{}-started", marks.display())).exists());
    }
}

// ---- the proxy ----

/// An upstream that answers its `id` once it has read each request's whole
/// body (`Content-Length` or chunked), on keep-alive connections.
fn reading_backend(id: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve_reading(conn, id));
        }
    });
    addr
}

fn serve_reading(mut conn: TcpStream, id: &str) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p + 4;
            }
            match conn.read(&mut byte) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&byte[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        let chunked = head.contains("transfer-encoding: chunked");
        let body_done = |b: &[u8]| {
            let body = &b[head_end..];
            if chunked {
                body.starts_with(b"0\r\n\r\n") || find(body, b"\r\n0\r\n\r\n").is_some()
            } else {
                body.len() >= length
            }
        };
        while !body_done(&buf) {
            match conn.read(&mut byte) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&byte[..n]),
            }
        }
        buf.clear();
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{id}",
            id.len()
        );
        if conn.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A front proxying `/` round robin to two reading backends `a` and `b`.
fn two_server_front(t: &TestDir, flags: &[&str]) -> Server {
    let (a, b) = (reading_backend("a"), reading_backend("b"));
    front(t, &format!("http://{a}"), &format!("http://{b}"), "", flags)
}

/// A front proxying `/` round robin to `a` and `b`, with more `[[upstream]]`
/// keys.
fn front(t: &TestDir, a: &str, b: &str, keys: &str, flags: &[&str]) -> Server {
    let config = format!(
        "workers = 1\n[[listen]]\naddress = \"127.0.0.1:0\"\n\
         [[upstream]]\nname = \"app\"\nservers = [{{ url = \"{a}\" }}, {{ url = \"{b}\" }}]\n{keys}\n\
         [[route]]\npath = \"/\"\nproxy = \"app\"\n"
    );
    t.write("front.toml", config);
    let mut args = vec!["-c", "front.toml"];
    args.extend_from_slice(flags);
    t.serve(&args)
}

/// Six GETs after a client's bad request still alternate between the two
/// servers: neither was marked down.
fn assert_round_robin(server: &Server) {
    let ids: Vec<String> = (0..6)
        .map(|_| {
            let (status, body) = get_close(server.addr, "/x").unwrap();
            assert_eq!(status, 200, "{}", server.logs());
            body
        })
        .collect();
    let a = ids.iter().filter(|id| *id == "a").count();
    assert_eq!(
        a,
        3,
        "a server was taken out of rotation: {ids:?}\n{}",
        server.logs()
    );
}

#[test]
fn a_malformed_chunked_body_through_the_proxy_is_400_and_blames_no_upstream() {
    let t = TestDir::new();
    let server = two_server_front(&t, &[]);
    assert_round_robin(&server);
    for (name, bad) in MALFORMED {
        let mut s = connect(server.addr);
        s.write_all(&chunked_post("/upload", bad)).unwrap();
        let ex = read_responses(&mut s, 1, Duration::from_secs(5));
        assert_eq!(ex.first().status, 400, "{name}: {}", server.logs());
        assert_round_robin(&server);
    }
    assert!(!server.stderr.text().contains("502"), "{}", server.logs());
}

#[test]
fn a_stalled_upload_through_the_proxy_is_408_and_blames_no_upstream() {
    let t = TestDir::new();
    let server = two_server_front(&t, &["--body-timeout", "1"]);
    let mut s = connect(server.addr);
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n")
        .unwrap();
    s.write_all(&[b'p'; 10]).unwrap();
    let ex = read_responses(&mut s, 1, Duration::from_secs(6));
    assert_eq!(ex.first().status, 408, "{}", server.logs());
    assert_round_robin(&server);
}

#[test]
fn a_pause_in_an_upload_through_the_proxy_is_not_the_upstreams_silence() {
    let t = TestDir::new();
    let (a, b) = (reading_backend("a"), reading_backend("b"));
    let (a, b) = (format!("http://{a}"), format!("http://{b}"));
    let server = front(
        &t,
        &a,
        &b,
        "read_timeout = \"1s\"",
        &["--body-timeout", "10"],
    );
    // The upstream waits 2 s for the rest of the body, past its
    // read_timeout: not its fault, not a 504, not marked down.
    let (status, id) = paused_upload(server.addr, "/upload", 1000, Duration::from_secs(2));
    assert_eq!(status, 200, "{}", server.logs());
    assert!(id == "a" || id == "b", "{id}");
    assert_round_robin(&server);
}

/// portico serving the timeouts app on a uwsgi listener, ready.
fn uwsgi_backend(t: &TestDir) -> Server {
    copy_fixtures(t);
    let backend = Server::start_in(
        t.path(),
        &[
            "timeouts:application",
            "-w",
            "1",
            "--uwsgi-socket",
            "127.0.0.1:0",
        ],
        1,
    );
    wait_ready(&backend);
    backend
}

#[test]
fn a_pause_in_an_upload_to_a_uwsgi_upstream_is_not_its_silence() {
    let t = TestDir::new();
    let backend = uwsgi_backend(&t);
    let uwsgi = format!("uwsgi://{}", backend.addr);
    let server = front(
        &t,
        &uwsgi,
        &uwsgi,
        "read_timeout = \"1s\"",
        &["--body-timeout", "10"],
    );
    let (status, body) = paused_upload(server.addr, "/upload", 1000, Duration::from_secs(2));
    assert_eq!(
        (status, body.as_str()),
        (200, "got 1000"),
        "{}\n{}",
        server.logs(),
        backend.logs()
    );
}

#[test]
fn a_stalled_upload_to_a_uwsgi_upstream_is_408_and_does_not_take_it_out() {
    let t = TestDir::new();
    let backend = uwsgi_backend(&t);
    // One server: were it marked down, the next request would find none.
    let config = format!(
        "workers = 1\n[[listen]]\naddress = \"127.0.0.1:0\"\n\
         [[route]]\npath = \"/\"\nproxy = \"uwsgi://{}\"\n",
        backend.addr
    );
    t.write("front.toml", config);
    let server = t.serve(&["-c", "front.toml", "--body-timeout", "1"]);
    let mut s = connect(server.addr);
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n")
        .unwrap();
    s.write_all(&[b'p'; 10]).unwrap();
    let ex = read_responses(&mut s, 1, Duration::from_secs(6));
    assert_eq!(ex.first().status, 408, "{}", server.logs());
    let (status, body) = get_close(server.addr, "/pid").unwrap();
    assert_eq!(status, 200, "{body}\n{}", server.logs());
}

// ---- the uwsgi listener ----

fn uwsgi_packet(vars: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in vars {
        body.extend_from_slice(&(k.len() as u16).to_le_bytes());
        body.extend_from_slice(k.as_bytes());
        body.extend_from_slice(&(v.len() as u16).to_le_bytes());
        body.extend_from_slice(v.as_bytes());
    }
    let mut packet = vec![0u8];
    packet.extend_from_slice(&(body.len() as u16).to_le_bytes());
    packet.push(0);
    packet.extend_from_slice(&body);
    packet
}

#[test]
fn a_stalled_upload_on_the_uwsgi_listener_is_408() {
    let t = TestDir::new();
    copy_fixtures(&t);
    let server = Server::start_in(
        t.path(),
        &[
            "timeouts:application",
            "-w",
            "1",
            "-b",
            "127.0.0.1:0",
            "--uwsgi-socket",
            "127.0.0.1:0",
            "--body-timeout",
            "1",
            "--no-request-buffering",
        ],
        2,
    );
    wait_ready(&server);
    let uwsgi = server
        .listeners
        .iter()
        .find(|(scheme, _)| scheme == "uwsgi")
        .unwrap()
        .1;
    let mut s = connect(uwsgi);
    s.write_all(&uwsgi_packet(&[
        ("REQUEST_METHOD", "POST"),
        ("REQUEST_URI", "/upload?tag=uwsgi"),
        ("PATH_INFO", "/upload"),
        ("QUERY_STRING", "tag=uwsgi"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("CONTENT_LENGTH", "100000"),
        ("HTTP_HOST", "localhost"),
        ("REMOTE_ADDR", "127.0.0.1"),
    ]))
    .unwrap();
    s.write_all(&[b'w'; 10]).unwrap();
    let ex = read_responses(&mut s, 1, Duration::from_secs(6));
    assert_eq!(ex.first().status, 408, "{}", server.logs());
    assert!(wait_file(&t.join("body-uwsgi"), Duration::from_secs(2)));
}

// ---- `--send-timeout` ----

#[test]
fn a_client_that_stops_reading_a_sendfile_download_is_closed() {
    let t = TestDir::new();
    t.sparse("site/big.bin", 64 << 20);
    let server = t.serve(&["--static", "/=site", "--send-timeout", "1"]);
    let mut s = small_buffer_client(server.addr);
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let (got, closed) = read_to_close(&mut s, Duration::from_secs(10));
    assert!(closed, "still open after {got} bytes");
    assert!(got < 64 << 20, "the whole file came: nothing was cut");
    assert!(
        logged(&server, "--send-timeout", Duration::from_secs(1)),
        "{}",
        server.logs()
    );
}

#[test]
fn a_client_that_stops_reading_a_wsgi_stream_is_closed_and_the_app_stops() {
    let t = TestDir::new();
    let server = serve_timeouts(&t, &["--send-timeout", "1", "--timeout", "2"]);
    let pid = app_pid(server.addr);
    let mut s = small_buffer_client(server.addr);
    s.write_all(b"GET /infinite?tag=stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    // The generator is closed once the connection is: its thread is free.
    assert!(
        wait_file(&t.join("closed-stream"), Duration::from_secs(6)),
        "{}",
        server.logs()
    );
    let (_, closed) = read_to_close(&mut s, Duration::from_secs(10));
    assert!(closed);
    // Waiting on the client was never the app's time.
    assert!(!server.stderr.text().contains("past --timeout"));
    assert_eq!(app_pid(server.addr), pid);
}

#[test]
fn a_tls_client_that_stops_reading_is_closed() {
    use crate::util::client::{make_cert, runtime, KeyKind};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let t = TestDir::new();
    t.sparse("site/big.bin", 64 << 20);
    let (cert, key) = make_cert(t.path(), KeyKind::Pkcs8);
    let server = t.serve(&[
        "--static",
        "/=site",
        "--send-timeout",
        "1",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let addr = server.addr;
    let (got, closed) = runtime().block_on(async move {
        let tcp = small_buffer_client(addr);
        tcp.set_nonblocking(true).unwrap();
        let tcp = tokio::net::TcpStream::from_std(tcp).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET /big.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let mut total = 0;
        let mut buf = vec![0u8; 1 << 20];
        let read_all = async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => total += n,
                }
            }
        };
        let closed = tokio::time::timeout(Duration::from_secs(10), read_all)
            .await
            .unwrap_or(false);
        (total, closed)
    });
    assert!(closed, "still open after {got} bytes\n{}", server.logs());
    assert!(got < 64 << 20, "the whole file came: nothing was cut");
}

#[test]
fn an_http2_stream_whose_window_never_opens_is_reset_and_the_connection_serves_on() {
    use bytes::Bytes;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let t = TestDir::new();
    let server = serve_timeouts(&t, &["--send-timeout", "1"]);
    let addr = server.addr;
    let marker = t.join("closed-h2");
    let (second, first_body) = crate::util::client::runtime().block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Nothing reads the first response's body, so its window (64 KiB)
        // is never opened again; the connection's own window stays open.
        let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(65_535)
            .handshake::<_, http_body_util::Empty<Bytes>>(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = |path: &str| {
            http::Request::get(format!("http://{addr}{path}"))
                .body(http_body_util::Empty::new())
                .unwrap()
        };
        let first = send.send_request(req("/infinite?tag=h2")).await.unwrap();
        assert_eq!(first.status(), 200);
        let waited = Instant::now();
        while !marker.exists() && waited.elapsed() < Duration::from_secs(6) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let second = send.send_request(req("/pid")).await.unwrap().status();
        let first_body = http_body_util::BodyExt::collect(first.into_body())
            .await
            .map(|b| b.to_bytes().len());
        (second, first_body)
    });
    assert!(
        t.join("closed-h2").exists(),
        "the stalled stream's app was never stopped\n{}",
        server.logs()
    );
    assert_eq!(second, 200, "the connection itself must serve on");
    assert!(
        first_body.is_err(),
        "the stalled stream ended cleanly: {first_body:?}"
    );
}
