//! Path safety: from the still-encoded request path to a file inside the root.
//!
//! Steps, in order:
//! 1. split the encoded `rel` on `/` (so an encoded `%2F` can never become a
//!    separator), then percent-decode each segment exactly once, into bytes;
//! 2. refuse NUL and backslash (400) and an encoded `/` (404: no file name on
//!    Linux holds one);
//! 3. drop empty and `.` segments, let `..` remove the previous segment, and
//!    refuse a `..` with nothing left to remove (400): lexically we never go
//!    above the root;
//! 4. refuse any remaining segment starting with `.` unless dotfiles are on;
//! 5. (`contain`) find the real path and require it inside the root unless
//!    `symlinks_outside_root` (403): a symlink may point anywhere, the lexical
//!    walk above cannot know, so the check is made on the real path (an
//!    `lstat` per component below the root; `canonicalize` only when one of
//!    them is a symlink). Containment opens nothing: CGI uses it alone, so
//!    a script we may execute but not read still runs;
//! 6. (`locate`, for files we serve) a regular file is opened there and then
//!    (`FileInfo`), so the cache can keep the handle.
//!
//! Invalid UTF-8 is fine: Linux names are bytes and we build `OsStr`s from them.

use std::ffi::OsString;
use std::fs::{File, FileType};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::HeaderValue;
use percent_encoding::percent_decode_str;

use super::conditional::Validators;
use super::error::StaticError;
use super::file_body::{Source, SENDFILE_MIN};

/// A request path made safe to join onto the root.
#[derive(Debug, PartialEq, Eq)]
pub struct RelPath {
    /// Relative path of decoded segments; none is empty, `.`, `..`, or holds
    /// `/` or NUL.
    pub path: PathBuf,
    /// The URL names a directory form: it ends in `/` (or in a dot-segment,
    /// which RFC 3986 normalisation turns into a trailing `/`), or is empty.
    pub trailing_slash: bool,
    /// The URL addresses the route's root itself (for the listing's `../`).
    pub is_root: bool,
}

/// Steps 1–4: decode and normalise `rel` ("" or starting with `/`).
pub fn parse_rel(rel: &str, dotfiles: bool) -> Result<RelPath, StaticError> {
    // Decoded segments joined by `/`, built in one buffer: no decoded
    // segment holds a `/` (refused below), so `..` cuts at the last one.
    let mut buf: Vec<u8> = Vec::with_capacity(rel.len());
    let mut trailing_slash = rel.is_empty() || rel.ends_with('/');
    for raw in rel.split('/') {
        let mark = buf.len();
        if mark > 0 {
            buf.push(b'/');
        }
        let start = buf.len();
        buf.extend(percent_decode_str(raw));
        let seg = &buf[start..];
        if seg.contains(&0) {
            return Err(StaticError::BadPath("NUL byte"));
        }
        if seg.contains(&b'\\') {
            return Err(StaticError::BadPath("backslash"));
        }
        if seg.contains(&b'/') {
            return Err(StaticError::NotFound);
        }
        match seg {
            b"" => buf.truncate(mark),
            b"." => {
                buf.truncate(mark);
                trailing_slash = true;
            }
            b".." => {
                buf.truncate(mark);
                if buf.is_empty() {
                    return Err(StaticError::BadPath("`..` above the root"));
                }
                let cut = buf.iter().rposition(|&b| b == b'/').unwrap_or(0);
                buf.truncate(cut);
                trailing_slash = true;
            }
            _ => trailing_slash = false,
        }
    }
    // A trailing empty segment (`/a/`) ends the loop with `trailing_slash`
    // false after the last name; restore it from the raw text.
    if rel.ends_with('/') {
        trailing_slash = true;
    }
    if !dotfiles && buf.split(|&b| b == b'/').any(|s| s.first() == Some(&b'.')) {
        return Err(StaticError::Hidden);
    }
    Ok(RelPath {
        is_root: buf.is_empty(),
        path: PathBuf::from(OsString::from_vec(buf)),
        trailing_slash,
    })
}

/// `root` joined with `rel`, allocated once.
pub fn join(root: &Path, rel: &Path) -> PathBuf {
    let mut path = PathBuf::with_capacity(root.as_os_str().len() + 1 + rel.as_os_str().len());
    path.push(root);
    if !rel.as_os_str().is_empty() {
        path.push(rel);
    }
    path
}

/// What a lexical path names on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    /// FIFO, socket, device: never opened.
    Other,
}

/// A file system object found inside the root.
#[derive(Debug)]
pub struct Node {
    /// The path as the URL named it (root + segments), for sibling names.
    pub lexical: PathBuf,
    /// The real path: `lexical` itself when no component below the root is
    /// a symlink, else the canonical path. What we open and list.
    pub path: PathBuf,
    pub kind: Kind,
    /// For a regular file: the open handle and what we serve from it.
    pub file: Option<FileInfo>,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }

    pub fn is_file(&self) -> bool {
        self.kind == Kind::File
    }

    /// Nothing changed since `prev` was looked up: same kind at the same real
    /// path, and for a file the same object with the same size and times.
    pub fn same_object(&self, prev: &Node) -> bool {
        self.kind == prev.kind
            && self.path == prev.path
            && match (&self.file, &prev.file) {
                (Some(a), Some(b)) => a.id == b.id,
                (None, None) => true,
                _ => false,
            }
    }
}

/// A regular file, opened once, with the headers that describe it.
#[derive(Debug)]
pub struct FileInfo {
    /// The open handle; dropped once the bytes are in `body`.
    handle: Option<Arc<File>>,
    /// The whole file, for small files.
    body: Option<Bytes>,
    /// Size and modification time of the open handle (not of the path,
    /// which may change under us).
    pub len: u64,
    pub mtime: Option<SystemTime>,
    /// Content-Type from the name the URL used.
    pub content_type: HeaderValue,
    /// ETag and Last-Modified of the file served as is (no coding).
    pub validators: Rc<Validators>,
    /// (dev, ino, size, mtime s, mtime ns, ctime s, ctime ns)
    id: (u64, u64, u64, i64, i64, i64, i64),
}

impl FileInfo {
    /// Step 6 of the module doc: open read-only without blocking (a FIFO
    /// swapped in after the stat must not hang us) and without following a
    /// final symlink (`path` has none, so one appearing now is a race), then
    /// take type, size and times from the handle.
    fn open(lexical: &Path, path: &Path) -> Result<FileInfo, StaticError> {
        use nix::libc;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| StaticError::from_io("opening", path, e))?;
        let meta = file
            .metadata()
            .map_err(|e| StaticError::from_io("reading metadata of", path, e))?;
        if !meta.is_file() {
            return Err(StaticError::NotRegular);
        }
        let mtime = meta.modified().ok();
        Ok(FileInfo {
            handle: Some(Arc::new(file)),
            body: None,
            len: meta.len(),
            mtime,
            content_type: super::content_type_for(lexical),
            validators: Rc::new(Validators::new(mtime, meta.len(), None)),
            id: (
                meta.dev(),
                meta.ino(),
                meta.size(),
                meta.mtime(),
                meta.mtime_nsec(),
                meta.ctime(),
                meta.ctime_nsec(),
            ),
        })
    }

    /// Reads the whole file into memory when it is at most `limit` bytes,
    /// and closes the handle unless the file is big enough for `sendfile`.
    /// A short read (the file shrank) keeps the handle.
    pub fn load_body(&mut self, limit: u64) {
        use std::os::unix::fs::FileExt;
        let Some(handle) = &self.handle else { return };
        if self.len > limit {
            return;
        }
        let mut buf = vec![0u8; self.len as usize];
        let mut done = 0;
        while done < buf.len() {
            match handle.read_at(&mut buf[done..], done as u64) {
                Ok(0) => return,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
        self.body = Some(Bytes::from(buf));
        if self.len < SENDFILE_MIN {
            self.handle = None;
        }
    }

    /// Where the body comes from: memory, the shared handle, or either.
    pub fn source(&self) -> Source {
        match (&self.body, &self.handle) {
            (Some(b), Some(h)) => Source::Both(b.clone(), h.clone()),
            (Some(b), None) => Source::Memory(b.clone()),
            (None, Some(h)) => Source::File(h.clone()),
            (None, None) => Source::Memory(Bytes::new()),
        }
    }

    pub fn body(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }

    pub fn body_len(&self) -> usize {
        self.body.as_ref().map_or(0, Bytes::len)
    }

    pub fn holds_fd(&self) -> bool {
        self.handle.is_some()
    }
}

/// Step 5's answer: a file system object whose real path is inside the
/// root, not opened.
#[derive(Debug)]
pub struct Contained {
    /// The path as the URL named it (root + segments).
    pub lexical: PathBuf,
    /// The real path: `lexical` itself when no component below the root is
    /// a symlink, else the canonical path.
    pub path: PathBuf,
    pub kind: Kind,
}

impl Contained {
    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }

    pub fn is_file(&self) -> bool {
        self.kind == Kind::File
    }
}

/// Step 5: find `lexical` on disk and check that its real path is inside
/// `root` (unless `outside_ok`). Opens nothing.
///
/// The common case costs one `lstat` per component below the root: if none
/// is a symlink, the lexical path (root + plain names, no `.`/`..`) is the
/// real path and is inside the root by construction. Otherwise the path is
/// canonicalized (one `readlink` per component) and checked against the root.
pub fn contain(root: &Path, lexical: PathBuf, outside_ok: bool) -> Result<Contained, StaticError> {
    let (path, file_type) = match lstat_walk(root, &lexical)? {
        Some(ft) => (lexical.clone(), ft),
        None => {
            let canonical = std::fs::canonicalize(&lexical)
                .map_err(|e| StaticError::from_io("resolving", &lexical, e))?;
            if !outside_ok && !canonical.starts_with(root) {
                return Err(StaticError::OutsideRoot);
            }
            let meta = std::fs::metadata(&canonical)
                .map_err(|e| StaticError::from_io("reading metadata of", &canonical, e))?;
            (canonical, meta.file_type())
        }
    };
    let kind = if file_type.is_dir() {
        Kind::Dir
    } else if file_type.is_file() {
        Kind::File
    } else {
        Kind::Other
    };
    Ok(Contained {
        lexical,
        path,
        kind,
    })
}

/// Steps 5 and 6: [`contain`], then open a regular file to serve it.
pub fn locate(root: &Path, lexical: PathBuf, outside_ok: bool) -> Result<Node, StaticError> {
    let Contained {
        lexical,
        path,
        kind,
    } = contain(root, lexical, outside_ok)?;
    let file = match kind {
        Kind::File => Some(FileInfo::open(&lexical, &path)?),
        Kind::Dir | Kind::Other => None,
    };
    Ok(Node {
        lexical,
        path,
        kind,
        file,
    })
}

/// The type of `lexical` when no component from `root` down is a symlink;
/// None when one is (or `lexical` is not under `root`), for `canonicalize`.
fn lstat_walk(root: &Path, lexical: &Path) -> Result<Option<FileType>, StaticError> {
    let Ok(rel) = lexical.strip_prefix(root) else {
        return Ok(None);
    };
    let mut path = root.to_path_buf();
    let mut last = None;
    for component in rel.components() {
        path.push(component);
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| StaticError::from_io("reading metadata of", &path, e))?;
        if meta.file_type().is_symlink() {
            return Ok(None);
        }
        last = Some(meta.file_type());
    }
    match last {
        Some(ft) => Ok(Some(ft)),
        // The root itself: canonical by configuration.
        None => Ok(None),
    }
}

/// A configured index name is safe to join: one plain segment.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn ok(rel: &str) -> RelPath {
        parse_rel(rel, false).unwrap()
    }

    fn status(rel: &str) -> u16 {
        parse_rel(rel, false).unwrap_err().status().as_u16()
    }

    #[test]
    fn plain_paths() {
        assert_eq!(ok("/a/b.txt").path, PathBuf::from("a/b.txt"));
        assert!(!ok("/a/b.txt").trailing_slash);
        assert!(ok("/a/").trailing_slash);
        assert!(ok("").trailing_slash && ok("").is_root);
        assert!(ok("/").is_root);
        assert_eq!(ok("//a///b").path, PathBuf::from("a/b"));
    }

    #[test]
    fn traversal_is_refused() {
        assert_eq!(status("/../etc/passwd"), 400);
        assert_eq!(status("/%2e%2e/"), 400);
        assert_eq!(status("/%2E%2E/etc"), 400);
        assert_eq!(status("/a/../../etc"), 400);
        // An encoded slash is never a separator.
        assert_eq!(status("/%2e%2e%2fetc"), 404);
        assert_eq!(status("/a%2Fb"), 404);
        assert_eq!(status("/..%5c..%5cetc"), 400);
        assert_eq!(status("/a\\b"), 400);
        assert_eq!(status("/a%00b"), 400);
    }

    #[test]
    fn dot_segments_resolve_lexically_inside_root() {
        let p = ok("/a/../b.txt");
        assert_eq!(p.path, PathBuf::from("b.txt"));
        assert!(!p.trailing_slash);
        let p = ok("/a/b/..");
        assert_eq!(p.path, PathBuf::from("a"));
        assert!(p.trailing_slash);
        let p = ok("/a/./b");
        assert_eq!(p.path, PathBuf::from("a/b"));
        assert!(ok("/a/%2e").trailing_slash);
    }

    #[test]
    fn double_encoding_is_decoded_once() {
        assert_eq!(ok("/%252e%252e").path, PathBuf::from("%2e%2e"));
        assert_eq!(ok("/%252e%252e/x").path, PathBuf::from("%2e%2e/x"));
    }

    #[test]
    fn dotfiles_hidden_unless_allowed() {
        assert_eq!(status("/.env"), 404);
        assert_eq!(status("/.git/config"), 404);
        assert_eq!(status("/%2egit/config"), 404);
        assert!(parse_rel("/.env", true).is_ok());
        // `..`-resolved names are not dotfiles.
        assert!(parse_rel("/a/..", false).is_ok());
    }

    #[test]
    fn spaces_unicode_and_invalid_utf8() {
        assert_eq!(ok("/a%20b.txt").path, PathBuf::from("a b.txt"));
        assert_eq!(ok("/caf%C3%A9").path, PathBuf::from("café"));
        let p = ok("/%FF%FE");
        assert_eq!(p.path.as_os_str().as_bytes(), b"\xff\xfe");
    }

    #[test]
    fn join_allocates_the_joined_path() {
        let root = Path::new("/srv/www");
        assert_eq!(join(root, Path::new("a/b")), PathBuf::from("/srv/www/a/b"));
        assert_eq!(join(root, Path::new("")), PathBuf::from("/srv/www"));
        assert_eq!(ok("/a/b/../../c").path, PathBuf::from("c"));
        assert_eq!(ok("/a/bb/..").path, PathBuf::from("a"));
        assert_eq!(status("/a/../.."), 400);
        // As before: only the names left after `..` count as dotfiles.
        assert_eq!(ok("/.git/../x").path, PathBuf::from("x"));
    }

    #[test]
    fn index_names() {
        assert!(is_plain_name("index.html"));
        assert!(!is_plain_name(".."));
        assert!(!is_plain_name("a/b"));
        assert!(!is_plain_name(""));
    }

    #[test]
    fn locate_checks_symlinks_against_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("f"), "f").unwrap();
        std::os::unix::fs::symlink(root.join("f"), root.join("in")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("out")).unwrap();
        assert!(locate(&root, root.join("in"), false).is_ok());
        let err = locate(&root, root.join("out"), false).unwrap_err();
        assert_eq!(err.status(), 403);
        assert!(locate(&root, root.join("out"), true).is_ok());
        // Containment alone answers the same, and opens nothing.
        assert!(contain(&root, root.join("in"), false).unwrap().is_file());
        assert_eq!(
            contain(&root, root.join("out"), false)
                .unwrap_err()
                .status(),
            403
        );
        assert_eq!(
            contain(&root, root.join("out"), true).unwrap().path,
            outside.path().canonicalize().unwrap().join("secret")
        );
        assert_eq!(
            locate(&root, root.join("nope"), false)
                .unwrap_err()
                .status(),
            404
        );
        assert_eq!(
            locate(&root, root.join("f/x"), false).unwrap_err().status(),
            404
        );
    }
}
