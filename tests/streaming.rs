//! Large files: a 2 GiB sparse file streams in full while the worker's
//! memory stays small, and several downloads run at once.

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
