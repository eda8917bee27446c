//! A temp dir per test and the file trees the static tests serve.

use std::path::{Path, PathBuf};

use super::Server;

pub struct TestDir {
    dir: tempfile::TempDir,
}

/// Contents of files in the standard site, so tests can compare bodies.
pub const HELLO: &str = "hello, world\n";
pub const OUTSIDE_SECRET: &str = "TOP SECRET: outside the root\n";

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

impl TestDir {
    pub fn new() -> Self {
        TestDir {
            dir: tempfile::Builder::new()
                .prefix("portico-test-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `rel` (creating its parents).
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }

    pub fn symlink(&self, target: &str, rel: &str) {
        std::os::unix::fs::symlink(target, self.join(rel)).unwrap();
    }

    /// A sparse file of `len` bytes (reads as zeros, takes no disk).
    pub fn sparse(&self, rel: &str, len: u64) -> PathBuf {
        let path = self.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(len).unwrap();
        path
    }

    /// The standard site under `site/`, with a secret under `outside/`:
    ///
    /// ```text
    /// site/index.html            site/docs/index.html   site/noindex/x.txt
    /// site/hello.txt             site/docs/guide.txt    site/.secret
    /// site/a b.txt               site/style.css         site/.git/config
    /// site/한글.txt              site/data.json         site/link.txt -> hello.txt
    /// site/app.js (+ .gz .br .zst siblings)             site/escape.txt -> ../outside/secret.txt
    /// site/digits.txt (0123456789 repeated, 100 bytes)  site/sub/deep/file.txt
    /// ```
    pub fn site(&self) -> PathBuf {
        self.write("outside/secret.txt", OUTSIDE_SECRET);
        self.write("site/index.html", "<!doctype html><title>home</title>\n");
        self.write("site/hello.txt", HELLO);
        self.write("site/a b.txt", "a file with a space\n");
        self.write("site/한글.txt", "유니코드 이름\n");
        self.write("site/style.css", "body { color: black }\n");
        self.write("site/data.json", "{\"ok\":true}\n");
        self.write("site/app.js", "console.log('identity');\n");
        self.write("site/app.js.gz", "GZIP-VARIANT");
        self.write("site/app.js.br", "BROTLI-VARIANT");
        self.write("site/app.js.zst", "ZSTD-VARIANT");
        self.write("site/digits.txt", "0123456789".repeat(10));
        self.write("site/.secret", "dotfile\n");
        self.write("site/.git/config", "[core]\n");
        self.write("site/docs/index.html", "<h1>docs</h1>\n");
        self.write("site/docs/guide.txt", "the guide\n");
        self.write("site/noindex/x.txt", "x\n");
        self.write("site/noindex/y.txt", "y\n");
        self.write("site/sub/deep/file.txt", "deep\n");
        self.symlink("hello.txt", "site/link.txt");
        self.symlink("../outside/secret.txt", "site/escape.txt");
        self.symlink("../outside", "site/outdir");
        self.join("site")
    }

    /// Starts portico here. Adds `-b 127.0.0.1:0` unless the args bind or
    /// name a config file, and `-w 1` unless they choose the process model.
    pub fn serve(&self, args: &[&str]) -> Server {
        let has = |names: &[&str]| args.iter().any(|a| names.contains(a));
        let mut full: Vec<&str> = Vec::new();
        if !has(&["-b", "--bind", "-c", "--config"]) {
            full.extend(["-b", "127.0.0.1:0"]);
        }
        if !has(&["-w", "--workers", "--no-master"]) {
            full.extend(["-w", "1"]);
        }
        full.extend_from_slice(args);
        Server::start_in(self.path(), &full, 1)
    }

    /// The standard site served at `/` with the given extra flags.
    pub fn serve_site(&self, extra: &[&str]) -> Server {
        self.site();
        let mut args = vec!["--static", "/=site"];
        args.extend_from_slice(extra);
        self.serve(&args)
    }
}
