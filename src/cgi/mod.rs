//! CGI gateway (RFC 3875): not built yet; answers 501.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::Body;
use crate::config::CgiOptions;
use crate::server::{status_page, Mount};

pub async fn serve(
    _opts: &CgiOptions,
    _mount: &Mount<'_>,
    _req: Request<Incoming>,
) -> Response<Body> {
    status_page(StatusCode::NOT_IMPLEMENTED)
}
