//! The request body, as the script's stdin.
//!
//! Steps, in order:
//! 1. `prepare`: with a `Content-Length` the body is streamed (the server
//!    already refused one over `max_body_size`); with none and nothing to
//!    read there is no body (no `CONTENT_LENGTH`, stdin is /dev/null);
//!    otherwise (chunked, or HTTP/2 without a length) it is de-chunked and
//!    buffered up to `max_body_size` (past it → 413) so that
//!    `CONTENT_LENGTH` can be set, as RFC 3875 requires;
//! 2. `feed`: a task writes the body to the script's stdin while the
//!    handler reads its output (a script may answer before it has read
//!    everything; a pipe holds only 64 KiB), then closes stdin. A script
//!    that exits without reading makes the write fail: the rest is dropped.
//!    When the client's body breaks off (no bytes for `--body-timeout`,
//!    the client gone), the script's group is killed *before* its stdin
//!    closes: a script never sees a clean end of a body that did not
//!    arrive whole. The failure is left in a [`BodyFault`] for the handler,
//!    which answers with its status (or cuts the response). Time waiting
//!    for the client's bytes does not count against `cgi_timeout`.

use std::cell::RefCell;
use std::rc::Rc;

use crate::body::{BodyError, RequestBody};
use bytes::{Bytes, BytesMut};
use http::header;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;

use super::error::CgiError;
use super::process::{Activity, Killer};

/// Where the feeder leaves the client's body failure for the handler.
pub type BodyFault = Rc<RefCell<Option<BodyError>>>;

pub enum Input {
    None,
    Stream { body: RequestBody, len: u64 },
    Buffered(Bytes),
}

impl Input {
    /// `CONTENT_LENGTH`, when there is a body.
    pub fn len(&self) -> Option<u64> {
        match self {
            Input::None => None,
            Input::Stream { len, .. } => Some(*len),
            Input::Buffered(data) => Some(data.len() as u64),
        }
    }
}

/// Step 1.
pub async fn prepare(
    headers: &http::HeaderMap,
    mut body: RequestBody,
    max_body_size: u64,
) -> Result<Input, CgiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared {
        return Ok(Input::Stream { body, len });
    }
    if http_body::Body::is_end_stream(&body) {
        return Ok(Input::None);
    }
    let mut data = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(CgiError::Body)?;
        if let Ok(chunk) = frame.into_data() {
            if (data.len() + chunk.len()) as u64 > max_body_size {
                return Err(CgiError::BodyTooLarge(max_body_size));
            }
            data.extend_from_slice(&chunk);
        }
    }
    Ok(Input::Buffered(data.freeze()))
}

/// Step 2: runs on the worker's thread until the body is written or the
/// script stops reading.
pub fn feed(
    input: Input,
    mut stdin: ChildStdin,
    activity: Activity,
    killer: Killer,
    fault: BodyFault,
) {
    tokio::task::spawn_local(async move {
        match input {
            Input::None => {}
            Input::Buffered(data) => {
                let _ = stdin.write_all(&data).await;
            }
            Input::Stream { mut body, .. } => loop {
                activity.waiting_on_client(true);
                let frame = body.frame().await;
                activity.waiting_on_client(false);
                match frame {
                    None => break,
                    Some(Ok(frame)) => {
                        let Ok(chunk) = frame.into_data() else {
                            continue;
                        };
                        if stdin.write_all(&chunk).await.is_err() {
                            break;
                        }
                        activity.touch();
                    }
                    Some(Err(err)) => {
                        *fault.borrow_mut() = Some(err);
                        // Dead before `stdin` closes, as this returns.
                        killer.kill();
                        return;
                    }
                }
            },
        }
        let _ = stdin.shutdown().await;
    });
}
