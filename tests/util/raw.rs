//! Raw-socket requests: write exact bytes, keep the write side open (hyper
//! drops requests of half-closed clients), read until the responses are
//! complete, the server closes, or a timeout.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One response parsed from the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub version: String,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What a raw exchange produced.
#[derive(Debug)]
pub struct Exchange {
    pub bytes: Vec<u8>,
    pub responses: Vec<RawResponse>,
    /// The server closed the connection (EOF or reset) within the time.
    pub closed: bool,
}

impl Exchange {
    pub fn first(&self) -> &RawResponse {
        self.responses.first().unwrap_or_else(|| {
            panic!(
                "no complete response; got {:?} (closed: {})",
                String::from_utf8_lossy(&self.bytes),
                self.closed
            )
        })
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to portico");
    s.set_nodelay(true).unwrap();
    s
}

/// Sends `request` on a new connection and reads one response.
pub fn raw(addr: SocketAddr, request: &[u8]) -> Exchange {
    let mut s = connect(addr);
    s.write_all(request).unwrap();
    read_responses(&mut s, 1, Duration::from_secs(5))
}

/// Reads until `n` complete responses arrived, the peer closed, or `timeout`.
/// Responses to HEAD must not be parsed here (no body length to trust).
pub fn read_responses(s: &mut TcpStream, n: usize, timeout: Duration) -> Exchange {
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut closed = false;
    let mut buf = [0u8; 16384];
    loop {
        let responses = parse_all(&bytes);
        if responses.len() >= n {
            return Exchange {
                bytes,
                responses,
                closed,
            };
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        s.set_read_timeout(Some((deadline - now).min(Duration::from_millis(200))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(k) => bytes.extend_from_slice(&buf[..k]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
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

/// Whether the peer closes `s` within `timeout` (reading and discarding).
pub fn closes_within(s: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Parses as many complete responses as `bytes` holds.
pub fn parse_all(mut bytes: &[u8]) -> Vec<RawResponse> {
    let mut out = Vec::new();
    while let Some((res, used)) = parse_one(bytes) {
        out.push(res);
        bytes = &bytes[used..];
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One complete response at the start of `bytes` and the bytes it used.
pub fn parse_one(bytes: &[u8]) -> Option<(RawResponse, usize)> {
    let head_end = find(bytes, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&bytes[..head_end - 4]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next()?.to_string();
    let status: u16 = parts.next()?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let rest = &bytes[head_end..];
    let no_body = status < 200 || status == 204 || status == 304;
    let (body, used) = if no_body {
        (Vec::new(), 0)
    } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        decode_chunked(rest)?
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().ok()?;
        if rest.len() < len {
            return None;
        }
        (rest[..len].to_vec(), len)
    } else {
        // Body until close: only complete once the caller saw EOF; callers
        // using such responses read with `closed`.
        (rest.to_vec(), rest.len())
    };
    Some((
        RawResponse {
            status,
            version,
            headers,
            body,
        },
        head_end + used,
    ))
}

fn decode_chunked(mut bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let start = bytes.len();
    let mut body = Vec::new();
    loop {
        let line_end = find(bytes, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&bytes[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            // Trailers, then an empty line.
            let end = find(bytes, b"\r\n\r\n")
                .map(|p| p + 4)
                .or_else(|| bytes.starts_with(b"\r\n").then_some(2))?;
            bytes = &bytes[end..];
            return Some((body, start - bytes.len()));
        }
        if bytes.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&bytes[..size]);
        bytes = &bytes[size + 2..];
    }
}

/// A GET request with `Host` and extra header lines (`"Name: value"`).
pub fn get_request(path: &str, headers: &[&str]) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Reads a response head from `s` and returns it with the body bytes that
/// came in the same reads.
pub fn read_head(s: &mut TcpStream, timeout: Duration) -> (RawResponse, Vec<u8>) {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = find(&bytes, b"\r\n\r\n") {
            let mut head_only = bytes[..end + 4].to_vec();
            // Parse the head as if it had no body.
            let rest = bytes.split_off(end + 4);
            head_only.truncate(end + 4);
            let text = String::from_utf8_lossy(&head_only).into_owned();
            let mut lines = text.trim_end().split("\r\n");
            let status_line = lines.next().unwrap();
            let mut parts = status_line.splitn(3, ' ');
            let version = parts.next().unwrap().to_string();
            let status = parts.next().unwrap().parse().unwrap();
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            return (
                RawResponse {
                    status,
                    version,
                    headers,
                    body: Vec::new(),
                },
                rest,
            );
        }
        let k = s.read(&mut buf).expect("read response head");
        assert!(k > 0, "connection closed before a response head");
        bytes.extend_from_slice(&buf[..k]);
    }
}
