//! A worker's drain, as its connections see it. From the moment the worker
//! stops taking work (SIGTERM/SIGINT, or `--max-requests` in one process):
//!
//! 1. its listeners close (`super::accept_loop` returns, dropping them);
//! 2. every HTTP/1 response it still sends says `Connection: close`, and
//!    the connection closes after it (`super::service::handle`); HTTP/2
//!    connections get a GOAWAY and finish their streams;
//! 3. an idle keep-alive connection, in hyper or parked, is kept for the
//!    drain grace from the drain's start (or from the end of its last
//!    response, if later): a request arriving in it is served, with
//!    `Connection: close`; then the connection closes ([`Drain::idle_deadline`]);
//! 4. the graceful timeout bounds it all (`super::drain_connections`).

use std::time::Duration;

use tokio::time::Instant;

/// When the drain began and the grace an idle connection gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drain {
    pub since: Instant,
    pub grace: Duration,
}

impl Drain {
    /// When a connection idle since `idle_since`, which would otherwise be
    /// closed after `limit` (its keep-alive or header timeout), is closed:
    /// never later than without the drain, and never before it had the
    /// whole grace after both the drain's start and its last response.
    pub fn idle_deadline(self, idle_since: Instant, limit: Duration) -> Instant {
        let normal = idle_since + limit;
        let grace_end = idle_since.max(self.since) + self.grace;
        normal.min(grace_end)
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use tokio::io::{AsyncWriteExt, DuplexStream};

    use super::*;
    use crate::server::test_conn::{closed, connect, local, response, worker, Held};
    use crate::server::{serve_queued, start_drain, Accepting, Shared};

    const SECOND: Duration = Duration::from_secs(1);
    const GRACE: Duration = Duration::from_secs(1);
    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_gets_the_grace_from_the_drain_or_from_its_last_response() {
        let t0 = Instant::now();
        let drain = Drain {
            since: t0 + 10 * SECOND,
            grace: SECOND,
        };
        // Idle long before the drain: the grace counts from the drain.
        assert_eq!(drain.idle_deadline(t0, 75 * SECOND), t0 + 11 * SECOND);
        // Idle after the drain began (its response was already on its way):
        // the grace counts from then.
        let later = t0 + 14 * SECOND;
        assert_eq!(drain.idle_deadline(later, 75 * SECOND), later + SECOND);
        // Never later than the keep-alive timeout would have closed it.
        assert_eq!(
            drain.idle_deadline(t0 + 9 * SECOND + SECOND / 2, 2 * SECOND),
            t0 + 11 * SECOND
        );
        assert_eq!(
            drain.idle_deadline(t0 + 9 * SECOND, SECOND + SECOND / 2),
            t0 + 10 * SECOND + SECOND / 2
        );
    }

    /// The idle time before the drain that puts the connection in `held`.
    fn idle_before(held: Held) -> Duration {
        match held {
            Held::Parked => SECOND * 3 / 2,
            _ => SECOND / 5,
        }
    }

    /// A keep-alive exchange, then the connection left idle as `held`
    /// wants, then the drain. Returns the client's end and when the drain
    /// began.
    async fn drained_connection(held: Held) -> (DuplexStream, Instant, Rc<Shared>) {
        let (shared, stop) = worker();
        let mut client = connect(&shared, held);
        client.write_all(GET).await.unwrap();
        let (status, head) = response(&mut client).await.expect("an answer");
        assert_eq!(status, 404);
        assert!(!head.contains("connection: close"), "{head}");
        tokio::time::sleep(idle_before(held)).await;
        start_drain(&shared, &stop);
        // The sender stays alive, as it does in a worker until it exits.
        std::mem::forget(stop);
        (client, Instant::now(), shared)
    }

    async fn closes_at_the_grace(held: Held) {
        let (mut client, drain_began, _shared) = drained_connection(held).await;
        let after = closed(&mut client).await - drain_began;
        assert!(
            after >= GRACE && after <= GRACE + Duration::from_millis(5),
            "{held:?}: closed {after:?} after the drain began, not at the grace ({GRACE:?})"
        );
    }

    async fn serves_a_request_in_the_grace(held: Held) {
        let (mut client, _, _shared) = drained_connection(held).await;
        tokio::time::sleep(SECOND * 2 / 5).await;
        client.write_all(GET).await.unwrap();
        let answered = response(&mut client).await;
        let (status, head) = answered.unwrap_or_else(|| panic!("{held:?}: closed, no answer"));
        assert_eq!(status, 404, "{held:?}");
        assert!(head.contains("connection: close"), "{held:?}: {head}");
        let sent = Instant::now();
        let after = closed(&mut client).await - sent;
        assert!(
            after < Duration::from_millis(5),
            "{held:?}: open {after:?} after `Connection: close`"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_in_hyper_closes_at_the_drain_grace_not_before() {
        local(closes_at_the_grace(Held::InHyper)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_connection_closes_at_the_drain_grace_not_before() {
        local(closes_at_the_grace(Held::Parked)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_unparkable_connection_closes_at_the_drain_grace_not_before() {
        local(closes_at_the_grace(Held::Unparkable)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_the_grace_on_a_connection_in_hyper_is_served_then_closed() {
        local(serves_a_request_in_the_grace(Held::InHyper)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_the_grace_on_a_parked_connection_is_served_then_closed() {
        local(serves_a_request_in_the_grace(Held::Parked)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_the_grace_on_an_unparkable_connection_is_served_then_closed() {
        local(serves_a_request_in_the_grace(Held::Unparkable)).await;
    }

    /// Without a drain, the same idle connection stays open.
    #[tokio::test(start_paused = true)]
    async fn without_a_drain_an_idle_connection_stays_open() {
        local(async {
            let (shared, _stop) = worker();
            let mut client = connect(&shared, Held::InHyper);
            client.write_all(GET).await.unwrap();
            assert!(response(&mut client).await.is_some());
            tokio::time::sleep(10 * SECOND).await;
            client.write_all(GET).await.unwrap();
            let (_, head) = response(&mut client).await.expect("an answer");
            assert!(!head.contains("connection: close"), "{head}");
        })
        .await;
    }

    /// Item 4 of issue 12: a pipelined request whose end arrives after the
    /// connection went idle long enough to park. hyper had read its
    /// beginning; parking must hand those bytes back.
    #[tokio::test(start_paused = true)]
    async fn a_pipelined_request_split_across_the_park_delay_is_answered() {
        local(async {
            let (shared, _stop) = worker();
            let mut client = connect(&shared, Held::Parked);
            let mut first = GET.to_vec();
            first.extend_from_slice(b"GET /second HT");
            client.write_all(&first).await.unwrap();
            assert!(response(&mut client).await.is_some());
            tokio::time::sleep(SECOND * 3 / 2).await;
            client
                .write_all(b"TP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .unwrap();
            let (status, _) = response(&mut client)
                .await
                .expect("the second request was dropped");
            assert_eq!(status, 404);
        })
        .await;
    }

    /// A request's head that started arriving is served even past the
    /// grace: here its beginning came pipelined with the last request, so
    /// it sits in hyper's buffer of a connection that looks idle.
    #[tokio::test(start_paused = true)]
    async fn a_pipelined_request_split_across_the_drain_grace_is_answered() {
        local(async {
            let (shared, stop) = worker();
            let mut client = connect(&shared, Held::InHyper);
            let mut first = GET.to_vec();
            first.extend_from_slice(b"GET /second HT");
            client.write_all(&first).await.unwrap();
            assert!(response(&mut client).await.is_some());
            start_drain(&shared, &stop);
            tokio::time::sleep(GRACE + SECOND / 2).await;
            client
                .write_all(b"TP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .unwrap();
            let (status, head) = response(&mut client)
                .await
                .expect("the second request was dropped at the grace");
            assert_eq!(status, 404);
            assert!(head.contains("connection: close"), "{head}");
        })
        .await;
    }

    /// The listener closes when the drain begins; a connection the kernel
    /// had already queued on it (its client may have sent a request) would
    /// be reset with it.
    #[tokio::test]
    async fn a_connection_queued_when_the_listener_closes_is_answered_not_reset() {
        local(async {
            let (shared, stop) = worker();
            let bound = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            bound.set_nonblocking(true).unwrap();
            let addr = bound.local_addr().unwrap();
            let listener = Accepting::Tcp(tokio::net::TcpListener::from_std(bound).unwrap());
            // Connected by the kernel, not accepted yet.
            let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
            client.write_all(GET).await.unwrap();
            start_drain(&shared, &stop);
            let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(10));
            serve_queued(
                listener,
                crate::config::Protocol::Http,
                None,
                shared.clone(),
                permits,
            );
            let answer = tokio::time::timeout(5 * SECOND, response(&mut client)).await;
            let (status, head) = answer
                .expect("no answer within 5 s")
                .expect("closed without an answer");
            assert_eq!(status, 404);
            assert!(head.contains("connection: close"), "{head}");
        })
        .await;
    }
}
