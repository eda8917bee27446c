//! The static handler's one error enum and how each variant maps to a status.
//!
//! Steps, in order: classify an I/O error (`from_io`), pick the status
//! (`status`), log the ones an operator must see (`log`).

use std::io;
use std::path::{Path, PathBuf};

use http::StatusCode;

/// Everything that stops the static handler from serving a file. Each variant
/// documents the status it answers with; `render` is the only place that turns
/// one into a response.
#[derive(Debug, thiserror::Error)]
pub enum StaticError {
    /// 405: a method other than GET or HEAD (answered with `Allow: GET, HEAD`).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 400: the decoded path holds a byte no file name of ours may hold
    /// (NUL, backslash) or a `..` that would climb above the root.
    #[error("bad request path: {0}")]
    BadPath(&'static str),
    /// 404: nothing at that path (also ENOTDIR, ENAMETOOLONG, ELOOP, and an
    /// encoded `/` inside a segment, which no Linux file name can hold).
    #[error("not found")]
    NotFound,
    /// 404: a name starting with `.` while dotfiles are off. 404 rather than
    /// 403 so the answer does not confirm the file exists.
    #[error("hidden dotfile")]
    Hidden,
    /// 404: a directory with no index file and autoindex off. nginx says 403;
    /// we say 404 so try-files hands such URLs to the app, and because the
    /// client cannot fix anything by authenticating.
    #[error("directory without index")]
    NoIndex,
    /// 404: a FIFO, socket or device; only regular files are served.
    #[error("not a regular file")]
    NotRegular,
    /// 403: a symlink that resolves outside the root while
    /// `symlinks_outside_root` is off.
    #[error("symlink leads outside the root")]
    OutsideRoot,
    /// 403: the OS refused access (EACCES, EPERM).
    #[error("permission denied: {0}")]
    PermissionDenied(PathBuf),
    /// 500: any other I/O failure; logged with what was being done.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl StaticError {
    /// Classifies an I/O error met while `what`-ing `path`.
    pub fn from_io(what: &'static str, path: &Path, err: io::Error) -> Self {
        use nix::libc;
        match err.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::ENAMETOOLONG | libc::ELOOP) => {
                return StaticError::NotFound
            }
            Some(libc::EACCES | libc::EPERM) => {
                return StaticError::PermissionDenied(path.to_path_buf())
            }
            _ => {}
        }
        match err.kind() {
            io::ErrorKind::NotFound => StaticError::NotFound,
            io::ErrorKind::PermissionDenied => StaticError::PermissionDenied(path.to_path_buf()),
            _ => StaticError::Io {
                what,
                path: path.to_path_buf(),
                source: err,
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            StaticError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            StaticError::BadPath(_) => StatusCode::BAD_REQUEST,
            StaticError::NotFound
            | StaticError::Hidden
            | StaticError::NoIndex
            | StaticError::NotRegular => StatusCode::NOT_FOUND,
            StaticError::OutsideRoot | StaticError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            StaticError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// True when the honest answer is "no such file": try-files then asks the app.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StaticError::NotFound | StaticError::Hidden | StaticError::NoIndex
        )
    }

    /// Server-side failures are logged; client mistakes are not (they would
    /// let any client fill the log).
    pub fn log(&self) {
        match self {
            StaticError::Io { .. } => tracing::error!(error = %self, "static file failed"),
            StaticError::PermissionDenied(_) | StaticError::OutsideRoot => {
                tracing::debug!(error = %self, "static file refused")
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_map_to_statuses() {
        let p = Path::new("/x");
        let nf = io::Error::from_raw_os_error(nix::libc::ENOENT);
        assert_eq!(StaticError::from_io("open", p, nf).status(), 404);
        let nd = io::Error::from_raw_os_error(nix::libc::ENOTDIR);
        assert_eq!(StaticError::from_io("open", p, nd).status(), 404);
        let acc = io::Error::from_raw_os_error(nix::libc::EACCES);
        assert_eq!(StaticError::from_io("open", p, acc).status(), 403);
        let other = io::Error::from_raw_os_error(nix::libc::EIO);
        assert_eq!(StaticError::from_io("open", p, other).status(), 500);
    }
}
