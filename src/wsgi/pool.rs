//! The Python threads of a worker (`--threads`): each stays attached to the
//! interpreter and takes requests from one queue, releasing the GIL only
//! while it waits for work (or for a slow client). A thread that finishes a
//! request takes the next queued one without giving up the GIL, so under
//! load the GIL changes hands only when there is nothing to do.
//!
//! Also here: the `--timeout` watchdog (logs every Python thread's stack,
//! then ends the worker so the master replaces it), `--max-requests` (asks
//! for a replacement through the [`RecycleSignal`]) and the request
//! scoreboard each thread keeps its slot of.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::env_cache::EnvCache;
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

/// Exit code of a worker ended by the `--timeout` watchdog.
pub const EXIT_TIMEOUT: i32 = 4;

/// The request a Python thread is running, for the timeout watchdog.
struct Running {
    since: Instant,
    tag: Tag,
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Python threads asleep on `work`; a push wakes one only if there is
    /// one (a futex wake per request would cost a syscall each).
    sleepers: usize,
}

struct Shared {
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
    shared: Arc<Shared>,
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
    /// Starts the threads; `apps[job.app]` is what a job calls.
    pub fn start(settings: PoolSettings, apps: Arc<Vec<Py<PyAny>>>, base: Arc<Py<PyDict>>) -> Self {
        let shared = Arc::new(Shared {
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
        if let Some(board) = &shared.scoreboard {
            board.set_threads(settings.threads);
        }
        for index in 0..settings.threads {
            let (shared, apps, base) = (shared.clone(), apps.clone(), base.clone());
            std::thread::Builder::new()
                .name(format!("python-{index}"))
                .spawn(move || python_thread(index, &shared, &apps, &base))
                .expect("cannot start a Python thread");
        }
        let watched = shared.clone();
        std::thread::Builder::new()
            .name("timeout-watchdog".into())
            .spawn(move || watchdog(&watched, settings.timeout))
            .expect("cannot start the timeout watchdog");
        Pool { shared }
    }

    pub fn submit(&self, job: Job) {
        let mut queue = self.shared.lock_queue();
        queue.jobs.push_back(job);
        let wake = queue.sleepers > 0;
        drop(queue);
        if wake {
            self.shared.work.notify_one();
        }
    }

    /// Raised once when `--max-requests` is reached.
    pub fn recycle_signal(&self) -> Arc<RecycleSignal> {
        self.shared.recycle.clone()
    }
}

impl Shared {
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
}

fn python_thread(index: usize, shared: &Shared, apps: &[Py<PyAny>], base: &Py<PyDict>) {
    Python::attach(|py| {
        let apps: Vec<Bound<'_, PyAny>> = apps.iter().map(|a| a.bind(py).clone()).collect();
        let mut cache = match EnvCache::new(base.bind(py)) {
            Ok(cache) => cache,
            // Only out of memory; the master starts a new worker.
            Err(e) => {
                tracing::error!(
                    "Python thread {index} cannot copy the base environ: {e}; worker exits"
                );
                std::process::exit(1);
            }
        };
        loop {
            let job = match shared.try_pop() {
                Some(job) => job,
                None => py.detach(|| shared.pop_blocking()),
            };
            shared.set_running(
                index,
                Some(Running {
                    since: Instant::now(),
                    tag: job.tag.clone(),
                }),
            );
            if let Some(board) = &shared.scoreboard {
                board.begin(index, &request_info(&job));
            }
            let app = &apps[job.app];
            call::run(py, &mut cache, app, job);
            if let Some(board) = &shared.scoreboard {
                board.end(index);
            }
            shared.set_running(index, None);
            let done = shared.completed.fetch_add(1, Ordering::Relaxed) + 1;
            if shared.recycle_after > 0 && done == shared.recycle_after {
                tracing::info!("max-requests reached ({done}); asking for a replacement");
                shared.recycle.request(RecycleReason::MaxRequests);
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

fn watchdog(shared: &Shared, timeout: Duration) {
    let tick = (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        std::thread::sleep(tick);
        let stuck = shared.running.iter().find_map(|slot| {
            let slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            slot.as_ref()
                .filter(|r| r.since.elapsed() > timeout)
                .map(|r| (r.tag.clone(), r.since.elapsed()))
        });
        if let Some((tag, elapsed)) = stuck {
            tracing::error!(
                request = %tag,
                "request has run {:.1}s, past --timeout {}s; logging Python stacks and recycling the worker",
                elapsed.as_secs_f64(),
                timeout.as_secs()
            );
            log_python_stacks(&tag);
            std::process::exit(EXIT_TIMEOUT);
        }
    }
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
