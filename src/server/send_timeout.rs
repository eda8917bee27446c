//! `--send-timeout` for HTTP/2 streams. A client that stops reading a whole
//! connection blocks its socket, which the connection's watchdog sees
//! (`super::watchdog`). A client that reads the connection but never opens one
//! stream's flow-control window blocks nothing: hyper holds the stream's
//! next chunk and waits for window, forever, and with it whatever feeds the
//! body (a Python thread, a script, an upstream connection).
//!
//! hyper runs each stream as a task it hands our executor, so the executor
//! wraps each one in [`watch_stream`]: when the stream's response body has
//! handed hyper a chunk and hyper has not come back for the next one within
//! the send timeout, the client is taking nothing: the task is dropped,
//! which resets the stream (`RST_STREAM`) and drops the body (its access-log
//! line is written). Time in which hyper waits for the body (a slow app) is
//! not counted.
//!
//! The body and its task meet through a thread-local: the service runs
//! inside the task's poll, and `service::handle` takes the task's [`Stall`]
//! from [`current_stream`] to wrap the response body in [`Reporting`].

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// What a stream's response body tells its task.
#[derive(Default)]
pub struct Stall {
    /// Chunks the body has handed hyper.
    handed: Cell<u64>,
    /// The body's last answer was "not yet": hyper waits for us.
    waiting_on_body: Cell<bool>,
    /// A response body reports here (before that, the app is running).
    claimed: Cell<bool>,
}

impl Stall {
    /// The body was polled; `pending`: it had nothing yet.
    pub fn polled(&self, pending: bool) {
        self.waiting_on_body.set(pending);
        if !pending {
            self.handed.set(self.handed.get() + 1);
        }
    }

    /// hyper holds a chunk the client has not made room for.
    fn waiting_on_client(&self) -> bool {
        self.claimed.get() && !self.waiting_on_body.get()
    }
}

/// An HTTP/2 response body that tells its stream's task about each poll.
pub struct Reporting {
    inner: crate::request::body::Body,
    stall: Rc<Stall>,
}

impl Reporting {
    pub fn new(inner: crate::request::body::Body, stall: Rc<Stall>) -> Self {
        Reporting { inner, stall }
    }
}

impl http_body::Body for Reporting {
    type Data = bytes::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        self.stall.polled(poll.is_pending());
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

thread_local! {
    /// The stream task being polled on this thread, until its body claims it.
    static CURRENT: RefCell<Option<Rc<Stall>>> = const { RefCell::new(None) };
}

/// The [`Stall`] of the HTTP/2 stream whose task is running now.
pub fn current_stream() -> Option<Rc<Stall>> {
    let stall = CURRENT.with(|c| c.borrow().clone())?;
    stall.claimed.set(true);
    Some(stall)
}

/// Runs one HTTP/2 stream task, dropping it once its client has taken no
/// byte for `limit` (see the module doc).
pub async fn watch_stream<F: Future>(stream: F, limit: Duration) {
    let stall = Rc::new(Stall::default());
    let mut stream = pin!(stream);
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    // The chunk count the timer was set for.
    let mut armed_for: Option<u64> = None;
    let cut = std::future::poll_fn(|cx| {
        let claimed = stall.claimed.get();
        if !claimed {
            CURRENT.with(|c| *c.borrow_mut() = Some(stall.clone()));
        }
        let polled = stream.as_mut().poll(cx);
        if !claimed {
            CURRENT.with(|c| c.borrow_mut().take());
        }
        if polled.is_ready() {
            return Poll::Ready(false);
        }
        if !stall.waiting_on_client() {
            armed_for = None;
            return Poll::Pending;
        }
        let handed = stall.handed.get();
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if armed_for != Some(handed) {
            // A new chunk went out: the wait starts now.
            timer.as_mut().reset(Instant::now() + limit);
            armed_for = Some(handed);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(true),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    if cut {
        tracing::info!(
            "an HTTP/2 client took no response bytes for {limit:?} (its flow-control window \
             stayed closed); stream reset (--send-timeout / [limits] send_timeout)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for hyper's stream task: claims its stall like
    /// `service::handle`, then plays `script`, one step every 10 s (extra
    /// polls, such as the watcher's timer waking the task, change nothing).
    fn stream(script: Vec<Step>) -> impl Future<Output = ()> {
        let start = Instant::now();
        let mut stall = None;
        let mut played = None;
        std::future::poll_fn(move |cx| {
            let stall = stall.get_or_insert_with(|| current_stream().expect("inside the task"));
            let now = (start.elapsed().as_secs() / 10) as usize;
            if played != Some(now) {
                played = Some(now);
                match script.get(now) {
                    Some(Step::Handed) => stall.polled(false),
                    Some(Step::WaitingOnBody) => stall.polled(true),
                    Some(Step::Done) => return Poll::Ready(()),
                    // Nothing wakes it again: the client never makes room.
                    None => return Poll::Pending,
                }
                let waker = cx.waker().clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    waker.wake();
                });
            }
            Poll::Pending
        })
    }

    #[derive(Clone, Copy)]
    enum Step {
        Handed,
        WaitingOnBody,
        Done,
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_whose_window_stays_shut_is_cut_at_the_limit() {
        let limit = Duration::from_secs(60);
        let started = Instant::now();
        // One chunk handed, then the client never makes room.
        watch_stream(stream(vec![Step::Handed]), limit).await;
        assert_eq!(started.elapsed(), limit);
    }

    #[tokio::test(start_paused = true)]
    async fn progress_and_a_slow_body_are_not_counted() {
        let limit = Duration::from_secs(15);
        let started = Instant::now();
        // Every 10 s a chunk goes out (the client reads), then the body
        // keeps hyper waiting for 30 s: none of it is the client's time.
        let mut script = vec![Step::Handed; 5];
        script.extend([Step::WaitingOnBody; 3]);
        script.extend([Step::Handed, Step::Done]);
        watch_stream(stream(script), limit).await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(90),
            "ran to its end, never cut"
        );
    }
}
