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
//! 5. (`locate`) canonicalize the joined path and require it inside the root
//!    unless `symlinks_outside_root` (403): a symlink may point anywhere, the
//!    lexical walk above cannot know, so the check is made on the real path.
//!
//! Invalid UTF-8 is fine: Linux names are bytes and we build `OsStr`s from them.

use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;

use super::error::StaticError;

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
    let mut segments: Vec<Vec<u8>> = Vec::new();
    let mut trailing_slash = rel.is_empty() || rel.ends_with('/');
    for raw in rel.split('/') {
        let seg: Vec<u8> = percent_decode_str(raw).collect();
        if seg.contains(&0) {
            return Err(StaticError::BadPath("NUL byte"));
        }
        if seg.contains(&b'\\') {
            return Err(StaticError::BadPath("backslash"));
        }
        if seg.contains(&b'/') {
            return Err(StaticError::NotFound);
        }
        match seg.as_slice() {
            b"" => {}
            b"." => trailing_slash = true,
            b".." => {
                if segments.pop().is_none() {
                    return Err(StaticError::BadPath("`..` above the root"));
                }
                trailing_slash = true;
            }
            _ => {
                trailing_slash = false;
                segments.push(seg);
            }
        }
    }
    // A trailing empty segment (`/a/`) ends the loop with `trailing_slash`
    // false after the last name; restore it from the raw text.
    if rel.ends_with('/') {
        trailing_slash = true;
    }
    if !dotfiles && segments.iter().any(|s| s.first() == Some(&b'.')) {
        return Err(StaticError::Hidden);
    }
    let is_root = segments.is_empty();
    let path = segments
        .iter()
        .map(|s| OsStr::from_bytes(s))
        .collect::<PathBuf>();
    Ok(RelPath {
        path,
        trailing_slash,
        is_root,
    })
}

/// A file system object found inside the root.
#[derive(Debug)]
pub struct Found {
    /// The path as the URL named it (root + segments), for sibling names.
    pub lexical: PathBuf,
    /// The real path, every symlink resolved; what we open.
    pub canonical: PathBuf,
    /// Metadata of `canonical` (symlinks followed).
    pub meta: Metadata,
}

/// Step 5: find `lexical` on disk and check that its real path is inside `root`.
pub fn locate(root: &Path, lexical: PathBuf, outside_ok: bool) -> Result<Found, StaticError> {
    let canonical = std::fs::canonicalize(&lexical)
        .map_err(|e| StaticError::from_io("resolving", &lexical, e))?;
    if !outside_ok && !canonical.starts_with(root) {
        return Err(StaticError::OutsideRoot);
    }
    let meta = std::fs::metadata(&canonical)
        .map_err(|e| StaticError::from_io("reading metadata of", &canonical, e))?;
    Ok(Found {
        lexical,
        canonical,
        meta,
    })
}

/// A configured index name is safe to join: one plain segment.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

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
