//! `start_response(status, headers, exc_info=None)` and the `write()`
//! callable it returns, sharing one [`Responder`]: the response state of a
//! request on its Python thread.
//!
//! start_response only records the status and headers (validated: status
//! `NNN reason`, header names as tokens, values latin-1 without CR/LF/NUL,
//! no hop-by-hop fields); they are sent with the first non-empty body chunk
//! or at the end. A second call needs `exc_info`, and re-raises it once the
//! headers are sent.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH};
use http::StatusCode;
use pyo3::exceptions::{PyAssertionError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

use super::input::Outcome;
use super::pipe::{BodyPlan, Disconnected, Head, Pipe};
use super::str_cache::StrCache;
use super::Tag;
use crate::request::body::BodyError;

/// The response of one request as its Python thread builds it.
pub struct Responder {
    pub pipe: Arc<Pipe>,
    /// Set by start_response, taken when the head is sent.
    pub pending: Option<(StatusCode, HeaderMap)>,
    pub reason: Option<hyper::ext::ReasonPhrase>,
    /// `start_response` was called at least once.
    pub started: bool,
    pub head_sent: bool,
    /// The head went out with the whole body (`Responder::send_whole`).
    pub whole: bool,
    pub content_length: Option<u64>,
    pub written: u64,
    /// "METHOD target", for log lines about this request.
    pub tag: Tag,
    /// How reading the request body went (only for requests with one).
    pub input: Option<Outcome>,
    /// The client's body failed and the client has had its answer for it.
    pub fault_answered: bool,
}

pub type Shared = Arc<Mutex<Responder>>;

pub fn lock(r: &Shared) -> MutexGuard<'_, Responder> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

impl Responder {
    pub fn new(pipe: Arc<Pipe>, tag: Tag) -> Shared {
        Arc::new(Mutex::new(Responder {
            pipe,
            pending: None,
            reason: None,
            started: false,
            head_sent: false,
            whole: false,
            content_length: None,
            written: 0,
            tag,
            input: None,
            fault_answered: false,
        }))
    }

    /// The client's request body failed (timed out, malformed, gone).
    pub fn client_fault(&self) -> Option<BodyError> {
        self.input.as_ref()?.get()?.client().cloned()
    }

    /// The client's body failed: it gets the fault's status (once), or,
    /// when the app's head is already out, a cut connection.
    pub fn answer_fault(&mut self, fault: &BodyError) {
        if std::mem::replace(&mut self.fault_answered, true) {
            return;
        }
        if self.head_sent {
            self.pipe.fail();
            return;
        }
        self.head_sent = true;
        self.pending = None;
        let mut head = super::call::error_head(fault.status());
        // The rest of the body is unread: the connection cannot carry
        // another request (dropped again for HTTP/2).
        head.headers
            .insert(CONNECTION, HeaderValue::from_static("close"));
        let _ = self.pipe.send_head(head);
    }

    /// Sends the head now, with `plan` for the body. After the client's
    /// body failed, whatever the app answers, the client gets the fault's
    /// status instead, and the app is told the client is gone.
    pub fn send_head(&mut self, plan: BodyPlan) -> Result<(), SendError> {
        if let Some(fault) = self.client_fault() {
            self.answer_fault(&fault);
            return Err(SendError::Disconnected);
        }
        let (status, headers) = self.pending.take().ok_or(SendError::NotStarted)?;
        self.head_sent = true;
        self.pipe
            .send_head(Head {
                status,
                reason: self.reason.take(),
                headers,
                body: plan,
            })
            .map_err(|Disconnected| SendError::Disconnected)
    }

    /// Sends the head with `body` as the whole body, under a Content-Length
    /// of its size: the app's own field is kept when it is already the one
    /// we would write.
    pub fn send_whole(&mut self, body: Bytes) -> Result<(), SendError> {
        let Some((_, headers)) = self.pending.as_mut() else {
            return Err(SendError::NotStarted);
        };
        let mut digits = itoa::Buffer::new();
        let length = digits.format(body.len());
        let mut fields = headers.get_all(CONTENT_LENGTH).iter();
        let canonical = matches!((fields.next(), fields.next()), (Some(v), None) if v == length);
        if !canonical {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        self.written = body.len() as u64;
        self.whole = true;
        self.send_head(BodyPlan::Full(body))
    }

    /// Trims `data` to what Content-Length still allows (logging the excess
    /// once) and counts it.
    fn admit(&mut self, mut data: Bytes) -> Bytes {
        if let Some(limit) = self.content_length {
            let room = limit.saturating_sub(self.written);
            if data.len() as u64 > room {
                if room > 0 || self.written == limit {
                    tracing::error!(
                        request = %self.tag,
                        "WSGI app sent more than its Content-Length ({limit} bytes); the excess was dropped"
                    );
                }
                data.truncate(room as usize);
            }
        }
        self.written += data.len() as u64;
        data
    }
}

#[derive(Debug)]
pub enum SendError {
    /// Body bytes before start_response.
    NotStarted,
    /// The client is gone; stop producing.
    Disconnected,
}

impl From<SendError> for PyErr {
    fn from(e: SendError) -> PyErr {
        match e {
            SendError::NotStarted => {
                PyAssertionError::new_err("write() or body data before start_response()")
            }
            SendError::Disconnected => PyOSError::new_err("client disconnected"),
        }
    }
}

/// Sends a body chunk (and the head before the first one), releasing the
/// GIL only if the client is far enough behind that we must wait.
pub fn send_chunk(py: Python<'_>, responder: &Shared, data: Bytes) -> Result<(), SendError> {
    if data.is_empty() {
        return Ok(());
    }
    let pipe = {
        let mut r = lock(responder);
        if !r.head_sent {
            // The whole declared body in the first chunk, a framework's
            // usual answer: it goes with the head, as a list's does.
            if r.content_length == Some(data.len() as u64) {
                return r.send_whole(data);
            }
            r.send_head(BodyPlan::Stream)?;
        }
        let data = r.admit(data);
        if data.is_empty() {
            return Ok(());
        }
        let pipe = r.pipe.clone();
        drop(r);
        if pipe.has_room() {
            return pipe
                .send_chunk(data)
                .map_err(|Disconnected| SendError::Disconnected);
        }
        (pipe, data)
    };
    let (pipe, data) = pipe;
    // Waiting for room is waiting for the client to read: not app time.
    py.detach(|| super::pool::waiting_on_client(|| pipe.send_chunk(data)))
        .map_err(|Disconnected| SendError::Disconnected)
}

#[pyclass(module = "portico")]
pub struct StartResponse {
    responder: Shared,
}

impl StartResponse {
    pub fn new(responder: Shared) -> Self {
        StartResponse { responder }
    }
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info=None))]
    fn __call__(
        &self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Write> {
        let exc_info = exc_info.filter(|e| !e.is_none());
        {
            let r = lock(&self.responder);
            match exc_info {
                Some(info) if r.head_sent => return Err(reraise(info)),
                None if r.started => {
                    return Err(PyAssertionError::new_err(
                        "start_response() called a second time without exc_info",
                    ))
                }
                _ => {}
            }
        }
        let (status, reason) = parse_status(status)?;
        let (headers, content_length) = parse_headers(headers)?;
        let mut r = lock(&self.responder);
        r.pending = Some((status, headers));
        r.reason = reason;
        r.content_length = content_length;
        r.started = true;
        Ok(Write {
            responder: self.responder.clone(),
        })
    }
}

/// The `write(data)` callable of PEP 3333's imperative API.
#[pyclass(module = "portico")]
pub struct Write {
    responder: Shared,
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = body_bytes(data)?;
        send_chunk(py, &self.responder, bytes)?;
        Ok(())
    }
}

/// A body item: must be bytes (PEP 3333 forbids str).
pub fn body_bytes(item: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    match item.cast::<pyo3::types::PyBytes>() {
        Ok(b) if b.as_bytes().len() >= BORROW_AT_LEAST => {
            Ok(Bytes::from_owner(BorrowedPyBytes::new(b)))
        }
        Ok(b) => Ok(Bytes::copy_from_slice(b.as_bytes())),
        Err(_) => Err(PyTypeError::new_err(format!(
            "WSGI body items must be bytes, not {}",
            item.get_type().name()?
        ))),
    }
}

/// Below this, copying a chunk is cheaper than sharing the Python object.
const BORROW_AT_LEAST: usize = 4096;

/// A Python `bytes` object's buffer, shared without copying: `bytes` are
/// immutable and the buffer lives as long as the object, which this holds.
struct BorrowedPyBytes {
    _owner: Py<pyo3::types::PyBytes>,
    ptr: *const u8,
    len: usize,
}

impl BorrowedPyBytes {
    fn new(bytes: &Bound<'_, pyo3::types::PyBytes>) -> Self {
        let data = bytes.as_bytes();
        BorrowedPyBytes {
            ptr: data.as_ptr(),
            len: data.len(),
            _owner: bytes.clone().unbind(),
        }
    }
}

// SAFETY: the pointer targets the immutable buffer of a `bytes` object that
// `_owner` keeps alive; reading it needs no GIL, and dropping `_owner` off a
// Python thread is handled by PyO3 (the decref is deferred to the next holder
// of the GIL).
unsafe impl Send for BorrowedPyBytes {}

impl AsRef<[u8]> for BorrowedPyBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see the `Send` impl: valid and immutable for our lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

fn reraise(info: &Bound<'_, PyAny>) -> PyErr {
    match info
        .cast::<PyTuple>()
        .ok()
        .and_then(|t| t.get_item(1).ok())
        .filter(|v| !v.is_none())
    {
        Some(value) => PyErr::from_value(value),
        None => PyTypeError::new_err("exc_info must be a (type, value, traceback) tuple"),
    }
}

fn latin1_bytes<'a>(text: &'a Bound<'_, PyAny>, what: &str) -> PyResult<Cow<'a, [u8]>> {
    let text = text
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a str")))?;
    // ASCII, nearly every status and header, is its own latin-1 encoding
    // and CPython hands it out without a copy.
    if let Ok(ascii) = text.to_str().map(str::as_bytes) {
        if ascii.is_ascii() {
            return Ok(Cow::Borrowed(ascii));
        }
    }
    let text = text.to_cow()?;
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .map(Cow::Owned)
        .ok_or_else(|| PyValueError::new_err(format!("{what} must be latin-1: {text:?}")))
}

fn parse_status(
    status: &Bound<'_, PyAny>,
) -> PyResult<(StatusCode, Option<hyper::ext::ReasonPhrase>)> {
    let bytes = latin1_bytes(status, "status")?;
    let bad = || {
        PyValueError::new_err(format!(
            "status must be \"NNN Reason\", got {:?}",
            String::from_utf8_lossy(&bytes)
        ))
    };
    if bytes.len() < 4 || bytes[3] != b' ' || bytes.iter().any(|&b| b < 0x20 && b != b'\t') {
        return Err(bad());
    }
    let code = StatusCode::from_bytes(&bytes[..3])
        .ok()
        .filter(|s| s.as_u16() >= 100)
        .ok_or_else(bad)?;
    let reason = &bytes[4..];
    let custom = (code.canonical_reason().map(str::as_bytes) != Some(reason))
        .then(|| hyper::ext::ReasonPhrase::try_from(reason).ok())
        .flatten();
    Ok((code, custom))
}

fn parse_headers(headers: &Bound<'_, PyAny>) -> PyResult<(HeaderMap, Option<u64>)> {
    let Ok(list) = headers.cast::<pyo3::types::PyList>() else {
        return Err(PyTypeError::new_err(
            "response headers must be a list of (name, value) tuples",
        ));
    };
    // Room for the app's headers plus the Content-Length and Server we may add.
    let mut map = HeaderMap::with_capacity(list.len() + 2);
    let mut content_length = None;
    for item in list.iter() {
        let pair = item
            .cast::<PyTuple>()
            .ok()
            .filter(|t| t.len() == 2)
            .ok_or_else(|| {
                PyTypeError::new_err("each response header must be a (name, value) tuple")
            })?;
        let (name, value) = (pair.get_item(0)?, pair.get_item(1)?);
        let (name, value) = PARSED.with_borrow_mut(|parsed| -> PyResult<_> {
            let name = parsed.names.get_or_make(&name, || header_name(&name))?;
            let value = parsed
                .values
                .get_or_make(&value, || header_value(&name, &value))?;
            Ok((name, value))
        })?;
        if name == CONTENT_LENGTH {
            content_length = Some(
                crate::request::headers::content_length(value.as_bytes())
                    .ok_or_else(|| PyValueError::new_err("Content-Length must be a number"))?,
            );
        }
        map.append(name, value);
    }
    Ok((map, content_length))
}

struct Parsed {
    names: StrCache<HeaderName>,
    values: StrCache<HeaderValue>,
}

thread_local! {
    /// Per thread, so a lookup takes no lock.
    static PARSED: RefCell<Parsed> = RefCell::new(Parsed {
        names: StrCache::new(),
        values: StrCache::new(),
    });
}

/// A response header name: a token, and not one that belongs to the
/// connection.
fn header_name(text: &Bound<'_, PyAny>) -> PyResult<HeaderName> {
    let bytes = latin1_bytes(text, "header name")?;
    let name = HeaderName::from_bytes(&bytes).map_err(|_| {
        PyValueError::new_err(format!(
            "invalid header name {:?}",
            String::from_utf8_lossy(&bytes)
        ))
    })?;
    if crate::request::headers::is_hop_by_hop(&name) {
        return Err(PyValueError::new_err(format!(
            "hop-by-hop header {name:?} is not allowed in a WSGI response"
        )));
    }
    Ok(name)
}

/// A response header value: latin-1 without CR, LF or NUL.
fn header_value(name: &HeaderName, text: &Bound<'_, PyAny>) -> PyResult<HeaderValue> {
    let bytes = latin1_bytes(text, "header value")?;
    if bytes.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
        return Err(PyValueError::new_err(format!(
            "header {name} has CR, LF or NUL in its value"
        )));
    }
    HeaderValue::from_bytes(&bytes)
        .map_err(|_| PyValueError::new_err(format!("invalid value for header {name}")))
}
