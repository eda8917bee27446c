//! Running one script: spawn it, log its stderr, and always reap it.
//!
//! Steps, in order:
//! 1. build the command: the script itself (its shebang picks the
//!    interpreter; never a shell), no arguments, working directory = the
//!    script's, an environment holding only the meta-variables, its own
//!    process group (so the whole group can be killed), pipes for stdin
//!    (only when there is a body), stdout and stderr; spawn it from a
//!    blocking-pool thread (the event loop never waits for an exec);
//! 2. a task logs stderr line by line (`warn`, tagged with the script and
//!    the request);
//! 3. a reaper task owns the child and the process slot: it waits for the
//!    exit (so no zombie is left) and releases the slot then; told to stop
//!    by the [`Guard`], it kills the whole group first.
//!
//! The group is signalled while its leader is not yet reaped (so the id is
//! still ours), or, after that, only when the output is cut while still
//! open (a member of the group holds it).

use std::cell::Cell;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;
use std::rc::Rc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::{oneshot, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::error::CgiError;
use super::lookup::Script;
use crate::gateway_env::Var;

/// Longest stderr line logged as one message; longer ones are split.
const STDERR_LINE_MAX: usize = 8 * 1024;

/// Which script serves which request, for every log line about it.
#[derive(Debug)]
pub struct Tag {
    pub script: String,
    pub request: String,
}

/// When the script last showed life (wrote output, or took input); the
/// timeout counts from here.
#[derive(Clone)]
pub struct Activity(Rc<Cell<Instant>>);

impl Activity {
    fn new() -> Self {
        Activity(Rc::new(Cell::new(Instant::now())))
    }

    pub fn touch(&self) {
        self.0.set(Instant::now());
    }

    pub fn last(&self) -> Instant {
        self.0.get()
    }
}

/// What the reaper is told.
enum Stop {
    /// Kill the group now (timeout, client gone, unusable answer).
    Now,
    /// The output is complete: give the script this long to exit, then
    /// kill the group.
    Grace(Duration),
}

/// Kills the script's process group when dropped, unless told the output
/// completed (`finished`).
pub struct Guard {
    tx: Option<oneshot::Sender<Stop>>,
}

impl Guard {
    pub fn kill(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Stop::Now);
        }
    }

    pub fn finished(&mut self, grace: Duration) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Stop::Grace(grace));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running script, as the handler holds it.
pub struct Running {
    pub stdin: Option<ChildStdin>,
    pub stdout: ChildStdout,
    pub guard: Guard,
    pub activity: Activity,
}

/// Steps 1–3.
pub async fn spawn(
    script: &Script,
    env: Vec<Var>,
    with_stdin: bool,
    slot: OwnedSemaphorePermit,
    tag: Rc<Tag>,
) -> Result<Running, CgiError> {
    let mut cmd = Command::new(&script.path);
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k, OsStr::from_bytes(v))))
        .current_dir(script.dir())
        .process_group(0)
        .kill_on_drop(true)
        .stdin(if with_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // posix_spawn (vfork) suspends the calling thread until the child has
    // exec'd; on a busy machine that is milliseconds in which this worker's
    // event loop would serve no one. A blocking-pool thread waits instead.
    let spawned = tokio::task::spawn_blocking(move || cmd.spawn())
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let mut child = spawned.map_err(|source| CgiError::Spawn {
        path: script.path.clone(),
        source,
    })?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        unreachable!("stdout and stderr are piped");
    };
    let stdin = child.stdin.take();
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let (tx, rx) = oneshot::channel();
    tokio::task::spawn_local(log_stderr(stderr, tag.clone()));
    tokio::task::spawn_local(reap(child, pgid, slot, rx, tag));
    Ok(Running {
        stdin,
        stdout,
        guard: Guard { tx: Some(tx) },
        activity: Activity::new(),
    })
}

/// Step 3: wait for the exit, or kill the group when told to.
async fn reap(
    mut child: Child,
    pgid: Option<Pid>,
    slot: OwnedSemaphorePermit,
    mut rx: oneshot::Receiver<Stop>,
    tag: Rc<Tag>,
) {
    let kill = || {
        if let Some(pgid) = pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    };
    let stop = tokio::select! {
        biased;
        status = child.wait() => {
            log_exit(&tag, status, false);
            drop(slot);
            // The leader is gone. Output cut while still open (timeout,
            // client gone) almost always means a group member holds it:
            // kill the group. While a member lives the id cannot be reused;
            // if none does, the id would have to be reused within moments
            // (a full wrap of the pid space) for this to reach a stranger.
            if let Ok(Stop::Now) = rx.await {
                kill();
            }
            return;
        }
        stop = &mut rx => stop.unwrap_or(Stop::Now),
    };
    // The leader has not been reaped yet, so its group id is still ours.
    let status = match stop {
        Stop::Now => {
            kill();
            let status = child.wait().await;
            log_exit(&tag, status, true);
            return;
        }
        Stop::Grace(grace) => match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(
                    script = tag.script,
                    request = tag.request,
                    "CGI script still running {grace:?} after closing its output; killed"
                );
                kill();
                child.wait().await
            }
        },
    };
    log_exit(&tag, status, false);
}

fn log_exit(tag: &Tag, status: std::io::Result<std::process::ExitStatus>, killed: bool) {
    match status {
        Ok(s) if s.success() => {}
        Ok(s) if killed => {
            tracing::debug!(
                script = tag.script,
                request = tag.request,
                "CGI script killed: {s}"
            )
        }
        Ok(s) => tracing::warn!(script = tag.script, request = tag.request, "CGI script {s}"),
        Err(e) => tracing::error!(
            script = tag.script,
            request = tag.request,
            "waiting for CGI script: {e}"
        ),
    }
}

/// Step 2: each stderr line becomes a warning in the error log.
async fn log_stderr(mut stderr: ChildStderr, tag: Rc<Tag>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            emit(&tag, &pending[..nl]);
            pending.drain(..=nl);
        }
        if pending.len() >= STDERR_LINE_MAX {
            emit(&tag, &pending);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        emit(&tag, &pending);
    }
}

fn emit(tag: &Tag, line: &[u8]) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    tracing::warn!(
        script = tag.script,
        request = tag.request,
        "CGI stderr: {}",
        String::from_utf8_lossy(line)
    );
}
