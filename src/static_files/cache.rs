//! A per-worker open-file cache, like nginx's `open_file_cache`.
//!
//! Steps, in order (`Cache::locate`):
//! 1. the key is the lexical path (root + segments already made safe by
//!    `resolve::parse_rel`, so computing it is pure CPU) and whether symlinks
//!    may leave the root;
//! 2. an entry checked less than [`TTL`] ago is the answer, whatever it says:
//!    a directory, a regular file (open handle, metadata, Content-Type, ETag
//!    and Last-Modified header values, and for a small file its bytes), some
//!    other file type, or a miss (not found, outside the root);
//! 3. a missing or stale entry is looked up again from scratch with
//!    `resolve::locate`, root-containment check included; if a regular file is
//!    still the same object (device, inode, size, mtime, ctime) the old entry's
//!    handle and bytes are kept, otherwise the new ones replace them;
//! 4. the entry is stored, evicting with a clock (second chance) when the
//!    cache holds [`MAX_ENTRIES`]; small files' bytes count against
//!    [`MAX_BODY_BYTES`], and past [`MAX_OPEN_FILES`] handles an entry that
//!    needs one is used for this request only.
//!
//! Consequences, all bounded by the TTL: a file replaced (by rename or by
//! writing a new file) or deleted is noticed within [`TTL`]; a file written in
//! place is read through the cached handle, but its length, validators and (for
//! a small file) bytes are those of the last check. Errors that are not plain
//! misses (permission denied, I/O) are never cached.
//!
//! The server is one current-thread runtime per worker, so the cache is
//! `!Sync` interior state (`RefCell`) and entries are `Rc`s.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::error::StaticError;
use super::resolve::{self, Node};

/// How long an entry is trusted before the file system is asked again.
/// nginx's `open_file_cache_valid` is 60 s; 2 s keeps deployments visible
/// almost at once while still turning thousands of lookups into one.
pub const TTL: Duration = Duration::from_secs(2);
/// Entries (files, directories, misses) per worker.
pub const MAX_ENTRIES: usize = 1000;
/// Files up to this size are read into memory once and served from there:
/// no `pread` (and no copy from the page cache) per response. 256 KiB covers
/// most web assets (scripts, stylesheets, images) while [`MAX_BODY_BYTES`]
/// still holds 128 of the largest.
pub const MAX_BODY_FILE: u64 = 256 * 1024;
/// Bytes of cached file contents per worker.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// Open handles held by the cache per worker (at most a quarter of the
/// process's soft `RLIMIT_NOFILE`, so connections keep their share).
pub const MAX_OPEN_FILES: usize = 1000;

/// What the cache remembers about one lexical path.
#[derive(Clone)]
enum Cached {
    Found(Rc<Node>),
    NotFound,
    OutsideRoot,
}

impl Cached {
    fn from_result(r: &Result<Rc<Node>, StaticError>) -> Option<Cached> {
        match r {
            Ok(node) => Some(Cached::Found(node.clone())),
            Err(StaticError::NotFound) => Some(Cached::NotFound),
            Err(StaticError::OutsideRoot) => Some(Cached::OutsideRoot),
            Err(_) => None,
        }
    }

    fn into_result(self) -> Result<Rc<Node>, StaticError> {
        match self {
            Cached::Found(n) => Ok(n),
            Cached::NotFound => Err(StaticError::NotFound),
            Cached::OutsideRoot => Err(StaticError::OutsideRoot),
        }
    }

    fn body_bytes(&self) -> usize {
        match self {
            Cached::Found(n) => n.file.as_ref().map_or(0, |f| f.body_len()),
            _ => 0,
        }
    }

    fn holds_fd(&self) -> bool {
        matches!(self, Cached::Found(n) if n.file.as_ref().is_some_and(|f| f.holds_fd()))
    }
}

type Key = (PathBuf, bool);

struct Slot {
    key: Key,
    value: Cached,
    checked: Instant,
    referenced: bool,
}

#[derive(Default)]
struct Inner {
    index: HashMap<Key, usize>,
    slots: Vec<Slot>,
    hand: usize,
    body_bytes: usize,
    open_files: usize,
}

/// Limits of one cache; [`Cache::new`] uses the documented defaults.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub ttl: Duration,
    pub max_entries: usize,
    pub max_body_file: u64,
    pub max_body_bytes: usize,
    pub max_open_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ttl: TTL,
            max_entries: MAX_ENTRIES,
            max_body_file: MAX_BODY_FILE,
            max_body_bytes: MAX_BODY_BYTES,
            max_open_files: MAX_OPEN_FILES.min(soft_nofile() / 4),
        }
    }
}

fn soft_nofile() -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _hard)) => usize::try_from(soft).unwrap_or(usize::MAX),
        Err(_) => 1024,
    }
}

/// One worker's cache; see the module doc.
pub struct Cache {
    limits: Limits,
    inner: RefCell<Inner>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache::new()
    }
}

impl Cache {
    pub fn new() -> Self {
        Cache::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Self {
        Cache {
            limits,
            inner: RefCell::new(Inner::default()),
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.inner.borrow().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Steps 1–4: `resolve::locate`, remembered for the TTL.
    pub fn locate(
        &self,
        root: &Path,
        lexical: PathBuf,
        outside_ok: bool,
    ) -> Result<Rc<Node>, StaticError> {
        let now = Instant::now();
        let key = (lexical, outside_ok);
        // 2. fresh entry
        let old = {
            let mut inner = self.inner.borrow_mut();
            match inner.index.get(&key).copied() {
                Some(i) => {
                    let slot = &mut inner.slots[i];
                    if now.duration_since(slot.checked) < self.limits.ttl {
                        slot.referenced = true;
                        return slot.value.clone().into_result();
                    }
                    Some(slot.value.clone())
                }
                None => None,
            }
        };
        // 3. look up again, keeping an unchanged file's handle and bytes
        let (budget, fd_ok) = {
            let inner = self.inner.borrow();
            let freed = old.as_ref().map_or(0, Cached::body_bytes);
            (
                (self.limits.max_body_bytes + freed).saturating_sub(inner.body_bytes),
                inner.open_files < self.limits.max_open_files
                    || old.as_ref().is_some_and(Cached::holds_fd),
            )
        };
        let body_limit = self.limits.max_body_file.min(budget as u64);
        let result = match (resolve::locate(root, key.0.clone(), outside_ok), &old) {
            (Ok(new), Some(Cached::Found(prev))) if new.same_object(prev) => Ok(prev.clone()),
            (Ok(mut new), _) => {
                if let Some(file) = &mut new.file {
                    file.load_body(body_limit);
                }
                Ok(Rc::new(new))
            }
            (Err(e), _) => Err(e),
        };
        // 4. store
        match Cached::from_result(&result) {
            Some(value) if fd_ok || !value.holds_fd() => self.store(key, value, now),
            _ => self.remove(&key),
        }
        result
    }

    fn remove(&self, key: &Key) {
        let mut inner = self.inner.borrow_mut();
        if let Some(i) = inner.index.remove(key) {
            let slot = inner.slots.swap_remove(i);
            inner.account(&slot.value, false);
            if let Some(moved) = inner.slots.get(i) {
                let k = moved.key.clone();
                inner.index.insert(k, i);
            }
        }
    }

    fn store(&self, key: Key, value: Cached, now: Instant) {
        let mut inner = self.inner.borrow_mut();
        inner.account(&value, true);
        if let Some(&i) = inner.index.get(&key) {
            let old = std::mem::replace(&mut inner.slots[i].value, value);
            inner.account(&old, false);
            inner.slots[i].checked = now;
            return;
        }
        let slot = Slot {
            key: key.clone(),
            value,
            checked: now,
            referenced: false,
        };
        if inner.slots.len() < self.limits.max_entries.max(1) {
            let i = inner.slots.len();
            inner.slots.push(slot);
            inner.index.insert(key, i);
            return;
        }
        // Clock: the first slot not used since the hand last passed.
        let victim = loop {
            let h = inner.hand % inner.slots.len();
            inner.hand = h + 1;
            if std::mem::take(&mut inner.slots[h].referenced) {
                continue;
            }
            break h;
        };
        let old = std::mem::replace(&mut inner.slots[victim], slot);
        inner.index.remove(&old.key);
        inner.account(&old.value, false);
        inner.index.insert(key, victim);
    }
}

impl Inner {
    fn account(&mut self, value: &Cached, add: bool) {
        let (bytes, fds) = (value.body_bytes(), usize::from(value.holds_fd()));
        if add {
            self.body_bytes += bytes;
            self.open_files += fds;
        } else {
            self.body_bytes -= bytes;
            self.open_files -= fds;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn the_open_file_limit_is_the_processes_soft_limit() {
        // The kernel's own account of it, in /proc/self/limits.
        let limits = fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("Linux lists the open-file limit");
        let soft = line.split_whitespace().nth(3).unwrap();
        let expected = match soft {
            "unlimited" => usize::MAX,
            n => n.parse().unwrap(),
        };
        assert_eq!(soft_nofile(), expected);
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        Fixture { _dir: dir, root }
    }

    fn cache(ttl: Duration, max_entries: usize) -> Cache {
        Cache::with_limits(Limits {
            ttl,
            max_entries,
            ..Limits::default()
        })
    }

    fn body(c: &Cache, f: &Fixture, name: &str) -> Vec<u8> {
        let node = c.locate(&f.root, f.root.join(name), false).unwrap();
        node.file.as_ref().unwrap().body().unwrap().to_vec()
    }

    #[test]
    fn hit_returns_the_same_entry() {
        let f = fixture();
        fs::write(f.root.join("a"), "one").unwrap();
        let c = cache(Duration::from_secs(60), 10);
        let n1 = c.locate(&f.root, f.root.join("a"), false).unwrap();
        let n2 = c.locate(&f.root, f.root.join("a"), false).unwrap();
        assert!(Rc::ptr_eq(&n1, &n2));
        assert_eq!(c.len(), 1);
        // Within the TTL a change is not seen...
        fs::write(f.root.join("a"), "two!").unwrap();
        assert_eq!(body(&c, &f, "a"), b"one");
    }

    #[test]
    fn ttl_expiry_sees_replaced_file() {
        let f = fixture();
        fs::write(f.root.join("a"), "old").unwrap();
        let c = cache(Duration::ZERO, 10);
        assert_eq!(body(&c, &f, "a"), b"old");
        // Replaced by rename, as deploy tools do: a new inode.
        fs::write(f.root.join("a.tmp"), "new content").unwrap();
        fs::rename(f.root.join("a.tmp"), f.root.join("a")).unwrap();
        let n = c.locate(&f.root, f.root.join("a"), false).unwrap();
        assert_eq!(n.file.as_ref().unwrap().len, 11);
        assert_eq!(body(&c, &f, "a"), b"new content");
    }

    #[test]
    fn unchanged_file_keeps_its_entry_after_ttl() {
        let f = fixture();
        fs::write(f.root.join("a"), "same").unwrap();
        let c = cache(Duration::ZERO, 10);
        let n1 = c.locate(&f.root, f.root.join("a"), false).unwrap();
        let n2 = c.locate(&f.root, f.root.join("a"), false).unwrap();
        assert!(Rc::ptr_eq(&n1, &n2));
    }

    #[test]
    fn deleted_file_is_noticed_after_ttl() {
        let f = fixture();
        fs::write(f.root.join("a"), "x").unwrap();
        let c = cache(Duration::from_millis(50), 10);
        assert!(c.locate(&f.root, f.root.join("a"), false).is_ok());
        fs::remove_file(f.root.join("a")).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        let err = c.locate(&f.root, f.root.join("a"), false).unwrap_err();
        assert!(matches!(err, StaticError::NotFound));
    }

    #[test]
    fn negative_entries_are_cached_for_the_ttl() {
        let f = fixture();
        let c = cache(Duration::from_millis(50), 10);
        assert!(c.locate(&f.root, f.root.join("a"), false).is_err());
        assert_eq!(c.len(), 1);
        fs::write(f.root.join("a"), "x").unwrap();
        assert!(matches!(
            c.locate(&f.root, f.root.join("a"), false),
            Err(StaticError::NotFound)
        ));
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.locate(&f.root, f.root.join("a"), false).is_ok());
    }

    #[test]
    fn containment_is_rechecked_on_revalidation() {
        let f = fixture();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "s").unwrap();
        fs::write(f.root.join("a"), "inside").unwrap();
        let c = cache(Duration::ZERO, 10);
        assert!(c.locate(&f.root, f.root.join("a"), false).is_ok());
        // Swapped for a symlink out of the root.
        fs::remove_file(f.root.join("a")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), f.root.join("a")).unwrap();
        assert!(matches!(
            c.locate(&f.root, f.root.join("a"), false),
            Err(StaticError::OutsideRoot)
        ));
        // Allowed when the route says so, under its own key.
        assert!(c.locate(&f.root, f.root.join("a"), true).is_ok());
        assert!(matches!(
            c.locate(&f.root, f.root.join("a"), false),
            Err(StaticError::OutsideRoot)
        ));
    }

    #[test]
    fn eviction_keeps_the_bound_and_the_accounting() {
        let f = fixture();
        let c = cache(Duration::from_secs(60), 3);
        for i in 0..10 {
            fs::write(f.root.join(format!("f{i}")), vec![b'x'; 100]).unwrap();
            c.locate(&f.root, f.root.join(format!("f{i}")), false)
                .unwrap();
            assert!(c.len() <= 3);
        }
        let inner = c.inner.borrow();
        assert_eq!(inner.body_bytes, 300);
        assert_eq!(inner.index.len(), 3);
        for (i, s) in inner.slots.iter().enumerate() {
            assert_eq!(inner.index[&s.key], i);
        }
    }

    #[test]
    fn recently_used_entries_survive_eviction() {
        let f = fixture();
        let c = cache(Duration::from_secs(60), 2);
        for n in ["a", "b", "c"] {
            fs::write(f.root.join(n), n).unwrap();
        }
        c.locate(&f.root, f.root.join("a"), false).unwrap();
        c.locate(&f.root, f.root.join("b"), false).unwrap();
        c.locate(&f.root, f.root.join("a"), false).unwrap(); // a referenced
        c.locate(&f.root, f.root.join("c"), false).unwrap(); // evicts b
        let inner = c.inner.borrow();
        assert!(inner.index.contains_key(&(f.root.join("a"), false)));
        assert!(!inner.index.contains_key(&(f.root.join("b"), false)));
    }

    #[test]
    fn body_budget_and_large_files_stream() {
        let f = fixture();
        fs::write(f.root.join("big"), vec![1u8; MAX_BODY_FILE as usize + 1]).unwrap();
        fs::write(f.root.join("s1"), vec![2u8; 600]).unwrap();
        fs::write(f.root.join("s2"), vec![3u8; 600]).unwrap();
        let c = Cache::with_limits(Limits {
            max_body_bytes: 1000,
            ..Limits::default()
        });
        let big = c.locate(&f.root, f.root.join("big"), false).unwrap();
        assert!(big.file.as_ref().unwrap().body().is_none());
        let s1 = c.locate(&f.root, f.root.join("s1"), false).unwrap();
        assert!(s1.file.as_ref().unwrap().body().is_some());
        // Over budget: still served, from the handle.
        let s2 = c.locate(&f.root, f.root.join("s2"), false).unwrap();
        assert!(s2.file.as_ref().unwrap().body().is_none());
        assert_eq!(c.inner.borrow().body_bytes, 600);
    }

    #[test]
    fn open_file_cap_is_respected() {
        let f = fixture();
        let c = Cache::with_limits(Limits {
            max_body_file: 0,
            max_open_files: 1,
            ..Limits::default()
        });
        fs::write(f.root.join("a"), "a").unwrap();
        fs::write(f.root.join("b"), "b").unwrap();
        c.locate(&f.root, f.root.join("a"), false).unwrap();
        let b = c.locate(&f.root, f.root.join("b"), false).unwrap();
        assert_eq!(b.file.as_ref().unwrap().len, 1);
        assert_eq!(c.len(), 1);
        assert_eq!(c.inner.borrow().open_files, 1);
    }
}
