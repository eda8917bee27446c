//! Signals as operators and their tools send them: SIGTERM closes the
//! listeners at once (new clients are refused, not left hanging), SIGUSR1
//! reopens the logs after logrotate moved them (master and workers),
//! SIGQUIT stops gracefully, and no other signal stops the master or a
//! worker.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::wsgi::serve_app;
use crate::util::{get, TestDir};

/// The pid in a loadapp answer (`ok PID`).
fn answering_pid(addr: SocketAddr, path: &str) -> u32 {
    let resp = get(addr, path, &[]);
    assert_eq!(resp.status, 200, "{path}: {}", resp.text());
    resp.text()
        .strip_prefix("ok ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("not a loadapp answer: {}", resp.text()))
}

fn raw_signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a pid we started and a valid signal number.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}

fn state_of(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn wait_until(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    pred()
}

#[test]
fn sigterm_refuses_new_connections_at_once_while_a_worker_drains() {
    let t = TestDir::new();
    let mut s = serve_app(&t, "probe:application", &["--graceful-timeout", "20"]);
    let addr = s.addr;
    let slow = std::thread::spawn(move || get(addr, "/sleep?s=4", &[]));
    std::thread::sleep(Duration::from_millis(700));
    s.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    let mut accepted = 0;
    let refused = wait_until(Duration::from_secs(3), || match TcpStream::connect(addr) {
        Err(e) => e.kind() == ErrorKind::ConnectionRefused,
        Ok(_) => {
            accepted += 1;
            false
        }
    });
    assert!(
        refused,
        "connections still accepted (and left hanging) {:?} after SIGTERM ({accepted} accepted)\n{}",
        signalled.elapsed(),
        s.logs()
    );
    assert!(
        s.wait_exit(Duration::ZERO).is_none(),
        "the refusal must come while the worker still drains, not from the exit"
    );
    assert_eq!(slow.join().unwrap().text(), "slept", "{}", s.logs());
    let status = s.wait_exit(Duration::from_secs(10)).expect("master exits");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sigterm_removes_a_unix_socket_file_at_once() {
    let t = TestDir::new();
    let sock = t.join("app.sock");
    crate::util::wsgi::copy_fixtures(&t);
    let bind = format!("unix:{}", sock.display());
    let mut s = crate::util::Server::start_in(
        t.path(),
        &[
            "probe:application",
            "-w",
            "1",
            "-b",
            "127.0.0.1:0",
            "-b",
            &bind,
        ],
        2,
    );
    assert!(sock.exists());
    let addr = s.addr;
    let slow = std::thread::spawn(move || get(addr, "/sleep?s=3", &[]));
    std::thread::sleep(Duration::from_millis(700));
    s.signal(Signal::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(2), || !sock.exists()),
        "socket file still there while the worker drains\n{}",
        s.logs()
    );
    assert_eq!(slow.join().unwrap().text(), "slept");
    assert_eq!(
        s.wait_exit(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
}

#[test]
fn sigusr1_reopens_the_access_and_error_logs_in_the_master_and_every_worker() {
    let t = TestDir::new();
    let access = t.join("access.log");
    let error = t.join("error.log");
    let mut s = serve_app(
        &t,
        "loadapp:application",
        &[
            "-w",
            "2",
            "--access-log",
            "access.log",
            "--error-log",
            "error.log",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(10), || read(&error).contains("ready:")),
        "error log: {}\n{}",
        read(&error),
        s.logs()
    );
    let workers = s.wait_workers(2, Duration::from_secs(5));
    assert_eq!(workers.len(), 2);
    std::fs::rename(&access, t.join("access.log.1")).unwrap();
    std::fs::rename(&error, t.join("error.log.1")).unwrap();
    s.signal(Signal::SIGUSR1);
    let all_reopened = wait_until(Duration::from_secs(5), || {
        let text = read(&error);
        text.contains("SIGUSR1: logs reopened")
            && workers
                .iter()
                .all(|w| text.contains(&format!("logs reopened (pid {w})")))
    });
    assert!(
        all_reopened,
        "new error log:\n{}\nold error log:\n{}\n{}",
        read(&error),
        read(&t.join("error.log.1")),
        s.logs()
    );
    // Requests to both workers after the reopen: every line in the new file.
    let mut answered_by = std::collections::HashSet::new();
    let mut n = 0;
    while answered_by.len() < 2 && n < 200 {
        n += 1;
        answered_by.insert(answering_pid(s.addr, &format!("/?after={n}")));
    }
    assert_eq!(answered_by.len(), 2, "one worker answered everything");
    let wanted = |text: &str| (1..=n).all(|i| text.contains(&format!("GET /?after={i} ")));
    assert!(
        wait_until(Duration::from_secs(5), || wanted(&read(&access))),
        "new access log:\n{}",
        read(&access)
    );
    assert!(
        !read(&t.join("access.log.1")).contains("after="),
        "lines written to the moved file"
    );
    assert!(s.wait_exit(Duration::ZERO).is_none(), "the master died");
}

#[test]
fn signals_the_master_does_not_use_do_not_stop_it_or_its_workers() {
    let t = TestDir::new();
    let mut s = serve_app(&t, "loadapp:application", &["-w", "2"]);
    let workers = s.wait_workers(2, Duration::from_secs(5));
    assert_eq!(workers.len(), 2, "{}", s.logs());
    answering_pid(s.addr, "/");
    let to_master = [
        libc::SIGUSR2,
        libc::SIGPIPE,
        libc::SIGALRM,
        libc::SIGWINCH,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGIO,
        libc::SIGPWR,
        libc::SIGSTKFLT,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGURG,
        libc::SIGRTMIN() + 2,
        libc::SIGRTMAX(),
    ];
    for signal in to_master {
        raw_signal(s.pid(), signal);
    }
    // What `pkill -HUP portico` and friends also send to every worker.
    let to_workers = [
        libc::SIGHUP,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGPIPE,
        libc::SIGPROF,
        libc::SIGRTMIN() + 2,
    ];
    for w in &workers {
        for signal in to_workers {
            raw_signal(*w, signal);
        }
    }
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        s.wait_exit(Duration::ZERO).is_none(),
        "master died\n{}",
        s.logs()
    );
    assert_eq!(
        s.workers(),
        workers,
        "a worker died or was replaced\n{}",
        s.logs()
    );
    for w in &workers {
        assert_ne!(
            state_of(*w),
            Some('T'),
            "worker {w} stopped (SIGTTIN/SIGTTOU)"
        );
    }
    for _ in 0..10 {
        answering_pid(s.addr, "/");
    }
    assert!(
        s.stderr
            .text()
            .contains("SIGUSR2: binary upgrade is not supported yet"),
        "{}",
        s.logs()
    );
}

#[test]
fn sigquit_stops_gracefully() {
    let t = TestDir::new();
    let mut s = serve_app(&t, "probe:application", &["-w", "1"]);
    let addr = s.addr;
    let slow = std::thread::spawn(move || get(addr, "/sleep?s=1", &[]));
    std::thread::sleep(Duration::from_millis(400));
    s.signal(Signal::SIGQUIT);
    assert_eq!(slow.join().unwrap().text(), "slept", "{}", s.logs());
    let status = s.wait_exit(Duration::from_secs(10)).expect("still running");
    assert_eq!(status.code(), Some(0), "{}", s.logs());
}

#[test]
fn a_single_process_survives_sighup_and_sigusr2_and_reopens_its_logs() {
    let t = TestDir::new();
    let access = t.join("access.log");
    let s = serve_app(
        &t,
        "loadapp:application",
        &["-w", "0", "--access-log", "access.log"],
    );
    answering_pid(s.addr, "/?before");
    s.signal(Signal::SIGHUP);
    s.signal(Signal::SIGUSR2);
    std::fs::rename(&access, t.join("access.log.1")).unwrap();
    s.signal(Signal::SIGUSR1);
    assert!(
        s.stderr.wait_for(Duration::from_secs(5), |l| l
            .iter()
            .any(|l| l.contains("logs reopened"))),
        "{}",
        s.logs()
    );
    answering_pid(s.addr, "/?after");
    assert!(
        wait_until(Duration::from_secs(5), || read(&access).contains("/?after")),
        "{}",
        s.logs()
    );
    let logs = s.stderr.text();
    assert!(
        logs.contains("SIGHUP ignored: reloading needs a master"),
        "{logs}"
    );
    assert!(
        logs.contains("SIGUSR2: binary upgrade is not supported yet"),
        "{logs}"
    );
    kill(Pid::from_raw(s.pid() as i32), Signal::SIGTERM).unwrap();
}
