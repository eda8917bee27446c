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

/// The response of one request as its Python thread builds it: where it
/// stands ([`State`]) and the pipe its parts go through. Every change of
/// state is one of its methods.
pub struct Responder {
    pipe: Arc<Pipe>,
    /// "METHOD target", for log lines about this request.
    tag: Tag,
    /// How reading the request body went (only for requests with one).
    input: Option<Outcome>,
    state: State,
}

/// Where a response stands. The head goes out once: after `Started`, only
/// the body's count changes, or an answer to a failure replaces the rest.
enum State {
    /// start_response has not been called.
    Unstarted,
    /// start_response recorded the head; nothing is sent yet.
    Started(Pending),
    /// The app's head is out; its body follows chunk by chunk (or as a
    /// file the connection sends).
    Streaming(Count),
    /// The app's head went out with the whole body (`send_whole`).
    Whole(Count),
    /// The app failed: a 500 (or 413) went out instead of its head, or the
    /// connection was cut after it.
    Failed(Count),
    /// The client's body failed and the client has had its answer: the
    /// fault's status instead of the app's head, or a cut connection.
    FaultAnswered(Count),
}

/// The head start_response recorded, sent with the first body bytes or at
/// the end.
struct Pending {
    status: StatusCode,
    reason: Option<hyper::ext::ReasonPhrase>,
    headers: HeaderMap,
    content_length: Option<u64>,
}

/// The body against the app's Content-Length.
#[derive(Clone, Copy, Default)]
struct Count {
    declared: Option<u64>,
    written: u64,
}

/// Why start_response may not record a head now.
#[derive(Debug, PartialEq, Eq)]
pub enum StartRefused {
    /// Called with `exc_info` after the head went out: re-raise it.
    HeadSent,
    /// Called again without `exc_info`.
    Twice,
}

pub type SharedResponder = Arc<Mutex<Responder>>;

pub fn lock(r: &SharedResponder) -> MutexGuard<'_, Responder> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

impl Responder {
    pub fn new(pipe: Arc<Pipe>, tag: Tag) -> SharedResponder {
        Arc::new(Mutex::new(Responder {
            pipe,
            tag,
            input: None,
            state: State::Unstarted,
        }))
    }

    pub fn tag(&self) -> &Tag {
        &self.tag
    }

    /// Reading the request body reports to `read`: a failure there decides
    /// the answer (`send_head`).
    pub fn watch_input(&mut self, read: Outcome) {
        self.input = Some(read);
    }

    /// The client's request body failed (timed out, malformed, gone).
    pub fn client_fault(&self) -> Option<BodyError> {
        self.input.as_ref()?.get()?.client().cloned()
    }

    /// A head is out: the app's, or an answer given instead of it.
    pub fn head_sent(&self) -> bool {
        !matches!(self.state, State::Unstarted | State::Started(_))
    }

    /// The Content-Length the app declared, if any.
    pub fn declared_length(&self) -> Option<u64> {
        self.count().declared
    }

    /// The headers start_response recorded, while they are unsent.
    pub fn pending_headers(&self) -> Option<&HeaderMap> {
        match &self.state {
            State::Started(pending) => Some(&pending.headers),
            _ => None,
        }
    }

    fn count(&self) -> Count {
        match &self.state {
            State::Unstarted => Count::default(),
            State::Started(pending) => Count {
                declared: pending.content_length,
                written: 0,
            },
            State::Streaming(count)
            | State::Whole(count)
            | State::Failed(count)
            | State::FaultAnswered(count) => *count,
        }
    }

    /// Whether start_response may record a head now (a second call needs
    /// `exc_info`, and after the head is out it only re-raises).
    pub fn may_start(&self, exc_info: bool) -> Result<(), StartRefused> {
        match (exc_info, &self.state) {
            (true, _) if self.head_sent() => Err(StartRefused::HeadSent),
            (false, State::Unstarted) | (true, _) => Ok(()),
            (false, _) => Err(StartRefused::Twice),
        }
    }

    /// start_response: records the head, replacing an unsent one.
    pub fn start(
        &mut self,
        status: StatusCode,
        reason: Option<hyper::ext::ReasonPhrase>,
        headers: HeaderMap,
        content_length: Option<u64>,
    ) {
        self.state = State::Started(Pending {
            status,
            reason,
            headers,
            content_length,
        });
    }

    /// The client's body failed: it gets the fault's status (once), or,
    /// when the app's head is already out, a cut connection.
    pub fn answer_fault(&mut self, fault: &BodyError) {
        self.answer_fault_at(fault, self.count());
    }

    fn answer_fault_at(&mut self, fault: &BodyError, count: Count) {
        if matches!(self.state, State::FaultAnswered(_)) {
            return;
        }
        let head_sent = self.head_sent();
        self.state = State::FaultAnswered(count);
        if head_sent {
            self.pipe.fail();
            return;
        }
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
        self.send_app_head(plan, State::Streaming, 0)
    }

    /// Sends the head with `body` as the whole body, under a Content-Length
    /// of its size: the app's own field is kept when it is already the one
    /// we would write.
    pub fn send_whole(&mut self, body: Bytes) -> Result<(), SendError> {
        let State::Started(pending) = &mut self.state else {
            return Err(SendError::NotStarted);
        };
        let headers = &mut pending.headers;
        let mut digits = itoa::Buffer::new();
        let length = digits.format(body.len());
        let mut fields = headers.get_all(CONTENT_LENGTH).iter();
        let canonical = matches!((fields.next(), fields.next()), (Some(v), None) if v == length);
        if !canonical {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let written = body.len() as u64;
        self.send_app_head(BodyPlan::Full(body), State::Whole, written)
    }

    /// Sends the head for `available` bytes of `file` from `offset` (no
    /// more than the app's Content-Length), which the connection sends.
    pub fn send_file(
        &mut self,
        file: std::fs::File,
        offset: u64,
        available: u64,
    ) -> Result<(), SendError> {
        let len = self
            .declared_length()
            .map_or(available, |n| n.min(available));
        if let State::Started(pending) = &mut self.state {
            pending
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
        self.send_app_head(BodyPlan::File { file, offset, len }, State::Streaming, len)
    }

    /// Sends the recorded head with `plan`; the response is then `sent`
    /// with `written` bytes of its body counted.
    fn send_app_head(
        &mut self,
        plan: BodyPlan,
        sent: fn(Count) -> State,
        written: u64,
    ) -> Result<(), SendError> {
        if let Some(fault) = self.client_fault() {
            let count = Count {
                written,
                ..self.count()
            };
            self.answer_fault_at(&fault, count);
            return Err(SendError::Disconnected);
        }
        let State::Started(pending) = &self.state else {
            return Err(SendError::NotStarted);
        };
        let count = Count {
            declared: pending.content_length,
            written,
        };
        let State::Started(pending) = std::mem::replace(&mut self.state, sent(count)) else {
            unreachable!("checked above");
        };
        self.pipe
            .send_head(Head {
                status: pending.status,
                reason: pending.reason,
                headers: pending.headers,
                body: plan,
            })
            .map_err(|Disconnected| SendError::Disconnected)
    }

    /// The app failed before its head went out: `head` answers instead.
    pub fn send_error(&mut self, head: Head) {
        self.state = State::Failed(self.count());
        let _ = self.pipe.send_head(head);
    }

    /// The app failed after its head went out: the connection is cut.
    pub fn cut(&mut self) {
        self.state = State::Failed(self.count());
        self.pipe.fail();
    }

    /// End of the body: an unsent head goes out now; a body shorter than
    /// its Content-Length cuts the connection (a clean end would lie to the
    /// client).
    pub fn end_body(&mut self) -> Result<(), SendError> {
        // A body that broke off is answered by `call::run`, never ended
        // cleanly here.
        if self.client_fault().is_some() {
            return Ok(());
        }
        let count = self.count();
        match self.state {
            State::Unstarted | State::Started(_) => match count.declared.filter(|&n| n > 0) {
                Some(n) => {
                    tracing::error!(request = %self.tag, "WSGI app declared Content-Length {n} but sent no body; connection closed");
                    self.send_head(BodyPlan::Stream)
                        .or_else(ignore_disconnect)?;
                    self.cut();
                }
                None => self
                    .send_head(BodyPlan::Full(Bytes::new()))
                    .or_else(ignore_disconnect)?,
            },
            // The body went out with the head.
            State::Whole(_) => {}
            State::Streaming(_) | State::Failed(_) | State::FaultAnswered(_) => match count {
                Count {
                    declared: Some(n),
                    written,
                } if written < n => {
                    tracing::error!(
                        request = %self.tag,
                        "WSGI app sent {written} of its {n}-byte Content-Length; connection closed"
                    );
                    self.pipe.fail();
                }
                _ => self.pipe.finish(),
            },
        }
        Ok(())
    }

    /// Trims `data` to what Content-Length still allows (logging the excess
    /// once) and counts it.
    fn admit(&mut self, mut data: Bytes) -> Bytes {
        let count = match &mut self.state {
            State::Unstarted | State::Started(_) => return data,
            State::Streaming(count)
            | State::Whole(count)
            | State::Failed(count)
            | State::FaultAnswered(count) => count,
        };
        if let Some(limit) = count.declared {
            let room = limit.saturating_sub(count.written);
            if data.len() as u64 > room {
                if room > 0 || count.written == limit {
                    tracing::error!(
                        request = %self.tag,
                        "WSGI app sent more than its Content-Length ({limit} bytes); the excess was dropped"
                    );
                }
                data.truncate(room as usize);
            }
        }
        count.written += data.len() as u64;
        data
    }
}

/// A client gone is no error of the app's: it just stops producing.
pub fn ignore_disconnect(e: SendError) -> Result<(), SendError> {
    match e {
        SendError::Disconnected => Ok(()),
        other => Err(other),
    }
}

#[derive(Debug)]
pub enum SendError {
    /// Body bytes before start_response.
    NotStarted,
    /// The client is gone (or its body failed); stop producing.
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
pub fn send_chunk(
    py: Python<'_>,
    responder: &SharedResponder,
    data: Bytes,
) -> Result<(), SendError> {
    if data.is_empty() {
        return Ok(());
    }
    let pipe = {
        let mut r = lock(responder);
        if !r.head_sent() {
            // The whole declared body in the first chunk, a framework's
            // usual answer: it goes with the head, as a list's does.
            if r.declared_length() == Some(data.len() as u64) {
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
    responder: SharedResponder,
}

impl StartResponse {
    pub fn new(responder: SharedResponder) -> Self {
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
        let allowed = lock(&self.responder).may_start(exc_info.is_some());
        match (allowed, exc_info) {
            (Err(StartRefused::HeadSent), Some(info)) => return Err(reraise(info)),
            (Err(_), _) => {
                return Err(PyAssertionError::new_err(
                    "start_response() called a second time without exc_info",
                ))
            }
            (Ok(()), _) => {}
        }
        let (status, reason) = parse_status(status)?;
        let (headers, content_length) = parse_headers(headers)?;
        lock(&self.responder).start(status, reason, headers, content_length);
        Ok(Write {
            responder: self.responder.clone(),
        })
    }
}

/// The `write(data)` callable of PEP 3333's imperative API.
#[pyclass(module = "portico")]
pub struct Write {
    responder: SharedResponder,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn responder() -> SharedResponder {
        let parts = http::Request::new(()).into_parts().0;
        Responder::new(Pipe::new(), Tag(Arc::new(parts)))
    }

    #[test]
    fn the_head_goes_out_once_and_the_body_keeps_to_its_length() {
        let shared = responder();
        let mut r = lock(&shared);
        assert_eq!(r.may_start(false), Ok(()));
        assert!(matches!(
            r.send_head(BodyPlan::Stream),
            Err(SendError::NotStarted)
        ));
        r.start(StatusCode::OK, None, HeaderMap::new(), Some(3));
        assert_eq!(r.declared_length(), Some(3));
        assert_eq!(r.may_start(false), Err(StartRefused::Twice));
        assert_eq!(r.may_start(true), Ok(()));
        r.send_head(BodyPlan::Stream).unwrap();
        assert!(r.head_sent());
        assert_eq!(r.may_start(true), Err(StartRefused::HeadSent));
        assert!(matches!(
            r.send_head(BodyPlan::Stream),
            Err(SendError::NotStarted)
        ));
        assert_eq!(&r.admit(Bytes::from_static(b"abcd"))[..], b"abc");
        assert!(r.admit(Bytes::from_static(b"e")).is_empty());
    }

    #[test]
    fn a_whole_body_goes_with_the_head() {
        let shared = responder();
        let mut r = lock(&shared);
        r.start(StatusCode::OK, None, HeaderMap::new(), None);
        r.send_whole(Bytes::from_static(b"hello")).unwrap();
        assert!(r.head_sent());
        assert!(matches!(r.state, State::Whole(Count { written: 5, .. })));
        // Nothing more to end: the body went out with the head.
        r.end_body().unwrap();
    }
}
