//! The supervisor's decisions on tokio's paused clock, with a launcher that
//! records what it is asked to do instead of starting processes. Worker
//! `id` has pid `1000 + id`.

use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Act {
    Start(WorkerId),
    Sig(WorkerId, Signal),
    Exited(WorkerId, usize),
    StopListening,
    ReopenLogs,
}

#[derive(Clone, Default)]
struct Fake {
    acts: Arc<Mutex<Vec<Act>>>,
    fail_starts: Arc<Mutex<usize>>,
}

impl Launcher for Fake {
    fn start(
        &mut self,
        id: WorkerId,
        _events: &mpsc::UnboundedSender<Event>,
    ) -> std::io::Result<u32> {
        let mut fail = self.fail_starts.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(std::io::Error::other("fork failed"));
        }
        self.acts.lock().unwrap().push(Act::Start(id));
        Ok(1000 + id as u32)
    }

    fn signal(&mut self, pid: u32, signal: Signal) {
        let id = WorkerId::from(pid - 1000);
        self.acts.lock().unwrap().push(Act::Sig(id, signal));
    }

    fn exited(&mut self, id: WorkerId, lost: &[RunningRequest]) {
        self.acts.lock().unwrap().push(Act::Exited(id, lost.len()));
    }

    fn stop_listening(&mut self) {
        self.acts.lock().unwrap().push(Act::StopListening);
    }

    fn reopen_logs(&mut self) {
        self.acts.lock().unwrap().push(Act::ReopenLogs);
    }
}

const START_TIMEOUT: Duration = Duration::from_secs(60);
const GRACEFUL: Duration = Duration::from_secs(30);

struct Harness {
    fake: Fake,
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedSender<Event>,
    task: tokio::task::JoinHandle<Result<(), MasterError>>,
    /// How many acts the test has looked at.
    seen: usize,
}

impl Harness {
    async fn start(workers: usize) -> Harness {
        let fake = Fake::default();
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (events, event_rx) = mpsc::unbounded_channel();
        let settings = Settings {
            workers,
            start_timeout: START_TIMEOUT,
            graceful_timeout: GRACEFUL,
        };
        let supervisor = Supervisor::new(fake.clone(), settings, events.clone());
        let task = tokio::spawn(supervisor.run(command_rx, event_rx));
        let mut h = Harness {
            fake,
            commands,
            events,
            task,
            seen: 0,
        };
        h.settle().await;
        h
    }

    /// Lets the supervisor handle everything sent so far.
    async fn settle(&mut self) {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    /// The acts since the last call.
    async fn new_acts(&mut self) -> Vec<Act> {
        self.settle().await;
        let acts = self.fake.acts.lock().unwrap();
        let fresh = acts[self.seen..].to_vec();
        self.seen = acts.len();
        fresh
    }

    async fn send(&mut self, event: Event) {
        self.events.send(event).unwrap();
        self.settle().await;
    }

    async fn ready(&mut self, id: WorkerId) {
        self.send(Event::Message(id, Message::Ready)).await;
    }

    async fn recycle(&mut self, id: WorkerId, reason: RecycleReason) {
        self.send(Event::Message(id, Message::Recycle(reason)))
            .await;
    }

    async fn exit(&mut self, id: WorkerId, raw_status: i32, lost: usize) {
        let request = RunningRequest {
            method: "GET".into(),
            target: "/x".into(),
            version: http::Version::HTTP_11,
            host: None,
            user_agent: None,
            referer: None,
            peer: None,
            started: std::time::SystemTime::now(),
        };
        let exit = Exit {
            status: Ok(ExitStatus::from_raw(raw_status)),
            lost: vec![request; lost],
        };
        self.send(Event::Exited(id, exit)).await;
    }

    async fn command(&mut self, command: Command) {
        self.commands.send(command).unwrap();
        self.settle().await;
    }
}

fn code(n: i32) -> i32 {
    n << 8
}

const SEGV: i32 = 11;
const KILLED: i32 = 9;

use Act::*;
use Signal::{SIGKILL, SIGTERM, SIGUSR1};

#[tokio::test(start_paused = true)]
async fn a_recycled_worker_keeps_serving_until_its_replacement_is_ready() {
    let mut h = Harness::start(1).await;
    assert_eq!(h.new_acts().await, [Start(0)]);
    h.ready(0).await;
    h.recycle(0, RecycleReason::MaxRequests).await;
    assert_eq!(
        h.new_acts().await,
        [Start(1)],
        "the replacement starts at once; the old worker is not stopped"
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        h.new_acts().await,
        [],
        "still starting: nothing else happens"
    );
    h.ready(1).await;
    assert_eq!(h.new_acts().await, [Sig(0, SIGTERM)]);
    h.exit(0, code(0), 0).await;
    assert_eq!(
        h.new_acts().await,
        [Exited(0, 0)],
        "a drained worker is not restarted"
    );
}

#[tokio::test(start_paused = true)]
async fn never_two_replacements_for_one_worker() {
    let mut h = Harness::start(1).await;
    h.ready(0).await;
    h.recycle(0, RecycleReason::MaxRequests).await;
    h.recycle(0, RecycleReason::Timeout).await;
    h.recycle(0, RecycleReason::MaxRequests).await;
    assert_eq!(h.new_acts().await, [Start(0), Start(1)]);
}

#[tokio::test(start_paused = true)]
async fn workers_asking_at_once_each_serve_until_their_own_replacement_is_ready() {
    let mut h = Harness::start(2).await;
    h.ready(0).await;
    h.ready(1).await;
    h.new_acts().await;
    h.recycle(0, RecycleReason::MaxRequests).await;
    h.recycle(1, RecycleReason::MaxRequests).await;
    assert_eq!(h.new_acts().await, [Start(2), Start(3)]);
    h.ready(3).await;
    assert_eq!(
        h.new_acts().await,
        [Sig(1, SIGTERM)],
        "only the worker this replacement replaces stops"
    );
    h.ready(2).await;
    assert_eq!(h.new_acts().await, [Sig(0, SIGTERM)]);
}

#[tokio::test(start_paused = true)]
async fn a_replacement_not_ready_in_time_is_killed_and_tried_again_later() {
    let mut h = Harness::start(1).await;
    h.ready(0).await;
    h.recycle(0, RecycleReason::MaxRequests).await;
    assert_eq!(h.new_acts().await, [Start(0), Start(1)]);
    tokio::time::sleep(START_TIMEOUT - Duration::from_millis(10)).await;
    assert_eq!(h.new_acts().await, []);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        h.new_acts().await,
        [Sig(1, SIGKILL)],
        "the replacement is killed; the old worker is not touched"
    );
    h.recycle(0, RecycleReason::Timeout).await;
    h.exit(1, KILLED, 0).await;
    assert_eq!(
        h.new_acts().await,
        [Exited(1, 0)],
        "no new replacement before the back-off, none for the killed one"
    );
    tokio::time::sleep(MIN_BACKOFF).await;
    assert_eq!(h.new_acts().await, [Start(2)]);
    h.ready(2).await;
    assert_eq!(h.new_acts().await, [Sig(0, SIGTERM)]);
}

#[tokio::test(start_paused = true)]
async fn a_replacement_that_cannot_start_leaves_the_old_worker_serving() {
    let mut h = Harness::start(1).await;
    h.ready(0).await;
    h.recycle(0, RecycleReason::MaxRequests).await;
    h.exit(1, code(i32::from(EXIT_START_FAILED)), 0).await;
    assert_eq!(h.new_acts().await, [Start(0), Start(1), Exited(1, 0)]);
    tokio::time::sleep(MIN_BACKOFF).await;
    assert_eq!(
        h.new_acts().await,
        [Start(2)],
        "tried again after the back-off"
    );
    assert!(
        !h.task.is_finished(),
        "a failed replacement never stops the master"
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_crashing_while_its_replacement_starts_is_replaced_by_it() {
    let mut h = Harness::start(1).await;
    h.ready(0).await;
    h.recycle(0, RecycleReason::MaxRequests).await;
    h.exit(0, SEGV, 2).await;
    tokio::time::sleep(MAX_BACKOFF).await;
    assert_eq!(
        h.new_acts().await,
        [Start(0), Start(1), Exited(0, 2)],
        "no second worker for the slot"
    );
    h.ready(1).await;
    assert_eq!(h.new_acts().await, [], "nothing left to retire");
}

#[tokio::test(start_paused = true)]
async fn a_reload_hanging_at_import_is_abandoned_and_the_next_sighup_works() {
    let mut h = Harness::start(2).await;
    h.ready(0).await;
    h.ready(1).await;
    h.new_acts().await;
    h.command(Command::Reload).await;
    assert_eq!(h.new_acts().await, [Start(2), Start(3)]);
    h.send(Event::Message(2, Message::Doing("importing app".into())))
        .await;
    h.ready(3).await;
    tokio::time::sleep(START_TIMEOUT).await;
    assert_eq!(
        h.new_acts().await,
        [Sig(2, SIGKILL), Sig(3, SIGTERM)],
        "the hung one is killed, the ready one drains; the old generation is untouched"
    );
    h.exit(2, KILLED, 0).await;
    h.exit(3, code(0), 0).await;
    tokio::time::sleep(MAX_BACKOFF).await;
    assert_eq!(
        h.new_acts().await,
        [Exited(2, 0), Exited(3, 0)],
        "an abandoned generation is not restarted"
    );
    h.command(Command::Reload).await;
    assert_eq!(h.new_acts().await, [Start(4), Start(5)]);
    h.ready(4).await;
    h.ready(5).await;
    let acts = h.new_acts().await;
    assert!(
        acts.contains(&Sig(0, SIGTERM)) && acts.contains(&Sig(1, SIGTERM)),
        "{acts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_sighup_during_a_reload_supersedes_it() {
    let mut h = Harness::start(2).await;
    h.ready(0).await;
    h.ready(1).await;
    h.command(Command::Reload).await;
    h.ready(2).await;
    h.new_acts().await;
    h.command(Command::Reload).await;
    let acts = h.new_acts().await;
    assert!(acts.contains(&Sig(2, SIGTERM)), "{acts:?}");
    assert!(acts.contains(&Sig(3, SIGKILL)), "{acts:?}");
    assert_eq!(acts[2..], [Start(4), Start(5)]);
    h.ready(4).await;
    h.ready(5).await;
    let acts = h.new_acts().await;
    assert!(
        acts.contains(&Sig(0, SIGTERM)) && acts.contains(&Sig(1, SIGTERM)),
        "{acts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_never_ready_at_first_start_stops_the_master() {
    let mut h = Harness::start(2).await;
    tokio::time::sleep(START_TIMEOUT).await;
    let acts = h.new_acts().await;
    assert_eq!(
        acts,
        [
            Start(0),
            Start(1),
            Sig(0, SIGKILL),
            StopListening,
            Sig(1, SIGTERM)
        ]
    );
    assert!(!h.task.is_finished(), "the master waits for its workers");
    h.exit(0, KILLED, 0).await;
    h.exit(1, code(0), 0).await;
    let result = (&mut h.task).await.unwrap();
    assert!(
        matches!(result, Err(MasterError::StartTimeout { slot: 1, .. })),
        "{result:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_broken_app_at_first_start_stops_the_master() {
    let mut h = Harness::start(1).await;
    h.exit(0, code(i32::from(EXIT_START_FAILED)), 0).await;
    let result = (&mut h.task).await.unwrap();
    assert!(
        matches!(result, Err(MasterError::WorkerStart)),
        "{result:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn stop_closes_the_listeners_first_and_waits_for_every_worker() {
    let mut h = Harness::start(2).await;
    h.ready(0).await;
    h.ready(1).await;
    h.new_acts().await;
    h.command(Command::Stop).await;
    assert_eq!(
        h.new_acts().await[0],
        StopListening,
        "listeners close before the workers are asked to drain"
    );
    tokio::time::sleep(GRACEFUL).await;
    h.exit(0, code(0), 0).await;
    assert!(!h.task.is_finished());
    h.exit(1, code(0), 0).await;
    assert!(matches!((&mut h.task).await.unwrap(), Ok(())));
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_does_not_drain_is_killed_and_still_waited_for() {
    let mut h = Harness::start(1).await;
    h.ready(0).await;
    h.command(Command::Stop).await;
    h.new_acts().await;
    tokio::time::sleep(GRACEFUL + EXIT_MARGIN).await;
    assert_eq!(h.new_acts().await, [Sig(0, SIGKILL)]);
    assert!(!h.task.is_finished(), "the master outlives its workers");
    h.exit(0, KILLED, 1).await;
    assert_eq!(h.new_acts().await, [Exited(0, 1)]);
    assert!(matches!((&mut h.task).await.unwrap(), Ok(())));
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_backs_off_and_a_ready_worker_resets_it() {
    let mut h = Harness::start(1).await;
    h.exit(0, SEGV, 0).await;
    assert_eq!(h.new_acts().await, [Start(0), Exited(0, 0)]);
    tokio::time::sleep(MIN_BACKOFF).await;
    assert_eq!(h.new_acts().await, [Start(1)]);
    h.exit(1, SEGV, 0).await;
    tokio::time::sleep(MIN_BACKOFF).await;
    assert_eq!(h.new_acts().await, [Exited(1, 0)], "the back-off doubled");
    tokio::time::sleep(MIN_BACKOFF).await;
    assert_eq!(h.new_acts().await, [Start(2)]);
    h.ready(2).await;
    tokio::time::sleep(STABLE_AFTER).await;
    h.exit(2, SEGV, 3).await;
    assert_eq!(
        h.new_acts().await,
        [Exited(2, 3), Start(3)],
        "a worker that had been serving is restarted at once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_respawned_worker_not_ready_in_time_is_killed_and_restarted() {
    let mut h = Harness::start(1).await;
    h.ready(0).await;
    tokio::time::sleep(STABLE_AFTER).await;
    h.exit(0, SEGV, 0).await;
    assert_eq!(h.new_acts().await, [Start(0), Exited(0, 0), Start(1)]);
    tokio::time::sleep(START_TIMEOUT).await;
    assert_eq!(h.new_acts().await, [Sig(1, SIGKILL)]);
    h.exit(1, KILLED, 0).await;
    tokio::time::sleep(MIN_BACKOFF).await;
    assert_eq!(h.new_acts().await, [Exited(1, 0), Start(2)]);
    assert!(!h.task.is_finished());
}

#[tokio::test(start_paused = true)]
async fn a_failed_fork_is_retried_after_the_back_off() {
    let mut h = Harness::start(1).await;
    h.ready(0).await;
    h.new_acts().await;
    *h.fake.fail_starts.lock().unwrap() = 1;
    h.recycle(0, RecycleReason::MaxRequests).await;
    assert_eq!(h.new_acts().await, []);
    tokio::time::sleep(MIN_BACKOFF).await;
    assert_eq!(h.new_acts().await, [Start(2)], "id 1 was the failed fork");
}

#[tokio::test(start_paused = true)]
async fn sigusr1_reaches_the_workers_that_are_serving() {
    let mut h = Harness::start(2).await;
    h.ready(0).await;
    h.new_acts().await;
    h.command(Command::ReopenLogs).await;
    assert_eq!(
        h.new_acts().await,
        [ReopenLogs, Sig(0, SIGUSR1)],
        "a worker still starting reopens its logs when it becomes ready"
    );
}

#[tokio::test(start_paused = true)]
async fn sigttin_during_a_reload_joins_the_new_generation() {
    let mut h = Harness::start(1).await;
    h.ready(0).await;
    h.command(Command::Reload).await;
    h.command(Command::AddWorker).await;
    assert_eq!(h.new_acts().await, [Start(0), Start(1), Start(2)]);
    h.ready(2).await;
    h.ready(1).await;
    let acts = h.new_acts().await;
    assert!(acts.contains(&Sig(0, SIGTERM)), "{acts:?}");
    assert!(acts.contains(&Sig(2, SIGTERM)), "{acts:?}");
    assert!(
        acts.contains(&Start(3)),
        "slot 2 of the new generation: {acts:?}"
    );
}
