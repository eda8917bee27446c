//! The connection's timers: where a connection is between requests (its
//! [`Phase`], kept in one atomic word by [`PhaseCell`]) and the
//! [`Watchdog`] that turns the phase into what expires when:
//!
//! - a new (or unparked) connection that sends nothing: closed after the
//!   header timeout; an idle keep-alive connection: after the keep-alive
//!   timeout (both [`Expiry::Idle`]);
//! - a request head that started arriving and is not complete within the
//!   header timeout: [`Expiry::HeadTimeout`] (408);
//! - a plain HTTP/1 connection idle for `PARK_AFTER`: [`Expiry::Park`]
//!   (`super::park`);
//! - a client whose socket takes no byte for the send timeout, busy or not:
//!   [`Expiry::SendTimeout`];
//! - while the worker drains, idle deadlines shorten to the drain grace
//!   (`super::drain`).
//!
//! `super::conn::drive` polls the watchdog beside hyper's connection and
//! acts on what it answers.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::conn::ConnState;
use super::drain::Drain;
use super::park::PARK_AFTER;

/// Where a connection is between requests; drives the watchdog.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Phase {
    /// No byte of a next request yet; closed quietly after `limit`.
    Idle { since: Instant, limit: Duration },
    /// Part of a request head arrived; 408 after the header timeout.
    Head { since: Instant },
    /// At least one request is being answered.
    Busy,
}

/// A `Phase` in one atomic word: the kind in the top two bits, the start in
/// the others as nanoseconds after `epoch` (146 years). hyper wants the
/// socket `Send` when upgrades are on (an upgraded socket is a
/// `Box<dyn Send>`), so the state the socket wrapper shares must be `Sync`;
/// it is only ever touched on the worker's thread, so relaxed loads and
/// stores are enough, where a lock would cost every request a few.
pub(super) struct PhaseCell {
    word: AtomicU64,
    pub(super) epoch: Instant,
    /// The limit of an idle phase before the first request (or after a
    /// park), and between requests.
    header_timeout: Duration,
    pub(super) keepalive_timeout: Duration,
}

impl PhaseCell {
    const KIND_SHIFT: u32 = 62;
    const SINCE_MASK: u64 = (1 << Self::KIND_SHIFT) - 1;
    pub(super) const BUSY: u64 = 0;
    pub(super) const HEAD: u64 = 1;
    pub(super) const IDLE_NEW: u64 = 2;
    pub(super) const IDLE_KEPT: u64 = 3;

    pub(super) fn new(header_timeout: Duration, keepalive_timeout: Duration) -> Self {
        let cell = PhaseCell {
            word: AtomicU64::new(0),
            epoch: Instant::now(),
            header_timeout,
            keepalive_timeout,
        };
        cell.set(Self::IDLE_NEW);
        cell
    }

    /// Enters the phase of kind `kind`, starting now (busy has no start).
    pub(super) fn set(&self, kind: u64) {
        let since = match kind {
            Self::BUSY => 0,
            _ => Instant::now()
                .saturating_duration_since(self.epoch)
                .as_nanos() as u64,
        };
        let word = kind << Self::KIND_SHIFT | since & Self::SINCE_MASK;
        self.word.store(word, Relaxed);
    }

    pub(super) fn get(&self) -> Phase {
        let word = self.word.load(Relaxed);
        let since = self.epoch + Duration::from_nanos(word & Self::SINCE_MASK);
        match word >> Self::KIND_SHIFT {
            Self::BUSY => Phase::Busy,
            Self::HEAD => Phase::Head { since },
            Self::IDLE_NEW => Phase::Idle {
                since,
                limit: self.header_timeout,
            },
            _ => Phase::Idle {
                since,
                limit: self.keepalive_timeout,
            },
        }
    }

    pub(super) fn is_idle(&self) -> bool {
        self.word.load(Relaxed) >> Self::KIND_SHIFT >= Self::IDLE_NEW
    }
}

/// What the watchdog decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expiry {
    Idle,
    HeadTimeout,
    /// Idle for `PARK_AFTER` with nothing left to write: leave hyper.
    Park,
    /// The client's socket took no byte for the send timeout.
    SendTimeout,
}

/// Sleeps until the current phase's deadline, re-reading the phase at least
/// every `step` (the shorter timeout). A phase that starts while we sleep has
/// a deadline at least `step` after its start, so it is always noticed before
/// its deadline and enforced on time, without waking per state change.
///
/// The connection polls it on every wake-up of its task, nearly all of them
/// for hyper: until its timer has fired, it answers from one load without
/// polling the timer.
pub(super) struct Watchdog<'a> {
    state: &'a ConnState,
    header_timeout: Duration,
    can_park: bool,
    /// The worker's drain, once begun: idle connections close at its grace.
    drain: Option<Drain>,
    step: Duration,
    sleep: Pin<Box<Sleep>>,
    /// What the timer is set for: the phase then, its deadline, and what
    /// expires at it (nothing while busy).
    armed: Option<(Phase, Instant, Option<Expiry>)>,
    /// The timer was polled since it was set, so it will wake the task.
    registered: bool,
}

impl<'a> Watchdog<'a> {
    /// The shortest step, for a drain grace of zero: a busy connection is
    /// not polled in a loop.
    const MIN_STEP: Duration = Duration::from_millis(10);

    pub(super) fn new(
        state: &'a ConnState,
        header_timeout: Duration,
        can_park: bool,
        drain: Option<Drain>,
    ) -> Self {
        let mut dog = Watchdog {
            state,
            header_timeout,
            can_park,
            drain,
            step: header_timeout,
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: None,
            registered: false,
        };
        dog.step = dog.step();
        dog
    }

    /// The shortest time a phase can last before its deadline.
    fn step(&self) -> Duration {
        let mut step = self
            .header_timeout
            .min(self.state.phase.keepalive_timeout)
            .min(self.state.send_timeout());
        if self.can_park {
            step = step.min(PARK_AFTER);
        }
        if let Some(drain) = self.drain {
            step = step.min(drain.grace.max(Self::MIN_STEP));
        }
        step
    }

    /// The worker began to drain: idle deadlines shorten to its grace.
    pub(super) fn drain(&mut self, drain: Drain) {
        self.drain = Some(drain);
        self.step = self.step();
        self.armed = None;
        self.registered = false;
    }

    /// Not HTTP/2, not draining (the connection closes at the grace
    /// anyway), and nothing left to write for a slow reader (that one is
    /// closed at the keep-alive deadline as before).
    fn parkable(&self) -> bool {
        self.can_park
            && self.drain.is_none()
            && !self.state.is_http2()
            && !self.state.is_write_blocked()
    }

    fn arm(&mut self) {
        let phase = self.state.phase.get();
        let now = Instant::now();
        let (deadline, expiry) = match phase {
            Phase::Idle { since, limit } => match self.drain {
                Some(drain) => (drain.idle_deadline(since, limit), Some(Expiry::Idle)),
                None if PARK_AFTER < limit && self.parkable() => {
                    (since + PARK_AFTER, Some(Expiry::Park))
                }
                None => (since + limit, Some(Expiry::Idle)),
            },
            Phase::Head { since } => (since + self.header_timeout, Some(Expiry::HeadTimeout)),
            Phase::Busy => (now + self.step, None),
        };
        // A client that takes no byte is closed at its send deadline, busy
        // or not (what hyper still holds for it would wait forever).
        let (deadline, expiry) = match self.state.send_deadline() {
            Some(send) if expiry.is_none() || send < deadline => (send, Some(Expiry::SendTimeout)),
            _ => (deadline, expiry),
        };
        self.sleep.as_mut().reset(deadline.min(now + self.step));
        self.armed = Some((phase, deadline, expiry));
        self.registered = false;
    }

    /// The timer fired: is what it was set for due (the phase unchanged)?
    fn due(&self, phase: Phase, deadline: Instant, expiry: Option<Expiry>) -> Option<Expiry> {
        let expiry = expiry?;
        let unchanged = match expiry {
            // The same blocked stretch, whatever requests began or ended.
            Expiry::SendTimeout => self.state.send_deadline() == Some(deadline),
            _ => self.state.phase.get() == phase,
        };
        let due = unchanged && Instant::now() >= deadline;
        (due && (!matches!(expiry, Expiry::Park) || self.parkable())).then_some(expiry)
    }
}

impl Future for Watchdog<'_> {
    type Output = Expiry;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Expiry> {
        let this = self.get_mut();
        loop {
            let Some((phase, deadline, expiry)) = this.armed else {
                this.arm();
                continue;
            };
            if this.registered && !this.sleep.is_elapsed() {
                return Poll::Pending;
            }
            // Out of budget, tokio answers before storing the waker.
            let budget = tokio::task::coop::has_budget_remaining();
            if this.sleep.as_mut().poll(cx).is_pending() {
                this.registered = budget;
                return Poll::Pending;
            }
            if let Some(expiry) = this.due(phase, deadline, expiry) {
                return Poll::Ready(expiry);
            }
            this.arm();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use super::*;

    #[tokio::test]
    async fn a_phase_reads_back_as_set() {
        let cell = PhaseCell::new(Duration::from_secs(5), Duration::from_secs(75));
        let Phase::Idle { since, limit } = cell.get() else {
            panic!("a new connection is idle");
        };
        assert_eq!(limit, Duration::from_secs(5));
        assert!(since <= Instant::now() && cell.is_idle());
        cell.set(PhaseCell::BUSY);
        assert_eq!(cell.get(), Phase::Busy);
        assert!(!cell.is_idle());
        cell.set(PhaseCell::HEAD);
        let head = cell.get();
        assert!(matches!(head, Phase::Head { since: s } if s >= since));
        assert_eq!(cell.get(), head, "the same word reads as the same phase");
        cell.set(PhaseCell::IDLE_KEPT);
        assert!(
            matches!(cell.get(), Phase::Idle { limit, .. } if limit == Duration::from_secs(75))
        );
    }

    fn limits(send_timeout: Duration) -> crate::config::Limits {
        crate::config::Limits {
            max_uri_length: 8192,
            max_header_bytes: 16384,
            max_headers: 100,
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            body_timeout: Duration::from_secs(60),
            send_timeout,
            body_buffer_size: 16 * 1024,
            max_connections: 10,
        }
    }

    /// Runs the watchdog for `secs` of (paused) time; what it decided, if
    /// anything.
    async fn watch_for(dog: Pin<&mut Watchdog<'_>>, secs: u64) -> Option<Expiry> {
        tokio::select! {
            expiry = dog => Some(expiry),
            _ = tokio::time::sleep(Duration::from_secs(secs)) => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_that_takes_no_byte_for_the_send_timeout_is_closed() {
        let state = ConnState::new(&limits(Duration::from_secs(60)));
        state.request_started();
        let mut dog = pin!(Watchdog::new(&state, Duration::from_secs(10), false, None));
        // A busy connection whose writes complete is never due.
        state.wrote(false);
        assert_eq!(watch_for(dog.as_mut(), 300).await, None);
        // The socket fills; a byte taken at 59 s starts the wait again.
        state.wrote(true);
        assert_eq!(watch_for(dog.as_mut(), 59).await, None);
        state.wrote(false);
        state.wrote(true);
        let blocked = Instant::now();
        assert_eq!(watch_for(dog.as_mut(), 61).await, Some(Expiry::SendTimeout));
        assert_eq!(
            blocked.elapsed(),
            Duration::from_secs(60),
            "at the limit, not after a step"
        );
        // The request having ended changes nothing: what hyper still holds
        // for this client would wait forever.
        let state = ConnState::new(&limits(Duration::from_secs(5)));
        state.request_started();
        let mut dog = pin!(Watchdog::new(&state, Duration::from_secs(10), false, None));
        state.wrote(true);
        state.request_finished();
        assert_eq!(watch_for(dog.as_mut(), 6).await, Some(Expiry::SendTimeout));
    }

    const SECOND: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    /// Runs the watchdog for at most `limit` of (paused) time: what it
    /// decided and when (after the call began), if anything.
    async fn run(dog: Pin<&mut Watchdog<'_>>, limit: Duration) -> Option<(Expiry, Duration)> {
        let start = Instant::now();
        tokio::select! {
            biased;
            expiry = dog => Some((expiry, start.elapsed())),
            _ = tokio::time::sleep(limit) => None,
        }
    }

    /// Asserts that the watchdog decides nothing until `at` (after now),
    /// then `expiry`, exactly at `at`.
    async fn fires_at(mut dog: Pin<&mut Watchdog<'_>>, at: Duration, expiry: Expiry) {
        assert_eq!(
            run(dog.as_mut(), at - MS).await,
            None,
            "{expiry:?} before {at:?}"
        );
        assert_eq!(
            run(dog.as_mut(), SECOND).await,
            Some((expiry, MS)),
            "{expiry:?} at {at:?}"
        );
    }

    /// Header timeout 10 s, keep-alive 75 s, send timeout 60 s.
    fn conn_state() -> ConnState {
        ConnState::new(&limits(60 * SECOND))
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
        let state = conn_state();
        let mut dog = pin!(Watchdog::new(&state, 10 * SECOND, false, None));
        fires_at(dog.as_mut(), 10 * SECOND, Expiry::Idle).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_head_incomplete_at_the_header_timeout_is_408() {
        let state = conn_state();
        let mut dog = pin!(Watchdog::new(&state, 10 * SECOND, false, None));
        assert_eq!(run(dog.as_mut(), 3 * SECOND).await, None);
        // The head's first bytes at 3 s: 10 s from then, not from the
        // connection's start.
        state.bytes_arrived(b"GET / HT");
        fires_at(dog.as_mut(), 10 * SECOND, Expiry::HeadTimeout).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_alive_connection_is_closed_at_the_keepalive_timeout_after_its_response() {
        let state = conn_state();
        let mut dog = pin!(Watchdog::new(&state, 10 * SECOND, false, None));
        state.bytes_arrived(b"GET / HTTP/1.1\r\n\r\n");
        state.request_started();
        // Busy: no idle or head deadline, however long the answer takes.
        assert_eq!(run(dog.as_mut(), 300 * SECOND + 300 * MS).await, None);
        // The response ends while the watchdog sleeps (between two of its
        // steps, nothing wakes it): the deadline still counts from then.
        state.request_finished();
        fires_at(dog.as_mut(), 75 * SECOND, Expiry::Idle).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_starts_before_the_deadline_keeps_the_connection() {
        let state = conn_state();
        let mut dog = pin!(Watchdog::new(&state, 10 * SECOND, false, None));
        state.request_started();
        state.request_finished();
        assert_eq!(run(dog.as_mut(), 74 * SECOND).await, None);
        state.request_started();
        assert_eq!(run(dog.as_mut(), 10 * SECOND).await, None);
        state.request_finished();
        fires_at(dog.as_mut(), 75 * SECOND, Expiry::Idle).await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_plain_http1_connection_parks_after_park_after() {
        let state = conn_state();
        let mut dog = pin!(Watchdog::new(&state, 10 * SECOND, true, None));
        state.request_started();
        assert_eq!(run(dog.as_mut(), 5 * SECOND).await, None);
        state.request_finished();
        fires_at(dog.as_mut(), PARK_AFTER, Expiry::Park).await;
    }

    #[tokio::test(start_paused = true)]
    async fn http2_and_a_blocked_writer_never_park() {
        // HTTP/2: closed at the keep-alive timeout instead.
        let state = conn_state();
        let mut dog = pin!(Watchdog::new(&state, 10 * SECOND, true, None));
        state.bytes_arrived(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        state.request_started();
        state.request_finished();
        fires_at(dog.as_mut(), 75 * SECOND, Expiry::Idle).await;
        // A client that takes no byte of what hyper still holds: not
        // parked (that would drop it), closed at its send timeout.
        let state = conn_state();
        let mut dog = pin!(Watchdog::new(&state, 10 * SECOND, true, None));
        state.request_started();
        state.wrote(true);
        state.request_finished();
        fires_at(dog.as_mut(), 60 * SECOND, Expiry::SendTimeout).await;
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_worker_drains_an_idle_connection_closes_at_the_grace() {
        let state = conn_state();
        let mut dog = pin!(Watchdog::new(&state, 10 * SECOND, true, None));
        state.request_started();
        state.request_finished();
        assert_eq!(run(dog.as_mut(), PARK_AFTER / 2).await, None);
        dog.as_mut().get_mut().drain(Drain {
            since: Instant::now(),
            grace: 2 * SECOND,
        });
        // Not parked while draining: closed at the grace.
        fires_at(dog.as_mut(), 2 * SECOND, Expiry::Idle).await;
    }

    /// Polls `dog` once from a task whose coop budget is spent (tokio's
    /// timer then answers Pending without storing the waker), then as usual.
    async fn first_poll_out_of_budget(mut dog: Pin<&mut Watchdog<'_>>) -> Expiry {
        let mut first = true;
        std::future::poll_fn(|cx| {
            if first {
                first = false;
                while tokio::task::coop::has_budget_remaining() {
                    let spend = pin!(tokio::task::coop::consume_budget());
                    let _ = spend.poll(cx);
                }
            }
            dog.as_mut().poll(cx)
        })
        .await
    }

    /// The budget trick: a watchdog polled when its task had no budget left
    /// must poll its timer again later, or nothing would ever wake it.
    #[tokio::test(start_paused = true)]
    async fn a_watchdog_first_polled_out_of_budget_still_fires_on_time() {
        let state = conn_state();
        let mut dog = pin!(Watchdog::new(&state, 10 * SECOND, false, None));
        let start = Instant::now();
        let fired = tokio::select! {
            biased;
            expiry = first_poll_out_of_budget(dog.as_mut()) => Some((expiry, start.elapsed())),
            _ = tokio::time::sleep(300 * SECOND) => None,
        };
        assert_eq!(fired, Some((Expiry::Idle, 10 * SECOND)));
        // The same once a request has come and gone, its timer re-armed.
        state.request_started();
        state.request_finished();
        let start = Instant::now();
        let fired = tokio::select! {
            biased;
            expiry = first_poll_out_of_budget(dog.as_mut()) => Some((expiry, start.elapsed())),
            _ = tokio::time::sleep(300 * SECOND) => None,
        };
        assert_eq!(fired, Some((Expiry::Idle, 75 * SECOND)));
    }
}
