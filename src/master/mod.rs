//! The master process: binds every listener once, starts the workers by
//! re-executing its own binary with the sockets inherited, and supervises
//! them (`supervisor`): restarts a worker that dies (with a back-off so a
//! crash loop does not spin), reloads on SIGHUP without refusing a
//! connection, adds or removes a worker on SIGTTIN/SIGTTOU, and on
//! SIGTERM/SIGINT asks every worker to drain and waits for them.
//!
//! The master never serves a request and never loads Python.

mod spawn;
mod supervisor;

use std::ffi::OsString;

use nix::sys::signal::Signal;

use crate::config::{Config, ListenAddr};
use crate::server::listener::BoundListener;

pub use spawn::{notify_ready, WorkerSpec, MASTER_PID_ENV};

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
    #[error("the workers could not start (see the error above)")]
    WorkerStart,
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
    let result = runtime.block_on(supervisor::supervise(spec, config.workers));
    remove_unix_sockets(config);
    result
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
