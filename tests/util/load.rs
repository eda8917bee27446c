//! A keep-alive load generator for the "nothing lost" tests.
//!
//! Each client thread keeps one connection open and sends requests on it in
//! turn, alternating a GET and a POST with a body, and checks every answer.
//! It behaves as wrk and browsers do: after a response that says
//! `Connection: close` it opens a new connection before its next request
//! (that is how a draining server moves its clients); every other way a
//! request can end without its answer is a failure, kept with its reason:
//! refused or reset connections, a connection closed before the response
//! was complete, no answer within the timeout, an unexpected status, or a
//! POST whose echo is not the body that was sent.
//!
//! A refused connection is not a lost request (nothing was sent): the
//! server's listeners are closed, as they are once it stops. The report
//! counts those apart, and the client that met one stops, as the server is
//! gone ([`Load::wait_stopped`]).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::raw::parse_one;

/// What the clients request.
#[derive(Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    /// Client threads, each with its own keep-alive connection.
    pub clients: usize,
    /// Path of the GETs; any 2xx answer is a success.
    pub get_path: String,
    /// Path of the POSTs, whose answer must be the request body (an echo
    /// app); `None` sends GETs only.
    pub post_path: Option<String>,
    /// Bytes in each POST body.
    pub body_size: usize,
    /// Pause between two requests of one client (zero: back to back).
    pub pause: Duration,
    /// A request without its complete answer after this long is a failure.
    pub timeout: Duration,
}

impl LoadSpec {
    pub fn new(addr: SocketAddr, clients: usize) -> Self {
        LoadSpec {
            addr,
            clients,
            get_path: "/".into(),
            post_path: None,
            body_size: 1000,
            pause: Duration::ZERO,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Running clients; [`Load::finish`] stops them and reports.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    /// Clients still sending.
    running: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<ClientReport>>,
}

/// What the clients saw, in all.
#[derive(Debug, Default)]
pub struct Report {
    /// Requests answered as expected.
    pub ok: usize,
    /// Every request that was not, with its reason.
    pub failures: Vec<String>,
    /// Connections the server ended with `Connection: close` (no failure).
    pub closed_by_server: usize,
    /// Connections opened.
    pub connections: usize,
    /// Connections refused: no request was sent on them (no failure; each
    /// stopped its client).
    pub refused: usize,
}

#[derive(Default)]
struct ClientReport {
    failures: Vec<String>,
    closed_by_server: usize,
    connections: usize,
    refused: usize,
}

impl Load {
    pub fn start(spec: LoadSpec) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(spec.clients));
        let threads = (0..spec.clients)
            .map(|id| {
                let (spec, stop, ok) = (spec.clone(), stop.clone(), ok.clone());
                let running = running.clone();
                std::thread::spawn(move || {
                    let report = client(id, &spec, &stop, &ok);
                    running.fetch_sub(1, Ordering::Relaxed);
                    report
                })
            })
            .collect();
        Load {
            stop,
            ok,
            running,
            threads,
        }
    }

    /// Waits until every client has stopped by itself (each stops when its
    /// connection is refused: the server is gone), or `timeout`; true if
    /// they all did.
    pub fn wait_stopped(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.running.load(Ordering::Relaxed) > 0 {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Successful requests so far.
    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `n` more requests than now have succeeded, or `timeout`;
    /// true if they did.
    pub fn wait_more(&self, n: usize, timeout: Duration) -> bool {
        let target = self.ok() + n;
        let deadline = Instant::now() + timeout;
        while self.ok() < target {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Stops the clients (each finishes the request it is in) and reports.
    pub fn finish(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut report = Report {
            ok: 0,
            ..Report::default()
        };
        for thread in self.threads {
            let client = thread.join().expect("load client thread panicked");
            report.failures.extend(client.failures);
            report.closed_by_server += client.closed_by_server;
            report.connections += client.connections;
            report.refused += client.refused;
        }
        report.ok = self.ok.load(Ordering::Relaxed);
        report
    }
}

/// The body of the `n`th POST of client `id`: recognisable, so an answer
/// meant for another request cannot pass.
fn post_body(id: usize, n: usize, size: usize) -> Vec<u8> {
    let stamp = format!("client {id} request {n};");
    stamp.bytes().cycle().take(size.max(stamp.len())).collect()
}

fn client(id: usize, spec: &LoadSpec, stop: &AtomicBool, ok: &AtomicUsize) -> ClientReport {
    let mut report = ClientReport::default();
    let mut conn: Option<TcpStream> = None;
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let post = spec.post_path.as_ref().filter(|_| n.is_multiple_of(2));
        let (request, expected) = match post {
            Some(path) => {
                let body = post_body(id, n, spec.body_size);
                let mut req = format!(
                    "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                req.extend_from_slice(&body);
                (req, Some(body))
            }
            None => (
                format!("GET {} HTTP/1.1\r\nHost: localhost\r\n\r\n", spec.get_path).into_bytes(),
                None,
            ),
        };
        let socket = match conn.take() {
            Some(s) => s,
            None => match TcpStream::connect(spec.addr) {
                Ok(s) => {
                    report.connections += 1;
                    let _ = s.set_nodelay(true);
                    s
                }
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    report.refused += 1;
                    break;
                }
                Err(e) => {
                    report.failures.push(format!("connect: {e}"));
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            },
        };
        match exchange(socket, &request, spec.timeout) {
            Ok((status, body, close, socket)) => {
                let good_body = expected.as_ref().is_none_or(|sent| *sent == body);
                if (200..300).contains(&status) && good_body {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else if !good_body {
                    report.failures.push(format!(
                        "{status}: POST answer is not the body sent ({} bytes back)",
                        body.len()
                    ));
                } else {
                    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                    report.failures.push(format!("status {status}: {text}"));
                }
                if close {
                    report.closed_by_server += 1;
                } else {
                    conn = Some(socket);
                }
            }
            Err(reason) => report.failures.push(reason),
        }
        if !spec.pause.is_zero() {
            std::thread::sleep(spec.pause);
        }
    }
    report
}

/// Sends one request and reads its response: (status, body, the server
/// asked to close, the socket).
fn exchange(
    mut s: TcpStream,
    request: &[u8],
    timeout: Duration,
) -> Result<(u16, Vec<u8>, bool, TcpStream), String> {
    s.write_all(request)
        .map_err(|e| format!("write request: {e}"))?;
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        if let Some((res, used)) = parse_one(&bytes) {
            // A body without a length runs to the close; never ours.
            let framed = res.header("content-length").is_some()
                || res.header("transfer-encoding").is_some()
                || matches!(res.status, 100..=199 | 204 | 304);
            if framed && res.status >= 200 {
                if used < bytes.len() {
                    return Err(format!(
                        "{} bytes after the answer (status {})",
                        bytes.len() - used,
                        res.status
                    ));
                }
                let close = res
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"));
                return Ok((res.status, res.body, close, s));
            }
            if res.status < 200 {
                // An interim answer (100 Continue): the real one follows.
                bytes.drain(..used);
                continue;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "no complete answer within {timeout:?} ({} bytes)",
                bytes.len()
            ));
        }
        s.set_read_timeout(Some((deadline - now).min(Duration::from_millis(200))))
            .map_err(|e| format!("socket: {e}"))?;
        match s.read(&mut buf) {
            Ok(0) => {
                return Err(format!(
                    "connection closed after {} bytes of the answer",
                    bytes.len()
                ))
            }
            Ok(k) => bytes.extend_from_slice(&buf[..k]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read answer: {e} (after {} bytes)", bytes.len())),
        }
    }
}
