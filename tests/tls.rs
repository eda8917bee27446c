//! TLS listeners: ALPN picks h2 or http/1.1, and the connection speaks
//! exactly that protocol (h2spec's preface cases pass); keys in PKCS#8,
//! PKCS#1 and SEC1; relative certificate paths stay right when the worker
//! changes directory.

use std::time::Duration;

use crate::util::client::{get_tls, make_cert, tls_exchange, KeyKind};
use crate::util::fixture::HELLO;
use crate::util::TestDir;

fn serve_tls(t: &TestDir, kind: KeyKind) -> (crate::util::Server, std::path::PathBuf) {
    let (cert, key) = make_cert(t.path(), kind);
    t.site();
    let s = t.serve(&[
        "--static",
        "/=site",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(s.listeners[0].0, "https", "{}", s.logs());
    (s, cert)
}

fn check_h2(kind: KeyKind) {
    let t = TestDir::new();
    let (s, cert) = serve_tls(&t, kind);
    let (res, alpn) = get_tls(s.addr, &cert, &[b"h2", b"http/1.1"], "/hello.txt");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "{kind:?}");
    assert_eq!(res.version, http::Version::HTTP_2);
    assert_eq!(res.status, 200, "{kind:?}\n{}", s.logs());
    assert_eq!(res.text(), HELLO);
}

#[test]
fn tls_alpn_h2_with_pkcs8_key() {
    check_h2(KeyKind::Pkcs8);
}

#[test]
fn tls_alpn_h2_with_pkcs1_rsa_key() {
    check_h2(KeyKind::Pkcs1Rsa);
}

#[test]
fn tls_alpn_h2_with_sec1_ec_key() {
    check_h2(KeyKind::Sec1Ec);
}

#[test]
fn tls_alpn_http11_and_no_alpn() {
    let t = TestDir::new();
    let (s, cert) = serve_tls(&t, KeyKind::Pkcs8);
    let (res, alpn) = get_tls(s.addr, &cert, &[b"http/1.1"], "/hello.txt");
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(res.version, http::Version::HTTP_11);
    assert_eq!(res.text(), HELLO);
    let (res, alpn) = get_tls(s.addr, &cert, &[], "/hello.txt");
    assert_eq!(alpn, None);
    assert_eq!(res.status, 200);
}

const HTTP11_GET: &[u8] = b"GET /hello.txt HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// Whether `bytes` begin with an HTTP/2 frame header of type SETTINGS on
/// stream 0 (what a server's HTTP/2 side sends first).
fn starts_with_h2_settings(bytes: &[u8]) -> bool {
    bytes.len() >= 9 && bytes[3] == 0x4 && bytes[5..9] == [0, 0, 0, 0]
}

#[test]
fn alpn_h2_serves_http2_alone() {
    let t = TestDir::new();
    let (s, cert) = serve_tls(&t, KeyKind::Pkcs8);
    let wait = Duration::from_secs(3);
    let (got, closed, alpn) = tls_exchange(s.addr, &cert, &[b"h2"], HTTP11_GET, wait);
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert!(
        !got.starts_with(b"HTTP/1.1"),
        "HTTP/1.1 served on an h2 connection: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(closed, "h2 connection with HTTP/1.1 bytes left open");
}

#[test]
fn alpn_http11_serves_http11_alone() {
    let t = TestDir::new();
    let (s, cert) = serve_tls(&t, KeyKind::Pkcs8);
    let wait = Duration::from_secs(3);
    for offered in [&[&b"http/1.1"[..]][..], &[]] {
        let (got, closed, _) = tls_exchange(s.addr, &cert, offered, H2_PREFACE, wait);
        assert!(
            !starts_with_h2_settings(&got),
            "HTTP/2 served with ALPN {offered:?}: {got:?}"
        );
        assert!(
            closed,
            "ALPN {offered:?}: connection with a preface left open"
        );
        // And HTTP/1.1 works there.
        let (got, _, _) = tls_exchange(s.addr, &cert, offered, HTTP11_GET, wait);
        assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
    }
}

/// h2spec (../shared/tools/h2spec, or $H2SPEC) on the TLS listener: the
/// connection preface cases (3.5), which need the protocol ALPN agreed.
#[test]
fn h2spec_preface_cases_pass_on_the_tls_listener() {
    let h2spec = std::env::var_os("H2SPEC").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/h2spec/h2spec"),
        std::path::PathBuf::from,
    );
    assert!(
        h2spec.exists(),
        "{} is missing: install h2spec 2 (github.com/summerwind/h2spec) there or set H2SPEC",
        h2spec.display()
    );
    let t = TestDir::new();
    let (s, _) = serve_tls(&t, KeyKind::Pkcs8);
    let out = std::process::Command::new(&h2spec)
        .args(["-t", "-k", "-h", "127.0.0.1", "-p"])
        .arg(s.addr.port().to_string())
        .args(["-P", "/hello.txt", "http2/3.5"])
        .output()
        .expect("run h2spec");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && report.contains("2 tests, 2 passed"),
        "h2spec http2/3.5:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tls_listener_from_config_file() {
    let t = TestDir::new();
    let (cert, key) = make_cert(t.path(), KeyKind::Sec1Ec);
    t.site();
    t.write(
        "p.toml",
        format!(
            "[[listen]]\naddress = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\
             [[route]]\npath = \"/\"\nstatic = \"site\"\n",
            cert.display(),
            key.display()
        ),
    );
    let s = t.serve(&["-c", "p.toml"]);
    assert_eq!(s.listeners[0].0, "https");
    let (res, _) = get_tls(s.addr, &cert, &[b"h2"], "/hello.txt");
    assert_eq!(res.status, 200);
}

#[test]
fn check_config_refuses_a_key_that_is_not_a_key() {
    let t = TestDir::new();
    let (cert, _) = make_cert(t.path(), KeyKind::Pkcs8);
    t.site();
    let out = crate::util::run(
        t.path(),
        &[
            "--check-config",
            "--static",
            "/=site",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            cert.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS key"));
}

/// An app that answers with its working directory, to show `--chdir` took.
const CWD_APP: &str = "import os\n\n\
def application(environ, start_response):\n    \
start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
return [os.getcwd().encode()]\n";

#[test]
fn relative_tls_files_and_access_log_with_chdir_to_another_dir() {
    // The worker changes to `app/` before it loads the TLS files and opens
    // the log: they must still be the ones next to where portico started.
    let t = TestDir::new();
    let (cert, _) = make_cert(t.path(), KeyKind::Pkcs8);
    t.write("app/cwd_app.py", CWD_APP);
    let s = t.serve(&[
        "cwd_app:application",
        "--chdir",
        "app",
        "--tls-cert",
        "cert.pem",
        "--tls-key",
        "key.pem",
        "--access-log",
        "access.log",
    ]);
    let (res, _) = get_tls(s.addr, &cert, &[b"h2"], "/");
    assert_eq!(res.status, 200, "{}", s.logs());
    let app_dir = t.join("app").canonicalize().unwrap();
    assert_eq!(res.text(), app_dir.to_str().unwrap());
    assert!(
        wait_for_text(&t.join("access.log")).contains("\"GET / HTTP/2.0\" 200"),
        "{}",
        s.logs()
    );
    assert!(!t.join("app/access.log").exists());
}

#[test]
fn relative_tls_files_in_config_file_with_chdir_are_under_its_directory() {
    let t = TestDir::new();
    std::fs::create_dir(t.join("conf")).unwrap();
    let (cert, _) = make_cert(&t.join("conf"), KeyKind::Sec1Ec);
    t.write("app/cwd_app.py", CWD_APP);
    t.write(
        "conf/p.toml",
        "chdir = \"../app\"\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n\
         [log]\naccess_log = \"access.log\"\n\
         [[route]]\npath = \"/\"\nwsgi = \"cwd_app:application\"\n",
    );
    let s = t.serve(&["-c", "conf/p.toml"]);
    assert_eq!(s.listeners[0].0, "https");
    let (res, _) = get_tls(s.addr, &cert, &[b"http/1.1"], "/");
    assert_eq!(res.status, 200, "{}", s.logs());
    assert!(
        wait_for_text(&t.join("conf/access.log")).contains("\"GET / HTTP/1.1\" 200"),
        "{}",
        s.logs()
    );
}

#[test]
fn tls_key_broken_before_a_reload_keeps_the_old_workers_serving() {
    // The new worker cannot load its key; before, it was restarted forever
    // and the reload never ended.
    let t = TestDir::new();
    let (s, cert) = serve_tls(&t, KeyKind::Pkcs8);
    let logged = |text: &'static str| {
        s.stderr
            .wait_for(std::time::Duration::from_secs(10), |lines| {
                lines.iter().any(|l| l.contains(text))
            })
    };
    assert!(logged("ready: 1 worker(s) serving"), "{}", s.logs());
    std::fs::copy(&cert, t.join("key.pem")).unwrap();
    s.signal(nix::sys::signal::Signal::SIGHUP);
    let failed = logged("reload failed");
    assert!(failed, "{}", s.logs());
    assert!(s.stderr.text().contains("TLS key"), "{}", s.logs());
    let (res, _) = get_tls(s.addr, &cert, &[b"h2"], "/hello.txt");
    assert_eq!(res.status, 200, "{}", s.logs());
}

/// The file's text once it has some (the access log is written after the
/// response), or what it holds after 5 s.
fn wait_for_text(path: &std::path::Path) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if !text.is_empty() || std::time::Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
