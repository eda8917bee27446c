//! The reverse proxy against real peers on 127.0.0.1: gunicorn, another
//! portico, a websockets echo server, and raw-socket backends that record
//! what they receive or never answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::util::raw::{connect, read_head};
use crate::util::wsgi::{json, venv};
use crate::util::{get, request, rss_kib, Captured, Server, TestDir};

/// A WSGI app for gunicorn: reports what it received, counts uploads,
/// answers with X-Accel-Redirect.
const BACKEND_APP: &str = r#"
import json, os

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/count":
        total = 0
        stream = environ["wsgi.input"]
        while True:
            chunk = stream.read(65536)
            if not chunk:
                break
            total += len(chunk)
        body = str(total).encode()
    elif path == "/accel":
        start_response("200 OK", [("X-Accel-Redirect", "/report.txt"), ("X-App", "yes"),
                                  ("Content-Type", "text/plain")])
        return [b"this body is replaced"]
    elif path == "/echo":
        body = environ["wsgi.input"].read()
    else:
        seen = {k: v for k, v in environ.items()
                if k.startswith("HTTP_") or k in ("REQUEST_METHOD", "PATH_INFO", "QUERY_STRING")}
        seen["backend"] = os.environ.get("BACKEND_ID", "?")
        body = json.dumps(seen).encode()
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]
"#;

/// A websockets echo server printing its port.
const WS_ECHO: &str = r#"
from websockets.sync.server import serve

def echo(ws):
    for message in ws:
        ws.send(message)

with serve(echo, "127.0.0.1", 0) as server:
    print("port", server.socket.getsockname()[1], flush=True)
    server.serve_forever()
"#;

/// A child process (gunicorn, python) in its own process group, killed on
/// drop; its output lines are captured.
struct Peer {
    child: Child,
    addr: SocketAddr,
    out: Arc<Captured>,
}

impl Peer {
    /// Starts `cmd` and waits for a line from which `port` extracts the port.
    fn start(mut cmd: Command, port: impl Fn(&str) -> Option<u16>) -> Peer {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().expect("start peer");
        let out = Arc::new(Captured::default());
        out.drain(child.stdout.take().unwrap());
        out.drain(child.stderr.take().unwrap());
        let found = out.wait_for(Duration::from_secs(20), |lines| {
            lines.iter().any(|l| port(l).is_some())
        });
        assert!(found, "peer did not start:\n{}", out.text());
        let p = out.lines().iter().find_map(|l| port(l)).unwrap();
        Peer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], p)),
            out,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn gunicorn(t: &TestDir, id: &str) -> Peer {
    t.write("proxy_backend.py", BACKEND_APP);
    let mut cmd = Command::new(venv().join("bin/gunicorn"));
    cmd.args(["-b", "127.0.0.1:0", "-w", "1", "--chdir"])
        .arg(t.path())
        .arg("proxy_backend:app")
        .env("BACKEND_ID", id);
    Peer::start(cmd, |l| {
        l.split("Listening at: http://127.0.0.1:")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// A portico serving `b-ID/` (with `id.txt` = ID) on its own port.
fn portico_backend(t: &TestDir, id: &str, health: bool) -> Server {
    t.write(&format!("b-{id}/id.txt"), id);
    if health {
        t.write(&format!("b-{id}/health.txt"), "ok");
    }
    t.serve(&[
        "--static",
        &format!("/=b-{id}"),
        "--access-log",
        "off",
        "--no-master",
    ])
}

/// A front portico from a config file body (a listener is added).
fn front(t: &TestDir, name: &str, config: &str) -> Server {
    let text =
        format!("{config}\n[[listen]]\naddress = \"127.0.0.1:0\"\n[log]\naccess_log = \"off\"\n");
    t.write(name, text);
    t.serve(&["-c", name])
}

/// A port nobody listens on.
fn dead_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A raw HTTP backend: records each request head, answers with `reply`
/// (or never, when it returns None).
fn raw_backend(
    reply: impl Fn(&str) -> Option<Vec<u8>> + Send + Sync + 'static,
) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let reply = Arc::new(reply);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let seen = seen2.clone();
            let reply = reply.clone();
            std::thread::spawn(move || {
                let mut conn = conn;
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match conn.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    seen.lock().unwrap().push(text.clone());
                    match reply(&text) {
                        Some(bytes) => {
                            if conn.write_all(&bytes).is_err() {
                                return;
                            }
                        }
                        None => {
                            std::thread::sleep(Duration::from_secs(30));
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn header_of<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn proxies_to_gunicorn_with_forwarding_headers_and_bodies() {
    let t = TestDir::new();
    let g = gunicorn(&t, "g1");
    let s = t.serve(&["--proxy", &format!("/={}", g.url())]);
    let r = get(s.addr, "/hello?x=1", &[("host", "site.example")]);
    assert_eq!(r.status, 200, "{}", s.logs());
    let env = json(&r.body);
    assert_eq!(env["backend"], "g1");
    assert_eq!(env["PATH_INFO"], "/hello");
    assert_eq!(env["QUERY_STRING"], "x=1");
    assert_eq!(env["HTTP_HOST"], "site.example");
    assert_eq!(env["HTTP_X_FORWARDED_FOR"], "127.0.0.1");
    assert_eq!(env["HTTP_X_FORWARDED_PROTO"], "http");
    assert_eq!(env["HTTP_X_FORWARDED_HOST"], "site.example");
    assert_eq!(
        env["HTTP_FORWARDED"],
        "for=127.0.0.1;proto=http;host=\"site.example\""
    );
    let r = request(s.addr, "POST", "/echo", &[], b"posted body".to_vec());
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"posted body");
}

#[test]
fn proxies_to_another_portico_with_ranges() {
    let t = TestDir::new();
    let b = portico_backend(&t, "p1", false);
    let s = t.serve(&["--proxy", &format!("/={}", b.url(""))]);
    let r = get(s.addr, "/id.txt", &[]);
    assert_eq!((r.status, r.text().as_str()), (200, "p1"), "{}", s.logs());
    let r = get(s.addr, "/id.txt", &[("range", "bytes=1-")]);
    assert_eq!((r.status, r.text().as_str()), (206, "1"));
    assert_eq!(get(s.addr, "/missing", &[]).status, 404);
}

#[test]
fn hop_by_hop_headers_are_stripped_both_ways() {
    let (addr, seen) = raw_backend(|_| {
        Some(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: x-secret, keep-alive\r\n\
              X-Secret: hop\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\n\
              Upgrade: h2c\r\nX-End: kept\r\n\r\nok"
                .to_vec(),
        )
    });
    let t = TestDir::new();
    let s = t.serve(&["--proxy", &format!("/=http://{addr}")]);
    let r = get(
        s.addr,
        "/",
        &[
            ("connection", "x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=9"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic eA=="),
            ("upgrade", "websocket"),
            ("x-end-to-end", "yes"),
        ],
    );
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{}", s.logs());
    for gone in [
        "x-secret",
        "keep-alive",
        "proxy-authenticate",
        "upgrade",
        "connection",
    ] {
        assert!(r.header(gone).is_none(), "{gone} reached the client");
    }
    assert_eq!(r.header("x-end"), Some("kept"));
    let head = seen.lock().unwrap()[0].clone();
    for gone in [
        "x-private",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(
            header_of(&head, gone).is_none(),
            "{gone} reached upstream:\n{head}"
        );
    }
    assert_eq!(header_of(&head, "x-end-to-end"), Some("yes"));
    assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head}");
}

#[test]
fn forwarding_headers_are_appended_only_from_trusted_peers() {
    let ok = |_: &str| Some(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec());
    let (addr, seen) = raw_backend(ok);
    let t = TestDir::new();
    let claims = [
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "public.example"),
        ("forwarded", "for=1.2.3.4;proto=https;host=public.example"),
        ("host", "internal:8080"),
    ];
    // 127.0.0.1 is trusted by default.
    let trusted = front(
        &t,
        "trusted.toml",
        &format!("[[route]]\npath = \"/\"\nproxy = \"http://{addr}\"\n"),
    );
    assert_eq!(get(trusted.addr, "/", &claims).status, 204);
    let head = seen.lock().unwrap().pop().unwrap();
    assert_eq!(
        header_of(&head, "x-forwarded-for"),
        Some("1.2.3.4, 127.0.0.1")
    );
    assert_eq!(header_of(&head, "x-forwarded-proto"), Some("https"));
    assert_eq!(header_of(&head, "x-forwarded-host"), Some("public.example"));
    assert_eq!(
        header_of(&head, "forwarded"),
        Some(
            "for=1.2.3.4;proto=https;host=public.example, \
             for=127.0.0.1;proto=https;host=\"public.example\""
        )
    );
    assert_eq!(header_of(&head, "host"), Some("internal:8080"));
    // Not trusted: earlier hops' claims are replaced; proxy_host sets Host.
    let untrusted = front(
        &t,
        "untrusted.toml",
        &format!(
            "forwarded_allow_ips = [\"10.9.9.9\"]\n[[route]]\npath = \"/\"\n\
             proxy = \"http://{addr}\"\nproxy_host = \"backend.internal\"\n"
        ),
    );
    assert_eq!(get(untrusted.addr, "/", &claims).status, 204);
    let head = seen.lock().unwrap().pop().unwrap();
    assert_eq!(header_of(&head, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header_of(&head, "x-forwarded-proto"), Some("http"));
    assert_eq!(header_of(&head, "x-forwarded-host"), Some("internal:8080"));
    assert_eq!(
        header_of(&head, "forwarded"),
        Some("for=127.0.0.1;proto=http;host=\"internal:8080\"")
    );
    assert_eq!(header_of(&head, "host"), Some("backend.internal"));
}

/// Which backend answered each of `n` requests (by `id.txt`).
fn spread(s: &Server, n: usize, headers: impl Fn(usize) -> Vec<(String, String)>) -> Vec<String> {
    (0..n)
        .map(|k| {
            let h = headers(k);
            let h: Vec<(&str, &str)> = h.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let r = get(s.addr, "/id.txt", &h);
            assert_eq!(r.status, 200, "{}", s.logs());
            r.text()
        })
        .collect()
}

fn count(ids: &[String], id: &str) -> usize {
    ids.iter().filter(|i| *i == id).count()
}

#[test]
fn balancing_spreads_requests_by_policy() {
    let t = TestDir::new();
    let backends: Vec<Server> = ["a", "b", "c"]
        .iter()
        .map(|id| portico_backend(&t, id, false))
        .collect();
    let pool = |balance: &str, weights: [u32; 3]| {
        let servers: Vec<String> = backends
            .iter()
            .zip(weights)
            .map(|(b, w)| format!("{{ url = \"{}\", weight = {w} }}", b.url("")))
            .collect();
        format!(
            "[[upstream]]\nname = \"app\"\nbalance = \"{balance}\"\nservers = [{}]\n\
             [[route]]\npath = \"/\"\nproxy = \"app\"\n",
            servers.join(", ")
        )
    };
    let none = |_| Vec::new();

    let s = front(&t, "rr.toml", &pool("round_robin", [3, 1, 1]));
    let ids = spread(&s, 50, none);
    assert_eq!(
        (count(&ids, "a"), count(&ids, "b"), count(&ids, "c")),
        (30, 10, 10),
        "{ids:?}"
    );
    drop(s);

    // Sequential requests leave every server idle: ties are spread.
    let s = front(&t, "lc.toml", &pool("least_conn", [1, 1, 1]));
    let ids = spread(&s, 60, none);
    for id in ["a", "b", "c"] {
        assert!(count(&ids, id) >= 5, "{id}: {ids:?}");
    }
    drop(s);

    // The trusted X-Forwarded-For is the client: each sticks to a server,
    // and different clients spread.
    let s = front(&t, "ip.toml", &pool("ip_hash", [1, 1, 1]));
    let xff = |k: usize| {
        vec![(
            "x-forwarded-for".to_string(),
            format!("10.0.{}.{}", k % 7, k % 13),
        )]
    };
    let first = spread(&s, 91, xff);
    let again = spread(&s, 91, xff);
    assert_eq!(first, again, "ip_hash is not sticky");
    for id in ["a", "b", "c"] {
        assert!(count(&first, id) >= 10, "{id}: {first:?}");
    }
    drop(s);

    let s = front(&t, "r2.toml", &pool("random_two", [4, 1, 1]));
    let ids = spread(&s, 120, none);
    assert!(count(&ids, "a") > count(&ids, "b"), "{ids:?}");
    assert!(count(&ids, "b") + count(&ids, "c") > 0, "{ids:?}");
}

#[test]
fn backups_serve_only_when_primaries_are_down_and_all_down_is_502() {
    let t = TestDir::new();
    let backup = portico_backend(&t, "backup", false);
    let primary = portico_backend(&t, "primary", false);
    let dead = dead_port();
    let s = front(
        &t,
        "f.toml",
        &format!(
            "[[upstream]]\nname = \"app\"\nservers = [{{ url = \"{}\" }}, \
             {{ url = \"http://{dead}\" }}, {{ url = \"{}\", backup = true }}]\n\
             [[route]]\npath = \"/\"\nproxy = \"app\"\n\
             [[route]]\npath = \"/gone\"\nproxy = \"http://{dead},http://{}\"\n",
            primary.url(""),
            backup.url(""),
            dead_port(),
        ),
    );
    let ids = spread(&s, 10, |_| Vec::new());
    assert_eq!(count(&ids, "primary"), 10, "{ids:?}");
    assert!(
        s.stderr.text().contains(&format!("http://{dead}")),
        "no log line names the dead upstream:\n{}",
        s.logs()
    );
    drop(primary);
    let ids = spread(&s, 5, |_| Vec::new());
    assert_eq!(count(&ids, "backup"), 5, "{ids:?}");

    let r = get(s.addr, "/gone/x", &[]);
    assert_eq!(r.status, 502, "{}", s.logs());
    assert!(s.stderr.wait_for(Duration::from_secs(2), |l| l
        .iter()
        .any(|l| l.contains("no server of upstream") && l.contains(&dead.to_string()))));
}

#[test]
fn a_backend_killed_mid_load_fails_no_idempotent_request() {
    let t = TestDir::new();
    let a = portico_backend(&t, "a", false);
    let b = portico_backend(&t, "b", false);
    let s = t.serve(&[
        "--proxy",
        &format!("/={},{}", a.url(""), b.url("")),
        "--access-log",
        "off",
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, done, failures) = (stop.clone(), done.clone(), failures.clone());
            let addr = s.addr;
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = get(addr, "/id.txt", &[]);
                    if r.status != 200 {
                        failures.lock().unwrap().push(r.status);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    let before = done.load(Ordering::Relaxed);
    let _ = killpg(Pid::from_raw(a.pid() as i32), Signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(1200));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let total = done.load(Ordering::Relaxed);
    assert!(
        before > 20 && total > before + 20,
        "too little load: {before}/{total}"
    );
    assert!(
        failures.lock().unwrap().is_empty(),
        "failed requests: {:?}\n{}",
        failures.lock().unwrap(),
        s.logs()
    );
    drop(b);
}

#[test]
fn a_hanging_backend_is_504_at_the_read_timeout() {
    let (addr, seen) = raw_backend(|_| None);
    let t = TestDir::new();
    let s = front(
        &t,
        "f.toml",
        &format!(
            "[[upstream]]\nname = \"slow\"\nread_timeout = \"1s\"\n\
             servers = [{{ url = \"http://{addr}\" }}]\n\
             [[route]]\npath = \"/\"\nproxy = \"slow\"\n"
        ),
    );
    let started = Instant::now();
    let r = get(s.addr, "/", &[]);
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{}", s.logs());
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(3),
        "504 after {took:?}"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "a timed-out request was retried"
    );
    assert!(s.stderr.wait_for(Duration::from_secs(2), |l| l
        .iter()
        .any(|l| l.contains("read_timeout") && l.contains(&addr.to_string()))));
}

#[test]
fn active_health_checks_take_a_failing_server_out() {
    let t = TestDir::new();
    let good = portico_backend(&t, "good", true);
    let bad = portico_backend(&t, "bad", false);
    let s = front(
        &t,
        "f.toml",
        &format!(
            "[[upstream]]\nname = \"app\"\nhealth_uri = \"/health.txt\"\nhealth_interval = \"1s\"\n\
             servers = [{{ url = \"{}\" }}, {{ url = \"{}\" }}]\n\
             [[route]]\npath = \"/\"\nproxy = \"app\"\n",
            good.url(""),
            bad.url("")
        ),
    );
    assert!(
        s.stderr
            .wait_for(Duration::from_secs(5), |l| l.iter().any(|l| l
                .contains("health check failed")
                && l.contains(&bad.addr.to_string()))),
        "{}",
        s.logs()
    );
    let ids = spread(&s, 10, |_| Vec::new());
    assert_eq!(count(&ids, "good"), 10, "{ids:?}");
    // The check passes again once the file exists.
    t.write("b-bad/health.txt", "ok");
    assert!(
        s.stderr.wait_for(Duration::from_secs(5), |l| l
            .iter()
            .any(|l| l.contains("health check passed"))),
        "{}",
        s.logs()
    );
    let ids = spread(&s, 10, |_| Vec::new());
    assert_eq!(count(&ids, "bad"), 5, "{ids:?}");
}

/// 100 MiB each way (the issue's 2 GiB scaled down to keep the suite fast;
/// memory use does not depend on the size since nothing is buffered).
#[test]
fn streams_100_mib_both_ways_with_small_front_worker_rss() {
    const SIZE: u64 = 100 << 20;
    const RSS_LIMIT_KIB: u64 = 64 * 1024;
    let t = TestDir::new();
    t.sparse("b-big/big.bin", SIZE);
    let files = t.serve(&["--static", "/=b-big", "--access-log", "off", "--no-master"]);
    let g = gunicorn(&t, "g");
    let s = front(
        &t,
        "f.toml",
        &format!(
            "[[route]]\npath = \"/\"\nproxy = \"{}\"\n\
             [[route]]\npath = \"/count\"\nproxy = \"{}\"\nmax_body_size = \"1g\"\n",
            files.url(""),
            g.url()
        ),
    );
    let worker = s.wait_workers(1, Duration::from_secs(5))[0];
    let mut peak = 0;
    // Download.
    let mut c = connect(s.addr);
    c.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (head, early) = read_head(&mut c, Duration::from_secs(10));
    assert_eq!(head.status, 200, "{}", s.logs());
    let mut got = early.len() as u64;
    let mut buf = vec![0u8; 1 << 18];
    while got < SIZE {
        let k = c.read(&mut buf).unwrap();
        assert!(k > 0, "download cut at {got}");
        got += k as u64;
        if got % (8 << 20) < k as u64 {
            peak = peak.max(rss_kib(worker).unwrap_or(0));
        }
    }
    assert_eq!(got, SIZE);
    // Upload.
    let mut c = connect(s.addr);
    c.write_all(
        format!("POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for k in 0..(SIZE >> 20) {
        c.write_all(&chunk).unwrap();
        if k % 8 == 0 {
            peak = peak.max(rss_kib(worker).unwrap_or(0));
        }
    }
    let (head, mut body) = read_head(&mut c, Duration::from_secs(30));
    assert_eq!(head.status, 200, "{}", s.logs());
    while body.len() < SIZE.to_string().len() {
        let k = c.read(&mut buf).unwrap();
        assert!(k > 0);
        body.extend_from_slice(&buf[..k]);
    }
    assert_eq!(String::from_utf8_lossy(&body), SIZE.to_string());
    assert!(peak > 0, "could not read the worker's VmRSS");
    assert!(
        peak < RSS_LIMIT_KIB,
        "front worker RSS reached {peak} KiB (limit {RSS_LIMIT_KIB} KiB)"
    );
}

/// A client WebSocket frame (masked), text opcode.
fn ws_frame(text: &str) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x81, 0x80 | text.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[test]
fn websocket_echo_through_the_proxy() {
    let t = TestDir::new();
    t.write("ws_echo.py", WS_ECHO);
    let mut cmd = Command::new(venv().join("bin/python"));
    cmd.arg(t.join("ws_echo.py"));
    let ws = Peer::start(cmd, |l| l.strip_prefix("port ")?.trim().parse().ok());
    let s = t.serve(&["--proxy", &format!("/ws={}", ws.url())]);
    let mut c = connect(s.addr);
    c.write_all(
        b"GET /ws/chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let (head, early) = read_head(&mut c, Duration::from_secs(10));
    assert_eq!(head.status, 101, "{}\n{}", s.logs(), ws.out.text());
    assert_eq!(
        head.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert!(head
        .header("upgrade")
        .unwrap()
        .eq_ignore_ascii_case("websocket"));
    assert!(early.is_empty());
    for message in ["hello", "through the proxy"] {
        c.write_all(&ws_frame(message)).unwrap();
        let mut reply = vec![0u8; 2 + message.len()];
        c.read_exact(&mut reply).unwrap();
        assert_eq!(reply[0], 0x81);
        assert_eq!(reply[1] as usize, message.len());
        assert_eq!(&reply[2..], message.as_bytes());
    }
}

#[test]
fn x_accel_redirect_from_the_upstream_serves_the_file() {
    let t = TestDir::new();
    let g = gunicorn(&t, "g");
    t.write("protected/report.txt", "the report\n");
    let s = front(
        &t,
        "f.toml",
        &format!(
            "[[route]]\npath = \"/\"\nproxy = \"{}\"\nsendfile_root = \"protected\"\n",
            g.url()
        ),
    );
    let r = get(s.addr, "/accel", &[]);
    assert_eq!(r.status, 200, "{}", s.logs());
    assert_eq!(r.text(), "the report\n");
    assert_eq!(r.header("x-app"), Some("yes"));
    assert!(r.header("x-accel-redirect").is_none());
    let r = get(s.addr, "/accel", &[("range", "bytes=4-9")]);
    assert_eq!((r.status, r.text().as_str()), (206, "report"));
    // Without sendfile_root the header reaches the client untouched.
    let plain = t.serve(&["--proxy", &format!("/={}", g.url())]);
    let r = get(plain.addr, "/accel", &[]);
    assert_eq!(r.header("x-accel-redirect"), Some("/report.txt"));
    assert_eq!(r.text(), "this body is replaced");
}

#[test]
fn upstream_config_errors_name_the_key() {
    let t = TestDir::new();
    let check = |toml: &str| {
        t.write("bad.toml", toml);
        let out = crate::util::run(t.path(), &["-c", "bad.toml", "--check-config"]);
        assert!(!out.status.success(), "{toml} was accepted");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = check("[[route]]\npath = \"/\"\nproxy = \"nope\"\n");
    assert!(
        err.contains("route[0].proxy") && err.contains("nope"),
        "{err}"
    );
    let err =
        check("[[upstream]]\nname = \"a\"\nservers = [{ url = \"http://x:1\", wieght = 2 }]\n");
    assert!(err.contains("wieght"), "{err}");
    let err = check(
        "[[upstream]]\nname = \"a\"\nbalance = \"fastest\"\nservers = [{ url = \"http://x:1\" }]\n",
    );
    assert!(err.contains("upstream[0].balance"), "{err}");
    let err = check("[[upstream]]\nname = \"a\"\nservers = [{ url = \"http://x:1/app\" }]\n");
    assert!(err.contains("upstream[0].servers[0].url"), "{err}");
}

#[test]
fn portico_fronts_portico_over_uwsgi_tcp_and_unix() {
    let t = TestDir::new();
    let (was, tcp, sock) = crate::uwsgi::backend(&t);
    let dead = dead_port();
    let s = front(
        &t,
        "f.toml",
        &format!(
            "[[upstream]]\nname = \"was\"\nservers = [{{ url = \"uwsgi://{tcp}\" }}, \
             {{ url = \"uwsgi+unix:{}\" }}, {{ url = \"uwsgi://{dead}\" }}]\n\
             [[route]]\npath = \"/\"\nproxy = \"was\"\n",
            sock.display()
        ),
    );
    for _ in 0..6 {
        let r = get(s.addr, "/echo?q=1", &[("host", "site.example")]);
        assert_eq!(r.status, 200, "{}\n{}", s.logs(), was.logs());
        let env = json(&r.body);
        assert_eq!(env["PATH_INFO"], "/echo");
        assert_eq!(env["QUERY_STRING"], "q=1");
        assert_eq!(env["headers"]["HTTP_X_FORWARDED_FOR"], "127.0.0.1");
        assert_eq!(env["headers"]["HTTP_HOST"], "site.example");
    }
    let r = request(s.addr, "POST", "/raw", &[], b"uwsgi body".to_vec());
    assert_eq!((r.status, r.body.as_slice()), (200, &b"uwsgi body"[..]));
    // A chunked body has no length for the uwsgi packet.
    let mut c = connect(s.addr);
    c.write_all(
        b"POST /raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .unwrap();
    let (head, _) = read_head(&mut c, Duration::from_secs(10));
    assert_eq!(head.status, 411, "{}", s.logs());
}

#[test]
fn an_http10_request_without_host_reaches_the_upstream_with_one() {
    let ok = |_: &str| Some(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec());
    let (addr, seen) = raw_backend(ok);
    let t = TestDir::new();
    let s = t.serve(&["--proxy", &format!("/=http://{addr}")]);
    let ex = crate::util::raw(s.addr, b"GET /x HTTP/1.0\r\n\r\n");
    assert_eq!(ex.first().status, 200, "{}", s.logs());
    let head = seen.lock().unwrap()[0].clone();
    assert!(head.starts_with("GET /x HTTP/1.1\r\n"), "{head}");
    assert_eq!(
        header_of(&head, "host"),
        Some(addr.to_string().as_str()),
        "{head}"
    );
    // With proxy_host, that one.
    let s = front(
        &t,
        "f.toml",
        &format!(
            "[[route]]\npath = \"/\"\nproxy = \"http://{addr}\"\nproxy_host = \"app.internal\"\n"
        ),
    );
    let ex = crate::util::raw(s.addr, b"GET /y HTTP/1.0\r\n\r\n");
    assert_eq!(ex.first().status, 200, "{}", s.logs());
    let head = seen.lock().unwrap()[1].clone();
    assert_eq!(header_of(&head, "host"), Some("app.internal"), "{head}");
}

#[test]
fn proxy_and_underscored_header_fields_are_not_forwarded() {
    let ok = |_: &str| Some(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec());
    let (addr, seen) = raw_backend(ok);
    let t = TestDir::new();
    let s = t.serve(&["--proxy", &format!("/=http://{addr}")]);
    let sent = [
        ("x_custom", "spoofed"),
        ("x-custom", "real"),
        ("proxy", "http://evil.example:8080"),
    ];
    let r = get(s.addr, "/", &sent);
    assert_eq!(r.status, 200, "{}", s.logs());
    let head = seen.lock().unwrap()[0].clone();
    assert_eq!(header_of(&head, "x-custom"), Some("real"), "{head}");
    assert!(header_of(&head, "x_custom").is_none(), "{head}");
    assert!(header_of(&head, "proxy").is_none(), "{head}");
    // proxy_underscore_headers lets them through; Proxy never.
    let s = front(
        &t,
        "f.toml",
        &format!(
            "[[route]]\npath = \"/\"\nproxy = \"http://{addr}\"\nproxy_underscore_headers = true\n"
        ),
    );
    let r = get(s.addr, "/", &sent);
    assert_eq!(r.status, 200, "{}", s.logs());
    let head = seen.lock().unwrap()[1].clone();
    assert_eq!(header_of(&head, "x_custom"), Some("spoofed"), "{head}");
    assert!(header_of(&head, "proxy").is_none(), "{head}");
}
