//! Request buffering (on by default for WSGI and CGI routes): a slow
//! upload holds neither a Python thread nor a CGI process slot; bodies
//! reach the app or script whole, from memory or from an unnamed temporary
//! file that is given back after the request (a script's is closed, an
//! app's kept for a later body); a chunked body past
//! `max_body_size`, a stalled, malformed or abandoned one is answered
//! before the app runs; `Expect: 100-continue` is answered as portico
//! starts reading; `request_buffering = false` (or
//! `--no-request-buffering`) keeps streaming. Real binary, raw sockets.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::util::raw::{connect, read_head, read_responses, RawResponse};
use crate::util::wsgi::{copy_fixtures, serve_app};
use crate::util::{Server, TestDir};

/// A client uploading `len` bytes to `path`: `burst` bytes at once, then
/// 3 bytes every 300 ms until told to finish, then the rest at once.
struct SlowUpload {
    thread: JoinHandle<(Option<RawResponse>, Vec<u8>)>,
}

/// Shared by the uploads of a test: how many sent their burst, and how
/// many may finish (the first `finish`, by their number).
#[derive(Default)]
struct Uploads {
    bursts_sent: AtomicUsize,
    finish: AtomicUsize,
}

impl Uploads {
    fn finish_all(&self) {
        self.finish.store(usize::MAX, Ordering::SeqCst);
    }
}

impl SlowUpload {
    fn start(
        addr: SocketAddr,
        path: &str,
        len: usize,
        burst: usize,
        seed: u8,
        shared: &Arc<Uploads>,
    ) -> Self {
        let number = usize::from(seed);
        let body: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect();
        let head =
            format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len}\r\n\r\n");
        let shared = shared.clone();
        let thread = std::thread::spawn(move || {
            let mut s = connect(addr);
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&body[..burst]).unwrap();
            shared.bursts_sent.fetch_add(1, Ordering::SeqCst);
            let mut sent = burst;
            while shared.finish.load(Ordering::SeqCst) <= number && sent + 3 < len {
                std::thread::sleep(Duration::from_millis(300));
                if s.write_all(&body[sent..sent + 3]).is_err() {
                    return (None, body);
                }
                sent += 3;
            }
            if s.write_all(&body[sent..]).is_err() {
                return (None, body);
            }
            let ex = read_responses(&mut s, 1, Duration::from_secs(30));
            (ex.responses.into_iter().next(), body)
        });
        SlowUpload { thread }
    }

    /// The response and the body that was sent.
    fn finish(self) -> (Option<RawResponse>, Vec<u8>) {
        self.thread.join().unwrap()
    }
}

/// Waits (up to 20 s) until `n` uploads have sent their burst, then a
/// little longer so the server has read it.
fn wait_bursts(shared: &Uploads, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while shared.bursts_sent.load(Ordering::SeqCst) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(shared.bursts_sent.load(Ordering::SeqCst), n);
    std::thread::sleep(Duration::from_millis(700));
}

/// A GET on a new connection; its status and how long it took (status 0
/// when nothing came within 10 s).
fn timed_get(addr: SocketAddr, path: &str) -> (u16, Duration) {
    let started = Instant::now();
    let mut s = connect(addr);
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .unwrap();
    let ex = read_responses(&mut s, 1, Duration::from_secs(10));
    let status = ex.responses.first().map_or(0, |r| r.status);
    (status, started.elapsed())
}

/// Descriptors of `pid` open on files in `dir` (a spooled body's file
/// shows as `DIR/#INODE (deleted)`).
fn fds_in(pid: u32, dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

fn eventually(timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if pred() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    pred()
}

/// The test's temporary-file directory, canonical (as /proc shows it).
fn spool_dir(t: &TestDir) -> PathBuf {
    std::fs::create_dir_all(t.join("spool")).unwrap();
    t.join("spool").canonicalize().unwrap()
}

#[track_caller]
fn assert_echoed(upload: SlowUpload, server: &Server) {
    let (res, sent) = upload.finish();
    let res = res.unwrap_or_else(|| panic!("no answer to an upload\n{}", server.logs()));
    assert_eq!(res.status, 200, "{}\n{}", res.text(), server.logs());
    assert_eq!(
        res.header("x-content-length"),
        Some(sent.len().to_string().as_str())
    );
    assert!(res.body == sent, "the body did not arrive whole");
}

#[test]
fn slow_uploads_hold_no_python_thread_and_reach_the_app_whole() {
    let t = TestDir::new();
    let spool = spool_dir(&t);
    let server = serve_app(
        &t,
        "buffering:application",
        &["--threads", "2", "--body-temp-dir", "spool"],
    );
    let worker = server.wait_workers(1, Duration::from_secs(10))[0];
    let shared = Arc::new(Uploads::default());
    // Four uploads past the 64 KiB memory limit (temporary files), more
    // than the app's threads, and one under it (memory).
    let mut uploads: Vec<_> = (0..4)
        .map(|i| SlowUpload::start(server.addr, "/echo", 200 * 1024, 80_000, i, &shared))
        .collect();
    uploads.push(SlowUpload::start(
        server.addr,
        "/echo",
        10_000,
        1_000,
        9,
        &shared,
    ));
    wait_bursts(&shared, 5);
    let (status, took) = timed_get(server.addr, "/hello");
    assert_eq!(
        status,
        200,
        "a GET was not answered while slow uploads were running ({took:?})\n{}",
        server.logs()
    );
    assert!(took < Duration::from_secs(5), "the GET took {took:?}");
    assert_eq!(
        fds_in(worker, &spool),
        4,
        "the large bodies are not in temporary files"
    );
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0, "named files");
    shared.finish_all();
    for upload in uploads {
        assert_echoed(upload, &server);
    }
    // The files are kept for later bodies, which reuse them: more uploads
    // open no more of them.
    let again = Arc::new(Uploads::default());
    again.finish_all();
    for seed in 0..8 {
        let upload = SlowUpload::start(server.addr, "/echo", 100_000, 100_000, seed, &again);
        assert_echoed(upload, &server);
    }
    assert!(
        fds_in(worker, &spool) <= 4,
        "{} files",
        fds_in(worker, &spool)
    );
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0, "named files");
}

#[test]
fn slow_uploads_hold_no_cgi_slot_and_reach_the_script_whole() {
    let t = TestDir::new();
    let spool = spool_dir(&t);
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cgi-bin");
    t.write(
        "cgi.toml",
        format!(
            "workers = 1\nbody_temp_dir = \"spool\"\n[[listen]]\naddress = \"127.0.0.1:0\"\n\
             [[route]]\npath = \"/cgi-bin\"\ncgi = \"{}\"\ncgi_max_processes = 2\n",
            scripts.display()
        ),
    );
    let server = t.serve(&["-c", "cgi.toml"]);
    let worker = server.wait_workers(1, Duration::from_secs(10))[0];
    let shared = Arc::new(Uploads::default());
    let uploads: Vec<_> = (0..4)
        .map(|i| {
            SlowUpload::start(
                server.addr,
                "/cgi-bin/echo.pl",
                200 * 1024,
                80_000,
                i,
                &shared,
            )
        })
        .collect();
    wait_bursts(&shared, 4);
    let (status, took) = timed_get(server.addr, "/cgi-bin/env.py");
    assert_eq!(
        status,
        200,
        "a bystander script was not run while slow uploads were running ({took:?})\n{}",
        server.logs()
    );
    assert!(took < Duration::from_secs(5), "the bystander took {took:?}");
    assert_eq!(fds_in(worker, &spool), 4, "{}", server.logs());
    // One at a time: four scripts at once would find two slots (503).
    for (i, upload) in uploads.into_iter().enumerate() {
        shared.finish.store(i + 1, Ordering::SeqCst);
        assert_echoed(upload, &server);
    }
    assert!(
        eventually(Duration::from_secs(5), || fds_in(worker, &spool) == 0),
        "a temporary file outlived its request"
    );
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0, "named files");
}

/// A chunked POST of `len` bytes in 10,000-byte chunks; the response.
fn chunked_post(addr: SocketAddr, path: &str, len: usize) -> Option<RawResponse> {
    let mut s = connect(addr);
    s.write_all(
        format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut left = len;
    while left > 0 {
        let n = left.min(10_000);
        let framed = [format!("{n:x}\r\n").as_bytes(), &vec![b'c'; n], b"\r\n"].concat();
        if s.write_all(&framed).is_err() {
            break;
        }
        left -= n;
    }
    let _ = s.write_all(b"0\r\n\r\n");
    read_responses(&mut s, 1, Duration::from_secs(10))
        .responses
        .into_iter()
        .next()
}

#[test]
fn a_chunked_body_past_max_body_size_is_413_before_the_app_runs() {
    let t = TestDir::new();
    let server = serve_app(
        &t,
        "buffering:application",
        &["--max-body-size", "100k", "--log-level", "info"],
    );
    let res = chunked_post(server.addr, "/mark?tag=big", 150_000).expect("an answer");
    assert_eq!(res.status, 413, "{}", server.logs());
    assert_eq!(res.header("connection"), Some("close"));
    assert!(
        server
            .stderr
            .wait_for(Duration::from_secs(5), |lines| lines.iter().any(|l| l
                .contains(
                    "413 on route / from 127.0.0.1: request body without a length grew past \
                 max_body_size 102400 (raise `max_body_size` on the route or --max-body-size)"
                ))),
        "{}",
        server.logs()
    );
    // Under the limit (and past the memory limit): whole, and measured.
    let res = chunked_post(server.addr, "/mark?tag=ok", 50_000).expect("an answer");
    assert_eq!(res.status, 200, "{}", server.logs());
    assert_eq!(res.header("x-content-length"), Some("50000"));
    assert_eq!(res.body, vec![b'c'; 50_000]);
    assert!(t.join("ran-ok").exists());
    assert!(!t.join("ran-big").exists(), "the app ran for the 413");
}

#[test]
fn a_stalled_malformed_or_abandoned_body_is_answered_before_the_app_runs() {
    let t = TestDir::new();
    let server = serve_app(
        &t,
        "buffering:application",
        &["--body-timeout", "1", "--log-level", "info"],
    );
    // Stalled past the memory limit: 408 after the body timeout.
    let mut s = connect(server.addr);
    s.write_all(
        b"POST /mark?tag=stall HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n",
    )
    .unwrap();
    s.write_all(&[b's'; 30_000]).unwrap();
    let ex = read_responses(&mut s, 1, Duration::from_secs(6));
    assert_eq!(ex.first().status, 408, "{}", server.logs());
    assert_eq!(ex.first().header("connection"), Some("close"));
    // Malformed chunked framing: 400.
    let mut s = connect(server.addr);
    s.write_all(
        b"POST /mark?tag=bad HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nfirst\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .unwrap();
    let ex = read_responses(&mut s, 1, Duration::from_secs(6));
    assert_eq!(ex.first().status, 400, "{}", server.logs());
    // The client leaves mid-upload: logged 499.
    let mut s = connect(server.addr);
    s.write_all(
        b"POST /mark?tag=gone HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n",
    )
    .unwrap();
    s.write_all(&[b'g'; 30_000]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(s);
    let logged = |what: &str| {
        server.stdout.wait_for(Duration::from_secs(5), |lines| {
            lines.iter().any(|l| l.contains(what))
        })
    };
    assert!(
        logged("\"POST /mark?tag=stall HTTP/1.1\" 408"),
        "{}",
        server.logs()
    );
    assert!(
        logged("\"POST /mark?tag=bad HTTP/1.1\" 400"),
        "{}",
        server.logs()
    );
    assert!(
        logged("\"POST /mark?tag=gone HTTP/1.1\" 499"),
        "{}",
        server.logs()
    );
    for tag in ["stall", "bad", "gone"] {
        assert!(
            !t.join(&format!("ran-{tag}")).exists(),
            "the app ran for {tag}"
        );
    }
}

/// POST `path` declaring 100,000 bytes and sending "hello": the answer
/// that came before the rest was sent, and the one after.
fn first_bytes(addr: SocketAddr, path: &str) -> (Option<RawResponse>, Option<RawResponse>) {
    let mut s = connect(addr);
    s.write_all(
        format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\nhello")
            .as_bytes(),
    )
    .unwrap();
    let early = read_responses(&mut s, 1, Duration::from_secs(3))
        .responses
        .into_iter()
        .next();
    if early.is_some() {
        return (early, None);
    }
    s.write_all(&vec![b'r'; 100_000 - 5]).unwrap();
    let late = read_responses(&mut s, 1, Duration::from_secs(10))
        .responses
        .into_iter()
        .next();
    (None, late)
}

#[test]
fn request_buffering_off_keeps_streaming_per_route_or_for_the_app() {
    let t = TestDir::new();
    copy_fixtures(&t);
    t.write(
        "site.toml",
        "workers = 1\n[[listen]]\naddress = \"127.0.0.1:0\"\n\
         [[route]]\npath = \"/\"\nwsgi = \"buffering:application\"\n\
         [[route]]\npath = \"/stream\"\nwsgi = \"buffering:application\"\n\
         request_buffering = false\n",
    );
    let server = t.serve(&["-c", "site.toml"]);
    // Streaming: the app sees the first bytes before the client sent the rest.
    let (early, _) = first_bytes(server.addr, "/stream/first?n=5");
    let early = early.unwrap_or_else(|| panic!("no early answer\n{}", server.logs()));
    assert_eq!((early.status, early.text().as_str()), (200, "hello"));
    // Buffered: the app is called only once the body is in.
    let (early, late) = first_bytes(server.addr, "/first?n=5");
    assert!(early.is_none(), "the app ran before the body was in");
    let late = late.unwrap_or_else(|| panic!("no answer\n{}", server.logs()));
    assert_eq!((late.status, late.text().as_str()), (200, "hello"));

    // The flag, for the app given on the command line.
    let t2 = TestDir::new();
    let server = serve_app(&t2, "buffering:application", &["--no-request-buffering"]);
    let (early, _) = first_bytes(server.addr, "/first?n=5");
    assert_eq!(early.map(|r| r.text()), Some("hello".to_string()));
}

#[test]
fn expect_100_continue_is_answered_when_portico_starts_reading() {
    let t = TestDir::new();
    let server = serve_app(&t, "buffering:application", &[]);
    // An app that reads its body, and one that never does: the 100 goes
    // out either way (the app can no longer refuse before the upload).
    for (path, answer) in [("/mark?tag=cont", "hello"), ("/hello", "hello")] {
        let mut s = connect(server.addr);
        s.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\
                 Expect: 100-continue\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let (interim, _) = read_head(&mut s, Duration::from_secs(5));
        assert_eq!(interim.status, 100, "{path}");
        // The app has not been called: the body is not in yet.
        if path.contains("cont") {
            assert!(
                !t.join("ran-cont").exists(),
                "called before its body was in"
            );
        }
        s.write_all(b"hello").unwrap();
        let ex = read_responses(&mut s, 1, Duration::from_secs(5));
        assert_eq!(ex.first().status, 200, "{}", server.logs());
        assert_eq!(ex.first().text(), answer);
    }
    assert!(t.join("ran-cont").exists());
}

/// A body's file is given back (to be reused) when its request ends, also
/// when the app keeps the environ and leaves the body unread: ten such
/// requests in a row use one file.
#[test]
fn a_body_file_is_given_back_when_its_request_ends_even_if_the_app_keeps_the_environ() {
    let t = TestDir::new();
    let spool = spool_dir(&t);
    let server = serve_app(&t, "buffering:application", &["--body-temp-dir", "spool"]);
    let worker = server.wait_workers(1, Duration::from_secs(10))[0];
    let shared = Arc::new(Uploads::default());
    shared.finish_all();
    for seed in 0..10 {
        let upload = SlowUpload::start(server.addr, "/keep", 100_000, 100_000, seed, &shared);
        let (res, sent) = upload.finish();
        let res = res.unwrap_or_else(|| panic!("no answer\n{}", server.logs()));
        assert_eq!((res.status, &res.body[..]), (200, &sent[..10]));
    }
    assert!(
        eventually(Duration::from_secs(5), || fds_in(worker, &spool) <= 1),
        "{} temporary files held after their requests",
        fds_in(worker, &spool)
    );
}
