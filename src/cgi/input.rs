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

use crate::body::RequestBody;
use bytes::{Bytes, BytesMut};
use http::header;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;

use super::error::CgiError;
use super::process::Activity;

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
        let frame = frame.map_err(|e| CgiError::BodyRead(e.to_string()))?;
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
pub fn feed(input: Input, mut stdin: ChildStdin, activity: Activity) {
    tokio::task::spawn_local(async move {
        match input {
            Input::None => {}
            Input::Buffered(data) => {
                let _ = stdin.write_all(&data).await;
            }
            Input::Stream { mut body, .. } => {
                while let Some(Ok(frame)) = body.frame().await {
                    if let Ok(chunk) = frame.into_data() {
                        if stdin.write_all(&chunk).await.is_err() {
                            break;
                        }
                        activity.touch();
                    }
                }
            }
        }
        let _ = stdin.shutdown().await;
    });
}
