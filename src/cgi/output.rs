//! The script's stdout: the header block first, then the body streamed to
//! the client as the script writes it.
//!
//! Steps, in order:
//! 1. `read_head`: read until the block's empty line (`head::find_end`),
//!    over `HEAD_MAX` → 502, end of output first → 502;
//! 2. `into_body`: the bytes after the block, then every read of stdout as
//!    one chunk (no buffering of the whole output);
//! 3. `drain` (HEAD): the output is read and discarded so that the script
//!    finishes normally.
//!
//! Every read is bounded by the timeout, counted from the script's last
//! sign of life: past it the process group is killed, and the read fails
//! (504 before the head; after it, the body errors and hyper cuts the
//! connection, so the client sees an incomplete response rather than a
//! truncated one that looks whole). While the script's input waits for the
//! client, its silence is not counted. At end of output the script gets the
//! same time to exit before its group is killed; a dropped body (client
//! gone) kills the group at once. An output that ends because the client's
//! body broke off (the feeder killed the script) fails with that: the
//! client's status before the head, a cut after it.

use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use tokio::io::AsyncReadExt;
use tokio::process::ChildStdout;

use tokio::time::Instant;

use super::error::CgiError;
use super::head::find_end;
use super::input::BodyFault;
use super::process::{Activity, Guard, Tag};
use crate::request::body::Body;

/// Largest header block accepted from a script.
pub const HEAD_MAX: usize = 64 * 1024;
const READ_SIZE: usize = 16 * 1024;

pub struct Output {
    stdout: ChildStdout,
    guard: Guard,
    activity: Activity,
    timeout: Duration,
    buf: BytesMut,
    tag: Rc<Tag>,
    fault: BodyFault,
}

impl Output {
    pub fn new(
        stdout: ChildStdout,
        guard: Guard,
        activity: Activity,
        timeout: Duration,
        tag: Rc<Tag>,
        fault: BodyFault,
    ) -> Self {
        Output {
            stdout,
            guard,
            activity,
            timeout,
            buf: BytesMut::with_capacity(READ_SIZE),
            tag,
            fault,
        }
    }

    /// When the script's silence ends its life: `cgi_timeout` after its
    /// last sign of it, not while it waits for the client's body bytes.
    fn deadline(&self) -> Instant {
        let last = match self.activity.is_waiting_on_client() {
            true => Instant::now(),
            false => self.activity.last(),
        };
        last + self.timeout
    }

    /// One read into `buf`; `Ok(false)` at end of output.
    async fn fill(&mut self) -> Result<bool, CgiError> {
        loop {
            let deadline = self.deadline();
            self.buf.reserve(READ_SIZE);
            tokio::select! {
                read = self.stdout.read_buf(&mut self.buf) => {
                    // The output ended because the client's body broke off.
                    if let Some(fault) = self.fault.borrow_mut().take() {
                        self.guard.kill();
                        return Err(CgiError::Body(fault));
                    }
                    return match read {
                        Ok(0) => {
                            self.guard.finished(self.timeout);
                            Ok(false)
                        }
                        Ok(_) => {
                            self.activity.touch();
                            Ok(true)
                        }
                        Err(e) => {
                            self.guard.kill();
                            Err(CgiError::Read(e))
                        }
                    };
                }
                _ = tokio::time::sleep_until(deadline) => {
                    // Input to the script counts as life too: look again.
                    if self.deadline() <= Instant::now() {
                        self.guard.kill();
                        return Err(CgiError::Timeout(self.timeout));
                    }
                }
            }
        }
    }

    /// Step 1: the header block.
    pub async fn read_head(&mut self) -> Result<Bytes, CgiError> {
        loop {
            if let Some(end) = find_end(&self.buf) {
                return Ok(self.buf.split_to(end).freeze());
            }
            if self.buf.len() > HEAD_MAX {
                return Err(CgiError::HeadTooLarge(HEAD_MAX));
            }
            if !self.fill().await? {
                return Err(CgiError::EndedEarly(self.buf.len()));
            }
        }
    }

    /// The next chunk of body, `None` at the end.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, CgiError> {
        if self.buf.is_empty() && !self.fill().await? {
            return Ok(None);
        }
        Ok(Some(self.buf.split().freeze()))
    }

    /// The output is no longer wanted (a local redirect): the script gets
    /// the timeout to exit.
    pub fn finish(mut self) {
        self.guard.finished(self.timeout);
    }

    /// Step 2.
    pub fn into_body(self) -> Body {
        let stream = futures_util::stream::unfold(Some(self), |state| async move {
            let mut out = state?;
            match out.next_chunk().await {
                Ok(Some(data)) => Some((Ok(Frame::data(data)), Some(out))),
                Ok(None) => None,
                Err(CgiError::Body(fault)) => {
                    tracing::info!(
                        script = out.tag.script,
                        request = out.tag.request,
                        "CGI response cut, script killed: {fault}"
                    );
                    Some((Err(std::io::Error::other(fault)), None))
                }
                Err(e) => {
                    tracing::error!(
                        script = out.tag.script,
                        request = out.tag.request,
                        "CGI response cut: {e}"
                    );
                    Some((Err(std::io::Error::other(e)), None))
                }
            }
        });
        Body::stream(http_body_util::StreamBody::new(stream))
    }

    /// Step 3.
    pub fn drain(mut self) {
        tokio::task::spawn_local(async move { while let Ok(Some(_)) = self.next_chunk().await {} });
    }
}
