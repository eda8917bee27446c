//! The master process: binds every listener once, starts the workers by
//! re-executing its own binary with the sockets inherited, and supervises
//! them (`supervisor` decides, `process` acts): restarts a worker that dies
//! and names the requests it took down, replaces a worker that asks to be
//! recycled before it stops it, reloads on SIGHUP without refusing a
//! connection, bounds every worker's start with `--start-timeout`, adds or
//! removes a worker on SIGTTIN/SIGTTOU, reopens the logs on SIGUSR1, and on
//! SIGTERM/SIGINT/SIGQUIT closes its listening sockets at once, asks every
//! worker to drain and waits for them.
//!
//! The master never serves a request and never loads Python.

mod link;
mod process;
mod spawn;
mod supervisor;

use std::ffi::OsString;
use std::task::Poll;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::config::{Config, ListenAddr};
use crate::log::AccessLog;
use crate::server::balance::Table;
use crate::server::listener::BoundListener;

pub use link::{Link, Message};
pub use process::LOST_REQUEST_STATUS;
pub use spawn::{WorkerSpec, MASTER_PID_ENV};
use supervisor::{Command, Settings, Supervisor};

/// Exit code of a worker that could not start: its app failed to import, or
/// its TLS files or access log failed to open. Restarting would fail the same
/// way, so at start-up this stops the master (exit 1) instead of leaving a
/// listener nobody serves; after a reload the old workers keep serving.
pub const EXIT_START_FAILED: u8 = 3;

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
    #[error("cannot open the access log: {0}")]
    AccessLog(std::io::Error),
    #[error("the workers could not start (see the error above)")]
    WorkerStart,
    #[error(
        "worker {slot} was not ready {}s after it started ({doing}); raise --start-timeout \
         (start_timeout) if the app needs longer to import",
        timeout.as_secs_f64()
    )]
    StartTimeout {
        slot: usize,
        timeout: Duration,
        doing: String,
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
        let scheme = listener.protocol.scheme(listener.tls.is_some());
        println!("listening on {scheme}://{}", socket.display_addr());
        bound.push(socket);
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    Ok(bound)
}

/// Runs the master until SIGTERM/SIGINT/SIGQUIT and every worker has
/// exited. `args` are this process's arguments, passed on to each worker.
/// The listeners are closed as soon as the master is told to stop.
pub fn run(
    config: &Config,
    listeners: Vec<BoundListener>,
    args: Vec<OsString>,
) -> Result<(), MasterError> {
    let exe = std::env::current_exe().map_err(MasterError::CurrentExe)?;
    for l in &listeners {
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
    let table = balance_table();
    let spec = WorkerSpec {
        exe,
        args,
        fds,
        balance_fd: table
            .as_ref()
            .map(|t| std::os::fd::AsRawFd::as_raw_fd(&t.mem().fd())),
    };
    let access_log = AccessLog::open(&config.log).map_err(MasterError::AccessLog)?;
    let settings = Settings {
        workers: config.workers,
        start_timeout: config.start_timeout,
        graceful_timeout: config.graceful_timeout,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MasterError::Runtime)?;
    let result = runtime.block_on(async {
        let (command_tx, commands) = mpsc::unbounded_channel();
        let signals = master_signals().map_err(MasterError::Runtime)?;
        tokio::spawn(forward_signals(signals, command_tx));
        let (events_tx, events) = mpsc::unbounded_channel();
        let launcher = process::Processes::new(spec, listeners, table, access_log, config);
        Supervisor::new(launcher, settings, events_tx)
            .run(commands, events)
            .await
    });
    remove_unix_sockets(config);
    result
}

/// The accept-balance table, shared by every worker (inheritable); without
/// it (no memfd here) workers accept without balancing.
fn balance_table() -> Option<Table> {
    let table = match Table::create() {
        Ok(table) => table,
        Err(err) => {
            tracing::warn!("no accept balance between workers: {err}");
            return None;
        }
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&table.mem().fd());
    let flags = nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty());
    nix::fcntl::fcntl(fd, flags).ok()?;
    Some(table)
}

/// The signals the master acts on, each with what it means.
fn master_signals() -> std::io::Result<Vec<(tokio::signal::unix::Signal, Command)>> {
    use nix::libc;
    [
        (libc::SIGTERM, Command::Stop),
        (libc::SIGINT, Command::Stop),
        (libc::SIGQUIT, Command::Stop),
        (libc::SIGHUP, Command::Reload),
        (libc::SIGTTIN, Command::AddWorker),
        (libc::SIGTTOU, Command::RemoveWorker),
        (libc::SIGUSR1, Command::ReopenLogs),
        (libc::SIGUSR2, Command::Upgrade),
    ]
    .into_iter()
    .map(|(number, command)| Ok((signal(SignalKind::from_raw(number))?, command)))
    .collect()
}

async fn forward_signals(
    mut signals: Vec<(tokio::signal::unix::Signal, Command)>,
    commands: mpsc::UnboundedSender<Command>,
) {
    loop {
        let command = std::future::poll_fn(|cx| {
            for (signal, command) in signals.iter_mut() {
                if signal.poll_recv(cx).is_ready() {
                    return Poll::Ready(*command);
                }
            }
            Poll::Pending
        })
        .await;
        if commands.send(command).is_err() {
            return;
        }
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

/// In a worker: exit when the master dies (SIGTERM from the kernel), and
/// check it did not already: `Err` when it did, and the worker must exit.
pub fn watch_master() -> Result<(), MasterGone> {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    let expected = std::env::var(MASTER_PID_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok());
    match expected {
        Some(master) if nix::unistd::getppid().as_raw() != master => Err(MasterGone(master)),
        _ => Ok(()),
    }
}

/// The master that started this worker died before the worker watched it.
#[derive(Debug, thiserror::Error)]
#[error("master process {0} is gone")]
pub struct MasterGone(pub i32);
