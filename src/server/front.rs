//! The HTTP connections' side of the service (`crate::service::FrontEnd`):
//! a request's start and end move the connection's phase (for its
//! watchdog), file bodies may use `sendfile` on plain sockets, a draining
//! worker asks HTTP/1 clients to close, and HTTP/2 response bodies report
//! to their stream's send timeout.

use std::rc::Rc;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::conn::ConnState;
use super::send_timeout;
use super::Shared;
use crate::request::body::Body;
use crate::request::sendfile::SendQueue;
use crate::service::FrontEnd;

/// One HTTP connection, as the service sees it.
pub struct HttpFront {
    pub shared: Rc<Shared>,
    pub state: Arc<ConnState>,
    /// Writing to the socket directly is safe (plain TCP or unix, no TLS).
    pub plain: bool,
}

impl FrontEnd for HttpFront {
    #[inline]
    fn request_started(&self) {
        self.state.request_started();
    }

    #[inline]
    fn request_finished(&self) {
        self.state.request_finished();
    }

    #[inline]
    fn sendfile(&self) -> Option<&Arc<SendQueue>> {
        self.plain.then_some(&self.state.sendfile)
    }

    fn finish(&self, version: http::Version, response: &mut Response<Body>) {
        if version <= http::Version::HTTP_11 && self.shared.draining() {
            ask_to_close(response);
        }
        if self.state.is_http2() {
            if let Some(stall) = send_timeout::current_stream() {
                let body = std::mem::replace(response.body_mut(), Body::empty());
                *response.body_mut() = Body::stream(send_timeout::Reporting::new(body, stall));
            }
        }
    }
}

/// `Connection: close`: hyper closes the connection after this response,
/// and the client knows to open a new one (to another worker) for its next
/// request. An upgrade's 101 keeps its `Connection: upgrade`.
fn ask_to_close(response: &mut Response<Body>) {
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}
