//! Starting one worker: re-execute our binary with `--worker`, the
//! listening sockets inherited (`PORTICO_LISTEN_FDS`) and the write end of a
//! pipe (`PORTICO_READY_FD`) on which the worker says it has loaded its app
//! and accepts connections.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::server::listener::LISTEN_FDS_ENV;

/// Tells a worker which process supervises it, so it can exit if that
/// process is gone before it could arrange to be told.
pub const MASTER_PID_ENV: &str = "PORTICO_MASTER_PID";
const READY_FD_ENV: &str = "PORTICO_READY_FD";

pub struct WorkerSpec {
    pub exe: std::path::PathBuf,
    pub args: Vec<OsString>,
    pub fds: String,
    pub graceful_timeout: Duration,
}

/// A started worker and the pipe it will report readiness on.
pub struct Spawned {
    pub child: Child,
    pub ready: tokio::net::unix::pipe::Receiver,
}

impl WorkerSpec {
    pub fn spawn(&self) -> std::io::Result<Spawned> {
        let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        // Only this child may inherit the write end: the master starts
        // workers one at a time on one thread, and drops its copy right after.
        fcntl(write_end.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty()))?;
        let child = Command::new(&self.exe)
            .args(&self.args)
            .arg("--worker")
            .env(LISTEN_FDS_ENV, &self.fds)
            .env(MASTER_PID_ENV, std::process::id().to_string())
            .env(READY_FD_ENV, write_end.as_raw_fd().to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        drop(write_end);
        Ok(Spawned {
            child: child?,
            ready: tokio::net::unix::pipe::Receiver::from_owned_fd(read_end)?,
        })
    }
}

/// Resolves when the worker reported ready; never if it exits first.
pub async fn wait_ready(mut pipe: tokio::net::unix::pipe::Receiver) {
    let mut byte = [0u8; 1];
    match pipe.read(&mut byte).await {
        Ok(1) => {}
        _ => std::future::pending().await,
    }
}

/// In a worker: tell the master the app is loaded and we accept connections.
pub fn notify_ready() {
    static NOTIFIED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if NOTIFIED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let Some(fd) = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    if nix::sys::stat::fstat(fd).is_err() {
        return;
    }
    // SAFETY: the master passed us this descriptor for exactly this use; we
    // take ownership once (NOTIFIED) and close it after writing.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = std::fs::File::from(owned).write_all(b"1");
}
