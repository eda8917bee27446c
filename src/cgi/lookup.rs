//! Script lookup: from the still-encoded path below the route prefix to the
//! program to run, its `SCRIPT_NAME` and its `PATH_INFO`.
//!
//! Steps, in order:
//! 1. decode and normalise the path with the static handler's `parse_rel`
//!    (decode once, `%2F` never a separator, NUL and backslash → 400, `..`
//!    resolved lexically and never above the directory);
//! 2. walk the segments from the CGI directory: a segment starting with `.`
//!    is 404 (never looked up); each step's real path must stay inside the
//!    directory (`contain`: a symlink out → 403); a directory goes on;
//! 3. the first regular file is the script: not executable by us → 403
//!    (it is never opened here: a script we may execute but not read runs);
//!    the segments after it, decoded, are `PATH_INFO` (with the trailing
//!    `/` when the URL had one);
//! 4. the walk ends on a directory: its `index` script when one is set (a
//!    URL without the trailing `/` is first redirected to add it, as static
//!    directories are), else 404.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::unistd::{access, AccessFlags};

use super::error::CgiError;
use crate::config::CgiOptions;
use crate::static_files::resolve::{contain, parse_rel};
use crate::static_files::StaticError;

/// A script found on disk.
#[derive(Debug, PartialEq, Eq)]
pub struct Script {
    /// The file, as the URL named it inside the CGI directory (symlinks
    /// checked, not resolved): what runs, and `SCRIPT_FILENAME`.
    pub path: PathBuf,
    /// The decoded URL path of the script below the route (`/sub/env.sh`).
    pub name: Vec<u8>,
    /// The decoded rest of the path ("" or starting with `/`).
    pub path_info: Vec<u8>,
}

impl Script {
    /// The working directory: the script's own.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Script(Script),
    /// A directory URL without its trailing `/` (301 to add it).
    AddSlash,
}

pub fn lookup(opts: &CgiOptions, rel: &str) -> Result<Lookup, CgiError> {
    // 1. Decode and normalise; dotfiles are judged per segment below, so
    // that PATH_INFO may hold them.
    let rel = parse_rel(rel, true).map_err(|e| match e {
        StaticError::BadPath(what) => CgiError::BadPath(what),
        _ => CgiError::NotFound,
    })?;
    let segments: Vec<&OsStr> = rel.path.iter().collect();
    let mut cur = opts.dir.clone();
    // 2. Walk.
    for (i, seg) in segments.iter().enumerate() {
        if seg.as_bytes().starts_with(b".") {
            return Err(CgiError::NotFound);
        }
        let found = contain(&opts.dir, cur.join(seg), false).map_err(from_static)?;
        if found.is_dir() {
            cur = found.lexical;
            continue;
        }
        // 3. The script.
        if !found.is_file() {
            return Err(CgiError::NotFound);
        }
        check_executable(&found.lexical)?;
        let mut path_info = join(&segments[i + 1..]);
        if rel.trailing_slash && (i + 1 < segments.len() || path_info.is_empty()) {
            path_info.push(b'/');
        }
        return Ok(Lookup::Script(Script {
            path: found.lexical,
            name: join(&segments[..=i]),
            path_info,
        }));
    }
    // 4. A directory.
    let Some(index) = &opts.index else {
        return Err(CgiError::NotFound);
    };
    if !rel.trailing_slash {
        return Ok(Lookup::AddSlash);
    }
    let found = contain(&opts.dir, cur.join(index), false).map_err(from_static)?;
    if !found.is_file() {
        return Err(CgiError::NotFound);
    }
    check_executable(&found.lexical)?;
    let mut name = join(&segments);
    name.push(b'/');
    name.extend_from_slice(index.as_bytes());
    Ok(Lookup::Script(Script {
        path: found.lexical,
        name,
        path_info: Vec::new(),
    }))
}

fn from_static(err: StaticError) -> CgiError {
    match err {
        StaticError::BadPath(what) => CgiError::BadPath(what),
        StaticError::OutsideRoot => {
            CgiError::Forbidden("symlink leads outside the directory".into())
        }
        StaticError::PermissionDenied(path) => {
            CgiError::Forbidden(format!("permission denied: {}", path.display()))
        }
        StaticError::Io { .. } => CgiError::Forbidden(err.to_string()),
        _ => CgiError::NotFound,
    }
}

/// Executable by this process (the kernel's own check, so it is right for
/// root and for group and ACL bits too).
fn check_executable(path: &Path) -> Result<(), CgiError> {
    access(path, AccessFlags::X_OK)
        .map_err(|_| CgiError::Forbidden(format!("not executable: {}", path.display())))
}

/// `["a", "b"]` → `/a/b`; `[]` → "".
fn join(segments: &[&OsStr]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in segments {
        out.push(b'/');
        out.extend_from_slice(s.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use super::*;

    struct Dir {
        _tmp: tempfile::TempDir,
        opts: CgiOptions,
    }

    fn setup(index: Option<&str>) -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        let write = |rel: &str, mode: u32| {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("env.sh", 0o755);
        write("plain.txt", 0o644);
        write("sub/deep.sh", 0o755);
        write("sub/index.cgi", 0o755);
        write(".hidden.sh", 0o755);
        std::os::unix::fs::symlink("/bin/sh", dir.join("escape")).unwrap();
        let opts = CgiOptions {
            dir,
            index: index.map(String::from),
            timeout: Duration::from_secs(1),
            max_processes: 1,
            path_env: String::new(),
            pass_authorization: false,
        };
        Dir { _tmp: tmp, opts }
    }

    fn script(d: &Dir, rel: &str) -> (String, String) {
        match lookup(&d.opts, rel).unwrap() {
            Lookup::Script(s) => (
                String::from_utf8(s.name).unwrap(),
                String::from_utf8(s.path_info).unwrap(),
            ),
            other => panic!("{rel}: {other:?}"),
        }
    }

    fn status(d: &Dir, rel: &str) -> u16 {
        lookup(&d.opts, rel).unwrap_err().status().as_u16()
    }

    #[test]
    fn first_executable_segment_is_the_script() {
        let d = setup(None);
        assert_eq!(script(&d, "/env.sh"), ("/env.sh".into(), "".into()));
        assert_eq!(script(&d, "/env.sh/"), ("/env.sh".into(), "/".into()));
        assert_eq!(
            script(&d, "/env.sh/a/b%20c/"),
            ("/env.sh".into(), "/a/b c/".into())
        );
        assert_eq!(
            script(&d, "/sub/deep.sh/x"),
            ("/sub/deep.sh".into(), "/x".into())
        );
        assert_eq!(
            script(&d, "/env.sh/.well-known"),
            ("/env.sh".into(), "/.well-known".into())
        );
    }

    #[test]
    fn refusals() {
        let d = setup(None);
        assert_eq!(status(&d, "/nope"), 404);
        assert_eq!(status(&d, "/plain.txt"), 403);
        assert_eq!(status(&d, "/.hidden.sh"), 404);
        assert_eq!(status(&d, "/../env.sh"), 400);
        assert_eq!(status(&d, "/env.sh%00"), 400);
        assert_eq!(status(&d, "/escape"), 403);
        assert_eq!(status(&d, "/sub/"), 404);
        assert_eq!(status(&d, ""), 404);
    }

    #[test]
    fn directory_index() {
        let d = setup(Some("index.cgi"));
        assert_eq!(script(&d, "/sub/"), ("/sub/index.cgi".into(), "".into()));
        assert_eq!(lookup(&d.opts, "/sub").unwrap(), Lookup::AddSlash);
        // The CGI directory itself has no index.cgi.
        assert_eq!(status(&d, "/"), 404);
    }
}
