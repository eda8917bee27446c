//! Processes: workers are children of the master, a killed worker is
//! replaced, SIGTERM drains in-flight requests, idle connections do not hold
//! shutdown, and --no-master / -w 0 serve from one process.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::fixture::HELLO;
use crate::util::raw::{closes_within, connect, get_request, read_head, read_responses};
use crate::util::{get, TestDir};

#[test]
fn two_workers_are_children_of_the_master() {
    let t = TestDir::new();
    let s = t.serve_site(&["-w", "2"]);
    let workers = s.wait_workers(2, Duration::from_secs(5));
    assert_eq!(workers.len(), 2, "{workers:?}\n{}", s.logs());
    for w in &workers {
        // A child seen between fork and exec still has the master's command
        // line (the child resets the master's signal handlers first, which
        // takes a moment on a loaded machine): give it time to exec.
        let deadline = Instant::now() + Duration::from_secs(5);
        let cmdline = loop {
            let cmdline = std::fs::read(format!("/proc/{w}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
            if cmdline.contains("--worker") || Instant::now() > deadline {
                break cmdline;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            cmdline.contains("--worker"),
            "pid {w} is not a worker: {cmdline:?}"
        );
    }
    for _ in 0..10 {
        assert_eq!(get(s.addr, "/hello.txt", &[]).text(), HELLO);
    }
}

#[test]
fn a_killed_worker_is_replaced_and_requests_keep_working() {
    let t = TestDir::new();
    let s = t.serve_site(&["-w", "2"]);
    let before = s.wait_workers(2, Duration::from_secs(5));
    assert_eq!(before.len(), 2, "{}", s.logs());
    kill(Pid::from_raw(before[0] as i32), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let after = loop {
        let now = s.workers();
        if now.len() == 2 && !now.contains(&before[0]) {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "worker not replaced: {now:?}\n{}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(after.contains(&before[1]), "the other worker was disturbed");
    for _ in 0..20 {
        assert_eq!(get(s.addr, "/hello.txt", &[]).status, 200, "{}", s.logs());
    }
}

#[test]
fn sigterm_lets_an_in_flight_download_finish_and_the_master_exits_0() {
    let t = TestDir::new();
    t.site();
    let len: u64 = 64 << 20;
    t.sparse("site/slow.bin", len);
    let mut s = t.serve(&["--static", "/=site", "--graceful-timeout", "20"]);
    s.wait_workers(1, Duration::from_secs(5));
    let mut c = connect(s.addr);
    c.write_all(&get_request("/slow.bin", &[])).unwrap();
    let (head, early) = read_head(&mut c, Duration::from_secs(5));
    assert_eq!(head.status, 200);
    s.signal(Signal::SIGTERM);
    // A slow reader: nothing for a while, then small reads with pauses.
    std::thread::sleep(Duration::from_millis(700));
    let mut got = early.len() as u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut reads = 0;
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while got < len {
        let k = c.read(&mut buf).expect("read during drain");
        if k == 0 {
            break;
        }
        got += k as u64;
        reads += 1;
        if reads % 16 == 0 && reads < 200 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert_eq!(got, len, "download cut short by shutdown\n{}", s.logs());
    let status = s
        .wait_exit(Duration::from_secs(10))
        .expect("master still running");
    assert_eq!(status.code(), Some(0), "{}", s.logs());
}

#[test]
fn an_idle_keep_alive_connection_does_not_hold_shutdown() {
    let t = TestDir::new();
    let mut s = t.serve_site(&["--keepalive-timeout", "60", "--graceful-timeout", "30"]);
    let mut c = connect(s.addr);
    c.write_all(&get_request("/hello.txt", &[])).unwrap();
    assert_eq!(
        read_responses(&mut c, 1, Duration::from_secs(3))
            .first()
            .status,
        200
    );
    let started = Instant::now();
    s.signal(Signal::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some(),
        "an idle keep-alive connection kept the server up for 5s after SIGTERM\n{}",
        s.logs()
    );
    assert_eq!(status.unwrap().code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(closes_within(&mut c, Duration::from_secs(1)));
}

/// Opens an h2c connection, makes one request and leaves it idle. With
/// `responsive`, a runtime thread keeps answering the server's frames
/// (GOAWAY, PING) as a live client would; otherwise nothing reads them.
fn idle_h2_client(addr: std::net::SocketAddr, responsive: bool) -> impl Drop {
    let rt = if responsive {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    } else {
        crate::util::client::runtime()
    };
    let send = rt.block_on(crate::util::client::h2c_connection(addr, "/hello.txt"));
    struct Client(
        Option<tokio::runtime::Runtime>,
        #[allow(dead_code)]
        hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    );
    impl Drop for Client {
        fn drop(&mut self) {
            if let Some(rt) = self.0.take() {
                rt.shutdown_background();
            }
        }
    }
    Client(Some(rt), send)
}

#[test]
fn an_idle_h2_connection_does_not_hold_shutdown() {
    let t = TestDir::new();
    let mut s = t.serve_site(&["--keepalive-timeout", "60"]);
    let _client = idle_h2_client(s.addr, true);
    let started = Instant::now();
    s.signal(Signal::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some(),
        "an idle h2 connection held shutdown\n{}",
        s.logs()
    );
    assert_eq!(status.unwrap().code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_unresponsive_h2_client_holds_shutdown_no_longer_than_graceful_timeout() {
    let t = TestDir::new();
    let mut s = t.serve_site(&["--keepalive-timeout", "60", "--graceful-timeout", "2"]);
    let _client = idle_h2_client(s.addr, false);
    s.signal(Signal::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(6));
    assert!(
        status.is_some(),
        "shutdown not bounded by --graceful-timeout\n{}",
        s.logs()
    );
    assert_eq!(status.unwrap().code(), Some(0));
}

#[test]
fn sigterm_with_no_connections_exits_0_quickly() {
    let t = TestDir::new();
    let mut s = t.serve_site(&["-w", "2"]);
    s.wait_workers(2, Duration::from_secs(5));
    s.signal(Signal::SIGTERM);
    let status = s
        .wait_exit(Duration::from_secs(3))
        .expect("master still running");
    assert_eq!(status.code(), Some(0));
}

fn serves_from_one_process(flag: &[&str]) {
    let t = TestDir::new();
    let mut s = t.serve_site(flag);
    assert_eq!(get(s.addr, "/hello.txt", &[]).text(), HELLO, "{}", s.logs());
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        s.workers().is_empty(),
        "{flag:?} started workers: {:?}",
        s.workers()
    );
    s.signal(Signal::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(3)).expect("still running");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn no_master_serves_from_one_process() {
    serves_from_one_process(&["--no-master"]);
}

#[test]
fn zero_workers_serves_from_one_process() {
    serves_from_one_process(&["-w", "0"]);
}

/// Opens `n` connections at once, sends a GET on each, and counts the
/// answers per worker pid (loadapp answers `ok PID`).
fn spread_of_a_burst(addr: std::net::SocketAddr, n: usize) -> Vec<usize> {
    let mut conns: Vec<_> = (0..n).map(|_| connect(addr)).collect();
    for c in &mut conns {
        c.write_all(&get_request("/", &[])).unwrap();
    }
    let mut per_pid = std::collections::HashMap::<String, usize>::new();
    for c in &mut conns {
        let answer = read_responses(c, 1, Duration::from_secs(10));
        *per_pid.entry(answer.first().text()).or_default() += 1;
    }
    let mut counts: Vec<usize> = per_pid.into_values().collect();
    counts.sort();
    counts
}

#[test]
fn connections_opened_at_once_spread_across_the_workers() {
    let t = TestDir::new();
    let s = crate::util::wsgi::serve_app(
        &t,
        "loadapp:application",
        &["-w", "2", "--access-log", "off"],
    );
    assert_eq!(s.wait_workers(2, Duration::from_secs(5)).len(), 2);
    // Both workers ready.
    assert!(s.stderr.wait_for(Duration::from_secs(10), |l| l
        .iter()
        .any(|l| l.contains("ready:"))));
    let mut runs = Vec::new();
    for _ in 0..20 {
        let counts = spread_of_a_burst(s.addr, 16);
        runs.push(counts);
        std::thread::sleep(Duration::from_millis(150));
    }
    // Fair is 8 of 16. Slack for a machine busy with other work, where a
    // worker can miss its turn: one run in 20 may fall below 4, none to 0.
    let all_on_one = runs.iter().filter(|c| c.len() < 2).count();
    let lopsided = runs.iter().filter(|c| c.len() < 2 || c[0] < 4).count();
    assert!(
        all_on_one == 0 && lopsided <= 1,
        "{all_on_one} run(s) with all 16 connections on one worker, {lopsided} with fewer \
         than 4 on one: {runs:?}"
    );
}
