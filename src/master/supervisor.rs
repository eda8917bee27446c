//! The master's decisions, apart from processes: [`Supervisor`] reacts to
//! commands (signals), to what workers say (`link`) and to their exits, and
//! acts through a [`Launcher`] (real processes in `process`, a recording
//! fake in the tests). Its timers run on tokio's clock, so the tests drive
//! them on a paused one.
//!
//! Workers belong to a *generation*; the current generation is kept at the
//! desired count:
//!
//! - a worker that dies is restarted in its slot (at once after a clean
//!   exit, else after a back-off that doubles while it keeps dying within
//!   `STABLE_AFTER`); the requests it was running are named (scoreboard);
//! - a worker that asks to be recycled (`--max-requests`, `--timeout`)
//!   keeps serving while its replacement starts in its slot; once the
//!   replacement is ready the old one gets SIGTERM and drains. Never two
//!   replacements for one worker; one that fails or is not ready within
//!   `--start-timeout` is killed, the old worker keeps serving, and the
//!   replacement is tried again after the back-off;
//! - SIGHUP starts a new generation beside the old one; once every new
//!   worker has reported ready, the old generation drains. A new worker that
//!   cannot start or is not ready within `--start-timeout` abandons the
//!   reload (the old workers keep serving, the next SIGHUP works); a SIGHUP
//!   during a reload abandons that reload for a new one;
//! - SIGTTIN / SIGTTOU add or retire one worker; SIGUSR1 reopens the logs
//!   here and in every worker;
//! - SIGTERM / SIGINT / SIGQUIT: stop listening at once, drain every worker,
//!   return once all have exited (killing those past the graceful timeout).
//!
//! At start-up, a worker that cannot start (`EXIT_START_FAILED`) or is not
//! ready within `--start-timeout` before any worker was ever ready stops
//! the master: restarting will not fix broken code or a hung import.

use std::collections::HashMap;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::link::Message;
use super::{MasterError, EXIT_START_FAILED};
use crate::recycle::RecycleReason;
use crate::scoreboard::RunningRequest;

/// A worker that lived shorter than this is considered crash-looping.
const STABLE_AFTER: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Extra time, past the graceful timeout, for workers to exit by themselves.
const EXIT_MARGIN: Duration = Duration::from_secs(5);

pub type WorkerId = u64;

/// What the master was told to do (by a signal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// SIGTERM, SIGINT, SIGQUIT.
    Stop,
    /// SIGHUP.
    Reload,
    /// SIGTTIN.
    AddWorker,
    /// SIGTTOU.
    RemoveWorker,
    /// SIGUSR1.
    ReopenLogs,
    /// SIGUSR2.
    Upgrade,
}

/// What happened to a worker.
#[derive(Debug)]
pub enum Event {
    Message(WorkerId, Message),
    Exited(WorkerId, Exit),
}

#[derive(Debug)]
pub struct Exit {
    pub status: std::io::Result<ExitStatus>,
    /// The requests its Python threads were running when it ended.
    pub lost: Vec<RunningRequest>,
}

/// How the supervisor acts on the world.
pub trait Launcher {
    /// Starts a worker; its messages and exit come back as events tagged `id`.
    fn start(
        &mut self,
        id: WorkerId,
        events: &mpsc::UnboundedSender<Event>,
    ) -> std::io::Result<u32>;
    fn signal(&mut self, pid: u32, signal: Signal);
    /// Worker `id` has exited (free what it held); `lost` are the requests
    /// it took down (they get access-log lines).
    fn exited(&mut self, id: WorkerId, lost: &[RunningRequest]);
    /// Close the listening sockets: the master is stopping.
    fn stop_listening(&mut self);
    fn reopen_logs(&mut self);
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub workers: usize,
    pub start_timeout: Duration,
    pub graceful_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Started; has not said it is ready.
    Starting,
    Ready,
    /// Asked to stop (SIGTERM); its exit is expected.
    Retiring,
    /// Killed (SIGKILL) for not being ready in time; what that meant was
    /// decided then.
    Killed,
}

struct Worker {
    slot: usize,
    generation: u64,
    pid: u32,
    started: Instant,
    phase: Phase,
    /// What it said it was doing while starting.
    doing: Option<String>,
    /// For a replacement: the worker it replaces once ready.
    replaces: Option<WorkerId>,
    /// For a worker being recycled: its replacement, while that one starts.
    replacement: Option<WorkerId>,
    /// Why it is being recycled, once it asked.
    recycle: Option<RecycleReason>,
    /// When to try again to start its replacement (one failed).
    retry_at: Option<Instant>,
}

pub struct Supervisor<L: Launcher> {
    launcher: L,
    settings: Settings,
    desired: usize,
    generation: u64,
    /// A reload waiting for its new workers to be ready.
    pending: Option<u64>,
    last_generation: u64,
    workers: HashMap<WorkerId, Worker>,
    next_id: WorkerId,
    /// Restarts waiting for their back-off: (when, slot, generation).
    respawns: Vec<(Instant, usize, u64)>,
    backoff: HashMap<usize, Duration>,
    ever_ready: bool,
    announced_ready: bool,
    events: mpsc::UnboundedSender<Event>,
}

impl<L: Launcher> Supervisor<L> {
    pub fn new(launcher: L, settings: Settings, events: mpsc::UnboundedSender<Event>) -> Self {
        Supervisor {
            launcher,
            desired: settings.workers,
            settings,
            generation: 0,
            pending: None,
            last_generation: 0,
            workers: HashMap::new(),
            next_id: 0,
            respawns: Vec::new(),
            backoff: HashMap::new(),
            ever_ready: false,
            announced_ready: false,
            events,
        }
    }

    /// Starts the workers and supervises them until `Command::Stop` (and
    /// every worker has exited) or a failure at start-up.
    pub async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) -> Result<(), MasterError> {
        for slot in 1..=self.desired {
            self.spawn(slot, 0, None);
        }
        let outcome = loop {
            let deadline = self.next_deadline();
            let step = tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Stop) | None => break Ok(()),
                    Some(command) => {
                        self.command(command);
                        Ok(())
                    }
                },
                Some(event) = events.recv() => self.handle(event),
                _ = sleep_until(deadline) => self.timers(Instant::now()),
            };
            if let Err(fatal) = step {
                break Err(fatal);
            }
        };
        if outcome.is_ok() {
            tracing::info!(
                "stopping: no longer accepting; asking {} worker(s) to finish their requests",
                self.workers.len()
            );
        }
        self.shutdown(&mut events).await;
        if outcome.is_ok() {
            tracing::info!("all workers stopped");
        }
        outcome
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Stop => {}
            Command::Reload => self.reload(),
            Command::AddWorker => self.scale_up(),
            Command::RemoveWorker => self.scale_down(),
            Command::ReopenLogs => self.reopen_logs(),
            Command::Upgrade => {
                tracing::warn!("SIGUSR2: binary upgrade is not supported yet; ignored")
            }
        }
    }

    fn handle(&mut self, event: Event) -> Result<(), MasterError> {
        match event {
            Event::Message(id, Message::Doing(what)) => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.doing = Some(what);
                }
                Ok(())
            }
            Event::Message(id, Message::Ready) => {
                self.on_ready(id);
                Ok(())
            }
            Event::Message(id, Message::Recycle(reason)) => {
                self.on_recycle(id, reason);
                Ok(())
            }
            Event::Exited(id, exit) => self.on_exit(id, exit),
        }
    }

    // ---- starting workers --------------------------------------------

    /// Starts a worker in `slot`; returns its id unless it could not start.
    fn spawn(
        &mut self,
        slot: usize,
        generation: u64,
        replaces: Option<WorkerId>,
    ) -> Option<WorkerId> {
        let id = self.next_id;
        self.next_id += 1;
        let pid = match self.launcher.start(id, &self.events) {
            Ok(pid) => pid,
            Err(err) => {
                tracing::error!("cannot start worker {slot}: {err}");
                match replaces {
                    Some(old) => self.retry_replacement_later(old),
                    None => self.schedule_respawn(slot, generation, true),
                }
                return None;
            }
        };
        tracing::info!("worker {slot} started (pid {pid}, generation {generation})");
        self.workers.insert(
            id,
            Worker {
                slot,
                generation,
                pid,
                started: Instant::now(),
                phase: Phase::Starting,
                doing: None,
                replaces,
                replacement: None,
                recycle: None,
                retry_at: None,
            },
        );
        Some(id)
    }

    fn on_ready(&mut self, id: WorkerId) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        if worker.phase != Phase::Starting {
            return;
        }
        worker.phase = Phase::Ready;
        worker.doing = None;
        self.ever_ready = true;
        let (slot, pid) = (worker.slot, worker.pid);
        self.backoff.remove(&slot);
        if let Some(old) = worker.replaces.take() {
            self.replaced(old, slot, pid);
        }
        if let Some(pending) = self.pending {
            let all_ready = self
                .workers
                .values()
                .filter(|w| w.generation == pending && w.phase != Phase::Retiring)
                .all(|w| w.phase == Phase::Ready);
            if all_ready {
                tracing::info!(
                    "reload: generation {pending} ready; draining generation {}",
                    self.generation
                );
                let old = self.generation;
                self.generation = pending;
                self.pending = None;
                self.retire(|w| w.generation == old);
                self.fill_slots();
            }
        } else if !self.announced_ready
            && self
                .workers
                .values()
                .filter(|w| w.generation == self.generation)
                .all(|w| w.phase == Phase::Ready)
        {
            self.announced_ready = true;
            tracing::info!("ready: {} worker(s) serving", self.desired);
        }
    }

    /// The replacement of `old` (now `pid` in `slot`) is ready: `old` drains.
    fn replaced(&mut self, old: WorkerId, slot: usize, pid: u32) {
        let Some(worker) = self.workers.get_mut(&old) else {
            return;
        };
        worker.replacement = None;
        if worker.phase != Phase::Ready {
            return;
        }
        tracing::info!(
            "worker {slot}: replacement (pid {pid}) ready; pid {} ({}) drains",
            worker.pid,
            worker.recycle.map_or("recycled", RecycleReason::as_str)
        );
        worker.phase = Phase::Retiring;
        let old_pid = worker.pid;
        self.launcher.signal(old_pid, Signal::SIGTERM);
    }

    // ---- recycling -----------------------------------------------------

    fn on_recycle(&mut self, id: WorkerId, reason: RecycleReason) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        if worker.phase != Phase::Ready {
            return;
        }
        let first = worker.recycle.is_none();
        worker.recycle.get_or_insert(reason);
        if worker.replacement.is_some() || worker.retry_at.is_some() {
            tracing::debug!(
                "worker {} (pid {}) asks again to be replaced ({reason}); already under way",
                worker.slot,
                worker.pid
            );
            return;
        }
        if first {
            tracing::info!(
                "worker {} (pid {}) asks to be replaced ({reason}); it keeps serving until its replacement is ready",
                worker.slot,
                worker.pid
            );
        }
        self.start_replacement(id);
    }

    fn start_replacement(&mut self, old: WorkerId) {
        let Some(worker) = self.workers.get_mut(&old) else {
            return;
        };
        worker.retry_at = None;
        let (slot, generation) = (worker.slot, worker.generation);
        if let Some(new) = self.spawn(slot, generation, Some(old)) {
            if let Some(worker) = self.workers.get_mut(&old) {
                worker.replacement = Some(new);
            }
        }
    }

    /// A replacement of `old` failed: `old` keeps serving; try again after
    /// the slot's back-off.
    fn retry_replacement_later(&mut self, old: WorkerId) {
        let Some(worker) = self.workers.get(&old) else {
            return;
        };
        let (slot, pid) = (worker.slot, worker.pid);
        let delay = self.next_backoff(slot, true);
        tracing::warn!(
            "worker {slot} (pid {pid}) keeps serving; its replacement is tried again in {:.1}s",
            delay.as_secs_f64()
        );
        if let Some(worker) = self.workers.get_mut(&old) {
            worker.replacement = None;
            worker.retry_at = Some(Instant::now() + delay);
        }
    }

    // ---- exits ---------------------------------------------------------

    fn on_exit(&mut self, id: WorkerId, exit: Exit) -> Result<(), MasterError> {
        let Some(worker) = self.workers.remove(&id) else {
            return Ok(());
        };
        self.launcher.exited(id, &exit.lost);
        let lost = describe_lost(&exit.lost);
        if let Some(old) = worker.replaces {
            if let Some(w) = self.workers.get_mut(&old) {
                w.replacement = None;
            }
        }
        if let Some(new) = worker.replacement {
            if let Some(w) = self.workers.get_mut(&new) {
                // It takes the slot over; nothing left to retire when ready.
                w.replaces = None;
            }
        }
        let (slot, pid, generation) = (worker.slot, worker.pid, worker.generation);
        match worker.phase {
            Phase::Retiring => {
                if lost.is_empty() {
                    tracing::info!("worker {slot} (pid {pid}) stopped");
                } else {
                    tracing::error!(
                        "worker {slot} (pid {pid}) stopped: {}{lost}",
                        describe(&exit.status)
                    );
                }
                return Ok(());
            }
            Phase::Killed => {
                // What its start timeout meant was decided when it was
                // killed; a slot it left empty is refilled after the back-off.
                if self.needs_worker(slot, generation) {
                    self.schedule_respawn(slot, generation, true);
                }
                return Ok(());
            }
            Phase::Starting | Phase::Ready => {}
        }
        let code = exit.status.as_ref().ok().and_then(ExitStatus::code);
        let start_failed =
            worker.phase == Phase::Starting && code == Some(EXIT_START_FAILED.into());
        if worker.phase == Phase::Starting {
            if let Some(old) = worker.replaces {
                tracing::error!(
                    "worker {slot}: its replacement (pid {pid}) {} before it was ready",
                    if start_failed {
                        "could not start (see the error above)".to_string()
                    } else {
                        format!("exited ({})", describe(&exit.status))
                    }
                );
                self.retry_replacement_later(old);
                return Ok(());
            }
        }
        if start_failed {
            if Some(generation) == self.pending {
                tracing::error!(
                    "reload failed: the new workers could not start; the old workers keep serving"
                );
                self.abandon_pending();
                return Ok(());
            }
            if !self.ever_ready {
                tracing::error!("worker {slot} could not start; stopping");
                return Err(MasterError::WorkerStart);
            }
        }
        let clean = code == Some(0);
        if clean {
            // Someone else sent it SIGTERM: not a crash, but not ours either.
            tracing::warn!("worker {slot} (pid {pid}) exited unasked{lost}");
        } else {
            tracing::error!("worker {slot} (pid {pid}) {}{lost}", describe(&exit.status));
        }
        if worker.replacement.is_some() {
            return Ok(());
        }
        let crashed_early = !clean && worker.started.elapsed() < STABLE_AFTER;
        self.schedule_respawn(slot, generation, crashed_early);
        Ok(())
    }

    fn next_backoff(&mut self, slot: usize, failed: bool) -> Duration {
        let backoff = self.backoff.entry(slot).or_default();
        *backoff = if failed {
            (*backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF)
        } else {
            Duration::ZERO
        };
        *backoff
    }

    fn schedule_respawn(&mut self, slot: usize, generation: u64, crashed_early: bool) {
        let delay = self.next_backoff(slot, crashed_early);
        if !delay.is_zero() {
            tracing::warn!("restarting worker {slot} in {:.1}s", delay.as_secs_f64());
        }
        self.respawns
            .push((Instant::now() + delay, slot, generation));
    }

    /// Whether `slot` of `generation` should have a worker and has none
    /// (alive, or starting).
    fn needs_worker(&self, slot: usize, generation: u64) -> bool {
        let live_generation = generation == self.generation || Some(generation) == self.pending;
        let occupied = self.workers.values().any(|w| {
            w.slot == slot
                && w.generation == generation
                && matches!(w.phase, Phase::Starting | Phase::Ready)
        });
        live_generation && slot <= self.desired && !occupied
    }

    fn respawn(&mut self, slot: usize, generation: u64) {
        if self.needs_worker(slot, generation) {
            self.spawn(slot, generation, None);
        }
    }

    /// Every slot of the current generation has a worker (one added by
    /// SIGTTIN during a reload joins the new generation).
    fn fill_slots(&mut self) {
        for slot in 1..=self.desired {
            if self.needs_worker(slot, self.generation) {
                self.spawn(slot, self.generation, None);
            }
        }
    }

    // ---- timers --------------------------------------------------------

    fn start_deadline(&self, worker: &Worker) -> Option<Instant> {
        (worker.phase == Phase::Starting).then(|| worker.started + self.settings.start_timeout)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let starts = self.workers.values().filter_map(|w| self.start_deadline(w));
        let retries = self.workers.values().filter_map(|w| w.retry_at);
        let respawns = self.respawns.iter().map(|(at, _, _)| *at);
        starts.chain(retries).chain(respawns).min()
    }

    fn timers(&mut self, now: Instant) -> Result<(), MasterError> {
        let mut late: Vec<(Instant, WorkerId)> = self
            .workers
            .iter()
            .filter_map(|(id, w)| {
                self.start_deadline(w)
                    .filter(|d| *d <= now)
                    .map(|d| (d, *id))
            })
            .collect();
        late.sort();
        for (_, id) in late {
            self.start_timed_out(id)?;
        }
        let mut due: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.retry_at.is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        due.sort();
        for id in due {
            self.start_replacement(id);
        }
        let (due, later): (Vec<_>, Vec<_>) =
            self.respawns.drain(..).partition(|(at, _, _)| *at <= now);
        self.respawns = later;
        for (_, slot, generation) in due {
            self.respawn(slot, generation);
        }
        Ok(())
    }

    fn start_timed_out(&mut self, id: WorkerId) -> Result<(), MasterError> {
        let Some(worker) = self.workers.get_mut(&id) else {
            return Ok(());
        };
        let timeout = self.settings.start_timeout;
        let doing = worker
            .doing
            .as_deref()
            .map_or_else(String::new, |d| format!("; it was {d}"));
        tracing::error!(
            "worker {} (pid {}) was not ready {}s after it started (--start-timeout / start_timeout){doing}; killing it",
            worker.slot,
            worker.pid,
            timeout.as_secs_f64()
        );
        worker.phase = Phase::Killed;
        let (slot, pid, generation, replaces) = (
            worker.slot,
            worker.pid,
            worker.generation,
            worker.replaces.take(),
        );
        let doing = worker.doing.clone();
        self.launcher.signal(pid, Signal::SIGKILL);
        if let Some(old) = replaces {
            self.retry_replacement_later(old);
        } else if Some(generation) == self.pending {
            tracing::error!(
                "reload failed: generation {generation} was not ready within {}s; the old workers keep serving",
                timeout.as_secs_f64()
            );
            self.abandon_pending();
        } else if !self.ever_ready {
            return Err(MasterError::StartTimeout {
                slot,
                timeout,
                doing: doing.unwrap_or_else(|| "starting".into()),
            });
        }
        Ok(())
    }

    // ---- reloads, scaling, logs -----------------------------------------

    fn reload(&mut self) {
        if let Some(pending) = self.pending {
            tracing::warn!(
                "SIGHUP during a reload: abandoning generation {pending}, which is not ready yet"
            );
            self.abandon_pending();
        }
        self.last_generation = self.last_generation.max(self.generation) + 1;
        let next = self.last_generation;
        tracing::info!(
            "reload: starting {} worker(s) of generation {next}",
            self.desired
        );
        self.pending = Some(next);
        for slot in 1..=self.desired {
            self.spawn(slot, next, None);
        }
    }

    /// Gives up the pending reload: its workers that are ready drain, the
    /// others are killed (they accept nothing before they are ready).
    fn abandon_pending(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let mut kill = Vec::new();
        for worker in self
            .workers
            .values_mut()
            .filter(|w| w.generation == pending)
        {
            match worker.phase {
                Phase::Starting => {
                    worker.phase = Phase::Killed;
                    kill.push((worker.pid, Signal::SIGKILL));
                }
                Phase::Ready => {
                    worker.phase = Phase::Retiring;
                    kill.push((worker.pid, Signal::SIGTERM));
                }
                Phase::Retiring | Phase::Killed => {}
            }
        }
        for (pid, signal) in kill {
            self.launcher.signal(pid, signal);
        }
    }

    fn scale_up(&mut self) {
        self.desired += 1;
        tracing::info!("SIGTTIN: {} worker(s)", self.desired);
        self.spawn(self.desired, self.generation, None);
    }

    fn scale_down(&mut self) {
        if self.desired <= 1 {
            tracing::info!("SIGTTOU: already at 1 worker");
            return;
        }
        let slot = self.desired;
        self.desired -= 1;
        tracing::info!("SIGTTOU: {} worker(s)", self.desired);
        self.retire(|w| w.slot == slot);
    }

    fn reopen_logs(&mut self) {
        self.launcher.reopen_logs();
        let serving: Vec<u32> = self
            .workers
            .values()
            .filter(|w| matches!(w.phase, Phase::Ready | Phase::Retiring))
            .map(|w| w.pid)
            .collect();
        tracing::info!(
            "SIGUSR1: logs reopened; asking {} worker(s) to reopen theirs",
            serving.len()
        );
        // Workers still starting reopen theirs when they become ready.
        for pid in serving {
            self.launcher.signal(pid, Signal::SIGUSR1);
        }
    }

    /// SIGTERM to the workers `which` selects (a starting one dies of it).
    fn retire(&mut self, which: impl Fn(&Worker) -> bool) {
        let mut pids = Vec::new();
        for worker in self
            .workers
            .values_mut()
            .filter(|w| matches!(w.phase, Phase::Starting | Phase::Ready) && which(w))
        {
            worker.phase = Phase::Retiring;
            pids.push(worker.pid);
        }
        for pid in pids {
            self.launcher.signal(pid, Signal::SIGTERM);
        }
    }

    /// Stop listening, SIGTERM every worker, wait for them; SIGKILL those
    /// still running past the graceful timeout (plus a margin for their own
    /// exit), and wait for those too: the master never exits before its
    /// workers.
    async fn shutdown(&mut self, events: &mut mpsc::UnboundedReceiver<Event>) {
        self.launcher.stop_listening();
        self.retire(|_| true);
        let deadline = Instant::now() + self.settings.graceful_timeout + EXIT_MARGIN;
        if self.wait_all_exited(events, deadline).await {
            return;
        }
        tracing::warn!(
            "{} worker(s) did not stop in time; killing them",
            self.workers.len()
        );
        let pids: Vec<u32> = self.workers.values().map(|w| w.pid).collect();
        for pid in pids {
            self.launcher.signal(pid, Signal::SIGKILL);
        }
        if !self
            .wait_all_exited(events, Instant::now() + EXIT_MARGIN)
            .await
        {
            tracing::error!(
                "{} worker(s) still running after SIGKILL; giving up on them",
                self.workers.len()
            );
        }
    }

    async fn wait_all_exited(
        &mut self,
        events: &mut mpsc::UnboundedReceiver<Event>,
        deadline: Instant,
    ) -> bool {
        while !self.workers.is_empty() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(Event::Exited(id, exit))) => {
                    if let Some(worker) = self.workers.remove(&id) {
                        self.launcher.exited(id, &exit.lost);
                        let lost = describe_lost(&exit.lost);
                        if !lost.is_empty() {
                            tracing::error!(
                                "worker {} (pid {}) stopped: {}{lost}",
                                worker.slot,
                                worker.pid,
                                describe(&exit.status)
                            );
                        }
                    }
                }
                Ok(Some(Event::Message(..))) => {}
                Ok(None) | Err(_) => return false,
            }
        }
        true
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `exit code N`, `killed by SIGSEGV`.
pub fn describe(status: &std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (_, Some(sig)) => Signal::try_from(sig).map_or_else(
                |_| format!("killed by signal {sig}"),
                |s| format!("killed by {s}"),
            ),
            _ => s.to_string(),
        },
        Err(err) => format!("ended with an unknown status ({err})"),
    }
}

/// `; it was running 2 request(s): GET /a from 1.2.3.4:5 (3.1s), ...`
fn describe_lost(lost: &[RunningRequest]) -> String {
    if lost.is_empty() {
        return String::new();
    }
    let now = std::time::SystemTime::now();
    let list: Vec<String> = lost
        .iter()
        .map(|r| format!("{r} ({:.1}s)", r.age(now).as_secs_f64()))
        .collect();
    format!(
        "; it was running {} request(s), cut without an answer: {}",
        lost.len(),
        list.join(", ")
    )
}

#[cfg(test)]
mod tests;
