//! One request on a Python thread, in order:
//!
//! 1. build the environ and call `app(environ, start_response)`;
//! 2. `X-Accel-Redirect` / `X-Sendfile` on a route that allows them: close
//!    the iterable at once and let the connection serve the file;
//! 3. `wsgi.file_wrapper` over a real file: hand the descriptor to Rust;
//! 4. a list or tuple: send it whole with a Content-Length;
//! 5. anything else: send each chunk as it is produced (a first chunk that
//!    is the whole declared Content-Length goes with the head, like a list);
//! 6. always call the iterable's `close()`, also on error and disconnect;
//! 7. errors: before the head → 500 (413 if the body was too large) and
//!    the traceback in the error log; after it → the connection is cut;
//! 8. a request body the client failed to send (timeout, malformed, gone)
//!    decides the answer whatever the app did: 408 or 400 with one log
//!    line and no traceback, or a cut connection when the app's head was
//!    already out. The app never gets to send its own answer after the
//!    failure (`Responder::send_head`).

use std::os::fd::{AsFd, BorrowedFd};

use bytes::BytesMut;
use http::StatusCode;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};

use super::env_cache::EnvCache;
use super::environ::{self, RequestView};
use super::input::{Failure, Input, Outcome, Source};
use super::interpreter::traceback_text;
use super::pipe::{BodyPlan, Head};
use super::start_response::{
    self, body_bytes, ignore_disconnect, lock, Responder, SendError, SharedResponder, StartResponse,
};
use super::streams::{ErrorStream, FileWrapper};
use super::Job;
use crate::request::answer::ErrorAnswer;
use crate::request::refusal::{self, Refusal};
use crate::static_files::{named_file, NamedFile};

pub fn run(py: Python<'_>, cache: &mut EnvCache, app: &Bound<'_, PyAny>, mut job: Job) {
    let responder = Responder::new(job.pipe.clone(), job.tag.clone());
    // Set by the input when reading the body fails (never without one).
    let (input, read) = match job.input.take().unwrap_or_default() {
        Source::Empty => (Ok(None), None),
        source => {
            let read = Outcome::default();
            lock(&responder).watch_input(read.clone());
            let input = Input::new(source, job.max_body_size, read.clone());
            (Bound::new(py, input).map(Some), Some(read))
        }
    };
    let outcome = input.and_then(|input| {
        let stream = match &input {
            Some(input) => input.clone().into_any(),
            None => cache.empty_input(py),
        };
        let outcome = call_app(py, cache, app, &job, stream, &responder);
        // The iterable is closed: a buffered body's file goes now, not
        // whenever Python frees an environ the app may have kept.
        if let Some(input) = input {
            input.borrow().release();
        }
        outcome
    });
    let failure = read.as_ref().and_then(|read| read.get());
    if let Some(fault) = failure.and_then(Failure::client) {
        // Step 8: whatever the app did, caught the error or not.
        if let Err(err) = &outcome {
            tracing::debug!(request = %job.tag, "after its request body failed, the WSGI app raised: {err}");
        }
        refusal::log(&Refusal::Body(fault.clone()), scope(&job));
        lock(&responder).answer_fault(fault);
        return;
    }
    if let Err(err) = outcome {
        let overflowed = matches!(failure, Some(Failure::TooLarge(_)));
        if overflowed {
            log_overflow(&job);
        }
        fail(py, &responder, &err, overflowed);
    }
}

/// The refusal line of a body that grew past `max_body_size` while the
/// app read it (one with a larger Content-Length never reaches the app).
fn log_overflow(job: &Job) {
    let refusal = Refusal::BodyTooLarge {
        declared: None,
        limit: job.max_body_size,
    };
    refusal::log(&refusal, scope(job));
}

/// Where the request's refusals happened, for their log line.
fn scope(job: &Job) -> refusal::Scope<'_> {
    let route = if job.script_name.is_empty() {
        "/"
    } else {
        &job.script_name
    };
    refusal::Scope {
        route: Some(route),
        peer: &job.client.remote_addr,
    }
}

fn call_app(
    py: Python<'_>,
    cache: &mut EnvCache,
    app: &Bound<'_, PyAny>,
    job: &Job,
    input: Bound<'_, PyAny>,
    responder: &SharedResponder,
) -> PyResult<()> {
    let view = RequestView {
        parts: &job.parts,
        script_name: &job.script_name,
        client: &job.client,
        local: job.local,
    };
    let environ = environ::build(
        py,
        cache,
        &view,
        input,
        Bound::new(py, ErrorStream::new(job.tag.clone()))?.into_any(),
    )?;
    let start = Bound::new(py, StartResponse::new(responder.clone()))?;
    let iterable = app.call1((environ, start))?;
    let sent = send_iterable(py, responder, &iterable, job.may_name_files);
    let closed = close(&iterable);
    sent?;
    closed
}

fn close(iterable: &Bound<'_, PyAny>) -> PyResult<()> {
    // The usual answer has no close(), and asking would raise (and format)
    // an AttributeError on every request.
    if is_materialized(iterable) {
        return Ok(());
    }
    if iterable.hasattr(pyo3::intern!(iterable.py(), "close"))? {
        iterable.call_method0(pyo3::intern!(iterable.py(), "close"))?;
    }
    Ok(())
}

fn send_iterable(
    py: Python<'_>,
    responder: &SharedResponder,
    iterable: &Bound<'_, PyAny>,
    may_name_files: bool,
) -> PyResult<()> {
    if may_name_files && try_named_file_header(responder)? {
        return Ok(());
    }
    if let Ok(wrapper) = iterable.cast::<FileWrapper>() {
        if try_send_file(py, responder, &wrapper.borrow())? {
            return Ok(());
        }
    }
    if is_materialized(iterable) && !lock(responder).head_sent() {
        return send_list(py, responder, iterable);
    }
    for item in iterable.try_iter()? {
        let data = body_bytes(&item?)?;
        match start_response::send_chunk(py, responder, data) {
            Ok(()) => {}
            // The client is gone: stop producing; close() still runs.
            Err(SendError::Disconnected) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    finish(responder)
}

fn is_materialized(iterable: &Bound<'_, PyAny>) -> bool {
    iterable.is_exact_instance_of::<PyList>() || iterable.is_exact_instance_of::<PyTuple>()
}

/// A list or tuple of bytes: one buffer, one message, a Content-Length.
fn send_list(
    py: Python<'_>,
    responder: &SharedResponder,
    items: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let body = if items.len()? == 1 {
        body_bytes(&items.get_item(0)?)?
    } else {
        let mut body = BytesMut::new();
        for item in items.try_iter()? {
            body.extend_from_slice(&body_bytes(&item?)?);
        }
        body.freeze()
    };
    let mut r = lock(responder);
    match r.declared_length() {
        None => {}
        // A wrong Content-Length goes through the checked streaming path.
        Some(n) if n != body.len() as u64 => {
            drop(r);
            start_response::send_chunk(py, responder, body).or_else(ignore_disconnect)?;
            return finish(responder);
        }
        Some(_) => {}
    }
    r.send_whole(body).or_else(ignore_disconnect)?;
    Ok(())
}

/// End of the body (`Responder::end_body`).
fn finish(responder: &SharedResponder) -> PyResult<()> {
    lock(responder).end_body()?;
    Ok(())
}

/// `X-Accel-Redirect` / `X-Sendfile`: the connection serves the file.
fn try_named_file_header(responder: &SharedResponder) -> PyResult<bool> {
    let mut r = lock(responder);
    let Some(headers) = r.pending_headers() else {
        return Ok(false);
    };
    let Some(NamedFile { accel, target }) = named_file(headers) else {
        return Ok(false);
    };
    r.send_head(BodyPlan::NamedFile { accel, target })
        .or_else(ignore_disconnect)?;
    Ok(true)
}

/// A file wrapper over a real file: dup its descriptor and let Rust send it
/// from the current position, without the GIL.
fn try_send_file(
    py: Python<'_>,
    responder: &SharedResponder,
    wrapper: &FileWrapper,
) -> PyResult<bool> {
    let file = wrapper.filelike.bind(py);
    if !file.hasattr("fileno")? || lock(responder).head_sent() {
        return Ok(false);
    }
    let Ok(fd) = file.call_method0("fileno").and_then(|f| f.extract::<i32>()) else {
        return Ok(false);
    };
    let offset: u64 = match file.hasattr("tell")? {
        true => file
            .call_method0("tell")
            .and_then(|t| t.extract())
            .unwrap_or(0),
        false => 0,
    };
    // SAFETY: fileno() returned a descriptor the file object keeps open at
    // least until we return; we only borrow it here to duplicate it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let Ok(owned) = borrowed.as_fd().try_clone_to_owned() else {
        return Ok(false);
    };
    let file = std::fs::File::from(owned);
    let Ok(meta) = file.metadata() else {
        return Ok(false);
    };
    if !meta.is_file() {
        return Ok(false);
    }
    let available = meta.len().saturating_sub(offset);
    lock(responder)
        .send_file(file, offset, available)
        .or_else(ignore_disconnect)?;
    Ok(true)
}

/// The app raised: a 500 (or 413) if nothing was sent yet, else the
/// connection is cut. Either way the traceback goes to the error log.
fn fail(py: Python<'_>, responder: &SharedResponder, err: &PyErr, overflowed: bool) {
    let mut r = lock(responder);
    // An overflow was logged as a refusal (`log_overflow`).
    if !overflowed {
        tracing::error!(request = %r.tag(), "WSGI app raised an exception:\n{}", traceback_text(py, err));
    }
    if r.head_sent() {
        r.cut();
        return;
    }
    let status = if overflowed {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    r.send_error(error_head(status));
}

/// The catalogue's answer for `status` as the head the connection awaits.
pub fn error_head(status: StatusCode) -> Head {
    let ErrorAnswer {
        status,
        headers,
        body,
    } = ErrorAnswer::new(status);
    Head {
        status,
        reason: None,
        headers,
        body: BodyPlan::Full(body),
    }
}
