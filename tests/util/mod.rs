//! Test support: a temp dir per test, the real `portico` binary started in
//! it, and clients that talk to it (raw sockets, hyper HTTP/1.1 and h2c,
//! HTTP/2 over TLS).

pub mod client;
pub mod fixture;
pub mod load;
pub mod raw;
pub mod wsgi;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

pub use client::{get, request, Resp};
pub use fixture::TestDir;
pub use raw::raw;

/// How long a server gets to print its `listening on` lines.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Lines a child wrote, shared with the thread that drains the pipe.
#[derive(Default)]
pub struct Captured {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
    closed: Mutex<bool>,
}

impl Captured {
    pub fn drain(self: &Arc<Self>, pipe: impl Read + Send + 'static) {
        let me = self.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                        me.lines.lock().unwrap().push(line);
                        me.changed.notify_all();
                    }
                }
            }
            *me.closed.lock().unwrap() = true;
            me.changed.notify_all();
        });
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.lines().join("\n")
    }

    /// Waits until `pred` holds for the lines so far, or `timeout` passes.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines.lock().unwrap();
        loop {
            if pred(&lines) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            lines = self.changed.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }
}

/// A running `portico`; the whole process group is stopped on drop.
pub struct Server {
    child: Child,
    /// Every listener, in the order printed: (scheme, address).
    pub listeners: Vec<(String, SocketAddr)>,
    pub addr: SocketAddr,
    pub stdout: Arc<Captured>,
    pub stderr: Arc<Captured>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_portico")
}

impl Server {
    /// Starts `portico ARGS` in `dir` and waits for `listeners` lines.
    pub fn start_in(dir: &Path, args: &[&str], listeners: usize) -> Server {
        Self::start_in_env(dir, args, listeners, &[])
    }

    /// As [`Server::start_in`], with extra environment variables.
    pub fn start_in_env(
        dir: &Path,
        args: &[&str],
        listeners: usize,
        env: &[(&str, &str)],
    ) -> Server {
        Self::start_command(Command::new(bin()), dir, args, listeners, env)
    }

    /// As [`Server::start_in_env`], through `cmd`: the binary, or a program
    /// that execs it (so the pid is the server's).
    pub fn start_command(
        mut cmd: Command,
        dir: &Path,
        args: &[&str],
        listeners: usize,
        env: &[(&str, &str)],
    ) -> Server {
        cmd.args(args)
            .envs(env.iter().copied())
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().expect("start portico");
        let stdout = Arc::new(Captured::default());
        let stderr = Arc::new(Captured::default());
        stdout.drain(child.stdout.take().unwrap());
        stderr.drain(child.stderr.take().unwrap());
        let count = |lines: &[String]| {
            lines
                .iter()
                .filter(|l| l.starts_with("listening on "))
                .count()
        };
        let ok = stdout.wait_for(START_TIMEOUT, |l| count(l) >= listeners);
        let mut server = Server {
            child,
            listeners: Vec::new(),
            addr: "0.0.0.0:0".parse().unwrap(),
            stdout,
            stderr,
        };
        if !ok {
            let status = server.child.try_wait().ok().flatten();
            // Give stderr a moment to arrive before reporting.
            std::thread::sleep(Duration::from_millis(200));
            panic!(
                "portico {args:?} did not print {listeners} `listening on` line(s) within \
                 {START_TIMEOUT:?} (exit status: {status:?})\nstdout:\n{}\nstderr:\n{}",
                server.stdout.text(),
                server.stderr.text()
            );
        }
        for line in server.stdout.lines() {
            if let Some(url) = line.strip_prefix("listening on ") {
                let (scheme, addr) = url.split_once("://").expect("URL in listening line");
                if addr.starts_with("unix:") {
                    continue; // no socket address; tests know the path they asked for
                }
                let addr: SocketAddr = addr
                    .parse()
                    .unwrap_or_else(|e| panic!("bad address in `{line}`: {e}"));
                server.listeners.push((scheme.to_string(), addr));
            }
        }
        server.addr = server.listeners[0].1;
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The worker processes: children of the master.
    pub fn workers(&self) -> Vec<u32> {
        children_of(self.pid())
    }

    /// Waits until the master has `n` workers; returns their pids.
    pub fn wait_workers(&self, n: usize, timeout: Duration) -> Vec<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            let w = self.workers();
            if w.len() == n || Instant::now() > deadline {
                return w;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid() as i32), sig).expect("signal portico");
    }

    /// Waits for the master to exit; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait portico") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stderr so far, for assertion messages.
    pub fn logs(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout.text(),
            self.stderr.text()
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pgid = Pid::from_raw(self.child.id() as i32);
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = killpg(pgid, Signal::SIGTERM);
            if self.wait_exit(Duration::from_secs(2)).is_none() {
                let _ = killpg(pgid, Signal::SIGKILL);
                let _ = self.child.wait();
            }
        }
        // Workers left behind by a master that died first.
        let _ = killpg(pgid, Signal::SIGKILL);
    }
}

/// Pids whose parent is `pid` (from /proc).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // Field 4 (ppid) comes after the `(comm)` field, which may hold spaces.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            continue;
        }
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            out.push(child);
        }
    }
    out.sort();
    out
}

/// Resident set size of `pid` in KiB (VmRSS), if the process exists.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs `portico ARGS` to completion (for --help, --check-config).
pub fn run(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run portico")
}
