//! hyper clients: HTTP/1.1 and h2c over plain TCP, HTTP/2 or HTTP/1.1 over
//! TLS with ALPN; plus the test certificates (rcgen, openssl for PKCS#1/SEC1).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

/// A response read in full.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn build(method: &str, uri: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Request<Full<Bytes>> {
    let mut req = Request::builder().method(method).uri(uri);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    req.body(Full::new(Bytes::from(body))).unwrap()
}

async fn collect(res: http::Response<hyper::body::Incoming>) -> Resp {
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    Resp {
        status: parts.status.as_u16(),
        version: parts.version,
        headers: parts.headers,
        body: body.to_vec(),
    }
}

async fn h1_on<S>(io: S, req: Request<Full<Bytes>>) -> Resp
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    let res = send.send_request(req).await.expect("HTTP/1.1 response");
    collect(res).await
}

async fn h2_on<S>(io: S, req: Request<Full<Bytes>>) -> Resp
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let res = send.send_request(req).await.expect("HTTP/2 response");
    collect(res).await
}

/// An HTTP/1.1 request on a new connection (Host: localhost unless given).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Resp {
    let mut req = build(method, path, headers, body);
    if !req.headers().contains_key("host") {
        req.headers_mut()
            .insert("host", http::HeaderValue::from_static("localhost"));
    }
    runtime().block_on(async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tokio::time::timeout(TIMEOUT, h1_on(tcp, req))
            .await
            .expect("HTTP/1.1 request timed out")
    })
}

pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Resp {
    request(addr, "GET", path, headers, Vec::new())
}

/// HTTP/2 with prior knowledge over plain TCP (h2c).
pub fn get_h2c(addr: SocketAddr, path: &str) -> Resp {
    let req = build("GET", &format!("http://{addr}{path}"), &[], Vec::new());
    runtime().block_on(async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tokio::time::timeout(TIMEOUT, h2_on(tcp, req))
            .await
            .expect("h2c request timed out")
    })
}

/// An h2c connection kept open (on the current tokio runtime) after one
/// GET of `path` answered 200, for tests of idle HTTP/2 connections.
pub async fn h2c_connection(
    addr: SocketAddr,
    path: &str,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake");
    tokio::spawn(conn);
    h2c_get_ok(&mut send, addr, path).await;
    send
}

/// A GET of `path` on an open h2c connection; asserts a 200.
pub async fn h2c_get_ok(
    send: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
) {
    let req = Request::get(format!("http://{addr}{path}"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let res = send.send_request(req).await.expect("h2c request");
    assert_eq!(res.status(), 200, "h2c GET {path}");
}

/// A TLS client configuration trusting `ca` (PEM), offering `alpn`.
pub fn tls_client_config(ca: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("CA PEM") {
        roots.add(cert.expect("CA cert")).expect("trust CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// A GET over TLS trusting `ca` (PEM), offering `alpn`; returns the
/// response and the protocol the server chose. Speaks h2 when it was chosen.
pub fn get_tls(addr: SocketAddr, ca: &Path, alpn: &[&[u8]], path: &str) -> (Resp, Option<Vec<u8>>) {
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(ca, alpn));
    runtime().block_on(async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").unwrap();
        let tls = tokio::time::timeout(TIMEOUT, connector.connect(name, tcp))
            .await
            .expect("TLS handshake timed out")
            .expect("TLS handshake");
        let chosen = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let res = if chosen.as_deref() == Some(b"h2") {
            let req = build(
                "GET",
                &format!("https://localhost:{}{path}", addr.port()),
                &[],
                Vec::new(),
            );
            h2_on(tls, req).await
        } else {
            let req = build("GET", path, &[("host", "localhost")], Vec::new());
            h1_on(tls, req).await
        };
        (res, chosen)
    })
}

/// Raw bytes over TLS trusting `ca`, offering `alpn`: writes `bytes` and
/// reads until the server closes or `wait` passes. Returns what was read,
/// whether the server closed, and the protocol it chose.
pub fn tls_exchange(
    addr: SocketAddr,
    ca: &Path,
    alpn: &[&[u8]],
    bytes: &[u8],
    wait: Duration,
) -> (Vec<u8>, bool, Option<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(ca, alpn));
    runtime().block_on(async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = tokio::time::timeout(TIMEOUT, connector.connect(name, tcp))
            .await
            .expect("TLS handshake timed out")
            .expect("TLS handshake");
        let chosen = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        tls.write_all(bytes).await.expect("write over TLS");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + wait;
        let closed = loop {
            match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
                Err(_) => break false,
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            }
        };
        (got, closed, chosen)
    })
}

/// Which encoding of private key to write next to the certificate.
#[derive(Clone, Copy, Debug)]
pub enum KeyKind {
    /// ECDSA P-256 in PKCS#8 (`BEGIN PRIVATE KEY`).
    Pkcs8,
    /// RSA in PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    Pkcs1Rsa,
    /// ECDSA P-256 in SEC1 (`BEGIN EC PRIVATE KEY`).
    Sec1Ec,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `cert.pem` and `key.pem` (self-signed for localhost and
/// 127.0.0.1) into `dir`; returns their paths.
pub fn make_cert(dir: &Path, kind: KeyKind) -> (PathBuf, PathBuf) {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    let key_pair = match kind {
        KeyKind::Pkcs8 | KeyKind::Sec1Ec => rcgen::KeyPair::generate().unwrap(),
        KeyKind::Pkcs1Rsa => {
            // ring cannot generate RSA keys; openssl can.
            let p8 = dir.join("rsa-pkcs8.pem");
            openssl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                p8.to_str().unwrap(),
            ]);
            let pem = std::fs::read_to_string(&p8).unwrap();
            rcgen::KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap()
        }
    };
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.self_signed(&key_pair).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    let p8 = dir.join("key-pkcs8.pem");
    std::fs::write(&p8, key_pair.serialize_pem()).unwrap();
    let (p8s, keys) = (p8.to_str().unwrap(), key_path.to_str().unwrap());
    match kind {
        KeyKind::Pkcs8 => std::fs::copy(&p8, &key_path).map(drop).unwrap(),
        KeyKind::Pkcs1Rsa => openssl(&["rsa", "-in", p8s, "-traditional", "-out", keys]),
        KeyKind::Sec1Ec => openssl(&["ec", "-in", p8s, "-out", keys]),
    }
    let key_text = std::fs::read_to_string(&key_path).unwrap();
    let expected = match kind {
        KeyKind::Pkcs8 => "-----BEGIN PRIVATE KEY-----",
        KeyKind::Pkcs1Rsa => "-----BEGIN RSA PRIVATE KEY-----",
        KeyKind::Sec1Ec => "-----BEGIN EC PRIVATE KEY-----",
    };
    assert!(key_text.starts_with(expected), "{kind:?} key: {key_text}");
    (cert_path, key_path)
}
