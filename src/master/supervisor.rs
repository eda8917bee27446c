//! The master's event loop. Workers belong to a *generation*; the current
//! generation is kept at the desired count:
//!
//! - a worker that dies is restarted in its slot (at once after a planned
//!   exit such as --max-requests, else after a back-off that doubles while
//!   it keeps dying within `STABLE_AFTER`);
//! - SIGHUP starts a new generation beside the old one; once every new
//!   worker has imported the app and reported ready, the old generation is
//!   asked to drain (SIGTERM). If a new worker dies before it is ready
//!   (broken code), the reload is abandoned and the old workers keep serving;
//! - SIGTTIN / SIGTTOU add or retire one worker;
//! - SIGTERM / SIGINT drain everything and return.
//!
//! At start-up, a worker that exits with `EXIT_START_FAILED` before any
//! worker was ever ready stops the master: the app cannot be imported, or a
//! TLS file cannot be loaded, and restarting will not change that.

use std::collections::HashMap;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::spawn::{wait_ready, WorkerSpec};
use super::{MasterError, EXIT_START_FAILED};

/// A worker that lived shorter than this is considered crash-looping.
const STABLE_AFTER: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

enum Event {
    Ready(u64),
    Exited(u64, std::io::Result<ExitStatus>),
    Respawn { slot: usize, generation: u64 },
}

struct Worker {
    slot: usize,
    generation: u64,
    pid: Option<u32>,
    started: Instant,
    ready: bool,
    /// Asked to stop (SIGTERM sent); its exit is expected.
    retiring: bool,
}

struct Supervisor {
    spec: Arc<WorkerSpec>,
    desired: usize,
    generation: u64,
    /// A reload waiting for its new workers to be ready.
    pending_generation: Option<u64>,
    workers: HashMap<u64, Worker>,
    next_id: u64,
    backoff: HashMap<usize, Duration>,
    ever_ready: bool,
    announced_ready: bool,
    events: mpsc::UnboundedSender<Event>,
}

pub async fn supervise(spec: WorkerSpec, count: usize) -> Result<(), MasterError> {
    let (events, mut inbox) = mpsc::unbounded_channel();
    let mut sup = Supervisor {
        spec: Arc::new(spec),
        desired: count,
        generation: 0,
        pending_generation: None,
        workers: HashMap::new(),
        next_id: 0,
        backoff: HashMap::new(),
        ever_ready: false,
        announced_ready: false,
        events,
    };
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut ttin), Ok(mut ttou)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
        signal(SignalKind::from_raw(nix::libc::SIGTTIN)),
        signal(SignalKind::from_raw(nix::libc::SIGTTOU)),
    ) else {
        tracing::error!("cannot install signal handlers");
        return Err(MasterError::Runtime(std::io::Error::other(
            "signal handlers",
        )));
    };
    for slot in 1..=count {
        sup.spawn(slot, 0);
    }
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => sup.reload(),
            _ = ttin.recv() => sup.scale(1),
            _ = ttou.recv() => sup.scale(-1),
            Some(event) = inbox.recv() => {
                if let Err(fatal) = sup.handle(event) {
                    sup.shutdown(&mut inbox).await;
                    return Err(fatal);
                }
            }
        }
    }
    tracing::info!(
        "stopping: asking {} worker(s) to finish their requests",
        sup.workers.len()
    );
    sup.shutdown(&mut inbox).await;
    tracing::info!("all workers stopped");
    Ok(())
}

impl Supervisor {
    fn spawn(&mut self, slot: usize, generation: u64) {
        let spawned = match self.spec.spawn() {
            Ok(spawned) => spawned,
            Err(err) => {
                tracing::error!("cannot start worker {slot}: {err}");
                self.schedule_respawn(slot, generation, false);
                return;
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        let pid = spawned.child.id();
        tracing::info!(
            "worker {slot} started (pid {}, generation {generation})",
            pid.unwrap_or(0)
        );
        self.workers.insert(
            id,
            Worker {
                slot,
                generation,
                pid,
                started: Instant::now(),
                ready: false,
                retiring: false,
            },
        );
        let events = self.events.clone();
        let mut child = spawned.child;
        let ready = spawned.ready;
        tokio::spawn(async move {
            tokio::select! {
                _ = wait_ready(ready) => {
                    let _ = events.send(Event::Ready(id));
                    let status = child.wait().await;
                    let _ = events.send(Event::Exited(id, status));
                }
                status = child.wait() => {
                    let _ = events.send(Event::Exited(id, status));
                }
            }
        });
    }

    fn handle(&mut self, event: Event) -> Result<(), MasterError> {
        match event {
            Event::Ready(id) => self.on_ready(id),
            Event::Exited(id, status) => return self.on_exit(id, status),
            Event::Respawn { slot, generation } => {
                let current =
                    generation == self.generation || Some(generation) == self.pending_generation;
                let occupied = self
                    .workers
                    .values()
                    .any(|w| w.slot == slot && w.generation == generation && !w.retiring);
                if current && slot <= self.desired && !occupied {
                    self.spawn(slot, generation);
                }
            }
        }
        Ok(())
    }

    fn on_ready(&mut self, id: u64) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        worker.ready = true;
        self.ever_ready = true;
        if let Some(pending) = self.pending_generation {
            let all_ready = self
                .workers
                .values()
                .filter(|w| w.generation == pending)
                .all(|w| w.ready);
            if all_ready {
                tracing::info!(
                    "reload: generation {pending} ready; draining generation {}",
                    self.generation
                );
                let old = self.generation;
                self.generation = pending;
                self.pending_generation = None;
                self.retire(|w| w.generation == old);
            }
        } else if !self.announced_ready
            && self
                .workers
                .values()
                .filter(|w| w.generation == self.generation)
                .all(|w| w.ready)
        {
            self.announced_ready = true;
            tracing::info!("ready: {} worker(s) serving", self.desired);
        }
    }

    fn on_exit(&mut self, id: u64, status: std::io::Result<ExitStatus>) -> Result<(), MasterError> {
        let Some(worker) = self.workers.remove(&id) else {
            return Ok(());
        };
        if worker.retiring {
            tracing::info!(
                "worker {} (pid {}) stopped",
                worker.slot,
                worker.pid.unwrap_or(0)
            );
            return Ok(());
        }
        let code = status.as_ref().ok().and_then(ExitStatus::code);
        if !worker.ready && code == Some(i32::from(EXIT_START_FAILED)) {
            if Some(worker.generation) == self.pending_generation {
                tracing::error!(
                    "reload failed: the new workers could not start; the old workers keep serving"
                );
                self.pending_generation = None;
                let failed = worker.generation;
                self.retire(|w| w.generation == failed);
                return Ok(());
            }
            // Only the first generation's failure stops the master; a
            // reload's (handled above) never does.
            if !self.ever_ready {
                tracing::error!("worker {} could not start; stopping", worker.slot);
                return Err(MasterError::WorkerStart);
            }
        }
        let planned = code == Some(0);
        if planned {
            tracing::info!(
                "worker {} (pid {}) recycled; starting a new one",
                worker.slot,
                worker.pid.unwrap_or(0)
            );
        } else {
            tracing::error!(
                "worker {} (pid {}) exited: {}",
                worker.slot,
                worker.pid.unwrap_or(0),
                describe(&status)
            );
        }
        let crashed_early = !planned && worker.started.elapsed() < STABLE_AFTER;
        self.schedule_respawn(worker.slot, worker.generation, crashed_early);
        Ok(())
    }

    fn schedule_respawn(&mut self, slot: usize, generation: u64, crashed_early: bool) {
        let backoff = self.backoff.entry(slot).or_default();
        *backoff = if crashed_early {
            (*backoff * 2).clamp(Duration::from_millis(100), MAX_BACKOFF)
        } else {
            Duration::ZERO
        };
        let delay = *backoff;
        if !delay.is_zero() {
            tracing::warn!("restarting worker {slot} in {:.1}s", delay.as_secs_f64());
        }
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::Respawn { slot, generation });
        });
    }

    fn reload(&mut self) {
        if self.pending_generation.is_some() {
            tracing::warn!("SIGHUP ignored: a reload is already in progress");
            return;
        }
        let next = self.generation + 1;
        tracing::info!(
            "reload: starting {} worker(s) of generation {next}",
            self.desired
        );
        self.pending_generation = Some(next);
        for slot in 1..=self.desired {
            self.spawn(slot, next);
        }
    }

    fn scale(&mut self, delta: isize) {
        if delta > 0 {
            self.desired += 1;
            tracing::info!("SIGTTIN: {} worker(s)", self.desired);
            self.spawn(self.desired, self.generation);
        } else if self.desired > 1 {
            let slot = self.desired;
            self.desired -= 1;
            tracing::info!("SIGTTOU: {} worker(s)", self.desired);
            let generation = self.generation;
            self.retire(|w| w.slot == slot && w.generation == generation);
        }
    }

    fn retire(&mut self, which: impl Fn(&Worker) -> bool) {
        for worker in self
            .workers
            .values_mut()
            .filter(|w| !w.retiring && which(w))
        {
            worker.retiring = true;
            signal_worker(worker, Signal::SIGTERM);
        }
    }

    /// SIGTERM to every worker, then wait for them; SIGKILL past the
    /// graceful timeout (plus a margin for their own exit).
    async fn shutdown(&mut self, inbox: &mut mpsc::UnboundedReceiver<Event>) {
        self.retire(|_| true);
        let deadline = Instant::now() + self.spec.graceful_timeout + Duration::from_secs(5);
        while !self.workers.is_empty() {
            match tokio::time::timeout_at(deadline, inbox.recv()).await {
                Ok(Some(Event::Exited(id, _))) => {
                    self.workers.remove(&id);
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        "{} worker(s) did not stop in time; killing them",
                        self.workers.len()
                    );
                    for worker in self.workers.values() {
                        signal_worker(worker, Signal::SIGKILL);
                    }
                    break;
                }
            }
        }
    }
}

fn signal_worker(worker: &Worker, sig: Signal) {
    if let Some(pid) = worker.pid {
        let _ = kill(Pid::from_raw(pid as i32), sig);
    }
}

fn describe(status: &std::io::Result<ExitStatus>) -> String {
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
