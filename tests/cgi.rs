//! CGI gateway (issue #4): real scripts in sh, bash, Python and Perl from
//! tests/fixtures/cgi-bin, run by the real binary. Environment, bodies,
//! responses and redirects, streaming, nph, timeouts and process cleanup,
//! failures, hostile headers, and the process limit.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::client::get_h2c;
use crate::util::raw::{closes_within, connect, get_request, read_head, read_responses};
use crate::util::{get, raw, request, Server, TestDir};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cgi-bin")
}

/// Static files at `/` (site/hello.txt) and the fixture scripts at
/// `/cgi-bin`, with short limits so tests are quick.
fn serve(t: &TestDir, extra: &str) -> Server {
    t.write("site/hello.txt", "hello\n");
    let config = format!(
        r#"
workers = 1
[[listen]]
address = "127.0.0.1:0"
[[route]]
path = "/"
static = "site"
[[route]]
path = "/cgi-bin"
cgi = "{}"
cgi_index = "index.sh"
cgi_timeout = "2s"
max_body_size = "1k"
{extra}
"#,
        fixtures().display()
    );
    t.write("site.toml", config);
    t.serve(&["-c", "site.toml"])
}

/// `NAME=value` lines → map.
fn env_lines(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// Pids whose command line contains `pattern` (`pgrep -f`).
fn pgrep(pattern: &str) -> Vec<String> {
    let out = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// Waits until no process matches `pattern`; false if some still do.
fn gone_within(pattern: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if pgrep(pattern).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    pgrep(pattern).is_empty()
}

/// Zombie children of `pid`.
fn zombies_of(pid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map_or("", |(_, r)| r)
                .split_whitespace()
                .collect();
            fields.first() == Some(&"Z") && fields.get(1) == Some(&pid.to_string().as_str())
        })
        .count()
}

#[test]
fn environment_is_exactly_the_rfc_3875_list() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let r = get(
        s.addr,
        "/cgi-bin/env.sh/a%20b/c?x=1&y=%2F",
        &[("host", "example.test:8080"), ("x-custom", "v")],
    );
    assert_eq!(r.status, 200, "{}", s.logs());
    let env = env_lines(&r.text());
    let expected = [
        "DOCUMENT_ROOT",
        "GATEWAY_INTERFACE",
        "HTTP_HOST",
        "HTTP_X_CUSTOM",
        "PATH",
        "PATH_INFO",
        "PATH_TRANSLATED",
        "QUERY_STRING",
        "REMOTE_ADDR",
        "REMOTE_PORT",
        "REQUEST_METHOD",
        "REQUEST_URI",
        "SCRIPT_FILENAME",
        "SCRIPT_NAME",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "SERVER_SOFTWARE",
    ];
    // sh itself adds PWD; nothing else may appear (no HOME, no CARGO_*).
    let names: Vec<&str> = env
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "PWD")
        .collect();
    assert_eq!(names, expected, "{env:#?}");
    let dir = fixtures().canonicalize().unwrap();
    let want = [
        ("GATEWAY_INTERFACE", "CGI/1.1".to_string()),
        ("REQUEST_METHOD", "GET".into()),
        ("SCRIPT_NAME", "/cgi-bin/env.sh".into()),
        ("PATH_INFO", "/a b/c".into()),
        ("PATH_TRANSLATED", format!("{}/a b/c", dir.display())),
        ("QUERY_STRING", "x=1&y=%2F".into()),
        ("REQUEST_URI", "/cgi-bin/env.sh/a%20b/c?x=1&y=%2F".into()),
        ("SCRIPT_FILENAME", format!("{}/env.sh", dir.display())),
        ("DOCUMENT_ROOT", dir.display().to_string()),
        ("SERVER_NAME", "example.test".into()),
        ("SERVER_PORT", s.addr.port().to_string()),
        ("SERVER_PROTOCOL", "HTTP/1.1".into()),
        ("REMOTE_ADDR", "127.0.0.1".into()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
        ("HTTP_X_CUSTOM", "v".into()),
    ];
    for (name, value) in want {
        assert_eq!(env.get(name), Some(&value), "{name}");
    }
    assert!(env["REMOTE_PORT"].parse::<u16>().is_ok());
}

#[test]
fn python_script_gets_path_info_query_cwd_and_no_arguments() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let r = get(s.addr, "/cgi-bin/env.py", &[]);
    assert_eq!(r.status, 200, "{}", s.logs());
    let v = json(&r.body);
    assert_eq!(v["PATH_INFO"], "");
    assert_eq!(v["QUERY_STRING"], "");
    assert!(v.get("PATH_TRANSLATED").is_none(), "only with PATH_INFO");
    assert!(v.get("CONTENT_LENGTH").is_none(), "only with a body");
    assert_eq!(
        v["_cwd"],
        fixtures().canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(v["_argv"], serde_json::json!([]));
    // Trailing slash and dot-segments in PATH_INFO.
    let r = get(s.addr, "/cgi-bin/env.py/x/.well-known/", &[]);
    assert_eq!(json(&r.body)["PATH_INFO"], "/x/.well-known/");
}

#[test]
fn http2_request_reaches_the_script() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let r = get_h2c(s.addr, "/cgi-bin/env.py?h2=1");
    assert_eq!(r.status, 200, "{}", s.logs());
    let v = json(&r.body);
    assert_eq!(v["SERVER_PROTOCOL"], "HTTP/2.0");
    assert_eq!(v["QUERY_STRING"], "h2=1");
    assert_eq!(v["HTTP_HOST"], s.addr.to_string());
}

#[test]
fn post_with_content_length_is_streamed_to_stdin() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let r = request(
        s.addr,
        "POST",
        "/cgi-bin/echo.pl",
        &[("content-type", "text/plain")],
        b"hello, perl".to_vec(),
    );
    assert_eq!(r.status, 200, "{}", s.logs());
    assert_eq!(r.header("x-content-length"), Some("11"));
    assert_eq!(r.header("x-content-type"), Some("text/plain"));
    assert_eq!(r.header("x-method"), Some("POST"));
    assert_eq!(r.body, b"hello, perl");
}

#[test]
fn chunked_post_is_buffered_and_gets_content_length() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let req = b"POST /cgi-bin/echo.pl HTTP/1.1\r\nHost: localhost\r\n\
                Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let ex = raw(s.addr, req);
    let r = ex.first();
    assert_eq!(r.status, 200, "{}", s.logs());
    assert_eq!(r.header("x-content-length"), Some("11"));
    assert_eq!(r.body, b"hello world");
}

#[test]
fn chunked_post_over_the_body_limit_is_413() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let chunk = "x".repeat(800);
    let req = format!(
        "POST /cgi-bin/echo.pl HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
         320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
    );
    let ex = raw(s.addr, req.as_bytes());
    assert_eq!(ex.first().status, 413, "{}", s.logs());
    assert_eq!(ex.first().header("connection"), Some("close"));
}

#[test]
fn status_header_sets_status_and_reason() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let ex = raw(s.addr, &get_request("/cgi-bin/status.sh", &[]));
    let r = ex.first();
    assert_eq!(r.status, 418);
    assert!(ex.bytes.starts_with(b"HTTP/1.1 418 Short And Stout\r\n"));
    assert_eq!(r.header("x-script"), Some("status"));
    assert_eq!(r.header("status"), None);
    assert_eq!(r.text(), "I'm a teapot\n");
}

#[test]
fn local_redirect_is_served_internally_as_a_get() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let r = request(
        s.addr,
        "POST",
        "/cgi-bin/local-redirect.sh",
        &[("content-type", "text/plain")],
        b"body".to_vec(),
    );
    assert_eq!(r.status, 200, "{}", s.logs());
    let v = json(&r.body);
    assert_eq!(v["SCRIPT_NAME"], "/cgi-bin/env.py");
    assert_eq!(v["PATH_INFO"], "/after");
    assert_eq!(v["QUERY_STRING"], "from=redirect");
    assert_eq!(v["REQUEST_METHOD"], "GET");
    assert!(v.get("CONTENT_LENGTH").is_none());
    assert!(v.get("CONTENT_TYPE").is_none());
    assert_eq!(v["_stdin"], "");
}

#[test]
fn local_redirect_outside_the_route_becomes_a_302() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let r = get(s.addr, "/cgi-bin/redirect-static.sh", &[]);
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/hello.txt"));
}

#[test]
fn local_redirect_loop_stops_after_ten_hops() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let r = get(s.addr, "/cgi-bin/redirect-loop.sh", &[]);
    assert_eq!(r.status, 500);
    assert!(
        s.stderr.wait_for(Duration::from_secs(2), |l| l
            .iter()
            .any(|l| l.contains("more than 10 local redirects"))),
        "{}",
        s.logs()
    );
}

#[test]
fn client_redirects_absolute_and_with_document() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let r = get(s.addr, "/cgi-bin/client-redirect.sh", &[]);
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("https://example.com/elsewhere"));
    let r = get(s.addr, "/cgi-bin/redirect-doc.pl", &[]);
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://example.com/new"));
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert!(r.text().contains("moved"));
}

#[test]
fn slow_streamer_chunks_arrive_as_written() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let mut c = connect(s.addr);
    let started = Instant::now();
    c.write_all(&get_request("/cgi-bin/slow.py", &[])).unwrap();
    let (head, mut body) = read_head(&mut c, Duration::from_secs(5));
    assert_eq!(head.status, 200);
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut first_at = None;
    let mut buf = [0u8; 1024];
    while !body.ends_with(b"0\r\n\r\n") {
        if first_at.is_none() && body.windows(7).any(|w| w == b"chunk 0") {
            first_at = Some(started.elapsed());
        }
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed early");
        body.extend_from_slice(&buf[..n]);
    }
    let total = started.elapsed();
    let first_at = first_at.expect("chunk 0 arrived alone");
    assert!(total >= Duration::from_millis(1200), "{total:?}");
    assert!(
        first_at + Duration::from_millis(900) < total,
        "first chunk at {first_at:?}, end at {total:?}: output was buffered"
    );
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("chunk 4"), "{text}");
}

#[test]
fn large_output_streams_in_full() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let r = get(s.addr, "/cgi-bin/big-body.py", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 1 << 20);
}

#[test]
fn nph_script_output_passes_through_and_connection_closes() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let mut c = connect(s.addr);
    c.write_all(&get_request("/cgi-bin/nph-raw.sh", &[]))
        .unwrap();
    let ex = read_responses(&mut c, 1, Duration::from_secs(5));
    let r = ex.first();
    assert!(
        ex.bytes.starts_with(b"HTTP/1.1 207 Quite Multi\r\n"),
        "{:?}",
        ex.bytes
    );
    assert_eq!(r.header("x-nph"), Some("yes"));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.text(), "raw body\n");
    assert!(closes_within(&mut c, Duration::from_secs(2)));
}

#[test]
fn hanging_script_is_killed_at_the_timeout_with_its_children() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let started = Instant::now();
    let r = get(s.addr, "/cgi-bin/hang-cgi-test.sh", &[]);
    assert_eq!(r.status, 504, "{}", s.logs());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        gone_within("hang-cgi-test.sh", Duration::from_secs(2)),
        "script left behind"
    );
    assert!(
        gone_within("sleep 4242", Duration::from_secs(2)),
        "its child left behind"
    );
    let worker = s.wait_workers(1, Duration::from_secs(2))[0];
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(zombies_of(worker), 0, "zombie CGI processes");
}

#[test]
fn silence_after_the_head_cuts_the_connection() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let mut c = connect(s.addr);
    c.write_all(&get_request("/cgi-bin/hang-after-head.sh", &[]))
        .unwrap();
    let (head, _) = read_head(&mut c, Duration::from_secs(5));
    assert_eq!(head.status, 200);
    let mut rest = Vec::new();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.read_to_end(&mut rest);
    // Cut: the last chunk never came.
    assert!(
        !rest.ends_with(b"0\r\n\r\n"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(
        gone_within("sleep 4243", Duration::from_secs(2)),
        "script left behind"
    );
}

#[test]
fn client_disconnect_kills_the_script() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let mut c = connect(s.addr);
    c.write_all(&get_request("/cgi-bin/hang-disconnect.sh", &[]))
        .unwrap();
    let (head, _) = read_head(&mut c, Duration::from_secs(5));
    assert_eq!(head.status, 200);
    assert!(!pgrep("sleep 4244").is_empty(), "script not running");
    drop(c);
    // Well before the 2 s timeout.
    assert!(
        gone_within("sleep 4244", Duration::from_millis(1500)),
        "{}",
        s.logs()
    );
}

#[test]
fn script_dying_before_its_head_is_502_and_stderr_is_logged() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let r = get(s.addr, "/cgi-bin/dies-early.sh", &[]);
    assert_eq!(r.status, 502);
    let logged = s.stderr.wait_for(Duration::from_secs(2), |lines| {
        lines.iter().any(|l| {
            l.contains("dying on purpose")
                && l.contains("dies-early.sh")
                && l.contains("GET /cgi-bin/dies-early.sh")
        })
    });
    assert!(logged, "{}", s.logs());
}

#[test]
fn stderr_lines_are_tagged_with_script_and_request() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let r = get(s.addr, "/cgi-bin/stderr.sh?q=1", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok\n");
    let logged = s.stderr.wait_for(Duration::from_secs(2), |lines| {
        lines.iter().any(|l| {
            l.contains("WARN")
                && l.contains("unique-marker-42")
                && l.contains("stderr.sh")
                && l.contains("GET /cgi-bin/stderr.sh?q=1")
        })
    });
    assert!(logged, "{}", s.logs());
}

#[test]
fn bad_or_oversized_headers_are_502() {
    let t = TestDir::new();
    let s = serve(&t, "");
    assert_eq!(get(s.addr, "/cgi-bin/bad-header.sh", &[]).status, 502);
    assert_eq!(get(s.addr, "/cgi-bin/big-header.py", &[]).status, 502);
}

#[test]
fn hop_by_hop_headers_from_the_script_are_dropped() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let r = get(s.addr, "/cgi-bin/hop-by-hop.sh", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-public"), Some("yes"));
    assert_eq!(r.header("x-private"), None);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.text(), "body\n");
}

#[test]
fn proxy_and_authorization_headers_are_not_exported() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let r = get(
        s.addr,
        "/cgi-bin/env.sh",
        &[
            ("proxy", "http://evil.example:3128"),
            ("authorization", "Basic c2VjcmV0"),
            ("x_under_score", "smuggled"),
        ],
    );
    let env = env_lines(&r.text());
    assert!(!env.contains_key("HTTP_PROXY"), "{env:#?}");
    assert!(!env.contains_key("HTTP_AUTHORIZATION"));
    assert!(!env.contains_key("HTTP_X_UNDER_SCORE"));
}

#[test]
fn authorization_is_exported_when_the_route_says_so() {
    let t = TestDir::new();
    let s = serve(&t, "cgi_pass_authorization = true");
    let r = get(
        s.addr,
        "/cgi-bin/env.sh",
        &[("authorization", "Basic c2VjcmV0")],
    );
    assert_eq!(
        env_lines(&r.text())
            .get("HTTP_AUTHORIZATION")
            .map(String::as_str),
        Some("Basic c2VjcmV0")
    );
}

#[test]
fn shellshock_style_header_is_only_data() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let marker = t.join("shellshocked");
    let payload = format!("() {{ :; }}; /usr/bin/touch {}", marker.display());
    let r = get(s.addr, "/cgi-bin/shellshock.sh", &[("x-payload", &payload)]);
    assert_eq!(r.status, 200, "{}", s.logs());
    assert_eq!(r.text().trim_end(), payload);
    assert!(!marker.exists(), "the header value was run");
}

#[test]
fn lookup_statuses() {
    let t = TestDir::new();
    let s = serve(&t, "");
    assert_eq!(get(s.addr, "/cgi-bin/missing.sh", &[]).status, 404);
    assert_eq!(get(s.addr, "/cgi-bin/not-executable.sh", &[]).status, 403);
    let ex = raw(s.addr, &get_request("/cgi-bin/%2e%2e/cgi.rs", &[]));
    assert_eq!(ex.first().status, 400);
    let r = get(s.addr, "/cgi-bin/sub/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "index of sub: /cgi-bin/sub/index.sh\n");
    let r = get(s.addr, "/cgi-bin/sub?a=1", &[]);
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/cgi-bin/sub/?a=1"));
}

/// An execute-only program (mode 0111) runs: lookup checks where the script
/// is and its execute bit, and never opens it (it used to open every
/// script for reading, and answered 403 here). The program is compiled: the
/// kernel runs a binary nobody may read, whereas a shell script's
/// interpreter must read it. Root reads any file, so as root the server
/// runs without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (`setpriv`): the
/// mode then binds it as it binds any other user, which the static route
/// over the same file shows (403).
#[test]
fn an_execute_only_program_runs() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new();
    let source = t.write(
        "ran.rs",
        r#"fn main() { print!("Content-Type: text/plain\r\n\r\nran unread\n"); }"#,
    );
    std::fs::create_dir(t.join("cgi")).unwrap();
    let program = t.join("cgi/ran.cgi");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let built = Command::new(&rustc)
        .arg("-o")
        .arg(&program)
        .arg(&source)
        .status()
        .unwrap_or_else(|e| panic!("{rustc} builds this test's CGI program; install it: {e}"));
    assert!(
        built.success(),
        "{rustc} failed to build {}",
        source.display()
    );
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o111)).unwrap();
    t.write(
        "site.toml",
        r#"
workers = 1
[[listen]]
address = "127.0.0.1:0"
[[route]]
path = "/cgi-bin"
cgi = "cgi"
[[route]]
path = "/raw"
static = "cgi"
"#,
    );
    // /proc/self belongs to the process's effective user.
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    let cmd = if root {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--bounding-set", "-dac_override,-dac_read_search", "--"])
            .arg(crate::util::bin());
        cmd
    } else {
        Command::new(crate::util::bin())
    };
    let s = Server::start_command(cmd, t.path(), &["-c", "site.toml"], 1, &[]);
    assert_eq!(
        get(s.addr, "/raw/ran.cgi", &[]).status,
        403,
        "the server must not be able to read the program (as root, is setpriv from \
         util-linux installed?)\n{}",
        s.logs()
    );
    let r = get(s.addr, "/cgi-bin/ran.cgi", &[]);
    assert_eq!(r.status, 200, "{}", s.logs());
    assert_eq!(r.text(), "ran unread\n");
}

#[test]
fn head_request_runs_the_script_and_sends_no_body() {
    let t = TestDir::new();
    let s = serve(&t, "");
    let r = request(s.addr, "HEAD", "/cgi-bin/status.sh", &[], Vec::new());
    assert_eq!(r.status, 418);
    assert_eq!(r.header("x-script"), Some("status"));
    assert!(r.body.is_empty());
}

#[test]
fn concurrency_past_the_limit_is_503_with_retry_after() {
    let t = TestDir::new();
    let s = serve(&t, "cgi_max_processes = 2");
    let addr = s.addr;
    let handles: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                // Stagger slightly so the third is surely last.
                std::thread::sleep(Duration::from_millis(100 * i));
                get(addr, "/cgi-bin/sleep1.sh", &[])
            })
        })
        .collect();
    let responses: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 503], "{}", s.logs());
    assert_eq!(responses[2].header("retry-after"), Some("1"));
    let line = "503 on route /cgi-bin from 127.0.0.1: all 2 CGI process slots are busy \
                (cgi_max_processes 2) (raise `cgi_max_processes` on the route)";
    assert!(
        s.stderr.wait_for(Duration::from_secs(5), |l| l
            .iter()
            .any(|l| l.contains(line))),
        "no line `{line}`\n{}",
        s.logs()
    );
    // The slots come back when the scripts have exited.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(get(addr, "/cgi-bin/sleep1.sh", &[]).status, 200);
}
