//! `wsgi.input`: the request body as a file-like object (read, readline,
//! readlines, iteration), ending at CONTENT_LENGTH or at the end of a chunked
//! body.
//!
//! With request buffering (the default) the body arrives whole, read by
//! the connection before the app was called: in memory, or in a temporary
//! file read here in pieces (without the GIL) and given back when the body
//! is read or the request ends ([`Input::release`]). Without it (`request_buffering = false`),
//! small bodies arrive already read and larger ones stream from the socket
//! as the app reads, with the GIL released while waiting; hyper sends `100
//! Continue` only when the body is first read, so an app that never reads
//! never invites it. A streamed body longer than the route's
//! `max_body_size` raises OSError and the request answers 413 if the app
//! has not started its response. A body the client failed to send (no
//! bytes for `--body-timeout`, broken chunked framing, the client gone)
//! raises OSError too, and the request answers 408 or 400 whatever the app
//! does (`super::call`).
//!
//! A failure sticks: every later read raises again, so an app that catches
//! the error never sees the end of a body that did not arrive whole. Time
//! spent waiting for the client's bytes is the client's, not the app's:
//! `--timeout` does not count it (`super::pool::waiting_on_client`).

use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};

use crate::request::body::{BodyError, RequestBody};
use crate::request::spool::SpoolFile;
use bytes::{Buf, Bytes, BytesMut};
use futures_executor::block_on;
use http_body_util::BodyExt;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

/// Where the body comes from.
#[derive(Default)]
pub enum Source {
    /// No body.
    #[default]
    Empty,
    /// Read in full already (or empty).
    Buffered(Bytes),
    /// Read in full into a temporary file, positioned at its start.
    File(SpoolFile),
    /// Still on the socket.
    Streaming(RequestBody),
}

/// Bytes read from a buffered body's file per read call.
const FILE_READ: usize = 64 * 1024;

/// Where the bytes not yet in `State::buf` are.
enum Rest {
    Socket(RequestBody),
    /// A buffered body's file and how much of it is left to read.
    File {
        file: SpoolFile,
        left: u64,
    },
}

impl Rest {
    /// The body is read, or the request over: a body's file is kept for a
    /// later body (nothing but this object ever had its descriptor).
    fn close(self) {
        if let Rest::File { file, .. } = self {
            file.recycle();
        }
    }
}

/// Why the body could not be read to its end.
#[derive(Debug, Clone)]
pub enum Failure {
    /// Past the route's `max_body_size` (this many bytes): 413.
    TooLarge(u64),
    /// The client's doing: 408 or 400 (`BodyError::status`).
    Client(BodyError),
}

impl Failure {
    fn to_pyerr(&self) -> PyErr {
        match self {
            Failure::TooLarge(limit) => PyOSError::new_err(format!(
                "request body larger than the route's max_body_size ({limit} bytes)"
            )),
            Failure::Client(err) => PyOSError::new_err(format!("request body: {err}")),
        }
    }

    /// The client's failure, if it is one.
    pub fn client(&self) -> Option<&BodyError> {
        match self {
            Failure::Client(err) => Some(err),
            Failure::TooLarge(_) => None,
        }
    }
}

/// Set once, when reading the body failed; the request's answer follows it.
pub type Outcome = Arc<OnceLock<Failure>>;

struct State {
    buf: BytesMut,
    /// `None` at the end of the body.
    source: Option<Rest>,
    /// Bytes taken from the socket so far, for the size limit.
    received: u64,
    limit: u64,
}

#[pyclass(module = "portico")]
pub struct Input {
    state: Mutex<State>,
    outcome: Outcome,
}

impl Input {
    pub fn new(source: Source, limit: u64, outcome: Outcome) -> Self {
        let (buf, source) = match source {
            Source::Empty => (BytesMut::new(), None),
            Source::Buffered(bytes) => (BytesMut::from(bytes), None),
            Source::File(file) => {
                let left = file.len();
                (BytesMut::new(), Some(Rest::File { file, left }))
            }
            Source::Streaming(body) => (BytesMut::new(), Some(Rest::Socket(body))),
        };
        Input {
            state: Mutex::new(State {
                buf,
                source,
                received: 0,
                limit,
            }),
            outcome,
        }
    }

    /// The request is over: its body's file is given back now (kept for a
    /// later body, or closed), even if the app kept a reference to
    /// `wsgi.input`, which reads as empty from then on.
    pub fn release(&self) {
        if let Ok(mut state) = self.state.try_lock() {
            if let Some(rest) = state.source.take() {
                rest.close();
            }
            state.buf = BytesMut::new();
        }
    }

    /// Reading releases the GIL while waiting for the socket, so a second
    /// thread reading the same stream at that moment would deadlock on this
    /// lock while holding the GIL; it gets an error instead.
    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> PyResult<R>) -> PyResult<R> {
        match self.state.try_lock() {
            Ok(mut state) => f(&mut state),
            Err(std::sync::TryLockError::Poisoned(e)) => f(&mut e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {
                Err(pyo3::exceptions::PyRuntimeError::new_err(
                    "wsgi.input is being read by another thread",
                ))
            }
        }
    }
}

impl State {
    /// Reads one more piece (from the body's file, or the socket); false
    /// at the end of the body.
    fn fill(&mut self, py: Python<'_>, outcome: &Outcome) -> PyResult<bool> {
        if let Some(failed) = outcome.get() {
            return Err(failed.to_pyerr());
        }
        if matches!(self.source, Some(Rest::File { .. })) {
            return self.fill_from_file(py);
        }
        let Some(Rest::Socket(body)) = self.source.as_mut() else {
            return Ok(false);
        };
        let frame = py.detach(|| super::pool::waiting_on_client(|| block_on(body.frame())));
        let failure = match frame {
            None => {
                self.source = None;
                return Ok(false);
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    return Ok(true);
                };
                self.received += data.len() as u64;
                if self.received <= self.limit {
                    self.buf.extend_from_slice(&data);
                    return Ok(true);
                }
                Failure::TooLarge(self.limit)
            }
            Some(Err(err)) => Failure::Client(err),
        };
        self.source = None;
        let err = failure.to_pyerr();
        let _ = outcome.set(failure);
        Err(err)
    }

    /// The next piece of a buffered body's file (the disk is not the
    /// client: this wait is the app's time).
    fn fill_from_file(&mut self, py: Python<'_>) -> PyResult<bool> {
        let Some(Rest::File { file, left }) = self.source.as_mut() else {
            return Ok(false);
        };
        if *left == 0 {
            if let Some(rest) = self.source.take() {
                rest.close();
            }
            return Ok(false);
        }
        let n = FILE_READ.min(usize::try_from(*left).unwrap_or(FILE_READ));
        let start = self.buf.len();
        self.buf.resize(start + n, 0);
        let read = py.detach(|| file.file_mut().read_exact(&mut self.buf[start..]));
        if let Err(err) = read {
            self.buf.truncate(start);
            self.source = None;
            return Err(PyOSError::new_err(format!(
                "reading the buffered request body: {err}"
            )));
        }
        *left -= n as u64;
        Ok(true)
    }

    /// Up to `size` bytes (all when `None`).
    fn read(&mut self, py: Python<'_>, size: Option<usize>, outcome: &Outcome) -> PyResult<Bytes> {
        while size.is_none_or(|n| self.buf.len() < n) && self.fill(py, outcome)? {}
        let n = size.map_or(self.buf.len(), |n| n.min(self.buf.len()));
        Ok(self.buf.split_to(n).freeze())
    }

    /// Up to and including the next `\n`, at most `size` bytes.
    fn readline(
        &mut self,
        py: Python<'_>,
        size: Option<usize>,
        outcome: &Outcome,
    ) -> PyResult<Bytes> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + pos + 1;
                let n = size.map_or(end, |s| s.min(end));
                return Ok(self.buf.split_to(n).freeze());
            }
            scanned = self.buf.len();
            if size.is_some_and(|s| self.buf.len() >= s) || !self.fill(py, outcome)? {
                let n = size.map_or(self.buf.len(), |s| s.min(self.buf.len()));
                return Ok(self.buf.split_to(n).freeze());
            }
        }
    }
}

/// Python passes -1 or None for "no limit".
fn limit(size: Option<isize>) -> Option<usize> {
    size.and_then(|n| usize::try_from(n).ok())
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size=None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.with_state(|s| s.read(py, limit(size), &self.outcome))?;
        Ok(PyBytes::new(py, data.chunk()))
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.with_state(|s| s.readline(py, limit(size), &self.outcome))?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let hint = limit(hint).filter(|&h| h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.with_state(|s| s.readline(py, None, &self.outcome))?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            lines.append(PyBytes::new(py, &line))?;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(lines)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.with_state(|s| s.readline(py, None, &self.outcome))?;
        Ok((!line.is_empty()).then(|| PyBytes::new(py, &line)))
    }
}
