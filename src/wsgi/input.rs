//! `wsgi.input`: the request body as a file-like object (read, readline,
//! readlines, iteration), ending at CONTENT_LENGTH or at the end of a chunked
//! body.
//!
//! Small bodies arrive already read (the connection read them before the
//! app was called); larger ones stream from the socket as the app reads,
//! with the GIL released while waiting. hyper sends `100 Continue` only when
//! the body is first read, so an app that never reads never invites it.
//! A body longer than the route's `max_body_size` raises OSError and the
//! request answers 413 if the app has not started its response.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::body::RequestBody;
use bytes::{Buf, Bytes, BytesMut};
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
    /// Still on the socket.
    Streaming(RequestBody),
}

struct State {
    buf: BytesMut,
    source: Option<RequestBody>,
    /// Bytes taken from the socket so far, for the size limit.
    received: u64,
    limit: u64,
}

#[pyclass(module = "portico")]
pub struct Input {
    state: Mutex<State>,
    overflowed: Arc<AtomicBool>,
}

impl Input {
    pub fn new(source: Source, limit: u64, overflowed: Arc<AtomicBool>) -> Self {
        let (buf, source) = match source {
            Source::Empty => (BytesMut::new(), None),
            Source::Buffered(bytes) => (BytesMut::from(bytes), None),
            Source::Streaming(body) => (BytesMut::new(), Some(body)),
        };
        Input {
            state: Mutex::new(State {
                buf,
                source,
                received: 0,
                limit,
            }),
            overflowed,
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
    /// Reads one more piece from the socket; false at the end of the body.
    fn fill(&mut self, py: Python<'_>, overflowed: &AtomicBool) -> PyResult<bool> {
        let Some(body) = self.source.as_mut() else {
            return Ok(false);
        };
        let frame = py.detach(|| futures_executor::block_on(body.frame()));
        match frame {
            None => {
                self.source = None;
                Ok(false)
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    self.received += data.len() as u64;
                    if self.received > self.limit {
                        self.source = None;
                        overflowed.store(true, Ordering::Relaxed);
                        return Err(PyOSError::new_err(format!(
                            "request body larger than the route's max_body_size ({} bytes)",
                            self.limit
                        )));
                    }
                    self.buf.extend_from_slice(&data);
                }
                Ok(true)
            }
            Some(Err(err)) => {
                self.source = None;
                Err(PyOSError::new_err(format!(
                    "client connection failed while sending the request body: {err}"
                )))
            }
        }
    }

    /// Up to `size` bytes (all when `None`).
    fn read(&mut self, py: Python<'_>, size: Option<usize>, flag: &AtomicBool) -> PyResult<Bytes> {
        while size.is_none_or(|n| self.buf.len() < n) && self.fill(py, flag)? {}
        let n = size.map_or(self.buf.len(), |n| n.min(self.buf.len()));
        Ok(self.buf.split_to(n).freeze())
    }

    /// Up to and including the next `\n`, at most `size` bytes.
    fn readline(
        &mut self,
        py: Python<'_>,
        size: Option<usize>,
        flag: &AtomicBool,
    ) -> PyResult<Bytes> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + pos + 1;
                let n = size.map_or(end, |s| s.min(end));
                return Ok(self.buf.split_to(n).freeze());
            }
            scanned = self.buf.len();
            if size.is_some_and(|s| self.buf.len() >= s) || !self.fill(py, flag)? {
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
        let data = self.with_state(|s| s.read(py, limit(size), &self.overflowed))?;
        Ok(PyBytes::new(py, data.chunk()))
    }

    #[pyo3(signature = (size=None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.with_state(|s| s.readline(py, limit(size), &self.overflowed))?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (hint=None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let hint = limit(hint).filter(|&h| h > 0);
        let lines = PyList::empty(py);
        let mut total = 0;
        loop {
            let line = self.with_state(|s| s.readline(py, None, &self.overflowed))?;
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
        let line = self.with_state(|s| s.readline(py, None, &self.overflowed))?;
        Ok((!line.is_empty()).then(|| PyBytes::new(py, &line)))
    }
}
