//! The one-way pipe from a Python thread to the connection that waits for
//! the response: first the head (status and headers), then body chunks,
//! then the end (or an error that must cut the connection).
//!
//! Bounded by bytes: a producer that is `MAX_BUFFERED` ahead of the client
//! waits (with the GIL released by its caller), so a generator producing
//! gigabytes for a slow reader keeps memory flat. When the consumer goes away
//! (client disconnected, HEAD), the producer's next send fails and the app's
//! iterable is closed.
//!
//! The `--timeout` watchdog can also answer for a stuck producer
//! ([`Pipe::time_out`]): the consumer gets the watchdog's head (or a cut
//! body), and the producer, should it ever wake, finds the pipe closed.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::Frame;

/// What the app answered before its body.
pub struct Head {
    pub status: StatusCode,
    /// The app's reason phrase when it is not the standard one (HTTP/1 only).
    pub reason: Option<hyper::ext::ReasonPhrase>,
    pub headers: HeaderMap,
    pub body: BodyPlan,
}

/// How the body reaches the client.
pub enum BodyPlan {
    /// Chunks follow through the pipe.
    Stream,
    /// The whole body, already complete.
    Full(Bytes),
    /// `wsgi.file_wrapper`: `len` bytes of an open file from `offset`,
    /// sent by Rust.
    File {
        file: std::fs::File,
        offset: u64,
        len: u64,
    },
    /// `X-Accel-Redirect` (a path under the route's `sendfile_root`) or
    /// `X-Sendfile` (an absolute path inside it): served as a static file.
    NamedFile {
        accel: bool,
        target: http::HeaderValue,
    },
}

/// The producer learns this when the client is gone.
#[derive(Debug)]
pub struct Disconnected;

/// Bytes the producer may be ahead of the client.
const MAX_BUFFERED: usize = 256 * 1024;

#[derive(Default)]
struct State {
    head: Option<Head>,
    /// A head went into the pipe (taken by the consumer or not).
    head_sent: bool,
    chunks: VecDeque<Bytes>,
    buffered: usize,
    finished: bool,
    /// The body must end with an error: the client sees a cut connection.
    failed: bool,
    consumer_gone: bool,
    waker: Option<Waker>,
    /// The last poll returned data: before an error, yield once so hyper
    /// flushes that data to the client ahead of the cut.
    just_sent: bool,
}

#[derive(Default)]
pub struct Pipe {
    state: Mutex<State>,
    /// Signalled when the consumer takes chunks or goes away.
    space: Condvar,
}

impl Pipe {
    pub fn new() -> Arc<Self> {
        Arc::new(Pipe::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State inconsistent
        // (every field is updated in one step), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(mut state: MutexGuard<'_, State>) {
        let waker = state.waker.take();
        drop(state);
        if let Some(w) = waker {
            w.wake();
        }
    }

    // ---- producer side (Python thread) ----

    pub fn send_head(&self, head: Head) -> Result<(), Disconnected> {
        let mut state = self.lock();
        if state.consumer_gone {
            return Err(Disconnected);
        }
        state.head = Some(head);
        state.head_sent = true;
        Self::wake(state);
        Ok(())
    }

    /// Queues a chunk, waiting while the client is too far behind. Call
    /// with the GIL released.
    pub fn send_chunk(&self, chunk: Bytes) -> Result<(), Disconnected> {
        let mut state = self.lock();
        while state.buffered >= MAX_BUFFERED && !state.consumer_gone {
            state = self.space.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.consumer_gone {
            return Err(Disconnected);
        }
        state.buffered += chunk.len();
        state.chunks.push_back(chunk);
        Self::wake(state);
        Ok(())
    }

    /// True when a chunk can be queued without waiting (so the caller can
    /// skip releasing the GIL).
    pub fn has_room(&self) -> bool {
        let state = self.lock();
        state.buffered < MAX_BUFFERED || state.consumer_gone
    }

    pub fn finish(&self) {
        let mut state = self.lock();
        state.finished = true;
        Self::wake(state);
    }

    /// Ends the body with an error (the connection is cut).
    pub fn fail(&self) {
        let mut state = self.lock();
        state.failed = true;
        state.finished = true;
        Self::wake(state);
    }

    pub fn consumer_gone(&self) -> bool {
        self.lock().consumer_gone
    }

    // ---- the watchdog ----

    /// The app ran past `--timeout`: the client gets `head` if no head was
    /// sent yet, else the body is cut after what is queued; the producer's
    /// next send fails, as if the client were gone.
    pub fn time_out(&self, head: Head) {
        let mut state = self.lock();
        if state.head_sent {
            state.failed = true;
        } else {
            state.head = Some(head);
            state.head_sent = true;
        }
        state.finished = true;
        state.consumer_gone = true;
        Self::wake(state);
        self.space.notify_all();
    }

    // ---- consumer side (I/O thread) ----

    fn poll_head(&self, cx: &mut Context<'_>) -> Poll<Option<Head>> {
        let mut state = self.lock();
        if let Some(head) = state.head.take() {
            return Poll::Ready(Some(head));
        }
        if state.finished {
            // The producer ended without a head (it failed before one).
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_chunk(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        let mut state = self.lock();
        if let Some(chunk) = state.chunks.pop_front() {
            state.buffered -= chunk.len();
            state.just_sent = true;
            drop(state);
            self.space.notify_one();
            return Poll::Ready(Some(Ok(chunk)));
        }
        if state.failed && std::mem::take(&mut state.just_sent) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if state.failed {
            state.failed = false;
            return Poll::Ready(Some(Err(std::io::Error::other(
                "the application failed after sending headers",
            ))));
        }
        if state.finished {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn hang_up(&self) {
        let mut state = self.lock();
        state.consumer_gone = true;
        state.chunks.clear();
        state.buffered = 0;
        drop(state);
        self.space.notify_all();
    }
}

/// Resolves to the head, or `None` if the producer gave up before one.
pub struct HeadFuture(pub Option<Arc<Pipe>>);

impl std::future::Future for HeadFuture {
    type Output = (Option<Head>, Arc<Pipe>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let pipe = self.0.as_ref().expect("HeadFuture polled after completion");
        match pipe.poll_head(cx) {
            Poll::Ready(head) => Poll::Ready((head, self.0.take().expect("checked above"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for HeadFuture {
    fn drop(&mut self) {
        // Dropped before the head arrived: the client is gone.
        if let Some(pipe) = &self.0 {
            pipe.hang_up();
        }
    }
}

/// The response body fed by the pipe; dropping it tells the producer.
pub struct PipeBody(pub Arc<Pipe>);

impl http_body::Body for PipeBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_chunk(cx).map(|c| c.map(|r| r.map(Frame::data)))
    }
}

impl Drop for PipeBody {
    fn drop(&mut self) {
        self.0.hang_up();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn head_then_chunks_then_end() {
        let pipe = Pipe::new();
        let producer = pipe.clone();
        let thread = std::thread::spawn(move || {
            producer
                .send_head(Head {
                    status: StatusCode::OK,
                    reason: None,
                    headers: HeaderMap::new(),
                    body: BodyPlan::Stream,
                })
                .unwrap();
            for i in 0..100 {
                producer
                    .send_chunk(Bytes::from(vec![i as u8; 10_000]))
                    .unwrap();
            }
            producer.finish();
        });
        let (head, pipe) = HeadFuture(Some(pipe)).await;
        assert_eq!(head.unwrap().status, StatusCode::OK);
        let body = PipeBody(pipe).collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 1_000_000);
        thread.join().unwrap();
    }

    #[test]
    fn producer_learns_of_a_gone_client() {
        let pipe = Pipe::new();
        drop(PipeBody(pipe.clone()));
        assert!(pipe.send_chunk(Bytes::from_static(b"x")).is_err());
    }

    #[tokio::test]
    async fn failure_after_head_is_an_error_in_the_body() {
        let pipe = Pipe::new();
        pipe.send_head(Head {
            status: StatusCode::OK,
            reason: None,
            headers: HeaderMap::new(),
            body: BodyPlan::Stream,
        })
        .unwrap();
        pipe.send_chunk(Bytes::from_static(b"partial")).unwrap();
        pipe.fail();
        let (_, pipe) = HeadFuture(Some(pipe)).await;
        assert!(PipeBody(pipe).collect().await.is_err());
    }

    fn head(status: StatusCode) -> Head {
        Head {
            status,
            reason: None,
            headers: HeaderMap::new(),
            body: BodyPlan::Stream,
        }
    }

    #[tokio::test]
    async fn a_timed_out_producer_is_answered_for_and_told_to_stop() {
        let pipe = Pipe::new();
        pipe.time_out(head(StatusCode::GATEWAY_TIMEOUT));
        assert!(pipe.send_head(head(StatusCode::OK)).is_err());
        let (got, _) = HeadFuture(Some(pipe)).await;
        assert_eq!(got.unwrap().status, StatusCode::GATEWAY_TIMEOUT);
        // After the head: the body is cut, the producer stops.
        let pipe = Pipe::new();
        pipe.send_head(head(StatusCode::OK)).unwrap();
        pipe.send_chunk(Bytes::from_static(b"partial")).unwrap();
        pipe.time_out(head(StatusCode::GATEWAY_TIMEOUT));
        assert!(pipe.send_chunk(Bytes::from_static(b"more")).is_err());
        let (got, pipe) = HeadFuture(Some(pipe)).await;
        assert_eq!(got.unwrap().status, StatusCode::OK);
        assert!(PipeBody(pipe).collect().await.is_err());
    }
}
