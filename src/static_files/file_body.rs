//! A response body that streams byte ranges of an open file in constant memory.
//!
//! Steps, in order:
//! 1. the caller lays out the body as segments: literal bytes (multipart
//!    headers and delimiters) and file ranges; the exact length is known up
//!    front, so Content-Length is always set;
//! 2. each `poll_frame` yields the next literal, or reads at most
//!    [`CHUNK_SIZE`] bytes of the current file range with a positional
//!    `pread` (no shared cursor, so one handle serves many responses) into
//!    uninitialised memory of a buffer reused once hyper has sent the last
//!    chunk; a file whose bytes are in memory ([`Source::Memory`]) is sliced
//!    instead, with no copy and no syscall;
//! 3. a read that returns 0 before the range is done means the file shrank:
//!    the stream ends with an error so hyper cuts the connection instead of
//!    sending a short body that looks complete.
//!
//! hyper polls a body only when its write buffer has room, so at most a few
//! chunks are in memory per response whatever the file's size. Reads are
//! blocking but short; the server runs this on its current-thread runtime by
//! design (page-cache reads of 128 KiB cost microseconds).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};

use crate::request::sendfile::SendQueue;

/// Bytes read per frame: big enough to amortise the syscall, small enough
/// that a slow client holding a few of them costs little.
pub const CHUNK_SIZE: usize = 128 * 1024;

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// An open handle, shared (reads are positional).
    File(Arc<File>),
    /// The whole file, read once.
    Memory(Bytes),
    /// Both: the bytes, unless the connection can `sendfile` from the handle
    /// (files of at least [`SENDFILE_MIN`] bytes).
    Both(Bytes, Arc<File>),
}

/// From this size on, `sendfile` (one more syscall, no copy) is cheaper than
/// copying the file's bytes from memory into the socket.
pub const SENDFILE_MIN: u64 = 64 * 1024;

#[derive(Debug)]
enum Segment {
    Literal(Bytes),
    File(Range<u64>),
}

/// The body of a 200 or 206 file response.
#[derive(Debug)]
pub struct FileBody {
    source: Source,
    segments: VecDeque<Segment>,
    remaining: u64,
    /// Reused for reads: its memory comes back once hyper drops a chunk.
    buf: BytesMut,
    /// Set when the connection sends file ranges itself (`sendfile`).
    zero_copy: Option<Arc<SendQueue>>,
}

impl FileBody {
    /// One contiguous range (the whole file, or a single-range 206).
    pub fn single(source: Source, range: Range<u64>) -> Self {
        let remaining = range.end - range.start;
        let mut segments = VecDeque::new();
        if remaining > 0 {
            segments.push_back(Segment::File(range));
        }
        FileBody::new(source, segments, remaining)
    }

    fn new(source: Source, mut segments: VecDeque<Segment>, remaining: u64) -> Self {
        if let Source::Memory(bytes) = &source {
            for seg in segments.iter_mut() {
                if let Segment::File(r) = seg {
                    *seg = Segment::Literal(slice(bytes, r));
                }
            }
        }
        FileBody {
            source,
            segments,
            remaining,
            buf: BytesMut::new(),
            zero_copy: None,
        }
    }

    /// With the connection's queue (when it can `sendfile`), file ranges from
    /// a handle become placeholders queued on it (see `crate::request::sendfile`).
    pub fn send_with(&mut self, queue: Option<&Arc<SendQueue>>) {
        self.zero_copy = queue.cloned();
    }

    /// The whole body when it is one buffer in memory (no stream needed).
    pub fn into_full(mut self) -> Result<Bytes, Box<Self>> {
        match (self.segments.len(), self.segments.front()) {
            (0, _) => Ok(Bytes::new()),
            (1, Some(Segment::File(r))) if self.zero_copy.is_none() => match &self.source {
                Source::Both(bytes, _) => Ok(slice(bytes, r)),
                _ => Err(Box::new(self)),
            },
            (1, Some(Segment::Literal(_))) => match self.segments.pop_front() {
                Some(Segment::Literal(b)) => Ok(b),
                _ => unreachable!("checked above"),
            },
            _ => Err(Box::new(self)),
        }
    }

    /// A `multipart/byteranges` body (RFC 9110 §14.6) for `ranges` of a file
    /// of `total` bytes; each part carries `content_type`.
    pub fn multipart(
        source: Source,
        ranges: &[Range<u64>],
        total: u64,
        content_type: &str,
        boundary: &str,
    ) -> Self {
        let mut segments = VecDeque::with_capacity(ranges.len() * 2 + 1);
        let mut remaining = 0;
        for (i, r) in ranges.iter().enumerate() {
            // The CRLF before a delimiter belongs to the delimiter (RFC 2046),
            // so every part after the first starts with one.
            let head = format!(
                "{}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {}-{}/{total}\r\n\r\n",
                if i == 0 { "" } else { "\r\n" },
                r.start,
                r.end - 1,
            );
            remaining += head.len() as u64 + (r.end - r.start);
            segments.push_back(Segment::Literal(Bytes::from(head)));
            segments.push_back(Segment::File(r.clone()));
        }
        let tail = format!("\r\n--{boundary}--\r\n");
        remaining += tail.len() as u64;
        segments.push_back(Segment::Literal(Bytes::from(tail)));
        FileBody::new(source, segments, remaining)
    }

    /// Exact body length, for Content-Length.
    pub fn len(&self) -> u64 {
        self.remaining
    }

    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// Step 2 for a file segment: one chunk from the front range.
    fn read_chunk(&mut self) -> io::Result<Bytes> {
        let Some(Segment::File(range)) = self.segments.front_mut() else {
            return Ok(Bytes::new());
        };
        let (file, bytes) = match &self.source {
            Source::File(file) => (file, None),
            Source::Both(bytes, file) => (file, Some(bytes)),
            Source::Memory(_) => return Err(io::Error::other("file range over an in-memory body")),
        };
        let chunk = match (&self.zero_copy, bytes) {
            (Some(queue), _) => Some(queue.push(file.clone(), range.clone())),
            (None, Some(bytes)) => Some(slice(bytes, range)),
            (None, None) => None,
        };
        if let Some(chunk) = chunk {
            if chunk.is_empty() {
                return Err(io::Error::other(
                    "file range past the file's bytes in memory",
                ));
            }
            range.start += chunk.len() as u64;
            if range.start == range.end {
                self.segments.pop_front();
            }
            return Ok(chunk);
        }
        let want = (range.end - range.start).min(CHUNK_SIZE as u64) as usize;
        // Reclaims the previous chunk's memory if hyper has dropped it.
        self.buf.reserve(want);
        let spare = self.buf.spare_capacity_mut();
        let n = loop {
            let offset = i64::try_from(range.start).map_err(io::Error::other)?;
            // SAFETY: pread writes at most `want` bytes into the spare
            // capacity (at least `want` long after `reserve`), and we only
            // mark as initialised the `n` bytes it reports written.
            let r = unsafe {
                nix::libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), want, offset)
            };
            if r >= 0 {
                break r as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file shrank while sending: byte {} is gone", range.start),
            ));
        }
        // SAFETY: the kernel initialised `n <= want <= spare.len()` bytes.
        unsafe { self.buf.set_len(n) };
        let chunk = self.buf.split().freeze();
        range.start += n as u64;
        if range.start == range.end {
            self.segments.pop_front();
        }
        Ok(chunk)
    }
}

/// `range` of a file's bytes in memory (cut short if the file was).
fn slice(bytes: &Bytes, range: &Range<u64>) -> Bytes {
    let end = (range.end as usize).min(bytes.len());
    let start = (range.start as usize).min(end);
    bytes.slice(start..end)
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let chunk = match this.segments.front() {
            None => return Poll::Ready(None),
            Some(Segment::Literal(_)) => match this.segments.pop_front() {
                Some(Segment::Literal(b)) => b,
                _ => Bytes::new(),
            },
            Some(Segment::File(_)) => match this.read_chunk() {
                Ok(b) => b,
                Err(e) => {
                    // Nothing more will be sent; make the body end after this.
                    this.segments.clear();
                    this.remaining = 0;
                    return Poll::Ready(Some(Err(e)));
                }
            },
        };
        this.remaining = this.remaining.saturating_sub(chunk.len() as u64);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.segments.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    fn file_with(content: &[u8]) -> (tempfile::NamedTempFile, Source) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        io::Write::write_all(&mut f, content).unwrap();
        let opened = File::open(f.path()).unwrap();
        (f, Source::File(Arc::new(opened)))
    }

    #[tokio::test]
    async fn memory_source_is_sliced() {
        let mem = Source::Memory(Bytes::from_static(b"0123456789"));
        let body = FileBody::single(mem.clone(), 0..10);
        assert_eq!(&body.into_full().unwrap()[..], b"0123456789");
        let body = FileBody::single(mem.clone(), 2..4);
        assert_eq!(&body.into_full().unwrap()[..], b"23");
        let body = FileBody::multipart(mem, &[0..2, 5..7], 10, "text/plain", "XYZ");
        let got = body
            .into_full()
            .unwrap_err()
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert!(std::str::from_utf8(&got)
            .unwrap()
            .contains("\r\n\r\n56\r\n"));
        // A file source is never a full buffer.
        let (_t, f) = file_with(b"abc");
        assert!(FileBody::single(f, 0..3).into_full().is_err());
    }

    #[tokio::test]
    async fn streams_in_chunks_and_stops_at_range_end() {
        let content: Vec<u8> = (0..(CHUNK_SIZE * 2 + 10))
            .map(|i| (i % 251) as u8)
            .collect();
        let (_t, f) = file_with(&content);
        let mut body = FileBody::single(f, 0..content.len() as u64);
        assert_eq!(body.len(), content.len() as u64);
        let mut got = Vec::new();
        let mut frames = 0;
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            assert!(data.len() <= CHUNK_SIZE);
            got.extend_from_slice(&data);
            frames += 1;
        }
        assert_eq!(frames, 3);
        assert_eq!(got, content);

        let (_t, f) = file_with(&content);
        let body = FileBody::single(f, 5..15);
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], &content[5..15]);
    }

    #[tokio::test]
    async fn empty_range_is_empty_body() {
        let (_t, f) = file_with(b"");
        let body = FileBody::single(f, 0..0);
        assert!(body.is_end_stream());
        assert!(body.collect().await.unwrap().to_bytes().is_empty());
    }

    #[tokio::test]
    async fn multipart_layout_and_length() {
        let (_t, f) = file_with(b"0123456789");
        let body = FileBody::multipart(f, &[0..2, 5..7], 10, "text/plain", "XYZ");
        let len = body.len();
        let got = body.collect().await.unwrap().to_bytes();
        let expected = "--XYZ\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n01\
                        \r\n--XYZ\r\nContent-Type: text/plain\r\nContent-Range: bytes 5-6/10\r\n\r\n56\
                        \r\n--XYZ--\r\n";
        assert_eq!(std::str::from_utf8(&got).unwrap(), expected);
        assert_eq!(len, expected.len() as u64);
    }

    #[tokio::test]
    async fn shrinking_file_ends_with_error() {
        let (t, f) = file_with(&vec![7u8; CHUNK_SIZE + 100]);
        let mut body = FileBody::single(f, 0..(CHUNK_SIZE + 100) as u64);
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap().len(), CHUNK_SIZE);
        std::fs::OpenOptions::new()
            .write(true)
            .open(t.path())
            .unwrap()
            .set_len(10)
            .unwrap();
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(body.frame().await.is_none());
    }
}
