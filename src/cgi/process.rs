//! Running one script: spawn it, log its stderr, and always reap it.
//!
//! Steps, in order:
//! 1. build the command: the script itself (its shebang picks the
//!    interpreter; never a shell), no arguments, working directory = the
//!    script's, an environment holding only the meta-variables, its own
//!    process group (so the whole group can be killed), stdin ([`Stdin`]:
//!    /dev/null without a body, the body's temporary file, or a pipe),
//!    pipes for stdout and stderr; spawn it from a
//!    blocking-pool thread (the event loop never waits for an exec);
//! 2. a task logs stderr line by line (`warn`, tagged with the script and
//!    the request);
//! 3. a reaper task owns the child and the process slot: it waits for the
//!    exit (so no zombie is left) and releases the slot then; told to stop
//!    by the [`Guard`] (or a [`Killer`]), it kills the whole group first.
//!
//! The group is signalled while its leader is not yet reaped (so the id is
//! still ours), or, after that, only when the output is cut while still
//! open (a member of the group holds it). A kill while the leader is not
//! reaped is synchronous: the group is dead before the caller's next step
//! (the request body's feeder relies on it: a script must never see a clean
//! end of its stdin when the client's body broke off).

use std::cell::{Cell, RefCell};
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
use crate::request::gateway_env::Var;

/// Longest stderr line logged as one message; longer ones are split.
const STDERR_LINE_MAX: usize = 8 * 1024;

/// Which script serves which request, for every log line about it.
#[derive(Debug)]
pub struct Tag {
    pub script: String,
    pub request: String,
}

/// When the script last showed life (wrote output, or took input); the
/// timeout counts from here. While the script waits for the client's body
/// bytes, the silence is the client's (`--body-timeout` bounds it).
#[derive(Clone)]
pub struct Activity(Rc<ActivityState>);

struct ActivityState {
    last: Cell<Instant>,
    waiting_on_client: Cell<bool>,
}

impl Activity {
    fn new() -> Self {
        Activity(Rc::new(ActivityState {
            last: Cell::new(Instant::now()),
            waiting_on_client: Cell::new(false),
        }))
    }

    pub fn touch(&self) {
        self.0.last.set(Instant::now());
    }

    pub fn last(&self) -> Instant {
        self.0.last.get()
    }

    /// The body's feeder waits for the client (`true`) or not any more.
    pub fn waiting_on_client(&self, waiting: bool) {
        self.0.waiting_on_client.set(waiting);
        self.touch();
    }

    /// The script may be silent because its input is: not its fault.
    pub fn is_waiting_on_client(&self) -> bool {
        self.0.waiting_on_client.get()
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

/// What the handler's [`Guard`] and the body's [`Killer`] share with the
/// reaper: the first order given wins.
struct Control {
    tx: RefCell<Option<oneshot::Sender<Stop>>>,
    pgid: Option<Pid>,
    /// The reaper has reaped the leader: its group id may no longer be ours.
    reaped: Cell<bool>,
}

impl Control {
    /// Kills the group now, unless another order was given first (a
    /// script given its grace after closing its output keeps it).
    fn kill(&self) {
        if self.tx.borrow().is_some() {
            self.kill_anyway();
        }
    }

    /// Kills the group now, whatever was ordered before.
    fn kill_anyway(&self) {
        if !self.reaped.get() {
            if let Some(pgid) = self.pgid {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
        }
        self.order(Stop::Now);
    }

    fn order(&self, stop: Stop) {
        if let Some(tx) = self.tx.borrow_mut().take() {
            let _ = tx.send(stop);
        }
    }
}

/// Kills the script's process group when dropped, unless told the output
/// completed (`finished`).
pub struct Guard(Rc<Control>);

impl Guard {
    pub fn kill(&mut self) {
        self.0.kill();
    }

    pub fn finished(&mut self, grace: Duration) {
        self.0.order(Stop::Grace(grace));
    }

    /// A handle that can kill the group too, but does not when dropped.
    pub fn killer(&self) -> Killer {
        Killer(self.0.clone())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills the script's process group on demand (the request body's feeder,
/// when the client's body breaks off).
pub struct Killer(Rc<Control>);

impl Killer {
    /// Kills the group even if it was given a grace to exit: the script
    /// may still be reading its stdin.
    pub fn kill(&self) {
        self.0.kill_anyway();
    }
}

/// The script's standard input.
pub enum Stdin {
    /// No body: /dev/null.
    Null,
    /// A pipe the handler feeds (a body in memory, or one still arriving).
    Piped,
    /// A buffered body's temporary file, at its start: the script reads
    /// it directly, and may seek in it.
    File(std::fs::File),
}

impl From<Stdin> for Stdio {
    fn from(stdin: Stdin) -> Self {
        match stdin {
            Stdin::Null => Stdio::null(),
            Stdin::Piped => Stdio::piped(),
            Stdin::File(file) => Stdio::from(file),
        }
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
    stdin: Stdin,
    slot: OwnedSemaphorePermit,
    tag: Rc<Tag>,
) -> Result<Running, CgiError> {
    let mut cmd = Command::new(&script.path);
    cmd.env_clear()
        .envs(env.iter().map(|(k, v)| (k, OsStr::from_bytes(v))))
        .current_dir(script.dir())
        .process_group(0)
        .kill_on_drop(true)
        .stdin(stdin)
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
    let control = Rc::new(Control {
        tx: RefCell::new(Some(tx)),
        pgid,
        reaped: Cell::new(false),
    });
    tokio::task::spawn_local(log_stderr(stderr, tag.clone()));
    tokio::task::spawn_local(reap(child, control.clone(), slot, rx, tag));
    Ok(Running {
        stdin,
        stdout,
        guard: Guard(control),
        activity: Activity::new(),
    })
}

/// Step 3: wait for the exit, or kill the group when told to.
async fn reap(
    mut child: Child,
    control: Rc<Control>,
    slot: OwnedSemaphorePermit,
    mut rx: oneshot::Receiver<Stop>,
    tag: Rc<Tag>,
) {
    let kill = || {
        if let Some(pgid) = control.pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    };
    let stop = tokio::select! {
        biased;
        status = child.wait() => {
            control.reaped.set(true);
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
