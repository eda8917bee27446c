//! The master process: binds every listener once, starts the workers by
//! re-executing its own binary with the sockets inherited, restarts a worker
//! that dies (with a back-off so a crash loop does not spin), and on
//! SIGTERM/SIGINT asks every worker to drain and waits for them.
//!
//! The master never serves a request and never loads Python.

use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{Config, ListenAddr};
use crate::server::listener::{BoundListener, LISTEN_FDS_ENV};

/// Tells a worker which process supervises it, so it can exit if that
/// process is gone before it could arrange to be told.
pub const MASTER_PID_ENV: &str = "PORTICO_MASTER_PID";

/// A worker that lived shorter than this is considered crash-looping.
const STABLE_AFTER: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("cannot listen on {addr}: {source} (is another server using it?)")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot find our own executable to start workers: {0}")]
    CurrentExe(std::io::Error),
    #[error("cannot start the master's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot prepare listener {addr} for the workers: {source}")]
    Inherit {
        addr: String,
        source: std::io::Error,
    },
}

/// Binds every configured listener and prints `listening on URL` for each.
pub fn bind_all(config: &Config) -> Result<Vec<BoundListener>, MasterError> {
    let mut bound = Vec::new();
    for listener in &config.listeners {
        let socket = BoundListener::bind(&listener.addr).map_err(|source| MasterError::Bind {
            addr: listener.addr.to_string(),
            source,
        })?;
        let scheme = if listener.tls.is_some() {
            "https"
        } else {
            "http"
        };
        println!("listening on {scheme}://{}", socket.display_addr());
        bound.push(socket);
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    Ok(bound)
}

/// Runs the master until SIGTERM/SIGINT and every worker has exited.
/// `args` are this process's arguments, passed on to each worker.
pub fn run(
    config: &Config,
    listeners: &[BoundListener],
    args: Vec<OsString>,
) -> Result<(), MasterError> {
    let exe = std::env::current_exe().map_err(MasterError::CurrentExe)?;
    for l in listeners {
        l.set_inheritable(true)
            .map_err(|source| MasterError::Inherit {
                addr: l.display_addr(),
                source,
            })?;
    }
    let fds = listeners
        .iter()
        .map(|l| l.raw_fd().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let spec = WorkerSpec {
        exe,
        args,
        fds,
        graceful_timeout: config.graceful_timeout,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MasterError::Runtime)?;
    runtime.block_on(supervise(spec, config.workers));
    remove_unix_sockets(config);
    Ok(())
}

struct WorkerSpec {
    exe: std::path::PathBuf,
    args: Vec<OsString>,
    fds: String,
    graceful_timeout: Duration,
}

impl WorkerSpec {
    fn spawn(&self) -> std::io::Result<Child> {
        Command::new(&self.exe)
            .args(&self.args)
            .arg("--worker")
            .env(LISTEN_FDS_ENV, &self.fds)
            .env(MASTER_PID_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
    }
}

async fn supervise(spec: WorkerSpec, count: usize) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let spec = std::sync::Arc::new(spec);
    let slots: Vec<_> = (1..=count)
        .map(|n| tokio::spawn(run_slot(n, spec.clone(), stop_rx.clone())))
        .collect();
    wait_for_stop_signal().await;
    tracing::info!("stopping: asking {count} worker(s) to finish their requests");
    let _ = stop_tx.send(true);
    for slot in slots {
        let _ = slot.await;
    }
    tracing::info!("all workers stopped");
}

/// Keeps one worker alive: start it, wait for it, restart it after a
/// back-off when it dies, stop it when the master stops.
async fn run_slot(n: usize, spec: std::sync::Arc<WorkerSpec>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::ZERO;
    loop {
        if *stop.borrow() {
            return;
        }
        let started = Instant::now();
        let mut child = match spec.spawn() {
            Ok(child) => child,
            Err(err) => {
                tracing::error!("cannot start worker {n}: {err}");
                backoff = next_backoff(backoff);
                if sleep_or_stop(backoff, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        let pid = child.id();
        tracing::info!("worker {n} started (pid {})", pid.unwrap_or(0));
        tokio::select! {
            status = child.wait() => {
                let lived = started.elapsed();
                backoff = if lived < STABLE_AFTER { next_backoff(backoff) } else { Duration::ZERO };
                tracing::error!(
                    "worker {n} (pid {}) exited: {}; restarting in {:.1}s",
                    pid.unwrap_or(0),
                    describe(status),
                    backoff.as_secs_f64()
                );
                if sleep_or_stop(backoff, &mut stop).await {
                    return;
                }
            }
            _ = stop.changed() => {
                stop_worker(n, &mut child, spec.graceful_timeout).await;
                return;
            }
        }
    }
}

async fn stop_worker(n: usize, child: &mut Child, graceful_timeout: Duration) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    // The worker enforces the graceful timeout itself; the margin covers its exit.
    let limit = graceful_timeout + Duration::from_secs(5);
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => tracing::debug!("worker {n} stopped: {}", describe(status)),
        Err(_) => {
            tracing::warn!("worker {n} did not stop within {limit:?}; killing it");
            let _ = child.kill().await;
        }
    }
}

fn next_backoff(previous: Duration) -> Duration {
    (previous * 2).clamp(Duration::from_millis(100), MAX_BACKOFF)
}

/// Sleeps, returning early with `true` if the master is stopping.
async fn sleep_or_stop(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (_, Some(sig)) => Signal::try_from(sig)
                .map_or_else(|_| format!("signal {sig}"), |s| format!("killed by {s}")),
            _ => s.to_string(),
        },
        Err(err) => format!("unknown status ({err})"),
    }
}

pub async fn wait_for_stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop this process with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Unix socket files are ours to remove once nobody listens on them.
pub fn remove_unix_sockets(config: &Config) {
    for l in &config.listeners {
        if let ListenAddr::Unix(path) = &l.addr {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// In a worker: exit when the master dies, and check it did not already.
pub fn watch_master() {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    let expected = std::env::var(MASTER_PID_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok());
    if let Some(master) = expected {
        if nix::unistd::getppid().as_raw() != master {
            tracing::error!("master process {master} is gone; worker exiting");
            std::process::exit(1);
        }
    }
}
