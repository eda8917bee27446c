//! TLS for listeners that have a certificate: rustls with ALPN offering h2
//! and http/1.1, keys in PEM (PKCS#8, PKCS#1 or SEC1).
//!
//! A TLS connection speaks exactly the protocol ALPN agreed: `h2` is served
//! by HTTP/2 alone (HTTP/1.1 bytes there are a connection error), `http/1.1`
//! by HTTP/1.1 alone (an HTTP/2 preface there is a malformed request). A
//! client that offers no ALPN gets HTTP/1.1, as such clients expect: HTTP/2
//! over TLS must be negotiated (RFC 9113 §3.3), so "prior knowledge" is
//! for cleartext connections only.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate {path}: {message} (expected PEM `CERTIFICATE` blocks)")]
    Cert { path: String, message: String },
    #[error("TLS key {path}: {message} (expected a PEM PKCS#8, PKCS#1 or SEC1 private key)")]
    Key { path: String, message: String },
    #[error("TLS certificate and key do not fit together: {0}")]
    Config(#[from] rustls::Error),
}

/// What the TLS handshake agreed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Alpn {
    /// Not a TLS connection: HTTP/1 or an HTTP/2 preface, told apart by the
    /// first bytes.
    NotTls,
    /// `h2`.
    H2,
    /// `http/1.1`, or no ALPN at all.
    Http1,
}

pub fn alpn<S>(stream: &tokio_rustls::server::TlsStream<S>) -> Alpn {
    match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => Alpn::H2,
        _ => Alpn::Http1,
    }
}

pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let cert_err = |message: String| TlsError::Cert {
        path: files.cert.display().to_string(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no certificate found".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.display().to_string(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
