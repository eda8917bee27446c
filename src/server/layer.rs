//! The HTTP layer a connection is served with: HTTP/1.1 and HTTP/2 told
//! apart by the first bytes (plain sockets), or exactly one of them (a TLS
//! connection speaks the protocol ALPN agreed, see `super::tls`).
//!
//! hyper-util's `auto` builder detects the protocol from the first bytes
//! and ignores `http1_only`/`http2_only` when upgrades are on, so a
//! protocol fixed by ALPN is served by hyper's own HTTP/1 connection (with
//! upgrades, for WebSocket through the proxy) or by `auto` without upgrades
//! forced to HTTP/2 (which has none).

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::rt::{Read, Write};
use hyper::server::conn::http1;
use hyper::service::{HttpService, Service};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;

use super::LocalExec;

type BoxError = Box<dyn StdError + Send + Sync>;

pub enum HttpLayer {
    /// HTTP/1.1 or HTTP/2, told apart by the first bytes.
    Detect(auto::Builder<LocalExec>),
    /// HTTP/1.1 alone, with upgrades.
    Http1(http1::Builder),
    /// HTTP/2 alone (built with `http2_only`).
    Http2(auto::Builder<LocalExec>),
}

impl HttpLayer {
    /// Serves `io` with `service` until the connection ends. (The name is
    /// hyper-util's, whose `auto` builder this stands in for.)
    pub fn serve_connection_with_upgrades<I, S, B>(&self, io: I, service: S) -> HttpConn<'_, I, S>
    where
        S: Service<Request<Incoming>, Response = Response<B>>,
        S::Future: 'static,
        S::Error: Into<BoxError>,
        B: Body + 'static,
        B::Error: Into<BoxError>,
        I: Read + Write + Unpin + Send + 'static,
        LocalExec: auto::HttpServerConnExec<S::Future, B>,
    {
        match self {
            HttpLayer::Detect(builder) => HttpConn::Detect {
                conn: builder.serve_connection_with_upgrades(io, service),
            },
            HttpLayer::Http1(builder) => HttpConn::Http1 {
                conn: builder.serve_connection(io, service).with_upgrades(),
            },
            HttpLayer::Http2(builder) => HttpConn::Http2 {
                conn: builder.serve_connection(io, service),
            },
        }
    }
}

pin_project! {
    /// One connection's HTTP future, whichever layer serves it.
    #[project = HttpConnProj]
    pub enum HttpConn<'a, I, S>
    where
        S: HttpService<Incoming>,
    {
        Detect { #[pin] conn: auto::UpgradeableConnection<'a, I, S, LocalExec> },
        Http1 { #[pin] conn: http1::UpgradeableConnection<I, S> },
        Http2 { #[pin] conn: auto::Connection<'a, I, S, LocalExec> },
    }
}

impl<I, S, B> HttpConn<'_, I, S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: 'static,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    I: Read + Write + Unpin + Send + 'static,
    LocalExec: auto::HttpServerConnExec<S::Future, B>,
{
    /// Finish the requests in flight, take no more (HTTP/2: GOAWAY).
    pub fn graceful_shutdown(self: Pin<&mut Self>) {
        match self.project() {
            HttpConnProj::Detect { conn } => conn.graceful_shutdown(),
            HttpConnProj::Http1 { conn } => conn.graceful_shutdown(),
            HttpConnProj::Http2 { conn } => conn.graceful_shutdown(),
        }
    }
}

impl<I, S, B> Future for HttpConn<'_, I, S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: 'static,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    I: Read + Write + Unpin + Send + 'static,
    LocalExec: auto::HttpServerConnExec<S::Future, B>,
{
    type Output = Result<(), BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            HttpConnProj::Detect { conn } => conn.poll(cx),
            HttpConnProj::Http1 { conn } => conn.poll(cx).map_err(Into::into),
            HttpConnProj::Http2 { conn } => conn.poll(cx),
        }
    }
}
