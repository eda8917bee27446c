//! The Python threads of a worker (`--threads`): each stays attached to the
//! interpreter and takes requests from one queue, releasing the GIL only
//! while it waits for work (or for a slow client). A thread that finishes a
//! request takes the next queued one without giving up the GIL, so under
//! load the GIL changes hands only when there is nothing to do.
//!
//! Also here: `--max-requests`, and the `--timeout` watchdog. `--timeout`
//! is the time the app itself runs: a thread waiting for its client (for
//! body bytes in `wsgi.input`, or for room to send the response) is not
//! counted ([`waiting_on_client`]; the body and send timeouts bound those
//! waits). A request past it has its Python stack (every thread's) logged,
//! is answered 504 from the I/O side (its connection cut if its head was
//! already out), and the worker asks to be recycled; the stuck thread stays
//! stuck while the others serve on until the worker drains and exits.
//! Each thread also keeps its slot of the request scoreboard, which the
//! master reads if the worker dies.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use http::StatusCode;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tokio::time::Instant;

use super::env_cache::EnvCache;
use super::pipe::Pipe;
use super::{call, Job, Tag};
use crate::recycle::{RecycleReason, RecycleSignal};
use crate::scoreboard::{RequestInfo, Scoreboard};

/// How many times an idle Python thread yields the CPU before it sleeps,
/// when spinning pays (see [`spin_yields`]).
const SPIN_YIELDS: usize = 32;

/// Yielding before sleeping saves the I/O thread a wake-up syscall per
/// request, but only while every busy thread of every worker (one I/O
/// thread and the Python threads) has a CPU; past that the yielding thread
/// takes turns from the I/O threads. Measured with wsgi.sh on 2 CPUs,
/// portico/granian req/s: 1 worker 1.14 with spinning, 0.75 without;
/// 2 workers 1.04 with, 1.57 without.
pub fn spin_yields(workers: usize, threads: usize, cpus: usize) -> usize {
    if workers.max(1) * (1 + threads) <= cpus {
        SPIN_YIELDS
    } else {
        0
    }
}

/// The status of a request the app ran past `--timeout`: the app is the
/// gateway's upstream here, as a CGI script (`cgi_timeout`) or a proxied
/// server (`read_timeout`) is, and those answer 504 too. A 503 would say
/// "overloaded, retry", a 500 "the app raised".
pub const TIMEOUT_STATUS: StatusCode = StatusCode::GATEWAY_TIMEOUT;

/// The time the app has spent on a request: wall time since it started,
/// less the time its thread waited for the client.
#[derive(Clone, Copy, Debug)]
struct AppClock {
    counted: Duration,
    /// Counting since then; `None` while the thread waits for the client.
    since: Option<Instant>,
}

impl AppClock {
    fn start(now: Instant) -> Self {
        AppClock {
            counted: Duration::ZERO,
            since: Some(now),
        }
    }

    fn pause(&mut self, now: Instant) {
        if let Some(since) = self.since.take() {
            self.counted += now.saturating_duration_since(since);
        }
    }

    fn resume(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }

    fn elapsed(&self, now: Instant) -> Duration {
        self.counted
            + self
                .since
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }
}

/// The request a Python thread is running, for the timeout watchdog.
struct Running {
    clock: AppClock,
    tag: Tag,
    /// Where its answer goes: the watchdog answers through it.
    pipe: Arc<Pipe>,
    /// The watchdog has answered for it (it fires once per request).
    fired: bool,
}

impl Running {
    /// The app has run it past `timeout` and nobody answered for it yet:
    /// marks it answered and returns how long it has run.
    fn overdue(&mut self, now: Instant, timeout: Duration) -> Option<Duration> {
        let ran = self.clock.elapsed(now);
        if self.fired || ran <= timeout {
            return None;
        }
        self.fired = true;
        Some(ran)
    }
}

thread_local! {
    /// The pool and slot of the Python thread this is, for
    /// [`waiting_on_client`].
    static SLOT: RefCell<Option<(Arc<PoolState>, usize)>> = const { RefCell::new(None) };
}

/// Runs `wait` (a wait for the client: body bytes, room in the response
/// pipe) without counting it as the app's time. Call on a Python thread
/// with the GIL released; elsewhere it just runs `wait`.
pub fn waiting_on_client<R>(wait: impl FnOnce() -> R) -> R {
    let clock = |change: fn(&mut AppClock, Instant)| {
        SLOT.with_borrow(|slot| {
            if let Some((state, index)) = slot {
                state.with_running(*index, |r| change(&mut r.clock, Instant::now()));
            }
        })
    };
    clock(AppClock::pause);
    let result = wait();
    clock(AppClock::resume);
    result
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Python threads asleep on `work`; a push wakes one only if there is
    /// one (a futex wake per request would cost a syscall each).
    sleepers: usize,
}

/// What a worker's Python threads and its timeout watchdog share: the job
/// queue, the request each thread runs, the request count and the
/// scoreboard.
struct PoolState {
    queue: Mutex<Queue>,
    work: Condvar,
    running: Vec<Mutex<Option<Running>>>,
    completed: AtomicU64,
    /// Requests after which the worker asks to be recycled (0: never).
    recycle_after: u64,
    recycle: Arc<RecycleSignal>,
    spin_yields: usize,
    /// Where each thread's request is published for the master.
    scoreboard: Option<Scoreboard>,
}

pub struct Pool {
    state: Arc<PoolState>,
}

pub struct PoolSettings {
    pub threads: usize,
    /// Yields of an idle thread before it sleeps ([`spin_yields`]).
    pub spin_yields: usize,
    pub timeout: Duration,
    pub recycle_after: u64,
    pub scoreboard: Option<Scoreboard>,
}

impl Pool {
    /// Starts the threads; `apps[job.app]` is what a job calls. Each
    /// thread gets its copy of the `base` environ made here, so that every
    /// way the start can fail is a start failure of the worker.
    pub fn start(
        settings: PoolSettings,
        apps: Arc<Vec<Py<PyAny>>>,
        base: &Py<PyDict>,
    ) -> Result<Self, StartError> {
        let caches = Python::attach(|py| {
            (0..settings.threads)
                .map(|_| EnvCache::new(base.bind(py)))
                .collect::<PyResult<Vec<_>>>()
                .map_err(|e| StartError::Environ(e.to_string()))
        })?;
        let state = Arc::new(PoolState {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                sleepers: 0,
            }),
            work: Condvar::new(),
            running: (0..settings.threads).map(|_| Mutex::new(None)).collect(),
            completed: AtomicU64::new(0),
            recycle_after: settings.recycle_after,
            recycle: Arc::new(RecycleSignal::default()),
            spin_yields: settings.spin_yields,
            scoreboard: settings.scoreboard,
        });
        if let Some(board) = &state.scoreboard {
            board.set_threads(settings.threads);
        }
        for (index, cache) in caches.into_iter().enumerate() {
            let (state, apps) = (state.clone(), apps.clone());
            spawn(format!("python-{index}"), move || {
                python_thread(index, state, &apps, cache)
            })?;
        }
        let watched = state.clone();
        spawn("timeout-watchdog".into(), move || {
            watchdog(&watched, settings.timeout)
        })?;
        Ok(Pool { state })
    }

    pub fn submit(&self, job: Job) {
        let mut queue = self.state.lock_queue();
        queue.jobs.push_back(job);
        let wake = queue.sleepers > 0;
        drop(queue);
        if wake {
            self.state.work.notify_one();
        }
    }

    /// Raised when `--max-requests` is reached, or when a request ran past
    /// `--timeout`.
    pub fn recycle_signal(&self) -> Arc<RecycleSignal> {
        self.state.recycle.clone()
    }
}

impl PoolState {
    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn try_pop(&self) -> Option<Job> {
        self.lock_queue().jobs.pop_front()
    }

    /// Waits for a job (called with the GIL released). Under load the next
    /// request is usually a few microseconds away: yielding the CPU a few
    /// times first (when that pays, see [`spin_yields`]) avoids a futex sleep
    /// and the wake-up syscall it would cost the I/O thread.
    fn pop_blocking(&self) -> Job {
        for _ in 0..self.spin_yields {
            if let Some(job) = self.try_pop() {
                return job;
            }
            std::thread::yield_now();
        }
        let mut queue = self.lock_queue();
        loop {
            if let Some(job) = queue.jobs.pop_front() {
                return job;
            }
            queue.sleepers += 1;
            queue = self.work.wait(queue).unwrap_or_else(|e| e.into_inner());
            queue.sleepers -= 1;
        }
    }

    fn set_running(&self, index: usize, running: Option<Running>) {
        *self.running[index]
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = running;
    }

    fn with_running(&self, index: usize, f: impl FnOnce(&mut Running)) {
        let mut slot = self.running[index]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(running) = slot.as_mut() {
            f(running);
        }
    }
}

/// Why the pool could not start: the worker's start failed
/// (`master::EXIT_START_FAILED`), and the master does not retry it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start the thread `{name}`: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot copy the base environ for a Python thread: {0}")]
    Environ(String),
}

/// Starts a thread named `name`; the OS refusing one is a start failure.
fn spawn(name: String, run: impl FnOnce() + Send + 'static) -> Result<(), StartError> {
    spawn_with(std::thread::Builder::new().name(name.clone()), name, run)
}

fn spawn_with(
    builder: std::thread::Builder,
    name: String,
    run: impl FnOnce() + Send + 'static,
) -> Result<(), StartError> {
    builder
        .spawn(run)
        .map(drop)
        .map_err(|source| StartError::Spawn { name, source })
}

fn python_thread(index: usize, state: Arc<PoolState>, apps: &[Py<PyAny>], mut cache: EnvCache) {
    SLOT.with_borrow_mut(|slot| *slot = Some((state.clone(), index)));
    Python::attach(|py| {
        let apps: Vec<Bound<'_, PyAny>> = apps.iter().map(|a| a.bind(py).clone()).collect();
        loop {
            let job = match state.try_pop() {
                Some(job) => job,
                None => py.detach(|| state.pop_blocking()),
            };
            state.set_running(
                index,
                Some(Running {
                    clock: AppClock::start(Instant::now()),
                    tag: job.tag.clone(),
                    pipe: job.pipe.clone(),
                    fired: false,
                }),
            );
            if let Some(board) = &state.scoreboard {
                board.begin(index, &request_info(&job));
            }
            let app = &apps[job.app];
            call::run(py, &mut cache, app, job);
            if let Some(board) = &state.scoreboard {
                board.end(index);
            }
            state.set_running(index, None);
            let done = state.completed.fetch_add(1, Ordering::Relaxed) + 1;
            if state.recycle_after > 0 && done == state.recycle_after {
                tracing::info!("max-requests reached ({done}); asking for a replacement");
                state.recycle.request(RecycleReason::MaxRequests);
            }
        }
    })
}

/// The request as the scoreboard keeps it (the fields of an access-log line).
fn request_info(job: &Job) -> RequestInfo<'_> {
    let parts = &*job.parts;
    let header = |name: http::header::HeaderName| parts.headers.get(name).map(|v| v.as_bytes());
    RequestInfo {
        method: parts.method.as_str().as_bytes(),
        target: parts
            .uri
            .path_and_query()
            .map_or(b"/", |pq| pq.as_str().as_bytes()),
        version: parts.version,
        host: header(http::header::HOST)
            .or_else(|| parts.uri.authority().map(|a| a.as_str().as_bytes())),
        user_agent: header(http::header::USER_AGENT),
        referer: header(http::header::REFERER),
        peer: job.peer,
    }
}

fn watchdog(state: &PoolState, timeout: Duration) {
    let tick = (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        std::thread::sleep(tick);
        for (index, slot) in state.running.iter().enumerate() {
            let stuck = {
                let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
                slot.as_mut().and_then(|r| {
                    let ran = r.overdue(Instant::now(), timeout)?;
                    Some((r.tag.clone(), r.pipe.clone(), ran))
                })
            };
            if let Some((tag, pipe, ran)) = stuck {
                time_out(state, index, (&tag, &pipe), ran, timeout);
            }
        }
    }
}

/// A request ran the app past `--timeout`: answer it, log why and where,
/// and ask for the worker to be recycled (it drains: the other threads'
/// requests finish; the stuck thread stays stuck until the process exits).
fn time_out(
    state: &PoolState,
    index: usize,
    (tag, pipe): (&Tag, &Pipe),
    ran: Duration,
    timeout: Duration,
) {
    tracing::error!(
        request = %tag,
        "{} on a WSGI request: the app has run it {:.1}s, past --timeout {}s (waits for the client \
         not counted); logging Python stacks and recycling the worker",
        TIMEOUT_STATUS.as_u16(),
        ran.as_secs_f64(),
        timeout.as_secs_f64()
    );
    pipe.time_out(call::error_head(TIMEOUT_STATUS));
    // Answered (and logged by the connection): if the worker dies with the
    // thread still stuck, the master must not log the request again.
    if let Some(board) = &state.scoreboard {
        board.end(index);
    }
    log_python_stacks(tag);
    state.recycle.request(RecycleReason::Timeout);
}

/// Logs the stack of every Python thread. Taking the GIL can itself hang
/// (a C extension stuck while holding it), so it runs on its own thread and
/// we give up after two seconds.
fn log_python_stacks(tag: &Tag) {
    let tag = tag.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let text = Python::attach(|py| python_stacks(py).unwrap_or_else(|e| e.to_string()));
        tracing::error!(request = %tag, "Python stacks at timeout:\n{text}");
        let _ = done_tx.send(());
    });
    if done_rx.recv_timeout(Duration::from_secs(2)).is_err() {
        tracing::error!("could not take the GIL to log Python stacks (a thread holds it)");
    }
}

fn python_stacks(py: Python<'_>) -> PyResult<String> {
    let code = c"
import sys, threading, traceback
names = {t.ident: t.name for t in threading.enumerate()}
out = []
for ident, frame in sys._current_frames().items():
    out.append('Thread %s (%s):\\n%s' % (ident, names.get(ident, '?'), ''.join(traceback.format_stack(frame))))
result = '\\n'.join(out)
";
    let scope = PyDict::new(py);
    py.run(code, Some(&scope), Some(&scope))?;
    scope
        .get_item("result")?
        .map_or(Ok(String::new()), |r| r.extract())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The OS refusing a thread is a start failure of the worker (which
    /// exits with `EXIT_START_FAILED`, and the master stops), not a panic.
    #[test]
    fn a_thread_the_os_refuses_is_a_start_failure() {
        // More stack than the address space holds: pthread_create fails.
        let builder = std::thread::Builder::new().stack_size(1 << 50);
        let err = spawn_with(builder, "python-0".into(), || {}).unwrap_err();
        assert!(
            matches!(&err, StartError::Spawn { name, .. } if name == "python-0"),
            "{err}"
        );
        let load = super::super::LoadError::from(err);
        assert!(
            load.to_string()
                .starts_with("cannot start the thread `python-0`: "),
            "{load}"
        );
    }

    fn running() -> Running {
        let parts = http::Request::new(()).into_parts().0;
        Running {
            clock: AppClock::start(Instant::now()),
            tag: Tag(Arc::new(parts)),
            pipe: Pipe::new(),
            fired: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn time_waiting_on_the_client_is_not_the_apps() {
        let timeout = Duration::from_secs(30);
        let step = |secs| tokio::time::advance(Duration::from_secs(secs));
        let mut r = running();
        step(20).await;
        // Reading a trickled upload, then feeding a slow reader: 10 minutes.
        r.clock.pause(Instant::now());
        step(300).await;
        r.clock.resume(Instant::now());
        step(5).await;
        r.clock.pause(Instant::now());
        step(300).await;
        assert_eq!(r.overdue(Instant::now(), timeout), None);
        r.clock.resume(Instant::now());
        step(5).await;
        assert_eq!(r.clock.elapsed(Instant::now()), Duration::from_secs(30));
        assert_eq!(r.overdue(Instant::now(), timeout), None, "not past it yet");
        step(1).await;
        assert_eq!(
            r.overdue(Instant::now(), timeout),
            Some(Duration::from_secs(31))
        );
        step(60).await;
        assert_eq!(r.overdue(Instant::now(), timeout), None, "fires once");
    }

    #[test]
    fn spins_only_while_every_busy_thread_has_a_cpu() {
        assert_eq!(spin_yields(1, 1, 2), SPIN_YIELDS);
        assert_eq!(
            spin_yields(0, 1, 2),
            SPIN_YIELDS,
            "--no-master runs one worker"
        );
        assert_eq!(spin_yields(2, 1, 2), 0);
        assert_eq!(spin_yields(1, 4, 2), 0);
        assert_eq!(spin_yields(2, 1, 4), SPIN_YIELDS);
    }
}
