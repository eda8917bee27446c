//! The temporary files of buffered bodies: written in batches by a disk
//! thread ([`Writer`]), and kept for a later body once read ([`recycle`]).
//!
//! Why keep them: making and deleting an inode per body is the dearest part
//! of a body past the memory limit. Measured here (ext4, 2 CPUs, a WSGI
//! echo app, `wrk -c64`, 32 KiB POSTs): a new `O_TMPFILE` file per body
//! took the server from 46k to 10k requests/s, most of it kernel time in
//! ext4's inode allocator (which scans past recently deleted inodes), with
//! or without the blocking pool; writing over a kept file costs about what
//! copying the bytes does. A kept file is cut to the new body's length once
//! written, so no reader ever sees an earlier body's bytes, and only a file
//! nobody else can hold is kept (an app's `wsgi.input`; a CGI script's
//! stdin is never reused).

use std::fs::File;
use std::io::{self, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Mutex, OnceLock};

use bytes::BytesMut;

use super::SpoolError;

/// Files kept per process, at most: enough for as many concurrent bodies.
const KEPT_FILES: usize = 64;

/// A file longer than this is closed rather than kept: its blocks (and
/// page cache) are not held for a body that may never come.
const KEPT_MAX_LEN: u64 = 256 * 1024;

/// A file kept for reuse: where it was made, and its length (bytes of an
/// earlier body, cut off when the next one is shorter).
struct Kept {
    dir: PathBuf,
    file: File,
    len: u64,
}

static KEPT: Mutex<Vec<Kept>> = Mutex::new(Vec::new());

/// Keeps `file` (of `len` bytes, made in `dir`) for a later body, unless
/// enough are kept or it is large; otherwise it is closed, so deleted.
pub(super) fn recycle(dir: PathBuf, file: File, len: u64) {
    if len > KEPT_MAX_LEN {
        return;
    }
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    if kept.len() < KEPT_FILES {
        kept.push(Kept { dir, file, len });
    }
}

/// A kept file made in `dir`, and its length.
pub(super) fn take_kept(dir: &Path) -> Option<(File, u64)> {
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    let i = kept.iter().rposition(|k| k.dir == dir)?;
    let k = kept.swap_remove(i);
    Some((k.file, k.len))
}

/// The temporary file being written, and the bytes not yet in it.
pub(super) struct Writer<'a> {
    /// `None` until the first write takes or makes it, and while the disk
    /// thread has it.
    file: Option<File>,
    /// The length a kept file had: past the body's end, it is cut.
    stale: u64,
    /// Bytes in the file so far.
    written: u64,
    pending: BytesMut,
    dir: &'a Path,
}

impl<'a> Writer<'a> {
    pub(super) fn new(dir: &'a Path, pending: BytesMut) -> Self {
        Writer {
            file: None,
            stale: 0,
            written: 0,
            pending,
            dir,
        }
    }

    /// Bytes not yet written.
    pub(super) fn pending(&self) -> usize {
        self.pending.len()
    }

    pub(super) fn extend(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
    }

    /// Writes what is pending from the disk thread (taking a kept
    /// file or making one first; when `last`, cutting off a kept file's
    /// older bytes and rewinding after); the buffer comes back emptied,
    /// its allocation kept for the next batch.
    pub(super) async fn write(&mut self, last: bool) -> Result<(), SpoolError> {
        let target = match self.file.take() {
            Some(file) => Ok(file),
            None => match take_kept(self.dir) {
                Some((file, len)) => {
                    self.stale = len;
                    Ok(file)
                }
                // Where to make one.
                None => Err(self.dir.to_path_buf()),
            },
        };
        let offset = self.written;
        let end = offset + self.pending.len() as u64;
        let cut = last && self.stale > end;
        let mut pending = std::mem::take(&mut self.pending);
        let written = on_disk_thread(move || {
            let mut file = match target {
                Ok(file) => file,
                Err(dir) => match tempfile::tempfile_in(dir) {
                    Ok(file) => file,
                    Err(e) => return (None, pending, Err(e)),
                },
            };
            let done = write_at(&mut file, &pending, offset, cut.then_some(end), last);
            pending.clear();
            (Some(file), pending, done)
        })
        .await;
        let lost = || {
            (
                None,
                BytesMut::new(),
                Err(io::Error::other("the disk thread is gone")),
            )
        };
        let (file, pending, done) = written.unwrap_or_else(lost);
        self.file = file;
        self.pending = pending;
        self.written = end;
        done.map_err(|source| self.failed(source))
    }

    /// Writes the rest; the file holds the body and nothing else, and
    /// stands at its start.
    pub(super) async fn finish(mut self) -> Result<File, SpoolError> {
        self.write(true).await?;
        match self.file.take() {
            Some(file) => Ok(file),
            None => Err(self.failed(io::Error::other("temporary file lost"))),
        }
    }

    fn failed(&self, source: io::Error) -> SpoolError {
        SpoolError::TempFile {
            dir: self.dir.to_path_buf(),
            source,
        }
    }
}

/// Writes `data` at `offset`, cuts the file at `cut`, rewinds it when
/// `rewind`.
fn write_at(
    file: &mut File,
    data: &[u8],
    offset: u64,
    cut: Option<u64>,
    rewind: bool,
) -> io::Result<()> {
    file.write_all_at(data, offset)?;
    if let Some(len) = cut {
        file.set_len(len)?;
    }
    if rewind {
        file.rewind()?;
    }
    Ok(())
}

/// Runs `f` on the process's disk thread (`None` if that thread is gone,
/// which a bug in `f` could only cause by panicking).
///
/// Why a thread of its own: the I/O thread must never wait for the disk (a
/// write can wait behind the kernel's writeback for a long time), and
/// tokio's blocking pool wakes one of dozens of threads per write: with 64
/// concurrent 32 KiB POSTs that cost a third of the throughput (22k against
/// 30k requests/s here; writing on the I/O thread itself, as nginx does by
/// default, 37k). One thread busy with a queue of writes is rarely woken.
async fn on_disk_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    disk_thread()?.send(job).ok()?;
    rx.await.ok()
}

type Job = Box<dyn FnOnce() + Send>;

/// The sender of the disk thread's queue, started on first use.
fn disk_thread() -> Option<&'static Sender<Job>> {
    static DISK: OnceLock<Option<Sender<Job>>> = OnceLock::new();
    DISK.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name("portico-disk".into())
            .spawn(move || {
                for job in rx {
                    // A job that panics loses its own answer, not the thread.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            });
        started.ok().map(|_| tx)
    })
    .as_ref()
}
