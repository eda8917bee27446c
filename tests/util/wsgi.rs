//! WSGI test support: the Python fixture apps (copied into each test's
//! directory, which is the server's working directory and so on sys.path),
//! the project venv with Flask and Django, and a server started on an app.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Server, TestDir};

/// tests/fixtures/wsgi in the source tree.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wsgi")
}

/// The repo's `.venv` (Flask, Django); panics when it is missing, since a
/// silently skipped framework test would hide a regression.
pub fn venv() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv");
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./scripts/test to create .venv with Flask and Django \
         (tests/requirements.txt)",
        python.display()
    );
    venv
}

/// The venv's python, for set-up commands (Django's manage.py).
pub fn venv_python() -> PathBuf {
    venv().join("bin/python")
}

/// Copies every file of tests/fixtures/wsgi (recursively) into `t`.
pub fn copy_fixtures(t: &TestDir) {
    copy_tree(&fixtures(), t.path());
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        if name == "__pycache__" {
            continue;
        }
        let src = entry.path();
        if src.is_dir() {
            copy_tree(&src, &to.join(&name));
        } else {
            std::fs::copy(&src, to.join(&name)).unwrap();
        }
    }
}

/// Copies the fixtures into `t` and serves `app` (with `-w 1`, port 0).
pub fn serve_app(t: &TestDir, app: &str, extra: &[&str]) -> Server {
    copy_fixtures(t);
    let mut args = vec![app];
    args.extend_from_slice(extra);
    t.serve(&args)
}

/// Waits for `path` to exist (a marker written by an app's close()).
pub fn wait_file(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    path.exists()
}

/// Parses a JSON response body.
pub fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}
