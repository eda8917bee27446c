//! The uwsgi protocol both ways, against real peers: Debian's nginx
//! (`uwsgi_pass`) in front of portico's `--uwsgi-socket` (TCP and unix),
//! malformed packets on a raw socket, and portico's uwsgi client against
//! uWSGI from PyPI and against portico's own listener. Large bodies both
//! ways in each direction.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use portico::request::{HandlerContext, Peer};
use portico::uwsgi::{self, Target, Timeouts};
use serde_json::Value;

use crate::util::raw::{connect, read_responses};
use crate::util::wsgi::{copy_fixtures, json, venv};
use crate::util::{request, Server, TestDir};

/// The fixture app's 64 KiB pattern, repeated to `n` bytes.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 256) as u8).collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(addr: SocketAddr, what: &str, logs: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {addr}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A portico application server: HTTP, uwsgi over TCP, and uwsgi on
/// `app.sock`, serving the fixture `uwsgiapp`.
pub(crate) fn backend(t: &TestDir) -> (Server, SocketAddr, PathBuf) {
    copy_fixtures(t);
    let sock = t.join("app.sock");
    let unix = format!("unix:{}", sock.display());
    let server = Server::start_in(
        t.path(),
        &[
            "uwsgiapp:application",
            "-w",
            "1",
            "-b",
            "127.0.0.1:0",
            "--uwsgi-socket",
            "127.0.0.1:0",
            "--uwsgi-socket",
            &unix,
            "--max-body-size",
            "64m",
        ],
        3,
    );
    assert_eq!(server.listeners[1].0, "uwsgi");
    let uwsgi_tcp = server.listeners[1].1;
    (server, uwsgi_tcp, sock)
}

fn marks(t: &TestDir) -> usize {
    std::fs::read_dir(t.join("marks")).map_or(0, |d| d.count())
}

/// Debian's nginx in the foreground, stopped on drop.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Nginx {
    /// `locations` is the body of the `server` block.
    fn start(dir: &Path, locations: &str) -> Nginx {
        let port = free_port();
        let dir = dir.join("nginx");
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let root =
            std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
        let user = if root { "user root;" } else { "" };
        let d = dir.display();
        let conf = format!(
            "{user}
daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 128; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body;
  uwsgi_temp_path {d}/tmp/uwsgi;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  scgi_temp_path {d}/tmp/scgi;
  client_max_body_size 64m;
  server {{
    listen 127.0.0.1:{port};
    server_name test.local;
    {locations}
  }}
}}
"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run nginx (Debian package nginx-light; scripts/test installs it)");
        let nginx = Nginx {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        wait_port(nginx.addr, "nginx", || nginx.log());
        nginx
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

fn nginx_in_front(t: &TestDir, uwsgi_tcp: SocketAddr, sock: &Path) -> Nginx {
    Nginx::start(
        t.path(),
        &format!(
            "location /tcp/ {{ include /etc/nginx/uwsgi_params; uwsgi_pass {uwsgi_tcp}; }}
    location /unix/ {{ include /etc/nginx/uwsgi_params; uwsgi_pass unix:{}; }}",
            sock.display()
        ),
    )
}

#[test]
fn nginx_uwsgi_pass_reaches_the_app_with_the_request_and_the_client_address() {
    let t = TestDir::new();
    let (server, uwsgi_tcp, sock) = backend(&t);
    let nginx = nginx_in_front(&t, uwsgi_tcp, &sock);
    for via in ["tcp", "unix"] {
        let mut s = connect(nginx.addr);
        let client = s.local_addr().unwrap();
        let body = "name=value&x=%20y";
        write!(
            s,
            "POST /{via}/echo?a=1&b=%20x HTTP/1.1\r\nHost: test.local\r\nX-Custom: hello\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let ex = read_responses(&mut s, 1, Duration::from_secs(10));
        let res = ex.first();
        assert_eq!(
            res.status,
            200,
            "{via}: {}\n{}\n{}",
            res.text(),
            nginx.log(),
            server.logs()
        );
        assert_eq!(res.header("x-app"), Some("uwsgiapp"));
        let env: Value = json(&res.body);
        assert_eq!(env["REQUEST_METHOD"], "POST", "{env}");
        assert_eq!(env["PATH_INFO"], format!("/{via}/echo"));
        assert_eq!(env["SCRIPT_NAME"], "");
        assert_eq!(env["QUERY_STRING"], "a=1&b=%20x");
        assert_eq!(env["REQUEST_URI"], format!("/{via}/echo?a=1&b=%20x"));
        assert_eq!(env["SERVER_PROTOCOL"], "HTTP/1.1");
        assert_eq!(env["CONTENT_TYPE"], "application/x-www-form-urlencoded");
        assert_eq!(env["CONTENT_LENGTH"], body.len().to_string());
        assert_eq!(env["body"], body);
        assert_eq!(env["headers"]["HTTP_X_CUSTOM"], "hello");
        assert_eq!(env["headers"]["HTTP_HOST"], "test.local");
        // The client as nginx saw it: over the unix socket portico has no
        // address of its own for the peer, and over TCP the port is the
        // client's, not nginx's.
        assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
        assert_eq!(env["REMOTE_PORT"], client.port().to_string());
        assert_eq!(env["SERVER_NAME"], "test.local");
        assert_eq!(env["SERVER_PORT"], nginx.addr.port().to_string());
        assert_eq!(env["wsgi.url_scheme"], "http");
    }
    // A HEAD answers the head only; a GET without a body has no CONTENT_LENGTH.
    let res = request(nginx.addr, "GET", "/unix/echo", &[], Vec::new());
    let env: Value = json(&res.body);
    assert_eq!(env["REQUEST_METHOD"], "GET");
    assert!(env["CONTENT_LENGTH"].is_null(), "{env}");
    let res = request(nginx.addr, "HEAD", "/tcp/echo", &[], Vec::new());
    assert_eq!(res.status, 200);
    assert!(res.body.is_empty());
}

#[test]
fn nginx_uwsgi_pass_streams_large_bodies_both_ways() {
    let t = TestDir::new();
    let (_server, uwsgi_tcp, sock) = backend(&t);
    let nginx = nginx_in_front(&t, uwsgi_tcp, &sock);
    let upload = pattern(8 << 20);
    for via in ["tcp", "unix"] {
        let res = request(
            nginx.addr,
            "POST",
            &format!("/{via}/raw"),
            &[],
            upload.clone(),
        );
        assert_eq!(res.status, 200, "{}", nginx.log());
        assert_eq!(res.body.len(), upload.len());
        assert!(res.body == upload, "{via}: echoed body differs");
        let n = 16 << 20;
        let res = request(
            nginx.addr,
            "GET",
            &format!("/{via}/big?n={n}"),
            &[],
            Vec::new(),
        );
        assert_eq!(res.status, 200);
        assert_eq!(res.body.len(), n);
        assert!(res.body == pattern(n), "{via}: streamed body differs");
    }
}

/// Writes `bytes`, optionally shuts the write side, and reads until the
/// server closes: returns what it sent back (nothing, for a refusal).
fn refused(addr: SocketAddr, bytes: &[u8], shut: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    if shut {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        // Closing with unread bytes resets the connection: closed all the same.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("connection not closed: {e}"),
    }
    got
}

fn packet(modifier1: u8, vars: &[(&str, &str)]) -> Vec<u8> {
    let vars: Vec<(String, Vec<u8>)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    uwsgi::codec::encode(modifier1, &vars).unwrap()
}

#[test]
fn malformed_packets_close_the_connection_and_reach_no_app() {
    let t = TestDir::new();
    let (server, uwsgi_tcp, _sock) = backend(&t);
    let get = [
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", "/echo"),
        ("HTTP_HOST", "h"),
    ];
    let mut truncated = packet(0, &get);
    truncated.truncate(10);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("datasize past the end", truncated, true),
        (
            "key length past the block",
            b"\x00\x04\x00\x00\x20\x00AB".to_vec(),
            false,
        ),
        (
            "value length past the block",
            b"\x00\x05\x00\x00\x01\x00A\x09\x00".to_vec(),
            false,
        ),
        ("oversize header block", b"\x00\xff\xff\x00".to_vec(), false),
        ("modifier1 not 0", packet(7, &get), false),
        (
            "no REQUEST_METHOD",
            packet(0, &[("REQUEST_URI", "/echo")]),
            false,
        ),
        (
            "CR LF in a header value",
            packet(
                0,
                &[("REQUEST_METHOD", "GET"), ("HTTP_X", "a\r\nInjected: 1")],
            ),
            false,
        ),
    ];
    let n = cases.len();
    for (what, bytes, shut) in cases {
        let got = refused(uwsgi_tcp, &bytes, shut);
        assert!(
            got.is_empty(),
            "{what}: got {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    let logged = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("uwsgi request refused"))
            .count()
            >= n
    };
    assert!(
        server.stderr.wait_for(Duration::from_secs(5), logged),
        "one log line per refusal\n{}",
        server.logs()
    );
    assert_eq!(marks(&t), 0, "a malformed packet reached the app");
    // The listener still serves a good packet, and the marker works.
    let mut s = TcpStream::connect(uwsgi_tcp).unwrap();
    s.write_all(&packet(0, &get)).unwrap();
    let ex = crate::util::raw::read_responses(&mut s, 1, Duration::from_secs(5));
    assert_eq!(ex.first().status, 200, "{}", server.logs());
    assert_eq!(marks(&t), 1);
}

/// uWSGI from PyPI serving the fixture app on a uwsgi socket.
struct UwsgiPeer {
    child: Child,
    addr: SocketAddr,
}

impl Drop for UwsgiPeer {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_uwsgi(t: &TestDir) -> UwsgiPeer {
    copy_fixtures(t);
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = t.join("uwsgi.log");
    let child = Command::new(venv().join("bin/uwsgi"))
        .args(["--uwsgi-socket", &addr.to_string()])
        .args(["--wsgi-file", "uwsgiapp.py", "--master", "--processes", "1"])
        .args(["--die-on-term", "--disable-logging"])
        .arg("--logto")
        .arg(&log)
        .current_dir(t.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run uwsgi from .venv (tests/requirements.txt)");
    let peer = UwsgiPeer { child, addr };
    wait_port(addr, "uwsgi", || {
        std::fs::read_to_string(&log).unwrap_or_default()
    });
    peer
}

/// One request through portico's uwsgi client, as the proxy sends it.
fn send(
    target: &Target,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(http::response::Parts, Vec<u8>), uwsgi::UwsgiError> {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let (parts, ()) = builder.body(()).unwrap().into_parts();
    let mount = HandlerContext {
        script_name: "",
        max_body_size: u64::MAX,
        buffering: portico::request::spool::Buffering::streaming(),
        peer: Peer::new(
            Some("10.9.8.7:4321".parse().unwrap()),
            Some("127.0.0.1:80".parse().unwrap()),
            false,
            None,
        ),
        sendfile: None,
    };
    let len = (!body.is_empty()).then_some(body.len() as u64);
    let vars = uwsgi::client::request_vars(&parts, &mount, len);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let response = uwsgi::send(
            target,
            vars,
            Full::new(Bytes::from(body)),
            &Timeouts::default(),
        )
        .await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        Ok((parts, body.to_vec()))
    })
}

/// What every uwsgi server must do with portico's client.
fn client_round_trips(target: &Target, server_logs: impl Fn() -> String) {
    let (head, body) = send(
        target,
        "POST",
        "/echo/caf%C3%A9?q=1&r=%20",
        &[
            ("host", "site.test"),
            ("x-custom", "v1"),
            ("content-type", "text/plain"),
        ],
        b"hello uwsgi".to_vec(),
    )
    .unwrap_or_else(|e| panic!("{target}: {e}\n{}", server_logs()));
    assert_eq!(head.status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(head.headers["x-app"], "uwsgiapp");
    let env = json(&body);
    assert_eq!(env["REQUEST_METHOD"], "POST", "{env}");
    assert_eq!(env["PATH_INFO"], "/echo/caf\u{c3}\u{a9}");
    assert_eq!(env["QUERY_STRING"], "q=1&r=%20");
    assert_eq!(env["REQUEST_URI"], "/echo/caf%C3%A9?q=1&r=%20");
    assert_eq!(env["CONTENT_TYPE"], "text/plain");
    assert_eq!(env["CONTENT_LENGTH"], "11");
    assert_eq!(env["body"], "hello uwsgi");
    assert_eq!(env["headers"]["HTTP_X_CUSTOM"], "v1");
    assert_eq!(env["headers"]["HTTP_HOST"], "site.test");
    assert_eq!(env["REMOTE_ADDR"], "10.9.8.7");
    assert_eq!(env["REMOTE_PORT"], "4321");

    // A reason phrase of the app's own comes through.
    let (head, _) = send(target, "GET", "/reason", &[("host", "h")], Vec::new()).unwrap();
    assert_eq!(head.status, 201);
    let reason = head.extensions.get::<hyper::ext::ReasonPhrase>();
    assert_eq!(reason.map(|r| r.as_bytes()), Some(&b"Made Here"[..]));

    // Large both ways: 8 MiB echoed, 16 MiB streamed without a length.
    let upload = pattern(8 << 20);
    let (head, body) = send(target, "PUT", "/raw", &[("host", "h")], upload.clone()).unwrap();
    assert_eq!(head.status, 200);
    assert!(body == upload, "echoed body differs ({} bytes)", body.len());
    let n = 16 << 20;
    let (head, body) = send(
        target,
        "GET",
        &format!("/big?n={n}"),
        &[("host", "h")],
        Vec::new(),
    )
    .unwrap();
    assert_eq!(head.status, 200);
    assert!(
        body.len() == n && body == pattern(n),
        "streamed body differs ({} bytes)",
        body.len()
    );

    // HEAD: the head only.
    let (head, body) = send(target, "HEAD", "/echo", &[("host", "h")], Vec::new()).unwrap();
    assert_eq!(head.status, 200);
    assert!(body.is_empty());
}

#[test]
fn client_against_uwsgi_from_pypi() {
    let t = TestDir::new();
    let peer = start_uwsgi(&t);
    let target = Target::parse(&format!("uwsgi://{}", peer.addr)).unwrap();
    client_round_trips(&target, || {
        std::fs::read_to_string(t.join("uwsgi.log")).unwrap_or_default()
    });
}

#[test]
fn client_against_portico_uwsgi_listener_tcp_and_unix() {
    let t = TestDir::new();
    let (server, uwsgi_tcp, sock) = backend(&t);
    for url in [
        format!("uwsgi://{uwsgi_tcp}"),
        format!("uwsgi+unix:{}", sock.display()),
    ] {
        let target = Target::parse(&url).unwrap();
        client_round_trips(&target, || server.logs());
    }
}

#[test]
fn client_errors_say_whether_the_app_was_reached() {
    let t = TestDir::new();
    // Nobody listens: a connect error, safe to retry elsewhere, 502.
    let target = Target::parse(&format!("uwsgi://127.0.0.1:{}", free_port())).unwrap();
    let err = send(&target, "GET", "/", &[], Vec::new()).unwrap_err();
    assert!(!err.reached_upstream(), "{err}");
    assert_eq!(err.status(), 502);
    let target = Target::parse(&format!("uwsgi+unix:{}", t.join("none.sock").display())).unwrap();
    assert!(!send(&target, "GET", "/", &[], Vec::new())
        .unwrap_err()
        .reached_upstream());
    // Something that accepts and closes without an answer: 502, reached.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
    });
    let target = Target::parse(&format!("uwsgi://{addr}")).unwrap();
    let err = send(&target, "GET", "/", &[], Vec::new()).unwrap_err();
    assert!(err.reached_upstream(), "{err}");
    assert_eq!(err.status(), 502);
    assert!(Target::parse("http://x:1").is_err());
    assert!(Target::parse("uwsgi://nohost").is_err());
}

/// examples/split/run.sh, in its own process group, stopped on drop.
struct Split {
    child: Child,
    run_dir: PathBuf,
}

impl Split {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/split/run.sh")
    }

    fn restart(&self, backend: &str) {
        let out = Command::new(Self::script())
            .args(["restart", backend])
            .env("PORTICO", crate::util::bin())
            .env("RUN_DIR", &self.run_dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        use nix::sys::signal::{killpg, Signal};
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Backends restarted by `run.sh restart` are outside the group.
        for name in ["b1", "b2"] {
            if let Ok(pid) = std::fs::read_to_string(self.run_dir.join(format!("{name}.pid"))) {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    let _ =
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
                }
            }
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// One GET on a new connection: the body of a 200, or why it failed.
fn split_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&got);
    if !text.starts_with("HTTP/1.1 200 ") {
        return Err(text.lines().next().unwrap_or("(nothing)").to_string());
    }
    Ok(text.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

/// Which backend answered a proxied GET.
fn backend_of(addr: SocketAddr, path: &str) -> Result<String, String> {
    let body = split_get(addr, path)?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    Ok(v["backend"].as_str().unwrap_or("?").to_string())
}

#[test]
fn split_example_rolling_restart_under_load_fails_no_request() {
    let t = TestDir::new();
    let run_dir = t.join("run");
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let child = Command::new(Split::script())
        .env("PORTICO", crate::util::bin())
        .env("RUN_DIR", &run_dir)
        .env("FRONT_BIND", addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let split = Split { child, run_dir };
    wait_port(addr, "the split example's front", String::new);
    let static_file = split_get(addr, "/static/hello.txt").unwrap();
    assert!(static_file.contains("front portico"), "{static_file}");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed, mut seen) =
                    (0, Vec::new(), std::collections::BTreeSet::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match backend_of(addr, &format!("/load/{i}")) {
                        Ok(backend) => {
                            ok += 1;
                            seen.insert(backend);
                        }
                        Err(e) => failed.push(e),
                    }
                }
                (ok, failed, seen)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    split.restart("b1");
    std::thread::sleep(Duration::from_millis(500));
    split.restart("b2");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed, mut seen) = (0, Vec::new(), std::collections::BTreeSet::new());
    for h in load {
        let (o, f, s) = h.join().unwrap();
        ok += o;
        failed.extend(f);
        seen.extend(s);
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests under load");
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["b1", "b2"]);
}
