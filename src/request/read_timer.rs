//! The one read timeout of every body portico reads from a peer: the
//! client's request body (`--body-timeout`), an HTTP upstream's response
//! body and a uwsgi upstream's (`read_timeout`).
//!
//! It counts only while someone waits for bytes (nginx's
//! `client_body_timeout` and `proxy_read_timeout`: between two reads, not
//! the whole transfer): armed when a read finds nothing, disarmed when
//! bytes arrive, so a reader that does not read (an app busy before its
//! first `read()`) never times its peer out.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

pub struct ReadTimer {
    limit: Duration,
    sleep: Pin<Box<Sleep>>,
    /// The sleep's deadline is the current wait's.
    armed: bool,
}

impl ReadTimer {
    /// Call on a runtime: the timer is registered with that runtime's
    /// driver, which then fires it whichever thread polls (a Python thread
    /// reading a request body has no runtime of its own).
    pub fn new(limit: Duration) -> Self {
        ReadTimer {
            limit,
            sleep: Box::pin(tokio::time::sleep(limit)),
            armed: false,
        }
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// A read found nothing: is the wait over? The first call of a wait
    /// arms the timer; every call registers `cx` to be woken when it fires.
    pub fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            self.sleep.as_mut().reset(Instant::now() + self.limit);
            self.armed = true;
        }
        self.sleep.as_mut().poll(cx).is_ready()
    }

    /// Bytes arrived: the next wait starts afresh.
    pub fn progress(&mut self) {
        self.armed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::task::Poll;

    /// Polls `expired` once, as a reader that found nothing would.
    async fn check(timer: &mut ReadTimer) -> bool {
        poll_fn(|cx| Poll::Ready(timer.expired(cx))).await
    }

    #[tokio::test(start_paused = true)]
    async fn fires_after_the_limit_of_one_wait() {
        let mut timer = ReadTimer::new(Duration::from_secs(10));
        assert!(!check(&mut timer).await);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!check(&mut timer).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(check(&mut timer).await);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_start_a_new_wait() {
        let mut timer = ReadTimer::new(Duration::from_secs(10));
        assert!(!check(&mut timer).await);
        tokio::time::sleep(Duration::from_secs(9)).await;
        timer.progress();
        assert!(!check(&mut timer).await);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!check(&mut timer).await, "the second wait is only 9 s old");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(check(&mut timer).await);
    }

    #[tokio::test(start_paused = true)]
    async fn time_without_a_reader_waiting_does_not_count() {
        let mut timer = ReadTimer::new(Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            !check(&mut timer).await,
            "armed only by the first empty read"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_waiting_reader_is_woken_when_it_fires() {
        let mut timer = ReadTimer::new(Duration::from_secs(10));
        let started = Instant::now();
        poll_fn(|cx| match timer.expired(cx) {
            true => Poll::Ready(()),
            false => Poll::Pending,
        })
        .await;
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }
}
