//! Nothing lost: a worker that drains (SIGTERM to it, SIGHUP or SIGTERM to
//! the master, `--max-requests`) answers every request that reaches it.
//! Raw sockets show what one client sees: a request on an idle keep-alive
//! connection (in hyper, parked, or TLS) shortly after the drain began is
//! answered with `Connection: close`, and so is a response in flight; an
//! idle connection is closed after the drain grace; HTTP/2 gets GOAWAY and
//! finishes its streams. Keep-alive clients (tests/util/load.rs) count
//! every request that does not get its answer while workers come and go.
//! The exact timing of the grace is in src/server/drain.rs's paused-clock
//! tests.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::util::client::{make_cert, runtime, KeyKind};
use crate::util::load::{Load, LoadSpec, Report};
use crate::util::raw::{
    closes_within, connect, get_request, parse_all, read_responses, Exchange, RawResponse,
};
use crate::util::wsgi::{copy_fixtures, serve_app};
use crate::util::{Server, TestDir};

/// When the next request comes after the drain began: well inside the
/// grace the tests give (generous, for a machine busy with other tests).
const IN_THE_GRACE: Duration = Duration::from_millis(400);
const GRACE: &[&str] = &["--drain-grace", "3"];
/// Longer than the park delay (1 s).
const PARKED: Duration = Duration::from_millis(1600);

/// Waits until the worker logged the start of its drain.
fn wait_drain_began(s: &Server) {
    let began = s.stderr.wait_for(Duration::from_secs(20), |lines| {
        lines.iter().any(|l| l.contains("shutting down"))
    });
    assert!(began, "no worker began to drain\n{}", s.logs());
}

/// SIGTERM to the only worker; returns once it began to drain.
fn drain_the_worker(s: &Server) {
    let workers = s.wait_workers(1, Duration::from_secs(5));
    assert_eq!(workers.len(), 1, "{workers:?}\n{}", s.logs());
    kill(Pid::from_raw(workers[0] as i32), Signal::SIGTERM).expect("signal the worker");
    wait_drain_began(s);
}

fn assert_ok_keep_alive(res: &RawResponse, s: &Server) {
    assert_eq!(res.status, 200, "{}", s.logs());
    assert_eq!(res.header("connection"), None, "before the drain");
}

fn assert_answered_with_close(ex: &Exchange, s: &Server) {
    assert!(
        !ex.responses.is_empty(),
        "the request in the drain grace got no answer (closed: {}, {} bytes)\n{}",
        ex.closed,
        ex.bytes.len(),
        s.logs()
    );
    let res = ex.first();
    assert_eq!(res.status, 200, "{}", s.logs());
    assert_eq!(
        res.header("connection"),
        Some("close"),
        "a response sent while draining must say Connection: close"
    );
}

fn get_on(c: &mut TcpStream, path: &str) -> Exchange {
    c.write_all(&get_request(path, &[])).unwrap();
    read_responses(c, 1, Duration::from_secs(5))
}

/// A request, the worker drains (`drain`), and `IN_THE_GRACE` later the
/// next request on the same connection, idle for `idle` before the drain.
fn next_request_in_the_grace(idle: Duration, drain: impl FnOnce(&Server)) {
    let t = TestDir::new();
    let mut args = vec!["--keepalive-timeout", "60"];
    args.extend_from_slice(GRACE);
    let s = t.serve_site(&args);
    let mut c = connect(s.addr);
    assert_ok_keep_alive(get_on(&mut c, "/hello.txt").first(), &s);
    std::thread::sleep(idle);
    drain(&s);
    std::thread::sleep(IN_THE_GRACE);
    let ex = get_on(&mut c, "/hello.txt");
    assert_answered_with_close(&ex, &s);
    assert!(
        ex.closed || closes_within(&mut c, Duration::from_secs(3)),
        "the connection stayed open after Connection: close"
    );
}

#[test]
fn a_request_on_an_idle_connection_after_sigterm_to_the_worker_is_answered_with_close() {
    next_request_in_the_grace(Duration::from_millis(100), drain_the_worker);
}

#[test]
fn a_request_on_a_parked_connection_after_sigterm_to_the_worker_is_answered_with_close() {
    next_request_in_the_grace(PARKED, drain_the_worker);
}

#[test]
fn a_request_on_an_idle_connection_after_sighup_to_the_master_is_answered_with_close() {
    next_request_in_the_grace(Duration::from_millis(100), |s| {
        s.signal(Signal::SIGHUP);
        wait_drain_began(s);
    });
}

#[test]
fn a_request_on_a_parked_connection_after_sighup_to_the_master_is_answered_with_close() {
    next_request_in_the_grace(PARKED, |s| {
        s.signal(Signal::SIGHUP);
        wait_drain_began(s);
    });
}

/// A TLS client over a blocking socket, trusting `ca`.
fn tls_connect(
    addr: std::net::SocketAddr,
    ca: &Path,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::ServerName;
    let cfg = crate::util::client::tls_client_config(ca, &[b"http/1.1"]);
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).unwrap();
    rustls::StreamOwned::new(conn, connect(addr))
}

/// One request on a TLS connection: its responses (one expected) and
/// whether the server closed.
fn tls_get(
    c: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    path: &str,
) -> Exchange {
    c.write_all(&get_request(path, &[])).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16384];
    let mut closed = false;
    c.sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while parse_all(&bytes).is_empty() && Instant::now() < deadline {
        match c.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(k) => bytes.extend_from_slice(&buf[..k]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    Exchange {
        responses: parse_all(&bytes),
        bytes,
        closed,
    }
}

#[test]
fn a_request_on_an_idle_tls_connection_after_sigterm_to_the_worker_is_answered_with_close() {
    let t = TestDir::new();
    let (cert, key) = make_cert(t.path(), KeyKind::Pkcs8);
    let mut args = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--keepalive-timeout",
        "60",
    ];
    args.extend_from_slice(GRACE);
    let s = t.serve_site(&args);
    let mut c = tls_connect(s.addr, &cert);
    assert_ok_keep_alive(tls_get(&mut c, "/hello.txt").first(), &s);
    // Idle past the park delay: TLS connections stay in hyper.
    std::thread::sleep(PARKED);
    drain_the_worker(&s);
    std::thread::sleep(IN_THE_GRACE);
    let ex = tls_get(&mut c, "/hello.txt");
    assert_answered_with_close(&ex, &s);
}

#[test]
fn a_response_in_flight_when_the_drain_begins_says_connection_close() {
    let t = TestDir::new();
    let s = serve_app(&t, "loadapp:application", &["--keepalive-timeout", "60"]);
    let mut c = connect(s.addr);
    assert_ok_keep_alive(get_on(&mut c, "/").first(), &s);
    c.write_all(&get_request("/?sleep=1.5", &[])).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drain_the_worker(&s);
    let ex = read_responses(&mut c, 1, Duration::from_secs(10));
    assert_answered_with_close(&ex, &s);
    assert!(ex.first().text().starts_with("ok "), "{:?}", ex.first());
    assert!(
        ex.closed || closes_within(&mut c, Duration::from_secs(3)),
        "the connection stayed open after Connection: close"
    );
}

#[test]
fn an_idle_connection_is_closed_after_the_drain_grace_not_at_once() {
    let t = TestDir::new();
    // The default grace: 1 s.
    let s = t.serve_site(&["--keepalive-timeout", "60"]);
    let mut c = connect(s.addr);
    assert_ok_keep_alive(get_on(&mut c, "/hello.txt").first(), &s);
    drain_the_worker(&s);
    let began = Instant::now();
    assert!(
        !closes_within(&mut c, Duration::from_millis(500)),
        "closed {:?} after the drain began, before the grace (1 s)",
        began.elapsed()
    );
    assert!(
        closes_within(&mut c, Duration::from_secs(5)),
        "still open 5.5 s after the drain began, with a 1 s grace"
    );
}

/// Checked on a unix socket: a TCP port freed by the close can be taken at
/// once by another test's server.
#[test]
fn a_draining_single_process_refuses_new_connections_at_once() {
    let t = TestDir::new();
    copy_fixtures(&t);
    let sock = t.join("http.sock");
    let unix = format!("unix:{}", sock.display());
    let args = [
        "loadapp:application",
        "-w",
        "0",
        "-b",
        "127.0.0.1:0",
        "-b",
        &unix,
    ];
    let mut s = Server::start_in(t.path(), &args, 2);
    let mut c = connect(s.addr);
    c.write_all(&get_request("/?sleep=3", &[])).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        UnixStream::connect(&sock).is_ok(),
        "the unix listener is up"
    );
    s.signal(Signal::SIGTERM);
    wait_drain_began(&s);
    // The log line comes just before the drain: allow a moment.
    let deadline = Instant::now() + Duration::from_secs(1);
    let refused = loop {
        let attempt = UnixStream::connect(&sock);
        let refused = attempt
            .as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused);
        if refused || Instant::now() > deadline {
            break attempt;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        refused.as_ref().map_err(|e| e.kind()).err(),
        Some(ErrorKind::ConnectionRefused),
        "a new connection 1 s after the drain began: {refused:?}"
    );
    assert!(
        s.wait_exit(Duration::ZERO).is_none(),
        "the process exited before its request in flight was answered"
    );
    let ex = read_responses(&mut c, 1, Duration::from_secs(10));
    assert_answered_with_close(&ex, &s);
}

#[test]
fn an_h2c_connection_gets_goaway_and_its_stream_in_flight_completes() {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let t = TestDir::new();
    let s = serve_app(&t, "loadapp:application", &[]);
    let addr = s.addr;
    let get = |path: &str| {
        http::Request::get(format!("http://{addr}{path}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    runtime().block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .expect("h2c handshake");
        let conn = tokio::spawn(conn);
        let in_flight = send.send_request(get("/?sleep=2"));
        let in_flight = tokio::spawn(async move {
            let res = in_flight.await.expect("the stream in flight was cut");
            let status = res.status();
            let body = res
                .into_body()
                .collect()
                .await
                .expect("its body")
                .to_bytes();
            (status, body)
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = tokio::task::spawn_blocking(move || {
            drain_the_worker(&s);
            s
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after_goaway = tokio::time::timeout(Duration::from_secs(5), async {
            send.ready().await?;
            send.send_request(get("/")).await
        })
        .await
        .expect("a new stream after GOAWAY neither refused nor answered");
        assert!(
            after_goaway.is_err(),
            "a new stream was served after the drain began: {after_goaway:?}"
        );
        let (status, body) = in_flight.await.unwrap();
        assert_eq!(status, 200, "{}", s.logs());
        assert!(body.starts_with(b"ok "), "{body:?}");
        let ended = tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("the connection stayed open after its last stream")
            .unwrap();
        assert!(ended.is_ok(), "not a graceful end: {ended:?}");
    });
}

/// The load tests' clients: GETs and POSTs (echoed) on keep-alive
/// connections.
fn load_on(s: &Server, clients: usize) -> Load {
    let mut spec = LoadSpec::new(s.addr, clients);
    spec.post_path = Some("/echo".into());
    let load = Load::start(spec);
    assert!(
        load.wait_more(200, Duration::from_secs(30)),
        "the load made no progress:\n{}",
        s.logs()
    );
    load
}

fn assert_nothing_lost(report: &Report, s: &Server) {
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed: {:?}\n{}",
        report.failures.len(),
        report.ok + report.failures.len(),
        &report.failures[..report.failures.len().min(10)],
        s.logs()
    );
}

#[test]
fn sighup_twice_under_keep_alive_load_loses_nothing() {
    let t = TestDir::new();
    let s = serve_app(&t, "loadapp:application", &["-w", "2"]);
    let load = load_on(&s, 16);
    for round in 1..=2 {
        let old = s.wait_workers(2, Duration::from_secs(10));
        s.signal(Signal::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = s.workers();
            if now.len() == 2 && !now.iter().any(|w| old.contains(w)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "reload {round}: old workers {old:?} still there: {now:?}\n{}",
                s.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            load.wait_more(200, Duration::from_secs(30)),
            "reload {round}: no progress\n{}",
            s.logs()
        );
    }
    let report = load.finish();
    assert_nothing_lost(&report, &s);
    assert_eq!(report.refused, 0, "a listener closed during a reload");
    assert!(
        report.closed_by_server >= 16,
        "the drained workers did not ask their clients to reconnect: {report:?}"
    );
}

/// SIGTERM under load: every request sent is answered, connections made
/// after the listeners closed are refused (no request was sent on them),
/// each client stops there, and the server exits 0 within the graceful
/// timeout.
fn sigterm_under_load(process_args: &[&str]) {
    let t = TestDir::new();
    let mut args = process_args.to_vec();
    args.extend(["--graceful-timeout", "10"]);
    let mut s = serve_app(&t, "loadapp:application", &args);
    let load = load_on(&s, 16);
    let signalled = Instant::now();
    s.signal(Signal::SIGTERM);
    let status = s.wait_exit(Duration::from_secs(20));
    let took = signalled.elapsed();
    assert!(
        load.wait_stopped(Duration::from_secs(20)),
        "clients still running after the server exited"
    );
    let report = load.finish();
    let status = status.unwrap_or_else(|| panic!("still running 20 s after SIGTERM\n{}", s.logs()));
    assert_eq!(status.code(), Some(0), "{}", s.logs());
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
    assert_nothing_lost(&report, &s);
    assert_eq!(
        report.refused, 16,
        "every client stops at a refused connection: {report:?}"
    );
}

#[test]
fn sigterm_to_a_single_process_under_load_loses_no_request() {
    sigterm_under_load(&["-w", "0"]);
}

/// Needs the master to close its own copy of the listeners on SIGTERM
/// (issue 12 item 3, the master's side): until then the kernel accepts
/// connections that nobody will serve.
#[test]
fn sigterm_to_the_master_under_load_loses_no_request() {
    sigterm_under_load(&["-w", "2"]);
}

#[test]
fn max_requests_in_a_single_process_drains_without_losing_a_request() {
    let t = TestDir::new();
    let mut s = serve_app(
        &t,
        "loadapp:application",
        &["-w", "0", "--max-requests", "600"],
    );
    let mut spec = LoadSpec::new(s.addr, 8);
    spec.post_path = Some("/echo".into());
    let load = Load::start(spec);
    let status = s.wait_exit(Duration::from_secs(60));
    assert!(
        load.wait_stopped(Duration::from_secs(20)),
        "clients still running after the server exited"
    );
    let report = load.finish();
    let status = status.unwrap_or_else(|| panic!("not recycled after 600 requests\n{}", s.logs()));
    assert_eq!(status.code(), Some(0), "{}", s.logs());
    assert_nothing_lost(&report, &s);
    assert!(report.ok >= 600, "{report:?}");
}

#[test]
fn max_requests_churn_with_two_workers_loses_nothing() {
    let t = TestDir::new();
    let s = serve_app(
        &t,
        "loadapp:application",
        &["-w", "2", "--max-requests", "300", "--access-log", "off"],
    );
    let load = load_on(&s, 16);
    // Six recycles: every worker replaced three times while the clients
    // keep their connections busy.
    let stopped = |lines: &[String]| lines.iter().filter(|l| l.contains(") stopped")).count();
    let churned = s
        .stderr
        .wait_for(Duration::from_secs(120), |lines| stopped(lines) >= 6);
    let report = load.finish();
    assert!(churned, "fewer than 6 recycles\n{}", s.logs());
    assert_nothing_lost(&report, &s);
    assert!(report.ok >= 1200, "{report:?}");
}

#[test]
fn keep_alive_load_without_signals_loses_nothing() {
    let t = TestDir::new();
    let s = serve_app(&t, "loadapp:application", &["-w", "2"]);
    let mut spec = LoadSpec::new(s.addr, 4);
    spec.post_path = Some("/echo".into());
    let load = Load::start(spec);
    assert!(
        load.wait_more(200, Duration::from_secs(20)),
        "the load made no progress:\n{}",
        s.logs()
    );
    let report = load.finish();
    assert_nothing_lost(&report, &s);
    assert_eq!(
        report.connections, 4,
        "keep-alive: one connection per client"
    );
}
