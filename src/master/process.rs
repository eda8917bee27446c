//! The supervisor's hands on real processes ([`Processes`]): starts workers
//! (`spawn`), signals them, keeps the listening sockets and the accept
//! balance table, gives each live worker a seat at it, and writes the
//! access-log lines of requests a dead worker took down.

use std::collections::HashMap;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;

use super::spawn::WorkerSpec;
use super::supervisor::{Event, Launcher, WorkerId};
use crate::config::{Config, ListenAddr};
use crate::log::{AccessLog, Entry};
use crate::scoreboard::RunningRequest;
use crate::server::balance::{Table, SEATS};
use crate::server::listener::BoundListener;

/// The status written in the access log for a request whose worker died
/// under it: the client got no complete answer (at most the start of one)
/// and the server is at fault.
pub const LOST_REQUEST_STATUS: u16 = 500;

pub struct Processes {
    spec: WorkerSpec,
    /// Closed (dropped) when the master stops.
    listeners: Vec<BoundListener>,
    unix_paths: Vec<std::path::PathBuf>,
    table: Option<Table>,
    seats: HashMap<WorkerId, usize>,
    access_log: AccessLog,
    config: Config,
    stopping: bool,
}

impl Processes {
    pub fn new(
        spec: WorkerSpec,
        listeners: Vec<BoundListener>,
        table: Option<Table>,
        access_log: AccessLog,
        config: &Config,
    ) -> Self {
        let unix_paths = config
            .listeners
            .iter()
            .filter_map(|l| match &l.addr {
                ListenAddr::Unix(path) => Some(path.clone()),
                ListenAddr::Tcp(_) => None,
            })
            .collect();
        Processes {
            spec,
            listeners,
            unix_paths,
            table,
            seats: HashMap::new(),
            access_log,
            config: config.clone(),
            stopping: false,
        }
    }

    /// The lowest seat no live worker holds, if any is left.
    fn free_seat(&self) -> Option<usize> {
        (0..SEATS).find(|s| !self.seats.values().any(|held| held == s))
    }
}

impl Launcher for Processes {
    fn start(
        &mut self,
        id: WorkerId,
        events: &mpsc::UnboundedSender<Event>,
    ) -> std::io::Result<u32> {
        if self.stopping {
            return Err(std::io::Error::other("the master is stopping"));
        }
        let seat = self.table.as_ref().and_then(|_| self.free_seat());
        if let (Some(table), Some(seat)) = (&self.table, seat) {
            let in_use = self.seats.values().copied().max().map_or(0, |s| s + 1);
            table.assign(seat, in_use.max(seat + 1));
        }
        let spawned = self.spec.spawn(seat)?;
        let pid = spawned.child.id().unwrap_or(0);
        if let Some(seat) = seat {
            self.seats.insert(id, seat);
        }
        tokio::spawn(spawned.watch(id, events.clone()));
        Ok(pid)
    }

    fn signal(&mut self, pid: u32, signal: Signal) {
        if pid != 0 {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    fn exited(&mut self, id: WorkerId, lost: &[RunningRequest]) {
        if let (Some(table), Some(seat)) = (&self.table, self.seats.remove(&id)) {
            table.clear(seat);
        }
        let now = std::time::SystemTime::now();
        for request in lost {
            self.access_log.write(&Entry {
                remote: request.peer,
                method: &request.method,
                target: &request.target,
                version: request.version,
                status: LOST_REQUEST_STATUS,
                bytes: 0,
                duration: request.age(now),
                referer: request.referer.as_deref(),
                user_agent: request.user_agent.as_deref(),
                host: request.host.as_deref(),
            });
        }
    }

    fn stop_listening(&mut self) {
        self.stopping = true;
        // The workers, who hold the sockets too, take what is queued as they
        // drain; nothing new queues behind them.
        for listener in &self.listeners {
            listener.stop_new_connections();
        }
        self.listeners.clear();
        for path in &self.unix_paths {
            let _ = std::fs::remove_file(path);
        }
    }

    fn reopen_logs(&mut self) {
        if let Err(err) = crate::log::reopen_error_log(&self.config.log) {
            tracing::error!("cannot reopen the error log: {err}");
        }
        if let Err(err) = self.access_log.reopen() {
            tracing::error!("cannot reopen the access log: {err}");
        }
    }
}
