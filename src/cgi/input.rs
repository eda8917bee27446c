//! The request body, as the script's stdin.
//!
//! Steps, in order:
//! 1. `prepare`: no body → none (no `CONTENT_LENGTH`, stdin is /dev/null);
//!    with request buffering (the default), or without a `Content-Length`
//!    (chunked, HTTP/2 without a length: RFC 3875 wants `CONTENT_LENGTH`),
//!    the whole body is read first (`crate::request::spool`: memory, then an
//!    unnamed temporary file; 413 past `max_body_size`), before the script
//!    takes a slot; a body in a file *is* the script's stdin, one in
//!    memory goes through a pipe. With `request_buffering = false`, a body
//!    with a `Content-Length` streams (the server already refused one over
//!    `max_body_size`);
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

use crate::request::body::{BodyError, RequestBody};
use crate::request::spool::{self, Spooled};
use crate::request::HandlerContext;
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;

use super::error::CgiError;
use super::process::{Activity, Killer, Stdin};

/// Where the feeder leaves the client's body failure for the handler.
pub type BodyFault = Rc<RefCell<Option<BodyError>>>;

pub enum Input {
    None,
    /// Still on the socket (`request_buffering = false`).
    Stream {
        body: RequestBody,
        len: u64,
    },
    Buffered(Bytes),
    /// A temporary file at its start: the script's stdin.
    File {
        file: std::fs::File,
        len: u64,
    },
}

impl Input {
    /// `CONTENT_LENGTH`, when there is a body.
    pub fn len(&self) -> Option<u64> {
        match self {
            Input::None => None,
            Input::Stream { len, .. } | Input::File { len, .. } => Some(*len),
            Input::Buffered(data) => Some(data.len() as u64),
        }
    }

    /// What the script's stdin is, and what is left to `feed` it.
    pub fn into_stdin(self) -> (Stdin, Input) {
        match self {
            Input::None => (Stdin::Null, Input::None),
            Input::File { file, .. } => (Stdin::File(file), Input::None),
            piped => (Stdin::Piped, piped),
        }
    }
}

/// Step 1.
pub async fn prepare(
    headers: &http::HeaderMap,
    body: RequestBody,
    ctx: &HandlerContext<'_>,
) -> Result<Input, CgiError> {
    let declared = crate::request::headers::declared_length(headers);
    if http_body::Body::is_end_stream(&body) {
        // `Content-Length: 0` still tells the script it has a body.
        return Ok(match declared {
            Some(_) => Input::Buffered(Bytes::new()),
            None => Input::None,
        });
    }
    if let (Some(len), false) = (declared, ctx.buffering.on) {
        return Ok(Input::Stream { body, len });
    }
    let spooled = spool::spool(body, ctx.buffering, ctx.max_body_size)
        .await
        .map_err(CgiError::Spool)?;
    Ok(match spooled {
        Spooled::Memory(data) => Input::Buffered(data),
        Spooled::File(file) => Input::File {
            len: file.len(),
            file: file.into_file(),
        },
    })
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
            // A file is the script's stdin itself (`Input::into_stdin`).
            Input::None | Input::File { .. } => {}
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
