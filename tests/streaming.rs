//! Large files: a 2 GiB sparse file streams in full while the worker's
//! memory stays small, several downloads run at once, and bodies sent with
//! `sendfile` are byte-exact (a file that shrinks meanwhile cuts the
//! connection).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::util::raw::{connect, get_request, read_head};
use crate::util::{rss_kib, Server, TestDir};

const GIB: u64 = 1 << 30;
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// Downloads `path` over a raw socket, discarding the body; returns the
/// byte count. Calls `tick` every 64 MiB.
pub fn download(s: &Server, path: &str, mut tick: impl FnMut(u64)) -> (u16, Option<u64>, u64) {
    let mut c = connect(s.addr);
    c.write_all(&get_request(path, &[])).unwrap();
    let (head, early) = read_head(&mut c, Duration::from_secs(10));
    let declared = head
        .header("content-length")
        .map(|v| v.parse::<u64>().unwrap());
    let mut got = early.len() as u64;
    let want = declared.unwrap_or(0);
    let mut buf = vec![0u8; 1 << 18];
    let mut next_tick = 64 << 20;
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    while got < want {
        let k = c.read(&mut buf).expect("read body");
        if k == 0 {
            break;
        }
        got += k as u64;
        if got >= next_tick {
            tick(got);
            next_tick += 64 << 20;
        }
    }
    (head.status, declared, got)
}

#[test]
fn two_gib_sparse_file_streams_in_full_with_small_worker_rss() {
    let t = TestDir::new();
    t.site();
    t.sparse("site/big.bin", 2 * GIB);
    let s = t.serve(&["--static", "/=site", "--access-log", "off"]);
    let workers = s.wait_workers(1, Duration::from_secs(5));
    assert_eq!(workers.len(), 1, "{}", s.logs());
    let worker = workers[0];
    let started = Instant::now();
    let mut peak = 0;
    let (status, declared, got) = download(&s, "/big.bin", |_| {
        peak = peak.max(rss_kib(worker).unwrap_or(0));
    });
    assert_eq!(status, 200, "{}", s.logs());
    assert_eq!(declared, Some(2 * GIB));
    assert_eq!(got, 2 * GIB, "short download");
    assert!(peak > 0, "could not read the worker's VmRSS");
    assert!(
        peak < RSS_LIMIT_KIB,
        "worker RSS reached {peak} KiB while streaming (limit {RSS_LIMIT_KIB} KiB)"
    );
    eprintln!(
        "2 GiB in {:?}, worker peak RSS {peak} KiB",
        started.elapsed()
    );
}

#[test]
fn concurrent_downloads_all_complete() {
    let t = TestDir::new();
    t.site();
    t.sparse("site/mid.bin", 48 << 20);
    let s = t.serve(&["--static", "/=site", "--access-log", "off"]);
    let worker = s.wait_workers(1, Duration::from_secs(5))[0];
    let peak = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                scope.spawn(|| {
                    download(&s, "/mid.bin", |_| {
                        let rss = rss_kib(worker).unwrap_or(0);
                        peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                    })
                })
            })
            .collect();
        for h in handles {
            let (status, declared, got) = h.join().unwrap();
            assert_eq!(status, 200);
            assert_eq!(declared, Some(48 << 20));
            assert_eq!(got, 48 << 20);
        }
    });
    let peak = peak.into_inner();
    assert!(
        peak < RSS_LIMIT_KIB,
        "worker RSS {peak} KiB with 6 downloads"
    );
    // Small requests are still answered.
    assert_eq!(crate::util::get(s.addr, "/hello.txt", &[]).status, 200);
}

#[test]
fn range_in_the_middle_of_a_big_file() {
    let t = TestDir::new();
    t.site();
    let path = t.sparse("site/big.bin", 2 * GIB);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"MARKER", GIB + 10).unwrap();
    }
    let s = t.serve(&["--static", "/=site"]);
    let range = format!("bytes={}-{}", GIB + 10, GIB + 15);
    let r = crate::util::get(s.addr, "/big.bin", &[("range", &range)]);
    assert_eq!(r.status, 206);
    assert_eq!(r.text(), "MARKER");
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes {}-{}/{}", GIB + 10, GIB + 15, 2 * GIB).as_str())
    );
}

/// One request on an open connection; reads exactly the declared body.
fn exchange(
    c: &mut std::net::TcpStream,
    method: &str,
    path: &str,
    headers: &[&str],
) -> (u16, Vec<u8>) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: t\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    c.write_all(req.as_bytes()).unwrap();
    let (head, mut body) = read_head(c, Duration::from_secs(10));
    let len: usize = match method {
        "HEAD" => 0,
        _ => head.header("content-length").unwrap().parse().unwrap(),
    };
    let mut buf = vec![0u8; 1 << 16];
    while body.len() < len {
        let k = c.read(&mut buf).expect("read body");
        assert!(
            k > 0,
            "connection closed after {} of {len} bytes",
            body.len()
        );
        body.extend_from_slice(&buf[..k]);
    }
    assert_eq!(body.len(), len, "more bytes than Content-Length");
    (head.status, body)
}

/// Bytes that differ everywhere, so a misplaced or zeroed chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

#[test]
fn files_sent_with_sendfile_are_byte_exact_on_a_kept_alive_connection() {
    let t = TestDir::new();
    t.site();
    // Past the in-memory limit, so the body comes from the file handle; an
    // odd length so the last chunk is partial.
    let big = pattern(3 * 1024 * 1024 + 7);
    t.write("site/big.bin", &big);
    // Kept in memory by the cache too (for TLS and HTTP/2).
    let mid = pattern(100 * 1024 + 3);
    t.write("site/mid.bin", &mid);
    let s = t.serve(&["--static", "/=site", "--access-log", "off"]);
    let mut c = connect(s.addr);
    for _ in 0..2 {
        let (status, body) = exchange(&mut c, "GET", "/big.bin", &[]);
        assert_eq!(status, 200, "{}", s.logs());
        assert!(body == big, "whole file differs");
        let (status, body) = exchange(&mut c, "GET", "/mid.bin", &[]);
        assert_eq!(status, 200);
        assert!(body == mid, "cached file differs");
    }
    let (status, body) = exchange(&mut c, "HEAD", "/big.bin", &[]);
    assert_eq!((status, body.len()), (200, 0));
    let (status, body) = exchange(&mut c, "GET", "/big.bin", &["Range: bytes=1048570-2097160"]);
    assert_eq!(status, 206);
    assert!(body == big[1048570..=2097160], "single range differs");
    let (status, body) = exchange(&mut c, "GET", "/big.bin", &["Range: bytes=0-3,3145720-"]);
    assert_eq!(status, 206);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("Content-Range: bytes 0-3/3145735"), "{text}");
    assert!(body.windows(4).any(|w| w == &big[..4]));
    assert!(body.windows(15).any(|w| w == &big[3145720..]));
    // The connection is still in step: a small file after all of that.
    let (status, body) = exchange(&mut c, "GET", "/hello.txt", &[]);
    assert_eq!(status, 200);
    assert_eq!(body, crate::util::fixture::HELLO.as_bytes());
    // HTTP/2 (no sendfile there) serves the same bytes.
    let h2 = crate::util::client::get_h2c(s.addr, "/big.bin");
    assert_eq!(h2.status, 200);
    assert!(h2.body == big, "h2c body differs");
    let h2 = crate::util::client::get_h2c(s.addr, "/mid.bin");
    assert!(h2.body == mid, "h2c body of the cached file differs");
}

#[test]
fn a_file_that_shrinks_mid_send_cuts_the_connection() {
    let t = TestDir::new();
    t.site();
    let path = t.write("site/shrinks.bin", pattern(64 << 20));
    let s = t.serve(&["--static", "/=site", "--access-log", "off"]);
    let mut c = connect(s.addr);
    c.write_all(&get_request("/shrinks.bin", &[])).unwrap();
    let (head, early) = read_head(&mut c, Duration::from_secs(10));
    assert_eq!(head.header("content-length"), Some("67108864"));
    // The client has not read much, so most of the file is still to send.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let mut got = early.len() as u64;
    let mut buf = vec![0u8; 1 << 16];
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k as u64,
        }
    }
    assert!(got < 64 << 20, "a shrunk file was sent as if whole");
    // The worker goes on serving.
    assert_eq!(crate::util::get(s.addr, "/hello.txt", &[]).status, 200);
}
