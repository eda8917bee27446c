//! Request buffering (nginx's `proxy_request_buffering on`): a WSGI or CGI
//! request's whole body is read by the worker's I/O thread before the app
//! is called or the script started, so a slow uploader holds a connection
//! and a little memory, never a Python thread or a CGI process slot.
//!
//! [`spool`] reads the body through [`RequestBody`] (so `--body-timeout`,
//! malformed framing and the refused trailers apply unchanged), in order:
//! 1. each chunk is counted against the route's `max_body_size`: past it →
//!    413 ([`SpoolError::TooLarge`]) before anyone sees the body; a
//!    declared `Content-Length` over it was refused before (`service`);
//! 2. while the body fits `limits.body_buffer_size` it stays in memory (a
//!    body that came in one chunk, the usual small POST, is that chunk: no
//!    copy), as long as the bodies the worker is buffering in memory stay
//!    within [`MemoryBudget`] (1,024 of them at their limit): many slow
//!    uploads at once go to files instead of filling memory;
//! 3. past it, the body goes to an unnamed temporary file in
//!    `body_temp_dir` (`O_TMPFILE`: no name, so nothing is left behind
//!    whatever happens to the process), written by a disk thread in
//!    batches of at most `body_buffer_size` bytes: the I/O
//!    thread never waits for the disk, and at most that much of a body is
//!    in memory at any time (`file`);
//! 4. at the end the file is cut to the body's length and rewound: the app
//!    reads it, or it becomes the script's stdin.
//!
//! Closing the file is deleting it: the kernel frees its blocks with the
//! last descriptor. A file the app has read is kept for a later body
//! instead ([`SpoolFile::recycle`]; why in `file`).

mod file;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use http_body_util::BodyExt;

use crate::request::body::{BodyError, RequestBody};
use crate::request::refusal::Refusal;

/// How a route takes request bodies.
#[derive(Debug, Clone, Copy)]
pub struct Buffering<'a> {
    /// Read the whole body before the handler runs (`request_buffering`).
    pub on: bool,
    /// Bytes of a body held in memory; a longer one goes to a temporary
    /// file (`limits.body_buffer_size`).
    pub memory: usize,
    /// Where those files are made (`body_temp_dir`, checked at start).
    pub temp_dir: &'a Path,
}

impl Buffering<'static> {
    /// Streaming, as a route with `request_buffering = false` (a body that
    /// must be measured still spools to the system's temporary directory).
    pub fn streaming() -> Self {
        Buffering {
            on: false,
            memory: DEFAULT_MEMORY,
            temp_dir: Path::new("/tmp"),
        }
    }
}

/// The most of one body held in memory, by default (`body_buffer_size`).
const DEFAULT_MEMORY: usize = crate::config::DEFAULT_BODY_BUFFER as usize;

/// Bodies being received are held in memory up to this many times the
/// per-body limit, per worker (64 MiB at the default): past it, a body
/// goes to a file whatever its size. Thousands of slow uploads at once
/// then cost disk, not memory; bodies that arrive at once (nearly all of
/// them) are handed to the app within a few reads and give their share
/// back.
const BUDGET_BODIES: usize = 1024;

thread_local! {
    /// Body bytes the worker's I/O thread (the only one that spools) holds
    /// for bodies still arriving.
    static HELD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A body's share of the worker's memory budget, given back when dropped.
#[derive(Default)]
struct MemoryBudget(usize);

impl MemoryBudget {
    /// Takes `n` more bytes if the worker's bodies then hold at most
    /// `BUDGET_BODIES` × `per_body`.
    fn take(&mut self, n: usize, per_body: usize) -> bool {
        HELD.with(|held| {
            let total = held.get() + n;
            let fits = total <= per_body.saturating_mul(BUDGET_BODIES);
            if fits {
                held.set(total);
                self.0 += n;
            }
            fits
        })
    }
}

impl Drop for MemoryBudget {
    fn drop(&mut self) {
        HELD.with(|held| held.set(held.get() - self.0));
    }
}

/// A whole request body, ready to be read from the start.
#[derive(Debug)]
pub enum Spooled {
    Memory(Bytes),
    File(SpoolFile),
}

impl Spooled {
    /// The body's length: `CONTENT_LENGTH` for a body that came without one.
    pub fn len(&self) -> u64 {
        match self {
            Spooled::Memory(data) => data.len() as u64,
            Spooled::File(file) => file.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A body in an unnamed temporary file of exactly its length, positioned
/// at its start.
#[derive(Debug)]
pub struct SpoolFile {
    file: File,
    len: u64,
    /// Where it was made, for [`SpoolFile::recycle`].
    dir: PathBuf,
}

impl SpoolFile {
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// For a reader that reads it from where it stands.
    pub fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// The file itself, for a reader of its own (a CGI script's stdin):
    /// it is never reused.
    pub fn into_file(self) -> File {
        self.file
    }

    /// Done with: kept for a later body of this process (or closed, when
    /// enough are kept or it is large). Only for a file no other process
    /// or object can hold a descriptor of.
    pub fn recycle(self) {
        file::recycle(self.dir, self.file, self.len);
    }
}

/// Why a body could not be buffered. Each variant names its status; every
/// one closes the connection (the rest of the body is unread).
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The client's doing: 408 (no byte for `--body-timeout`), 400
    /// (malformed; or gone, logged 499).
    #[error(transparent)]
    Body(BodyError),
    /// 413: the body grew past the route's `max_body_size`.
    #[error("request body larger than max_body_size ({limit} bytes)")]
    TooLarge { limit: u64 },
    /// 500: the temporary file could not be made or written (a full disk,
    /// a directory gone or no longer writable).
    #[error("cannot buffer the request body in {}: {source}", dir.display())]
    TempFile { dir: PathBuf, source: io::Error },
}

impl SpoolError {
    /// The answer, through `crate::request::refusal` (one log line naming the key).
    pub fn refusal(&self) -> Refusal {
        match self {
            SpoolError::Body(err) => Refusal::Body(err.clone()),
            SpoolError::TooLarge { limit } => Refusal::BodyTooLarge {
                declared: None,
                limit: *limit,
            },
            SpoolError::TempFile { dir, source } => Refusal::BodyNotBuffered {
                dir: dir.display().to_string(),
                error: source.to_string(),
            },
        }
    }
}

/// Reads all of `body`: into memory up to `buffering.memory` bytes, past
/// that into a temporary file; at most `max_body_size` bytes.
pub async fn spool(
    mut body: RequestBody,
    buffering: Buffering<'_>,
    max_body_size: u64,
) -> Result<Spooled, SpoolError> {
    let mut memory = Memory::Empty;
    let mut budget = MemoryBudget::default();
    let mut received: u64 = 0;
    while let Some(data) = next_chunk(&mut body, &mut received, max_body_size).await? {
        if received > buffering.memory as u64 || !budget.take(data.len(), buffering.memory) {
            drop(budget);
            // Boxed: every request's future stays as small as the memory
            // path needs; only a body that needs a file pays for its state.
            let pending = memory.into_bytes_mut();
            let to_file = to_file(body, pending, data, received, buffering, max_body_size);
            return Box::pin(to_file).await;
        }
        memory.push(data);
    }
    Ok(Spooled::Memory(memory.into_bytes()))
}

/// The rest of a body past the memory limit: `pending` and `data` first.
/// A body known to be complete (its `Content-Length` reached) is not polled
/// again: taking or making, writing and rewinding its file is one trip to
/// the disk thread.
async fn to_file(
    mut body: RequestBody,
    mut pending: BytesMut,
    data: Bytes,
    mut received: u64,
    buffering: Buffering<'_>,
    max_body_size: u64,
) -> Result<Spooled, SpoolError> {
    pending.extend_from_slice(&data);
    let mut writer = file::Writer::new(buffering.temp_dir, pending);
    while !body.is_end_stream() {
        if writer.pending() >= buffering.memory.max(1) {
            writer.write(false).await?;
        }
        match next_chunk(&mut body, &mut received, max_body_size).await? {
            Some(data) => writer.extend(&data),
            None => break,
        }
    }
    Ok(Spooled::File(SpoolFile {
        file: writer.finish().await?,
        len: received,
        dir: buffering.temp_dir.to_path_buf(),
    }))
}

/// The next data chunk, counted into `received`; `None` at the end.
async fn next_chunk(
    body: &mut RequestBody,
    received: &mut u64,
    max_body_size: u64,
) -> Result<Option<Bytes>, SpoolError> {
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(SpoolError::Body)?.into_data() else {
            continue;
        };
        *received += data.len() as u64;
        if *received > max_body_size {
            return Err(SpoolError::TooLarge {
                limit: max_body_size,
            });
        }
        return Ok(Some(data));
    }
    Ok(None)
}

/// The chunks of a body held in memory: one chunk is kept as it came.
enum Memory {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Memory {
    fn push(&mut self, data: Bytes) {
        *self = match std::mem::replace(self, Memory::Empty) {
            Memory::Empty => Memory::One(data),
            Memory::One(first) => {
                let mut all = BytesMut::with_capacity(first.len() + data.len());
                all.extend_from_slice(&first);
                all.extend_from_slice(&data);
                Memory::Many(all)
            }
            Memory::Many(mut all) => {
                all.extend_from_slice(&data);
                Memory::Many(all)
            }
        };
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Memory::Empty => Bytes::new(),
            Memory::One(data) => data,
            Memory::Many(all) => all.freeze(),
        }
    }

    fn into_bytes_mut(self) -> BytesMut {
        match self {
            Memory::Empty => BytesMut::new(),
            Memory::One(data) => BytesMut::from(&data[..]),
            Memory::Many(all) => all,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::Duration;

    use super::*;
    use tokio::sync::mpsc;

    /// A body of `len` bytes fed by the returned sender (a uwsgi
    /// connection's pump feeds its handler this way).
    fn fed(len: u64) -> (RequestBody, mpsc::Sender<io::Result<Bytes>>) {
        let (tx, rx) = mpsc::channel(64);
        let body = crate::request::body::ChannelBody::new(rx, len);
        (RequestBody::channel(body, Duration::from_secs(60)), tx)
    }

    fn buffering(memory: usize, dir: &Path) -> Buffering<'_> {
        Buffering {
            on: true,
            memory,
            temp_dir: dir,
        }
    }

    /// Spools `chunks` (sent before reading starts) with `memory` bytes.
    async fn spool_chunks(chunks: &[&[u8]], memory: usize, dir: &Path) -> Spooled {
        let len = chunks.iter().map(|c| c.len() as u64).sum();
        let (body, tx) = fed(len);
        for chunk in chunks {
            tx.send(Ok(Bytes::copy_from_slice(chunk))).await.unwrap();
        }
        spool(body, buffering(memory, dir), u64::MAX)
            .await
            .expect("spooled")
    }

    #[tokio::test]
    async fn past_the_workers_memory_budget_a_small_body_goes_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let body: &[u8] = &[b'x'; 100];
        // Other bodies still arriving hold all but 50 bytes of the budget.
        let mut others = MemoryBudget::default();
        assert!(others.take(1024 * BUDGET_BODIES - 50, 1024));
        let spooled = spool_chunks(&[body], 1024, dir.path()).await;
        assert!(matches!(spooled, Spooled::File(_)), "{spooled:?}");
        assert_eq!(read_back(spooled), body);
        // Given back: the next one stays in memory, and gives its share back.
        drop(others);
        let spooled = spool_chunks(&[body], 1024, dir.path()).await;
        assert!(matches!(spooled, Spooled::Memory(_)), "{spooled:?}");
        assert_eq!(HELD.with(|held| held.get()), 0);
    }

    fn read_back(spooled: Spooled) -> Vec<u8> {
        match spooled {
            Spooled::Memory(data) => data.to_vec(),
            Spooled::File(f) => {
                let mut out = Vec::new();
                f.into_file().read_to_end(&mut out).unwrap();
                out
            }
        }
    }

    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[tokio::test]
    async fn a_body_up_to_the_memory_limit_stays_in_memory_and_one_byte_more_goes_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let at_limit = spool_chunks(&[b"0123456789", b"abcdef"], 16, dir.path()).await;
        assert!(matches!(at_limit, Spooled::Memory(_)), "{at_limit:?}");
        assert_eq!(at_limit.len(), 16);
        assert_eq!(read_back(at_limit), b"0123456789abcdef");

        let over = spool_chunks(&[b"0123456789", b"abcdef", b"!"], 16, dir.path()).await;
        assert!(matches!(over, Spooled::File(_)), "{over:?}");
        assert_eq!(over.len(), 17);
        assert_eq!(read_back(over), b"0123456789abcdef!");
        // The file never had a name: nothing to clean up, ever.
        assert_eq!(entries(dir.path()), 0);
    }

    #[tokio::test]
    async fn a_single_chunk_is_kept_as_it_came() {
        let dir = tempfile::tempdir().unwrap();
        let (body, tx) = fed(5);
        let chunk = Bytes::from_static(b"hello");
        tx.send(Ok(chunk.clone())).await.unwrap();
        let Spooled::Memory(data) = spool(body, buffering(16, dir.path()), u64::MAX)
            .await
            .unwrap()
        else {
            panic!("a 5-byte body goes to memory");
        };
        assert_eq!(data.as_ptr(), chunk.as_ptr(), "copied");
    }

    #[tokio::test]
    async fn a_large_body_is_written_in_batches_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let chunks: Vec<&[u8]> = body.chunks(7_000).collect();
        let spooled = spool_chunks(&chunks, 16 * 1024, dir.path()).await;
        assert_eq!(spooled.len(), body.len() as u64);
        assert_eq!(read_back(spooled), body);
        // A memory limit of 0 sends every body with a byte to a file.
        let spooled = spool_chunks(&[b"x"], 0, dir.path()).await;
        assert!(matches!(spooled, Spooled::File(_)));
        assert_eq!(read_back(spooled), b"x");
    }

    #[tokio::test]
    async fn a_body_past_max_body_size_is_refused_413_in_memory_or_in_a_file() {
        let dir = tempfile::tempdir().unwrap();
        for memory in [1024, 4] {
            let (body, tx) = fed(30);
            for _ in 0..3 {
                tx.send(Ok(Bytes::from_static(b"0123456789")))
                    .await
                    .unwrap();
            }
            let err = spool(body, buffering(memory, dir.path()), 25)
                .await
                .unwrap_err();
            assert!(matches!(err, SpoolError::TooLarge { limit: 25 }), "{err:?}");
            let refusal = err.refusal();
            assert_eq!(refusal.status(), 413);
            assert!(refusal.closes_connection());
        }
        // Exactly the limit is accepted.
        let (body, tx) = fed(20);
        tx.send(Ok(Bytes::from(vec![b'a'; 20]))).await.unwrap();
        let spooled = spool(body, buffering(4, dir.path()), 20).await.unwrap();
        assert_eq!(spooled.len(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_silent_for_the_body_timeout_while_spooling_is_408() {
        let dir = tempfile::tempdir().unwrap();
        let (body, tx) = fed(100);
        tx.send(Ok(Bytes::from(vec![b'a'; 40]))).await.unwrap();
        let started = tokio::time::Instant::now();
        let err = spool(body, buffering(16, dir.path()), u64::MAX)
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        let SpoolError::Body(BodyError::Timeout(after)) = &err else {
            panic!("{err:?}");
        };
        assert_eq!(*after, Duration::from_secs(60));
        assert_eq!(err.refusal().status(), 408);
        drop(tx);
    }

    fn inode(spooled: &Spooled) -> u64 {
        use std::os::unix::fs::MetadataExt;
        match spooled {
            Spooled::File(f) => f.file.metadata().unwrap().ino(),
            Spooled::Memory(_) => panic!("in memory"),
        }
    }

    #[tokio::test]
    async fn a_recycled_file_is_reused_cut_to_the_next_body_and_only_in_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let long = spool_chunks(&[&[b'L'; 5000]], 16, dir.path()).await;
        let first = inode(&long);
        let Spooled::File(long) = long else {
            unreachable!()
        };
        long.recycle();
        // Another directory's body never gets it.
        let elsewhere = spool_chunks(&[b"0123456789abcdefXYZ"], 16, other.path()).await;
        assert_ne!(inode(&elsewhere), first);
        // A shorter body reuses it and reads back alone: no older bytes.
        let short = spool_chunks(&[b"0123456789abcdef", b"XYZ"], 16, dir.path()).await;
        assert_eq!(inode(&short), first, "the kept file was not reused");
        assert_eq!(read_back(short), b"0123456789abcdefXYZ");
        // A file past the size kept is closed, not kept.
        let big = spool_chunks(&[&vec![b'B'; 300 * 1024]], 16, dir.path()).await;
        let Spooled::File(big) = big else {
            unreachable!()
        };
        big.recycle();
        assert!(
            file::take_kept(dir.path()).is_none(),
            "a large file was kept"
        );
        assert_eq!(entries(dir.path()), 0);
    }

    #[tokio::test]
    async fn a_temp_dir_that_cannot_take_a_file_is_a_500_naming_it() {
        let gone = Path::new("/nonexistent/portico-spool-test");
        let (body, tx) = fed(40);
        tx.send(Ok(Bytes::from(vec![b'a'; 40]))).await.unwrap();
        let err = spool(body, buffering(16, gone), u64::MAX)
            .await
            .unwrap_err();
        assert!(matches!(err, SpoolError::TempFile { .. }), "{err:?}");
        let refusal = err.refusal();
        assert_eq!(refusal.status(), 500);
        assert!(refusal.to_string().contains(&gone.display().to_string()));
    }
}
