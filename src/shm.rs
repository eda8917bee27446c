//! Memory shared between the master and its workers: an anonymous file
//! (`memfd`) that the master creates and a worker inherits across `exec`,
//! mapped by each process that uses it. Used for the request scoreboard
//! (`crate::scoreboard`) and the accept balance (`server::balance`).
//!
//! Everything in it is read and written through atomics or whole-byte
//! copies at offsets the users lay out; nothing in it is ever a Rust
//! reference to a non-atomic value, since another process may write it.

use std::ffi::CStr;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// A shared mapping of a memfd.
pub struct SharedMem {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is plain shared memory, valid until Drop; all access
// goes through atomics or raw copies (see the module doc), so sharing the
// handle between threads adds no data race Rust could observe.
unsafe impl Send for SharedMem {}
// SAFETY: as for Send.
unsafe impl Sync for SharedMem {}

impl SharedMem {
    /// A new zeroed region of `len` bytes (pages are allocated only when
    /// written). The descriptor is close-on-exec; see [`Self::fd`].
    pub fn create(name: &CStr, len: usize) -> std::io::Result<Self> {
        let fd = memfd_create(name, MemFdCreateFlag::MFD_CLOEXEC)?;
        nix::unistd::ftruncate(&fd, len as i64)?;
        Self::map(fd)
    }

    /// Maps a region inherited from (or kept by) the master, whole.
    pub fn map(fd: OwnedFd) -> std::io::Result<Self> {
        let len = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd))?.st_size as usize;
        let size = NonZeroUsize::new(len)
            .ok_or_else(|| std::io::Error::other("shared memory region is empty"))?;
        // SAFETY: a fresh shared mapping of a file we own, at an address the
        // kernel picks; it aliases no Rust object and lives until Drop.
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )?
        };
        Ok(SharedMem {
            ptr: ptr.cast(),
            len,
            fd,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The descriptor, for handing the region to a worker.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The 32-bit atomic at `offset` (a multiple of 4, inside the region).
    pub fn u32_at(&self, offset: usize) -> &AtomicU32 {
        assert!(
            offset.is_multiple_of(4) && offset + 4 <= self.len,
            "offset {offset}"
        );
        // SAFETY: in bounds and aligned (the mapping is page-aligned); any bit
        // pattern is a valid AtomicU32, and the memory lives as long as &self.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    /// The 64-bit atomic at `offset` (a multiple of 8, inside the region).
    pub fn u64_at(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset.is_multiple_of(8) && offset + 8 <= self.len,
            "offset {offset}"
        );
        // SAFETY: as for u32_at, with 8-byte alignment.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// Copies `bytes` into the region at `offset`.
    pub fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.len, "offset {offset}");
        // SAFETY: in bounds; a byte copy into shared memory that no Rust
        // reference points at (readers copy out, guarded by a sequence word).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(offset),
                bytes.len(),
            )
        }
    }

    /// Copies `out.len()` bytes at `offset` out of the region.
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        assert!(offset + out.len() <= self.len, "offset {offset}");
        // SAFETY: in bounds; see write_bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        }
    }
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        // SAFETY: the region was mapped by `map` with this length, and no
        // reference into it outlives &self.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// Reads a descriptor number from an environment variable set by the
/// master; `None` when absent or not an open descriptor.
pub fn inherited_fd(var: &str) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    let fd: i32 = std::env::var(var).ok()?.parse().ok()?;
    nix::sys::stat::fstat(fd).ok()?;
    // Not inherited by this worker's own children (CGI scripts).
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .ok()?;
    // SAFETY: the master passed this descriptor for this variable's use
    // only, and each variable is read once per process (callers keep the
    // result); fstat proved it is open.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn two_mappings_of_one_region_see_each_other() {
        let a = SharedMem::create(c"test", 4096).unwrap();
        let b = SharedMem::map(a.fd().try_clone_to_owned().unwrap()).unwrap();
        a.u32_at(8).store(7, Ordering::Relaxed);
        assert_eq!(b.u32_at(8).load(Ordering::Relaxed), 7);
        b.write_bytes(100, b"hello");
        let mut out = [0u8; 5];
        a.read_bytes(100, &mut out);
        assert_eq!(&out, b"hello");
        assert_eq!(b.len(), 4096);
    }
}
