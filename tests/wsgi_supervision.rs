//! Concurrency inside a worker and the master's supervision of WSGI
//! workers: a slow view stalls nothing else; kill -9, SIGHUP reload under
//! load (and with broken code), --timeout recycling with stacks logged,
//! --max-requests, SIGTTIN/SIGTTOU.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::wsgi::serve_app;
use crate::util::{get, Server, TestDir};

fn live_app(version: &str) -> String {
    format!(
        r#"import os
import time

VERSION = "{version}"


def stuck_in_this_view(seconds):
    time.sleep(seconds)


def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/stuck":
        stuck_in_this_view(30)
    elif path == "/slow":
        time.sleep(0.05)
    body = ("%s %d" % (VERSION, os.getpid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
"#
    )
}

/// Serves live.py and waits until the master says its workers are ready
/// (`listening on` comes before the workers have imported the app).
fn serve_live(t: &TestDir, extra: &[&str]) -> Server {
    t.write("live.py", live_app("v1"));
    let mut args = vec!["live:application"];
    args.extend_from_slice(extra);
    let server = t.serve(&args);
    let ready = server.stderr.wait_for(Duration::from_secs(10), |lines| {
        lines.iter().any(|l| l.contains("ready:"))
    });
    assert!(ready, "workers never ready:\n{}", server.logs());
    server
}

/// One request on a fresh connection: the status and body, or the error.
fn one_request(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// Client threads requesting `path` in a loop until stopped; counts
/// successes and keeps every failure.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(addr: SocketAddr, path: &'static str, clients: usize, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok) = (stop.clone(), ok.clone());
                std::thread::spawn(move || {
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match one_request(addr, path) {
                            Ok((200..=299, _)) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok((status, body)) => failures.push(format!("{status}: {body}")),
                            Err(e) => failures.push(e),
                        }
                        std::thread::sleep(pause);
                    }
                    failures
                })
            })
            .collect();
        Load { stop, ok, threads }
    }

    /// Stops the clients; returns (successes, failures).
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self
            .threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

#[test]
fn a_sleeping_view_stalls_neither_static_files_nor_other_views() {
    let t = TestDir::new();
    t.write("public/file.txt", "static\n");
    let server = serve_app(
        &t,
        "probe:application",
        &["--threads", "2", "--static", "/=public"],
    );
    let addr = server.addr;
    let sleeper = std::thread::spawn(move || get(addr, "/sleep?s=3", &[]));
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    assert_eq!(get(addr, "/file.txt", &[]).text(), "static\n");
    let static_time = start.elapsed();
    let start = Instant::now();
    assert_eq!(get(addr, "/hello", &[]).text(), "hello\n");
    let view_time = start.elapsed();
    assert!(
        static_time < Duration::from_millis(500),
        "static file took {static_time:?}"
    );
    assert!(
        view_time < Duration::from_millis(500),
        "other view took {view_time:?}"
    );
    assert_eq!(sleeper.join().unwrap().text(), "slept");
}

#[test]
fn a_sleeping_view_with_one_thread_does_not_stall_static_files() {
    let t = TestDir::new();
    t.write("public/file.txt", "static\n");
    let server = serve_app(
        &t,
        "probe:application",
        &["--threads", "1", "--static", "/=public"],
    );
    let addr = server.addr;
    let sleeper = std::thread::spawn(move || get(addr, "/sleep?s=2", &[]));
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    assert_eq!(get(addr, "/file.txt", &[]).text(), "static\n");
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "static file took {:?} while the only Python thread slept",
        start.elapsed()
    );
    assert_eq!(sleeper.join().unwrap().text(), "slept");
}

#[test]
fn a_killed_worker_is_replaced_and_service_continues() {
    let t = TestDir::new();
    let server = serve_live(&t, &["-w", "2"]);
    let before = server.wait_workers(2, Duration::from_secs(5));
    assert_eq!(before.len(), 2);
    let load = Load::start(server.addr, "/", 1, Duration::from_millis(20));
    std::thread::sleep(Duration::from_millis(300));
    kill(Pid::from_raw(before[0] as i32), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = server.workers();
    while Instant::now() < deadline && (after.len() != 2 || after.contains(&before[0])) {
        std::thread::sleep(Duration::from_millis(50));
        after = server.workers();
    }
    std::thread::sleep(Duration::from_millis(300));
    let (ok, failures) = load.finish();
    assert_eq!(after.len(), 2, "{}", server.logs());
    assert!(!after.contains(&before[0]), "killed worker not replaced");
    // A request the killed worker held at that instant may be lost; nothing else.
    assert!(failures.len() <= 1, "failures: {failures:?}");
    assert!(ok > 10, "only {ok} successful requests");
}

#[test]
fn sighup_under_load_has_no_failures_and_serves_the_new_code() {
    let t = TestDir::new();
    let server = serve_live(&t, &["-w", "2"]);
    server.wait_workers(2, Duration::from_secs(5));
    let load = Load::start(server.addr, "/slow", 4, Duration::from_millis(2));
    std::thread::sleep(Duration::from_millis(300));
    t.write("live.py", live_app("v2"));
    server.signal(Signal::SIGHUP);
    let reloaded = server.stderr.wait_for(Duration::from_secs(10), |lines| {
        lines.iter().any(|l| l.contains("draining generation"))
    });
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failures) = load.finish();
    assert!(reloaded, "no reload:\n{}", server.logs());
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:?}",
        failures.len()
    );
    assert!(ok > 20, "only {ok} requests");
    let (status, body) = one_request(server.addr, "/").unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with("v2 "), "after reload: {body}");
}

#[test]
fn broken_code_on_reload_keeps_the_old_version_serving() {
    let t = TestDir::new();
    let server = serve_live(&t, &["-w", "1"]);
    let before = server.wait_workers(1, Duration::from_secs(5));
    t.write("live.py", "def application(environ, start_response:\n");
    server.signal(Signal::SIGHUP);
    let failed = server.stderr.wait_for(Duration::from_secs(10), |lines| {
        lines.iter().any(|l| l.contains("reload failed"))
    });
    assert!(failed, "{}", server.logs());
    assert!(
        server.stderr.text().contains("SyntaxError"),
        "{}",
        server.logs()
    );
    let (status, body) = one_request(server.addr, "/").unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with("v1 "), "{body}");
    assert_eq!(server.wait_workers(1, Duration::from_secs(1)), before);
}

#[test]
fn a_stuck_request_recycles_the_worker_and_logs_its_stack() {
    let t = TestDir::new();
    let server = serve_live(&t, &["--timeout", "2", "--threads", "2"]);
    let before = server.wait_workers(1, Duration::from_secs(5));
    let addr = server.addr;
    let stuck = std::thread::spawn(move || one_request(addr, "/stuck?why=test"));
    let logged = server.stderr.wait_for(Duration::from_secs(8), |lines| {
        lines.iter().any(|l| l.contains("stuck_in_this_view"))
            && lines.iter().any(|l| l.contains("GET /stuck?why=test"))
    });
    assert!(logged, "no stack with the request line:\n{}", server.logs());
    let answer = stuck.join().unwrap();
    assert!(
        !matches!(answer, Ok((200, _))),
        "the stuck request cannot have succeeded: {answer:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = server.workers();
    while Instant::now() < deadline && (after.len() != 1 || after == before) {
        std::thread::sleep(Duration::from_millis(50));
        after = server.workers();
    }
    assert!(
        after.len() == 1 && after != before,
        "worker not recycled: {after:?}"
    );
    let (status, _) = one_request(server.addr, "/").unwrap();
    assert_eq!(status, 200);
}

#[test]
fn max_requests_recycles_the_worker() {
    let t = TestDir::new();
    let server = serve_live(&t, &["--max-requests", "5"]);
    let pid_of = |body: &str| body.split_whitespace().nth(1).unwrap().to_string();
    let mut pids = Vec::new();
    for _ in 0..5 {
        let (status, body) = one_request(server.addr, "/").unwrap();
        assert_eq!(status, 200);
        pids.push(pid_of(&body));
    }
    assert!(pids.iter().all(|p| *p == pids[0]), "{pids:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = one_request(server.addr, "/").unwrap();
        assert_eq!(status, 200, "{}", server.logs());
        if pid_of(&body) != pids[0] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still pid {} after 5 requests\n{}",
            pids[0],
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigttin_and_sigttou_change_the_worker_count() {
    let t = TestDir::new();
    let server = serve_live(&t, &["-w", "1"]);
    assert_eq!(server.wait_workers(1, Duration::from_secs(5)).len(), 1);
    server.signal(Signal::SIGTTIN);
    assert_eq!(
        server.wait_workers(2, Duration::from_secs(5)).len(),
        2,
        "{}",
        server.logs()
    );
    server.signal(Signal::SIGTTOU);
    assert_eq!(
        server.wait_workers(1, Duration::from_secs(5)).len(),
        1,
        "{}",
        server.logs()
    );
    assert_eq!(get(server.addr, "/", &[]).status, 200);
}
