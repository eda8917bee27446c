//! TLS listeners: ALPN picks h2 or http/1.1; keys in PKCS#8, PKCS#1 and SEC1.

use crate::util::client::{get_tls, make_cert, KeyKind};
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
