//! Starting one worker: re-execute our binary with `--worker`, handing it
//! (through the environment) the listening sockets (`PORTICO_LISTEN_FDS`),
//! the write end of its channel to the master (`link`), its request
//! scoreboard and its seat at the accept-balance table; then watch it:
//! forward its messages and, once it has exited, what its scoreboard says
//! it was running.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::Stdio;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::link::{Message, CONTROL_FD_ENV};
use super::supervisor::{Event, Exit, WorkerId};
use crate::scoreboard::{Scoreboard, SCOREBOARD_FD_ENV};
use crate::server::balance::{BOARD_FD_ENV, SEAT_ENV};
use crate::server::listener::LISTEN_FDS_ENV;

/// Tells a worker which process supervises it, so it can exit if that
/// process is gone before it could arrange to be told.
pub const MASTER_PID_ENV: &str = "PORTICO_MASTER_PID";

/// How long the master keeps reading a dead worker's channel for messages
/// it sent before it died (a process it forked may hold the pipe open).
const LAST_WORDS: Duration = Duration::from_millis(200);

pub struct WorkerSpec {
    pub exe: std::path::PathBuf,
    pub args: Vec<OsString>,
    /// `PORTICO_LISTEN_FDS`: the listening sockets, inheritable.
    pub fds: String,
    /// The accept-balance table's descriptor, inheritable.
    pub balance_fd: Option<i32>,
}

/// A started worker.
pub struct Spawned {
    pub child: Child,
    control: tokio::net::unix::pipe::Receiver,
    scoreboard: Option<Scoreboard>,
}

impl WorkerSpec {
    /// Starts a worker; `seat` is its place at the balance table.
    pub fn spawn(&self, seat: Option<usize>) -> std::io::Result<Spawned> {
        let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        // Only this child may inherit the write end and the scoreboard: the
        // master starts workers one at a time on one thread, and drops its
        // inheritable copies right after.
        fcntl(write_end.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty()))?;
        let scoreboard = match Scoreboard::create() {
            Ok(board) => Some(board),
            Err(err) => {
                tracing::warn!("no request scoreboard for a new worker: {err}");
                None
            }
        };
        let board_copy: Option<OwnedFd> = scoreboard
            .as_ref()
            .map(|b| nix::unistd::dup(b.mem().fd().as_raw_fd()))
            .transpose()?
            .map(|fd| {
                // SAFETY: dup just returned this new descriptor; we own it.
                unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
            });
        let mut command = Command::new(&self.exe);
        command
            .args(&self.args)
            .arg("--worker")
            .env(LISTEN_FDS_ENV, &self.fds)
            .env(MASTER_PID_ENV, std::process::id().to_string())
            .env(CONTROL_FD_ENV, write_end.as_raw_fd().to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(fd) = &board_copy {
            command.env(SCOREBOARD_FD_ENV, fd.as_fd().as_raw_fd().to_string());
        }
        if let (Some(fd), Some(seat)) = (self.balance_fd, seat) {
            command
                .env(BOARD_FD_ENV, fd.to_string())
                .env(SEAT_ENV, seat.to_string());
        }
        let child = command.spawn();
        drop(write_end);
        drop(board_copy);
        Ok(Spawned {
            child: child?,
            control: tokio::net::unix::pipe::Receiver::from_owned_fd(read_end)?,
            scoreboard,
        })
    }
}

impl Spawned {
    /// Forwards the worker's messages as events, then its exit with the
    /// requests it was running. Runs as its own task.
    pub async fn watch(self, id: WorkerId, events: mpsc::UnboundedSender<Event>) {
        let Spawned {
            mut child,
            control,
            scoreboard,
        } = self;
        let mut lines = BufReader::new(control).lines();
        let forward = |line: String| {
            if let Some(message) = Message::parse(&line) {
                let _ = events.send(Event::Message(id, message));
            }
        };
        let status = loop {
            tokio::select! {
                biased;
                line = lines.next_line() => match line {
                    Ok(Some(line)) => forward(line),
                    // Closed: the worker is gone (or closed it); wait for it.
                    _ => break child.wait().await,
                },
                status = child.wait() => {
                    while let Ok(Ok(Some(line))) =
                        tokio::time::timeout(LAST_WORDS, lines.next_line()).await
                    {
                        forward(line);
                    }
                    break status;
                }
            }
        };
        let lost = scoreboard.map(|b| b.running()).unwrap_or_default();
        let _ = events.send(Event::Exited(id, Exit { status, lost }));
    }
}
