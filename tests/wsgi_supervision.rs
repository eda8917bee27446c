//! Concurrency inside a worker and the master's supervision of WSGI
//! workers: a slow view stalls nothing else; kill -9, SIGHUP reload under
//! load (and with broken code, and with code that hangs at import),
//! --timeout recycling with stacks logged, --max-requests (the replacement
//! serves before the old worker stops), --start-timeout, a segfault naming
//! the requests it took down, SIGTTIN/SIGTTOU.

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
    elif path == "/crash":
        import ctypes
        ctypes.string_at(0)
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

/// The pid in a live.py answer (`VERSION PID`).
fn pid_in(body: &str) -> u32 {
    body.split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {body:?}"))
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn max_requests_replaces_the_worker_before_it_stops_accepting() {
    let t = TestDir::new();
    let server = serve_live(&t, &["--max-requests", "3", "--threads", "4"]);
    let addr = server.addr;
    let old = pid_in(&one_request(addr, "/").unwrap().1);
    // A long request in flight: the old worker must not stop accepting
    // while it finishes (it drains only once its replacement serves).
    std::thread::spawn(move || one_request(addr, "/stuck"));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut new: Option<u32> = None;
    while started.elapsed() < Duration::from_secs(15) {
        let asked = Instant::now();
        let answer = one_request(addr, "/");
        let took = asked.elapsed();
        slowest = slowest.max(took);
        let (status, body) =
            answer.unwrap_or_else(|e| panic!("{e} after {took:?}\n{}", server.logs()));
        assert_eq!(status, 200);
        let pid = pid_in(&body);
        if pid != old {
            new = Some(pid);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(new.is_some(), "never replaced\n{}", server.logs());
    // Keep asking for a while: answers keep coming, no gap (the
    // replacement may itself be recycled meanwhile).
    for _ in 0..10 {
        let asked = Instant::now();
        let (status, _) = one_request(addr, "/").unwrap();
        slowest = slowest.max(asked.elapsed());
        assert_eq!(status, 200);
    }
    assert!(
        slowest < Duration::from_secs(2),
        "a request waited {slowest:?} while the worker was recycled\n{}",
        server.logs()
    );
    assert!(
        alive(old),
        "the old worker should still be draining its long request"
    );
    let logs = server.stderr.text();
    let asked_at = logs.find("asks to be replaced (max-requests)");
    let drains_at = logs.find(&format!("pid {old} (max-requests) drains"));
    assert!(
        matches!((asked_at, drains_at), (Some(a), Some(d)) if a < d),
        "the old worker must drain only after its replacement is ready:\n{logs}"
    );
}

fn hanging_app() -> &'static str {
    r#"import time


def hang_at_import():
    time.sleep(600)


hang_at_import()


def application(environ, start_response):
    start_response("200 OK", [])
    return [b"never"]
"#
}

#[test]
fn a_reload_hanging_at_import_is_killed_after_start_timeout_and_the_next_sighup_works() {
    let t = TestDir::new();
    let server = serve_live(&t, &["-w", "1", "--start-timeout", "4"]);
    let before = server.wait_workers(1, Duration::from_secs(5));
    t.write("live.py", hanging_app());
    server.signal(Signal::SIGHUP);
    let gave_up = server.stderr.wait_for(Duration::from_secs(15), |lines| {
        lines.iter().any(|l| l.contains("reload failed"))
    });
    assert!(gave_up, "the reload never ended:\n{}", server.logs());
    let logs = server.stderr.text();
    assert!(
        logs.contains("was not ready 4s after it started (--start-timeout"),
        "{logs}"
    );
    assert!(
        logs.contains("importing `live:application`"),
        "what the worker was doing: {logs}"
    );
    assert!(
        logs.contains("hang_at_import"),
        "the Python stack of the hung import: {logs}"
    );
    assert_eq!(
        server.wait_workers(1, Duration::from_secs(5)),
        before,
        "the hung worker is gone, the old one serves"
    );
    let (status, body) = one_request(server.addr, "/").unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with("v1 "), "{body}");
    t.write("live.py", live_app("v3"));
    server.signal(Signal::SIGHUP);
    let reloaded = server.stderr.wait_for(Duration::from_secs(15), |lines| {
        lines.iter().any(|l| l.contains("draining generation"))
    });
    assert!(
        reloaded,
        "the next SIGHUP did not reload:\n{}",
        server.logs()
    );
    // The old worker may take one more connection before its SIGTERM
    // arrives (and answers it, with `Connection: close`): the new code
    // answers within moments.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut body = String::new();
    while !body.starts_with("v3 ") && Instant::now() < deadline {
        body = one_request(server.addr, "/").unwrap().1;
    }
    assert!(body.starts_with("v3 "), "{body}\n{}", server.logs());
}

#[test]
fn an_app_hanging_at_import_at_first_start_stops_the_master() {
    let t = TestDir::new();
    t.write("live.py", hanging_app());
    let mut server = t.serve(&["live:application", "--start-timeout", "2"]);
    let status = server.wait_exit(Duration::from_secs(15));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "the master kept running on a worker that never got ready\n{}",
        server.logs()
    );
    let logs = server.stderr.text();
    assert!(logs.contains("raise --start-timeout"), "{logs}");
    assert!(logs.contains("importing `live:application`"), "{logs}");
}

#[test]
fn a_segfault_names_the_requests_it_cut_and_logs_each() {
    let t = TestDir::new();
    let server = serve_live(&t, &["--threads", "2", "--access-log", "access.log"]);
    let before = server.wait_workers(1, Duration::from_secs(5));
    let addr = server.addr;
    let stuck = std::thread::spawn(move || one_request(addr, "/stuck?n=1"));
    std::thread::sleep(Duration::from_millis(500));
    let crashed = one_request(addr, "/crash?n=2");
    assert!(crashed.is_err(), "{crashed:?}");
    let named = server.stderr.wait_for(Duration::from_secs(5), |lines| {
        lines.iter().any(|l| {
            l.contains("killed by SIGSEGV")
                && l.contains("GET /crash?n=2 from 127.0.0.1:")
                && l.contains("GET /stuck?n=1 from 127.0.0.1:")
        })
    });
    assert!(named, "{}", server.logs());
    let logs = server.stderr.text();
    assert!(
        logs.contains("Fatal Python error: Segmentation fault"),
        "{logs}"
    );
    assert!(logs.contains("stuck_in_this_view"), "Python stacks: {logs}");
    assert!(stuck.join().unwrap().is_err());
    let access = t.join("access.log");
    let mut lines = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        lines = std::fs::read_to_string(&access).unwrap_or_default();
        if lines.lines().count() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for target in ["/crash?n=2", "/stuck?n=1"] {
        assert!(
            lines
                .lines()
                .any(|l| l.contains(&format!("\"GET {target} HTTP/1.1\" 500 0 "))),
            "no 500 line for {target}:\n{lines}"
        );
    }
    let after = server.wait_workers(1, Duration::from_secs(5));
    assert_ne!(after, before, "{}", server.logs());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok((200, _)) = one_request(server.addr, "/") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new worker serves\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kill_segv_during_a_slow_request_names_it_and_logs_it() {
    let t = TestDir::new();
    let server = serve_live(&t, &["--access-log", "access.log"]);
    let worker = server.wait_workers(1, Duration::from_secs(5))[0];
    let addr = server.addr;
    let stuck = std::thread::spawn(move || one_request(addr, "/stuck?kill=segv"));
    std::thread::sleep(Duration::from_millis(500));
    kill(Pid::from_raw(worker as i32), Signal::SIGSEGV).unwrap();
    let named = server.stderr.wait_for(Duration::from_secs(5), |lines| {
        lines
            .iter()
            .any(|l| l.contains("killed by SIGSEGV") && l.contains("GET /stuck?kill=segv"))
    });
    assert!(named, "{}", server.logs());
    assert!(stuck.join().unwrap().is_err());
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let text = std::fs::read_to_string(t.join("access.log")).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("/stuck?kill=segv")) {
            break line.to_string();
        }
        assert!(Instant::now() < deadline, "no access-log line: {text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(line.contains("\" 500 0 "), "{line}");
}
